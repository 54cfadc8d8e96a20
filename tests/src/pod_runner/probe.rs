//! Readiness: the container's readinessProbe (httpGet or tcpSocket) on a compressed schedule,
//! or ready as soon as it started when it has none.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use anyhow::{Context, bail};
use k8s_openapi::api::core::v1::{Container, Probe};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use tokio::time::Instant;

/// The longest wait between two probes, whatever `periodSeconds` says: tests stay fast.
const MAX_PERIOD: Duration = Duration::from_secs(1);
/// Until the first success, probes come this often, so readiness shows up promptly.
const STARTUP_PERIOD: Duration = Duration::from_millis(200);
/// Cap on `initialDelaySeconds` and `timeoutSeconds`, for the same reason.
const MAX_DELAY: Duration = Duration::from_secs(1);

/// The HTTP clients probes use; HTTPS probes accept any certificate, like the kubelet's.
#[derive(Clone)]
pub(super) struct ProbeClients {
    http: reqwest::Client,
    https_any_certificate: reqwest::Client,
}

impl ProbeClients {
    pub(super) fn new() -> anyhow::Result<Self> {
        diloco_client::coordinator_client::install_crypto_provider();
        let builder = || {
            reqwest::Client::builder()
                .no_proxy()
                .redirect(reqwest::redirect::Policy::none())
        };
        Ok(Self {
            http: builder()
                .build()
                .context("failed to build the probe client")?,
            https_any_certificate: builder()
                .danger_accept_invalid_certs(true)
                .build()
                .context("failed to build the HTTPS probe client")?,
        })
    }
}

enum Action {
    Http {
        url: String,
        https: bool,
        headers: Vec<(String, String)>,
    },
    Tcp(SocketAddr),
}

struct ReadinessProbe {
    action: Action,
    period: Duration,
    timeout: Duration,
    initial_delay: Duration,
    success_threshold: u32,
    failure_threshold: u32,
}

/// The readiness of one container across its restarts.
pub(super) struct Readiness {
    probe: Option<ReadinessProbe>,
    ready: bool,
    successes: u32,
    failures: u32,
    next_probe: Instant,
}

impl Readiness {
    /// The readiness of `container` reached at `ip`; fails for probe kinds the runner lacks.
    pub(super) fn new(container: &Container, ip: Ipv4Addr) -> anyhow::Result<Self> {
        let probe = match &container.readiness_probe {
            Some(probe) => Some(ReadinessProbe::new(probe, container, ip)?),
            None => None,
        };
        Ok(Self {
            probe,
            ready: false,
            successes: 0,
            failures: 0,
            next_probe: Instant::now(),
        })
    }

    /// The process (re)started: without a probe it is ready now, with one it is not yet.
    pub(super) fn started(&mut self) {
        self.successes = 0;
        self.failures = 0;
        self.ready = self.probe.is_none();
        let delay = self
            .probe
            .as_ref()
            .map_or(Duration::ZERO, |p| p.initial_delay);
        self.next_probe = Instant::now() + delay;
    }

    /// The process is gone.
    pub(super) fn stopped(&mut self) {
        self.ready = false;
    }

    pub(super) fn is_ready(&self) -> bool {
        self.ready
    }

    /// When [`Self::poll`] next has work; far in the future without a probe.
    pub(super) fn next_probe(&self) -> Instant {
        match self.probe {
            Some(_) => self.next_probe,
            None => Instant::now() + MAX_PERIOD,
        }
    }

    /// Runs the probe if it is due and updates readiness.
    pub(super) async fn poll(&mut self, clients: &ProbeClients) {
        let Some(probe) = &self.probe else {
            return;
        };
        if Instant::now() < self.next_probe {
            return;
        }
        if probe.run(clients).await {
            self.failures = 0;
            self.successes += 1;
            if self.successes >= probe.success_threshold {
                self.ready = true;
            }
        } else {
            self.successes = 0;
            self.failures += 1;
            if self.failures >= probe.failure_threshold {
                self.ready = false;
            }
        }
        let period = if self.ready {
            probe.period
        } else {
            probe.period.min(STARTUP_PERIOD)
        };
        self.next_probe = Instant::now() + period;
    }
}

