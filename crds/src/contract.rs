//! The resource in the contract's terms: the one place where the CRD's enums and types meet
//! the ones the operator, the coordinator and the workers share ([`diloco_contract`]).
//!
//! The CRD keeps types of its own because their docs and schema are what `kubectl explain`
//! shows; every mapping is an exhaustive `match`, so a variant added on either side fails to
//! compile here until it is mapped, and the tests check that both sides spell each value
//! alike.

use diloco_contract::config;
use diloco_contract::credentials;
use diloco_contract::wire::dtype;

use crate::{Device, Endpoints, OuterOptimizer, TrainingMode, WireDtype};

impl From<Device> for config::Device {
    fn from(device: Device) -> Self {
        match device {
            Device::Auto => Self::Auto,
            Device::Cpu => Self::Cpu,
            Device::Cuda => Self::Cuda,
        }
    }
}

impl From<TrainingMode> for config::TrainingMode {
    fn from(mode: TrainingMode) -> Self {
        match mode {
            TrainingMode::Sync => Self::Sync,
            TrainingMode::Async => Self::Async,
        }
    }
}

impl From<WireDtype> for dtype::WireDtype {
    fn from(dtype: WireDtype) -> Self {
        match dtype {
            WireDtype::Bf16 => Self::Bf16,
            WireDtype::Fp32 => Self::Fp32,
        }
    }
}

impl From<&OuterOptimizer> for config::OuterOptimizer {
    fn from(optimizer: &OuterOptimizer) -> Self {
        let OuterOptimizer {
            lr,
            momentum,
            nesterov,
        } = *optimizer;
        Self {
            lr,
            momentum,
            nesterov,
        }
    }
}

impl From<credentials::Endpoints> for Endpoints {
    fn from(endpoints: credentials::Endpoints) -> Self {
        let credentials::Endpoints { control, bulk } = endpoints;
        Self {
            control: Some(control),
            bulk,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Serialize;

    fn name(value: impl Serialize) -> serde_json::Value {
        serde_json::to_value(value).unwrap()
    }

    /// A value written in a `DiLoCoServer` reaches the coordinator's configuration under the
    /// same name (the docs describe one set of names).
    #[test]
    fn every_enum_value_is_spelled_alike_in_the_crd_and_the_contract() {
        for device in [Device::Auto, Device::Cpu, Device::Cuda] {
            assert_eq!(name(device), name(config::Device::from(device)));
        }
        for mode in [TrainingMode::Sync, TrainingMode::Async] {
            assert_eq!(name(mode), name(config::TrainingMode::from(mode)));
        }
        for dtype in [WireDtype::Bf16, WireDtype::Fp32] {
            assert_eq!(name(dtype), name(dtype::WireDtype::from(dtype)));
        }
    }

    /// The CRD's defaults are the coordinator's defaults.
    #[test]
    fn the_outer_optimizer_and_its_defaults_carry_over() {
        assert_eq!(
            config::OuterOptimizer::from(&OuterOptimizer::default()),
            config::OuterOptimizer::default()
        );
        let custom = OuterOptimizer {
            lr: 0.5,
            momentum: 0.0,
            nesterov: false,
        };
        assert_eq!(
            name(config::OuterOptimizer::from(&custom)),
            serde_json::json!({"lr": 0.5, "momentum": 0.0, "nesterov": false})
        );
    }

    #[test]
    fn endpoints_in_status_are_the_bundle_s_endpoints() {
        let endpoints = Endpoints::from(credentials::Endpoints {
            control: "https://llm-control.ml.svc:8512".into(),
            bulk: None,
        });
        assert_eq!(
            endpoints.control.as_deref(),
            Some("https://llm-control.ml.svc:8512")
        );
        assert_eq!(endpoints.bulk, None);
    }
}
