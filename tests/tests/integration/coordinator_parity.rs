//! forgather protocol parity on a real coordinator process (reference §2.4, §2.7, §3.1,
//! §3.5, §6 items 1, 10, 34, 35, 39, 40): the bearer scheme in any case, the realm of a 401,
//! the audit records of a deregistration and of control actions (unknown ones too, with a
//! sanitized name and never a secret), a `group` registration refused with 400, every `/info`
//! field, and work-unit refusals that change nothing.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use diloco_client::wire::dtype::WireDtype;
use diloco_client::wire::layout::ModelLayout;
use diloco_client::wire::safetensors;
use diloco_tests::processes::CoordinatorProcess;
use diloco_tests::tokens::TestTokens;
use serde_json::{Value, json};

fn write_initial(dir: &Path) {
    let layout = ModelLayout::new(vec![("w".into(), vec![8, 4])]).unwrap();
    let values: Vec<f32> = (0..32).map(|i| i as f32 / 4.0).collect();
    std::fs::write(
        dir.join("init.safetensors"),
        safetensors::encode(&layout, &values, WireDtype::Fp32, &BTreeMap::new()),
    )
    .unwrap();
}

/// The audit records, once at least `count` of them satisfy `matches` (the log is written by
/// its own thread).
fn audit_until(dir: &Path, count: usize, matches: impl Fn(&Value) -> bool) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let records: Vec<Value> = std::fs::read_to_string(dir.join("audit.jsonl"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect();
        if records.iter().filter(|r| matches(r)).count() >= count {
            return records;
        }
        assert!(
            Instant::now() < deadline,
            "audit records missing: {records:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_coordinator_speaks_forgathers_protocol() {
    let dir = tempfile::tempdir().unwrap();
    let tokens = TestTokens::write(dir.path());
    write_initial(dir.path());
    let _coordinator = CoordinatorProcess::start(
        dir.path(),
        &format!(
            "auth: {{{}}}\n\
             model: {{initial_parameters: init.safetensors}}\n\
             audit: {{path: audit.jsonl}}\n\
             limits: {{auth_failures_per_window: 1000}}\n",
            tokens.auth_keys()
        ),
    );
    let http = diloco_tests::http_client();
    let url = _coordinator.url.clone();
    let worker = tokens.worker.clone();
    let admin = tokens.admin.clone();

    // §3.1 / item 10: the scheme in any case.
    for scheme in ["Bearer", "bearer", "BEARER", "bEaReR"] {
        let response = http
            .get(format!("{url}/status"))
            .header("authorization", format!("{scheme} {worker}"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{scheme}");
    }
    // Item 1: a 401 names the realm in its challenge and its body.
    for auth in [
        None,
        Some(format!("Basic {worker}")),
        Some("bearer".to_string()),
    ] {
        let mut request = http.get(format!("{url}/info"));
        if let Some(auth) = &auth {
            request = request.header("authorization", auth);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), 401, "{auth:?}");
        assert_eq!(
            response.headers()["www-authenticate"],
            "Bearer realm=\"diloco\""
        );
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["realm"], "diloco", "{body}");
        assert_eq!(body["kind"], "auth");
        assert!(body["error"].is_string());
    }

    // §2.4: a group block is answered 400 (pipeline groups are not implemented), and the
    // worker is not registered.
    let grouped = http
        .post(format!("{url}/register"))
        .bearer_auth(&worker)
        .json(
            &json!({"worker_id": "pp0", "group": {"group_id": "g", "pp_rank": 0,
                      "pp_world_size": 2}}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(grouped.status(), 400);
    let body: Value = grouped.json().await.unwrap();
    assert!(body["error"].as_str().unwrap().contains("group"), "{body}");

    // §2.7: every field of /info.
    let info: Value = http
        .get(format!("{url}/info"))
        .bearer_auth(&worker)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    for field in [
        "output_dir",
        "model_checkpoint_dir",
        "outer_optimizer",
        "mode",
        "async_mode",
        "num_workers",
        "shm_group_dir",
        "shm_group_size",
        "num_parameters",
        "model_size_mb",
        "dylu_enabled",
        "dylu_base_sync_every",
        "grace_period",
        "model_hash",
        "settings_authority",
        "expected_client_settings",
        "transport",
        "grpc_endpoint",
    ] {
        assert!(info.get(field).is_some(), "/info lacks {field}: {info}");
    }
    for field in [
        "name",
        "lr",
        "momentum",
        "nesterov",
        "dampening",
        "weight_decay",
    ] {
        assert!(info["outer_optimizer"].get(field).is_some(), "{field}");
    }
    for field in [
        "sync_every",
        "dylu",
        "verbose_sync",
        "upload_dtype",
        "upload_sr",
        "download_dtype",
        "download_sr",
        "wire_format",
        "backend",
        "bf16_comm",
        "num_fragments_min",
        "num_fragments_default",
        "fragment_assignment_default",
        "heartbeat_timeout",
    ] {
        assert!(
            info["expected_client_settings"].get(field).is_some(),
            "{field}"
        );
    }
    assert_eq!(info["num_parameters"], 32);
    assert_eq!(info["settings_authority"], "server");

    // Item 34: deregister → `deregister` then `eviction` (unknown ids: `deregister` only).
    let registered = http
        .post(format!("{url}/register"))
        .bearer_auth(&worker)
        .json(&json!({"worker_id": "leaver"}))
        .send()
        .await
        .unwrap();
    assert_eq!(registered.status(), 200);
    let long_id = "z".repeat(10_000);
    for id in ["leaver", "nobody", long_id.as_str()] {
        let left = http
            .post(format!("{url}/deregister"))
            .bearer_auth(&worker)
            .json(&json!({"worker_id": id}))
            .send()
            .await
            .unwrap();
        assert_eq!(left.status(), 200);
    }
    // Items 35, 39, 40: control actions recorded before they run, by allowlist; an unknown
    // action (its 404 too) by a sanitized name and `{}`; no secret in the log.
    let secret = "s3cr3t-value-never-logged";
    let kicked = http
        .post(format!("{url}/control/kick_worker"))
        .bearer_auth(&admin)
        .json(&json!({"worker_id": "ghost", "password": secret}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        kicked.status(),
        404,
        "kicking an unknown worker fails, and is audited"
    );
    let unknown = http
        .post(format!("{url}/control/drop%20tables{}", "x".repeat(200)))
        .bearer_auth(&admin)
        .json(&json!({"token": secret}))
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status(), 404);
    let records = audit_until(dir.path(), 2, |r| r["event"] == "control");
    let of = |event: &str, id: &str| {
        records
            .iter()
            .filter(|r| r["event"] == event && r["worker_id"] == id)
            .count()
    };
    assert_eq!(
        (of("deregister", "leaver"), of("eviction", "leaver")),
        (1, 1)
    );
    assert_eq!(
        (of("deregister", "nobody"), of("eviction", "nobody")),
        (1, 0)
    );
    let cut = records
        .iter()
        .find(|r| r["event"] == "deregister" && r["worker_id"].as_str().unwrap().starts_with("zzz"))
        .unwrap();
    assert!(
        cut["worker_id"].as_str().unwrap().chars().count() < 300,
        "an unknown id is cut"
    );
    let eviction = records.iter().find(|r| r["event"] == "eviction").unwrap();
    assert_eq!(eviction["details"]["trigger_worker_id"], "leaver");
    assert_eq!(eviction["details"]["evicted"], json!(["leaver"]));
    assert_eq!(eviction["details"]["remaining"], 0);
    let controls: Vec<&Value> = records.iter().filter(|r| r["event"] == "control").collect();
    assert_eq!(
        controls[0]["details"],
        json!({"action": "kick_worker", "body": {"worker_id": "ghost"}})
    );
    let action = controls[1]["details"]["action"].as_str().unwrap();
    assert!(action.starts_with("drop?tables"), "{action}");
    assert!(action.chars().count() < 100, "{action}");
    assert_eq!(controls[1]["details"]["body"], json!({}));
    let text = std::fs::read_to_string(dir.path().join("audit.jsonl")).unwrap();
    for leaked in [
        secret,
        worker.as_str(),
        admin.as_str(),
        "bearer",
        "auth_token",
    ] {
        assert!(
            !text.to_lowercase().contains(&leaked.to_lowercase()),
            "{leaked}"
        );
    }

    // Work-unit refusals: 400 / 404 / 409, and nothing changes.
    let post = |path: &str, body: Value| {
        http.post(format!("{url}{path}"))
            .bearer_auth(&worker)
            .json(&body)
            .send()
    };
    let hint = json!({"length": 100});
    let ok = post(
        "/datasets/register",
        json!({"worker_id": "w", "dataset_id": "d", "shuffle_seed": 1, "hint": hint}),
    )
    .await
    .unwrap();
    assert_eq!(ok.status(), 200);
    for (path, body, status) in [
        (
            "/datasets/register",
            json!({"worker_id": "w", "dataset_id": "d", "shuffle_seed": 1,
                                      "hint": {"length": 99}}),
            409,
        ),
        (
            "/datasets/register",
            json!({"worker_id": "w", "dataset_id": "e", "shuffle_seed": 1,
                                      "hint": {"length": 0}}),
            400,
        ),
        (
            "/datasets/register",
            json!({"worker_id": "w", "dataset_id": "e", "shuffle_seed": 1}),
            400,
        ),
        (
            "/datasets/register",
            json!({"worker_id": "w", "dataset_id": "e",
                                      "shuffle_seed": "one", "hint": hint}),
            400,
        ),
        (
            "/work/request",
            json!({"worker_id": "w", "dataset_id": "d", "shuffle_seed": 2}),
            404,
        ),
        (
            "/work/request",
            json!({"worker_id": "", "dataset_id": "d", "shuffle_seed": 1}),
            400,
        ),
        (
            "/work/complete",
            json!({"worker_id": "w", "dataset_id": "d", "shuffle_seed": 1,
                                  "unit_id": 1024}),
            400,
        ),
        (
            "/work/complete",
            json!({"worker_id": "w", "dataset_id": "d", "shuffle_seed": 1,
                                  "unit_id": -1}),
            400,
        ),
    ] {
        let response = post(path, body.clone()).await.unwrap();
        assert_eq!(response.status(), status, "{path} {body}");
        let error: Value = response.json().await.unwrap();
        assert!(error["error"].is_string(), "{error}");
    }
    let get = |path: String| http.get(format!("{url}{path}")).bearer_auth(&worker).send();
    assert_eq!(
        get("/work/queue?dataset_id=d".into())
            .await
            .unwrap()
            .status(),
        400
    );
    assert_eq!(
        get("/work/queue?dataset_id=d&shuffle_seed=9".into())
            .await
            .unwrap()
            .status(),
        404
    );
    let queues: Value = get("/work/queues".into())
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(queues.as_array().map(Vec::len), Some(1), "{queues}");
    assert_eq!(
        queues[0]["hint"], hint,
        "the refused registrations changed nothing"
    );
    assert_eq!(
        (
            queues[0]["issued_count"].as_u64(),
            queues[0]["completed_count"].as_u64()
        ),
        (Some(0), Some(0))
    );
    // The admin token may read the queues too; anonymous callers may not.
    let by_admin = http
        .get(format!("{url}/work/queues"))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert_eq!(by_admin.status(), 200);
    let anonymous = http.get(format!("{url}/work/queues")).send().await.unwrap();
    assert_eq!(anonymous.status(), 401);
}
