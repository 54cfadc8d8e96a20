//! `diloco-example-worker`: trains a small MLP with AdamW inner steps through a DiLoCo
//! coordinator, printing one JSON line per round. It acts on relayed commands after each
//! round: `save_checkpoint` writes `--save-params`, `save_and_stop` writes it and leaves,
//! `abort` leaves without writing.
//!
//! ```text
//! diloco-example-worker --url http://127.0.0.1:8512 --worker-id w0 --seed 0 --rounds 10
//! diloco-example-worker --local-only --local-steps 500 --seed 0   # the same training, alone
//! ```

mod task;

use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use diloco_client::contract::env;
use diloco_client::coordinator_client::TokenSource;
use diloco_client::tensors::{Named, append_safetensors};
use diloco_client::wire::dtype::WireDtype;
use diloco_client::{ClientConfig, CoordinatorClient, DilocoWorker, RelayedCommand, WorkerOptions};
use serde_json::json;
use task::{Rng, Teacher, mse, student};
use tch::nn::{self, OptimizerConfig};

#[derive(Parser)]
#[command(about = "Example DiLoCo worker: a tiny MLP learns a fixed teacher network")]
struct Cli {
    /// Coordinator control-plane URL.
    #[arg(long, env = env::URL, default_value = "http://127.0.0.1:8512")]
    url: String,
    /// A mounted worker bundle from the operator (`token`, `ca.crt`, `endpoints.json`, and
    /// `tls.crt`/`tls.key` for named clients); replaces --url, --token-file and --ca-file.
    #[arg(long, env = env::CREDENTIALS_DIR, conflicts_with_all = ["token_file", "ca_file"])]
    credentials_dir: Option<PathBuf>,
    /// Resolve HOST to IP instead of asking DNS (repeatable), like curl's --resolve: reach a
    /// coordinator by the Service name its certificate carries from outside the cluster.
    #[arg(long, value_name = "HOST=IP", value_parser = parse_resolve)]
    resolve: Vec<(String, std::net::IpAddr)>,
    /// Unique worker id.
    #[arg(long, env = env::WORKER_ID, default_value = "example-worker")]
    worker_id: String,
    /// File holding the bearer token (re-read after a 401). Without it `DILOCO_TOKEN_FILE`
    /// or `DILOCO_TOKEN` is used; the token itself is never a command-line argument.
    #[arg(long)]
    token_file: Option<std::path::PathBuf>,
    /// CA bundle to trust for an `https` coordinator (else `DILOCO_CA_FILE`).
    #[arg(long)]
    ca_file: Option<std::path::PathBuf>,
    /// Client certificate and key (PEM) to authenticate with instead of a token.
    #[arg(long, requires = "client_key")]
    client_cert: Option<std::path::PathBuf>,
    /// Key of `--client-cert`.
    #[arg(long, requires = "client_cert")]
    client_key: Option<std::path::PathBuf>,
    /// Seed of this worker's data stream (give each worker its own).
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Rounds to take part in before leaving.
    #[arg(long, default_value_t = 10)]
    rounds: u64,
    /// Inner AdamW learning rate.
    #[arg(long, default_value_t = 3e-3)]
    lr: f64,
    /// Samples per inner step.
    #[arg(long, default_value_t = 64)]
    batch: i64,
    /// Write the final parameters to this safetensors file.
    #[arg(long)]
    save_params: Option<PathBuf>,
    /// Train alone, without a coordinator, for --local-steps steps.
    #[arg(long)]
    local_only: bool,
    /// Inner steps of a --local-only run.
    #[arg(long, default_value_t = 500)]
    local_steps: u64,
}

/// The model, its optimizer and the data, seeded so runs are reproducible.
struct Trainer {
    vs: nn::VarStore,
    model: nn::Sequential,
    optimizer: nn::Optimizer,
    teacher: Teacher,
    data: Rng,
    eval: (tch::Tensor, tch::Tensor),
    batch: i64,
}

impl Trainer {
    fn new(cli: &Cli) -> anyhow::Result<Self> {
        // One thread per worker: several run side by side, and results stay reproducible.
        tch::set_num_threads(1);
        // Same initial weights everywhere; the coordinator's parameters replace them anyway.
        tch::manual_seed(0);
        let vs = nn::VarStore::new(tch::Device::Cpu);
        let model = student(&vs.root());
        let optimizer = nn::AdamW::default().build(&vs, cli.lr)?;
        let teacher = Teacher::new();
        let eval = teacher.batch(&mut Rng::new(999), 512);
        Ok(Self {
            vs,
            model,
            optimizer,
            teacher,
            data: Rng::new(1000 + cli.seed),
            eval,
            batch: cli.batch,
        })
    }

    /// The parameters, by name, in a stable order.
    fn params(&self) -> Vec<Named> {
        let mut params: Vec<Named> = self.vs.variables().into_iter().collect();
        params.sort_by(|a, b| a.0.cmp(&b.0));
        params
    }

