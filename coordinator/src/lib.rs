//! The DiLoCo coordinator: the outer optimizer that workers register with, upload
//! pseudo-gradients to and receive averaged parameters from.
//!
//! Data path of an upload: [`upload`] validates it while it streams in, [`fold`] adds it to
//! the round's accumulator in [`outer_state`], and when the round closes
//! [`outer_optimizer`] steps θ, which is encoded once for every waiting worker.

pub mod device;
pub mod fold;
pub mod model;
pub mod outer_optimizer;
pub mod outer_state;
pub mod upload;
pub mod wire;
