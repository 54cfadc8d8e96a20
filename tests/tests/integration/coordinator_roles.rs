//! Roles and identities on a real coordinator over mTLS: only admins run control actions,
//! a client certificate acts only for worker ids under its common name, a worker belongs to
//! the identity that registered it (across a restart too), and a client removed from the
//! clients file is refused within seconds although its certificate is still valid.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use diloco_client::wire::dtype::WireDtype;
use diloco_client::wire::layout::ModelLayout;
use diloco_client::wire::safetensors;
use diloco_contract::api::StatusReply;
use diloco_tests::frames::{RawTensor, bf16_bytes, frame};
use diloco_tests::pki::{Pem, TestCa, https_client};
use diloco_tests::processes::CoordinatorProcess;
use diloco_tests::tokens::TestTokens;
use serde_json::{Value, json};

const CLIENTS: &str = r#"{"clients": [
    {"name": "site-a", "role": "worker"},
    {"name": "site-b", "role": "worker"},
    {"name": "diloco-operator", "role": "admin"}
]}"#;

fn write_pair(dir: &Path, name: &str, pem: &Pem) {
    std::fs::write(dir.join(format!("{name}.pem")), &pem.cert).unwrap();
    std::fs::write(dir.join(format!("{name}.key")), &pem.key).unwrap();
}

/// Replaces a file in one step, as the kubelet updates a mounted ConfigMap or Secret.
fn replace(path: &Path, text: &str) {
    let temp = path.with_extension("tmp");
    std::fs::write(&temp, text).unwrap();
    std::fs::rename(&temp, path).unwrap();
}

/// One caller: an HTTPS client (with or without a certificate) and an optional bearer.
struct Caller {
    http: reqwest::Client,
    bearer: Option<String>,
}

