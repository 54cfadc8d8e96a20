//! The credential Secrets: the workers' and the admin bearer tokens, CA, server and client
//! certificates, and the worker bundles workers mount (`token`, `ca.crt`, `endpoints.json`;
//! a named client's bundle has its certificate instead of the shared token).

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;

use crate::error::{Error, Result};
use crate::names::{Component, HANDLED_NONCE_ANNOTATION, ISSUER_ANNOTATION, SUBJECT_ANNOTATION};
use crate::reconcile::build::services::endpoints;
use crate::reconcile::build::{BuildContext, Credentials, TlsSource, TokenSource};
use crate::reconcile::certificates::{
    CA_CERT_KEY, LeafRole, PREVIOUS_CA_VALID_UNTIL_ANNOTATION, StoredLeaf, TLS_CERT_KEY,
    TLS_KEY_KEY,
};
use crate::reconcile::token::{ROTATED_AT_ANNOTATION, TOKEN_KEY, TokenPlan};

/// Type of the certificate Secrets.
pub const TLS_SECRET_TYPE: &str = "kubernetes.io/tls";
/// Key of the endpoints file in worker bundles.
pub use diloco_contract::credentials::ENDPOINTS as ENDPOINTS_KEY;

/// Every credential Secret the operator owns for the server.
pub fn build_secrets(ctx: &BuildContext<'_>, credentials: &Credentials) -> Result<Vec<Secret>> {
    let names = &ctx.names;
    let mut secrets = Vec::new();
    if let TokenSource::Owned(plan) = &credentials.token {
        secrets.push(token_secret(
            ctx,
            names.token_secret(),
            Component::Token,
            plan,
        ));
    }
    if let Some(plan) = &credentials.admin_token {
        secrets.push(token_secret(
            ctx,
            names.admin_token_secret(),
            Component::AdminToken,
            plan,
        ));
    }
    if let TlsSource::Owned(pki) = &credentials.tls {
        let mut annotations = BTreeMap::new();
        if let Some(nonce) = &pki.ca.handled_nonce {
            annotations.insert(HANDLED_NONCE_ANNOTATION.to_string(), nonce.clone());
        }
        if let Some(until) = pki.ca.previous_valid_until {
            annotations.insert(
                PREVIOUS_CA_VALID_UNTIL_ANNOTATION.to_string(),
                until.to_string(),
            );
        }
        secrets.push(secret(
            ctx,
            names.ca_secret(),
            Component::CertificateAuthority,
            TLS_SECRET_TYPE,
            annotations,
            BTreeMap::from([
                (TLS_CERT_KEY.into(), pki.ca.keyed.cert_pem.clone()),
                (TLS_KEY_KEY.into(), pki.ca.keyed.key_pem.clone()),
                (CA_CERT_KEY.into(), pki.ca.trust_bundle.clone()),
            ]),
        ));
        for (role, leaf) in &pki.leaves {
            let (name, component, extra) = match role {
                LeafRole::Server => (
                    names.server_tls_secret(),
                    Component::ServerCertificate,
                    BTreeMap::new(),
                ),
                LeafRole::Operator => (
                    names.operator_tls_secret(),
                    Component::OperatorCertificate,
                    BTreeMap::new(),
                ),
                LeafRole::Console => (
                    names.console_tls_secret(),
                    Component::ConsoleCertificate,
                    BTreeMap::new(),
                ),
                // The certificate is the credential: the shared bearer token would let a
                // removed client go on as an anonymous worker.
                LeafRole::Client(client) => (
                    names.client_secret(client),
                    Component::ClientCredentials,
                    worker_bundle(ctx, credentials, false)?,
                ),
            };
            let mut data = extra;
            data.insert(TLS_CERT_KEY.into(), leaf.keyed.cert_pem.clone());
            data.insert(TLS_KEY_KEY.into(), leaf.keyed.key_pem.clone());
            data.insert(CA_CERT_KEY.into(), pki.ca.trust_bundle.clone());
            secrets.push(secret(
                ctx,
                name,
                component,
                TLS_SECRET_TYPE,
                leaf_annotations(leaf),
                data,
            ));
        }
    }
    secrets.push(secret(
        ctx,
        names.worker_credentials_secret(),
        Component::WorkerCredentials,
        "Opaque",
        BTreeMap::new(),
        worker_bundle(ctx, credentials, true)?,
    ));
    Ok(secrets)
}

/// A bearer token Secret the operator owns, with its rotation annotations.
fn token_secret(
    ctx: &BuildContext<'_>,
    name: String,
    component: Component,
    plan: &TokenPlan,
) -> Secret {
    let mut annotations = BTreeMap::new();
    if let Some(nonce) = &plan.handled_nonce {
        annotations.insert(HANDLED_NONCE_ANNOTATION.to_string(), nonce.clone());
    }
    if let Some(at) = plan.rotated_at {
        annotations.insert(ROTATED_AT_ANNOTATION.to_string(), at.to_string());
    }
    secret(
        ctx,
        name,
        component,
        "Opaque",
        annotations,
        plan.data.clone(),
    )
}

/// What a worker needs: the CA bundle, where to connect, and (`with_token`) the token.
fn worker_bundle(
    ctx: &BuildContext<'_>,
    credentials: &Credentials,
    with_token: bool,
) -> Result<BTreeMap<String, String>> {
    let mut data = BTreeMap::new();
    match &credentials.token {
        _ if !with_token => {}
        TokenSource::Disabled => {}
        TokenSource::Owned(plan) => {
            data.insert(TOKEN_KEY.to_string(), plan.token().to_string());
        }
        TokenSource::Referenced { token, .. } => {
            data.insert(TOKEN_KEY.to_string(), token.clone());
        }
    }
    if let Some(bundle) = credentials.tls.trust_bundle() {
        data.insert(CA_CERT_KEY.to_string(), bundle.to_string());
    }
    let json = serde_json::to_string_pretty(&endpoints(ctx, credentials.tls.enabled()))
        .map_err(Error::serialize(ENDPOINTS_KEY))?;
    data.insert(ENDPOINTS_KEY.to_string(), json + "\n");
    Ok(data)
}

fn leaf_annotations(leaf: &StoredLeaf) -> BTreeMap<String, String> {
    let mut annotations = BTreeMap::from([
        (
            ISSUER_ANNOTATION.to_string(),
            leaf.issuer_fingerprint.clone(),
        ),
        (
            SUBJECT_ANNOTATION.to_string(),
            leaf.subject_fingerprint.clone(),
        ),
    ]);
    if let Some(nonce) = &leaf.handled_nonce {
        annotations.insert(HANDLED_NONCE_ANNOTATION.to_string(), nonce.clone());
    }
    annotations
}

fn secret(
    ctx: &BuildContext<'_>,
    name: String,
    component: Component,
    type_: &str,
    annotations: BTreeMap<String, String>,
    data: BTreeMap<String, String>,
) -> Secret {
    let mut metadata = ctx.metadata(name, component);
    if !annotations.is_empty() {
        metadata.annotations = Some(annotations);
    }
    Secret {
        metadata,
        type_: Some(type_.to_string()),
        data: Some(
            data.into_iter()
                .map(|(k, v)| (k, ByteString(v.into_bytes())))
                .collect(),
        ),
        ..Secret::default()
    }
}
