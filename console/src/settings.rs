//! What the console is told at start-up.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

/// The idle timeout when none is given.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(30 * 60);
/// Sessions held at most when no bound is given.
pub const DEFAULT_MAX_SESSIONS: usize = 10_000;

/// The console's settings.
#[derive(Clone, Debug)]
pub struct ConsoleSettings {
    /// The cluster's DNS domain: coordinators are at `<name>-control.<ns>.svc.<domain>`.
    pub cluster_domain: String,
    /// A session ends after this long without a request.
    pub idle_timeout: Duration,
    /// Sessions held at most.
    pub max_sessions: usize,
    /// Addresses to use instead of DNS, by the host name the console would look up
    /// ([`crate::upstream::lookup_host`]); the coordinator's certificate is still verified
    /// for its Service name. For tests and for running outside the cluster (port-forwards).
    pub resolve: BTreeMap<String, SocketAddr>,
}

impl Default for ConsoleSettings {
    fn default() -> Self {
        Self {
            cluster_domain: "cluster.local".into(),
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            max_sessions: DEFAULT_MAX_SESSIONS,
            resolve: BTreeMap::new(),
        }
    }
}
