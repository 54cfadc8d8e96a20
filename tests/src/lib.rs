//! Fixtures for the end-to-end tests in `tests/tests/`: the real local control plane they run
//! on, helpers to get a client and a namespace of one's own, and the workspace's binaries.

pub mod binaries;
pub mod local_cluster;

pub use binaries::workspace_binary;
pub use local_cluster::LocalCluster;
