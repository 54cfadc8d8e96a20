//! Bearer tokens, read from a directory laid out like the mounted Kubernetes Secret the operator
//! creates: `token` (the current token), and during a rotation `previous-token` with
//! `previous-valid-until` (RFC 3339): the previous token keeps working until then.
//!
//! The three files are read as **one consistent set**: a rotation changes them together, and a
//! set mixing old and new files could keep an old token valid past its deadline or drop the new
//! one. The kubelet writes a Secret volume into a fresh timestamped directory and then swaps the
//! `..data` symlink to it, so when `..data` exists it is resolved once and every file is read
//! from that directory (and the read is repeated if `..data` moved meanwhile). A plain directory
//! is read twice, and again until two reads agree.
//!
//! Tokens are compared as SHA-256 digests in constant time; only digests are kept in memory
//! after loading.

use std::path::{Path, PathBuf};
use std::sync::{PoisonError, RwLock};

use diloco_contract::credentials;
use jiff::Timestamp;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// The symlink through which the kubelet publishes a Secret volume's current files.
const KUBELET_DATA_LINK: &str = "..data";
/// Reads of a directory whose files keep changing before giving up until the next reload.
const CONSISTENT_READ_ATTEMPTS: usize = 5;

/// Why the tokens could not be loaded. Messages name files, never their content.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0} is empty")]
    Empty(PathBuf),
    #[error("the token files in {0} kept changing while they were read; retrying later")]
    Unstable(PathBuf),
}

type TokenDigest = [u8; 32];

#[derive(Clone, PartialEq, Eq)]
struct Tokens {
    current: TokenDigest,
    previous: Option<(TokenDigest, Option<Timestamp>)>,
}

/// The three files' contents as read (trimmed). No `Debug`: it holds tokens.
#[derive(PartialEq, Eq)]
struct TokenFiles {
    token: Option<String>,
    previous_token: Option<String>,
    previous_valid_until: Option<String>,
}

/// The currently valid tokens, reloadable from their directory.
pub struct TokenStore {
    dir: PathBuf,
    tokens: RwLock<Tokens>,
}

/// What a reload found.
#[derive(Debug, PartialEq, Eq)]
pub struct Reloaded {
    /// A previous token is accepted, until this time.
    pub previous_valid_until: Option<String>,
}

impl TokenStore {
    /// Loads the tokens in `dir`; the `token` file must exist and not be empty.
    pub fn load(dir: &Path) -> Result<Self, TokenError> {
        let tokens = read_tokens(dir)?;
        Ok(Self {
            dir: dir.to_path_buf(),
            tokens: RwLock::new(tokens),
        })
    }

    /// Re-reads the files; `Some` when the accepted tokens changed. A read error keeps the
    /// tokens in force (a rotation in progress may briefly remove files).
    pub fn reload(&self) -> Result<Option<Reloaded>, TokenError> {
        let fresh = read_tokens(&self.dir)?;
        let mut tokens = self.tokens.write().unwrap_or_else(PoisonError::into_inner);
        if *tokens == fresh {
            return Ok(None);
        }
        let previous_valid_until = fresh
            .previous
            .as_ref()
            .and_then(|(_, until)| until.map(|t| t.to_string()));
        *tokens = fresh;
        Ok(Some(Reloaded {
            previous_valid_until,
        }))
    }

    /// Whether `presented` is the current token, or the previous one before its deadline.
    pub fn accepts(&self, presented: &str, now: Timestamp) -> bool {
        let digest = digest(presented.as_bytes());
        let tokens = self.tokens.read().unwrap_or_else(PoisonError::into_inner);
        let current: bool = digest.ct_eq(&tokens.current).into();
        let previous = tokens.previous.as_ref().is_some_and(|(previous, until)| {
            let matches: bool = digest.ct_eq(previous).into();
            matches && until.is_some_and(|until| now < until)
        });
        current | previous
    }
}

fn digest(bytes: &[u8]) -> TokenDigest {
    Sha256::digest(bytes).into()
}

