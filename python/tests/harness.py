"""Real processes for the SDK's tests: the coordinator binary, Rust example workers and Python
workers (``student_worker.py``), on loopback with ports picked at run time.

Everything started through a :class:`Processes` registry is killed when the test ends (the
``processes`` fixture), and every wait is bounded.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Sequence

import httpx
import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
TESTS_DIR = Path(__file__).resolve().parent
START_TIMEOUT = 60.0
LISTENING = "diloco-coordinator listening on "
BULK_PLANE = "diloco-coordinator bulk plane on "


def bin_dir() -> Path:
    """Where the workspace binaries are: ``DILOCO_BIN_DIR``, default ``target/debug``."""
    return Path(os.environ.get("DILOCO_BIN_DIR") or REPO_ROOT / "target" / "debug")


def binary(name: str) -> Path:
    """The path of a workspace binary; fails the test with a hint when it is not built."""
    path = bin_dir() / name
    if not path.is_file():
        pytest.fail(
            f"{path} is missing: build it with `cargo build --workspace --bins` "
            "(or point DILOCO_BIN_DIR at the binaries)"
        )
    return path


def clean_env(**extra: str) -> Dict[str, str]:
    """The test's environment without ``DILOCO_*`` variables (so nothing leaks into the
    processes' configuration), plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("DILOCO_")}
    env.update(extra)
    return env


def fresh_token(label: str) -> str:
    """A token nobody could guess and that cannot appear anywhere by accident."""
    return f"{label}-{time.time_ns():x}-{os.getpid():x}"


def token_dir(path: Path, token: str) -> Path:
    """A coordinator ``token_dir`` holding ``token``, as the mounted token Secret would."""
    path.mkdir(parents=True, exist_ok=True)
    (path / "token").write_text(token)
    return path


def write_atomically(path: Path, text: str) -> None:
    """Replaces ``path``'s content in one step, as a Secret volume update does."""
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(text)
    os.replace(temporary, path)


class Process:
    """A child process whose stdout lines are collected on a thread of their own."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        env: Dict[str, str],
        stderr_path: Path,
        cwd: Optional[Path] = None,
    ) -> None:
        self.name = name
        self.lines: "queue.Queue[str]" = queue.Queue()
        self._stdout: List[str] = []
        self._stderr_path = stderr_path
        with open(stderr_path, "ab") as stderr:
            self.popen = subprocess.Popen(
                list(argv),
                cwd=cwd,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=stderr,
                text=True,
            )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.popen.stdout is not None
        for line in self.popen.stdout:
            line = line.rstrip("\n")
            self._stdout.append(line)
            self.lines.put(line)

    @property
    def pid(self) -> int:
        """The process id."""
        return self.popen.pid

    def wait_for_line(self, prefix: str, timeout: float) -> str:
        """The rest of the first new stdout line starting with ``prefix``."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"{self.name} printed no line starting with {prefix!r}")
            try:
                line = self.lines.get(timeout=min(left, 0.5))
            except queue.Empty:
                if self.popen.poll() is not None and self.lines.empty():
                    raise RuntimeError(
                        f"{self.name} exited ({self.popen.returncode}): {self.stderr()}"
                    ) from None
                continue
            if line.startswith(prefix):
                return line[len(prefix) :]

    def wait_for_event(self, event: str, timeout: float) -> Dict[str, Any]:
        """The first new JSON line of ``event`` kind (as ``student_worker.py`` prints them)."""
        prefix = json.dumps({"event": event})[:-1]
        return json.loads(prefix + self.wait_for_line(prefix, timeout))

    def events(self) -> List[Dict[str, Any]]:
        """The JSON lines printed so far."""
        out = []
        for line in list(self._stdout):
            try:
                value = json.loads(line)
            except ValueError:
                continue
            if isinstance(value, dict):
                out.append(value)
        return out

    def stderr(self) -> str:
        """What it wrote to stderr so far."""
        return self._stderr_path.read_text(errors="replace")

    def finish(self, timeout: float) -> List[Dict[str, Any]]:
        """Waits for a successful exit (at most ``timeout`` s); its JSON lines."""
        try:
            self.popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            pytest.fail(f"{self.name} did not finish within {timeout}s; output: {self._stdout}")
        self._reader.join(5)
        assert self.popen.returncode == 0, (
            f"{self.name} failed ({self.popen.returncode}):\n"
            + "\n".join(self._stdout)
            + "\n"
            + self.stderr()
        )
        return self.events()

    def kill(self) -> None:
        """SIGKILL, and reaps it."""
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGKILL)
        try:
            self.popen.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass


