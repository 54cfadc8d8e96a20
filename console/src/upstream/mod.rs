//! The proxy to coordinators (forgather's, reference §4, made Kubernetes-native).
//!
//! - **No SSRF**: the only coordinators reached are those of existing `DiLoCoServer`s, at
//!   `https://<name>-control.<ns>.svc` on `spec.control.port`, derived from the resource
//!   ([`Target::of`]), never from the request. The address comes from DNS
//!   (`<name>-control.<ns>.svc.<clusterDomain>`) or the caller's override; the coordinator's
//!   certificate is verified for the Service name against the CA of the console's Secret only.
//! - **Its own credential**: the client certificate in `<name>-console-client-tls`, never a
//!   bearer token; no redirects followed, no proxy used.
//! - **Bounded**: connect within [`CONNECT_TIMEOUT`], answer within [`TOTAL_TIMEOUT`], at most
//!   [`MAX_REPLY_BYTES`].
//! - **Replies** ([`relay`]): a connection failure is 502; the coordinator's 401 or 403 (and a
//!   TLS handshake in which it refused the console's certificate) is the same status with
//!   `x-upstream-auth-failed: 1`; any other status is passed through with its JSON body.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::Duration;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use diloco_contract::api::ErrorBody;
use diloco_contract::credentials::CA_CERT;
use rustls::AlertDescription;

use crate::error::ApiError;

mod target;

pub use target::{
    ClientCertificate, Target, client_secret_name, control_service, lookup_host,
    read_client_certificate, service_host,
};

/// Time to establish the connection (TCP and TLS).
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Time for the whole exchange.
pub const TOTAL_TIMEOUT: Duration = Duration::from_secs(30);
/// The largest reply passed on (a long `/stats_history` is a few hundred KiB).
pub const MAX_REPLY_BYTES: usize = 8 * 1024 * 1024;
/// Coordinator clients kept (one per server in use).
const MAX_CACHED_CLIENTS: usize = 1024;
/// The longest part of a coordinator's refusal repeated to the user.
const MAX_UPSTREAM_MESSAGE_CHARS: usize = 300;

/// The coordinators' HTTPS clients, one per server, rebuilt when its Secret or address changes.
pub struct Upstream {
    resolve: BTreeMap<String, SocketAddr>,
    clients: Mutex<HashMap<(String, String), CachedClient>>,
}

struct CachedClient {
    version: String,
    address: SocketAddr,
    http: reqwest::Client,
}

impl Upstream {
    /// Clients that look up coordinators in DNS unless `resolve` names their host.
    pub fn new(resolve: BTreeMap<String, SocketAddr>) -> Self {
        let _ = rustls::crypto::ring::default_provider().install_default();
        Self {
            resolve,
            clients: Mutex::new(HashMap::new()),
        }
    }

    /// Sends `method path` (with `body`) to the coordinator of `target` and relays its reply.
    pub async fn call(
        &self,
        target: &Target,
        certificate: &ClientCertificate,
        method: reqwest::Method,
        path_and_query: &str,
        body: Option<Bytes>,
    ) -> Result<Response, ApiError> {
        let address = self.address(target).await?;
        let http = self.client(target, certificate, address)?;
        let url = format!(
            "https://{}:{}{path_and_query}",
            target.service_host,
            address.port()
        );
        let (status, reply) = exchange(&http, method, &url, body).await?;
        Ok(relay(status, reply))
    }

    async fn address(&self, target: &Target) -> Result<SocketAddr, ApiError> {
        if let Some(address) = self.resolve.get(&target.lookup_host) {
            return Ok(*address);
        }
        let mut addresses = tokio::net::lookup_host((target.lookup_host.as_str(), target.port))
            .await
            .map_err(|e| {
                ApiError::bad_gateway(format!(
                    "cannot resolve the coordinator's Service {}: {e}",
                    target.lookup_host
                ))
            })?;
        addresses.next().ok_or_else(|| {
            ApiError::bad_gateway(format!(
                "the coordinator's Service {} has no address",
                target.lookup_host
            ))
        })
    }

    fn client(
        &self,
        target: &Target,
        certificate: &ClientCertificate,
        address: SocketAddr,
    ) -> Result<reqwest::Client, ApiError> {
        let key = (target.namespace.clone(), target.name.clone());
        let mut clients = self
            .clients
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(cached) = clients.get(&key)
            && cached.version == certificate.version
            && cached.address == address
        {
            return Ok(cached.http.clone());
        }
        let http = build_client(target, certificate, address)?;
        if clients.len() >= MAX_CACHED_CLIENTS {
            clients.clear();
        }
        clients.insert(
            key,
            CachedClient {
                version: certificate.version.clone(),
                address,
                http: http.clone(),
            },
        );
        Ok(http)
    }
}

