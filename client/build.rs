//! Build script shared by every crate that links libtorch through tch (`build =
//! "../client/build.rs"` in their manifests).
//!
//! - An rpath to libtorch, so binaries and tests run without `LD_LIBRARY_PATH`.
//! - `libtorch_cuda` linked explicitly: the linker's `--as-needed` drops it because no symbol
//!   is referenced directly, and CUDA would then silently be unavailable on a GPU node.
//!
//! `LIBTORCH` comes from `.cargo/config.toml` (the venv that `scripts/bootstrap` installs).

use std::path::PathBuf;

fn main() {
    println!("cargo:rerun-if-env-changed=LIBTORCH");
    // Shared by several packages (`build = "../client/build.rs"`), so the path is spelled
    // from a sibling directory; a bare `build.rs` would not exist in the others.
    println!("cargo:rerun-if-changed=../client/build.rs");
    let Some(libtorch) = std::env::var_os("LIBTORCH") else {
        println!("cargo:warning=LIBTORCH is not set; run scripts/bootstrap python");
        return;
    };
    let lib = PathBuf::from(libtorch).join("lib");
    // The resolved path, so a binary keeps working when copied elsewhere on this machine.
    let lib = lib.canonicalize().unwrap_or(lib);
    println!("cargo:rustc-link-search=native={}", lib.display());
    println!("cargo:rustc-link-arg=-Wl,-rpath,{}", lib.display());
    if lib.join("libtorch_cuda.so").exists() {
        println!("cargo:rustc-link-arg=-Wl,--no-as-needed,-ltorch_cuda,--as-needed");
    }
}
