//! Rust worker SDK for DiLoCo coordinators.
