//! Rust SDK for DiLoCo workers. The protocol it speaks (bodies, paths, headers, credential
//! files, the wire format) is [`diloco_contract`], re-exported as [`contract`].
//!
//! ```no_run
//! # async fn demo(vs: tch::nn::VarStore) -> Result<(), Box<dyn std::error::Error>> {
//! use diloco_client::{ClientConfig, CoordinatorClient, DilocoWorker, RelayedCommand, WorkerOptions};
//! let params: Vec<_> = vs.variables().into_iter().collect();
//! let client = CoordinatorClient::new(ClientConfig::new("http://127.0.0.1:8512"))?;
//! let mut worker = DilocoWorker::join(client, WorkerOptions::new("worker-0"), &params).await?;
//! loop {
//!     for _ in 0..worker.sync_every() { /* one inner optimizer step */ worker.record_step(); }
//!     worker.sync(&params).await?;
//!     match worker.next_command() {
//!         Some(RelayedCommand::SaveAndStop) => { /* save */ break }
//!         Some(RelayedCommand::Abort) => break,
//!         Some(RelayedCommand::SaveCheckpoint) => { /* save */ }
//!         None => {}
//!     }
//! }
//! worker.leave().await?;
//! # Ok(())
//! # }
//! ```

pub use diloco_contract as contract;
pub use diloco_contract::wire;

pub mod commands;
pub mod coordinator_client;
pub mod credentials;
pub mod tensors;
pub mod worker;

pub use commands::CommandInbox;
pub use coordinator_client::{ClientConfig, ClientError, CoordinatorClient, RetryPolicy};
pub use diloco_contract::api::RelayedCommand;
pub use worker::{DilocoWorker, SyncReport, WorkerError, WorkerOptions};
