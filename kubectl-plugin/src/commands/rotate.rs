//! `rotate-token NAME` and `rotate-certificates NAME`: set the rotation annotation to a fresh
//! nonce (the operator acts once on every new value, and records the value it handled in
//! status), and with `--wait` watch status until it has.

use std::time::{Duration, Instant};

use diloco_contract::console::Rotation;
use diloco_crds::{
    AuthMode, DiLoCoServer, ROTATE_CERTIFICATES_ANNOTATION, ROTATE_TOKEN_ANNOTATION, TlsMode,
};
use jiff::Timestamp;
use kube::ResourceExt;
use kube::api::{Api, Patch, PatchParams};
use serde_json::json;

use crate::cli::{GlobalArgs, RotateArgs};
use crate::commands::get_server;
use crate::error::{PluginError, Result, kube_error};
use crate::kube_access::Cluster;

/// How often `--wait` reads the status.
const POLL_INTERVAL: Duration = Duration::from_secs(1);

/// The annotation that asks for `what`.
pub fn annotation(what: Rotation) -> &'static str {
    match what {
        Rotation::Token => ROTATE_TOKEN_ANNOTATION,
        Rotation::Certificates => ROTATE_CERTIFICATES_ANNOTATION,
    }
}

/// A value the annotation has never had: the time of the request, to the nanosecond (and
/// told apart from the current value should the clock repeat itself).
pub fn fresh_nonce(current: Option<&str>, now: Timestamp) -> String {
    let nonce = now.to_string();
    if current == Some(nonce.as_str()) {
        format!("{nonce}-1")
    } else {
        nonce
    }
}

/// The nonce the operator last handled for `what`, from status.
pub fn handled_nonce(server: &DiLoCoServer, what: Rotation) -> Option<&str> {
    let status = server.status.as_ref()?;
    match what {
        Rotation::Token => status.token_rotation.as_ref()?.observed_nonce.as_deref(),
        Rotation::Certificates => status.certificates.as_ref()?.observed_nonce.as_deref(),
    }
}

/// Why `what` cannot be rotated on `server`, if it cannot; and what will happen if it can.
pub fn plan(server: &DiLoCoServer, what: Rotation, wait: bool) -> Result<String> {
    let namespace = server.namespace().unwrap_or_default();
    let name = server.name_any();
    let spec = &server.spec;
    match what {
        Rotation::Token => {
            if spec.auth.mode == AuthMode::None {
                return Err(PluginError::Usage(format!(
                    "{namespace}/{name} has spec.auth.mode none: there is no token to rotate"
                )));
            }
            if let Some(secret) = &spec.auth.token_secret_ref {
                if wait {
                    return Err(PluginError::Usage(format!(
                        "workers of {namespace}/{name} use your own token from Secret {}, which \
                         the operator never changes; it would rotate only the admin token, and \
                         status does not report that, so --wait cannot tell when it is done. \
                         Rotate the workers' token by updating that Secret.",
                        secret.name
                    )));
                }
                return Ok(format!(
                    "The operator will mint a new admin token for {namespace}/{name}. Workers \
                     use your own token from Secret {}, which it never changes: rotate that by \
                     updating the Secret.",
                    secret.name
                ));
            }
            Ok(format!(
                "The operator will mint a new worker token and admin token for \
                 {namespace}/{name}. The previous ones keep working for {} \
                 (spec.auth.rotationGracePeriod): workers that read the token from a file (a \
                 mounted bundle, DILOCO_TOKEN_FILE) pick up the new one; re-run `kubectl diloco \
                 credentials {name}` for bundles written outside the cluster.",
                spec.auth.rotation_grace_period
            ))
        }
        Rotation::Certificates => match spec.tls.mode {
            TlsMode::Operator => Ok(format!(
                "The operator will re-issue the leaf certificates of {namespace}/{name} (the \
                 server's, its own, the console's and every named client's) from the same CA. \
                 The coordinator reloads its certificate; workers that trust ca.crt keep \
                 working; named clients need their new Secret."
            )),
            TlsMode::Secret => Err(PluginError::Usage(format!(
                "{namespace}/{name} uses the certificate in Secret {} (spec.tls.mode secret): \
                 the operator issues none, so there is nothing for it to rotate; update that \
                 Secret instead",
                spec.tls.secret_name.as_deref().unwrap_or("<unset>")
            ))),
            TlsMode::Disabled => Err(PluginError::Usage(format!(
                "{namespace}/{name} has spec.tls.mode disabled: there are no certificates to \
                 rotate"
            ))),
        },
    }
}

