//! `/status`, `/info` and `/known_workers`: forgather's field names, plus ours.

use serde_json::{Value, json};

use super::{Coordinator, lock};

impl Coordinator {
    /// The `/status` document.
    pub fn status(&self) -> Value {
        let shared = lock(&self.shared);
        let training = &self.config.training;
        let workers: serde_json::Map<String, Value> = shared
            .roster
            .workers
            .iter()
            .map(|(id, w)| {
                (
                    id.clone(),
                    json!({
                        "hostname": w.hostname,
                        "registered_at": w.registered_at.to_string(),
                        "last_heartbeat": w.last_heartbeat.to_string(),
                        "sync_round": shared.round.number,
                        "last_sync_server_round": w.last_sync_round,
                        "steps_per_second": w.steps_per_second,
                        "output_dir": w.output_dir,
                        "stats": w.stats,
                        "restored": w.restored,
                    }),
                )
            })
            .collect();
        let layout = shared.layout.as_deref();
        let mut status = json!({
            "status": "running",
            "mode": "sync",
            "sync_round": shared.round.number,
            "num_workers": shared.num_workers,
            "num_registered": shared.roster.workers.len(),
            "workers": workers,
            "pending_submissions": shared.round.contributed,
            "waiting_for": shared.round.waiting_for().collect::<Vec<_>>(),
            "receiving": shared.receiving,
            "started_at": self.started_at.to_string(),
            "uptime_seconds": self.started.elapsed().as_secs_f64(),
            "heartbeat_timeout": training.heartbeat_timeout_seconds,
            "sync_timeout": training.sync_timeout_seconds,
            "min_workers": training.min_workers,
            "outer_lr": shared.optimizer.lr,
            "outer_momentum": shared.optimizer.momentum,
            "outer_optimizer": shared.optimizer.describe(),
            "save_dir": self.config.checkpoint.dir,
            "last_checkpoint_round": shared.last_checkpoint_round,
            "parameters_initialized": layout.is_some(),
            "model_params": layout.map_or(0, |l| l.total_elements()),
            "model_size_mb": layout.map_or(0.0, |l| l.size_mb()),
            "last_outer_step_seconds": shared.last_outer_step_seconds,
            "last_publish_seconds": shared.last_publish_seconds,
            "device": crate::device::describe(self.device),
            "aggregate_stats": aggregate_stats(&shared.roster),
        });
        if shared.total_worker_deaths > 0 {
            status["total_worker_deaths"] = shared.total_worker_deaths.into();
        }
        status
    }

    /// The `/info` document: what workers must adopt (`expected_client_settings`).
    pub fn info(&self) -> Value {
        let shared = lock(&self.shared);
        let t = &self.config.training;
        let layout = shared.layout.as_deref();
        json!({
            "output_dir": self.config.checkpoint.dir,
            "model_checkpoint_dir": self.config.checkpoint.dir,
            "outer_optimizer": {
                "name": "SGD",
                "lr": shared.optimizer.lr,
                "momentum": shared.optimizer.momentum,
                "nesterov": shared.optimizer.nesterov,
                "dampening": 0.0,
                "weight_decay": 0.0,
            },
            "mode": "sync",
            "async_mode": false,
            "num_workers": shared.num_workers,
            "num_parameters": layout.map_or(0, |l| l.total_elements()),
            "model_size_mb": layout.map_or(0.0, |l| l.size_mb()),
            "model_hash": layout.map(|l| l.hash()),
            "parameters_initialized": layout.is_some(),
            "sync_round": shared.round.number,
            "dylu_enabled": false,
            "grace_period": 0.0,
            "settings_authority": "server",
            "expected_client_settings": {
                "sync_every": t.sync_every,
                "dylu": false,
                "verbose_sync": false,
                "upload_dtype": t.upload_dtype.as_str(),
                "upload_sr": false,
                "download_dtype": t.download_dtype.as_str(),
                "download_sr": false,
                "wire_format": "safetensors",
                "backend": "http",
                "bf16_comm": t.upload_dtype == crate::wire::dtype::WireDtype::Bf16,
                "num_fragments_min": 1,
                "num_fragments_default": 1,
                "fragment_assignment_default": "strided",
                "heartbeat_timeout": t.heartbeat_timeout_seconds,
            },
            "transport": "http",
            "grpc_endpoint": null,
        })
    }

    /// The `/known_workers` document: running workers first, then the most recent.
    pub fn known_workers(&self) -> Value {
        let shared = lock(&self.shared);
        let mut known: Vec<_> = shared.roster.known.iter().collect();
        known.sort_by(|a, b| {
            b.1.running
                .cmp(&a.1.running)
                .then(b.1.last_registered.cmp(&a.1.last_registered))
        });
        let workers: Vec<Value> = known
            .into_iter()
            .map(|(id, k)| {
                json!({
                    "worker_id": id,
                    "output_dir": k.output_dir,
                    "last_registered": k.last_registered.to_string(),
                    "running": k.running,
                })
            })
            .collect();
        json!({ "workers": workers })
    }
}

/// Sums and means over the workers' latest statistics.
fn aggregate_stats(roster: &super::roster::Roster) -> Value {
    let values = |key: &str| -> Vec<f64> {
        roster
            .workers
            .values()
            .filter_map(|w| w.stats.get(key).copied())
            .collect()
    };
    let sum = |key: &str| values(key).iter().fold(0.0, |a, b| a + b);
    let mean = |key: &str| {
        let v = values(key);
        (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64)
    };
    json!({
        "total_tokens": sum("tokens_total"),
        "total_steps": sum("step_total"),
        "tok_per_sec": sum("tok_per_sec"),
        "train_loss": mean("loss"),
        "eval_loss": mean("eval_loss"),
        "num_reporting": roster.workers.values().filter(|w| !w.stats.is_empty()).count(),
    })
}
