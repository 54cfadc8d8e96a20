//! The coordinator's configuration file (`docs/coordinator.md`), in a ConfigMap. It names
//! only mounted file paths: no credential is ever in it.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ConfigMap;
use serde_json::json;

use diloco_crds::{AuthMode, ClientAuth, Device, TrainingMode, WireDtype};

use crate::error::{Error, Result};
use crate::names::{CLIENTS_KEY, CONFIG_KEY, Component, paths};
use crate::reconcile::build::clients::client_list;
use crate::reconcile::build::services::endpoints;
use crate::reconcile::build::{BuildContext, Credentials, TlsSource};

/// The ConfigMap holding `coordinator.yaml`.
pub fn coordinator_config(ctx: &BuildContext<'_>, credentials: &Credentials) -> Result<ConfigMap> {
    let spec = &ctx.server.spec;
    let training = &spec.training;
    let tls = credentials.tls.enabled();
    let any = |port: i32| format!("0.0.0.0:{port}");
    let mut config = json!({
        "listen": any(spec.control.port),
        "device": match spec.device {
            Device::Auto => "auto",
            Device::Cpu => "cpu",
            Device::Cuda => "cuda",
        },
        "training": {
            "mode": match training.mode {
                TrainingMode::Sync => "sync",
                TrainingMode::Async => "async",
            },
            "outer_optimizer": {
                "lr": training.outer_optimizer.lr,
                "momentum": training.outer_optimizer.momentum,
                "nesterov": training.outer_optimizer.nesterov,
            },
            "min_workers": training.min_workers,
            "sync_timeout_seconds": training.sync_timeout_seconds,
            "heartbeat_timeout_seconds": training.heartbeat_timeout_seconds,
            "sync_every": training.sync_every,
            "upload_dtype": dtype(training.upload_dtype),
            "download_dtype": dtype(training.download_dtype),
        },
        "checkpoint": {
            "dir": format!("{}/checkpoints", paths::STATE_DIR),
            "every_rounds": training.checkpoint_every_rounds,
        },
        "audit": {"path": format!("{}/audit.jsonl", paths::STATE_DIR)},
        "metrics": {"listen": any(spec.metrics.port)},
    });
    config["auth"] = match spec.auth.mode {
        AuthMode::Token => json!({"token_dir": paths::TOKEN_DIR}),
        AuthMode::None => json!({"disabled": true}),
    };
    if credentials.admin_token.is_some() {
        config["auth"]["admin_token_dir"] = paths::ADMIN_TOKEN_DIR.into();
    }
    if client_list(ctx, credentials).is_some() {
        config["auth"]["clients_file"] = format!("{}/{CLIENTS_KEY}", paths::CLIENTS_DIR).into();
    }
    if tls {
        let mut files = json!({
            "cert": format!("{}/tls.crt", paths::TLS_DIR),
            "key": format!("{}/tls.key", paths::TLS_DIR),
        });
        if spec.tls.client_auth == ClientAuth::Optional {
            let client_ca = match &credentials.tls {
                TlsSource::Referenced {
                    client_ca_secret: Some(_),
                    ..
                } => Some(format!("{}/ca.crt", paths::CLIENT_CA_DIR)),
                _ => credentials
                    .tls
                    .trust_bundle()
                    .map(|_| format!("{}/ca.crt", paths::TLS_DIR)),
            };
            if let Some(client_ca) = client_ca {
                files["client_ca"] = client_ca.into();
            }
        }
        config["tls"] = files;
    } else {
        // The listener is not on loopback in a pod; without TLS the coordinator needs this
        // explicit acknowledgement (the spec said `tls.mode: disabled`).
        config["insecure"] = true.into();
    }
    if spec.bulk.enabled {
        config["bulk"] = json!({
            "listen": any(spec.bulk.port),
            "tls": tls && spec.bulk.tls,
            "auth": tls && spec.bulk.tls && spec.bulk.auth && spec.auth.mode == AuthMode::Token,
            "advertise_url": endpoints(ctx, tls).bulk,
            // The spec chose a cleartext bulk plane (`bulk.tls: false` or TLS off): say so
            // explicitly, or the coordinator refuses a cleartext non-loopback listener.
            "insecure": !(tls && spec.bulk.tls),
        });
    }
    let yaml = serde_norway::to_string(&config)
        .map_err(Error::serialize("the coordinator configuration"))?;
    Ok(ConfigMap {
        metadata: ctx.metadata(ctx.names.config_map(), Component::Config),
        data: Some(BTreeMap::from([(CONFIG_KEY.to_string(), yaml)])),
        ..ConfigMap::default()
    })
}

fn dtype(dtype: WireDtype) -> &'static str {
    match dtype {
        WireDtype::Bf16 => "bf16",
        WireDtype::Fp32 => "fp32",
    }
}
