"""The Rust example worker's learning task, in PyTorch (client/src/bin/example_worker/task.rs):
a student MLP learns a fixed random "teacher" MLP from noisy samples.

Same parameter names and shapes as the Rust worker's (``layer1``, ``layer2``, ``head``;
weights ``[out, in]``), and the same seeded generator (SplitMix64 + Box–Muller), so the teacher
is the same function and Rust and Python workers train one model together.
"""

from __future__ import annotations

import collections
import hashlib
import math
from typing import Dict, Tuple

import numpy as np
import torch
from torch import nn

INPUTS = 16
OUTPUTS = 4
HIDDEN = 64
TEACHER_HIDDEN = 32
_GAMMA = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)


class Rng:
    """The Rust example's generator: SplitMix64, uniforms in (0, 1), Box–Muller normals."""

    def __init__(self, seed: int) -> None:
        self._state = np.uint64(seed) ^ _GAMMA

    def _next_u64(self, n: int) -> np.ndarray:
        # SplitMix64's k-th output depends only on state + k·γ, so a batch is one expression.
        with np.errstate(over="ignore"):
            steps = np.arange(1, n + 1, dtype=np.uint64) * _GAMMA
            z = self._state + steps
            self._state = self._state + np.uint64(n) * _GAMMA
            z = (z ^ (z >> np.uint64(30))) * _MIX1
            z = (z ^ (z >> np.uint64(27))) * _MIX2
        return z ^ (z >> np.uint64(31))

    def normal(self, n: int) -> np.ndarray:
        """``n`` standard normal samples (float32)."""
        bits = self._next_u64(2 * n)
        uniform = ((bits >> np.uint64(11)).astype(np.float64) + 0.5) / float(1 << 53)
        u, v = uniform[0::2], uniform[1::2]
        return (np.sqrt(-2.0 * np.log(u)) * np.cos(2.0 * math.pi * v)).astype(np.float32)

    def tensor(self, rows: int, cols: int, scale: float) -> torch.Tensor:
        """A ``[rows, cols]`` tensor of normal samples times ``scale``."""
        values = self.normal(rows * cols) * np.float32(scale)
        return torch.from_numpy(values).reshape(rows, cols)


class Teacher:
    """The fixed function every worker learns."""

    def __init__(self) -> None:
        rng = Rng(7)
        self.w1 = rng.tensor(INPUTS, TEACHER_HIDDEN, 1.0 / math.sqrt(INPUTS))
        self.w2 = rng.tensor(TEACHER_HIDDEN, OUTPUTS, 1.0 / math.sqrt(TEACHER_HIDDEN))

    def batch(self, rng: Rng, size: int) -> Tuple[torch.Tensor, torch.Tensor]:
        """``size`` samples ``(x, y)`` drawn from ``rng``, with a little label noise."""
        x = rng.tensor(size, INPUTS, 1.0)
        noise = rng.tensor(size, OUTPUTS, 0.01)
        return x, torch.tanh(x @ self.w1) @ self.w2 + noise


def student() -> nn.Sequential:
    """The model being trained; parameter names match the Rust worker's."""
    return nn.Sequential(
        collections.OrderedDict(
            layer1=nn.Linear(INPUTS, HIDDEN),
            act1=nn.Tanh(),
            layer2=nn.Linear(HIDDEN, HIDDEN),
            act2=nn.Tanh(),
            head=nn.Linear(HIDDEN, OUTPUTS),
        )
    )


def mse(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Mean squared error of ``model`` on ``(x, y)``."""
    return nn.functional.mse_loss(model(x), y)


def params_digest(tensors: Dict[str, torch.Tensor]) -> str:
    """SHA-256 over the names and bytes of ``tensors`` in name order: equal digests, equal
    parameters bit for bit."""
    digest = hashlib.sha256()
    for name in sorted(tensors):
        digest.update(name.encode())
        digest.update(tensors[name].detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()
