//! `diloco-console` on the real control plane, in front of a real coordinator over mTLS: a
//! ServiceAccount signs in with its token (TokenReview), sees only what its Role allows
//! (SubjectAccessReview), reads the coordinator's status and runs `save_state` through the
//! proxy with the console's own client certificate. A coordinator that refuses that
//! certificate (by role, by the clients file, by CA) yields its 401/403 tagged
//! `x-upstream-auth-failed: 1` while the session stays; a server that does not exist is a 404
//! without a connection; and no token or cookie ever reaches the console's log.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use diloco_console::upstream::lookup_host;
use diloco_contract::api::{StatsHistoryReply, StatusReply};
use diloco_contract::console::{
    CSRF_HEADER, ConsoleError, SESSION_COOKIE, ServerSummary, SessionReply,
    UPSTREAM_AUTH_FAILED_HEADER,
};
use diloco_crds::{DiLoCoServer, ROTATE_TOKEN_ANNOTATION};
use diloco_tests::LocalCluster;
use diloco_tests::console_fixture::{
    clients, put_console_secret, replace, start_coordinator, user_with,
};
use diloco_tests::console_server::ConsoleServer;
use diloco_tests::http_client;
use diloco_tests::kube_helpers::{apply_server, install_crd, wait_until};
use diloco_tests::pki::TestCa;
use kube::api::Api;
use serde_json::{Value, json};

const IMAGE: &str = "ghcr.io/diloco-dev/diloco-coordinator:test";

/// A reply: status, whether it is tagged, and the JSON body.
struct Reply {
    status: u16,
    tagged: bool,
    body: Value,
}

/// A browser's session: its cookie and CSRF token.
struct Session {
    http: reqwest::Client,
    url: String,
    cookie: String,
    csrf: String,
    reply: SessionReply,
}

impl Session {
    /// Signs in with `token`; panics unless the console accepts it.
    async fn login(url: &str, token: &str) -> Self {
        let http = http_client();
        let response = http
            .post(format!("{url}/api/login"))
            .json(&json!({"token": token}))
            .send()
            .await
            .unwrap();
        if response.status() != 200 {
            panic!("sign-in refused: {}", response.text().await.unwrap());
        }
        let set_cookie = response.headers()["set-cookie"]
            .to_str()
            .unwrap()
            .to_string();
        for attribute in ["HttpOnly", "Secure", "SameSite=Strict", "Path=/"] {
            assert!(set_cookie.contains(attribute), "{set_cookie}");
        }
        let cookie = set_cookie.split(';').next().unwrap().to_string();
        assert!(cookie.starts_with(&format!("{SESSION_COOKIE}=")));
        let reply: SessionReply = response.json().await.unwrap();
        Self {
            http,
            url: url.to_string(),
            cookie,
            csrf: reply.csrf_token.clone(),
            reply,
        }
    }

    async fn send(&self, request: reqwest::RequestBuilder) -> Reply {
        let response = request.header("cookie", &self.cookie).send().await.unwrap();
        let status = response.status().as_u16();
        let tagged = match response.headers().get(UPSTREAM_AUTH_FAILED_HEADER) {
            Some(value) => {
                assert_eq!(value, "1");
                true
            }
            None => false,
        };
        let body = response.json().await.unwrap_or(Value::Null);
        Reply {
            status,
            tagged,
            body,
        }
    }

    async fn get(&self, path: &str) -> Reply {
        self.send(self.http.get(format!("{}{path}", self.url)))
            .await
    }

    async fn post(&self, path: &str, body: Value) -> Reply {
        let request = self
            .http
            .post(format!("{}{path}", self.url))
            .header(CSRF_HEADER, &self.csrf)
            .json(&body);
        self.send(request).await
    }
}

/// Polls `path` (GET, or POST with `{}`) until the reply has `status` and is tagged.
async fn wait_for_tagged(session: &Session, post: bool, path: &str, status: u16) -> Reply {
    wait_until(
        Duration::from_secs(30),
        &format!("{path} answering {status} tagged"),
        move || async move {
            let reply = match post {
                true => session.post(path, json!({})).await,
                false => session.get(path).await,
            };
            (reply.status == status && reply.tagged).then_some(reply)
        },
    )
    .await
}

/// A loopback listener that counts the connections it is offered.
async fn counting_listener() -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let count = Arc::new(AtomicUsize::new(0));
    let counted = count.clone();
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            counted.fetch_add(1, Ordering::SeqCst);
            drop(socket);
        }
    });
    (address, count)
}

