//! Training through the coordinator with real processes over loopback: the example workers
//! learn, DiLoCo with lr 1 and no momentum reproduces plain local training, and a coordinator
//! killed mid-run resumes from its checkpoint while the workers carry on by themselves.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use diloco_client::tensors::decode_safetensors;
use diloco_client::{ClientConfig, CoordinatorClient};
use diloco_contract::api::StatusReply;
use diloco_tests::processes::{CoordinatorProcess, WorkerProcess, events, signal};

const WORKER_TIMEOUT: Duration = Duration::from_secs(180);

fn f32s(tensor: &tch::Tensor) -> Vec<f32> {
    Vec::<f32>::try_from(&tensor.flatten(0, -1)).unwrap()
}

fn read_params(path: &std::path::Path) -> BTreeMap<String, Vec<f32>> {
    let bytes = std::fs::read(path).unwrap();
    decode_safetensors(&bytes)
        .unwrap()
        .into_iter()
        .map(|(k, v)| (k, f32s(&v)))
        .collect()
}

async fn status(url: &str) -> StatusReply {
    CoordinatorClient::new(ClientConfig::new(url))
        .unwrap()
        .status()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn three_workers_train_together_and_the_loss_falls() {
    let dir = tempfile::tempdir().unwrap();
    let coordinator = CoordinatorProcess::start(
        dir.path(),
        "training: {min_workers: 3, sync_every: 20, heartbeat_timeout_seconds: 20}\n",
    );
    let workers: Vec<_> = (0..3)
        .map(|i| {
            let seed = i.to_string();
            WorkerProcess::start(
                &format!("w{i}"),
                &["--url", &coordinator.url, "--seed", &seed, "--rounds", "6"],
            )
        })
        .collect();

    // Rounds advance in /status while they train.
    let mut seen_rounds = Vec::new();
    for _ in 0..600 {
        let round = status(&coordinator.url).await.sync_round;
        if seen_rounds.last() != Some(&round) {
            seen_rounds.push(round);
        }
        if round >= 6 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        seen_rounds.last(),
        Some(&6),
        "rounds seen in /status: {seen_rounds:?}"
    );
    assert!(
        seen_rounds.len() >= 3,
        "several rounds observed along the way: {seen_rounds:?}"
    );

    let outputs: Vec<_> = workers
        .into_iter()
        .map(|w| w.finish(WORKER_TIMEOUT))
        .collect();
    let mut final_losses = Vec::new();
    for lines in &outputs {
        let start = events(lines, "joined")[0]["eval_loss"].as_f64().unwrap();
        let rounds = events(lines, "round");
        assert_eq!(rounds.len(), 6);
        let last = rounds.last().unwrap();
        let end = last["eval_loss"].as_f64().unwrap();
        assert!(
            end < start * 0.2,
            "eval loss should fall well below the start: {start} -> {end}"
        );
        assert!(rounds.iter().all(|r| r["contributed"] == true));
        final_losses.push(end);
    }
    // Every worker holds the same parameters after a round, so they score the same.
    assert!(
        final_losses.windows(2).all(|w| w[0] == w[1]),
        "{final_losses:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn one_worker_with_lr_one_and_no_momentum_reproduces_local_training() {
    let dir = tempfile::tempdir().unwrap();
    let coordinator = CoordinatorProcess::start(
        dir.path(),
        "training:\n  sync_every: 10\n  upload_dtype: fp32\n  download_dtype: fp32\n  \
         outer_optimizer: {lr: 1.0, momentum: 0.0, nesterov: false}\n",
    );
    let diloco = dir.path().join("diloco.safetensors");
    let local = dir.path().join("local.safetensors");
    let diloco_path = diloco.to_str().unwrap();
    let local_path = local.to_str().unwrap();
    WorkerProcess::start(
        "solo",
        &[
            "--url",
            &coordinator.url,
            "--seed",
            "3",
            "--rounds",
            "8",
            "--save-params",
            diloco_path,
        ],
    )
    .finish(WORKER_TIMEOUT);
    WorkerProcess::start(
        "alone",
        &[
            "--local-only",
            "--local-steps",
            "80",
            "--seed",
            "3",
            "--save-params",
            local_path,
        ],
    )
    .finish(WORKER_TIMEOUT);

    let (a, b) = (read_params(&diloco), read_params(&local));
    assert_eq!(a.keys().collect::<Vec<_>>(), b.keys().collect::<Vec<_>>());
    // Each round θ − (θ − θ′) rounds once in fp32 (within an ulp of θ′), and AdamW carries on
    // from there: the runs stay within a few ulps of parameters of magnitude ~1 (measured:
    // 1.2e-7, one ulp at 1.0).
    let mut worst = 0f32;
    for (name, values) in &a {
        for (x, y) in values.iter().zip(&b[name]) {
            worst = worst.max((x - y).abs());
        }
    }
    assert!(worst <= 1e-6, "largest difference {worst:e} exceeds 1e-6");
    println!("largest difference from local training: {worst:e}");
}

/// Checkpointing every round, with min_workers 2.
const RESTART_CONFIG: &str = "training: {min_workers: 2, sync_every: 20, heartbeat_timeout_seconds: 30}\n\
                              checkpoint: {dir: checkpoints, every_rounds: 1}\n";

/// Two example workers training for `rounds` against a coordinator in `dir`, which is killed
/// (`kill -9`) after round 3 with the workers held (SIGSTOP, so the round stops moving) and
/// once the current round's checkpoint is on disk. Returns the address it listened on, the
/// stopped workers and the round it died at.
async fn train_then_kill(dir: &Path, rounds: &str) -> (String, Vec<WorkerProcess>, u64) {
    let mut coordinator = CoordinatorProcess::start(dir, RESTART_CONFIG);
    let url = coordinator.url.clone();
    let workers: Vec<_> = (0..2)
        .map(|i| {
            WorkerProcess::start(
                &format!("w{i}"),
                &["--url", &url, "--seed", &i.to_string(), "--rounds", rounds],
            )
        })
        .collect();
    while status(&url).await.sync_round < 3 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for w in &workers {
        signal(w.pid(), "STOP");
    }
    let killed_at = loop {
        let now = status(&url).await;
        if now.last_checkpoint_round == Some(now.sync_round) {
            break now.sync_round;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    coordinator.kill();
    (coordinator.address().to_string(), workers, killed_at)
}

#[tokio::test(flavor = "multi_thread")]
async fn killed_coordinator_resumes_from_its_checkpoint_and_workers_carry_on() {
    let dir = tempfile::tempdir().unwrap();
    // Workers and checkpoint agree on the round here (see the next test for a lagging one).
    let (address, workers, _) = train_then_kill(dir.path(), "8").await;
    let newest = std::fs::read_dir(dir.path().join("checkpoints"))
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "safetensors"))
        .max()
        .unwrap();
    let saved = decode_safetensors(&std::fs::read(&newest).unwrap()).unwrap();
    let saved_round: u64 = newest.file_stem().unwrap().to_str().unwrap()["checkpoint-".len()..]
        .parse()
        .unwrap();
    assert!(saved_round >= 3);

    let restarted =
        CoordinatorProcess::start(dir.path(), &format!("listen: {address}\n{RESTART_CONFIG}"));
    let client = CoordinatorClient::new(ClientConfig::new(&restarted.url)).unwrap();
    let resumed = client.global_params().await.unwrap();
    assert_eq!(
        resumed.round, saved_round,
        "resumed at the checkpoint's round"
    );
    for (name, tensor) in decode_safetensors(&resumed.bytes).unwrap() {
        assert_eq!(
            f32s(&tensor),
            f32s(&saved[&format!("theta/{name}")]),
            "{name} as checkpointed"
        );
    }
    let status = client.status().await.unwrap();
    assert_eq!(status.num_registered, 2, "roster restored: {status:?}");
    assert!(restarted.log().contains("resumed from checkpoint"));

    for w in &workers {
        signal(w.pid(), "CONT");
    }
    for worker in workers {
        let lines = worker.finish(WORKER_TIMEOUT);
        let rounds = events(&lines, "round");
        assert_eq!(
            rounds.len(),
            8,
            "every worker finished its 8 rounds: {lines:?}"
        );
        assert!(rounds.last().unwrap()["round"].as_u64().unwrap() >= 8);
    }
    let final_round = client.status().await.unwrap().sync_round;
    assert!(
        final_round >= 8,
        "training went on after the restart (round {final_round})"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn workers_ahead_of_a_lagging_checkpoint_adopt_it_and_finish() {
    let dir = tempfile::tempdir().unwrap();
    let (address, workers, killed_at) = train_then_kill(dir.path(), "6").await;
    // The crash came before the newest checkpoint reached the disk: the workers are one
    // round ahead of what the coordinator comes back with.
    let newest = dir.path().join(format!(
        "checkpoints/checkpoint-{killed_at:010}.safetensors"
    ));
    std::fs::remove_file(&newest).unwrap();
    let restarted =
        CoordinatorProcess::start(dir.path(), &format!("listen: {address}\n{RESTART_CONFIG}"));
    assert_eq!(status(&restarted.url).await.sync_round, killed_at - 1);
    for w in &workers {
        signal(w.pid(), "CONT");
    }
    // Each worker's pseudo-gradient from round `killed_at` is refused as stale; it adopts the
    // coordinator's parameters (one iteration that contributes nothing) and trains on.
    for worker in workers {
        let lines = worker.finish(WORKER_TIMEOUT);
        let rounds = events(&lines, "round");
        assert_eq!(rounds.len(), 6, "{lines:?}");
        let adopted: Vec<_> = rounds
            .iter()
            .filter(|r| r["contributed"] == false)
            .collect();
        assert_eq!(adopted.len(), 1, "{lines:?}");
        assert_eq!(adopted[0]["round"], killed_at - 1, "{lines:?}");
    }
    let final_round = status(&restarted.url).await.sync_round;
    // 6 iterations, one of them the adoption, and one round lost with the checkpoint.
    assert_eq!(final_round, 4, "rounds after the restart");
}
