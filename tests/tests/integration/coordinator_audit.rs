//! `GET /audit?limit=N` on a real coordinator over mTLS: an admin (the console's certificate,
//! listed as admin, or the admin token) reads the newest records oldest first, exactly as the
//! log holds them; a worker is refused with 403; a bad query is a 400; the limit is clamped;
//! reading is not itself recorded.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use diloco_client::wire::dtype::WireDtype;
use diloco_client::wire::layout::ModelLayout;
use diloco_client::wire::safetensors;
use diloco_contract::api::{AUDIT, AuditTail, MAX_AUDIT_LIMIT};
use diloco_contract::console::CONSOLE_COMMON_NAME;
use diloco_tests::pki::{Pem, TestCa, https_client};
use diloco_tests::processes::CoordinatorProcess;
use diloco_tests::tokens::TestTokens;
use serde_json::{Value, json};

fn write_pair(dir: &Path, name: &str, pem: &Pem) {
    std::fs::write(dir.join(format!("{name}.pem")), &pem.cert).unwrap();
    std::fs::write(dir.join(format!("{name}.key")), &pem.key).unwrap();
}

/// The audit log as the file holds it, one JSON value per complete line.
fn file_records(dir: &Path) -> Vec<Value> {
    std::fs::read_to_string(dir.join("audit.jsonl"))
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

async fn get(http: &reqwest::Client, bearer: Option<&str>, url: &str) -> (u16, Value) {
    let mut request = http.get(url);
    if let Some(token) = bearer {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread")]
async fn admins_read_the_newest_audit_records_and_workers_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let pki = dir.path().join("pki");
    std::fs::create_dir_all(&pki).unwrap();
    let ca = TestCa::new("diloco test CA");
    std::fs::write(pki.join("ca.pem"), ca.cert_pem()).unwrap();
    write_pair(&pki, "server", &ca.server(&["127.0.0.1"]));
    let tokens = TestTokens::write(dir.path());
    let clients = json!({"clients": [
        {"name": "site-a", "role": "worker"},
        {"name": CONSOLE_COMMON_NAME, "role": "admin"},
    ]});
    std::fs::write(dir.path().join("clients.json"), clients.to_string()).unwrap();
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
    let coordinator = CoordinatorProcess::start(dir.path(), &config);
    let url = coordinator.url.clone();
    let console = https_client(&ca, Some(&ca.client(CONSOLE_COMMON_NAME)));
    let site_a = https_client(&ca, Some(&ca.client("site-a")));
    let anonymous = https_client(&ca, None);

    // Some history: registrations and a refused control action.
    for id in ["site-a.0", "site-a.1", "site-a.2"] {
        let response = site_a
            .post(format!("{url}/register"))
            .body(json!({"worker_id": id}).to_string())
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
    }
    let refused = anonymous
        .post(format!("{url}/control/save_state"))
        .bearer_auth(&tokens.worker)
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 403);
    // The writer thread appends asynchronously: wait until the refusal is on disk.
    let deadline = Instant::now() + Duration::from_secs(5);
    while !file_records(dir.path())
        .iter()
        .any(|r| r["event"] == "forbidden")
    {
        assert!(Instant::now() < deadline, "the refusal was never audited");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let on_disk = file_records(dir.path());

    // The console's certificate (an admin) reads them all, oldest first, as written.
    let (status, body) = get(&console, None, &format!("{url}{AUDIT}")).await;
    assert_eq!(status, 200, "{body}");
    let tail: AuditTail = serde_json::from_value(body).unwrap();
    assert_eq!(tail.records, on_disk);
    let registered: Vec<&Value> = tail
        .records
        .iter()
        .filter(|r| r["event"] == "register")
        .map(|r| &r["worker_id"])
        .collect();
    assert_eq!(
        registered,
        [&json!("site-a.0"), &json!("site-a.1"), &json!("site-a.2")]
    );
    assert_eq!(tail.records.last().unwrap()["event"], "forbidden");

    // limit=N: the newest N; the admin token is an admin too.
    let (status, body) = get(
        &anonymous,
        Some(&tokens.admin),
        &format!("{url}{AUDIT}?limit=2"),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["records"], json!(on_disk[on_disk.len() - 2..]));
    // Out of range is clamped, not refused.
    let (status, body) = get(&console, None, &format!("{url}{AUDIT}?limit=0")).await;
    assert_eq!(
        (status, body["records"].as_array().unwrap().len()),
        (200, 1)
    );
    let huge = format!("{url}{AUDIT}?limit={}", u64::MAX / 2);
    let (status, body) = get(&console, None, &huge).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["records"], json!(on_disk));
    assert!(on_disk.len() < MAX_AUDIT_LIMIT);
    // A bad query is a 400 with a message, and changes nothing.
    for bad in ["limit=ten", "limit=1.5", "limit=-"] {
        let (status, body) = get(&console, None, &format!("{url}{AUDIT}?{bad}")).await;
        assert_eq!(status, 400, "{bad}: {body}");
        assert!(
            body["error"].as_str().unwrap().contains("?limit=<integer>"),
            "{body}"
        );
    }
    // Reading is not recorded.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        file_records(dir.path()),
        on_disk,
        "reading the log wrote to it"
    );

    // Workers, by certificate or token, are refused; without a credential, 401.
    let (status, body) = get(&site_a, None, &format!("{url}{AUDIT}")).await;
    assert_eq!(status, 403, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("admin role"),
        "{body}"
    );
    let (status, _) = get(&anonymous, Some(&tokens.worker), &format!("{url}{AUDIT}")).await;
    assert_eq!(status, 403);
    let (status, _) = get(&anonymous, None, &format!("{url}{AUDIT}")).await;
    assert_eq!(status, 401);
}
