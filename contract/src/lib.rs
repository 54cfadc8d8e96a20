//! The contract between the operator, the coordinator and the workers, defined once.
//!
//! Everything that crosses a process boundary is here, so that a change to it is a change to
//! one type and every side fails to build until it follows:
//!
//! - [`config`]: the coordinator's configuration file, which the operator renders and the
//!   coordinator reads;
//! - [`api`]: the HTTP API: paths, headers, every request and reply body, error bodies and
//!   the commands relayed to workers;
//! - [`credentials`]: the files of a mounted credential (token directory, TLS Secret, worker
//!   bundle) and `endpoints.json`;
//! - [`clients`]: the roles and the current-client list (`clients.json`);
//! - [`console`]: the console's JSON API, its headers and the console's client certificate;
//! - [`env`]: the environment variables workers read (the Python SDK reads the same);
//! - [`wire`]: the submit frame, safetensors, tensor dtypes and the model layout;
//! - [`constants`]: all names above as one JSON document, which the Python SDK's tests compare
//!   with their own constants (`diloco-contract constants`).
//!
//! It depends on neither tch nor kube: the operator must not link libtorch, and a worker must
//! not need Kubernetes crates.

pub mod api;
pub mod clients;
pub mod config;
pub mod console;
pub mod constants;
pub mod credentials;
pub mod env;
pub mod wire;
