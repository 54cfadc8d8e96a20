//! Roles, and the current-client list (`auth.clients_file`, [`CLIENTS_FILE`] in the
//! operator's `<server>-clients` ConfigMap): which client certificates, by subject common
//! name, may call the coordinator, and with which role.
//!
//! ```json
//! {"clients": [{"name": "site-a", "role": "worker"}, {"name": "diloco-operator", "role": "admin"}]}
//! ```

use std::fmt;

use serde::{Deserialize, Serialize};

/// Name of the client list file (its ConfigMap key).
pub const CLIENTS_FILE: &str = "clients.json";

/// What a caller may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Everything, control actions included.
    Admin,
    /// Everything but control actions: register, heartbeat, submit, download.
    Worker,
}

impl Role {
    /// Its name in the client list.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Worker => "worker",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The client list file.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientsFile {
    /// The allowed clients (a name at most once).
    pub clients: Vec<ClientEntry>,
}

/// An allowed client.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientEntry {
    /// The subject common name of its certificate.
    pub name: String,
    /// What it may do.
    pub role: Role,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_client_list_is_names_with_roles() {
        let file = ClientsFile {
            clients: vec![ClientEntry {
                name: "diloco-operator".into(),
                role: Role::Admin,
            }],
        };
        assert_eq!(
            serde_json::to_string(&file).unwrap(),
            r#"{"clients":[{"name":"diloco-operator","role":"admin"}]}"#
        );
        assert!(
            serde_json::from_str::<ClientsFile>(r#"{"clients": [{"name": "a", "role": "root"}]}"#)
                .is_err()
        );
    }
}