#[tokio::test(flavor = "multi_thread")]
async fn console_logs_in_with_kubernetes_proxies_over_mtls_and_tags_upstream_refusals() {
    let cluster = LocalCluster::shared();
    let admin = cluster.client().await.unwrap();
    install_crd(&admin).await;
    let namespace = cluster.namespace(&admin, "console").await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("diloco test CA");
    let host = format!("llm-control.{namespace}.svc");
    let (coordinator, _tokens) = start_coordinator(dir.path(), &ca, &host, "");
    let coordinator_address: SocketAddr = coordinator.address().parse().unwrap();

    // The resources: a server with TLS, one without, and the console's certificate.
    apply_server(
        &admin,
        &namespace,
        "llm",
        json!({}),
        json!({"image": IMAGE}),
    )
    .await;
    let cleartext = json!({"image": IMAGE, "tls": {"mode": "disabled"}, "auth": {"mode": "none"},
                           "bulk": {"tls": false, "auth": false}});
    apply_server(&admin, &namespace, "plain", json!({}), cleartext).await;
    let console_pem = ca.client("diloco-console");
    put_console_secret(&admin, &namespace, "llm", &console_pem, &ca.cert_pem()).await;
    let operator_token = user_with(&admin, &namespace, "alice", &["get", "list", "patch"]).await;
    let viewer_token = user_with(&admin, &namespace, "bob", &["get", "list"]).await;

    // A server that does not exist gets an address too: nothing may ever connect to it.
    let (ghost_address, ghost_connections) = counting_listener().await;
    let resolve = BTreeMap::from([
        (
            lookup_host(&namespace, "llm", "cluster.local"),
            coordinator_address,
        ),
        (
            lookup_host(&namespace, "ghost", "cluster.local"),
            ghost_address,
        ),
    ]);
    let console = ConsoleServer::start(cluster.kubeconfig(), resolve);
    let server = format!("/api/servers/{namespace}/llm");

    // Sign in with a ServiceAccount token; see exactly the servers of this namespace.
    let alice = Session::login(&console.url, &operator_token).await;
    assert_eq!(
        alice.reply.user,
        format!("system:serviceaccount:{namespace}:alice")
    );
    let list = alice.get("/api/servers").await;
    assert_eq!(list.status, 200, "{}", list.body);
    let listed: Vec<ServerSummary> = serde_json::from_value(list.body).unwrap();
    let names: BTreeSet<String> = listed
        .iter()
        .map(|s| format!("{}/{}", s.namespace, s.name))
        .collect();
    assert_eq!(
        names,
        BTreeSet::from([format!("{namespace}/llm"), format!("{namespace}/plain")]),
        "only the servers the Role lets alice list"
    );
    let summary = alice.get(&server).await;
    assert_eq!(
        (summary.status, &summary.body["name"]),
        (200, &json!("llm"))
    );

    // The coordinator's status and history, through the proxy.
    let status = alice.get(&format!("{server}/status")).await;
    assert_eq!(
        (status.status, status.tagged),
        (200, false),
        "{}",
        status.body
    );
    let status: StatusReply = serde_json::from_value(status.body).unwrap();
    assert!(status.parameters_initialized);
    let history = alice.get(&format!("{server}/history?max_points=50")).await;
    assert_eq!(history.status, 200, "{}", history.body);
    serde_json::from_value::<StatsHistoryReply>(history.body).unwrap();
    // The coordinator's /audit is passed through as it answers (404 before it exists).
    let audit = alice.get(&format!("{server}/audit?limit=5")).await;
    assert!(
        [200, 404].contains(&audit.status) && !audit.tagged,
        "{} {}",
        audit.status,
        audit.body
    );

    // save_state: 200, untagged; the coordinator recorded the console's certificate.
    let saved = alice
        .post(&format!("{server}/control/save_state"), json!({}))
        .await;
    assert_eq!((saved.status, saved.tagged), (200, false), "{}", saved.body);
    assert_eq!(saved.body["status"], "ok");
    let audit_log = std::fs::read_to_string(dir.path().join("audit.jsonl")).unwrap();
    assert!(
        audit_log.contains("cert:diloco-console"),
        "the coordinator saw the console's certificate: {audit_log}"
    );
    // Without the CSRF token: refused by the console itself.
    let forged = alice
        .send(
            alice
                .http
                .post(format!("{}{server}/control/save_state", console.url))
                .json(&json!({})),
        )
        .await;
    assert_eq!((forged.status, forged.tagged), (403, false));

    // A program: the same token as a bearer, no cookie, no CSRF token.
    let program = http_client()
        .get(format!("{}{server}/status", console.url))
        .bearer_auth(&operator_token)
        .send()
        .await
        .unwrap();
    assert_eq!(program.status(), 200);

    // Rotation through the annotation.
    let rotated = alice
        .post(&format!("{server}/rotate/token"), json!({}))
        .await;
    assert_eq!(rotated.status, 200, "{}", rotated.body);
    let resource = Api::<DiLoCoServer>::namespaced(admin.clone(), &namespace)
        .get("llm")
        .await
        .unwrap();
    assert_eq!(
        resource.metadata.annotations.unwrap()[ROTATE_TOKEN_ANNOTATION],
        rotated.body["value"].as_str().unwrap()
    );

    // A viewer without patch: may look, may not act.
    let bob = Session::login(&console.url, &viewer_token).await;
    assert_eq!(bob.get(&format!("{server}/status")).await.status, 200);
    for path in ["control/save_state", "rotate/certificates"] {
        let refused = bob.post(&format!("{server}/{path}"), json!({})).await;
        assert_eq!((refused.status, refused.tagged), (403, false), "{path}");
        assert!(
            refused.body["error"].as_str().unwrap().contains("patch"),
            "{}",
            refused.body
        );
    }

    // No such server: 404, no connection anywhere.
    for path in ["", "/status"] {
        let missing = alice
            .get(&format!("/api/servers/{namespace}/ghost{path}"))
            .await;
        assert_eq!(missing.status, 404, "{}", missing.body);
    }
    let missing = alice
        .post(
            &format!("/api/servers/{namespace}/ghost/control/save_state"),
            json!({}),
        )
        .await;
    assert_eq!(missing.status, 404);
    assert_eq!(ghost_connections.load(Ordering::SeqCst), 0);
    // A server without TLS: the console explains why it cannot act.
    let plain = alice
        .post(
            &format!("/api/servers/{namespace}/plain/control/save_state"),
            json!({}),
        )
        .await;
    assert_eq!(plain.status, 409);
    assert!(plain.body["error"].as_str().unwrap().contains("TLS"));

    // The coordinator demotes the console to a worker: its 403, tagged; the session stays.
    replace(&dir.path().join("clients.json"), &clients(Some("worker")));
    let demoted = wait_for_tagged(&alice, true, &format!("{server}/control/save_state"), 403).await;
    let refusal: ConsoleError = serde_json::from_value(demoted.body).unwrap();
    assert_eq!(refusal.upstream_status, Some(403));
    assert!(
        refusal.error.contains("upstream authentication failed"),
        "{}",
        refusal.error
    );
    // The coordinator forgets the console: its 401, tagged.
    replace(&dir.path().join("clients.json"), &clients(None));
    let forgotten = wait_for_tagged(&alice, false, &format!("{server}/status"), 401).await;
    assert_eq!(forgotten.body["upstream_status"], 401);
    assert_eq!(
        alice.get("/api/session").await.status,
        200,
        "the session is intact"
    );

    // A certificate from another CA is refused during the handshake: 401, tagged.
    replace(&dir.path().join("clients.json"), &clients(Some("admin")));
    let other = TestCa::new("not the coordinator's CA").client("diloco-console");
    put_console_secret(&admin, &namespace, "llm", &other, &ca.cert_pem()).await;
    let handshake = wait_for_tagged(&alice, false, &format!("{server}/status"), 401).await;
    assert!(
        handshake.body["error"]
            .as_str()
            .unwrap()
            .contains("TLS handshake"),
        "{}",
        handshake.body
    );
    assert_eq!(alice.get("/api/session").await.status, 200);

    // Nothing secret in the console's log, which did record the sign-ins and the action.
    let log = console.log();
    assert!(
        log.contains("signed in") && log.contains("control action"),
        "{log}"
    );
    for (what, secret) in [
        ("alice's token", operator_token.as_str()),
        ("bob's token", viewer_token.as_str()),
        ("alice's cookie", alice.cookie.split('=').nth(1).unwrap()),
        ("alice's CSRF token", alice.csrf.as_str()),
        ("the console's key", console_pem.key.lines().nth(1).unwrap()),
    ] {
        assert!(!log.contains(secret), "{what} is in the console's log");
    }
}
