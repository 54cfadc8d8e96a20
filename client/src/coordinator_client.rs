//! A thin, typed HTTP client for the coordinator's endpoints, with retries on connection
//! errors. Higher-level DiLoCo logic lives in [`crate::worker`].

use std::time::Duration;

use bytes::Bytes;
use diloco_contract::api::{
    self, BULK_URL_HEADER, ControlAction, ErrorBody, ErrorKind, HeartbeatReply, HeartbeatRequest,
    InfoReply, KnownWorkersReply, OkReply, ROUND_HEADER, RegisterRequest, StatusReply,
    TENSOR_CONTENT_TYPE, WIRE_FORMAT, WIRE_FORMAT_QUERY, WorkerRef,
};
use diloco_contract::env;
use serde::Serialize;
use serde::de::DeserializeOwned;

/// Errors talking to the coordinator.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The coordinator could not be reached (or went away mid-request): worth retrying.
    #[error("cannot reach the coordinator at {url}: {detail}")]
    Unreachable { url: String, detail: String },
    /// The coordinator answered with an error.
    #[error("coordinator refused {path} with {status}: {message}")]
    Refused {
        path: String,
        status: u16,
        kind: Option<String>,
        message: String,
    },
    /// The response was not what the protocol says.
    #[error("unexpected response from {path}: {detail}")]
    Protocol { path: String, detail: String },
    /// The client could not be set up.
    #[error("invalid client configuration: {0}")]
    Config(String),
}

impl ClientError {
    /// Whether retrying the same request later may succeed.
    pub fn is_transient(&self) -> bool {
        match self {
            ClientError::Unreachable { .. } => true,
            // 503: not initialized yet, shutting down for a restart, or over a limit.
            ClientError::Refused { status, .. } => *status == 503,
            _ => false,
        }
    }

    /// The error `kind` the coordinator gave, if any.
    pub fn kind(&self) -> Option<&str> {
        match self {
            ClientError::Refused { kind, .. } => kind.as_deref(),
            _ => None,
        }
    }

    /// Whether the coordinator refused with `kind`.
    pub fn is(&self, kind: ErrorKind) -> bool {
        self.kind() == Some(kind.as_str())
    }

    /// The HTTP status, for refusals.
    pub fn status(&self) -> Option<u16> {
        match self {
            ClientError::Refused { status, .. } => Some(*status),
            _ => None,
        }
    }
}

/// How often and how patiently to retry transient failures.
#[derive(Clone, Copy, Debug)]
pub struct RetryPolicy {
    /// Attempts in all (1 = no retry).
    pub attempts: u32,
    /// Delay before the first retry; doubles each time.
    pub first_delay: Duration,
    /// Longest delay between attempts.
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            attempts: 4,
            first_delay: Duration::from_millis(500),
            max_delay: Duration::from_secs(8),
        }
    }
}

impl RetryPolicy {
    /// Delay before retry number `attempt` (0-based).
    pub fn delay(&self, attempt: u32) -> Duration {
        self.first_delay
            .saturating_mul(1 << attempt.min(16))
            .min(self.max_delay)
    }
}

/// Client settings.
#[derive(Clone, Debug)]
pub struct ClientConfig {
    /// Base URL of the control plane, e.g. `http://127.0.0.1:8512`.
    pub url: String,
    /// Timeout of requests that do not wait for a round.
    pub request_timeout: Duration,
    /// Timeout of a submission (it waits for the round to close).
    pub submit_timeout: Duration,
    /// Retries of transient failures.
    pub retry: RetryPolicy,
    /// Where the bearer token comes from.
    pub token: TokenSource,
    /// CA bundle (PEM) to trust for an `https` coordinator, besides the system's.
    pub ca_file: Option<std::path::PathBuf>,
    /// Client certificate and key (PEM) to present; one the coordinator's CA signed
    /// authenticates without a token.
    pub client_identity: Option<(std::path::PathBuf, std::path::PathBuf)>,
    /// Host names resolved to fixed addresses instead of DNS, like curl's `--resolve`: for
    /// reaching a coordinator by the name its certificate carries (a Service's DNS name)
    /// through another address. The port always comes from the URL.
    pub resolve: Vec<(String, std::net::IpAddr)>,
}

