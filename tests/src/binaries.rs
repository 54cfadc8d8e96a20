//! Paths of the workspace's binaries, for tests that run them as real processes.

use std::path::PathBuf;

/// The path of a workspace binary built in the same profile as the running test
/// (`make test` builds them first with `cargo build --workspace --bins`).
pub fn workspace_binary(name: &str) -> PathBuf {
    // A test runs from target/<profile>/deps/<test>-<hash>; binaries sit in target/<profile>/.
    let exe = std::env::current_exe().unwrap_or_default();
    let profile_dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .map(PathBuf::from);
    let path = profile_dir.unwrap_or_default().join(name);
    assert!(
        path.exists(),
        "{} is missing: build the binaries first (cargo build --workspace --bins)",
        path.display()
    );
    path
}
