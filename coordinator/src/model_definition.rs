//! The model definition bundle (`GET /model_def`): what a forgather worker needs to build the
//! model before `/register` fills it with parameters — configuration, Python sources,
//! tokenizer files — and never weights.
//!
//! The bundle is a tar that depends only on the files' names and bytes (sorted names, mtime 0,
//! uid/gid 0, mode 0644, no user or group names), so two coordinators serving the same
//! directory serve the same bytes, and its hash is forgather's: SHA-256 over each file's
//! archive name, a NUL byte and its bytes, in sorted name order. `/info.model_hash` folds it
//! with the parameters' hash, `sha256(param_hash + ":" + bundle_hash)`; the bundle's
//! `X-Forgather-Model-Hash` header carries that same value, so a worker that checks one
//! against the other accepts the bundle.
//!
//! Built once at start-up: the directory is read-only configuration, and a start-up error
//! ("this directory is not a model definition") beats a 500 on every worker's first request.

use std::path::{Component, Path};

use anyhow::{Context, bail};
use bytes::Bytes;
use sha2::{Digest, Sha256};

/// Weight files never go into the bundle: workers get parameters from `/register`, and a
/// definition directory that is also a checkpoint directory must not ship gigabytes.
const WEIGHT_EXTENSIONS: [&str; 10] = [
    "safetensors",
    "bin",
    "pt",
    "pth",
    "ckpt",
    "h5",
    "msgpack",
    "gguf",
    "npz",
    "onnx",
];
/// Most files in a bundle: a model definition is a handful of sources and configs.
const MAX_FILES: usize = 4096;
/// Largest bundle: tokenizer vocabularies are the big part, tens of MB at most.
const MAX_BUNDLE_BYTES: u64 = 256 << 20;
/// Longest archive name a ustar header holds (155-byte prefix + `/` + 100-byte name).
const MAX_ARCNAME: usize = 255;

/// The bundle as served, built from a definition directory.
#[derive(Clone, Debug)]
pub struct ModelDefinition {
    tar: Bytes,
    bundle_hash: String,
    files: Vec<String>,
}

impl ModelDefinition {
    /// Reads every regular file under `dir` (recursively; hidden entries, `__pycache__` and
    /// weight files left out, symbolic links refused) into a deterministic tar.
    pub fn load(dir: &Path) -> anyhow::Result<Self> {
        let mut names = Vec::new();
        collect(dir, dir, &mut names)
            .with_context(|| format!("model definition {}", dir.display()))?;
        names.sort();
        if names.is_empty() {
            bail!(
                "model definition {} holds no file to serve (weights and hidden files are left out)",
                dir.display()
            );
        }
        let mut files = Vec::with_capacity(names.len());
        let mut total = 0u64;
        for name in &names {
            let path = dir.join(name);
            let bytes = std::fs::read(&path)
                .with_context(|| format!("failed to read {}", path.display()))?;
            total += bytes.len() as u64;
            if total > MAX_BUNDLE_BYTES {
                bail!(
                    "model definition {} is larger than {} MiB: is a weight file in it?",
                    dir.display(),
                    MAX_BUNDLE_BYTES >> 20
                );
            }
            files.push((name.clone(), bytes));
        }
        Ok(Self::from_files(files))
    }

    /// The bundle of `files` (archive name, bytes), which must be sorted by name.
    fn from_files(files: Vec<(String, Vec<u8>)>) -> Self {
        let mut hasher = Sha256::new();
        let mut tar = Vec::new();
        for (name, bytes) in &files {
            hasher.update(name.as_bytes());
            hasher.update([0u8]);
            hasher.update(bytes);
            append_entry(&mut tar, name, bytes);
        }
        // Two zero blocks end the archive.
        tar.resize(tar.len() + 1024, 0);
        Self {
            tar: Bytes::from(tar),
            bundle_hash: hex(&hasher.finalize()),
            files: files.into_iter().map(|(name, _)| name).collect(),
        }
    }

