"""The provenance line every benchmark prints above its table."""

import subprocess
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
from provenance import git_commit, provenance_line  # noqa: E402

from opencodec.weights_hash import weights_sha256  # noqa: E402


def test_line_names_commit_threads_and_model_hash() -> None:
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 2)
    line = provenance_line({"probe": model})
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                          cwd=Path(__file__).parent).stdout.strip()
    assert git_commit().split("+")[0] == head
    assert f"commit {git_commit()}" in line
    assert f"{torch.get_num_threads()} thread(s)" in line
    assert f"probe (weights {weights_sha256(model)[:12]})" in line
