//! The control and bulk Services, and the URLs workers use to reach them.

use k8s_openapi::api::core::v1::{Service, ServicePort, ServiceSpec as CoreServiceSpec};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use diloco_contract::credentials::Endpoints;
use diloco_crds::ServiceSpec;

use crate::names::{BULK_PORT_NAME, CONTROL_PORT_NAME, Component};
use crate::reconcile::build::BuildContext;

/// In-cluster URLs (Service DNS names) of the control and bulk planes: the bundle's
/// `endpoints.json`, the coordinator's advertised bulk URL and `status.endpoints`.
pub fn endpoints(ctx: &BuildContext<'_>, tls: bool) -> Endpoints {
    let spec = &ctx.server.spec;
    let host = |service: String| format!("{service}.{}.svc", ctx.namespace);
    let scheme = |tls: bool| if tls { "https" } else { "http" };
    Endpoints {
        control: format!(
            "{}://{}:{}",
            scheme(tls),
            host(ctx.names.control_service()),
            spec.control.port
        ),
        bulk: spec.bulk.enabled.then(|| {
            format!(
                "{}://{}:{}",
                scheme(tls && spec.bulk.tls),
                host(ctx.names.bulk_service()),
                spec.bulk.port
            )
        }),
    }
}

/// The Service in front of the control plane.
pub fn build_control_service(ctx: &BuildContext<'_>) -> Service {
    let spec = &ctx.server.spec;
    service(
        ctx,
        ctx.names.control_service(),
        Component::Control,
        &spec.control.service,
        CONTROL_PORT_NAME,
        spec.control.port,
    )
}

/// The Service in front of the bulk plane.
pub fn build_bulk_service(ctx: &BuildContext<'_>) -> Service {
    let spec = &ctx.server.spec;
    service(
        ctx,
        ctx.names.bulk_service(),
        Component::Bulk,
        &spec.bulk.service,
        BULK_PORT_NAME,
        spec.bulk.port,
    )
}

fn service(
    ctx: &BuildContext<'_>,
    name: String,
    component: Component,
    settings: &ServiceSpec,
    port_name: &str,
    port: i32,
) -> Service {
    let mut metadata = ctx.metadata(name, component);
    if !settings.annotations.is_empty() {
        metadata.annotations = Some(settings.annotations.clone());
    }
    Service {
        metadata,
        spec: Some(CoreServiceSpec {
            type_: Some(settings.type_.as_str().to_string()),
            selector: Some(ctx.names.selector_labels(Component::Coordinator)),
            ports: Some(vec![ServicePort {
                name: Some(port_name.to_string()),
                port,
                target_port: Some(IntOrString::String(port_name.to_string())),
                protocol: Some("TCP".into()),
                ..ServicePort::default()
            }]),
            load_balancer_source_ranges: (!settings.load_balancer_source_ranges.is_empty())
                .then(|| settings.load_balancer_source_ranges.clone()),
            // The coordinator answers only when it is ready; do not route before.
            publish_not_ready_addresses: Some(false),
            ..CoreServiceSpec::default()
        }),
        ..Service::default()
    }
}
