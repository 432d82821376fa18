"""One line that says what a benchmark table was measured with.

Every benchmark prints ``provenance_line(...)`` above its table, and docs/BENCHMARKS.md keeps
that line with the table: the opencodec commit (``+dirty`` when the work tree differs from
it), torch, the CPU or GPU, the thread count and ``OMP_WAIT_POLICY``, and each model with the
first 12 hex digits of its weights' sha256 (``opencodec.weights_hash``; a random-weight model
is named by its seed's weights, so a rerun can check it measured the same ones).
"""

from __future__ import annotations

import os
import platform
import subprocess
from pathlib import Path

import torch

from opencodec.weights_hash import weights_sha256

REPO = Path(__file__).resolve().parent.parent


def git_commit() -> str:
    """Short commit of the repository, with ``+dirty`` for uncommitted tracked changes."""
    try:
        sha = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True,
                             text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO,
                               capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown (not a git checkout)"
    return sha + ("+dirty" if dirty else "")


def device_name() -> str:
    """The GPU's name when CUDA is available, else the CPU model from /proc/cpuinfo."""
    if torch.cuda.is_available():
        return torch.cuda.get_device_name(0)
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def provenance_line(models: dict[str, torch.nn.Module] | None = None) -> str:
    """``commit ..., torch ..., device ..., N thread(s), OMP_WAIT_POLICY=..., models: name (hash)``."""
    parts = [f"commit {git_commit()}", f"torch {torch.__version__}", f"device {device_name()}",
             f"{torch.get_num_threads()} thread(s)",
             f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', 'unset')}"]
    if models:
        parts.append("models: " + ", ".join(f"{name} (weights {weights_sha256(m)[:12]})"
                                            for name, m in models.items()))
    return "measured with " + "; ".join(parts)
