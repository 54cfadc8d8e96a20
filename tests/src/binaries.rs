//! Paths of the workspace's binaries, for tests that run them as real processes.

use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

/// Packages whose binaries end-to-end tests run.
const PACKAGES: &[&str] = &["diloco-coordinator", "diloco-client", "diloco-operator"];

/// Builds the workspace binaries once per test binary, so a test never runs a stale one
/// (`cargo test -p diloco-tests` alone does not rebuild other packages' binaries).
fn ensure_built() {
    static BUILT: OnceLock<()> = OnceLock::new();
    BUILT.get_or_init(|| {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut command = Command::new(cargo);
        command.args(["build", "--quiet", "--bins"]);
        for package in PACKAGES {
            command.args(["-p", package]);
        }
        if !cfg!(debug_assertions) {
            command.arg("--release");
        }
        let status = command
            .status()
            .expect("failed to run cargo build for the binaries");
        assert!(status.success(), "building the workspace binaries failed");
    });
}

/// The path of a workspace binary built in the same profile as the running test.
pub fn workspace_binary(name: &str) -> PathBuf {
    ensure_built();
    // A test runs from target/<profile>/deps/<test>-<hash>; binaries sit in target/<profile>/.
    let exe = std::env::current_exe().unwrap_or_default();
    let profile_dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .map(PathBuf::from);
    let path = profile_dir.unwrap_or_default().join(name);
    assert!(
        path.exists(),
        "{} is missing after building the binaries",
        path.display()
    );
    path
}
