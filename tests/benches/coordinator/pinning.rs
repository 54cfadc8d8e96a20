//! Disjoint cores for the coordinator and the side that uploads to it, for the `*_pinned`
//! measurements: the deployment this is built for has its workers on other machines, so what
//! the coordinator achieves on cores of its own is the figure that matters there. Unpinned,
//! the senders (and the raw baseline's both ends) compete with it for the same cores.

use std::process::Command;

use diloco_tests::processes::CoordinatorProcess;
use serde_json::{Value, json};

/// Which cores the coordinator (and a raw baseline's receiving end) gets, and which the
/// senders get.
#[derive(Clone, Debug)]
pub struct CoreSplit {
    pub coordinator: Vec<usize>,
    pub senders: Vec<usize>,
}

impl CoreSplit {
    /// The cores this process may run on, halved: the first half for the coordinator, the
    /// rest for the senders. `None` with fewer than two cores.
    pub fn halves() -> Option<Self> {
        let cores = allowed_cores();
        if cores.len() < 2 {
            return None;
        }
        let (coordinator, senders) = cores.split_at(cores.len() / 2);
        Some(Self {
            coordinator: coordinator.to_vec(),
            senders: senders.to_vec(),
        })
    }

    pub fn json(&self) -> Value {
        json!({"coordinator_cores": self.coordinator, "sender_cores": self.senders})
    }
}

/// While it lives, a coordinator runs on its cores and this process (the senders) on the
/// others; dropping it gives this process back every core it had.
pub struct ProcessPin {
    previous: Vec<usize>,
}

impl ProcessPin {
    pub fn split(coordinator: &CoordinatorProcess, split: &CoreSplit) -> Self {
        let previous = allowed_cores();
        pin_process(coordinator.pid(), &split.coordinator);
        pin_process(std::process::id(), &split.senders);
        Self { previous }
    }
}

impl Drop for ProcessPin {
    fn drop(&mut self) {
        pin_process(std::process::id(), &self.previous);
    }
}

/// Every thread of `pid`, and so every thread they start later, on `cores`
/// (`taskset --all-tasks`).
fn pin_process(pid: u32, cores: &[usize]) {
    let status = Command::new("taskset")
        .args(["--all-tasks", "--pid", "--cpu-list", &cpu_list(cores)])
        .arg(pid.to_string())
        .stdout(std::process::Stdio::null())
        .status()
        .expect("taskset runs (util-linux)");
    assert!(status.success(), "taskset pinned process {pid}");
}

/// The calling thread on `cores`.
pub fn pin_current_thread(cores: &[usize]) {
    // SAFETY: a zeroed cpu_set_t is a valid empty set; CPU_SET stays within it for the
    // core numbers the kernel gave us; sched_setaffinity(0, …) reads it and affects only
    // the calling thread.
    let result = unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        for &core in cores {
            libc::CPU_SET(core, &mut set);
        }
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set)
    };
    assert_eq!(result, 0, "the thread pinned to cores {cores:?}");
}

/// The cores the calling thread may run on.
fn allowed_cores() -> Vec<usize> {
    // SAFETY: sched_getaffinity(0, …) fills the zeroed set for the calling thread; CPU_ISSET
    // reads within it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) != 0 {
            return Vec::new();
        }
        (0..libc::CPU_SETSIZE as usize)
            .filter(|&core| libc::CPU_ISSET(core, &set))
            .collect()
    }
}

fn cpu_list(cores: &[usize]) -> String {
    cores
        .iter()
        .map(usize::to_string)
        .collect::<Vec<_>>()
        .join(",")
}