class Coordinator:
    """A running ``diloco-coordinator``."""

    def __init__(self, process: Process, directory: Path, url: str, bulk_url: Optional[str]):
        self.process = process
        self.dir = directory
        self.url = url
        self.bulk_url = bulk_url

    def log(self) -> str:
        """Its log so far."""
        return (self.dir / "coordinator.log").read_text(errors="replace")

    def audit(self) -> List[Dict[str, Any]]:
        """The audit records (when started with an ``audit:`` path ``audit.jsonl``)."""
        path = self.dir / "audit.jsonl"
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]

    def http(self, verify: Any = True) -> httpx.Client:
        """A plain HTTP client for direct requests."""
        return httpx.Client(base_url=self.url, trust_env=False, verify=verify, timeout=30)

    def get(self, path: str, token: Optional[str] = None, verify: Any = True) -> httpx.Response:
        """A GET with an optional bearer token."""
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        with self.http(verify) as client:
            return client.get(path, headers=headers)

    def status(self, token: Optional[str] = None, verify: Any = True) -> Dict[str, Any]:
        """``/status``."""
        response = self.get("/status", token, verify)
        assert response.status_code == 200, response.text
        return response.json()

    def metrics(self, token: Optional[str] = None, verify: Any = True) -> Dict[str, float]:
        """Unlabelled samples of ``/metrics`` by name."""
        text = self.get("/metrics", token, verify).text
        samples = {}
        for line in text.splitlines():
            if line.startswith("#") or " " not in line:
                continue
            name, value = line.split(" ", 1)
            try:
                samples[name] = float(value)
            except ValueError:
                pass
        return samples

    def wait_until(
        self,
        predicate,
        timeout: float,
        token: Optional[str] = None,
        what: str = "",
        verify: Any = True,
    ) -> Dict[str, Any]:
        """Polls ``/status`` until ``predicate(status)`` holds; the status that satisfied it."""
        deadline = time.monotonic() + timeout
        status: Dict[str, Any] = {}
        while time.monotonic() < deadline:
            status = self.status(token, verify)
            if predicate(status):
                return status
            time.sleep(0.05)
        pytest.fail(f"timed out after {timeout}s waiting for {what}; last status: {status}")


class Processes:
    """Starts the processes of one test and kills them all at its end."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self._started: List[Process] = []

    def coordinator(
        self, config: str, args: Iterable[str] = (), name: str = "coordinator"
    ) -> Coordinator:
        """Starts a coordinator in a directory of its own with ``config`` (YAML). Without a
        ``listen:`` line it binds a free loopback port; without an ``auth:`` section it runs
        with authentication disabled."""
        directory = self.tmp / name
        directory.mkdir(parents=True, exist_ok=True)
        if "listen:" not in config.split("bulk:")[0]:
            config = "listen: 127.0.0.1:0\n" + config
        if "auth:" not in config:
            config += "\nauth: {disabled: true}\n"
        (directory / "coordinator.yaml").write_text(config)
        process = Process(
            name,
            [str(binary("diloco-coordinator")), "--config", "coordinator.yaml", *args],
            env=clean_env(),
            stderr_path=directory / "coordinator.log",
            cwd=directory,
        )
        self._started.append(process)
        try:
            url = process.wait_for_line(LISTENING, START_TIMEOUT)
            bulk = process.wait_for_line(BULK_PLANE, 10) if "bulk:" in config else None
        except (TimeoutError, RuntimeError) as error:
            process.kill()
            log = (directory / "coordinator.log").read_text()
            pytest.fail(f"the coordinator did not start: {error}\n{log}")
        return Coordinator(process, directory, url, bulk)

    def python_worker(
        self, worker_id: str, args: Iterable[str] = (), env: Optional[Dict[str, str]] = None
    ) -> Process:
        """Starts ``student_worker.py`` (the SDK training the example's model)."""
        process = Process(
            f"python worker {worker_id}",
            [sys.executable, str(TESTS_DIR / "student_worker.py"), "--worker-id", worker_id, *args],
            env=clean_env(**(env or {})),
            stderr_path=self.tmp / f"python-{worker_id}.stderr",
        )
        self._started.append(process)
        return process

    def rust_worker(
        self, worker_id: str, args: Iterable[str] = (), env: Optional[Dict[str, str]] = None
    ) -> Process:
        """Starts ``diloco-example-worker``."""
        process = Process(
            f"rust worker {worker_id}",
            [str(binary("diloco-example-worker")), "--worker-id", worker_id, *args],
            env=clean_env(**(env or {})),
            stderr_path=self.tmp / f"rust-{worker_id}.stderr",
        )
        self._started.append(process)
        return process

    def kill_all(self) -> None:
        """Kills everything started (the fixture's finalizer)."""
        for process in reversed(self._started):
            process.kill()


def events(lines: List[Dict[str, Any]], event: str) -> List[Dict[str, Any]]:
    """The JSON lines of one ``event`` kind."""
    return [line for line in lines if line.get("event") == event]


def credentials_dir(
    path: Path,
    control_url: str,
    token: Optional[str] = None,
    bulk_url: Optional[str] = None,
    ca: Optional[Path] = None,
    client_cert: Optional[Path] = None,
    client_key: Optional[Path] = None,
) -> Path:
    """A directory laid out like the operator's worker credential Secret."""
    path.mkdir(parents=True, exist_ok=True)
    (path / "endpoints.json").write_text(
        json.dumps({"control": control_url, "bulk": bulk_url}, indent=2) + "\n"
    )
    if token is not None:
        (path / "token").write_text(token)
    if ca is not None:
        (path / "ca.crt").write_bytes(ca.read_bytes())
    if client_cert is not None and client_key is not None:
        (path / "tls.crt").write_bytes(client_cert.read_bytes())
        (path / "tls.key").write_bytes(client_key.read_bytes())
    return path