fn read_tokens(dir: &Path) -> Result<Tokens, TokenError> {
    let files = read_consistent(dir)?;
    let token_path = dir.join(credentials::TOKEN);
    let current = match files.token {
        None => {
            return Err(TokenError::Read {
                path: token_path,
                source: std::io::Error::from(std::io::ErrorKind::NotFound),
            });
        }
        Some(token) if token.is_empty() => return Err(TokenError::Empty(token_path)),
        Some(token) => token,
    };
    // Without a readable deadline the previous token is not accepted at all.
    let previous = files.previous_token.filter(|t| !t.is_empty()).map(|t| {
        let until = files
            .previous_valid_until
            .and_then(|u| u.parse::<Timestamp>().ok());
        (digest(t.as_bytes()), until)
    });
    Ok(Tokens {
        current: digest(current.as_bytes()),
        previous,
    })
}

/// The three files as one set: through the kubelet's `..data` link when there is one, else
/// from two agreeing reads of the directory.
fn read_consistent(dir: &Path) -> Result<TokenFiles, TokenError> {
    let link = dir.join(KUBELET_DATA_LINK);
    if std::fs::symlink_metadata(&link).is_err() {
        return read_until_stable(|| read_files(dir)).unwrap_or_else(|| Err(unstable(dir)));
    }
    let resolve = || {
        std::fs::canonicalize(&link).map_err(|source| TokenError::Read {
            path: link.clone(),
            source,
        })
    };
    for _ in 0..CONSISTENT_READ_ATTEMPTS {
        let resolved = resolve()?;
        let files = read_files(&resolved);
        // The files of one timestamped directory never change; but the kubelet deletes the
        // old directory after a swap, so a read that raced a swap is repeated.
        if resolve()? == resolved {
            return files;
        }
    }
    Err(unstable(dir))
}

fn unstable(dir: &Path) -> TokenError {
    TokenError::Unstable(dir.to_path_buf())
}

/// Calls `read` until two calls in a row give the same value (or the same error kind); `None`
/// when that does not happen within [`CONSISTENT_READ_ATTEMPTS`] tries.
fn read_until_stable<T: PartialEq>(
    mut read: impl FnMut() -> Result<T, TokenError>,
) -> Option<Result<T, TokenError>> {
    let mut last = read();
    for _ in 0..CONSISTENT_READ_ATTEMPTS {
        let again = read();
        let agree = match (&last, &again) {
            (Ok(a), Ok(b)) => a == b,
            // A file that stays unreadable is an answer, not a change in progress.
            (Err(a), Err(b)) => a.to_string() == b.to_string(),
            _ => false,
        };
        if agree {
            return Some(again);
        }
        last = again;
    }
    None
}

