//! Calls to the console's JSON API with the user's Kubernetes bearer token, and what its
//! refusals mean for the user. The console tags a 401/403 that came from the coordinator with
//! `x-upstream-auth-failed: 1`: then the *console's* client certificate was refused and the
//! user's credential is fine; an untagged 401/403 is the console refusing the user.

use std::time::Duration;

use diloco_contract::console::{
    CONSOLE_CLIENT_TLS_SUFFIX, CONSOLE_COMMON_NAME, ConsoleError, UPSTREAM_AUTH_FAILED_HEADER,
};
use reqwest::StatusCode;
use serde::de::DeserializeOwned;

use crate::error::{PluginError, Result};
use crate::kube_access::BearerToken;

/// How long one console request may take (the console's own upstream timeout is shorter).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// How much of the console's error text a message quotes.
const MAX_QUOTED: usize = 300;

/// The DiLoCoServer a call is about, for messages.
#[derive(Debug, Clone)]
pub struct ServerRef {
    pub namespace: String,
    pub name: String,
}

/// The console's API at a base URL, called with one bearer token.
pub struct ConsoleClient {
    http: reqwest::Client,
    base: String,
    token: BearerToken,
}

impl ConsoleClient {
    /// A client for the console at `base` (`http://127.0.0.1:<port>` or `--console-url`).
    pub fn new(base: &str, token: BearerToken) -> Result<Self> {
        // reqwest is built without a crypto provider; ring's, as kube uses. Installing twice
        // is harmless (the second call is refused).
        let _ = rustls::crypto::ring::default_provider().install_default();
        let http = reqwest::Client::builder()
            .no_proxy()
            .timeout(REQUEST_TIMEOUT)
            .build()
            .map_err(|e| {
                PluginError::Other(anyhow::anyhow!("failed to make an HTTP client: {e}"))
            })?;
        Ok(Self {
            http,
            base: base.trim_end_matches('/').to_string(),
            token,
        })
    }

    /// `GET path` as JSON, with the failure explained for `server`.
    pub async fn get_json<T: DeserializeOwned>(&self, path: &str, server: &ServerRef) -> Result<T> {
        let url = format!("{}{path}", self.base);
        let response = self
            .http
            .get(&url)
            .bearer_auth(self.token.expose())
            .send()
            .await
            .map_err(|e| {
                PluginError::Unreachable(format!(
                    "cannot reach the console at {}: {}",
                    self.base,
                    without_url(&e)
                ))
            })?;
        let status = response.status();
        let tagged = response
            .headers()
            .get(UPSTREAM_AUTH_FAILED_HEADER)
            .is_some_and(|v| v.as_bytes() == b"1");
        let body = response.bytes().await.map_err(|e| {
            PluginError::Unreachable(format!(
                "the console's reply was cut off: {}",
                without_url(&e)
            ))
        })?;
        if !status.is_success() {
            return Err(refusal(status, tagged, &body, server));
        }
        serde_json::from_slice(&body).map_err(|e| {
            PluginError::Other(anyhow::anyhow!(
                "the console's reply to {path} is not what this kubectl-diloco expects ({e}); \
                 are the console and the plugin of the same release?"
            ))
        })
    }
}

