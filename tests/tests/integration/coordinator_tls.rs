//! TLS on a real coordinator: bearer over TLS, listed client certificates from the configured
//! CA authenticate without a token (a named client's bundle carries none), certificates from
//! another CA are refused at the handshake, and a renewed server certificate is served to new
//! handshakes without a restart.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use diloco_tests::pki::{Pem, TestCa, https_client};
use diloco_tests::processes::{CoordinatorProcess, WorkerProcess, events};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use serde_json::Value;

fn write_pair(dir: &Path, name: &str, pem: &Pem) {
    std::fs::write(dir.join(format!("{name}.pem")), &pem.cert).unwrap();
    std::fs::write(dir.join(format!("{name}.key")), &pem.key).unwrap();
}

/// The leaf certificate the server presents to a fresh handshake, and the cipher suite it
/// picks from a client offering ring's default order (AES-256-GCM first).
async fn handshake(address: &str, ca: &TestCa) -> (Vec<u8>, Option<rustls::CipherSuite>) {
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(ca.cert_pem().as_bytes()).unwrap())
        .unwrap();
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(address).await.unwrap();
    let name = ServerName::try_from("127.0.0.1").unwrap();
    let stream = connector.connect(name, tcp).await.unwrap();
    let connection = stream.get_ref().1;
    (
        connection.peer_certificates().unwrap()[0].to_vec(),
        connection.negotiated_cipher_suite().map(|s| s.suite()),
    )
}

async fn presented_certificate(address: &str, ca: &TestCa) -> Vec<u8> {
    handshake(address, ca).await.0
}

#[tokio::test(flavor = "multi_thread")]
async fn tls_with_bearer_or_client_certificates_and_live_certificate_renewal() {
    let dir = tempfile::tempdir().unwrap();
    let pki = dir.path().join("pki");
    std::fs::create_dir_all(pki.join("tokens")).unwrap();
    let (ca, other_ca) = (TestCa::new("diloco test CA"), TestCa::new("someone else"));
    std::fs::write(pki.join("ca.pem"), ca.cert_pem()).unwrap();
    write_pair(&pki, "server", &ca.server(&["127.0.0.1", "localhost"]));
    let token = format!("tls-test-{}", std::process::id());
    std::fs::write(pki.join("tokens/token"), &token).unwrap();
    std::fs::write(
        pki.join("clients.json"),
        r#"{"clients": [{"name": "worker-7", "role": "worker"}]}"#,
    )
    .unwrap();
    let coordinator = CoordinatorProcess::start(
        dir.path(),
        "tls: {cert: pki/server.pem, key: pki/server.key, client_ca: pki/ca.pem}\n\
         auth: {token_dir: pki/tokens, clients_file: pki/clients.json}\n\
         audit: {path: audit.jsonl}\n",
    );
    let url = coordinator.url.clone();
    assert!(url.starts_with("https://127.0.0.1:"), "{url}");

    // Bearer over TLS.
    let anonymous = https_client(&ca, None);
    let status = |http: &reqwest::Client, token: Option<&str>| {
        let mut request = http.get(format!("{url}/status"));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        request.send()
    };
    assert_eq!(status(&anonymous, None).await.unwrap().status(), 401);
    assert_eq!(
        status(&anonymous, Some(&token)).await.unwrap().status(),
        200
    );

    // A listed client certificate from the CA: no token needed, and it names the caller.
    let worker_identity = ca.client("worker-7");
    let with_certificate = https_client(&ca, Some(&worker_identity));
    assert_eq!(status(&with_certificate, None).await.unwrap().status(), 200);

    // One from another CA: the handshake fails, no HTTP status at all.
    let stranger = https_client(&ca, Some(&other_ca.client("mallory")));
    assert!(
        status(&stranger, None).await.is_err(),
        "refused at the handshake"
    );
    assert!(status(&stranger, Some(&token)).await.is_err());

    // The example worker trains over TLS from a named client's bundle, as the operator
    // publishes it: certificate, key, CA and endpoints, no bearer token.
    let bundle = dir.path().join("bundle");
    std::fs::create_dir_all(&bundle).unwrap();
    std::fs::write(bundle.join("tls.crt"), &worker_identity.cert).unwrap();
    std::fs::write(bundle.join("tls.key"), &worker_identity.key).unwrap();
    std::fs::write(bundle.join("ca.crt"), ca.cert_pem()).unwrap();
    std::fs::write(
        bundle.join("endpoints.json"),
        serde_json::json!({"control": url, "bulk": null}).to_string(),
    )
    .unwrap();
    let worker = WorkerProcess::start(
        "worker-7",
        &[
            "--credentials-dir",
            bundle.to_str().unwrap(),
            "--rounds",
            "2",
        ],
    );
    let lines = worker.finish(Duration::from_secs(120));
    assert_eq!(events(&lines, "done").len(), 1, "{lines:?}");

    // Renewal: new certificate and key on disk, new handshakes get them, no restart.
    let address = coordinator.address().to_string();
    let (before, suite) = handshake(&address, &ca).await;
    assert_eq!(
        suite,
        Some(rustls::CipherSuite::TLS13_AES_128_GCM_SHA256),
        "the server's preference, AES-128-GCM, wins over the client's"
    );
    let renewed = ca.server(&["127.0.0.1"]);
    let expected = CertificateDer::from_pem_slice(renewed.cert.as_bytes())
        .unwrap()
        .to_vec();
    assert_ne!(before, expected);
    write_pair(&pki, "server", &renewed);
    let written = Instant::now();
    while presented_certificate(&address, &ca).await != expected {
        assert!(
            written.elapsed() < Duration::from_secs(5),
            "renewed certificate not served"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(status(&with_certificate, None).await.unwrap().status(), 200);

    let audit = std::fs::read_to_string(dir.path().join("audit.jsonl")).unwrap();
    let records: Vec<Value> = audit
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let register = records
        .iter()
        .find(|r| r["event"] == "register" && r["worker_id"] == "worker-7")
        .expect("worker-7 registered");
    assert_eq!(register["caller"], "cert:worker-7");
    assert!(
        records.iter().any(|r| r["event"] == "credential_reload"
            && r["details"]["credential"] == "tls_certificate"),
        "{audit}"
    );
    assert!(!audit.contains(&token));
    assert!(!audit.contains("PRIVATE KEY") && !coordinator.log().contains("PRIVATE KEY"));
}
