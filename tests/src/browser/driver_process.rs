//! The chromedriver process and the Chromium it starts: launched in a process group of their
//! own with a private HOME, found again through `/proc`, killed together on drop.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

/// What chromedriver prints once it listens (`--port=0`: the kernel picked the port).
const STARTED_ON_PORT: &str = "started successfully on port ";
/// How long chromedriver may take to listen; it only forks, so seconds mean something is wrong.
const LISTEN_TIMEOUT: Duration = Duration::from_secs(20);
/// How long drop waits for the killed processes to be gone.
const EXIT_TIMEOUT: Duration = Duration::from_secs(10);
const POLL: Duration = Duration::from_millis(25);
/// Debian's Chromium proper: `/usr/bin/chromium` is a shell wrapper that sources
/// `/etc/chromium.d` and adds flags of its own; the tests want only theirs.
const DEBIAN_CHROMIUM: &str = "/usr/lib/chromium/chromium";
const NOT_INSTALLED: &str = "the console's browser tests need Debian's chromium and chromium-driver: \
     run `scripts/bootstrap browser` as root (make test does)";

/// A running chromedriver, the Chromium it launched, and the directory they live in.
pub(super) struct DriverProcess {
    child: Child,
    /// Loopback port chromedriver listens on.
    pub(super) port: u16,
    /// Holds the profile (`--user-data-dir`), HOME and chromedriver's log; its path in a
    /// command line marks a process as ours even outside the process group.
    pub(super) dir: tempfile::TempDir,
}

/// Chromium's binary: Debian's, else `chromium` on PATH.
pub(super) fn chromium_binary() -> Result<PathBuf> {
    let debian = Path::new(DEBIAN_CHROMIUM);
    if debian.is_file() {
        return Ok(debian.to_path_buf());
    }
    on_path("chromium").with_context(|| format!("chromium is not installed; {NOT_INSTALLED}"))
}

fn on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
}

impl DriverProcess {
    /// Starts chromedriver on a free loopback port and waits until it listens.
    pub(super) fn start() -> Result<Self> {
        let chromedriver = on_path("chromedriver")
            .with_context(|| format!("chromedriver is not on PATH; {NOT_INSTALLED}"))?;
        let dir = tempfile::Builder::new()
            .prefix("diloco-browser-")
            .tempdir()
            .context("failed to create the browser's directory")?;
        let home = dir.path().join("home");
        std::fs::create_dir_all(&home).context("failed to create the browser's HOME")?;
        let log_path = dir.path().join("chromedriver.log");
        let log = std::fs::File::create(&log_path).context("failed to create chromedriver.log")?;
        let child = Command::new(&chromedriver)
            .arg("--port=0")
            .current_dir(dir.path())
            // Chromium inherits this environment: its crash database and caches land in the
            // temporary directory instead of the user's ~/.config, and the crash handler (which
            // leaves the process group with setsid) carries the directory in its command line.
            .env("HOME", &home)
            .env("XDG_CONFIG_HOME", home.join(".config"))
            .env("XDG_CACHE_HOME", home.join(".cache"))
            .stdin(Stdio::null())
            .stdout(
                log.try_clone()
                    .context("failed to share chromedriver.log")?,
            )
            .stderr(log)
            // A group of its own: drop kills chromedriver and every Chromium process at once.
            .process_group(0)
            .spawn()
            .with_context(|| format!("failed to start {}", chromedriver.display()))?;
        let mut driver = Self {
            child,
            port: 0,
            dir,
        };
        driver.port = driver.wait_for_port(&log_path)?;
        Ok(driver)
    }

