//! Bytes on the wire: the submit frame, safetensors, and tensor dtypes.

pub mod dtype;
pub mod frame;
pub mod safetensors;
