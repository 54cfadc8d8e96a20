//! Binaries that use libtorch run without the user exporting anything, and would use CUDA on
//! a GPU node: the link keeps `libtorch_cuda` even though no symbol of it is referenced.

use std::process::Command;

use diloco_tests::workspace_binary;

#[test]
fn coordinator_runs_without_library_path_and_reports_its_device() {
    let output = Command::new(workspace_binary("diloco-coordinator"))
        .arg("--check-device")
        .env_remove("LD_LIBRARY_PATH")
        .env_remove("LIBTORCH")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        stdout.starts_with("device=cpu ") || stdout.starts_with("device=cuda:0 "),
        "{stdout}"
    );
    assert!(stdout.contains("cuda_available="), "{stdout}");
}

#[test]
fn coordinator_links_libtorch_cuda_explicitly() {
    let dynamic = Command::new("readelf")
        .arg("--dynamic")
        .arg(workspace_binary("diloco-coordinator"))
        .output()
        .unwrap();
    let dynamic = String::from_utf8_lossy(&dynamic.stdout);
    assert!(
        dynamic.contains("[libtorch_cuda.so]"),
        "libtorch_cuda.so is not NEEDED:\n{dynamic}"
    );
    assert!(
        dynamic.contains("RUNPATH") || dynamic.contains("RPATH"),
        "no rpath:\n{dynamic}"
    );
}
