//! Writing a worker bundle to disk so that only its owner can read it: a directory of mode
//! 0700 (created, or an existing empty one of the user's that nobody else can enter) holding
//! files of mode 0600. File contents are never printed, logged or put in an error.

use std::fs::{DirBuilder, OpenOptions, Permissions};
use std::io::Write as _;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::error::PluginError;

/// Mode of the bundle directory.
pub const DIR_MODE: u32 = 0o700;
/// Mode of every file in it.
pub const FILE_MODE: u32 = 0o600;

/// One file of a bundle; `Debug` shows its name and size, never its contents.
pub struct BundleFile {
    /// The file name (a key of the Secret).
    pub name: String,
    /// What goes into it.
    pub contents: Vec<u8>,
}

impl std::fmt::Debug for BundleFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "BundleFile({}, {} bytes)",
            self.name,
            self.contents.len()
        )
    }
}

/// Why a bundle was not written.
#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    /// The target cannot be used safely; nothing was written.
    #[error("{0}")]
    Refused(String),
    /// The file system failed.
    #[error("failed to {what} {}: {source}", path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl From<BundleError> for PluginError {
    fn from(error: BundleError) -> Self {
        match error {
            BundleError::Refused(message) => PluginError::Usage(message),
            io => PluginError::Other(anyhow::Error::new(io)),
        }
    }
}

fn io<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> BundleError + 'a {
    move |source| BundleError::Io {
        what,
        path: path.to_path_buf(),
        source,
    }
}

/// Writes `files` into `dir` and returns their paths. `dir` is created with mode 0700 (its
/// parents as usual); an existing `dir` must be an empty directory (not a symlink) owned by
/// this user with no group or other permission bits. Each file is created new (never through
/// an existing file or symlink) with mode 0600. If a file fails, the ones written are removed.
pub fn write_bundle(dir: &Path, files: &[BundleFile]) -> Result<Vec<PathBuf>, BundleError> {
    prepare_dir(dir)?;
    let mut written = Vec::new();
    for file in files {
        match write_file(dir, file) {
            Ok(path) => written.push(path),
            Err(error) => {
                for path in &written {
                    let _ = std::fs::remove_file(path);
                }
                return Err(error);
            }
        }
    }
    Ok(written)
}

/// Creates `dir` (mode 0700) or checks that the existing one is safe to write secrets into.
fn prepare_dir(dir: &Path) -> Result<(), BundleError> {
    match std::fs::symlink_metadata(dir) {
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
                std::fs::create_dir_all(parent).map_err(io("create", parent))?;
            }
            // Not recursive: if something appeared at `dir` since the check, this fails
            // instead of writing into it.
            DirBuilder::new()
                .mode(DIR_MODE)
                .create(dir)
                .map_err(io("create", dir))?;
            // The umask may have taken bits away from 0700; set exactly 0700.
            std::fs::set_permissions(dir, Permissions::from_mode(DIR_MODE))
                .map_err(io("set the mode of", dir))
        }
        Err(error) => Err(io("inspect", dir)(error)),
        Ok(meta) => {
            let shown = dir.display();
            if !meta.is_dir() {
                return Err(BundleError::Refused(format!(
                    "{shown} exists and is not a directory; give --out a new directory"
                )));
            }
            // SAFETY: geteuid has no preconditions and cannot fail.
            let me = unsafe { libc::geteuid() };
            if meta.uid() != me {
                return Err(BundleError::Refused(format!(
                    "{shown} belongs to another user (uid {}); give --out a new directory",
                    meta.uid()
                )));
            }
            let mode = meta.mode() & 0o777;
            if mode & 0o077 != 0 {
                return Err(BundleError::Refused(format!(
                    "{shown} is accessible to group or others (mode {mode:04o}); run \
                     `chmod 700 {shown}` or give --out a new directory"
                )));
            }
            let mut entries = std::fs::read_dir(dir).map_err(io("read", dir))?;
            if entries.next().is_some() {
                return Err(BundleError::Refused(format!(
                    "{shown} is not empty; give --out a new or empty directory (nothing was \
                     overwritten)"
                )));
            }
            Ok(())
        }
    }
}