fn build_client(
    target: &Target,
    certificate: &ClientCertificate,
    address: SocketAddr,
) -> Result<reqwest::Client, ApiError> {
    let secret = client_secret_name(&target.name);
    let roots = reqwest::Certificate::from_pem_bundle(&certificate.ca_pem).map_err(|_| {
        ApiError::bad_gateway(format!("{CA_CERT} of Secret {secret} does not parse"))
    })?;
    // The error would describe the key material: say only which Secret is at fault.
    let identity = reqwest::Identity::from_pem(&certificate.identity_pem).map_err(|_| {
        ApiError::bad_gateway(format!(
            "the client certificate in Secret {secret} does not load"
        ))
    })?;
    reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .https_only(true)
        .connect_timeout(CONNECT_TIMEOUT)
        .timeout(TOTAL_TIMEOUT)
        .tls_certs_only(roots)
        .identity(identity)
        .resolve(&target.service_host, address)
        .build()
        .map_err(|e| ApiError::internal(format!("cannot build the coordinator client: {e}")))
}

/// One request and its whole (bounded) reply; a failure to get one is 502, except a TLS
/// handshake in which the coordinator refused the console's certificate (401, tagged).
pub async fn exchange(
    http: &reqwest::Client,
    method: reqwest::Method,
    url: &str,
    body: Option<Bytes>,
) -> Result<(StatusCode, Bytes), ApiError> {
    let mut request = http.request(method, url);
    if let Some(body) = body {
        request = request
            .header(header::CONTENT_TYPE, "application/json")
            .body(body);
    }
    let mut response = request.send().await.map_err(|e| unreachable(&e))?;
    let status = StatusCode::from_u16(response.status().as_u16())
        .map_err(|_| ApiError::bad_gateway("the coordinator answered an invalid status"))?;
    let mut reply = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(|e| unreachable(&e))? {
        if reply.len() + chunk.len() > MAX_REPLY_BYTES {
            return Err(ApiError::bad_gateway(format!(
                "the coordinator's reply exceeds {MAX_REPLY_BYTES} bytes"
            )));
        }
        reply.extend_from_slice(&chunk);
    }
    Ok((status, Bytes::from(reply)))
}

/// The coordinator's reply as the console passes it on.
pub fn relay(status: StatusCode, body: Bytes) -> Response {
    if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
        let reason = serde_json::from_slice::<ErrorBody>(&body)
            .map(|b| {
                b.error
                    .chars()
                    .take(MAX_UPSTREAM_MESSAGE_CHARS)
                    .collect::<String>()
            })
            .unwrap_or_default();
        let mut message = format!(
            "upstream authentication failed: the coordinator answered {status} to the \
             console's client certificate"
        );
        if !reason.is_empty() {
            message.push_str(&format!(" ({reason})"));
        }
        return ApiError::upstream_auth(status, message).into_response();
    }
    if serde_json::from_slice::<serde_json::Value>(&body).is_err() {
        let mut refusal = ApiError::new(
            status,
            format!("the coordinator answered {status} with a body that is not JSON"),
        );
        refusal.body.upstream_status = Some(status.as_u16());
        return refusal.into_response();
    }
    let mut response = (status, body).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

/// Why the coordinator could not be asked: a refused client certificate (401, tagged) or 502.
fn unreachable(error: &reqwest::Error) -> ApiError {
    if let Some(alert) = refused_certificate_alert(error) {
        return ApiError::upstream_auth(
            StatusCode::UNAUTHORIZED,
            format!(
                "upstream authentication failed: the coordinator refused the console's client \
                 certificate during the TLS handshake ({alert:?})"
            ),
        );
    }
    let what = if error.is_timeout() {
        "did not answer in time"
    } else {
        "cannot be reached"
    };
    ApiError::bad_gateway(format!("the coordinator {what}: {}", describe(error)))
}

/// The TLS alert by which the coordinator refused the console's certificate, if it did.
fn refused_certificate_alert(error: &reqwest::Error) -> Option<AlertDescription> {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(cause) = source {
        // tokio-rustls wraps rustls' error in an io::Error, whose `source` skips it.
        let inner = cause
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
            .map(|e| e as &(dyn std::error::Error + 'static));
        for candidate in [Some(cause), inner].into_iter().flatten() {
            if let Some(rustls::Error::AlertReceived(alert)) =
                candidate.downcast_ref::<rustls::Error>()
            {
                return matches!(
                    alert,
                    AlertDescription::BadCertificate
                        | AlertDescription::UnsupportedCertificate
                        | AlertDescription::CertificateRevoked
                        | AlertDescription::CertificateExpired
                        | AlertDescription::CertificateUnknown
                        | AlertDescription::UnknownCA
                        | AlertDescription::AccessDenied
                        | AlertDescription::CertificateRequired
                )
                .then_some(*alert);
            }
        }
        source = cause.source();
    }
    None
}

/// The error chain in one line.
fn describe(error: &reqwest::Error) -> String {
    let mut text = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests;
