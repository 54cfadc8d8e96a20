//! Browser sessions, in memory: a random 256-bit id in the cookie [`SESSION_COOKIE`], the
//! signed-in user (never their token), an anti-CSRF token, an idle timeout and a bounded count.
//!
//! The store is keyed by the SHA-256 of the id, so a lookup's timing says nothing about the
//! ids it holds, and a memory dump holds no usable cookie.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use diloco_contract::console::SESSION_COOKIE;
use ring::digest::{SHA256, digest};
use ring::rand::{SecureRandom, SystemRandom};
use subtle::ConstantTimeEq;

use crate::error::ApiError;
use crate::kube_auth::User;

/// Bytes of a session id and of a CSRF token (256 bits each).
const SECRET_BYTES: usize = 32;
/// The longest a session lives, however active: an open page polls, so without this bound a
/// forgotten tab would keep its session forever.
pub const MAX_SESSION_LIFETIME: Duration = Duration::from_secs(12 * 60 * 60);

/// One signed-in browser.
#[derive(Clone, Debug)]
pub struct Session {
    /// Who signed in (from the TokenReview).
    pub user: User,
    /// What the browser must echo in `x-csrf-token` on every `POST`.
    pub csrf_token: String,
    started: Instant,
    last_seen: Instant,
}

impl Session {
    /// Whether `presented` is this session's CSRF token (compared in constant time).
    pub fn csrf_matches(&self, presented: &str) -> bool {
        bool::from(self.csrf_token.as_bytes().ct_eq(presented.as_bytes()))
    }
}

/// The sessions of this console process.
pub struct SessionStore {
    sessions: Mutex<HashMap<[u8; 32], Session>>,
    idle_timeout: Duration,
    max_sessions: usize,
    random: SystemRandom,
}

/// A new session: the id for the cookie and the session itself.
pub struct NewSession {
    /// The cookie value.
    pub id: String,
    /// The session.
    pub session: Session,
}

impl SessionStore {
    /// An empty store whose sessions end after `idle_timeout` without a request, holding at
    /// most `max_sessions` (the least recently used one goes when a new one would exceed it).
    pub fn new(idle_timeout: Duration, max_sessions: usize) -> Self {
        Self {
            sessions: Mutex::new(HashMap::new()),
            idle_timeout,
            max_sessions: max_sessions.max(1),
            random: SystemRandom::new(),
        }
    }

    /// The idle timeout.
    pub fn idle_timeout(&self) -> Duration {
        self.idle_timeout
    }

    /// Starts a session for `user`.
    pub fn create(&self, user: User) -> Result<NewSession, ApiError> {
        self.create_at(user, Instant::now())
    }

    fn create_at(&self, user: User, now: Instant) -> Result<NewSession, ApiError> {
        let id = random_hex(&self.random)?;
        let session = Session {
            user,
            csrf_token: random_hex(&self.random)?,
            started: now,
            last_seen: now,
        };
        let mut sessions = self.lock();
        sessions.retain(|_, s| self.is_live(s, now));
        while sessions.len() >= self.max_sessions {
            let oldest = sessions
                .iter()
                .min_by_key(|(_, s)| s.last_seen)
                .map(|(key, _)| *key);
            match oldest {
                Some(key) => sessions.remove(&key),
                None => break,
            };
        }
        sessions.insert(key_of(&id), session.clone());
        Ok(NewSession { id, session })
    }

    /// The live session with cookie value `id`, marked as used now; an idle one is ended.
    pub fn touch(&self, id: &str) -> Option<Session> {
        self.touch_at(id, Instant::now())
    }

    fn touch_at(&self, id: &str, now: Instant) -> Option<Session> {
        let key = key_of(id);
        let mut sessions = self.lock();
        let session = sessions.get_mut(&key)?;
        if !self.is_live(session, now) {
            sessions.remove(&key);
            return None;
        }
        session.last_seen = now;
        Some(session.clone())
    }

    fn is_live(&self, session: &Session, now: Instant) -> bool {
        now.duration_since(session.last_seen) < self.idle_timeout
            && now.duration_since(session.started) < MAX_SESSION_LIFETIME
    }

    /// Ends the session with cookie value `id` (if any).
    pub fn remove(&self, id: &str) {
        self.lock().remove(&key_of(id));
    }

