//! Bytes on the wire, shared by the coordinator and its clients: the submit frame,
//! safetensors, tensor dtypes, the model layout they describe, and the JSON request bodies.

pub mod dtype;
pub mod frame;
pub mod layout;
pub mod messages;
pub mod safetensors;
