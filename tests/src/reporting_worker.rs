//! A worker that trains through a coordinator with the client crate (`DilocoWorker`) on a
//! thread of its own, and reports its training loss and step count in heartbeats, as
//! forgather's workers do, so the coordinator's `/stats_history` gains points while it trains
//! (the example worker's heartbeats carry no statistics).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use diloco_client::contract::api::HeartbeatRequest;
use diloco_client::{ClientConfig, CoordinatorClient, DilocoWorker, WorkerOptions};
use serde_json::json;
use tch::nn::{self, OptimizerConfig};
use tch::{Device, Kind, Tensor};

use crate::console_fixture::{PARAMETER, PARAMETER_SHAPE};

/// Rounds a worker takes part in at most, however long the test forgets to stop it.
const MAX_ROUNDS: u64 = 2000;
/// Inner steps between heartbeats carrying statistics.
const REPORT_EVERY: u64 = 5;
/// How long dropping a worker waits for it to leave.
const DROP_WAIT: Duration = Duration::from_secs(20);
/// Tokens one inner step counts for, in the statistics.
const TOKENS_PER_STEP: u64 = 64;

/// A training worker; stopped (and waited for, boundedly) on drop.
pub struct ReportingWorker {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<Result<u64>>>,
    /// Its id.
    pub worker_id: String,
}

impl ReportingWorker {
    /// Joins the coordinator `config` points at as `worker_id` and trains the fixture's
    /// single tensor towards a fixed target, pausing `step_pause` after each inner step.
    pub fn start(config: ClientConfig, worker_id: &str, step_pause: Duration) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let id = worker_id.to_string();
        let thread = std::thread::spawn(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .context("a runtime for the worker")?
                .block_on(train(config, id, step_pause, stopped))
        });
        Self {
            stop,
            thread: Some(thread),
            worker_id: worker_id.to_string(),
        }
    }

    /// Asks it to leave after its current round and waits (at most `timeout`); returns the
    /// rounds it contributed to, or why it failed.
    pub fn stop(mut self, timeout: Duration) -> Result<u64> {
        self.stop.store(true, Ordering::SeqCst);
        let thread = self.thread.take().context("already stopped")?;
        let deadline = Instant::now() + timeout;
        while !thread.is_finished() {
            if Instant::now() >= deadline {
                bail!("worker {} did not stop within {timeout:?}", self.worker_id);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        match thread.join() {
            Ok(result) => result.with_context(|| format!("worker {}", self.worker_id)),
            Err(_) => bail!("worker {} panicked", self.worker_id),
        }
    }
}

impl Drop for ReportingWorker {
    fn drop(&mut self) {
        // A test that failed midway: the worker still leaves, and its thread is not left
        // running libtorch while the process exits (which can crash it).
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            let deadline = Instant::now() + DROP_WAIT;
            while !thread.is_finished() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
            if thread.is_finished() {
                let _ = thread.join();
            }
        }
    }
}

async fn train(
    config: ClientConfig,
    worker_id: String,
    step_pause: Duration,
    stop: Arc<AtomicBool>,
) -> Result<u64> {
    let store = nn::VarStore::new(Device::Cpu);
    let shape: Vec<i64> = PARAMETER_SHAPE.iter().map(|&d| d as i64).collect();
    let weights = store.root().zeros(PARAMETER, &shape);
    let target = (Tensor::arange(weights.numel() as i64, (Kind::Float, Device::Cpu))
        / weights.numel() as f64)
        .reshape(&shape);
    let mut optimizer = nn::Sgd::default().build(&store, 0.3)?;
    let params: Vec<(String, Tensor)> = store.variables().into_iter().collect();
    let client = CoordinatorClient::new(config)?;
    let mut worker = DilocoWorker::join(client, WorkerOptions::new(&worker_id), &params).await?;
    let (mut steps, mut rounds) = (0u64, 0u64);
    let mut last_report = Instant::now();
    while !stop.load(Ordering::SeqCst) && rounds < MAX_ROUNDS {
        for _ in 0..worker.sync_every() {
            let loss = (&weights - &target).square().mean(Kind::Float);
            optimizer.backward_step(&loss);
            worker.record_step();
            steps += 1;
            if steps % REPORT_EVERY == 0 {
                let seconds = last_report.elapsed().as_secs_f64().max(1e-3);
                last_report = Instant::now();
                let report = HeartbeatRequest {
                    worker_id: worker_id.clone(),
                    stats: Some(json!({
                        "loss": loss.double_value(&[]),
                        "step_total": steps,
                        "tokens_total": steps * TOKENS_PER_STEP,
                        "tok_per_sec": (REPORT_EVERY * TOKENS_PER_STEP) as f64 / seconds,
                    })),
                    ..HeartbeatRequest::default()
                };
                worker.client().heartbeat(&report).await?;
            }
            tokio::time::sleep(step_pause).await;
        }
        if worker.sync(&params).await?.contributed {
            rounds += 1;
        }
    }
    worker.leave().await?;
    Ok(rounds)
}