fn read_files(dir: &Path) -> Result<TokenFiles, TokenError> {
    let read = |name: &str| -> Result<Option<String>, TokenError> {
        let path = dir.join(name);
        match std::fs::read_to_string(&path) {
            Ok(text) => Ok(Some(text.trim().to_string())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(TokenError::Read { path, source }),
        }
    };
    Ok(TokenFiles {
        token: read(credentials::TOKEN)?,
        previous_token: read(credentials::PREVIOUS_TOKEN)?,
        previous_valid_until: read(credentials::PREVIOUS_VALID_UNTIL)?,
    })
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;
    use std::os::unix::fs::symlink;

    use super::*;

    fn write(dir: &Path, name: &str, text: &str) {
        std::fs::write(dir.join(name), text).unwrap();
    }

    #[test]
    fn current_and_unexpired_previous_tokens_are_accepted() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "token", "new-token\n");
        let store = TokenStore::load(dir.path()).unwrap();
        let now = Timestamp::now();
        assert!(store.accepts("new-token", now));
        assert!(!store.accepts("new-token2", now));
        assert!(!store.accepts("", now));
        assert_eq!(store.reload().unwrap(), None, "nothing changed");

        write(dir.path(), "previous-token", "old-token");
        // No deadline yet: the previous token is not accepted.
        assert!(store.reload().unwrap().is_some());
        assert!(!store.accepts("old-token", now));
        let until = now + jiff::SignedDuration::from_secs(60);
        write(dir.path(), "previous-valid-until", &until.to_string());
        let reloaded = store.reload().unwrap().unwrap();
        assert_eq!(reloaded.previous_valid_until, Some(until.to_string()));
        assert!(store.accepts("old-token", now));
        assert!(!store.accepts("old-token", until), "not at the deadline");
        assert!(store.accepts("new-token", until));
    }

    #[test]
    fn a_missing_or_empty_token_file_is_an_error_and_keeps_the_old_tokens() {
        let dir = tempfile::tempdir().unwrap();
        assert!(matches!(
            TokenStore::load(dir.path()),
            Err(TokenError::Read { .. })
        ));
        write(dir.path(), "token", "  \n");
        assert!(matches!(
            TokenStore::load(dir.path()),
            Err(TokenError::Empty(_))
        ));
        write(dir.path(), "token", "t1");
        let store = TokenStore::load(dir.path()).unwrap();
        std::fs::remove_file(dir.path().join("token")).unwrap();
        assert!(store.reload().is_err());
        assert!(store.accepts("t1", Timestamp::now()));
    }

    /// Writes one kubelet "timestamped directory" and points `..data` at it with an atomic
    /// rename of a fresh symlink, as the kubelet's atomic writer does.
    fn publish(dir: &Path, version: &str, files: &[(&str, &str)]) {
        let versioned = dir.join(format!("..{version}"));
        std::fs::create_dir(&versioned).unwrap();
        for (name, text) in files {
            write(&versioned, name, text);
        }
        let staging = dir.join("..data_tmp");
        symlink(format!("..{version}"), &staging).unwrap();
        std::fs::rename(&staging, dir.join(KUBELET_DATA_LINK)).unwrap();
    }

    /// The kubelet layout is read through `..data`: every file of the set comes from the one
    /// directory it points at, and a swap of the link changes all three at once.
    #[test]
    fn a_kubelet_secret_volume_is_read_through_its_data_link() {
        let dir = tempfile::tempdir().unwrap();
        let until = (Timestamp::now() + jiff::SignedDuration::from_secs(600)).to_string();
        publish(
            dir.path(),
            "2026_01_01_00_00_00.1",
            &[
                ("token", "second"),
                ("previous-token", "first"),
                ("previous-valid-until", &until),
            ],
        );
        for name in ["token", "previous-token", "previous-valid-until"] {
            symlink(format!("{KUBELET_DATA_LINK}/{name}"), dir.path().join(name)).unwrap();
        }
        let store = TokenStore::load(dir.path()).unwrap();
        let now = Timestamp::now();
        assert!(store.accepts("second", now) && store.accepts("first", now));

        // The rotation's grace period is over: the new set has no previous token.
        publish(dir.path(), "2026_01_01_00_15_00.2", &[("token", "third")]);
        assert!(store.reload().unwrap().is_some());
        assert!(store.accepts("third", now));
        assert!(!store.accepts("second", now) && !store.accepts("first", now));

        // Files beside the link that are not the link's (left over, or written by hand) are
        // not mixed into the set.
        std::fs::remove_file(dir.path().join("previous-token")).unwrap();
        write(dir.path(), "previous-token", "stray");
        std::fs::remove_file(dir.path().join("previous-valid-until")).unwrap();
        write(dir.path(), "previous-valid-until", &until);
        assert_eq!(store.reload().unwrap(), None);
        assert!(!store.accepts("stray", now));
    }

    /// A plain directory is read until two reads agree, so a set caught mid-rotation (the new
    /// `token` written, the deadline not yet) is never taken.
    #[test]
    fn a_plain_directory_is_read_until_two_reads_agree() {
        let reads = Cell::new(0);
        // The first read sees a half-written rotation, the later ones the finished one.
        let stable = read_until_stable(|| {
            reads.set(reads.get() + 1);
            Ok(if reads.get() == 1 { "half" } else { "whole" })
        });
        assert_eq!(stable.unwrap().unwrap(), "whole");
        assert_eq!(reads.get(), 3, "half, whole, whole");

        // Files that never settle: no set is taken (the tokens in force stay).
        let reads = Cell::new(0);
        let restless = read_until_stable(|| {
            reads.set(reads.get() + 1);
            Ok(reads.get())
        });
        assert!(restless.is_none());
        assert_eq!(reads.get(), CONSISTENT_READ_ATTEMPTS + 1);

        // And on a real directory the two reads agree at once.
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "token", "t");
        assert!(read_consistent(dir.path()).is_ok());
    }
}
