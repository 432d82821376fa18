"""Helpers shared by the training, entropy-model, data, evaluation and MUSHRA test files:
small synthetic signals and eval sets, the CLI runner, fixtures used in several files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from opencodec import cli

import test_train_lm


# -- the CLI runner and a tone in noise (entropy coding, eval inputs, corpus, info) --------------------------
RATE = 24_000


@pytest.fixture(autouse=True)
def _always_offline(offline: Path) -> Path:
    """Autouse in every module that imports it: no download (conftest's ``offline``)."""
    return offline


def run(capsys: pytest.CaptureFixture[str], *argv: object) -> tuple[int, str, str]:
    """``opencodec ARGV``: (exit status, stdout, stderr)."""
    code = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def tone_noise(path: Path, seconds: float, hz: float, noise: float, seed: int = 0) -> Path:
    """A sine of ``hz`` (0.3 peak) plus Gaussian noise of std ``noise``, 24 kHz mono float."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(round(seconds * RATE))) / RATE
    x = 0.3 * np.sin(2 * np.pi * hz * t) + noise * rng.standard_normal(len(t))
    sf.write(path, x.astype(np.float32), RATE, subtype="FLOAT")
    return path


# -- eval sets: noise items and manifests -------------------------------------------------------------------
SR = 24000


def noise_seconds(seconds: float, level: float = 0.1, seed: int = 0) -> np.ndarray:
    """``seconds`` of Gaussian noise of std ``level`` at ``SR``, float32 [T]."""
    rng = np.random.default_rng(seed)
    return (rng.standard_normal(int(seconds * SR)) * level).astype(np.float32)


def set_dotted(cfg: dict, dotted: str, value: object) -> None:
    """Set ``cfg``'s field ``dotted`` (``"optim.lr"``) to ``value``, creating the sections on its way."""
    *parents, leaf = dotted.split(".")
    node = cfg
    for part in parents:
        node = node.setdefault(part, {})
    node[leaf] = value


def write_category_set(folder: Path, category: str, items: dict[str, np.ndarray]) -> Path:
    """An eval set of one category: ``{name}.wav`` per item (at ``SR``) and ``eval_{category}.jsonl``."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, wav in items.items():
        sf.write(folder / f"{name}.wav", wav, SR)
    (folder / f"eval_{category}.jsonl").write_text(
        "".join(json.dumps({"path": f"{name}.wav"}) + "\n" for name in items))
    return folder


REPO = Path(__file__).resolve().parents[1]


def _noise(seconds: float = 1.2, level: float = 0.1, seed: int = 0) -> np.ndarray:
    """``seconds`` (1.2 s unless given) of Gaussian noise of std ``level`` at ``SR``, float32 [T]."""
    rng = np.random.default_rng(seed)
    return (rng.standard_normal(int(seconds * SR)) * level).astype(np.float32)


def _write_set(folder: Path, categories: dict[str, list[tuple[str, np.ndarray]]],
               subtype: str = "PCM_16") -> Path:
    """An eval set: one WAV per (relative name, signal), one manifest per category."""
    folder.mkdir(parents=True, exist_ok=True)
    for cat, items in categories.items():
        rows = []
        for name, wav in items:
            path = folder / f"{name}.wav"
            path.parent.mkdir(parents=True, exist_ok=True)
            sf.write(path, wav, SR, subtype=subtype)
            rows.append({"path": f"{name}.wav"})
        (folder / f"eval_{cat}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return folder


# -- training runs ------------------------------------------------------------------------------------------
ROOT = test_train_lm.ROOT


def _rows(run: Path) -> list[dict]:
    """Every row of ``run``/metrics.jsonl, in order."""
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def _valid_steps(run: Path) -> list[int]:
    """The steps of ``run``'s validation rows."""
    return [r["step"] for r in _rows(run) if any(k.startswith("valid/") for k in r)]
