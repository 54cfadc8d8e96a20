//! `make bench`: the coordinator's ingest rate, peak memory and outer-step time, each against
//! a baseline measured in the same run on the same machine:
//!
//! - ingest: workers uploading bf16 pseudo-gradients, timed from the first byte sent until
//!   the coordinator has received, validated and folded every upload, against a raw loopback
//!   TCP copy of the same number of bytes from the sender's memory into the receiver's
//!   (1 stream, and 4 concurrent streams); a receiver that discards the bytes into a small
//!   cache-resident buffer is measured too and reported beside it;
//! - memory: the coordinator's peak RSS (`VmHWM`) through two rounds with 1, 4 and 16
//!   workers, against the budget (12 + b_d + 2·b_u)·P·1.1 + 500 MB;
//! - outer step: its wall time against 20·P bytes at the bandwidth of a STREAM triad run with
//!   as many threads as the coordinator uses;
//! - worker SDKs: the upload rate of a Python SDK worker (`python/benchmarks/upload_bench.py`
//!   in the project venv) next to the Rust client's, on the same model and coordinator, with
//!   a raw loopback TCP copy of a frame of the same size as the baseline.
//!
//! - pinned ingest (`*_pinned`, with two cores or more): the same ingest measurements with the
//!   coordinator on one half of the cores and the senders on the other (`taskset`), and the
//!   raw baselines pinned the same way, as when workers run on other machines.
//!
//! One module per measurement (`ingest`, `memory`, `sdk`), the baselines in `baselines`, the
//! pinning in `pinning`, the coordinator they measure in `setup`; `main` runs them and writes
//! the summary.
//!
//! `DILOCO_BENCH_ONLY=ingest` stops after the ingest measurements (cleartext, TLS and pinned)
//! and prints just their ratios, without writing the summary.
//!
//! Prints one JSON object and writes it to `target/bench/summary.json`. Sizes can be changed
//! with `DILOCO_BENCH_INGEST_PARAMS`, `DILOCO_BENCH_MEMORY_PARAMS` and
//! `DILOCO_BENCH_SDK_PARAMS` (parameter counts); `DILOCO_PYTHON` picks the Python interpreter
//! (default: the venv `scripts/common.sh` names).

// The summary is one `json!` literal, deeper than the macro's default recursion limit.
#![recursion_limit = "256"]

mod baselines;
mod ingest;
mod memory;
mod pickle;
mod pinning;
mod sdk;
mod setup;

use std::collections::BTreeMap;

use serde_json::json;

use pinning::CoreSplit;

const TENSOR_ELEMENTS: usize = 2048 * 1024;
const REPETITIONS: usize = 4;
const MB: f64 = 1e6;