    /// One AdamW step; returns the training loss.
    fn step(&mut self) -> f64 {
        let (x, y) = self.teacher.batch(&mut self.data, self.batch);
        let loss = mse(&self.model, &x, &y);
        self.optimizer.backward_step(&loss);
        loss.double_value(&[])
    }

    fn eval_loss(&self) -> f64 {
        tch::no_grad(|| mse(&self.model, &self.eval.0, &self.eval.1).double_value(&[]))
    }

    /// Writes the parameters to `--save-params`, if given.
    fn save_if_asked(&self, cli: &Cli) -> anyhow::Result<()> {
        match &cli.save_params {
            Some(path) => self.save(path),
            None => Ok(()),
        }
    }

    fn save(&self, path: &PathBuf) -> anyhow::Result<()> {
        let mut blob = Vec::new();
        append_safetensors(&mut blob, &self.params(), WireDtype::Fp32)?;
        std::fs::write(path, blob).with_context(|| format!("failed to write {}", path.display()))
    }
}

fn parse_resolve(value: &str) -> Result<(String, std::net::IpAddr), String> {
    let (host, ip) = value
        .split_once('=')
        .ok_or_else(|| format!("expected HOST=IP, got {value:?}"))?;
    let ip = ip
        .parse()
        .map_err(|e| format!("{ip:?} is not an IP address: {e}"))?;
    Ok((host.to_string(), ip))
}

fn emit(value: serde_json::Value) {
    println!("{value}");
}

async fn run_with_coordinator(cli: &Cli, mut trainer: Trainer) -> anyhow::Result<()> {
    let mut config = match &cli.credentials_dir {
        Some(dir) => ClientConfig::from_credentials_dir(dir)?,
        None => ClientConfig::new(&cli.url),
    };
    config.resolve = cli.resolve.clone();
    if let Some(path) = &cli.token_file {
        config.token = TokenSource::File(path.clone());
    }
    if cli.ca_file.is_some() {
        config.ca_file = cli.ca_file.clone();
    }
    if let (Some(cert), Some(key)) = (&cli.client_cert, &cli.client_key) {
        config.client_identity = Some((cert.clone(), key.clone()));
    }
    let client = CoordinatorClient::new(config)?;
    let mut options = WorkerOptions::new(&cli.worker_id);
    options.hostname = std::env::var("HOSTNAME").ok();
    let params = trainer.params();
    let mut worker = DilocoWorker::join(client, options, &params).await?;
    emit(
        json!({"event": "joined", "worker": cli.worker_id, "round": worker.round(), "eval_loss": trainer.eval_loss(), "sync_every": worker.sync_every()}),
    );
    'rounds: for _ in 0..cli.rounds {
        let mut total = 0.0;
        for _ in 0..worker.sync_every() {
            total += trainer.step();
            worker.record_step();
        }
        let report = worker.sync(&params).await?;
        emit(json!({
            "event": "round",
            "worker": cli.worker_id,
            "round": report.round,
            "train_loss": total / worker.sync_every() as f64,
            "eval_loss": trainer.eval_loss(),
            "contributed": report.contributed,
            "upload_bytes": report.upload_bytes,
        }));
        while let Some(command) = worker.next_command() {
            emit(
                json!({"event": "command", "worker": cli.worker_id, "command": command.as_str(), "round": worker.round()}),
            );
            match command {
                RelayedCommand::SaveCheckpoint => trainer.save_if_asked(cli)?,
                RelayedCommand::SaveAndStop => break 'rounds,
                RelayedCommand::Abort => {
                    worker.leave().await?;
                    emit(
                        json!({"event": "aborted", "worker": cli.worker_id, "eval_loss": trainer.eval_loss()}),
                    );
                    return Ok(());
                }
            }
        }
    }
    trainer.save_if_asked(cli)?;
    worker.leave().await?;
    emit(json!({"event": "done", "worker": cli.worker_id, "eval_loss": trainer.eval_loss()}));
    Ok(())
}

fn run_locally(cli: &Cli, mut trainer: Trainer) -> anyhow::Result<()> {
    emit(
        json!({"event": "joined", "worker": cli.worker_id, "eval_loss": trainer.eval_loss(), "local_only": true}),
    );
    for _ in 0..cli.local_steps {
        trainer.step();
    }
    if let Some(path) = &cli.save_params {
        trainer.save(path)?;
    }
    emit(json!({"event": "done", "worker": cli.worker_id, "eval_loss": trainer.eval_loss()}));
    Ok(())
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let trainer = Trainer::new(&cli)?;
    if cli.local_only {
        return run_locally(&cli, trainer);
    }
    // block_on runs the training on this thread; the heartbeat task gets the runtime's one
    // worker thread, so it keeps beating while the inner steps compute.
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?
        .block_on(run_with_coordinator(&cli, trainer))
}
