//! The outer optimizer: SGD with (Nesterov) momentum applied to the averaged pseudo-gradient,
//! with exactly the arithmetic of `torch.optim.SGD` (dampening 0, weight decay 0).
//!
//! Per element, torch's CPU kernels compute (`μ`, `lr` rounded to f32; `fma` = one rounding):
//!
//! ```text
//! g   = acc / n                              averaged pseudo-gradient
//! buf = g                  (first step)      momentum_buffer = grad.clone()
//! buf = (buf * μ) + g      (later steps)     buf.mul_(μ).add_(grad, alpha=1)
//! d   = fma(buf, μ, g)     (nesterov)        grad.add(buf, alpha=μ)
//! d   = buf                (otherwise)
//! θ   = fma(d, -lr, θ)                       param.add_(d, alpha=-lr)
//! ```
//!
//! The fused CPU kernel does this in one pass over memory (read acc, θ, buf; write θ, buf:
//! 20 bytes per element); golden fixtures made by PyTorch pin it bit for bit. The tch variant
//! runs the same formula as separate tensor ops on any device (CUDA), where torch itself would
//! use different kernels and the last bit may differ.

pub use crate::config::OuterOptimizer;

/// The step itself, on the settings the configuration (and `/control/update_optimizer`) gives.
pub trait OuterStep {
    /// One step of one parameter on the CPU: `acc` holds the sum of `contributors` uploads.
    /// `buf_ready` says whether torch would already have a momentum buffer for it.
    ///
    /// `fma` has to be a real fused multiply-add to match torch; without the FMA instruction
    /// it is a slow library call, so the kernel is compiled twice and the AVX2 + FMA build is
    /// picked at run time when the CPU has it (every x86-64 server CPU of the last decade).
    fn step_cpu(
        &self,
        theta: &mut [f32],
        buf: &mut [f32],
        buf_ready: bool,
        acc: &[f32],
        contributors: u32,
    );

    /// The same step as tensor operations on any device (used for CUDA).
    fn step_tch(
        &self,
        theta: &mut tch::Tensor,
        buf: &mut tch::Tensor,
        buf_ready: bool,
        acc: &tch::Tensor,
        contributors: u32,
    ) -> Result<(), tch::TchError>;
}

impl OuterStep for OuterOptimizer {
    fn step_cpu(
        &self,
        theta: &mut [f32],
        buf: &mut [f32],
        buf_ready: bool,
        acc: &[f32],
        contributors: u32,
    ) {
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
        {
            // SAFETY: the CPU supports AVX2 and FMA, checked just above.
            unsafe { step_avx2_fma(self, theta, buf, buf_ready, acc, contributors) };
            return;
        }
        step_portable(self, theta, buf, buf_ready, acc, contributors);
    }

    fn step_tch(
        &self,
        theta: &mut tch::Tensor,
        buf: &mut tch::Tensor,
        buf_ready: bool,
        acc: &tch::Tensor,
        contributors: u32,
    ) -> Result<(), tch::TchError> {
        let g = acc.f_div_scalar(f64::from(contributors))?;
        let d = if self.momentum != 0.0 {
            if buf_ready {
                let _ = buf.f_mul_scalar_(self.momentum)?.f_add_(&g)?;
            } else {
                buf.f_copy_(&g)?;
            }
            if self.nesterov {
                g.f_add(&buf.f_mul_scalar(self.momentum)?)?
            } else {
                buf.shallow_clone()
            }
        } else {
            g
        };
        let _ = theta.f_sub_(&d.f_mul_scalar(self.lr)?)?;
        Ok(())
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn step_avx2_fma(
    sgd: &OuterOptimizer,
    theta: &mut [f32],
    buf: &mut [f32],
    buf_ready: bool,
    acc: &[f32],
    contributors: u32,
) {
    step_portable(sgd, theta, buf, buf_ready, acc, contributors);
}

#[inline(always)]
fn step_portable(
    sgd: &OuterOptimizer,
    theta: &mut [f32],
    buf: &mut [f32],
    buf_ready: bool,
    acc: &[f32],
    contributors: u32,
) {
    let n = contributors as f32;
    let mu = sgd.momentum as f32;
    let neg_lr = (-sgd.lr) as f32;
    let elements = theta.iter_mut().zip(buf.iter_mut()).zip(acc);
    match (sgd.momentum != 0.0, buf_ready, sgd.nesterov) {
        (false, _, _) => {
            for ((t, _), a) in elements {
                *t = (*a / n).mul_add(neg_lr, *t);
            }
        }
        (true, false, nesterov) => {
            for ((t, b), a) in elements {
                let g = *a / n;
                *b = g;
                let d = if nesterov { b.mul_add(mu, g) } else { *b };
                *t = d.mul_add(neg_lr, *t);
            }
        }
        (true, true, nesterov) => {
            for ((t, b), a) in elements {
                let g = *a / n;
                *b = *b * mu + g;
                let d = if nesterov { b.mul_add(mu, g) } else { *b };
                *t = d.mul_add(neg_lr, *t);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_sgd_with_lr_one_moves_to_the_average_of_local_params() {
        // θ = 1; two workers ended at 0.5 and 0.25: pseudo-gradients 0.5 and 0.75.
        let sgd = OuterOptimizer {
            lr: 1.0,
            momentum: 0.0,
            nesterov: false,
        };
        let mut theta = [1.0f32];
        sgd.step_cpu(&mut theta, &mut [0.0], false, &[1.25], 2);
        assert_eq!(theta, [0.375]);
    }

    #[test]
    fn first_nesterov_step_starts_the_buffer_at_the_gradient() {
        let sgd = OuterOptimizer {
            lr: 0.5,
            momentum: 0.5,
            nesterov: true,
        };
        let (mut theta, mut buf) = ([1.0f32], [0.0f32]);
        sgd.step_cpu(&mut theta, &mut buf, false, &[2.0], 1);
        assert_eq!(buf, [2.0]);
        // d = g + μ·buf = 2 + 1 = 3; θ = 1 − 0.5·3
        assert_eq!(theta, [-0.5]);
        sgd.step_cpu(&mut theta, &mut buf, true, &[2.0], 1);
        // buf = 0.5·2 + 2 = 3; d = 2 + 0.5·3 = 3.5; θ = −0.5 − 1.75
        assert_eq!(buf, [3.0]);
        assert_eq!(theta, [-2.25]);
    }

    #[test]
    fn tensor_ops_agree_with_the_fused_kernel() {
        let sgd = OuterOptimizer::default();
        let init: Vec<f32> = (0..1000).map(|i| (i as f32 * 0.37).sin()).collect();
        let acc: Vec<f32> = (0..1000).map(|i| (i as f32 * 0.11).cos() * 0.1).collect();
        let (mut theta, mut buf) = (init.clone(), vec![0f32; 1000]);
        let mut theta_t = tch::Tensor::from_slice(&init);
        let mut buf_t = tch::Tensor::zeros([1000], (tch::Kind::Float, tch::Device::Cpu));
        let acc_t = tch::Tensor::from_slice(&acc);
        for ready in [false, true, true] {
            sgd.step_cpu(&mut theta, &mut buf, ready, &acc, 3);
            sgd.step_tch(&mut theta_t, &mut buf_t, ready, &acc_t, 3)
                .unwrap();
        }
        let theta_t: Vec<f32> = Vec::try_from(&theta_t).unwrap();
        for (a, b) in theta.iter().zip(&theta_t) {
            assert!((a - b).abs() <= 1e-6 * a.abs().max(1.0), "{a} vs {b}");
        }
    }
}
