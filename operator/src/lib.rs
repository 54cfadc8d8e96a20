//! diloco-operator: reconciles `DiLoCoServer` resources into the credentials, certificates,
//! Services, NetworkPolicies and coordinator Deployment a DiLoCo training run needs.
//!
//! The reconcile is a pipeline, one module per step: [`reconcile::load`] →
//! [`reconcile::validate`] → [`reconcile::credentials`] / [`reconcile::pki`] →
//! [`reconcile::build`] (pure) → [`reconcile::apply`] → [`reconcile::status`].

pub mod controller;
pub mod error;
pub mod leader_election;
pub mod metrics;
pub mod names;
pub mod pki;
pub mod reconcile;
pub mod settings;

pub use error::{Error, Result};
