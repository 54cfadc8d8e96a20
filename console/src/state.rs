//! What every request handler shares.

use std::sync::Arc;

use kube::Client;

use crate::kube_auth::KubeAuth;
use crate::session::SessionStore;
use crate::settings::ConsoleSettings;
use crate::upstream::Upstream;

/// The console's state, cheap to clone.
#[derive(Clone)]
pub struct AppState(Arc<Inner>);

/// The parts of [`AppState`].
pub struct Inner {
    /// The console's own Kubernetes client (its ServiceAccount).
    pub client: Client,
    /// The settings.
    pub settings: ConsoleSettings,
    /// Browser sessions.
    pub sessions: SessionStore,
    /// TokenReviews and SubjectAccessReviews.
    pub auth: KubeAuth,
    /// The coordinators' clients.
    pub upstream: Upstream,
}

impl AppState {
    /// The state of a console that talks to Kubernetes with `client`.
    pub fn new(client: Client, settings: ConsoleSettings) -> Self {
        Self(Arc::new(Inner {
            sessions: SessionStore::new(settings.idle_timeout, settings.max_sessions),
            auth: KubeAuth::new(client.clone()),
            upstream: Upstream::new(settings.resolve.clone()),
            client,
            settings,
        }))
    }
}

impl std::ops::Deref for AppState {
    type Target = Inner;

    fn deref(&self) -> &Inner {
        &self.0
    }
}