/// Where the bearer token comes from. Tokens never go on a command line: a file (re-read
/// when the coordinator answers 401, so a rotated Secret is picked up) or the environment.
#[derive(Clone, Default)]
pub enum TokenSource {
    /// No token (the coordinator runs with authentication disabled).
    #[default]
    None,
    /// A file holding the token (a mounted Secret's `token` key).
    File(std::path::PathBuf),
    /// The token itself.
    Value(String),
}

impl std::fmt::Debug for TokenSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::None => write!(f, "None"),
            Self::File(path) => write!(f, "File({})", path.display()),
            Self::Value(_) => write!(f, "Value(<redacted>)"),
        }
    }
}

impl TokenSource {
    /// `DILOCO_TOKEN_FILE` if set, else `DILOCO_TOKEN`, else none.
    pub fn from_env() -> Self {
        if let Some(path) = std::env::var_os(env::TOKEN_FILE).filter(|p| !p.is_empty()) {
            return Self::File(path.into());
        }
        match std::env::var(env::TOKEN) {
            Ok(token) if !token.trim().is_empty() => Self::Value(token.trim().to_string()),
            _ => Self::None,
        }
    }

    fn read(&self) -> Result<Option<String>, ClientError> {
        match self {
            Self::None => Ok(None),
            Self::Value(token) => Ok(Some(token.clone())),
            Self::File(path) => std::fs::read_to_string(path)
                .map(|t| Some(t.trim().to_string()))
                .map_err(|e| {
                    ClientError::Config(format!(
                        "cannot read the token file {}: {e}",
                        path.display()
                    ))
                }),
        }
    }
}

impl ClientConfig {
    /// Defaults for a coordinator at `url`.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into().trim_end_matches('/').to_string(),
            request_timeout: Duration::from_secs(60),
            submit_timeout: Duration::from_secs(3600),
            retry: RetryPolicy::default(),
            token: TokenSource::from_env(),
            ca_file: std::env::var_os(env::CA_FILE).map(Into::into),
            client_identity: std::env::var_os(env::CLIENT_CERT)
                .zip(std::env::var_os(env::CLIENT_KEY))
                .map(|(cert, key)| (cert.into(), key.into())),
            resolve: Vec::new(),
        }
    }
}

/// Parameters from the coordinator: safetensors bytes and the round they belong to.
#[derive(Clone, Debug)]
pub struct ParamsBlob {
    /// Outer steps completed when they were produced.
    pub round: u64,
    /// safetensors bytes.
    pub bytes: Bytes,
}

/// Installs ring as the process's rustls crypto provider (the one the whole project uses),
/// unless one is installed already. Needed before building any reqwest client.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// The coordinator's HTTP API.
#[derive(Clone, Debug)]
pub struct CoordinatorClient {
    http: reqwest::Client,
    config: ClientConfig,
    token: std::sync::Arc<std::sync::RwLock<Option<String>>>,
    /// The bulk plane's URL, learned from `/register` (`X-Forgather-Bulk-Url`).
    bulk_url: std::sync::Arc<std::sync::RwLock<Option<String>>>,
}