    fn wait_for_port(&mut self, log_path: &Path) -> Result<u16> {
        let deadline = Instant::now() + LISTEN_TIMEOUT;
        loop {
            let log = std::fs::read_to_string(log_path).unwrap_or_default();
            if let Some(port) = log
                .split_once(STARTED_ON_PORT)
                .and_then(|(_, rest)| rest.split(|c: char| !c.is_ascii_digit()).next())
                .and_then(|digits| digits.parse().ok())
            {
                return Ok(port);
            }
            if let Some(status) = self
                .child
                .try_wait()
                .context("failed to poll chromedriver")?
            {
                bail!("chromedriver exited ({status}) before listening; its output:\n{log}");
            }
            if Instant::now() > deadline {
                bail!("chromedriver did not listen within {LISTEN_TIMEOUT:?}; its output:\n{log}");
            }
            std::thread::sleep(POLL);
        }
    }

    /// Chromium's profile directory (`--user-data-dir`).
    pub(super) fn profile_dir(&self) -> PathBuf {
        self.dir.path().join("profile")
    }

    /// The process group of chromedriver and the Chromium processes it started.
    pub(super) fn process_group(&self) -> u32 {
        self.child.id()
    }

    /// The last lines chromedriver wrote, for error messages.
    pub(super) fn log_tail(&self) -> String {
        let log =
            std::fs::read_to_string(self.dir.path().join("chromedriver.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    /// Live (not zombie) processes of this browser: its process group, and any process whose
    /// command line names its directory (the crash handler sits in a session of its own).
    pub(super) fn live_processes(&self) -> Vec<u32> {
        let marker = self.dir.path().as_os_str().as_encoded_bytes();
        let group = self.process_group();
        let Ok(entries) = std::fs::read_dir("/proc") else {
            return Vec::new();
        };
        entries
            .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u32>().ok())
            .filter(|&pid| pid != std::process::id())
            .filter(|&pid| {
                let Some((state, pgrp)) = state_and_group(pid) else {
                    return false;
                };
                // A zombie runs nothing; it waits for its parent (or init) to reap it.
                state != 'Z'
                    && (pgrp == group
                        || std::fs::read(format!("/proc/{pid}/cmdline"))
                            .is_ok_and(|cmdline| contains(&cmdline, marker)))
            })
            .collect()
    }

    /// Resident memory of this browser's processes, summed.
    pub(super) fn memory(&self) -> super::Memory {
        let processes = self.live_processes();
        let field = |path: String, name: &str| -> u64 {
            let text = std::fs::read_to_string(path).unwrap_or_default();
            text.lines()
                .find_map(|line| line.strip_prefix(name))
                .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
                .unwrap_or(0)
        };
        super::Memory {
            rss_kib: processes
                .iter()
                .map(|pid| field(format!("/proc/{pid}/status"), "VmRSS:"))
                .sum(),
            pss_kib: processes
                .iter()
                .map(|pid| field(format!("/proc/{pid}/smaps_rollup"), "Pss:"))
                .sum(),
            processes: processes.len(),
        }
    }
}

/// The state letter and process group of `pid`, from `/proc/<pid>/stat`.
fn state_and_group(pid: u32) -> Option<(char, u32)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces and parentheses; the fields start after the last ')'.
    let mut fields = stat.rsplit_once(')')?.1.split_whitespace();
    let state = fields.next()?.chars().next()?;
    let _parent = fields.next()?;
    let group = fields.next()?.parse().ok()?;
    Some((state, group))
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty()
        && haystack
            .windows(needle.len())
            .any(|window| window == needle)
}

fn kill(pid: i32) {
    // SAFETY: kill has no memory-safety preconditions; a stale pid only yields ESRCH.
    unsafe {
        libc::kill(pid, libc::SIGKILL);
    }
}

impl Drop for DriverProcess {
    fn drop(&mut self) {
        // Negative: the whole group, chromedriver and every Chromium process it forked.
        if let Ok(group) = i32::try_from(self.process_group()) {
            kill(-group);
        }
        for pid in self.live_processes() {
            if let Ok(pid) = i32::try_from(pid) {
                kill(pid);
            }
        }
        // Reap chromedriver (our child); Chromium's processes are reparented to init.
        let _ = self.child.wait();
        let deadline = Instant::now() + EXIT_TIMEOUT;
        while !self.live_processes().is_empty() && Instant::now() < deadline {
            std::thread::sleep(POLL);
        }
    }
}
