//! Who is calling, and what that caller may do.
//!
//! Authentication ([`crate::auth`]) turns a credential into a [`Caller`]: an identity string
//! that goes into audit records and the roster (never the credential itself) and a [`Role`].
//! The rules that depend on the caller live here, so the HTTP layer and the round engine apply
//! the same ones:
//!
//! - only an admin may run control actions;
//! - a caller authenticated by a client certificate may only act for worker ids under its
//!   certificate's common name (`<CN>` itself or `<CN>.<anything>`);
//! - a registered worker belongs to the identity that registered it: nobody else may heartbeat,
//!   submit for, re-register or deregister it (an admin may still deregister or kick it).
//!
//! Every holder of the worker token shares one identity: a shared secret cannot tell them
//! apart, so they can act for each other's workers. Certificates (one per client) can.

pub use diloco_contract::clients::Role;

/// Identity of every holder of the worker token (a shared secret cannot tell them apart).
pub const WORKER_TOKEN: &str = "worker-token";
/// Identity of every holder of the admin token.
pub const ADMIN_TOKEN: &str = "admin-token";
/// Identity of callers of a coordinator running with `auth.disabled`.
pub const ANONYMOUS: &str = "anonymous";
/// Prefix of the identity a verified client certificate gives: `cert:<CN>`.
pub const CERTIFICATE_PREFIX: &str = "cert:";

/// A caller tried something its identity does not allow (the message says what and why).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Forbidden(pub String);

/// An authenticated caller.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Caller {
    identity: String,
    role: Role,
    /// The certificate's common name, when a client certificate authenticated the caller.
    common_name: Option<String>,
}

impl Caller {
    /// A holder of the worker bearer token.
    pub fn worker_token() -> Self {
        Self::named(WORKER_TOKEN, Role::Worker)
    }

    /// A holder of the admin bearer token.
    pub fn admin_token() -> Self {
        Self::named(ADMIN_TOKEN, Role::Admin)
    }

    /// Anyone, on a coordinator without authentication: there is nothing to tell callers
    /// apart, so everyone may do everything.
    pub fn anonymous() -> Self {
        Self::named(ANONYMOUS, Role::Admin)
    }

    /// A client whose certificate, with common name `common_name`, was verified.
    pub fn certificate(common_name: &str, role: Role) -> Self {
        Self {
            identity: format!("{CERTIFICATE_PREFIX}{common_name}"),
            role,
            common_name: Some(common_name.to_string()),
        }
    }

    fn named(identity: &str, role: Role) -> Self {
        Self {
            identity: identity.to_string(),
            role,
            common_name: None,
        }
    }

    /// The identity recorded in audit records and in the roster.
    pub fn identity(&self) -> &str {
        &self.identity
    }

    /// What it may do.
    pub fn role(&self) -> Role {
        self.role
    }

    /// Whether it may run control actions.
    pub fn is_admin(&self) -> bool {
        self.role == Role::Admin
    }

    /// Refuses a worker id outside the caller's certificate subject: a certificate for `site-a`
    /// may act as `site-a` or `site-a.<anything>`, nothing else. Token holders are not bound.
    pub fn check_worker_id(&self, worker_id: &str) -> Result<(), Forbidden> {
        let Some(cn) = &self.common_name else {
            return Ok(());
        };
        let under_cn = worker_id
            .strip_prefix(cn.as_str())
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('.'));
        if under_cn {
            Ok(())
        } else {
            Err(Forbidden(format!(
                "the client certificate CN={cn} may only act as worker id {cn} or {cn}.<suffix>, \
                 not {worker_id}"
            )))
        }
    }

    /// Refuses acting for a registered worker (heartbeat, upload, re-registration) unless the
    /// caller is the identity that registered it. `owner` is `None` for a worker restored from
    /// a checkpoint that predates owners: anyone whose certificate allows the id may claim it.
    pub fn check_acts_for(&self, worker_id: &str, owner: Option<&str>) -> Result<(), Forbidden> {
        self.check_worker_id(worker_id)?;
        match owner {
            Some(owner) if owner != self.identity => Err(Forbidden(format!(
                "worker {worker_id} was registered by {owner}; {} may not act for it",
                self.identity
            ))),
            _ => Ok(()),
        }
    }

    /// Refuses removing a registered worker (`/deregister`) unless the caller is an admin or
    /// [may act for it](Self::check_acts_for).
    pub fn check_may_remove(&self, worker_id: &str, owner: Option<&str>) -> Result<(), Forbidden> {
        if self.is_admin() {
            return Ok(());
        }
        self.check_acts_for(worker_id, owner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_certificate_may_act_only_under_its_common_name() {
        let site = Caller::certificate("site-a", Role::Worker);
        assert_eq!(site.identity(), "cert:site-a");
        for allowed in ["site-a", "site-a.0", "site-a.gpu.3"] {
            assert!(site.check_worker_id(allowed).is_ok(), "{allowed}");
        }
        for refused in ["site-b", "site-ab", "site-a-2", "site", "x.site-a", ""] {
            let Forbidden(message) = site.check_worker_id(refused).unwrap_err();
            assert!(message.contains("CN=site-a"), "{refused}: {message}");
        }
        // Tokens carry no subject to bind to.
        assert!(Caller::worker_token().check_worker_id("anything").is_ok());
        assert!(Caller::admin_token().check_worker_id("anything").is_ok());
    }

    #[test]
    fn only_the_registering_identity_acts_for_a_worker_and_an_admin_may_remove_it() {
        let (a, b) = (
            Caller::certificate("site-a", Role::Worker),
            Caller::certificate("site-b", Role::Worker),
        );
        let token = Caller::worker_token();
        assert!(a.check_acts_for("site-a", Some("cert:site-a")).is_ok());
        let Forbidden(message) = token
            .check_acts_for("site-a", Some("cert:site-a"))
            .unwrap_err();
        assert!(
            message.contains("registered by cert:site-a; worker-token may not"),
            "{message}"
        );
        assert!(b.check_may_remove("site-a", Some("cert:site-a")).is_err());
        assert!(
            token
                .check_may_remove("site-a", Some("cert:site-a"))
                .is_err()
        );
        // An admin may remove any worker, but not act for one it did not register.
        let admin = Caller::certificate("diloco-operator", Role::Admin);
        assert!(
            admin
                .check_may_remove("site-a", Some("cert:site-a"))
                .is_ok()
        );
        assert!(
            Caller::admin_token()
                .check_may_remove("w", Some("worker-token"))
                .is_ok()
        );
        assert!(
            Caller::admin_token()
                .check_acts_for("w", Some("worker-token"))
                .is_err()
        );
        // An unowned (restored, pre-owner checkpoint) worker is anyone's to claim whose
        // certificate allows the id.
        assert!(b.check_acts_for("site-b.1", None).is_ok());
        assert!(b.check_acts_for("site-a", None).is_err());
        assert!(token.check_acts_for("site-a", None).is_ok());
    }
}
