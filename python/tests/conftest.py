"""Fixtures: a registry of real processes per test, killed at its end."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Iterator

import pytest

TESTS_DIR = Path(__file__).resolve().parent
SRC_DIR = TESTS_DIR.parent / "src"

# The tests run against the installed package (`make test-python` installs it); straight from
# a checkout, they fall back to the sources, for this process and the workers it starts.
try:
    import diloco  # noqa: F401
except ImportError:  # pragma: no cover - depends on how the tests are run
    sys.path.insert(0, str(SRC_DIR))
    os.environ["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(SRC_DIR), os.environ.get("PYTHONPATH", "")) if p
    )

from harness import Processes  # noqa: E402


@pytest.fixture
def processes(tmp_path: Path) -> Iterator[Processes]:
    """Starts coordinators and workers for one test; kills every one of them at its end."""
    registry = Processes(tmp_path)
    try:
        yield registry
    finally:
        registry.kill_all()
