//! Authentication: turning a request's credential into a [`Caller`], per listener.
//!
//! Credentials, in the order they are checked:
//! 1. a client certificate verified during the TLS handshake (against `tls.client_ca`): with
//!    `auth.clients_file` it authenticates only if its common name is listed there, with the
//!    listed role; without one it is a worker;
//! 2. `Authorization: Bearer <token>`: the admin token (`auth.admin_token_dir`) makes an admin,
//!    the worker token (`auth.token_dir`) a worker.
//!
//! The HTTP middleware that applies them to every request, with the failure limiter, is
//! `http::authenticate`. What a caller may do once known is in [`crate::identity`].

pub mod clients;
pub mod limiter;
pub mod tokens;

use std::sync::Arc;

use jiff::Timestamp;

pub use clients::ClientAllowlist;
pub use limiter::FailureLimiter;
pub use tokens::{TokenError, TokenStore};

use crate::audit::bounded;
use crate::identity::{Caller, Role};
use crate::tls::ClientCertificate;

/// Every credential the coordinator accepts, shared by its listeners.
pub struct Credentials {
    /// Worker bearer tokens (`auth.token_dir`).
    pub worker_tokens: Arc<TokenStore>,
    /// Admin bearer tokens (`auth.admin_token_dir`), if configured.
    pub admin_tokens: Option<Arc<TokenStore>>,
    /// The client certificates allowed (`auth.clients_file`), if configured.
    pub clients: Option<Arc<ClientAllowlist>>,
}

impl Credentials {
    /// The caller a verified client certificate makes, or why it is refused.
    pub fn certificate_caller(&self, certificate: &ClientCertificate) -> Result<Caller, String> {
        let Some(cn) = certificate.common_name.as_deref() else {
            return Err(format!(
                "client certificate {} has no subject common name (CN) to identify it by",
                bounded(&certificate.subject)
            ));
        };
        match &self.clients {
            None => Ok(Caller::certificate(cn, Role::Worker)),
            Some(clients) => clients
                .role_of(cn)
                .map(|role| Caller::certificate(cn, role))
                .ok_or_else(|| {
                    format!(
                        "client certificate CN={} is not an allowed client",
                        bounded(cn)
                    )
                }),
        }
    }

    /// The caller a bearer token makes, if any token accepts it.
    pub fn token_caller(&self, presented: &str, now: Timestamp) -> Option<Caller> {
        if self
            .admin_tokens
            .as_ref()
            .is_some_and(|admin| admin.accepts(presented, now))
        {
            return Some(Caller::admin_token());
        }
        self.worker_tokens
            .accepts(presented, now)
            .then(Caller::worker_token)
    }
}
