//! `/status`, `/info` and `/known_workers`: forgather's field names, plus ours.

use diloco_contract::api::stats::MAX_MAX_POINTS;
use diloco_contract::api::{
    AggregateStats, ExpectedClientSettings, InfoOuterOptimizer, InfoReply, KnownWorker,
    KnownWorkersReply, StatsHistoryReply, StatsRecord, StatusReply, WorkerStatus,
};
use diloco_contract::config::TrainingMode;
use std::time::Instant;

use jiff::Timestamp;

use super::loss_average::LossAverages;
use super::roster::Roster;
use super::run_stats::Totals;
use super::{Coordinator, Shared, lock};
use crate::wire::dtype::WireDtype;

impl Coordinator {
    /// The `/status` document.
    pub fn status(&self) -> StatusReply {
        let shared = lock(&self.shared);
        let training = &self.config.training;
        let workers = shared
            .roster
            .workers
            .iter()
            .map(|(id, w)| {
                let status = WorkerStatus {
                    hostname: w.hostname.clone(),
                    registered_at: w.registered_at.to_string(),
                    last_heartbeat: w.last_heartbeat.to_string(),
                    sync_round: shared.round.number,
                    last_sync_server_round: w.last_sync_round,
                    steps_per_second: w.steps_per_second,
                    output_dir: w.output_dir.clone(),
                    stats: w.stats.clone(),
                    sync_state: w.sync_state.clone(),
                    restored: w.restored,
                };
                (id.clone(), status)
            })
            .collect();
        let layout = shared.layout.as_deref();
        StatusReply {
            status: Default::default(),
            mode: TrainingMode::Sync,
            sync_round: shared.round.number,
            num_workers: shared.num_workers,
            num_registered: shared.roster.workers.len(),
            workers,
            pending_submissions: shared.round.contributed.iter().cloned().collect(),
            waiting_for: shared.round.waiting_for().cloned().collect(),
            receiving: shared.receiving.iter().cloned().collect(),
            started_at: self.started_at.to_string(),
            uptime_seconds: self.started.elapsed().as_secs_f64(),
            heartbeat_timeout: training.heartbeat_timeout_seconds,
            sync_timeout: training.sync_timeout_seconds,
            min_workers: training.min_workers,
            outer_lr: shared.optimizer.lr,
            outer_momentum: shared.optimizer.momentum,
            outer_optimizer: shared.optimizer.describe(),
            save_dir: self.config.checkpoint.dir.clone(),
            last_checkpoint_round: shared.last_checkpoint_round,
            parameters_initialized: layout.is_some(),
            model_params: layout.map_or(0, |l| l.total_elements()),
            model_size_mb: layout.map_or(0.0, |l| l.size_mb()),
            last_outer_step_seconds: shared.last_outer_step_seconds,
            last_publish_seconds: shared.last_publish_seconds,
            device: crate::device::describe(self.device),
            aggregate_stats: aggregate_stats(&shared.roster, shared.stats.totals(), &shared.losses),
            token_progress: self.token_progress(&shared),
            total_worker_deaths: (shared.total_worker_deaths > 0)
                .then_some(shared.total_worker_deaths),
        }
    }

