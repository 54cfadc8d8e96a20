//! The example's learning task: a student MLP learns a fixed random "teacher" MLP from
//! noisy samples. Data comes from a seeded generator of its own, so every run is reproducible
//! and each worker can train on its own stream (its seed).

use tch::nn::{self, Module};
use tch::{Kind, Tensor};

/// Input features.
pub const INPUTS: i64 = 16;
/// Outputs.
pub const OUTPUTS: i64 = 4;
const HIDDEN: i64 = 64;
const TEACHER_HIDDEN: i64 = 32;

/// A small deterministic generator (SplitMix64 + Box–Muller), independent of torch's.
pub struct Rng(u64);

impl Rng {
    /// A generator for `seed`.
    pub fn new(seed: u64) -> Self {
        Self(seed ^ 0x9e37_79b9_7f4a_7c15)
    }

    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn uniform(&mut self) -> f64 {
        ((self.next_u64() >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    }

    /// `n` standard normal samples.
    pub fn normal(&mut self, n: usize) -> Vec<f32> {
        (0..n)
            .map(|_| {
                let (u, v) = (self.uniform(), self.uniform());
                ((-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()) as f32
            })
            .collect()
    }

    /// A `[rows, cols]` tensor of normal samples times `scale`.
    pub fn tensor(&mut self, rows: i64, cols: i64, scale: f32) -> Tensor {
        let values: Vec<f32> = self
            .normal((rows * cols) as usize)
            .iter()
            .map(|v| v * scale)
            .collect();
        Tensor::from_slice(&values).reshape([rows, cols])
    }
}

/// The fixed function to learn.
pub struct Teacher {
    w1: Tensor,
    w2: Tensor,
}

impl Teacher {
    /// The teacher every worker shares.
    pub fn new() -> Self {
        let mut rng = Rng::new(7);
        Self {
            w1: rng.tensor(INPUTS, TEACHER_HIDDEN, 1.0 / (INPUTS as f32).sqrt()),
            w2: rng.tensor(
                TEACHER_HIDDEN,
                OUTPUTS,
                1.0 / (TEACHER_HIDDEN as f32).sqrt(),
            ),
        }
    }

    /// A batch `(x, y)` of `size` samples drawn from `rng`, with a little label noise.
    pub fn batch(&self, rng: &mut Rng, size: i64) -> (Tensor, Tensor) {
        let x = rng.tensor(size, INPUTS, 1.0);
        let noise = rng.tensor(size, OUTPUTS, 0.01);
        let y = x.matmul(&self.w1).tanh().matmul(&self.w2) + noise;
        (x, y)
    }
}

/// The model being trained.
pub fn student(path: &nn::Path) -> nn::Sequential {
    nn::seq()
        .add(nn::linear(
            path / "layer1",
            INPUTS,
            HIDDEN,
            Default::default(),
        ))
        .add_fn(Tensor::tanh)
        .add(nn::linear(
            path / "layer2",
            HIDDEN,
            HIDDEN,
            Default::default(),
        ))
        .add_fn(Tensor::tanh)
        .add(nn::linear(
            path / "head",
            HIDDEN,
            OUTPUTS,
            Default::default(),
        ))
}

/// Mean squared error of `model` on `(x, y)`.
pub fn mse(model: &nn::Sequential, x: &Tensor, y: &Tensor) -> Tensor {
    model
        .forward(x)
        .mse_loss(y, tch::Reduction::Mean)
        .to_kind(Kind::Float)
}
