//! Who the caller is and what they may do, asked of Kubernetes: a `TokenReview` turns a bearer
//! token into a user, a `SubjectAccessReview` says whether that user may `get`, `list` or
//! `patch` `dilocoservers.diloco.dev`. Both are asked with the console's own credentials.
//!
//! Caches are short and bounded: a token's review for at most [`TOKEN_CACHE_TTL`], keyed by
//! its SHA-256 (the token itself is never kept), and an access decision for
//! [`ACCESS_CACHE_TTL`], so a revoked RoleBinding takes effect within seconds.

use std::collections::{BTreeMap, HashMap};
use std::hash::Hash;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use diloco_crds::DiLoCoServer;
use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec,
};
use kube::api::{Api, PostParams};
use kube::{Client, Resource};
use ring::digest::{SHA256, digest};

use crate::error::{ApiError, kube_failure};

/// How long a bearer token's TokenReview is reused.
pub const TOKEN_CACHE_TTL: Duration = Duration::from_secs(60);
/// How long an access decision is reused.
pub const ACCESS_CACHE_TTL: Duration = Duration::from_secs(10);
/// Entries a cache holds before it is cleared of expired ones (and, if still full, emptied).
const CACHE_CAPACITY: usize = 4096;
/// The longest TokenReview error repeated to the caller.
const MAX_REVIEW_ERROR_CHARS: usize = 200;

/// A user as Kubernetes authenticated them.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct User {
    /// `status.user.username`.
    pub name: String,
    /// `status.user.uid`.
    pub uid: Option<String>,
    /// `status.user.groups`.
    pub groups: Vec<String>,
    /// `status.user.extra` (authorizers may use it).
    pub extra: BTreeMap<String, Vec<String>>,
}

/// What a user wants to do with a `DiLoCoServer`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Verb {
    /// View one server.
    Get,
    /// View the servers of a namespace.
    List,
    /// Control actions and rotations.
    Patch,
}

impl Verb {
    /// The Kubernetes verb.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Get => "get",
            Self::List => "list",
            Self::Patch => "patch",
        }
    }
}

/// TokenReviews and SubjectAccessReviews, with their caches.
pub struct KubeAuth {
    client: Client,
    tokens: TtlCache<[u8; 32], User>,
    decisions: TtlCache<AccessKey, Decision>,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct AccessKey {
    user: User,
    verb: Verb,
    namespace: String,
    name: Option<String>,
}

/// An authorizer's answer.
#[derive(Clone, Debug)]
pub struct Decision {
    /// Allowed.
    pub allowed: bool,
    /// The authorizer's reason, if it gave one.
    pub reason: Option<String>,
}

impl KubeAuth {
    /// Reviews with `client` (the console's ServiceAccount).
    pub fn new(client: Client) -> Self {
        Self {
            client,
            tokens: TtlCache::new(TOKEN_CACHE_TTL),
            decisions: TtlCache::new(ACCESS_CACHE_TTL),
        }
    }

    /// The user `token` authenticates, by a fresh TokenReview (a login).
    pub async fn review_token(&self, token: &str) -> Result<User, ApiError> {
        let review = TokenReview {
            spec: TokenReviewSpec {
                token: token.to_string(),
                audiences: None,
            },
            ..TokenReview::default()
        };
        let reply = Api::<TokenReview>::all(self.client.clone())
            .create(&PostParams::default(), &review)
            .await
            .map_err(|e| kube_failure("review the token", &e))?;
        let status = reply.status.unwrap_or_default();
        let user = status.user.filter(|_| status.authenticated == Some(true));
        match user.and_then(|u| Some((u.username?, u.uid, u.groups, u.extra))) {
            Some((name, uid, groups, extra)) if !name.is_empty() => Ok(User {
                name,
                uid,
                groups: groups.unwrap_or_default(),
                extra: extra.unwrap_or_default(),
            }),
            _ => {
                let why: String = status
                    .error
                    .unwrap_or_default()
                    .chars()
                    .take(MAX_REVIEW_ERROR_CHARS)
                    .collect();
                let mut message = "Kubernetes did not accept the token (TokenReview)".to_string();
                if !why.is_empty() {
                    message.push_str(&format!(": {why}"));
                }
                Err(ApiError::unauthenticated(message))
            }
        }
    }

