//! The cluster as kubectl sees it: the kubeconfig (`--kubeconfig`, else `KUBECONFIG`, else
//! `~/.kube/config`), its context (`--context`), the namespace (`-n`, else the context's, else
//! `default`), and the user's bearer token for the console.

use std::fmt;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use kube::config::{AuthInfo, KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};

use crate::cli::GlobalArgs;
use crate::error::{PluginError, Result};

/// A connected cluster and the namespace to work in.
pub struct Cluster {
    /// A client with the kubeconfig user's credentials.
    pub client: Client,
    /// The namespace of the DiLoCoServer.
    pub namespace: String,
    /// The kubeconfig user, for the console's bearer token.
    user: AuthInfo,
    /// The context's name, for messages.
    context: String,
}

impl Cluster {
    /// Reads the kubeconfig as kubectl would and makes a client.
    pub async fn connect(global: &GlobalArgs) -> Result<Self> {
        let kubeconfig = match &global.kubeconfig {
            Some(path) => Kubeconfig::read_from(path)
                .with_context(|| format!("failed to read the kubeconfig {}", path.display()))?,
            None => Kubeconfig::read().context(
                "failed to read a kubeconfig (KUBECONFIG or ~/.kube/config); pass --kubeconfig",
            )?,
        };
        let context = global
            .context
            .clone()
            .or_else(|| kubeconfig.current_context.clone())
            .unwrap_or_default();
        let options = KubeConfigOptions {
            context: global.context.clone(),
            ..KubeConfigOptions::default()
        };
        let config = Config::from_custom_kubeconfig(kubeconfig, &options)
            .await
            .with_context(|| format!("failed to use the kubeconfig context {context:?}"))?;
        let namespace = global
            .namespace
            .clone()
            .unwrap_or_else(|| config.default_namespace.clone());
        let user = config.auth_info.clone();
        let client = Client::try_from(config).context("failed to make a Kubernetes client")?;
        Ok(Self {
            client,
            namespace,
            user,
            context,
        })
    }

    /// The bearer token the console accepts: `--token-file`, else the kubeconfig user's
    /// `token` or `tokenFile`. Any other way of authenticating (a client certificate, an exec
    /// plugin) cannot be shown to the console, and the error says how to get a token.
    pub fn bearer_token(&self, token_file: Option<&Path>) -> Result<BearerToken> {
        if let Some(path) = token_file {
            return BearerToken::from_file(path);
        }
        let source = bearer_source(&self.user)?;
        match source {
            BearerSource::Token(token) => BearerToken::new(token, "the kubeconfig user's token"),
            BearerSource::File(path) => BearerToken::from_file(&path),
            BearerSource::None => Err(PluginError::UserCredential(format!(
                "this command talks to the console, which needs a Kubernetes bearer token, but \
                 the user of context {:?} authenticates another way (a client certificate or an \
                 exec plugin). Get a token for a ServiceAccount that may `get` dilocoservers, \
                 e.g. `kubectl create token <serviceaccount> -n <namespace> > ~/.diloco-token`, \
                 and pass `--token-file ~/.diloco-token` (or use a kubeconfig user with `token` \
                 or `tokenFile`).",
                self.context
            ))),
        }
    }
}

/// Where the kubeconfig user's bearer token is.
#[derive(PartialEq, Eq)]
enum BearerSource {
    Token(String),
    File(PathBuf),
    None,
}

impl fmt::Debug for BearerSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Token(_) => f.write_str("Token(<redacted>)"),
            Self::File(path) => write!(f, "File({})", path.display()),
            Self::None => f.write_str("None"),
        }
    }
}

/// kube keeps the token in a `secrecy::SecretString`; its `Serialize` is the one way to read
/// it without another dependency. The value goes straight into a [`BearerToken`].
fn bearer_source(user: &AuthInfo) -> Result<BearerSource> {
    let value = serde_json::to_value(user).context("failed to read the kubeconfig user")?;
    if let Some(token) = value.get("token").and_then(|t| t.as_str()) {
        return Ok(BearerSource::Token(token.to_string()));
    }
    if let Some(path) = value.get("tokenFile").and_then(|t| t.as_str()) {
        return Ok(BearerSource::File(PathBuf::from(path)));
    }
    Ok(BearerSource::None)
}

/// A bearer token; its `Debug` never shows it.
#[derive(Clone)]
pub struct BearerToken(String);

impl BearerToken {
    /// A token from `what`; refuses an empty one.
    pub fn new(token: String, what: &str) -> Result<Self> {
        let token = token.trim().to_string();
        if token.is_empty() {
            return Err(PluginError::UserCredential(format!("{what} is empty")));
        }
        Ok(Self(token))
    }

    /// The token in the file at `path` (surrounding whitespace removed).
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            PluginError::UserCredential(format!(
                "cannot read the token file {}: {e}",
                path.display()
            ))
        })?;
        Self::new(text, &format!("the token file {}", path.display()))
    }

    /// The token, for the `Authorization` header only.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for BearerToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("BearerToken(<redacted>)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(yaml: serde_json::Value) -> AuthInfo {
        serde_json::from_value(yaml).unwrap()
    }

    #[test]
    fn the_token_comes_from_token_then_token_file() {
        assert_eq!(
            bearer_source(&user(
                serde_json::json!({"token": "abc", "tokenFile": "/t"})
            ))
            .unwrap(),
            BearerSource::Token("abc".into())
        );
        assert_eq!(
            bearer_source(&user(serde_json::json!({"tokenFile": "/t"}))).unwrap(),
            BearerSource::File("/t".into())
        );
        assert_eq!(
            bearer_source(&user(serde_json::json!({"client-certificate": "/c"}))).unwrap(),
            BearerSource::None
        );
    }

    #[test]
    fn a_token_never_shows_in_debug_output() {
        let token = BearerToken::new(" s3cr3t-value \n".into(), "test").unwrap();
        assert_eq!(token.expose(), "s3cr3t-value");
        assert!(!format!("{token:?}").contains("s3cr3t"));
        let source = BearerSource::Token("s3cr3t-value".into());
        assert!(!format!("{source:?}").contains("s3cr3t"));
        assert!(BearerToken::new("  ".into(), "the token file x").is_err());
    }
}