    /// The tar served at `/model_def`.
    pub fn tar(&self) -> Bytes {
        self.tar.clone()
    }

    /// forgather's bundle hash.
    pub fn bundle_hash(&self) -> &str {
        &self.bundle_hash
    }

    /// The archive names, sorted.
    pub fn files(&self) -> &[String] {
        &self.files
    }
}

/// `/info.model_hash` with a definition bundle: the parameters' hash folded with the bundle's.
pub fn model_hash(param_hash: &str, bundle_hash: &str) -> String {
    hex(&Sha256::digest(format!("{param_hash}:{bundle_hash}")))
}

fn hex(digest: &[u8]) -> String {
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// Adds the archive names of the files under `dir` (relative to `root`, `/`-separated).
fn collect(root: &Path, dir: &Path, names: &mut Vec<String>) -> anyhow::Result<()> {
    let entries =
        std::fs::read_dir(dir).with_context(|| format!("cannot list {}", dir.display()))?;
    for entry in entries {
        let entry = entry?;
        let file_name = entry.file_name();
        let Some(file_name) = file_name.to_str() else {
            bail!("{} is not UTF-8", entry.path().display());
        };
        if file_name.starts_with('.') || file_name == "__pycache__" {
            continue;
        }
        let path = entry.path();
        let kind = entry.file_type()?;
        if kind.is_symlink() {
            // Following links could serve files from outside the directory.
            bail!("{} is a symbolic link", path.display());
        }
        if kind.is_dir() {
            collect(root, &path, names)?;
            continue;
        }
        if !kind.is_file() || is_weight_file(file_name) {
            continue;
        }
        let relative = path.strip_prefix(root)?;
        let name = relative
            .components()
            .map(|c| match c {
                Component::Normal(part) => part.to_str().map(str::to_string),
                _ => None,
            })
            .collect::<Option<Vec<_>>>()
            .map(|parts| parts.join("/"))
            .with_context(|| format!("{} has an unusable name", path.display()))?;
        if name.len() > MAX_ARCNAME || split_ustar_name(&name).is_none() {
            bail!("{name}: the name is too long for a tar header");
        }
        names.push(name);
        if names.len() > MAX_FILES {
            bail!("more than {MAX_FILES} files");
        }
    }
    Ok(())
}

fn is_weight_file(name: &str) -> bool {
    name.rsplit_once('.')
        .is_some_and(|(_, extension)| WEIGHT_EXTENSIONS.contains(&extension))
}

/// Splits `name` into ustar's (prefix, name) fields: the name part at most 100 bytes, the
/// prefix at most 155, split at a `/`.
fn split_ustar_name(name: &str) -> Option<(&str, &str)> {
    if name.len() <= 100 {
        return Some(("", name));
    }
    name.match_indices('/')
        .map(|(at, _)| (&name[..at], &name[at + 1..]))
        .find(|(prefix, rest)| prefix.len() <= 155 && rest.len() <= 100 && !rest.is_empty())
}

/// Appends one regular file: a 512-byte ustar header, then the data padded to 512 bytes.
fn append_entry(tar: &mut Vec<u8>, name: &str, data: &[u8]) {
    let (prefix, short) = split_ustar_name(name).unwrap_or(("", name));
    let mut header = [0u8; 512];
    let mut put = |at: usize, bytes: &[u8]| header[at..at + bytes.len()].copy_from_slice(bytes);
    put(0, short.as_bytes());
    put(100, b"0000644\0");
    put(108, b"0000000\0");
    put(116, b"0000000\0");
    put(124, format!("{:011o}\0", data.len()).as_bytes());
    put(136, b"00000000000\0");
    put(148, b"        ");
    put(156, b"0");
    put(257, b"ustar\0");
    put(263, b"00");
    put(345, prefix.as_bytes());
    let checksum: u32 = header.iter().map(|&b| u32::from(b)).sum();
    header[148..156].copy_from_slice(format!("{checksum:06o}\0 ").as_bytes());
    tar.extend_from_slice(&header);
    tar.extend_from_slice(data);
    tar.resize(tar.len().next_multiple_of(512), 0);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, bytes: &[u8]) {
        let path = dir.join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, bytes).unwrap();
    }

    #[test]
    fn the_bundle_holds_sources_and_configs_sorted_and_no_weights_or_hidden_files() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "config.json", b"{}");
        write(dir.path(), "modeling/model.py", b"class M: pass\n");
        write(dir.path(), "tokenizer.json", b"{\"vocab\": []}");
        write(dir.path(), "model.safetensors", b"weights");
        write(dir.path(), "pytorch_model.bin", b"weights");
        write(dir.path(), ".git/HEAD", b"ref");
        write(
            dir.path(),
            "modeling/__pycache__/model.cpython-311.pyc",
            b"\0",
        );
        let bundle = ModelDefinition::load(dir.path()).unwrap();
        assert_eq!(
            bundle.files(),
            ["config.json", "modeling/model.py", "tokenizer.json"]
        );
    }

    #[test]
    fn the_bundle_hash_is_forgathers_formula() {
        let bundle = ModelDefinition::from_files(vec![
            ("a.py".into(), b"x = 1\n".to_vec()),
            ("b/config.json".into(), b"{}".to_vec()),
        ]);
        let mut expected = Sha256::new();
        expected.update(b"a.py\0x = 1\n");
        expected.update(b"b/config.json\0{}");
        assert_eq!(bundle.bundle_hash(), hex(&expected.finalize()));
        assert_eq!(
            model_hash("p", bundle.bundle_hash()),
            hex(&Sha256::digest(format!("p:{}", bundle.bundle_hash())))
        );
    }

    #[test]
    fn the_tar_is_deterministic_and_well_formed() {
        let long = format!("{}/{}.py", "d".repeat(120), "m".repeat(90));
        let files = vec![
            ("config.json".to_string(), b"{\"n\": 1}".to_vec()),
            (long.clone(), vec![7u8; 1000]),
        ];
        let one = ModelDefinition::from_files(files.clone());
        let two = ModelDefinition::from_files(files);
        assert_eq!(one.tar(), two.tar(), "same files, same bytes");
        let tar = one.tar();
        // header + 1 data block, header + 2 data blocks, two end blocks
        assert_eq!(tar.len(), 512 * (2 + 3 + 2));
        let first = &tar[..512];
        assert_eq!(&first[..11], b"config.json");
        assert_eq!(&first[100..107], b"0000644", "mode 0644");
        assert_eq!(&first[136..147], b"00000000000", "mtime 0");
        assert_eq!(&first[257..263], b"ustar\0");
        let stored: u32 =
            u32::from_str_radix(std::str::from_utf8(&first[148..154]).unwrap().trim(), 8).unwrap();
        let mut blank = first.to_vec();
        blank[148..156].copy_from_slice(b"        ");
        assert_eq!(stored, blank.iter().map(|&b| u32::from(b)).sum::<u32>());
        let second = &tar[1024..1536];
        assert_eq!(
            &second[345..465],
            "d".repeat(120).as_bytes(),
            "ustar prefix"
        );
        assert_eq!(&second[..93], format!("{}.py", "m".repeat(90)).as_bytes());
        assert_eq!(&second[124..135], format!("{:011o}", 1000).as_bytes());
    }

    #[test]
    fn symbolic_links_and_empty_directories_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let empty = ModelDefinition::load(dir.path()).unwrap_err();
        assert!(format!("{empty:#}").contains("holds no file"), "{empty:#}");
        write(dir.path(), "config.json", b"{}");
        std::os::unix::fs::symlink("/etc/passwd", dir.path().join("passwd")).unwrap();
        let linked = ModelDefinition::load(dir.path()).unwrap_err();
        assert!(
            format!("{linked:#}").contains("symbolic link"),
            "{linked:#}"
        );
    }
}
