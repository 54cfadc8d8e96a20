//! The coordinator's configuration file (`docs/coordinator.md`), in a ConfigMap: the
//! contract's [`Config`] filled in from the spec, so a field the coordinator does not know
//! cannot be rendered. It names only mounted file paths: no credential is ever in it.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;

use diloco_contract::config::{
    AuditConfig, AuthConfig, BulkConfig, CheckpointConfig, Config, MetricsConfig, ModelConfig,
    TlsConfig, TrainingConfig,
};
use diloco_contract::credentials::{CA_CERT, TLS_CERT, TLS_KEY};
use k8s_openapi::api::core::v1::ConfigMap;

use diloco_contract::wire::frame::PayloadFormat;
use diloco_crds::{AuthMode, ClientAuth, DiLoCoServerSpec, WireFormat};

use crate::error::{Error, Result};
use crate::names::{CLIENTS_KEY, CONFIG_KEY, Component, paths};
use crate::reconcile::build::clients::client_list;
use crate::reconcile::build::services::endpoints;
use crate::reconcile::build::{BuildContext, Credentials, TlsSource};

/// The ConfigMap holding `coordinator.yaml`.
pub fn coordinator_config(ctx: &BuildContext<'_>, credentials: &Credentials) -> Result<ConfigMap> {
    let config = render(ctx, credentials)?;
    // Through a JSON value, whose keys are sorted: the file reads the same whatever order
    // the types declare their fields in (and so does its hash, which rolls the pod).
    let value =
        serde_json::to_value(&config).map_err(Error::serialize("the coordinator configuration"))?;
    let yaml = serde_norway::to_string(&value)
        .map_err(Error::serialize("the coordinator configuration"))?;
    Ok(ConfigMap {
        metadata: ctx.metadata(ctx.names.config_map(), Component::Config),
        data: Some(BTreeMap::from([(CONFIG_KEY.to_string(), yaml)])),
        ..ConfigMap::default()
    })
}

/// The coordinator's configuration for this server. Every value comes from the spec, the
/// mount paths or the contract's defaults (limits).
pub fn render(ctx: &BuildContext<'_>, credentials: &Credentials) -> Result<Config> {
    let spec = &ctx.server.spec;
    let tls = credentials.tls.enabled();
    let bulk = if spec.bulk.enabled {
        Some(BulkConfig {
            listen: any_address("bulk.port", spec.bulk.port)?,
            tls: tls && spec.bulk.tls,
            auth: tls && spec.bulk.tls && spec.bulk.auth && spec.auth.mode == AuthMode::Token,
            advertise_url: endpoints(ctx, tls).bulk,
            // The spec chose a cleartext bulk plane (`bulk.tls: false` or TLS off): say so
            // explicitly, or the coordinator refuses a cleartext non-loopback listener.
            insecure: !(tls && spec.bulk.tls),
        })
    } else {
        None
    };
    Ok(Config {
        listen: any_address("control.port", spec.control.port)?,
        device: spec.device.into(),
        model: model(spec),
        training: training(spec)?,
        checkpoint: CheckpointConfig {
            dir: Some(PathBuf::from(format!("{}/checkpoints", paths::STATE_DIR))),
            every_rounds: count(
                "training.checkpointEveryRounds",
                spec.training.checkpoint_every_rounds,
            )?,
            ..CheckpointConfig::default()
        },
        limits: Default::default(),
        auth: auth(ctx, credentials),
        audit: AuditConfig {
            path: Some(PathBuf::from(format!("{}/audit.jsonl", paths::STATE_DIR))),
        },
        tls: tls.then(|| tls_files(spec, credentials)),
        bulk,
        metrics: Some(MetricsConfig {
            listen: any_address("metrics.port", spec.metrics.port)?,
        }),
        // The listener is not on loopback in a pod; without TLS the coordinator needs this
        // explicit acknowledgement (the spec said `tls.mode: disabled`).
        insecure: !tls,
    })
}

