//! 1000 hostile requests of mixed kinds against a coordinator with authentication on: every
//! one gets a 4xx, the server stays healthy, the parameters stay byte-identical, and a
//! legitimate worker still completes its round afterwards.

use std::collections::BTreeMap;
use std::io::Write;
use std::net::TcpStream;
use std::time::Duration;

use bytes::Bytes;
use diloco_client::wire::dtype::WireDtype;
use diloco_client::wire::layout::ModelLayout;
use diloco_client::wire::safetensors;
use diloco_tests::frames::{RawTensor, bf16_bytes, frame};
use diloco_tests::processes::CoordinatorProcess;
use futures_util::StreamExt;

const HOSTILE_REQUESTS: usize = 1000;

fn upload(worker: &str, value: f32) -> Vec<u8> {
    frame(
        worker,
        &[RawTensor {
            name: "w",
            dtype: "BF16",
            shape: &[4, 8],
            data: bf16_bytes(&[value; 32]),
        }],
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn a_thousand_hostile_requests_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("tokens")).unwrap();
    let token = format!("hostile-test-{}", std::process::id());
    std::fs::write(dir.path().join("tokens/token"), &token).unwrap();
    let layout = ModelLayout::new(vec![("w".into(), vec![4, 8])]).unwrap();
    let initial: Vec<f32> = (0..32).map(|i| i as f32 / 4.0).collect();
    let blob = safetensors::encode(&layout, &initial, WireDtype::Fp32, &BTreeMap::new());
    std::fs::write(dir.path().join("init.safetensors"), blob).unwrap();
    let coordinator = CoordinatorProcess::start(
        dir.path(),
        "model: {initial_parameters: init.safetensors}\n\
         auth: {token_dir: tokens}\n\
         training: {heartbeat_timeout_seconds: 4}\n\
         limits: {max_upload_bytes: 4096, auth_failures_per_window: 100}\n",
    );
    let url = coordinator.url.clone();
    let http = diloco_tests::http_client();
    let bearer = format!("Bearer {token}");
    let register = http
        .post(format!("{url}/register"))
        .header("authorization", &bearer)
        .body(r#"{"worker_id": "good"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(register.status(), 200);
    let params = || async {
        let response = http
            .get(format!("{url}/global_params"))
            .header("authorization", &bearer)
            .send()
            .await
            .unwrap();
        let round = response.headers()["x-diloco-round"]
            .to_str()
            .unwrap()
            .to_string();
        (round, response.bytes().await.unwrap())
    };
    let before = params().await;

    // Slow clients: headers promising a body that never comes, and half a request line.
    let address = coordinator.address().to_string();
    let mut slow: Vec<TcpStream> = Vec::new();
    for i in 0..8 {
        let mut socket = TcpStream::connect(&address).unwrap();
        let partial = if i % 2 == 0 {
            format!(
                "POST /submit_pseudograd HTTP/1.1\r\nHost: x\r\nAuthorization: {bearer}\r\n\
                 Content-Length: 4000\r\n\r\n\x00\x00"
            )
        } else {
            "POST /register HTTP/1.1\r\nHost: x\r\nContent-Len".to_string()
        };
        socket.write_all(partial.as_bytes()).unwrap();
        slow.push(socket);
    }

    let kinds = |i: usize| -> (Option<String>, &'static str, Bytes) {
        let garbage = Bytes::from((0..(i % 97) as u8).collect::<Vec<u8>>());
        match i % 6 {
            0 => (Some(format!("Bearer wrong-{i}")), "/status", Bytes::new()),
            1 => (None, "/submit_pseudograd", Bytes::from(upload("good", 1.0))),
            2 => (Some(bearer.clone()), "/submit_pseudograd", garbage),
            3 => (
                Some(bearer.clone()),
                "/submit_pseudograd",
                Bytes::from(vec![7u8; 8192]),
            ),
            4 => (
                Some(bearer.clone()),
                "/submit_pseudograd",
                Bytes::from(upload("nobody", 1.0)),
            ),
            _ => (
                Some(bearer.clone()),
                "/submit_pseudograd",
                Bytes::from(upload("good", f32::NAN)),
            ),
        }
    };
    // The attacker has an address of its own: once it is over its failure allowance it is
    // refused before any token it sends is compared, the right one included, while the
    // legitimate worker's address is unaffected.
    let attacker = reqwest::Client::builder()
        .no_proxy()
        .local_address("127.0.0.2".parse::<std::net::IpAddr>().ok())
        .build()
        .unwrap();
    let statuses: Vec<u16> = futures_util::stream::iter(0..HOSTILE_REQUESTS)
        .map(|i| {
            let (auth, path, body) = kinds(i);
            let (http, url) = (attacker.clone(), url.clone());
            async move {
                let mut request = http.post(format!("{url}{path}")).body(body);
                if path == "/status" {
                    request = http.get(format!("{url}{path}"));
                }
                if let Some(auth) = auth {
                    request = request.header("authorization", auth);
                }
                let response = request
                    .timeout(Duration::from_secs(30))
                    .send()
                    .await
                    .expect("every hostile request is answered");
                response.status().as_u16()
            }
        })
        .buffer_unordered(32)
        .collect()
        .await;
    let count = |code: u16| statuses.iter().filter(|s| **s == code).count();
    eprintln!(
        "STATUS COUNTS {:?}",
        [400u16, 401, 404, 409, 413, 429].map(|c| (c, count(c)))
    );
    assert!(
        statuses.iter().all(|s| (400..500).contains(s)),
        "only 4xx: {:?}",
        statuses
            .iter()
            .filter(|s| !(400..500).contains(*s))
            .collect::<Vec<_>>()
    );
    assert!(
        count(401) > 0 && count(429) > 0,
        "401 then 429 once over the limit"
    );
    assert!(
        count(400) > 0 && count(413) > 0 && count(404) > 0,
        "{statuses:?}"
    );

    let health = http.get(format!("{url}/health")).send().await.unwrap();
    assert_eq!(health.status(), 200);
    assert_eq!(params().await, before, "parameters and round unchanged");

    // The legitimate worker's round still completes, with exactly its upload.
    let response = http
        .post(format!("{url}/submit_pseudograd"))
        .header("authorization", &bearer)
        .body(upload("good", 0.5))
        .timeout(Duration::from_secs(30))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let (round, _) = params().await;
    assert_eq!(round, "1");
    drop(slow);
}

/// A coordinator (authentication off) on a 4 × 8 model `w`, with `limits` set.
fn coordinator_with_limits(dir: &std::path::Path, limits: &str) -> CoordinatorProcess {
    let layout = ModelLayout::new(vec![("w".into(), vec![4, 8])]).unwrap();
    let blob = safetensors::encode(&layout, &[0.5; 32], WireDtype::Fp32, &BTreeMap::new());
    std::fs::write(dir.join("init.safetensors"), blob).unwrap();
    CoordinatorProcess::start(
        dir,
        &format!("model: {{initial_parameters: init.safetensors}}\nlimits: {{{limits}}}\n"),
    )
}

/// Sends `request` on a fresh connection and returns the status line of the answer.
fn status_line(address: &str, request: &[u8]) -> String {
    answer(address, request)
        .lines()
        .next()
        .unwrap_or_default()
        .to_string()
}

/// Sends `request` on a fresh connection and returns the whole answer.
fn answer(address: &str, request: &[u8]) -> String {
    use std::io::Read;
    let mut socket = TcpStream::connect(address).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    // The server may answer and close before it has read everything we send.
    let _ = socket.write_all(request);
    let mut answer = Vec::new();
    let _ = socket.read_to_end(&mut answer);
    String::from_utf8_lossy(&answer).to_string()
}

/// `limits.max_header_bytes` and `limits.max_headers` bound a request head: beyond either,
/// 431 and nothing else happens; a request within them is served as usual.
#[test]
fn request_heads_over_the_limits_get_431() {
    let dir = tempfile::tempdir().unwrap();
    let coordinator =
        coordinator_with_limits(dir.path(), "max_header_bytes: 16384, max_headers: 20");
    let address = coordinator.address().to_string();
    let long_header = format!(
        "GET /status HTTP/1.1\r\nHost: x\r\nX-Filler: {}\r\n\r\n",
        "a".repeat(20_000)
    );
    assert!(
        status_line(&address, long_header.as_bytes()).starts_with("HTTP/1.1 431"),
        "a 20 kB header over a 16 kB limit"
    );
    let many_headers = format!(
        "GET /status HTTP/1.1\r\nHost: x\r\n{}\r\n",
        (0..30)
            .map(|i| format!("X-H{i}: v\r\n"))
            .collect::<String>()
    );
    assert!(
        status_line(&address, many_headers.as_bytes()).starts_with("HTTP/1.1 431"),
        "31 header fields over a limit of 20"
    );
    let within = format!(
        "GET /status HTTP/1.1\r\nHost: x\r\nConnection: close\r\nX-Filler: {}\r\n\r\n",
        "a".repeat(8_000)
    );
    assert_eq!(
        status_line(&address, within.as_bytes()),
        "HTTP/1.1 200 OK",
        "a head within the limits"
    );
}

/// A JSON request whose body does not arrive within `limits.request_timeout_seconds` gets
/// 408, and one over `limits.max_json_bytes` gets a JSON 413, without holding the server.
#[test]
fn trickled_and_oversized_json_bodies_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let coordinator = coordinator_with_limits(
        dir.path(),
        "request_timeout_seconds: 1, max_json_bytes: 1000",
    );
    let address = coordinator.address().to_string();
    let started = std::time::Instant::now();
    let trickled = "POST /heartbeat HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
                    Content-Length: 40\r\n\r\n{\"worker_id\":";
    assert!(
        status_line(&address, trickled.as_bytes()).starts_with("HTTP/1.1 408"),
        "a body that never completes"
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "answered after the 1 s limit, not the 10 s read timeout: {:?}",
        started.elapsed()
    );
    let oversized = format!(
        "POST /register HTTP/1.1\r\nHost: x\r\nContent-Length: 2000\r\n\r\n{{\"worker_id\": \"{}\"}}",
        "w".repeat(1980)
    );
    let refused = answer(&address, oversized.as_bytes());
    assert!(
        refused.starts_with("HTTP/1.1 413") && refused.contains("limits.max_json_bytes"),
        "a body over max_json_bytes: {refused}"
    );
    let health = "GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    assert_eq!(status_line(&address, health.as_bytes()), "HTTP/1.1 200 OK");
}
