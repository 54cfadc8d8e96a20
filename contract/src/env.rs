//! Environment variables a worker reads; the Rust client, its example worker and the Python
//! SDK read the same names. Tokens are never read from the command line.

/// The control plane's URL.
pub const URL: &str = "DILOCO_URL";
/// A mounted worker bundle ([`crate::credentials`]).
pub const CREDENTIALS_DIR: &str = "DILOCO_CREDENTIALS_DIR";
/// A file holding the bearer token (preferred: re-read after a 401, so rotations are picked up).
pub const TOKEN_FILE: &str = "DILOCO_TOKEN_FILE";
/// The bearer token itself.
pub const TOKEN: &str = "DILOCO_TOKEN";
/// A CA bundle (PEM) to trust.
pub const CA_FILE: &str = "DILOCO_CA_FILE";
/// A client certificate (PEM).
pub const CLIENT_CERT: &str = "DILOCO_CLIENT_CERT";
/// Its key (PEM).
pub const CLIENT_KEY: &str = "DILOCO_CLIENT_KEY";
/// The worker's id.
pub const WORKER_ID: &str = "DILOCO_WORKER_ID";

/// Every name above.
pub const ALL: [&str; 8] = [
    URL,
    CREDENTIALS_DIR,
    TOKEN_FILE,
    TOKEN,
    CA_FILE,
    CLIENT_CERT,
    CLIENT_KEY,
    WORKER_ID,
];
