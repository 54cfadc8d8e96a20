//! The DiLoCo coordinator: the outer optimizer that workers register with, upload
//! pseudo-gradients to and receive averaged parameters from.
//!
//! Data path of an upload: [`upload`] validates it while it streams in; the round's first
//! upload is stored into the accumulator in [`outer_state`] as it arrives, later ones wait in
//! one of the bounded [`staging`] buffers until complete and [`fold`] adds them. When the
//! [`engine`] closes the round, [`outer_optimizer`] steps θ, which is encoded once for every
//! waiting worker.

pub mod audit;
pub mod audit_tail;
pub mod auth;
pub mod checkpoint;
pub mod device;
pub mod engine;
pub mod fold;
pub mod http;
pub mod identity;
pub mod initial_parameters;
pub mod listener;
pub mod metrics;
pub mod model_definition;
pub mod outer_optimizer;
pub mod outer_state;
pub mod server;
pub mod staging;
pub mod tls;
pub mod upload;

pub use diloco_contract::config;
pub use diloco_contract::wire;
pub use diloco_contract::wire::layout as model;