fn write_file(dir: &Path, file: &BundleFile) -> Result<PathBuf, BundleError> {
    // Names come from a fixed list, but a path separator would leave the directory.
    if file.name.is_empty() || file.name.contains('/') || file.name == "." || file.name == ".." {
        return Err(BundleError::Refused(format!(
            "refusing to write a bundle file named {:?}",
            file.name
        )));
    }
    let path = dir.join(&file.name);
    let mut handle = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(FILE_MODE)
        .open(&path)
        .map_err(io("create", &path))?;
    handle
        .set_permissions(Permissions::from_mode(FILE_MODE))
        .map_err(io("set the mode of", &path))?;
    handle
        .write_all(&file.contents)
        .and_then(|()| handle.sync_all())
        .map_err(io("write", &path))?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOKEN: &str = "tok-9f8e7d6c5b4a";

    fn files() -> Vec<BundleFile> {
        [
            ("token", TOKEN),
            ("ca.crt", "-----BEGIN CERTIFICATE-----\n"),
        ]
        .into_iter()
        .map(|(name, contents)| BundleFile {
            name: name.into(),
            contents: contents.as_bytes().to_vec(),
        })
        .collect()
    }

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path).unwrap().mode() & 0o777
    }

    /// A new directory is 0700 and every file 0600, whatever the umask would have given.
    #[test]
    fn a_new_directory_is_0700_with_0600_files() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("nested").join("creds");
        let written = write_bundle(&dir, &files()).unwrap();
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(written.len(), 2);
        for path in &written {
            assert_eq!(mode(path), 0o600, "{}", path.display());
        }
        assert_eq!(std::fs::read_to_string(dir.join("token")).unwrap(), TOKEN);
    }

    /// An empty private directory of the user's is used as it is.
    #[test]
    fn an_empty_private_directory_is_accepted() {
        let root = tempfile::tempdir().unwrap();
        std::fs::set_permissions(root.path(), Permissions::from_mode(0o700)).unwrap();
        write_bundle(root.path(), &files()).unwrap();
        assert_eq!(mode(&root.path().join("ca.crt")), 0o600);
    }

    /// A directory that already holds something is refused and left exactly as it was.
    #[test]
    fn a_non_empty_directory_is_refused_and_untouched() {
        let root = tempfile::tempdir().unwrap();
        std::fs::set_permissions(root.path(), Permissions::from_mode(0o700)).unwrap();
        std::fs::write(root.path().join("token"), "mine").unwrap();
        let error = write_bundle(root.path(), &files()).unwrap_err().to_string();
        assert!(error.contains("is not empty"), "{error}");
        assert_eq!(
            std::fs::read_to_string(root.path().join("token")).unwrap(),
            "mine"
        );
        assert!(!root.path().join("ca.crt").exists());
    }

    /// A directory others can read (or enter) would expose the token: refused.
    #[test]
    fn a_group_or_other_accessible_directory_is_refused() {
        for bad in [0o750, 0o705, 0o740] {
            let root = tempfile::tempdir().unwrap();
            std::fs::set_permissions(root.path(), Permissions::from_mode(bad)).unwrap();
            let error = write_bundle(root.path(), &files()).unwrap_err().to_string();
            assert!(error.contains("accessible to group or others"), "{error}");
            assert!(error.contains(&format!("{bad:04o}")), "{error}");
            assert_eq!(std::fs::read_dir(root.path()).unwrap().count(), 0);
        }
    }

    /// Someone else's directory is refused even when it is private. Only root can give a
    /// directory away, so elsewhere the test has nothing to set up and checks nothing.
    #[test]
    fn another_users_directory_is_refused() {
        let root = tempfile::tempdir().unwrap();
        std::fs::set_permissions(root.path(), Permissions::from_mode(0o700)).unwrap();
        if std::os::unix::fs::chown(root.path(), Some(65534), None).is_err() {
            return;
        }
        let error = write_bundle(root.path(), &files()).unwrap_err().to_string();
        assert!(error.contains("belongs to another user"), "{error}");
    }

    /// A file or a symlink at the target is refused, not followed.
    #[test]
    fn a_file_or_symlink_at_the_target_is_refused() {
        let root = tempfile::tempdir().unwrap();
        let file = root.path().join("file");
        std::fs::write(&file, "x").unwrap();
        let error = write_bundle(&file, &files()).unwrap_err().to_string();
        assert!(error.contains("not a directory"), "{error}");

        let target = root.path().join("elsewhere");
        std::fs::create_dir(&target).unwrap();
        std::fs::set_permissions(&target, Permissions::from_mode(0o700)).unwrap();
        let link = root.path().join("link");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        let error = write_bundle(&link, &files()).unwrap_err().to_string();
        assert!(error.contains("not a directory"), "{error}");
        assert_eq!(std::fs::read_dir(&target).unwrap().count(), 0);
    }

    /// No error or debug text about a bundle carries the token.
    #[test]
    fn nothing_shown_about_a_bundle_contains_the_token() {
        let root = tempfile::tempdir().unwrap();
        std::fs::set_permissions(root.path(), Permissions::from_mode(0o755)).unwrap();
        let error = write_bundle(root.path(), &files()).unwrap_err();
        assert!(!format!("{error} {error:?}").contains(TOKEN));
        assert!(!format!("{:?}", files()).contains(TOKEN));
        let bad_name = [BundleFile {
            name: "../token".into(),
            contents: TOKEN.into(),
        }];
        let dir = root.path().join("new");
        let error = write_bundle(&dir, &bad_name).unwrap_err();
        assert!(!format!("{error} {error:?}").contains(TOKEN));
        assert!(!root.path().join("token").exists());
    }
}
