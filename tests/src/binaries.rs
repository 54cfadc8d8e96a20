//! Paths of the workspace's binaries, for tests that run them as real processes.

use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

/// Builds the workspace binaries once per test binary, so a test never runs a stale one
/// (`cargo test -p diloco-tests` alone does not rebuild other packages' binaries). It builds
/// the whole workspace, exactly like `make test-rust`, because a narrower `-p` selection
/// unifies features differently and would relink every binary on each alternation.
fn ensure_built() {
    static BUILT: OnceLock<()> = OnceLock::new();
    BUILT.get_or_init(|| {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut command = Command::new(cargo);
        command.args(["build", "--quiet", "--workspace", "--bins"]);
        // `cargo test` gives the test process the package's CARGO_MANIFEST_DIR, CARGO_PKG_*
        // and so on; build scripts that watch those (ring does) would see a change and
        // rebuild half the tree, so the nested build gets the environment a shell would.
        for (key, _) in std::env::vars_os() {
            let key = key.to_string_lossy();
            if key.starts_with("CARGO_PKG_")
                || key.starts_with("CARGO_BIN_")
                || key.starts_with("CARGO_MANIFEST_")
                || matches!(
                    key.as_ref(),
                    "CARGO_CRATE_NAME"
                        | "CARGO_PRIMARY_PACKAGE"
                        | "CARGO_TARGET_TMPDIR"
                        | "OUT_DIR"
                )
            {
                command.env_remove(key.as_ref());
            }
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