    /// The `/info` document: what workers must adopt (`expected_client_settings`).
    pub fn info(&self) -> InfoReply {
        let shared = lock(&self.shared);
        let t = &self.config.training;
        let layout = shared.layout.as_deref();
        InfoReply {
            output_dir: self.config.checkpoint.dir.clone(),
            model_checkpoint_dir: self.config.checkpoint.dir.clone(),
            outer_optimizer: InfoOuterOptimizer {
                name: "SGD".into(),
                lr: shared.optimizer.lr,
                momentum: shared.optimizer.momentum,
                nesterov: shared.optimizer.nesterov,
                dampening: 0.0,
                weight_decay: 0.0,
            },
            mode: TrainingMode::Sync,
            async_mode: false,
            num_workers: shared.num_workers,
            num_parameters: layout.map_or(0, |l| l.total_elements()),
            model_size_mb: layout.map_or(0.0, |l| l.size_mb()),
            model_hash: self.model_hash(layout),
            parameters_initialized: layout.is_some(),
            sync_round: shared.round.number,
            shm_group_dir: None,
            shm_group_size: None,
            dylu_enabled: false,
            dylu_base_sync_every: None,
            grace_period: 0.0,
            settings_authority: "server".into(),
            expected_client_settings: ExpectedClientSettings {
                sync_every: t.sync_every,
                dylu: false,
                verbose_sync: false,
                upload_dtype: t.upload_dtype,
                upload_sr: false,
                download_dtype: t.download_dtype,
                download_sr: false,
                wire_format: t.wire_format.as_str().into(),
                backend: "http".into(),
                bf16_comm: t.upload_dtype == WireDtype::Bf16,
                num_fragments_min: 1,
                num_fragments_default: 1,
                fragment_assignment_default: "strided".into(),
                heartbeat_timeout: t.heartbeat_timeout_seconds,
            },
            transport: "http".into(),
            grpc_endpoint: None,
        }
    }

    /// The `/known_workers` document: running workers first, then the most recent.
    pub fn known_workers(&self) -> KnownWorkersReply {
        let shared = lock(&self.shared);
        let mut known: Vec<_> = shared.roster.known.iter().collect();
        known.sort_by(|a, b| {
            b.1.running
                .cmp(&a.1.running)
                .then(b.1.last_registered.cmp(&a.1.last_registered))
        });
        KnownWorkersReply {
            workers: known
                .into_iter()
                .map(|(id, k)| KnownWorker {
                    worker_id: id.clone(),
                    output_dir: k.output_dir.clone(),
                    last_registered: k.last_registered.to_string(),
                    running: k.running,
                })
                .collect(),
        }
    }
}

/// The run's totals (departed workers included), the loss averages, and over the live
/// workers' latest reports: throughput and memory sums, token-weighted `grad_norm` and `mfu`,
/// the newest `eval_step` (reference §2.6).
fn aggregate_stats(roster: &Roster, totals: Totals, losses: &LossAverages) -> AggregateStats {
    let reports = || roster.workers.values().map(|w| &w.stats);
    let sum = |key: &str| reports().filter_map(|s| s.get(key)).sum::<f64>();
    let token_weighted = |key: &str| {
        let (weighted, weight) = reports()
            .filter_map(|s| {
                let tokens = s.get("tokens_window").copied().filter(|t| *t > 0.0);
                s.get(key)
                    .map(|value| (value * tokens.unwrap_or(1.0), tokens.unwrap_or(1.0)))
            })
            .fold((0.0, 0.0), |(a, b), (x, y)| (a + x, b + y));
        (weight > 0.0).then(|| weighted / weight)
    };
    let reporting = reports().filter(|s| !s.is_empty()).count();
    AggregateStats {
        total_tokens: totals.tokens,
        total_flos: totals.flos,
        total_steps: totals.steps,
        tok_per_sec: sum("tok_per_sec"),
        mfu: token_weighted("mfu"),
        peak_memory: reports()
            .any(|s| s.contains_key("peak_mem"))
            .then(|| sum("peak_mem")),
        grad_norm: token_weighted("grad_norm"),
        train_loss: losses.train.value(),
        eval_loss: losses.eval.value(),
        eval_step: reports()
            .filter_map(|s| s.get("eval_step").copied())
            .reduce(f64::max),
        num_reporting: reporting,
    }
}

impl Coordinator {
    /// `/stats_history`: at most `max_points` records (clamped to 1..=[`MAX_MAX_POINTS`]).
    pub fn stats_history(&self, max_points: usize) -> StatsHistoryReply {
        lock(&self.shared)
            .stats
            .history(max_points.clamp(1, MAX_MAX_POINTS))
    }