impl CoordinatorClient {
    /// A client for the coordinator in `config`.
    pub fn new(config: ClientConfig) -> Result<Self, ClientError> {
        install_crypto_provider();
        let read = |path: &std::path::Path| {
            std::fs::read(path)
                .map_err(|e| ClientError::Config(format!("cannot read {}: {e}", path.display())))
        };
        let mut builder = reqwest::Client::builder().no_proxy();
        if let Some(ca) = &config.ca_file {
            for certificate in reqwest::Certificate::from_pem_bundle(&read(ca)?)
                .map_err(|e| ClientError::Config(format!("{}: {e}", ca.display())))?
            {
                builder = builder.add_root_certificate(certificate);
            }
        }
        if let Some((cert, key)) = &config.client_identity {
            let mut pem = read(cert)?;
            pem.push(b'\n');
            pem.extend(read(key)?);
            // The error names the certificate file, never the key's content.
            let identity = reqwest::Identity::from_pem(&pem).map_err(|_| {
                ClientError::Config(format!(
                    "{} and {} are not a PEM certificate and key",
                    cert.display(),
                    key.display()
                ))
            })?;
            builder = builder.identity(identity);
        }
        for (host, ip) in &config.resolve {
            builder = builder.resolve(host, std::net::SocketAddr::new(*ip, 0));
        }
        let http = builder
            .build()
            .map_err(|e| ClientError::Config(e.to_string()))?;
        let token = config.token.read()?;
        Ok(Self {
            http,
            config,
            token: std::sync::Arc::new(std::sync::RwLock::new(token)),
            bulk_url: std::sync::Arc::default(),
        })
    }

