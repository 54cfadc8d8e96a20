use super::*;
use axum::body::to_bytes;
use diloco_contract::console::{ConsoleError, UPSTREAM_AUTH_FAILED_HEADER};
use diloco_crds::DiLoCoServer;
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
use serde_json::json;

async fn body_of(response: Response) -> serde_json::Value {
    let bytes = to_bytes(response.into_body(), usize::MAX).await.unwrap();
    serde_json::from_slice(&bytes).unwrap()
}

/// The coordinator's 401 and 403 are the console's credential refused: same status, tagged,
/// with the coordinator's status and reason in the body.
#[tokio::test]
async fn upstream_401_and_403_are_tagged_with_their_status() {
    for status in [StatusCode::UNAUTHORIZED, StatusCode::FORBIDDEN] {
        let upstream = json!({"error": "client certificate CN=diloco-console is not an allowed client", "kind": "auth"});
        let response = relay(status, Bytes::from(upstream.to_string()));
        assert_eq!(response.status(), status);
        assert_eq!(response.headers()[UPSTREAM_AUTH_FAILED_HEADER], "1");
        let body: ConsoleError = serde_json::from_value(body_of(response).await).unwrap();
        assert_eq!(body.upstream_status, Some(status.as_u16()));
        assert!(
            body.error.starts_with("upstream authentication failed")
                && body.error.contains("is not an allowed client"),
            "{}",
            body.error
        );
    }
}

/// Any other status is passed through untagged, with the coordinator's JSON as it was.
#[tokio::test]
async fn other_statuses_pass_through_untagged() {
    for (status, upstream) in [
        (StatusCode::OK, json!({"status": "ok", "sync_round": 4})),
        (
            StatusCode::INTERNAL_SERVER_ERROR,
            json!({"error": "checkpoint failed"}),
        ),
        (StatusCode::NOT_FOUND, json!({"error": "not found"})),
    ] {
        let response = relay(status, Bytes::from(upstream.to_string()));
        assert_eq!(response.status(), status);
        assert!(
            response
                .headers()
                .get(UPSTREAM_AUTH_FAILED_HEADER)
                .is_none()
        );
        assert_eq!(response.headers()[header::CONTENT_TYPE], "application/json");
        assert_eq!(body_of(response).await, upstream);
    }
    let html = relay(
        StatusCode::BAD_GATEWAY,
        Bytes::from_static(b"<html>oops</html>"),
    );
    assert_eq!(html.status(), StatusCode::BAD_GATEWAY);
    let body = body_of(html).await;
    assert_eq!(body["upstream_status"], 502);
    assert!(body["error"].as_str().unwrap().contains("not JSON"));
}

fn server(spec: serde_json::Value) -> DiLoCoServer {
    serde_json::from_value(json!({
        "apiVersion": "diloco.dev/v1alpha1", "kind": "DiLoCoServer",
        "metadata": {"name": "llm", "namespace": "team-a"},
        "spec": spec,
    }))
    .unwrap()
}

/// The coordinator's address comes from the resource: its Service and port, nothing else.
#[test]
fn the_target_is_the_servers_control_service() {
    let target = Target::of(
        &server(json!({"image": "c:1", "control": {"port": 9000}})),
        "example.org",
    )
    .unwrap();
    assert_eq!(target.service_host, "llm-control.team-a.svc");
    assert_eq!(target.lookup_host, "llm-control.team-a.svc.example.org");
    assert_eq!(target.port, 9000);
}

/// Without TLS (or without client certificates) the console cannot authenticate: 409 saying so.
#[test]
fn a_server_without_mtls_is_refused_with_the_reason() {
    let cleartext = server(json!({
        "image": "c:1", "tls": {"mode": "disabled"}, "bulk": {"tls": false, "auth": false},
        "insecure": {"cleartextCredentials": true}
    }));
    let refused = Target::of(&cleartext, "cluster.local").unwrap_err();
    assert_eq!(refused.status, StatusCode::CONFLICT);
    assert!(
        refused.body.error.contains("tls.mode disabled"),
        "{refused}"
    );
    let no_client_auth = server(json!({"image": "c:1", "tls": {"clientAuth": "none"}}));
    let refused = Target::of(&no_client_auth, "cluster.local").unwrap_err();
    assert_eq!(refused.status, StatusCode::CONFLICT);
    assert!(refused.body.error.contains("clientAuth"), "{refused}");
}

fn client_certificate() -> ClientCertificate {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(DnType::CommonName, "test CA");
    let ca = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
    let mut leaf = CertificateParams::new(Vec::<String>::new()).unwrap();
    leaf.distinguished_name
        .push(DnType::CommonName, "diloco-console");
    let key = KeyPair::generate().unwrap();
    let cert = leaf.signed_by(&key, &ca).unwrap();
    ClientCertificate {
        identity_pem: format!("{}\n{}", cert.pem(), key.serialize_pem()).into_bytes(),
        ca_pem: ca.pem().into_bytes(),
        version: "1".into(),
    }
}

fn target() -> Target {
    Target::of(&server(json!({"image": "c:1"})), "cluster.local").unwrap()
}

/// Nothing listening: 502 with the reason, not tagged (nobody refused the console).
#[tokio::test]
async fn a_refused_connection_is_a_502() {
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap()
    };
    let target = target();
    let upstream = Upstream::new(BTreeMap::from([(target.lookup_host.clone(), closed)]));
    let refused = upstream
        .call(
            &target,
            &client_certificate(),
            reqwest::Method::GET,
            "/status",
            None,
        )
        .await
        .unwrap_err();
    assert_eq!(refused.status, StatusCode::BAD_GATEWAY);
    assert!(!refused.is_upstream_auth_failure());
    assert!(
        refused.body.error.contains("cannot be reached"),
        "{refused}"
    );
}

/// A peer that is not a TLS server is not the coordinator: 502, and the request went to the
/// overridden address (the Service name was never looked up).
#[tokio::test]
async fn a_peer_that_speaks_no_tls_is_a_502() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let accepted = tokio::spawn(async move {
        let (mut socket, _) = listener.accept().await.unwrap();
        use tokio::io::AsyncWriteExt;
        let _ = socket.write_all(b"HTTP/1.1 200 OK\r\n\r\n{}").await;
    });
    let target = target();
    let upstream = Upstream::new(BTreeMap::from([(target.lookup_host.clone(), address)]));
    let refused = upstream
        .call(
            &target,
            &client_certificate(),
            reqwest::Method::GET,
            "/status",
            None,
        )
        .await
        .unwrap_err();
    assert_eq!(refused.status, StatusCode::BAD_GATEWAY, "{refused}");
    accepted.await.unwrap();
}
