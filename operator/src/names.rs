//! Names, labels and mount paths of everything the operator creates for a `DiLoCoServer`.
//! Child names are `<server>-<role>`, so `kubectl get all -l diloco.dev/server=<server>`
//! shows them together.

use std::collections::BTreeMap;

use diloco_crds::SERVER_LABEL;

/// `app.kubernetes.io/name` of every child.
pub const APP_NAME: &str = "diloco";
/// `app.kubernetes.io/managed-by` of every child; the operator only ever deletes objects that
/// carry it.
pub const MANAGED_BY: &str = "diloco-operator";

/// Annotation on a credential Secret: the rotation nonce it was last minted for, so a
/// rotation happens once even if the operator dies before writing status.
pub const HANDLED_NONCE_ANNOTATION: &str = "diloco.dev/handled-nonce";
/// Annotation on a leaf certificate Secret: fingerprint of the CA that signed it.
pub const ISSUER_ANNOTATION: &str = "diloco.dev/issuer-sha256";
/// Annotation on a leaf certificate Secret: hash of the names it was issued for.
pub const SUBJECT_ANNOTATION: &str = "diloco.dev/subject-sha256";
/// Annotation on the pod template: hash of the coordinator config, so a config change rolls
/// the pod (credentials are reloaded live and are deliberately not part of it).
pub const CONFIG_HASH_ANNOTATION: &str = "diloco.dev/config-sha256";

/// Where the pod mounts what (the coordinator config refers to these paths).
pub mod paths {
    /// The ConfigMap with `coordinator.yaml`.
    pub const CONFIG_DIR: &str = "/etc/diloco/config";
    /// The coordinator config file.
    pub const CONFIG_FILE: &str = "/etc/diloco/config/coordinator.yaml";
    /// The bearer token Secret (`token`, `previous-token`, `previous-valid-until`).
    pub const TOKEN_DIR: &str = "/var/run/diloco/token";
    /// The admin bearer token Secret (same keys).
    pub const ADMIN_TOKEN_DIR: &str = "/var/run/diloco/admin-token";
    /// The current client list (`clients.json`), reloaded live by the coordinator.
    pub const CLIENTS_DIR: &str = "/etc/diloco/clients";
    /// The dedicated client CA (`tls.clientCASecretRef`).
    pub const CLIENT_CA_DIR: &str = "/etc/diloco/client-ca";
    /// The server certificate Secret (`tls.crt`, `tls.key`, `ca.crt`).
    pub const TLS_DIR: &str = "/etc/diloco/tls";
    /// The audit and checkpoint volume.
    pub const STATE_DIR: &str = "/var/lib/diloco";
    /// The model claim (`spec.model.claimName`), read-only.
    pub const MODEL_DIR: &str = "/var/run/diloco/model";
    /// Scratch space (the root filesystem is read-only).
    pub const TMP_DIR: &str = "/tmp";
}

/// Common name of the operator's own client certificate.
pub const OPERATOR_CLIENT_NAME: &str = "diloco-operator";
/// Key of the coordinator config in its ConfigMap.
pub const CONFIG_KEY: &str = "coordinator.yaml";
/// Key of the client list in its ConfigMap.
pub use diloco_contract::clients::CLIENTS_FILE as CLIENTS_KEY;
/// Container, port and volume names in the coordinator pod.
pub const CONTAINER_NAME: &str = "coordinator";
pub const CONTROL_PORT_NAME: &str = "control";
pub const BULK_PORT_NAME: &str = "bulk";
pub const METRICS_PORT_NAME: &str = "metrics";

/// What a child is for; its `app.kubernetes.io/component` label.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Component {
    Coordinator,
    Control,
    Bulk,
    Metrics,
    Egress,
    Token,
    AdminToken,
    CertificateAuthority,
    ServerCertificate,
    OperatorCertificate,
    ConsoleCertificate,
    ConsoleAccess,
    WorkerCredentials,
    ClientCredentials,
    Config,
    Clients,
    State,
}