    /// Adds a worker's latest statistics to the run's totals, and a history point when the
    /// run's step count advanced.
    pub(super) fn record_run_stats(&self, shared: &mut Shared, worker_id: &str) {
        let Some(reported) = shared.roster.workers.get(worker_id).map(|w| &w.stats) else {
            return;
        };
        let advanced = shared.stats.report(worker_id, reported, Instant::now());
        shared.losses.report(reported);
        self.check_token_budget(shared);
        if !advanced {
            return;
        }
        let aggregate = aggregate_stats(&shared.roster, shared.stats.totals(), &shared.losses);
        shared.stats.record(StatsRecord {
            ts: Timestamp::now().to_string(),
            sync_round: shared.round.number,
            total_tokens: aggregate.total_tokens,
            total_flos: aggregate.total_flos,
            total_steps: aggregate.total_steps,
            tok_per_sec: aggregate.tok_per_sec,
            train_loss: aggregate.train_loss,
            eval_loss: aggregate.eval_loss,
            num_reporting: aggregate.num_reporting,
        });
    }
}

#[cfg(test)]
mod tests {
    use diloco_contract::api::HeartbeatRequest;

    use super::super::test_support::Run;
    use crate::identity::Caller;

    /// Statistics a worker reports are kept by whitelist and aggregated; `/info` announces
    /// the configured settings.
    #[tokio::test]
    async fn status_reports_the_roster_statistics_and_info_the_settings() {
        let run = Run::with_workers(&["w0", "w1"]);
        for (id, loss, tokens, mfu) in [("w0", 1.0, 100.0, 0.2), ("w1", 3.0, 300.0, 0.4)] {
            let beat = HeartbeatRequest {
                worker_id: id.into(),
                steps_per_second: Some(2.5),
                stats: Some(serde_json::json!({
                    "loss": loss, "tokens_total": 10, "tokens_window": tokens, "mfu": mfu,
                    "grad_norm": loss, "peak_mem": 1e9, "eval_step": tokens, "secret": 1,
                })),
                command_ack: None,
                sync_state: Some(serde_json::json!({
                    "sync_count": 3, "last_send_mb": 1.5, "sync_every": "often", "other": 1,
                })),
            };
            run.engine.heartbeat(beat, &Caller::worker_token()).unwrap();
        }
        let status = run.status();
        assert_eq!(status.num_registered, 2);
        let aggregate = &status.aggregate_stats;
        // forgather's token-weighted moving average (decay 0.7 per report) …
        assert_eq!(
            aggregate.train_loss,
            Some((0.7 * 100.0 + 300.0 * 3.0) / (0.7 * 100.0 + 300.0))
        );
        assert_eq!(aggregate.eval_loss, None, "null until someone reports one");
        // … and over the live workers' latest reports, token-weighted means and sums.
        assert_eq!(aggregate.mfu, Some((0.2 * 100.0 + 0.4 * 300.0) / 400.0));
        assert_eq!(
            aggregate.grad_norm,
            Some((1.0 * 100.0 + 3.0 * 300.0) / 400.0)
        );
        assert_eq!(aggregate.peak_memory, Some(2e9));
        assert_eq!(aggregate.eval_step, Some(300.0));
        assert_eq!(status.aggregate_stats.total_tokens, 20.0);
        assert_eq!(status.aggregate_stats.num_reporting, 2);
        assert!(!status.workers["w0"].stats.contains_key("secret"));
        // sync_state is kept by its own whitelist, finite numbers only.
        assert_eq!(
            status.workers["w0"].sync_state,
            [
                ("last_send_mb".to_string(), 1.5),
                ("sync_count".to_string(), 3.0)
            ]
            .into()
        );
        assert_eq!(status.workers["w1"].steps_per_second, Some(2.5));
        assert_eq!(status.waiting_for, vec!["w0", "w1"]);
        assert_eq!(status.model_params, 8);
        let info = run.engine.info();
        assert!(info.parameters_initialized);
        assert_eq!(info.expected_client_settings.sync_every, 500);
        assert!(info.expected_client_settings.bf16_comm);
        let known = run.engine.known_workers();
        assert_eq!(known.workers.len(), 2);
        assert!(known.workers.iter().all(|w| w.running));
    }
}