/// A reqwest error's text without the URL (it carries no token, but the message reads better).
fn without_url(error: &reqwest::Error) -> String {
    let mut text = error.to_string();
    if let Some(url) = error.url() {
        text = text.replace(&format!(" for url ({url})"), "");
    }
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// What a non-2xx reply means for the user, and the exit code that goes with it.
pub fn refusal(
    status: StatusCode,
    upstream_auth_failed: bool,
    body: &[u8],
    server: &ServerRef,
) -> PluginError {
    let ServerRef { namespace, name } = server;
    let code = status.as_u16();
    let said = console_said(body);
    match code {
        401 | 403 if upstream_auth_failed => PluginError::UpstreamAuth(format!(
            "the coordinator of {namespace}/{name} refused the console's client certificate \
             ({code}{said}). Your own Kubernetes credential is fine: it is the certificate in \
             Secret {name}-{CONSOLE_CLIENT_TLS_SUFFIX} (CN {CONSOLE_COMMON_NAME}) that the \
             coordinator did not accept.\n\
             What to do:\n  \
             - re-issue the certificates: kubectl diloco rotate-certificates {name} -n {namespace} --wait\n  \
             - check the operator's events: kubectl get events -n {namespace} --field-selector involvedObject.name={name}\n  \
             - check that the coordinator lists {CONSOLE_COMMON_NAME} as a client: kubectl diloco status {name} -n {namespace}"
        )),
        401 => PluginError::UserCredential(format!(
            "the console refused your Kubernetes credential (401{said}): the bearer token from \
             your kubeconfig was not accepted; it may have expired. Get a fresh one, e.g. \
             `kubectl create token <serviceaccount> -n <namespace>`."
        )),
        403 => PluginError::UserCredential(format!(
            "the console refused your Kubernetes credential (403{said}): you may not view \
             {namespace}/{name}. RBAC: you need `get` on dilocoservers.diloco.dev in \
             {namespace}; check with `kubectl auth can-i get dilocoservers.diloco.dev/{name} \
             -n {namespace}`."
        )),
        404 => PluginError::Usage(format!(
            "the console does not know {namespace}/{name} (404{said}); check the name and \
             namespace with `kubectl get dilocoservers -n {namespace}`"
        )),
        502 => PluginError::Unreachable(format!(
            "the console cannot reach the coordinator of {namespace}/{name} (502{said}); is it \
             running? See the CoordinatorAvailable condition: kubectl diloco status {name} -n \
             {namespace}"
        )),
        503 | 504 => PluginError::Unreachable(format!(
            "the console or the coordinator of {namespace}/{name} did not answer in time \
             ({code}{said})"
        )),
        _ => PluginError::Other(anyhow::anyhow!(
            "the console answered {code} for {namespace}/{name}{said}"
        )),
    }
}

/// `: <the console's error>` from a [`ConsoleError`] body, cut to a line of printable text;
/// empty when the body is not one.
fn console_said(body: &[u8]) -> String {
    let Ok(error) = serde_json::from_slice::<ConsoleError>(body) else {
        return String::new();
    };
    let text: String = error
        .error
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(MAX_QUOTED)
        .collect();
    let text = text.trim();
    if text.is_empty() {
        String::new()
    } else {
        format!(": {text}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::{EXIT_UNREACHABLE, EXIT_UPSTREAM_AUTH, EXIT_USER_CREDENTIAL};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;
    use tokio::sync::mpsc;

    const TOKEN: &str = "k8s-token-5e1f0c9a7b";

    fn llm() -> ServerRef {
        ServerRef {
            namespace: "ml".into(),
            name: "llm".into(),
        }
    }

    /// A one-reply HTTP/1.1 server on 127.0.0.1: answers every request with `status`,
    /// `headers` and `body`, and sends each request's head to the returned receiver.
    async fn console_stub(
        status: u16,
        headers: &'static [(&'static str, &'static str)],
        body: String,
    ) -> (String, mpsc::UnboundedReceiver<String>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let (seen, requests) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            // A test makes a handful of requests; the loop ends with the test's runtime.
            for _ in 0..8 {
                let Ok((mut stream, _)) = listener.accept().await else {
                    return;
                };
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 64 * 1024 {
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let _ = seen.send(String::from_utf8_lossy(&head).into_owned());
                let mut reply = format!(
                    "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\n\
                     content-length: {}\r\nconnection: close\r\n",
                    body.len()
                );
                for (name, value) in headers {
                    reply.push_str(&format!("{name}: {value}\r\n"));
                }
                reply.push_str("\r\n");
                reply.push_str(&body);
                let _ = stream.write_all(reply.as_bytes()).await;
                let _ = stream.shutdown().await;
            }
        });
        (base, requests)
    }

    async fn call(
        status: u16,
        headers: &'static [(&'static str, &'static str)],
        body: &str,
    ) -> PluginError {
        let (base, _) = console_stub(status, headers, body.to_string()).await;
        let client =
            ConsoleClient::new(&base, BearerToken::new(TOKEN.into(), "t").unwrap()).unwrap();
        client
            .get_json::<serde_json::Value>("/api/servers/ml/llm/status", &llm())
            .await
            .unwrap_err()
    }

    const TAGGED: &[(&str, &str)] = &[(UPSTREAM_AUTH_FAILED_HEADER, "1")];
    const UPSTREAM_BODY: &str =
        r#"{"error":"the coordinator refused the console's credential","upstream_status":401}"#;

    /// forgather #94: a tagged 401 or 403 blames the console's client certificate, names its
    /// Secret and what to do, and has an exit code of its own.
    #[tokio::test]
    async fn a_tagged_401_or_403_blames_the_consoles_certificate() {
        for status in [401, 403] {
            let error = call(status, TAGGED, UPSTREAM_BODY).await;
            let text = error.to_string();
            assert_eq!(error.exit_code(), EXIT_UPSTREAM_AUTH, "{text}");
            assert!(
                text.contains("refused the console's client certificate"),
                "{text}"
            );
            assert!(text.contains("Secret llm-console-client-tls"), "{text}");
            assert!(text.contains("CN diloco-console"), "{text}");
            assert!(
                text.contains("kubectl diloco rotate-certificates llm -n ml"),
                "{text}"
            );
            assert!(text.contains("kubectl get events -n ml"), "{text}");
            assert!(
                text.contains(&format!("({status}: the coordinator refused")),
                "{text}"
            );
            assert!(!text.contains(TOKEN));
        }
    }

    /// Without the tag, a 401 or 403 is the console refusing the user: their token or RBAC.
    #[tokio::test]
    async fn an_untagged_401_or_403_blames_the_users_credential() {
        let body = r#"{"error":"token review: not authenticated"}"#;
        let error = call(401, &[], body).await;
        let text = error.to_string();
        assert_eq!(error.exit_code(), EXIT_USER_CREDENTIAL);
        assert!(text.contains("the console refused your Kubernetes credential (401: token review: not authenticated)"), "{text}");
        assert!(text.contains("kubectl create token"), "{text}");
        assert!(!text.contains("client certificate"), "{text}");

        let error = call(403, &[], r#"{"error":"forbidden"}"#).await;
        let text = error.to_string();
        assert_eq!(error.exit_code(), EXIT_USER_CREDENTIAL);
        assert!(
            text.contains("`get` on dilocoservers.diloco.dev in ml"),
            "{text}"
        );
        assert!(
            text.contains("kubectl auth can-i get dilocoservers.diloco.dev/llm -n ml"),
            "{text}"
        );
        assert!(!text.contains(TOKEN));
    }

    /// A tag on anything but 401/403 changes nothing; a 502 is "cannot reach the coordinator".
    #[tokio::test]
    async fn a_502_means_the_coordinator_is_unreachable() {
        let error = call(502, TAGGED, r#"{"error":"connection refused"}"#).await;
        let text = error.to_string();
        assert_eq!(error.exit_code(), EXIT_UNREACHABLE, "{text}");
        assert!(
            text.contains(
                "the console cannot reach the coordinator of ml/llm (502: connection refused)"
            ),
            "{text}"
        );

        let error = call(500, TAGGED, "not json").await;
        assert_eq!(error.exit_code(), crate::error::EXIT_FAILURE);
        assert_eq!(error.to_string(), "the console answered 500 for ml/llm");
    }

    /// A 200 is parsed; the console saw the token as a bearer token, nowhere else.
    #[tokio::test]
    async fn a_success_sends_the_token_as_bearer_and_parses_the_body() {
        let (base, mut requests) = console_stub(200, TAGGED, r#"{"round": 7}"#.into()).await;
        let client = ConsoleClient::new(
            &format!("{base}/"),
            BearerToken::new(TOKEN.into(), "t").unwrap(),
        )
        .unwrap();
        let reply: serde_json::Value = client
            .get_json("/api/servers/ml/llm", &llm())
            .await
            .unwrap();
        assert_eq!(reply["round"], 7);
        let head = requests.recv().await.unwrap();
        assert!(
            head.starts_with("GET /api/servers/ml/llm HTTP/1.1\r\n"),
            "{head}"
        );
        assert!(
            head.to_lowercase()
                .contains(&format!("authorization: bearer {}", TOKEN.to_lowercase())),
            "{head}"
        );
        assert_eq!(head.matches(TOKEN).count(), 1, "{head}");
    }

    /// Nothing listening: the console is unreachable, said without the token.
    #[tokio::test]
    async fn no_console_listening_is_unreachable() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        drop(listener);
        let client =
            ConsoleClient::new(&base, BearerToken::new(TOKEN.into(), "t").unwrap()).unwrap();
        let error = client
            .get_json::<serde_json::Value>("/api/servers", &llm())
            .await
            .unwrap_err();
        let text = error.to_string();
        assert_eq!(error.exit_code(), EXIT_UNREACHABLE, "{text}");
        assert!(
            text.starts_with(&format!("cannot reach the console at {base}")),
            "{text}"
        );
        assert!(!text.contains(TOKEN));
    }
}