    /// The user of a program's bearer token, reviewed at most once per [`TOKEN_CACHE_TTL`].
    pub async fn bearer(&self, token: &str) -> Result<User, ApiError> {
        let mut key = [0u8; 32];
        key.copy_from_slice(digest(&SHA256, token.as_bytes()).as_ref());
        if let Some(user) = self.tokens.get(&key) {
            return Ok(user);
        }
        let user = self.review_token(token).await?;
        self.tokens.insert(key, user.clone());
        Ok(user)
    }

    /// Whether `user` may `verb` the `DiLoCoServer` `name` (or, without one, all of them) in
    /// `namespace`.
    pub async fn decide(
        &self,
        user: &User,
        verb: Verb,
        namespace: &str,
        name: Option<&str>,
    ) -> Result<Decision, ApiError> {
        let key = AccessKey {
            user: user.clone(),
            verb,
            namespace: namespace.to_string(),
            name: name.map(str::to_string),
        };
        if let Some(decision) = self.decisions.get(&key) {
            return Ok(decision);
        }
        let review = SubjectAccessReview {
            spec: SubjectAccessReviewSpec {
                user: Some(user.name.clone()),
                uid: user.uid.clone(),
                groups: Some(user.groups.clone()),
                extra: Some(user.extra.clone()),
                resource_attributes: Some(ResourceAttributes {
                    group: Some(DiLoCoServer::group(&()).into_owned()),
                    resource: Some(DiLoCoServer::plural(&()).into_owned()),
                    verb: Some(verb.as_str().to_string()),
                    namespace: Some(namespace.to_string()),
                    name: name.map(str::to_string),
                    ..ResourceAttributes::default()
                }),
                ..SubjectAccessReviewSpec::default()
            },
            ..SubjectAccessReview::default()
        };
        let reply = Api::<SubjectAccessReview>::all(self.client.clone())
            .create(&PostParams::default(), &review)
            .await
            .map_err(|e| kube_failure("check access (SubjectAccessReview)", &e))?;
        let decision = match reply.status {
            Some(status) => Decision {
                allowed: status.allowed && status.denied != Some(true),
                reason: status.reason.filter(|r| !r.is_empty()),
            },
            None => Decision {
                allowed: false,
                reason: None,
            },
        };
        self.decisions.insert(key, decision.clone());
        Ok(decision)
    }

    /// [`Self::decide`], as a 403 naming what was refused.
    pub async fn require(
        &self,
        user: &User,
        verb: Verb,
        namespace: &str,
        name: &str,
    ) -> Result<(), ApiError> {
        let decision = self.decide(user, verb, namespace, Some(name)).await?;
        if decision.allowed {
            return Ok(());
        }
        let mut message = format!(
            "{} may not {} {}.{} \"{name}\" in namespace \"{namespace}\"",
            user.name,
            verb.as_str(),
            DiLoCoServer::plural(&()),
            DiLoCoServer::group(&()),
        );
        if verb == Verb::Patch {
            message.push_str(" (control actions and rotations need patch)");
        }
        if let Some(reason) = decision.reason {
            message.push_str(&format!(": {reason}"));
        }
        Err(ApiError::forbidden(message))
    }
}

/// A small map whose entries expire.
struct TtlCache<K, V> {
    ttl: Duration,
    entries: Mutex<HashMap<K, (V, Instant)>>,
}

impl<K: Eq + Hash, V: Clone> TtlCache<K, V> {
    fn new(ttl: Duration) -> Self {
        Self {
            ttl,
            entries: Mutex::new(HashMap::new()),
        }
    }

    fn get(&self, key: &K) -> Option<V> {
        let entries = self.lock();
        let (value, at) = entries.get(key)?;
        (at.elapsed() < self.ttl).then(|| value.clone())
    }

    fn insert(&self, key: K, value: V) {
        let mut entries = self.lock();
        if entries.len() >= CACHE_CAPACITY {
            let ttl = self.ttl;
            entries.retain(|_, (_, at)| at.elapsed() < ttl);
            if entries.len() >= CACHE_CAPACITY {
                entries.clear();
            }
        }
        entries.insert(key, (value, Instant::now()));
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<K, (V, Instant)>> {
        self.entries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cached_entries_expire_and_the_cache_stays_bounded() {
        let cache = TtlCache::new(Duration::from_millis(50));
        cache.insert(1u32, "a");
        assert_eq!(cache.get(&1), Some("a"));
        std::thread::sleep(Duration::from_millis(60));
        assert_eq!(cache.get(&1), None);
        for i in 0..(CACHE_CAPACITY as u32 + 10) {
            cache.insert(i, "b");
        }
        assert!(cache.lock().len() <= CACHE_CAPACITY);
    }
}
