//! The outer optimizer's state: fp32 parameters θ, momentum buffers and the round's
//! accumulator, each one flat tch tensor of P elements laid out by the [`ModelLayout`].
//!
//! Memory is 12·P bytes whatever the number of workers: uploads are folded into the
//! accumulator as they complete instead of being kept until the round closes. Momentum and
//! accumulator start uninitialized (not zeroed): a parameter's first contribution is stored
//! and its first step sets the momentum buffer, so nothing reads them before they are
//! written, and their pages are only touched when they are needed.

use std::collections::BTreeMap;
use std::sync::Arc;

use tch::{Device, Kind, Tensor};

use crate::fold::{StreamStore, fold_upload};
use crate::model::ModelLayout;
use crate::outer_optimizer::{OuterOptimizer, OuterStep};
use crate::upload::{StagedTensor, StagedUpload};
use crate::wire::dtype::{WireDtype, decode_into};
use crate::wire::safetensors;

/// What one outer step did.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct StepReport {
    /// Parameters that received at least one contribution (and were stepped).
    pub stepped: usize,
    /// Parameters nobody sent this round (left untouched, momentum included).
    pub missing: Vec<String>,
}

/// θ, momentum and accumulator of one model.
pub struct OuterState {
    layout: Arc<ModelLayout>,
    device: Device,
    theta: Tensor,
    momentum: Tensor,
    /// Per parameter: torch would already hold a momentum buffer (it has been stepped).
    momentum_ready: Vec<bool>,
    /// On the CPU: uploads arrive in host memory and are folded there.
    accumulator: Tensor,
    /// Per parameter: uploads folded in this round.
    contributors: Vec<u32>,
    threads: usize,
}

/// A flat fp32 tensor whose elements are written before they are read.
fn unfilled(elements: usize, device: Device) -> Tensor {
    Tensor::empty([elements as i64], (Kind::Float, device))
}

/// A contiguous fp32 CPU tensor's elements. The caller owns the tensor exclusively (it is
/// never shallow-cloned out of [`OuterState`]), so `&mut` access cannot alias.
fn cpu_slice_mut(tensor: &mut Tensor) -> &mut [f32] {
    debug_assert!(tensor.device() == Device::Cpu && tensor.kind() == Kind::Float);
    debug_assert!(tensor.is_contiguous());
    let len = tensor.numel();
    // SAFETY: a contiguous CPU float tensor of `len` elements, borrowed mutably through the
    // one handle that refers to it.
    unsafe { std::slice::from_raw_parts_mut(tensor.data_ptr() as *mut f32, len) }
}

fn cpu_slice(tensor: &Tensor) -> &[f32] {
    debug_assert!(tensor.device() == Device::Cpu && tensor.kind() == Kind::Float);
    debug_assert!(tensor.is_contiguous());
    // SAFETY: as above, shared borrow.
    unsafe { std::slice::from_raw_parts(tensor.data_ptr() as *const f32, tensor.numel()) }
}

impl OuterState {
    /// State for `layout` starting from the flat fp32 parameters `initial`.
    pub fn new(layout: Arc<ModelLayout>, initial: &[f32], device: Device) -> Self {
        let elements = layout.total_elements();
        assert_eq!(
            initial.len(),
            elements,
            "initial parameters must match the layout"
        );
        Self::with_theta(
            layout,
            Tensor::from_slice(initial).to_device(device),
            device,
        )
    }

    fn with_theta(layout: Arc<ModelLayout>, theta: Tensor, device: Device) -> Self {
        let elements = layout.total_elements();
        let params = layout.params().len();
        Self {
            device,
            theta,
            momentum: unfilled(elements, device),
            momentum_ready: vec![false; params],
            accumulator: unfilled(elements, Device::Cpu),
            contributors: vec![0; params],
            threads: std::thread::available_parallelism().map_or(1, usize::from),
            layout,
        }
    }

    /// State restored from a checkpoint: θ, and momentum for the parameters that had one.
    pub fn restore(
        layout: Arc<ModelLayout>,
        theta: &[f32],
        momentum: &[f32],
        momentum_ready: Vec<bool>,
        device: Device,
    ) -> Self {
        let mut state = Self::new(layout, theta, device);
        state.momentum = Tensor::from_slice(momentum).to_device(device);
        state.momentum_ready = momentum_ready;
        state
    }

    /// The model.
    pub fn layout(&self) -> &Arc<ModelLayout> {
        &self.layout
    }

    /// Uploads folded in this round, per parameter.
    pub fn contributors(&self) -> &[u32] {
        &self.contributors
    }

    /// State whose θ is a validated upload of initial parameters (decoded straight into θ,
    /// without an intermediate copy).
    pub fn from_upload(layout: Arc<ModelLayout>, upload: &StagedUpload, device: Device) -> Self {
        let mut theta = unfilled(layout.total_elements(), Device::Cpu);
        let values = cpu_slice_mut(&mut theta);
        let size = upload.dtype.size();
        for t in &upload.tensors {
            let info = &layout.params()[t.param];
            let bytes = &upload.data[t.first_element * size..(t.first_element + t.elements) * size];
            decode_into(bytes, upload.dtype, &mut values[info.range()]);
        }
        Self::with_theta(layout, theta.to_device(device), device)
    }