impl ReadinessProbe {
    fn new(probe: &Probe, container: &Container, ip: Ipv4Addr) -> anyhow::Result<Self> {
        let action = if let Some(get) = &probe.http_get {
            let host = get.host.clone().unwrap_or_else(|| ip.to_string());
            let port = resolve_port(&get.port, container)?;
            let https = match get.scheme.as_deref().unwrap_or("HTTP") {
                "HTTP" => false,
                "HTTPS" => true,
                other => bail!("readinessProbe scheme {other} is not HTTP or HTTPS"),
            };
            let scheme = if https { "https" } else { "http" };
            let path = get.path.as_deref().unwrap_or("/");
            let path = if path.starts_with('/') {
                path.to_string()
            } else {
                format!("/{path}")
            };
            Action::Http {
                url: format!("{scheme}://{host}:{port}{path}"),
                https,
                headers: get
                    .http_headers
                    .iter()
                    .flatten()
                    .map(|h| (h.name.clone(), h.value.clone()))
                    .collect(),
            }
        } else if let Some(tcp) = &probe.tcp_socket {
            let host: Ipv4Addr = match &tcp.host {
                Some(host) => host
                    .parse()
                    .with_context(|| format!("tcpSocket host {host} is not an IPv4 address"))?,
                None => ip,
            };
            Action::Tcp(SocketAddr::from((
                host,
                resolve_port(&tcp.port, container)?,
            )))
        } else {
            bail!(
                "container {}: the pod runner supports httpGet and tcpSocket readiness probes only",
                container.name
            );
        };
        let seconds = |value: Option<i32>, default: u64| {
            Duration::from_secs(value.and_then(|v| u64::try_from(v).ok()).unwrap_or(default))
        };
        let count = |value: Option<i32>, default: u32| {
            value
                .and_then(|v| u32::try_from(v).ok())
                .unwrap_or(default)
                .max(1)
        };
        Ok(Self {
            action,
            period: seconds(probe.period_seconds, 10).min(MAX_PERIOD),
            timeout: seconds(probe.timeout_seconds, 1).clamp(Duration::from_millis(100), MAX_DELAY),
            initial_delay: seconds(probe.initial_delay_seconds, 0).min(MAX_DELAY),
            success_threshold: count(probe.success_threshold, 1),
            failure_threshold: count(probe.failure_threshold, 3),
        })
    }

    /// One probe: an HTTP status in 200..400 or an accepted connection is a success.
    async fn run(&self, clients: &ProbeClients) -> bool {
        match &self.action {
            Action::Http {
                url,
                https,
                headers,
            } => {
                let client = if *https {
                    &clients.https_any_certificate
                } else {
                    &clients.http
                };
                let mut request = client.get(url).timeout(self.timeout);
                for (name, value) in headers {
                    request = request.header(name, value);
                }
                match request.send().await {
                    Ok(response) => (200..400).contains(&response.status().as_u16()),
                    Err(_) => false,
                }
            }
            Action::Tcp(address) => matches!(
                tokio::time::timeout(self.timeout, tokio::net::TcpStream::connect(address)).await,
                Ok(Ok(_))
            ),
        }
    }
}

/// A probe's port: a number, or the name of one of the container's ports.
fn resolve_port(port: &IntOrString, container: &Container) -> anyhow::Result<u16> {
    let number = match port {
        IntOrString::Int(number) => *number,
        IntOrString::String(name) => container
            .ports
            .iter()
            .flatten()
            .find(|p| p.name.as_deref() == Some(name.as_str()))
            .map(|p| p.container_port)
            .with_context(|| {
                format!(
                    "probe port {name} is not a port of container {}",
                    container.name
                )
            })?,
    };
    u16::try_from(number).with_context(|| format!("probe port {number} is out of range"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pki::TestCa;
    use crate::processes::CoordinatorProcess;

    fn probed_container(port: u16, scheme: &str) -> Container {
        serde_json::from_value(serde_json::json!({
            "name": "coordinator",
            "ports": [{"name": "control", "containerPort": port}],
            "readinessProbe": {
                "httpGet": {"path": "/health", "port": "control", "scheme": scheme},
                "periodSeconds": 10,
            },
        }))
        .unwrap()
    }

    async fn ready_after_one_probe(container: &Container) -> bool {
        let mut readiness = Readiness::new(container, Ipv4Addr::LOCALHOST).unwrap();
        readiness.started();
        readiness.poll(&ProbeClients::new().unwrap()).await;
        readiness.is_ready()
    }

    /// Like the kubelet's, an HTTPS probe trusts whatever certificate the container presents
    /// (here one from a CA nobody trusts); a plain-HTTP probe of a TLS listener fails.
    #[tokio::test(flavor = "multi_thread")]
    async fn https_probes_accept_any_certificate_and_http_probes_of_tls_fail() {
        let dir = tempfile::tempdir().unwrap();
        let server = TestCa::new("nobody trusts this CA").server(&["127.0.0.1"]);
        std::fs::write(dir.path().join("tls.crt"), &server.cert).unwrap();
        std::fs::write(dir.path().join("tls.key"), &server.key).unwrap();
        let coordinator =
            CoordinatorProcess::start(dir.path(), "tls: {cert: tls.crt, key: tls.key}\n");
        let port: u16 = coordinator
            .address()
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .unwrap();

        assert!(ready_after_one_probe(&probed_container(port, "HTTPS")).await);
        assert!(!ready_after_one_probe(&probed_container(port, "HTTP")).await);
    }
}
