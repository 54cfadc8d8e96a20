//! `kubectl diloco`: a kubectl plugin (krew-style: the `kubectl-diloco` binary on PATH) to read
//! a DiLoCoServer's state, fetch its worker bundle safely, rotate its credentials and reach the
//! console. The binary only parses flags and maps errors to exit codes; the work is here.

pub mod bundle;
pub mod cli;
pub mod commands;
pub mod console_client;
pub mod error;
pub mod kube_access;
pub mod port_forward;
pub mod summary;
pub mod table;
