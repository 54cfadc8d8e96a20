//! Bearer tokens for coordinator tests: a worker token and an admin token, each in a directory
//! laid out like the mounted token Secret (`auth.token_dir`, `auth.admin_token_dir`).

use std::path::{Path, PathBuf};

use crate::fresh_token;

/// The two tokens and where they are.
pub struct TestTokens {
    /// The worker token (role worker: everything but `/control/*`).
    pub worker: String,
    /// The admin token (role admin: `/control/*` too).
    pub admin: String,
    /// `auth.token_dir`.
    pub worker_dir: PathBuf,
    /// `auth.admin_token_dir`.
    pub admin_dir: PathBuf,
}

impl TestTokens {
    /// Fresh tokens written to `<dir>/tokens/token` and `<dir>/admin-tokens/token`.
    pub fn write(dir: &Path) -> Self {
        let tokens = Self {
            worker: fresh_token("worker"),
            admin: fresh_token("admin"),
            worker_dir: dir.join("tokens"),
            admin_dir: dir.join("admin-tokens"),
        };
        for (path, token) in [
            (&tokens.worker_dir, &tokens.worker),
            (&tokens.admin_dir, &tokens.admin),
        ] {
            std::fs::create_dir_all(path).expect("the token directory can be created");
            std::fs::write(path.join("token"), format!("{token}\n"))
                .expect("the token file can be written");
        }
        tokens
    }

    /// The `auth:` keys for both directories (paths as written, for a flow mapping).
    pub fn auth_keys(&self) -> String {
        format!(
            "token_dir: {}, admin_token_dir: {}",
            self.worker_dir.display(),
            self.admin_dir.display()
        )
    }
}