/// Sets the annotation with a merge patch and, with `--wait`, waits for the operator.
pub async fn run(global: &GlobalArgs, args: &RotateArgs, what: Rotation) -> Result<()> {
    let cluster = Cluster::connect(global).await?;
    let namespace = cluster.namespace.clone();
    let name = &args.name;
    let server = get_server(&cluster, name).await?;
    let message = plan(&server, what, args.wait)?;
    let key = annotation(what);
    let nonce = fresh_nonce(
        server.annotations().get(key).map(String::as_str),
        Timestamp::now(),
    );
    println!("{message}");
    let patch = json!({"metadata": {"annotations": {key: nonce}}});
    Api::<DiLoCoServer>::namespaced(cluster.client.clone(), &namespace)
        .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .map_err(|e| kube_error(&format!("annotating DiLoCoServer {namespace}/{name}"), e))?;
    println!("Set {key}={nonce} on {namespace}/{name}.");
    if !args.wait {
        println!(
            "The operator handles it on its next reconcile; follow it with `kubectl diloco \
             rotate-{} {name} --wait` next time, or `kubectl diloco status {name}`.",
            what.name()
        );
        return Ok(());
    }

    let deadline = Instant::now() + args.timeout;
    loop {
        let server = get_server(&cluster, name).await?;
        if handled_nonce(&server, what) == Some(nonce.as_str()) {
            let status = server.status.unwrap_or_default();
            match what {
                Rotation::Token => println!(
                    "Done: token rotated at {}; the previous token is accepted until {}.",
                    status
                        .token_rotation
                        .as_ref()
                        .and_then(|t| t.rotated_at.as_deref())
                        .unwrap_or("<unknown>"),
                    status
                        .token_rotation
                        .as_ref()
                        .and_then(|t| t.previous_valid_until.as_deref())
                        .unwrap_or("<unknown>"),
                ),
                Rotation::Certificates => println!(
                    "Done: certificates re-issued; the server certificate is valid until {}.",
                    status
                        .certificates
                        .as_ref()
                        .and_then(|c| c.not_after.as_deref())
                        .unwrap_or("<unknown>"),
                ),
            }
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(PluginError::Timeout(format!(
                "the operator has not handled {key}={nonce} on {namespace}/{name} within {:?} \
                 (the annotation stays set; it acts on it when it next reconciles). Is the \
                 operator running? Check its events: kubectl get events -n {namespace} \
                 --field-selector involvedObject.name={name}",
                args.timeout
            )));
        }
        tokio::time::sleep(POLL_INTERVAL.min(deadline.saturating_duration_since(Instant::now())))
            .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server(spec: serde_json::Value) -> DiLoCoServer {
        serde_json::from_value(json!({
            "apiVersion": "diloco.dev/v1alpha1", "kind": "DiLoCoServer",
            "metadata": {"name": "llm", "namespace": "ml"},
            "spec": spec,
        }))
        .unwrap()
    }

    #[test]
    fn a_new_nonce_differs_from_the_current_value() {
        let now: Timestamp = "2026-12-03T20:00:00.123456789Z".parse().unwrap();
        assert_eq!(fresh_nonce(None, now), "2026-12-03T20:00:00.123456789Z");
        assert_eq!(
            fresh_nonce(Some("2026-12-03T20:00:00.123456789Z"), now),
            "2026-12-03T20:00:00.123456789Z-1"
        );
    }

    /// Rotating what the operator does not own is refused before anything is patched.
    #[test]
    fn rotating_what_the_operator_does_not_issue_is_refused() {
        let no_auth = server(json!({"image": "c:1", "auth": {"mode": "none"}}));
        let error = plan(&no_auth, Rotation::Token, false).unwrap_err();
        assert!(error.to_string().contains("no token to rotate"), "{error}");
        assert_eq!(error.exit_code(), crate::error::EXIT_USAGE);

        let own_cert =
            server(json!({"image": "c:1", "tls": {"mode": "secret", "secretName": "mine"}}));
        let error = plan(&own_cert, Rotation::Certificates, false).unwrap_err();
        assert!(error.to_string().contains("Secret mine"), "{error}");

        let own_token =
            server(json!({"image": "c:1", "auth": {"tokenSecretRef": {"name": "tok"}}}));
        assert!(
            plan(&own_token, Rotation::Token, false)
                .unwrap()
                .contains("Secret tok")
        );
        assert!(plan(&own_token, Rotation::Token, true).is_err());
    }

    #[test]
    fn the_plan_says_how_long_the_old_token_works() {
        let default = server(json!({"image": "c:1"}));
        let text = plan(&default, Rotation::Token, true).unwrap();
        assert!(
            text.contains(&format!(
                "keep working for {}",
                default.spec.auth.rotation_grace_period
            )),
            "{text}"
        );
        assert!(
            plan(&default, Rotation::Certificates, true)
                .unwrap()
                .contains("re-issue")
        );
    }

    #[test]
    fn the_handled_nonce_is_read_per_rotation() {
        let mut s = server(json!({"image": "c:1"}));
        s.status = Some(
            serde_json::from_value(json!({
                "tokenRotation": {"observedNonce": "a"},
                "certificates": {"observedNonce": "b"}
            }))
            .unwrap(),
        );
        assert_eq!(handled_nonce(&s, Rotation::Token), Some("a"));
        assert_eq!(handled_nonce(&s, Rotation::Certificates), Some("b"));
    }
}
