//! The DiLoCo coordinator: the outer optimizer that workers register with, upload
//! pseudo-gradients to and receive averaged parameters from.

pub mod device;
