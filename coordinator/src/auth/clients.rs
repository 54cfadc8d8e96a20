//! The current-client allowlist (`auth.clients_file`): which client certificates, by subject
//! common name, may call the coordinator, and with which role.
//!
//! ```json
//! {"clients": [{"name": "site-a", "role": "worker"}, {"name": "diloco-operator", "role": "admin"}]}
//! ```
//!
//! A certificate stays cryptographically valid until it expires, so removing a client from the
//! resource cannot revoke it; this list can. The file is re-read every second and a change takes
//! effect at once, so a removed client is refused within about a second. A missing or broken
//! file keeps the last good list (the operator rewrites it atomically; a half-applied change
//! must not lock every client out), except at start-up, where it is an error.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{PoisonError, RwLock};

use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::identity::Role;

/// Why the clients file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ClientsError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is not a valid clients file: {message}")]
    Invalid { path: PathBuf, message: String },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ClientsFile {
    clients: Vec<ClientEntry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ClientEntry {
    name: String,
    role: Role,
}

struct Loaded {
    fingerprint: [u8; 32],
    roles: BTreeMap<String, Role>,
}

/// The allowed clients, reloadable from their file.
pub struct ClientAllowlist {
    path: PathBuf,
    current: RwLock<Loaded>,
}

/// What a reload changed.
#[derive(Debug, PartialEq, Eq)]
pub struct ClientsChanged {
    /// Clients allowed now.
    pub count: usize,
    /// Names that were not allowed before (or had another role).
    pub added: Vec<String>,
    /// Names no longer allowed (or that had another role).
    pub removed: Vec<String>,
}

impl ClientAllowlist {
    /// Reads the file; it must exist and be valid.
    pub fn load(path: &Path) -> Result<Self, ClientsError> {
        let bytes = read(path)?;
        let roles = parse(path, &bytes)?;
        Ok(Self {
            path: path.to_path_buf(),
            current: RwLock::new(Loaded {
                fingerprint: Sha256::digest(&bytes).into(),
                roles,
            }),
        })
    }

    /// Re-reads the file; `Some` when the list changed. An error keeps the list in force.
    pub fn reload(&self) -> Result<Option<ClientsChanged>, ClientsError> {
        let bytes = read(&self.path)?;
        let fingerprint: [u8; 32] = Sha256::digest(&bytes).into();
        if self
            .current
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .fingerprint
            == fingerprint
        {
            return Ok(None);
        }
        let roles = parse(&self.path, &bytes)?;
        let mut current = self.current.write().unwrap_or_else(PoisonError::into_inner);
        let differs = |a: &BTreeMap<String, Role>, b: &BTreeMap<String, Role>| -> Vec<String> {
            a.iter()
                .filter(|(name, role)| b.get(*name) != Some(role))
                .map(|(name, _)| name.clone())
                .collect()
        };
        let changed = ClientsChanged {
            count: roles.len(),
            added: differs(&roles, &current.roles),
            removed: differs(&current.roles, &roles),
        };
        *current = Loaded { fingerprint, roles };
        Ok(Some(changed))
    }

    /// The role of the client whose certificate has common name `name`, if it is allowed.
    pub fn role_of(&self, name: &str) -> Option<Role> {
        self.current
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .roles
            .get(name)
            .copied()
    }
}

fn read(path: &Path) -> Result<Vec<u8>, ClientsError> {
    std::fs::read(path).map_err(|source| ClientsError::Read {
        path: path.to_path_buf(),
        source,
    })
}

fn parse(path: &Path, bytes: &[u8]) -> Result<BTreeMap<String, Role>, ClientsError> {
    let invalid = |message: String| ClientsError::Invalid {
        path: path.to_path_buf(),
        message,
    };
    let file: ClientsFile = serde_json::from_slice(bytes).map_err(|e| invalid(e.to_string()))?;
    let mut roles = BTreeMap::new();
    for client in file.clients {
        if client.name.is_empty() {
            return Err(invalid("a client has an empty name".into()));
        }
        if roles.insert(client.name.clone(), client.role).is_some() {
            // Two entries could give one certificate two roles: refuse rather than pick one.
            return Err(invalid(format!("client {} is listed twice", client.name)));
        }
    }
    Ok(roles)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(path: &Path, text: &str) {
        let temp = path.with_extension("tmp");
        std::fs::write(&temp, text).unwrap();
        std::fs::rename(&temp, path).unwrap();
    }

    #[test]
    fn listed_names_get_their_role_and_a_reload_applies_removals() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("clients.json");
        write(
            &path,
            r#"{"clients": [{"name": "site-a", "role": "worker"},
                            {"name": "diloco-operator", "role": "admin"}]}"#,
        );
        let clients = ClientAllowlist::load(&path).unwrap();
        assert_eq!(clients.role_of("site-a"), Some(Role::Worker));
        assert_eq!(clients.role_of("diloco-operator"), Some(Role::Admin));
        assert_eq!(clients.role_of("site-b"), None);
        assert_eq!(clients.reload().unwrap(), None, "unchanged");

        write(
            &path,
            r#"{"clients": [{"name": "diloco-operator", "role": "admin"},
                            {"name": "site-b", "role": "worker"}]}"#,
        );
        assert_eq!(
            clients.reload().unwrap(),
            Some(ClientsChanged {
                count: 2,
                added: vec!["site-b".into()],
                removed: vec!["site-a".into()],
            })
        );
        assert_eq!(clients.role_of("site-a"), None);
        assert_eq!(clients.role_of("site-b"), Some(Role::Worker));
    }

    #[test]
    fn a_missing_or_broken_file_keeps_the_last_good_list_but_stops_start_up() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("clients.json");
        assert!(matches!(
            ClientAllowlist::load(&path),
            Err(ClientsError::Read { .. })
        ));
        for broken in [
            "{",
            r#"{"clients": [{"name": "a", "role": "root"}]}"#,
            r#"{"clients": [{"name": "a", "role": "worker", "extra": 1}]}"#,
            r#"{"clients": [{"name": "", "role": "worker"}]}"#,
            r#"{"clients": [{"name": "a", "role": "worker"}, {"name": "a", "role": "admin"}]}"#,
        ] {
            write(&path, broken);
            let error = ClientAllowlist::load(&path).err().map(|e| e.to_string());
            assert!(
                error
                    .as_deref()
                    .is_some_and(|e| e.contains("not a valid clients file")),
                "{broken}: {error:?}"
            );
        }
        write(&path, r#"{"clients": [{"name": "a", "role": "worker"}]}"#);
        let clients = ClientAllowlist::load(&path).unwrap();
        write(&path, "{broken");
        assert!(clients.reload().is_err());
        std::fs::remove_file(&path).unwrap();
        assert!(clients.reload().is_err());
        assert_eq!(clients.role_of("a"), Some(Role::Worker), "last good list");
    }
}
