//! What can go wrong, each with the exit code a script can branch on. Messages are written for
//! the person at the terminal and never contain a token.

/// Exit code of a failure nothing more specific describes.
pub const EXIT_FAILURE: i32 = 1;
/// Exit code of bad input: an unusable flag, directory or resource state (clap uses 2 too).
pub const EXIT_USAGE: i32 = 2;
/// Exit code when the console refused the user's own Kubernetes credential, or there is none.
pub const EXIT_USER_CREDENTIAL: i32 = 3;
/// Exit code when the coordinator refused the console's client certificate.
pub const EXIT_UPSTREAM_AUTH: i32 = 4;
/// Exit code when the console or the coordinator behind it cannot be reached.
pub const EXIT_UNREACHABLE: i32 = 5;
/// Exit code when a `--wait` ran out of time.
pub const EXIT_TIMEOUT: i32 = 6;

/// A failed command.
#[derive(Debug, thiserror::Error)]
pub enum PluginError {
    /// The command cannot run as asked; nothing was changed.
    #[error("{0}")]
    Usage(String),
    /// The console refused the user's Kubernetes credential, or the kubeconfig has none it can
    /// send.
    #[error("{0}")]
    UserCredential(String),
    /// The coordinator refused the console's client certificate (`x-upstream-auth-failed`).
    #[error("{0}")]
    UpstreamAuth(String),
    /// The console, or the coordinator behind it, cannot be reached.
    #[error("{0}")]
    Unreachable(String),
    /// A `--wait` ran out of time.
    #[error("{0}")]
    Timeout(String),
    /// Anything else, with its context.
    #[error(transparent)]
    Other(#[from] anyhow::Error),
}

impl PluginError {
    /// The process exit code for this failure.
    pub fn exit_code(&self) -> i32 {
        match self {
            Self::Usage(_) => EXIT_USAGE,
            Self::UserCredential(_) => EXIT_USER_CREDENTIAL,
            Self::UpstreamAuth(_) => EXIT_UPSTREAM_AUTH,
            Self::Unreachable(_) => EXIT_UNREACHABLE,
            Self::Timeout(_) => EXIT_TIMEOUT,
            Self::Other(_) => EXIT_FAILURE,
        }
    }
}

/// The result of a command.
pub type Result<T, E = PluginError> = std::result::Result<T, E>;

/// `kube::Error` with what was being done; a 404 reads as "not found", not as an API dump.
pub fn kube_error(what: &str, error: kube::Error) -> PluginError {
    match &error {
        kube::Error::Api(status) if status.code == 404 => {
            PluginError::Usage(format!("{what}: not found ({})", status.message))
        }
        kube::Error::Api(status) if status.code == 401 || status.code == 403 => {
            PluginError::UserCredential(format!(
                "{what}: the Kubernetes API refused ({}): {}",
                status.code, status.message
            ))
        }
        _ => PluginError::Other(anyhow::Error::new(error).context(what.to_string())),
    }
}