impl Caller {
    async fn send(&self, url: &str, path: &str, body: Option<Vec<u8>>) -> (u16, Value) {
        let mut request = match body {
            Some(body) => self.http.post(format!("{url}{path}")).body(body),
            None => self.http.get(format!("{url}{path}")),
        };
        if let Some(token) = &self.bearer {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let body = response.bytes().await.unwrap();
        (status, serde_json::from_slice(&body).unwrap_or(Value::Null))
    }

    async fn post(&self, url: &str, path: &str, body: Value) -> (u16, Value) {
        self.send(url, path, Some(body.to_string().into_bytes()))
            .await
    }
}

fn upload(worker: &str) -> Vec<u8> {
    frame(
        worker,
        &[RawTensor {
            name: "w",
            dtype: "BF16",
            shape: &[4, 8],
            data: bf16_bytes(&[0.25; 32]),
        }],
    )
}

fn audit(dir: &Path) -> Vec<Value> {
    std::fs::read_to_string(dir.join("audit.jsonl"))
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn roles_certificate_subjects_worker_owners_and_live_client_removal() {
    let dir = tempfile::tempdir().unwrap();
    let pki = dir.path().join("pki");
    std::fs::create_dir_all(&pki).unwrap();
    let ca = TestCa::new("diloco test CA");
    std::fs::write(pki.join("ca.pem"), ca.cert_pem()).unwrap();
    write_pair(&pki, "server", &ca.server(&["127.0.0.1"]));
    let tokens = TestTokens::write(dir.path());
    replace(&dir.path().join("clients.json"), CLIENTS);
    let layout = ModelLayout::new(vec![("w".into(), vec![4, 8])]).unwrap();
    let blob = safetensors::encode(&layout, &[0.5; 32], WireDtype::Fp32, &BTreeMap::new());
    std::fs::write(dir.path().join("init.safetensors"), blob).unwrap();
    let config = format!(
        "tls: {{cert: pki/server.pem, key: pki/server.key, client_ca: pki/ca.pem}}\n\
         auth: {{{}, clients_file: clients.json}}\n\
         model: {{initial_parameters: init.safetensors}}\n\
         checkpoint: {{dir: checkpoints, every_rounds: 0}}\n\
         audit: {{path: audit.jsonl}}\n",
        tokens.auth_keys()
    );
    let mut coordinator = CoordinatorProcess::start(dir.path(), &config);
    let url = coordinator.url.clone();

    let certified = |cn: &str| Caller {
        http: https_client(&ca, Some(&ca.client(cn))),
        bearer: None,
    };
    let (site_a, site_b, operator, stranger) = (
        certified("site-a"),
        certified("site-b"),
        certified("diloco-operator"),
        certified("stranger"),
    );
    let bearer = |token: &str| Caller {
        http: https_client(&ca, None),
        bearer: Some(token.to_string()),
    };
    let (worker_token, admin_token) = (bearer(&tokens.worker), bearer(&tokens.admin));

    // Control actions: admins only (the admin token, or a certificate listed as admin).
    let control = "/control/update_num_workers";
    let body = json!({"num_workers": 1});
    for (who, caller) in [("worker token", &worker_token), ("site-a", &site_a)] {
        let (status, reply) = caller.post(&url, control, body.clone()).await;
        assert_eq!(status, 403, "{who}: {reply}");
        assert_eq!(reply["kind"], "forbidden");
        assert!(
            reply["error"].as_str().unwrap().contains("admin role"),
            "{reply}"
        );
    }
    for (who, caller) in [("admin token", &admin_token), ("operator", &operator)] {
        let (status, reply) = caller.post(&url, control, body.clone()).await;
        assert_eq!(
            (status, &reply["num_workers"]),
            (200, &json!(1)),
            "{who}: {reply}"
        );
    }

    // A certificate from the right CA whose name is not listed: refused at the HTTP layer.
    let (status, reply) = stranger.send(&url, "/status", None).await;
    assert_eq!(status, 401, "{reply}");
    assert_eq!(
        reply["error"],
        "client certificate CN=stranger is not an allowed client"
    );

    // Worker ids under the certificate's common name only.
    let register = |id: &str| json!({"worker_id": id});
    for id in ["site-b", "site-ab", "x.site-a"] {
        let (status, reply) = site_a.post(&url, "/register", register(id)).await;
        assert_eq!(status, 403, "{id}: {reply}");
        assert!(
            reply["error"].as_str().unwrap().contains("CN=site-a"),
            "{reply}"
        );
    }
    for id in ["site-a.0", "site-a.1"] {
        assert_eq!(
            site_a.post(&url, "/register", register(id)).await.0,
            200,
            "{id}"
        );
    }
    assert_eq!(
        worker_token
            .post(&url, "/register", register("w-token"))
            .await
            .0,
        200
    );

    // A worker belongs to the identity that registered it.
    let beat = |id: &str| json!({"worker_id": id});
    for (who, caller, id) in [
        ("site-b for site-a.0", &site_b, "site-a.0"),
        ("worker token for site-a.0", &worker_token, "site-a.0"),
        ("site-a for w-token", &site_a, "w-token"),
        ("admin token for site-a.0", &admin_token, "site-a.0"),
    ] {
        let (status, reply) = caller.post(&url, "/heartbeat", beat(id)).await;
        assert_eq!(status, 403, "{who}: {reply}");
    }
    assert_eq!(
        site_a.post(&url, "/heartbeat", beat("site-a.0")).await.0,
        200
    );
    assert_eq!(
        worker_token
            .post(&url, "/heartbeat", beat("w-token"))
            .await
            .0,
        200
    );
    // Taking over a registered id is forbidden, not a conflict; the owner gets the conflict.
    let (status, reply) = worker_token
        .post(&url, "/register", register("site-a.0"))
        .await;
    assert_eq!(status, 403, "{reply}");
    assert!(
        reply["error"]
            .as_str()
            .unwrap()
            .contains("registered by cert:site-a")
    );
    assert_eq!(
        site_a.post(&url, "/register", register("site-a.0")).await.0,
        409
    );
    for (who, caller) in [("worker token", &worker_token), ("site-b", &site_b)] {
        let (status, reply) = caller
            .send(&url, "/submit_pseudograd", Some(upload("site-a.0")))
            .await;
        assert_eq!(status, 403, "{who}: {reply}");
    }
    let (status, _) = worker_token
        .post(&url, "/deregister", register("site-a.1"))
        .await;
    assert_eq!(status, 403);
    let (status, _) = site_a.post(&url, "/deregister", register("w-token")).await;
    assert_eq!(status, 403);
    // An admin may remove anyone.
    assert_eq!(
        admin_token
            .post(&url, "/deregister", register("site-a.1"))
            .await
            .0,
        200
    );
    let (_, status) = admin_token.send(&url, "/status", None).await;
    let status: StatusReply = serde_json::from_value(status).unwrap();
    let workers: Vec<&String> = status.workers.keys().collect();
    assert_eq!(workers, ["site-a.0", "w-token"]);

    // Owners survive a restart: the checkpoint records them.
    let (status, reply) = operator.post(&url, "/control/save_state", json!({})).await;
    assert_eq!(status, 200, "{reply}");
    coordinator.kill();
    let coordinator = CoordinatorProcess::start(dir.path(), &config);
    let url = coordinator.url.clone();
    let (status, reply) = worker_token
        .post(&url, "/register", register("site-a.0"))
        .await;
    assert_eq!(status, 403, "a restored worker keeps its owner: {reply}");
    assert_eq!(
        site_a.post(&url, "/register", register("site-a.0")).await.0,
        200
    );

    // Removing a client from the list refuses its (still valid) certificate within seconds.
    replace(
        &dir.path().join("clients.json"),
        &CLIENTS.replace(r#"{"name": "site-a", "role": "worker"},"#, ""),
    );
    let removed = Instant::now();
    loop {
        let (status, reply) = site_a.send(&url, "/status", None).await;
        if status == 401 {
            assert_eq!(
                reply["error"],
                "client certificate CN=site-a is not an allowed client"
            );
            break;
        }
        assert!(
            removed.elapsed() < Duration::from_secs(3),
            "still allowed after 3 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        site_b.send(&url, "/status", None).await.0,
        200,
        "the others stay"
    );

    // The audit log says who did what, by identity, never by credential.
    let deadline = Instant::now() + Duration::from_secs(5);
    let records = loop {
        let records = audit(dir.path());
        let reloaded = records
            .iter()
            .any(|r| r["event"] == "credential_reload" && r["details"]["credential"] == "clients");
        if reloaded || Instant::now() > deadline {
            break records;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let find = |predicate: &dyn Fn(&Value) -> bool| {
        records
            .iter()
            .find(|r| predicate(r))
            .unwrap_or_else(|| panic!("no such record in {records:#?}"))
            .clone()
    };
    let registered = find(&|r| r["event"] == "register" && r["worker_id"] == "site-a.0");
    assert_eq!(registered["caller"], "cert:site-a");
    let control = find(&|r| r["event"] == "control" && r["caller"] == "admin-token");
    assert_eq!(
        control["details"],
        json!({"action": "update_num_workers", "body": {"num_workers": 1}})
    );
    find(&|r| r["event"] == "forbidden" && r["caller"] == "worker-token");
    find(&|r| r["event"] == "forbidden" && r["caller"] == "cert:site-a");
    let reload =
        find(&|r| r["event"] == "credential_reload" && r["details"]["credential"] == "clients");
    assert_eq!(reload["details"]["removed"], json!(["site-a"]));
    let removal = find(&|r| r["event"] == "deregister" && r["worker_id"] == "site-a.1");
    assert_eq!(removal["caller"], "admin-token");
    let text = std::fs::read_to_string(dir.path().join("audit.jsonl")).unwrap();
    for secret in [&tokens.worker, &tokens.admin] {
        assert!(!text.contains(secret.as_str()) && !coordinator.log().contains(secret.as_str()));
    }
}