    /// Folds a validated upload into the accumulator.
    pub fn fold(&mut self, upload: &StagedUpload) {
        let first: Vec<bool> = self.contributors.iter().map(|c| *c == 0).collect();
        let threads = self.threads;
        fold_upload(
            cpu_slice_mut(&mut self.accumulator),
            &first,
            &self.layout,
            &upload.tensors,
            &upload.data,
            upload.dtype,
            threads,
        );
        for t in &upload.tensors {
            self.contributors[t.param] += 1;
        }
    }

    /// Stores the next validated piece of the round's first upload into the accumulator.
    /// Only valid while no upload has been folded into the round.
    pub fn store_streamed(&mut self, store: &mut StreamStore, offset: usize, bytes: &[u8]) {
        debug_assert!(self.contributors.iter().all(|c| *c == 0));
        let layout = self.layout.clone();
        store.store(cpu_slice_mut(&mut self.accumulator), &layout, offset, bytes);
    }

    /// Counts a completely streamed upload of `tensors` as the round's first contribution.
    pub fn count_streamed(&mut self, tensors: &[StagedTensor]) {
        for t in tensors {
            self.contributors[t.param] += 1;
        }
    }

    /// Averages the accumulator per parameter over its contributors, runs one outer step and
    /// starts the next round's accumulation.
    pub fn step(&mut self, optimizer: &OuterOptimizer) -> Result<StepReport, tch::TchError> {
        let mut report = StepReport::default();
        for (p, info) in self.layout.params().iter().enumerate() {
            if self.contributors[p] == 0 {
                report.missing.push(info.name.clone());
            } else {
                report.stepped += 1;
            }
        }
        if self.device == Device::Cpu {
            self.step_on_cpu(optimizer);
        } else {
            self.step_on_device(optimizer)?;
        }
        for (ready, count) in self.momentum_ready.iter_mut().zip(&self.contributors) {
            *ready |= *count > 0 && optimizer.momentum != 0.0;
        }
        self.contributors.fill(0);
        Ok(report)
    }

    fn step_on_cpu(&mut self, optimizer: &OuterOptimizer) {
        // Work in pieces of at most this many elements, spread over the threads.
        const PIECE: usize = 1 << 20;
        let mut theta = cpu_slice_mut(&mut self.theta);
        let mut momentum = cpu_slice_mut(&mut self.momentum);
        let mut acc = cpu_slice(&self.accumulator);
        let mut pieces = Vec::new();
        for (p, info) in self.layout.params().iter().enumerate() {
            let mut left = info.numel;
            while left > 0 {
                let n = left.min(PIECE);
                let (t, t_rest) = theta.split_at_mut(n);
                let (m, m_rest) = momentum.split_at_mut(n);
                let (a, a_rest) = acc.split_at(n);
                (theta, momentum, acc) = (t_rest, m_rest, a_rest);
                if self.contributors[p] > 0 {
                    pieces.push((t, m, a, self.momentum_ready[p], self.contributors[p]));
                }
                left -= n;
            }
        }
        let threads = self.threads.min(pieces.len()).max(1);
        let mut shares: Vec<Vec<_>> = (0..threads).map(|_| Vec::new()).collect();
        for (i, piece) in pieces.into_iter().enumerate() {
            shares[i % threads].push(piece);
        }
        std::thread::scope(|scope| {
            for share in shares {
                scope.spawn(move || {
                    for (t, m, a, ready, n) in share {
                        optimizer.step_cpu(t, m, ready, a, n);
                    }
                });
            }
        });
    }

    fn step_on_device(&mut self, optimizer: &OuterOptimizer) -> Result<(), tch::TchError> {
        let acc = self.accumulator.f_to_device(self.device)?;
        for (p, info) in self.layout.params().iter().enumerate() {
            if self.contributors[p] == 0 {
                continue;
            }
            let (start, length) = (info.offset as i64, info.numel as i64);
            let mut theta = self.theta.f_narrow(0, start, length)?;
            let mut buf = self.momentum.f_narrow(0, start, length)?;
            let acc = acc.f_narrow(0, start, length)?;
            optimizer.step_tch(
                &mut theta,
                &mut buf,
                self.momentum_ready[p],
                &acc,
                self.contributors[p],
            )?;
        }
        Ok(())
    }

    /// θ as a safetensors blob in `dtype`, with `metadata`, written into `out` (cleared
    /// first), reusing its allocation and its already-touched pages.
    pub fn encode_into(
        &self,
        dtype: WireDtype,
        metadata: &BTreeMap<String, String>,
        out: &mut Vec<u8>,
    ) {
        self.with_theta_on_cpu(|theta| {
            safetensors::encode_into(&self.layout, theta, dtype, metadata, out)
        });
    }

    /// Runs `f` on θ in host memory (copied from the device when it lives elsewhere).
    pub fn with_theta_on_cpu<T>(&self, f: impl FnOnce(&[f32]) -> T) -> T {
        if self.device == Device::Cpu {
            f(cpu_slice(&self.theta))
        } else {
            let host = self.theta.to_device(Device::Cpu);
            f(cpu_slice(&host))
        }
    }

    /// Runs `f` on the momentum buffers in host memory.
    pub fn with_momentum_on_cpu<T>(&self, f: impl FnOnce(&[f32], &[bool]) -> T) -> T {
        if self.device == Device::Cpu {
            f(cpu_slice(&self.momentum), &self.momentum_ready)
        } else {
            let host = self.momentum.to_device(Device::Cpu);
            f(cpu_slice(&host), &self.momentum_ready)
        }
    }
}
