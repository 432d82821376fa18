"""What makes a training run reproducible and resumable, shared by the codec and the
entropy-model trainers: seeding, every random state in types ``torch.load(weights_only=True)``
reads, checkpoints written atomically, and per-step generators that every rank (and a
resumed run) derives alike."""

from __future__ import annotations

import random
import typing as tp
from pathlib import Path

import numpy as np
import torch

from ..errors import ConfigError


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _atomic_torch_save(obj: tp.Any, path: Path) -> None:
    """``torch.save`` atomically, with the usual permissions; a full disk is an ``OutputError``
    naming ``path`` (:func:`opencodec.train.run_folder.save_checkpoint_file`)."""
    from .run_folder import save_checkpoint_file

    save_checkpoint_file(obj, path)


def _rng_state() -> dict[str, tp.Any]:
    """Every random state the loop consumes, in types ``torch.load(weights_only=True)`` reads."""
    _, keys, pos, has_gauss, gauss = np.random.get_state()
    version, py_state, py_gauss = random.getstate()
    state = {"torch": torch.get_rng_state(),
             "numpy": {"keys": keys.tolist(), "pos": int(pos), "has_gauss": int(has_gauss), "gauss": float(gauss)},
             "python": {"version": version, "state": list(py_state), "gauss": py_gauss}}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, tp.Any]) -> None:
    torch.set_rng_state(state["torch"].cpu())
    n = state["numpy"]
    np.random.set_state(("MT19937", np.array(n["keys"], dtype=np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    p = state["python"]
    random.setstate((p["version"], tuple(p["state"]), p["gauss"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])


def _step_rng(seed: int, step: int, salt: int) -> random.Random:
    """A generator that every rank (and a resumed run) derives identically for ``step``."""
    return random.Random(seed * 1_000_003 + step * 7919 + salt)


def load_run_weights(path: Path, ckpt: dict[str, tp.Any], modules: dict[str, torch.nn.Module]) -> None:
    """Load each module's weights from checkpoint ``ckpt`` (read from ``path``); a run folder
    of another model configuration is a :class:`ConfigError` naming the first mismatch."""
    try:
        for key, module in modules.items():
            module.load_state_dict(ckpt[key])
    except RuntimeError as exc:
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
        reason = lines[1] if len(lines) > 1 else str(exc)  # the first mismatch, after the heading
        raise ConfigError(f"{path} does not match the configured model ({reason}); "
                          f"use another --run-dir") from exc