    /// The settings in use.
    pub fn config(&self) -> &ClientConfig {
        &self.config
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.config.url)
    }

    /// `url` asking for a safetensors tensor response, whatever codec `/info` announces.
    fn safetensors_reply(url: String) -> String {
        format!("{url}?{WIRE_FORMAT_QUERY}={WIRE_FORMAT}")
    }

    /// The URL of a bulk path (on the bulk plane when the coordinator advertised one), and
    /// whether the bearer may go with it: never to a cleartext bulk plane.
    fn bulk(&self, path: &str) -> (String, bool) {
        let bulk = self
            .bulk_url
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        match bulk {
            Some(base) => {
                let bearer = base.starts_with("https://");
                (format!("{base}{path}"), bearer)
            }
            None => (self.url(path), true),
        }
    }

    /// The bulk plane's URL, if the coordinator advertised one.
    pub fn bulk_url(&self) -> Option<String> {
        self.bulk_url
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Sends a bulk-path request built by `build` from its URL. If the bulk plane is gone (a
    /// restarted coordinator listens elsewhere), asks the control plane again, whose 404
    /// for bulk paths carries the new bulk URL.
    async fn send_bulk<F>(&self, path: &str, build: F) -> Result<reqwest::Response, ClientError>
    where
        F: Fn(String) -> reqwest::RequestBuilder,
    {
        for _ in 0..2 {
            let on_bulk = self.bulk_url().is_some();
            let (url, bearer) = self.bulk(path);
            match self.send_with(path, build(url), bearer).await {
                Err(ClientError::Unreachable { .. }) if on_bulk => {
                    *self
                        .bulk_url
                        .write()
                        .unwrap_or_else(std::sync::PoisonError::into_inner) = None;
                }
                Err(ClientError::Refused { status: 404, .. })
                    if !on_bulk && self.bulk_url().is_some() => {}
                result => return result,
            }
        }
        let (url, bearer) = self.bulk(path);
        self.send_with(path, build(url), bearer).await
    }

    fn learn_bulk_url(&self, response: &reqwest::Response) {
        // Re-learned at every registration; an absent header clears it.
        let advertised = response
            .headers()
            .get(BULK_URL_HEADER)
            .and_then(|v| v.to_str().ok())
            .filter(|url| url.starts_with("http://") || url.starts_with("https://"))
            .map(|url| url.trim_end_matches('/').to_string());
        *self
            .bulk_url
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = advertised;
    }

    /// Retries `call` on transient errors following the policy.
    pub async fn with_retries<T, F, Fut>(&self, mut call: F) -> Result<T, ClientError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, ClientError>>,
    {
        let policy = self.config.retry;
        let mut attempt = 0;
        loop {
            match call().await {
                Err(error) if error.is_transient() && attempt + 1 < policy.attempts => {
                    tokio::time::sleep(policy.delay(attempt)).await;
                    attempt += 1;
                }
                result => return result,
            }
        }
    }

    fn authorized(
        &self,
        request: reqwest::RequestBuilder,
        bearer: bool,
    ) -> reqwest::RequestBuilder {
        if !bearer {
            return request;
        }
        let token = self
            .token
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match token.as_deref() {
            Some(token) => request.bearer_auth(token),
            None => request,
        }
    }

    /// Re-reads the token; whether it changed.
    fn refresh_token(&self) -> Result<bool, ClientError> {
        let fresh = self.config.token.read()?;
        let mut token = self
            .token
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let changed = *token != fresh;
        *token = fresh;
        Ok(changed)
    }

    async fn send(
        &self,
        path: &str,
        request: reqwest::RequestBuilder,
    ) -> Result<reqwest::Response, ClientError> {
        self.send_with(path, request, true).await
    }

    async fn send_with(
        &self,
        path: &str,
        request: reqwest::RequestBuilder,
        bearer: bool,
    ) -> Result<reqwest::Response, ClientError> {
        let again = request.try_clone();
        let mut response = self
            .authorized(request, bearer)
            .send()
            .await
            .map_err(|e| self.unreachable(&e))?;
        if response.headers().contains_key(BULK_URL_HEADER) {
            self.learn_bulk_url(&response);
        }
        // A 401 after a rotation: the token file has the new token by now.
        if response.status() == reqwest::StatusCode::UNAUTHORIZED
            && let Some(again) = again
            && self.refresh_token()?
        {
            response = self
                .authorized(again, bearer)
                .send()
                .await
                .map_err(|e| self.unreachable(&e))?;
        }
        if response.status().is_success() {
            return Ok(response);
        }
        let status = response.status().as_u16();
        // A refusal without our error body (a proxy's page) still reports its status.
        let body: Option<ErrorBody> = response.json().await.ok();
        let (kind, message) = body.map_or((None, None), |b| (b.kind, Some(b.error)));
        Err(ClientError::Refused {
            path: path.to_string(),
            status,
            kind,
            message: message.unwrap_or_else(|| "(no message)".to_string()),
        })
    }

    fn unreachable(&self, error: &reqwest::Error) -> ClientError {
        // The URL is ours; reqwest's error text carries no credentials.
        let mut detail = error.to_string();
        let mut source = std::error::Error::source(error);
        while let Some(inner) = source {
            detail = format!("{detail}: {inner}");
            source = inner.source();
        }
        ClientError::Unreachable {
            url: self.config.url.clone(),
            detail,
        }
    }

    async fn get_json<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        let request = self
            .http
            .get(self.url(path))
            .timeout(self.config.request_timeout);
        let response = self.send(path, request).await?;
        response.json().await.map_err(|e| ClientError::Protocol {
            path: path.into(),
            detail: e.to_string(),
        })
    }

    async fn post_json(
        &self,
        path: &str,
        body: &impl Serialize,
    ) -> Result<reqwest::Response, ClientError> {
        let request = self
            .http
            .post(self.url(path))
            .timeout(self.config.request_timeout)
            .json(body);
        self.send(path, request).await
    }

    /// `POST path` with a JSON body; the JSON reply.
    async fn post_for_json<T: DeserializeOwned>(
        &self,
        path: &str,
        body: &impl Serialize,
    ) -> Result<T, ClientError> {
        let response = self.post_json(path, body).await?;
        response.json().await.map_err(|e| ClientError::Protocol {
            path: path.into(),
            detail: e.to_string(),
        })
    }

    async fn params(
        &self,
        path: &str,
        response: reqwest::Response,
    ) -> Result<ParamsBlob, ClientError> {
        let round = response
            .headers()
            .get(ROUND_HEADER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| ClientError::Protocol {
                path: path.into(),
                detail: format!("no {ROUND_HEADER} header"),
            })?;
        let bytes = response.bytes().await.map_err(|e| self.unreachable(&e))?;
        Ok(ParamsBlob { round, bytes })
    }

    /// `GET /health`.
    pub async fn health(&self) -> Result<(), ClientError> {
        self.get_json::<OkReply>(api::HEALTH).await.map(|_| ())
    }

    /// `GET /info`: what a worker must adopt.
    pub async fn info(&self) -> Result<InfoReply, ClientError> {
        self.get_json(api::INFO).await
    }

    /// `GET /status`.
    pub async fn status(&self) -> Result<StatusReply, ClientError> {
        self.get_json(api::STATUS).await
    }

    /// `GET /known_workers`.
    pub async fn known_workers(&self) -> Result<KnownWorkersReply, ClientError> {
        self.get_json(api::KNOWN_WORKERS).await
    }

    /// `POST /register`: the parameters to start from.
    pub async fn register(
        &self,
        registration: &RegisterRequest,
    ) -> Result<ParamsBlob, ClientError> {
        let request = self
            .http
            .post(Self::safetensors_reply(self.url(api::REGISTER)))
            .timeout(self.config.request_timeout)
            .json(registration);
        let response = self.send(api::REGISTER, request).await?;
        self.learn_bulk_url(&response);
        self.params(api::REGISTER, response).await
    }

    /// `POST /heartbeat`: the reply (round, worker counts, maybe a relayed command).
    pub async fn heartbeat(
        &self,
        heartbeat: &HeartbeatRequest,
    ) -> Result<HeartbeatReply, ClientError> {
        self.post_for_json(api::HEARTBEAT, heartbeat).await
    }

    /// `POST /deregister`.
    pub async fn deregister(&self, worker_id: &str) -> Result<(), ClientError> {
        let body = WorkerRef {
            worker_id: worker_id.to_string(),
        };
        self.post_json(api::DEREGISTER, &body).await.map(|_| ())
    }

    /// `GET /global_params`.
    pub async fn global_params(&self) -> Result<ParamsBlob, ClientError> {
        let response = self
            .send_bulk(api::GLOBAL_PARAMS, |url| {
                self.http
                    .get(Self::safetensors_reply(url))
                    .timeout(self.config.request_timeout)
            })
            .await?;
        self.params(api::GLOBAL_PARAMS, response).await
    }

    /// `POST /submit_pseudograd` with a complete frame; returns the next parameters.
    pub async fn submit(&self, frame: Bytes) -> Result<ParamsBlob, ClientError> {
        let response = self
            .send_bulk(api::SUBMIT_PSEUDOGRAD, |url| {
                self.http
                    .post(Self::safetensors_reply(url))
                    .timeout(self.config.submit_timeout)
                    .header(reqwest::header::CONTENT_TYPE, TENSOR_CONTENT_TYPE)
                    .body(frame.clone())
            })
            .await?;
        self.params(api::SUBMIT_PSEUDOGRAD, response).await
    }

    /// `POST /init_params` with a frame carrying this worker's parameters.
    pub async fn init_params(&self, frame: Bytes) -> Result<ParamsBlob, ClientError> {
        let request = self
            .http
            .post(Self::safetensors_reply(self.url(api::INIT_PARAMS)))
            .timeout(self.config.submit_timeout)
            .body(frame);
        let response = self.send(api::INIT_PARAMS, request).await?;
        self.params(api::INIT_PARAMS, response).await
    }

    /// `POST /control/<action>` (admin only) with its body (`api::control`'s request types, or
    /// `{}`); the reply as `R` (`api::control`'s reply types, or `serde_json::Value`).
    pub async fn control<R: DeserializeOwned>(
        &self,
        action: ControlAction,
        body: &impl Serialize,
    ) -> Result<R, ClientError> {
        self.post_for_json(&action.path(), body).await
    }
}
