//! Bytes on the wire, shared by the coordinator and its clients: the submit frame,
//! safetensors, tensor dtypes and the model layout they describe.

pub mod dtype;
pub mod frame;
pub mod layout;
pub mod safetensors;
pub mod torch_save;