impl Component {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Coordinator => "coordinator",
            Self::Control => "control",
            Self::Bulk => "bulk",
            Self::Metrics => "metrics",
            Self::Egress => "egress",
            Self::Token => "token",
            Self::AdminToken => "admin-token",
            Self::CertificateAuthority => "certificate-authority",
            Self::ServerCertificate => "server-certificate",
            Self::OperatorCertificate => "operator-certificate",
            Self::ConsoleCertificate => "console-certificate",
            Self::ConsoleAccess => "console-access",
            Self::WorkerCredentials => "worker-credentials",
            Self::ClientCredentials => "client-credentials",
            Self::Config => "config",
            Self::Clients => "clients",
            Self::State => "state",
        }
    }
}

/// The names of one server's children.
#[derive(Clone, Debug)]
pub struct ChildNames {
    server: String,
}

impl ChildNames {
    /// Names for the server called `server`.
    pub fn new(server: &str) -> Self {
        Self {
            server: server.to_string(),
        }
    }

    fn child(&self, suffix: &str) -> String {
        format!("{}-{suffix}", self.server)
    }

    pub fn server(&self) -> &str {
        &self.server
    }
    pub fn token_secret(&self) -> String {
        self.child("token")
    }
    pub fn admin_token_secret(&self) -> String {
        self.child("admin-token")
    }
    pub fn ca_secret(&self) -> String {
        self.child("ca")
    }
    pub fn server_tls_secret(&self) -> String {
        self.child("server-tls")
    }
    pub fn operator_tls_secret(&self) -> String {
        self.child("operator-client-tls")
    }
    /// The console's client certificate (`<server>-console-client-tls`).
    pub fn console_tls_secret(&self) -> String {
        self.child(diloco_contract::console::CONSOLE_CLIENT_TLS_SUFFIX)
    }
    /// The Role and RoleBinding that let the console read [`Self::console_tls_secret`].
    pub fn console_role(&self) -> String {
        self.child("console")
    }
    pub fn worker_credentials_secret(&self) -> String {
        self.child("worker-credentials")
    }
    pub fn client_secret(&self, client: &str) -> String {
        self.child(&format!("client-{client}"))
    }
    pub fn config_map(&self) -> String {
        self.child("coordinator-config")
    }
    pub fn clients_config_map(&self) -> String {
        self.child("clients")
    }
    pub fn control_service(&self) -> String {
        self.child("control")
    }
    pub fn bulk_service(&self) -> String {
        self.child("bulk")
    }
    pub fn network_policy(&self, component: Component) -> String {
        self.child(component.as_str())
    }
    pub fn service_account(&self) -> String {
        self.child("coordinator")
    }
    pub fn deployment(&self) -> String {
        self.child("coordinator")
    }
    pub fn state_claim(&self) -> String {
        self.child("state")
    }

    /// Labels every child carries.
    pub fn labels(&self, component: Component) -> BTreeMap<String, String> {
        let mut labels = self.selector_labels(component);
        labels.insert("app.kubernetes.io/managed-by".into(), MANAGED_BY.into());
        labels.insert(SERVER_LABEL.into(), self.server.clone());
        labels
    }

    /// The subset that selects the coordinator pods (stable for the Deployment's lifetime).
    pub fn selector_labels(&self, component: Component) -> BTreeMap<String, String> {
        BTreeMap::from([
            ("app.kubernetes.io/name".into(), APP_NAME.into()),
            ("app.kubernetes.io/instance".into(), self.server.clone()),
            (
                "app.kubernetes.io/component".into(),
                component.as_str().into(),
            ),
        ])
    }

    /// The label selector listing every child the operator manages for this server.
    pub fn children_selector(&self) -> String {
        format!(
            "app.kubernetes.io/managed-by={MANAGED_BY},{SERVER_LABEL}={}",
            self.server
        )
    }
}
