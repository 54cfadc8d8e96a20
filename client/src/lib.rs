//! Rust SDK for DiLoCo workers, and the wire format the coordinator shares with every client.
//!
//! ```no_run
//! # async fn demo(vs: tch::nn::VarStore) -> Result<(), Box<dyn std::error::Error>> {
//! use diloco_client::{ClientConfig, CoordinatorClient, DilocoWorker, WorkerOptions};
//! let params: Vec<_> = vs.variables().into_iter().collect();
//! let client = CoordinatorClient::new(ClientConfig::new("http://127.0.0.1:8512"))?;
//! let mut worker = DilocoWorker::join(client, WorkerOptions::new("worker-0"), &params).await?;
//! loop {
//!     for _ in 0..worker.sync_every() { /* one inner optimizer step */ worker.record_step(); }
//!     worker.sync(&params).await?;
//! }
//! # }
//! ```

pub mod wire;

#[cfg(feature = "worker")]
pub mod coordinator_client;
#[cfg(feature = "worker")]
pub mod credentials;
#[cfg(feature = "worker")]
pub mod tensors;
#[cfg(feature = "worker")]
pub mod worker;

#[cfg(feature = "worker")]
pub use coordinator_client::{ClientConfig, ClientError, CoordinatorClient, RetryPolicy};
#[cfg(feature = "worker")]
pub use worker::{DilocoWorker, SyncReport, WorkerError, WorkerOptions};
