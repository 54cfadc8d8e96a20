//! The console's access to one server: a Role in the server's namespace that allows only `get`
//! on exactly the console's client certificate Secret (`resourceNames`), and a RoleBinding of
//! it to the console's ServiceAccount. The console's own ClusterRole has no right on Secrets
//! at all, so it can read this one Secret per server and nothing else (not the workers' token,
//! not the CA key). Built only with a console configured and operator-owned TLS (no
//! certificate otherwise); pruned like any child when either goes away.

use k8s_openapi::api::rbac::v1::{PolicyRule, Role, RoleBinding, RoleRef, Subject};

use crate::names::Component;
use crate::reconcile::build::{BuildContext, Credentials, TlsSource};

/// API group of Roles and RoleBindings.
const RBAC_GROUP: &str = "rbac.authorization.k8s.io";

/// The Role and its RoleBinding, or nothing.
pub fn build_console_access(
    ctx: &BuildContext<'_>,
    credentials: &Credentials,
) -> Option<(Role, RoleBinding)> {
    let console = ctx.settings.console.as_ref()?;
    if !matches!(credentials.tls, TlsSource::Owned(_)) {
        return None;
    }
    let name = ctx.names.console_role();
    let role = Role {
        metadata: ctx.metadata(name.clone(), Component::ConsoleAccess),
        rules: Some(vec![PolicyRule {
            api_groups: Some(vec![String::new()]),
            resources: Some(vec!["secrets".into()]),
            resource_names: Some(vec![ctx.names.console_tls_secret()]),
            verbs: vec!["get".into()],
            ..PolicyRule::default()
        }]),
    };
    let binding = RoleBinding {
        metadata: ctx.metadata(name.clone(), Component::ConsoleAccess),
        role_ref: RoleRef {
            api_group: Some(RBAC_GROUP.into()),
            kind: "Role".into(),
            name,
        },
        subjects: Some(vec![Subject {
            kind: "ServiceAccount".into(),
            name: console.service_account.clone(),
            namespace: Some(console.namespace.clone()),
            api_group: None,
        }]),
    };
    Some((role, binding))
}