/// `spec.model`'s paths as the coordinator sees them: inside the read-only model mount when
/// the spec names a claim, else in the image (the CRD's rules make them relative or absolute
/// accordingly).
fn model(spec: &DiLoCoServerSpec) -> ModelConfig {
    let Some(model) = &spec.model else {
        return ModelConfig::default();
    };
    let path = |relative: &String| match model.claim_name {
        Some(_) => PathBuf::from(paths::MODEL_DIR).join(relative),
        None => PathBuf::from(relative),
    };
    ModelConfig {
        initial_parameters: model.initial_parameters.as_ref().map(path),
        definition_dir: model.definition.as_ref().map(path),
    }
}

fn training(spec: &DiLoCoServerSpec) -> Result<TrainingConfig> {
    let training = &spec.training;
    Ok(TrainingConfig {
        mode: training.mode.into(),
        outer_optimizer: (&training.outer_optimizer).into(),
        min_workers: count("training.minWorkers", training.min_workers)?,
        sync_timeout_seconds: count("training.syncTimeoutSeconds", training.sync_timeout_seconds)?,
        heartbeat_timeout_seconds: count(
            "training.heartbeatTimeoutSeconds",
            training.heartbeat_timeout_seconds,
        )?,
        sync_every: count("training.syncEvery", training.sync_every)?,
        upload_dtype: training.upload_dtype.into(),
        download_dtype: training.download_dtype.into(),
        token_budget: match training.token_budget {
            None => 0,
            Some(budget) => u64::try_from(budget).map_err(|_| {
                Error::InvalidSpec(format!("training.tokenBudget {budget} is out of range"))
            })?,
        },
        wire_format: match training.wire_format {
            WireFormat::Safetensors => PayloadFormat::Safetensors,
            WireFormat::Pickle => PayloadFormat::Pickle,
        },
    })
}

fn auth(ctx: &BuildContext<'_>, credentials: &Credentials) -> AuthConfig {
    let clients_file = client_list(ctx, credentials)
        .map(|_| PathBuf::from(format!("{}/{CLIENTS_KEY}", paths::CLIENTS_DIR)));
    match ctx.server.spec.auth.mode {
        AuthMode::Token => AuthConfig {
            token_dir: Some(PathBuf::from(paths::TOKEN_DIR)),
            admin_token_dir: credentials
                .admin_token
                .as_ref()
                .map(|_| PathBuf::from(paths::ADMIN_TOKEN_DIR)),
            clients_file,
            disabled: false,
        },
        AuthMode::None => AuthConfig {
            disabled: true,
            ..AuthConfig::default()
        },
    }
}

/// The mounted server certificate, and the CA whose client certificates authenticate (when
/// `tls.clientAuth: optional` and there is one).
fn tls_files(spec: &DiLoCoServerSpec, credentials: &Credentials) -> TlsConfig {
    let in_dir = |dir: &str, file: &str| PathBuf::from(format!("{dir}/{file}"));
    let client_ca = if spec.tls.client_auth == ClientAuth::Optional {
        match &credentials.tls {
            TlsSource::Referenced {
                client_ca_secret: Some(_),
                ..
            } => Some(in_dir(paths::CLIENT_CA_DIR, CA_CERT)),
            _ => credentials
                .tls
                .trust_bundle()
                .map(|_| in_dir(paths::TLS_DIR, CA_CERT)),
        }
    } else {
        None
    };
    TlsConfig {
        cert: in_dir(paths::TLS_DIR, TLS_CERT),
        key: in_dir(paths::TLS_DIR, TLS_KEY),
        client_ca,
    }
}

/// Every interface, on the spec's `port`.
fn any_address(field: &str, port: i32) -> Result<SocketAddr> {
    let port = u16::try_from(port)
        .map_err(|_| Error::InvalidSpec(format!("{field} {port} is not a TCP port")))?;
    Ok(SocketAddr::from((Ipv4Addr::UNSPECIFIED, port)))
}

/// A count or a number of seconds from the spec (the schema keeps them non-negative; an
/// object written around the schema is refused here, not wrapped around).
fn count<T: TryFrom<i32>>(field: &str, value: i32) -> Result<T> {
    T::try_from(value).map_err(|_| Error::InvalidSpec(format!("{field} {value} is out of range")))
}