    /// Sessions held now (idle ones included until they are next looked at).
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether no session is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<[u8; 32], Session>> {
        // A panic while holding the lock leaves a map that is still consistent.
        self.sessions
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

fn key_of(id: &str) -> [u8; 32] {
    let mut key = [0u8; 32];
    key.copy_from_slice(digest(&SHA256, id.as_bytes()).as_ref());
    key
}

/// 256 random bits as 64 hex characters.
pub fn random_hex(random: &SystemRandom) -> Result<String, ApiError> {
    let mut bytes = [0u8; SECRET_BYTES];
    random
        .fill(&mut bytes)
        .map_err(|_| ApiError::internal("the system random generator failed"))?;
    Ok(hex(&bytes))
}

/// Lower-case hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The `Set-Cookie` value that gives the browser its session: script cannot read it
/// (`HttpOnly`), it travels only over HTTPS or to localhost (`Secure`), and no other site's
/// page can make the browser send it (`SameSite=Strict`).
pub fn session_cookie(id: &str) -> String {
    format!("{SESSION_COOKIE}={id}; HttpOnly; Secure; SameSite=Strict; Path=/")
}

/// The `Set-Cookie` value that makes the browser forget its session.
pub fn cleared_cookie() -> String {
    format!("{SESSION_COOKIE}=; HttpOnly; Secure; SameSite=Strict; Path=/; Max-Age=0")
}

/// The session id among the request's `Cookie` headers, if any.
pub fn session_id_from_cookies<'a>(
    cookie_headers: impl Iterator<Item = &'a axum::http::HeaderValue>,
) -> Option<String> {
    cookie_headers
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == SESSION_COOKIE)
        .map(|(_, value)| value.trim().to_string())
        .filter(|value| !value.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn user() -> User {
        User {
            name: "system:serviceaccount:team-a:alice".into(),
            uid: None,
            groups: vec!["system:serviceaccounts".into()],
            extra: Default::default(),
        }
    }

    /// The cookie cannot be read by script, sent in clear to a remote host, or sent by
    /// another site's page; it is valid for the whole console.
    #[test]
    fn the_session_cookie_is_http_only_secure_strict_and_site_wide() {
        let cookie = session_cookie("abc");
        let attributes: Vec<&str> = cookie.split("; ").collect();
        assert_eq!(attributes[0], "diloco_console_session=abc");
        for attribute in ["HttpOnly", "Secure", "SameSite=Strict", "Path=/"] {
            assert!(
                attributes.contains(&attribute),
                "{cookie} lacks {attribute}"
            );
        }
        assert!(
            !cookie.contains("Max-Age"),
            "a session cookie, not a stored one"
        );
        assert!(cleared_cookie().contains("Max-Age=0"));
    }

    #[test]
    fn ids_and_csrf_tokens_are_256_random_bits() {
        let store = SessionStore::new(Duration::from_secs(60), 10);
        let a = store.create(user()).unwrap();
        let b = store.create(user()).unwrap();
        assert_eq!(a.id.len(), 64);
        assert_ne!(a.id, b.id);
        assert_ne!(a.id, a.session.csrf_token);
        assert!(a.session.csrf_matches(&a.session.csrf_token));
        assert!(!a.session.csrf_matches(&b.session.csrf_token));
        assert!(!a.session.csrf_matches(""));
    }

    /// A session used within the timeout lives on; one left idle for the timeout is gone.
    #[test]
    fn an_idle_session_expires_and_a_used_one_does_not() {
        let idle = Duration::from_secs(30 * 60);
        let store = SessionStore::new(idle, 10);
        let t0 = Instant::now();
        let new = store.create_at(user(), t0).unwrap();
        let half = t0 + idle / 2;
        assert!(store.touch_at(&new.id, half).is_some());
        // Idle counts from the last use, not from the login.
        assert!(
            store
                .touch_at(&new.id, t0 + idle + Duration::from_secs(1))
                .is_some()
        );
        let later = t0 + idle + Duration::from_secs(1) + idle;
        assert!(store.touch_at(&new.id, later).is_none());
        assert!(store.is_empty(), "an expired session is removed");
        assert!(store.touch_at("not-a-session", t0).is_none());
    }

    #[test]
    fn even_a_busy_session_ends_after_its_lifetime() {
        let store = SessionStore::new(Duration::from_secs(60), 10);
        let t0 = Instant::now();
        let new = store.create_at(user(), t0).unwrap();
        let mut now = t0;
        while now < t0 + MAX_SESSION_LIFETIME - Duration::from_secs(30) {
            now += Duration::from_secs(30);
            assert!(store.touch_at(&new.id, now).is_some());
        }
        assert!(store.touch_at(&new.id, t0 + MAX_SESSION_LIFETIME).is_none());
    }

    #[test]
    fn the_count_is_bounded_by_evicting_the_least_recently_used() {
        let store = SessionStore::new(Duration::from_secs(600), 2);
        let t0 = Instant::now();
        let first = store.create_at(user(), t0).unwrap();
        let second = store
            .create_at(user(), t0 + Duration::from_secs(1))
            .unwrap();
        store.touch_at(&first.id, t0 + Duration::from_secs(2));
        let third = store
            .create_at(user(), t0 + Duration::from_secs(3))
            .unwrap();
        assert_eq!(store.len(), 2);
        let now = t0 + Duration::from_secs(4);
        assert!(store.touch_at(&second.id, now).is_none());
        assert!(store.touch_at(&first.id, now).is_some());
        assert!(store.touch_at(&third.id, now).is_some());
    }

    #[test]
    fn the_session_id_is_found_among_other_cookies() {
        let headers = [
            HeaderValue::from_static("theme=dark; diloco_console_session=abc123"),
            HeaderValue::from_static("other=1"),
        ];
        assert_eq!(
            session_id_from_cookies(headers.iter()).as_deref(),
            Some("abc123")
        );
        let none = [HeaderValue::from_static("diloco_console_session=")];
        assert_eq!(session_id_from_cookies(none.iter()), None);
    }
}