fn main() {
    let ingest_params = params_from_env("DILOCO_BENCH_INGEST_PARAMS", 1 << 27);
    let memory_params = params_from_env("DILOCO_BENCH_MEMORY_PARAMS", 1 << 26);
    let sdk_params = params_from_env("DILOCO_BENCH_SDK_PARAMS", 1 << 26);
    let root = diloco_tests::bench_dir();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");

    if std::env::var("DILOCO_BENCH_ONLY").as_deref() == Ok("pickle") {
        // Only the codec comparison (ingest_ratio_pickle); the summary file is left alone.
        let pickle = runtime.block_on(pickle::pickle_ingest_bench(&root, ingest_params));
        println!(
            "{:#}",
            json!({"ingest_ratio_pickle": pickle.ratio(),
                                "safetensors_seconds": pickle.safetensors_seconds,
                                "pickle_seconds": pickle.pickle_seconds})
        );
        return;
    }
    let threads = std::thread::available_parallelism().map_or(1, usize::from);
    eprintln!("triad with {threads} threads …");
    let triad = baselines::triad_bytes_per_second(threads);
    eprintln!("  {:.0} MB/s", triad / MB);

    eprintln!("ingest and outer step, P = {ingest_params} …");
    let ingest = runtime.block_on(ingest::ingest_bench(&root, ingest_params, None));
    eprintln!("ingest over TLS, P = {ingest_params} …");
    let (ingest_tls, cpu_tls) =
        runtime.block_on(ingest::tls_ingest_bench(&root, ingest_params, None));
    let pinned = CoreSplit::halves().map(|split| {
        eprintln!(
            "pinned ingest: coordinator on cores {:?}, senders on {:?} …",
            split.coordinator, split.senders
        );
        let ingest = runtime.block_on(ingest::ingest_bench(&root, ingest_params, Some(&split)));
        eprintln!("pinned ingest over TLS …");
        let (tls, _) =
            runtime.block_on(ingest::tls_ingest_bench(&root, ingest_params, Some(&split)));
        json!({
            "ingest_ratio_1_pinned": ingest.ours_1 / ingest.raw_1,
            "ingest_ratio_4_pinned": ingest.ours_4 / ingest.raw_4,
            "ingest_ratio_tls_pinned": tls / ingest.raw_1,
            "details": {
                "cores": split.json(),
                "raw_tcp_1_stream_mb_per_s": ingest.raw_1 / MB,
                "raw_tcp_4_streams_mb_per_s": ingest.raw_4 / MB,
                "ingest_1_worker_mb_per_s": ingest.ours_1 / MB,
                "ingest_4_workers_mb_per_s": ingest.ours_4 / MB,
                "ingest_1_worker_tls_mb_per_s": tls / MB,
                "cpu_ns_per_uploaded_byte": {
                    "cleartext_1_worker": ingest.cpu_1.json(),
                    "cleartext_4_workers": ingest.cpu_4.json(),
                },
            },
        })
    });
    // Without two cores there is nothing to pin to: the figures are null, not made up.
    let pinned = pinned.unwrap_or_else(|| {
        json!({"ingest_ratio_1_pinned": null, "ingest_ratio_4_pinned": null,
               "ingest_ratio_tls_pinned": null, "details": "fewer than two cores"})
    });
    let outer_step_bound = 20.0 * ingest_params as f64 / triad;
    // CPU per byte on each side: where ingest time goes when workers and coordinator share
    // the cores, and what a coordinator core would cost with the workers elsewhere.
    let cpu = json!({
        "cleartext_1_worker": ingest.cpu_1.json(),
        "cleartext_4_workers": ingest.cpu_4.json(),
        "tls_1_worker": cpu_tls.json(),
    });
    eprintln!("ingest of torch.save uploads against safetensors, P = {ingest_params} …");
    let pickle = runtime.block_on(pickle::pickle_ingest_bench(&root, ingest_params));
    let ingest_ratio_pickle = pickle.ratio();
    let pickle_details = json!({
        "ingest_ratio_pickle": ingest_ratio_pickle,
        "safetensors_seconds": pickle.safetensors_seconds,
        "pickle_seconds": pickle.pickle_seconds,
        "safetensors_upload_bytes": pickle.safetensors_bytes,
        "pickle_upload_bytes": pickle.pickle_bytes,
    });
    if std::env::var("DILOCO_BENCH_ONLY").as_deref() == Ok("ingest") {
        // A quick look while working on the upload path; the summary file is left alone.
        let quick = json!({
            "ingest_ratio_1": ingest.ours_1 / ingest.raw_1,
            "ingest_ratio_4": ingest.ours_4 / ingest.raw_4,
            "ingest_ratio_tls": ingest_tls / ingest.raw_1,
            "tls_cost_vs_cleartext": 1.0 - ingest_tls / ingest.ours_1,
            "cpu_ns_per_uploaded_byte": cpu.clone(),
            "ingest_ratio_1_pinned": pinned["ingest_ratio_1_pinned"],
            "ingest_ratio_4_pinned": pinned["ingest_ratio_4_pinned"],
            "ingest_ratio_tls_pinned": pinned["ingest_ratio_tls_pinned"],
            "pinned": pinned["details"],
            "ingest_ratio_pickle": ingest_ratio_pickle,
            "pickle": pickle_details,
        });
        println!("{quick:#}");
        return;
    }

    eprintln!("worker SDK uploads, P = {sdk_params} …");
    let sdk = runtime.block_on(sdk::sdk_upload_bench(&root, sdk_params));

    eprintln!("memory, P = {memory_params} …");
    let mut rss = BTreeMap::new();
    for workers in [1, 4, 16] {
        let peak = runtime.block_on(memory::memory_bench(&root, memory_params, workers));
        eprintln!(
            "  {workers:>2} workers: peak RSS {:.0} MB",
            peak as f64 / MB
        );
        rss.insert(workers.to_string(), peak);
    }
    // fp32 θ, momentum and accumulator; the fp32 download; two bf16 uploads in flight.
    let (b_d, b_u) = (4.0, 2.0);
    let budget = ((12.0 + b_d + 2.0 * b_u) * memory_params as f64 * 1.1 + 500.0 * MB) as u64;
    let (smallest, largest) = (
        *rss.values().min().unwrap_or(&0),
        *rss.values().max().unwrap_or(&0),
    );
    let growth = largest as f64 / smallest.max(1) as f64 - 1.0;

    let ingest_ratio_1 = ingest.ours_1 / ingest.raw_1;
    let ingest_ratio_4 = ingest.ours_4 / ingest.raw_4;
    let ingest_ratio_tls = ingest_tls / ingest.raw_1;
    let outer_step_ratio = ingest.outer_step_seconds / outer_step_bound;
    let targets = json!({
        "ingest_ratio_1": ingest_ratio_1 >= 0.8,
        "ingest_ratio_4": ingest_ratio_4 >= 0.8,
        "ingest_ratio_tls_within_25_percent_of_cleartext": ingest_tls >= 0.75 * ingest.ours_1,
        "rss_within_budget": largest <= budget,
        "rss_flat_within_5_percent": growth <= 0.05,
        "outer_step_ratio": outer_step_ratio <= 2.0,
        "ingest_ratio_pickle_within_10_percent": ingest_ratio_pickle >= 0.9,
    });
    let all_met = targets
        .as_object()
        .is_some_and(|t| t.values().all(|v| v == &json!(true)));
    let summary = json!({
        "ingest_ratio_1": ingest_ratio_1,
        "ingest_ratio_4": ingest_ratio_4,
        "ingest_ratio_tls": ingest_ratio_tls,
        "ingest_ratio_1_pinned": pinned["ingest_ratio_1_pinned"],
        "ingest_ratio_4_pinned": pinned["ingest_ratio_4_pinned"],
        "ingest_ratio_tls_pinned": pinned["ingest_ratio_tls_pinned"],
        "ingest_ratio_pickle": ingest_ratio_pickle,
        "rss_bytes_by_workers": rss,
        "rss_budget_bytes": budget,
        "rss_growth_largest_over_smallest": growth,
        "outer_step_ratio": outer_step_ratio,
        "python_upload_mbps": sdk.python / MB,
        "rust_upload_mbps": sdk.rust / MB,
        "targets_met": targets,
        "all_targets_met": all_met,
        "details": {
            "cpu_threads": threads,
            "ingest_params": ingest_params,
            "ingest_upload_bytes": ingest.upload_bytes,
            "raw_tcp_1_stream_mb_per_s": ingest.raw_1 / MB,
            "raw_tcp_1_stream_discarding_mb_per_s": ingest.discard_1 / MB,
            "ingest_1_worker_mb_per_s": ingest.ours_1 / MB,
            "ingest_1_worker_tls_mb_per_s": ingest_tls / MB,
            "tls_cost_vs_cleartext": 1.0 - ingest_tls / ingest.ours_1,
            "raw_tcp_4_streams_mb_per_s": ingest.raw_4 / MB,
            "raw_tcp_4_streams_discarding_mb_per_s": ingest.discard_4 / MB,
            "ingest_4_workers_mb_per_s": ingest.ours_4 / MB,
            "ingest_ratio_1_vs_discarding": ingest.ours_1 / ingest.discard_1,
            "ingest_ratio_4_vs_discarding": ingest.ours_4 / ingest.discard_4,
            "pickle_ingest": pickle_details,
            "memory_params": memory_params,
            "memory_upload_dtype": "bf16",
            "memory_download_dtype": "fp32",
            "triad_mb_per_s": triad / MB,
            "outer_step_seconds": ingest.outer_step_seconds,
            "publish_seconds": ingest.publish_seconds,
            "cpu_ns_per_uploaded_byte": cpu.clone(),
            "coordinator_tls_cpu_cost_vs_cleartext":
                cpu_tls.coordinator / ingest.cpu_1.coordinator - 1.0,
            "outer_step_bound_seconds": outer_step_bound,
            "sdk_upload_params": sdk_params,
            "sdk_upload_bytes": sdk.upload_bytes,
            "sdk_upload_raw_tcp_mb_per_s": sdk.raw / MB,
            "python_upload_ratio_vs_rust": sdk.python / sdk.rust,
            "python_upload_ratio_vs_raw_tcp": sdk.python / sdk.raw,
            "rust_upload_ratio_vs_raw_tcp": sdk.rust / sdk.raw,
            "pinned": pinned["details"],
            "repetitions": REPETITIONS,
            "statistic": "median",
        },
    });
    let text = serde_json::to_string_pretty(&summary).expect("JSON");
    std::fs::write(root.join("summary.json"), format!("{text}\n")).expect("summary written");
    println!("{text}");
}

fn params_from_env(name: &str, default: usize) -> usize {
    let params = std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default);
    params.div_ceil(TENSOR_ELEMENTS).max(1) * TENSOR_ELEMENTS
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}
