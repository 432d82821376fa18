"""What makes a training run reproducible and resumable, shared by the codec and the
entropy-model trainers: seeding, every random state in types ``torch.load(weights_only=True)``
reads, checkpoints written atomically, and per-step generators that every rank (and a
resumed run) derives alike."""

from __future__ import annotations

import random
import re
import typing as tp
from pathlib import Path

import numpy as np
import torch

from ..errors import ConfigError, one_line


def _unreadable_reason(exc: BaseException) -> str:
    """Why ``torch.load(weights_only=True)`` refused a file, in a few words: the unpickler's own
    reason (``Unsupported operand 103`` for bytes that are no checkpoint) without torch's advice
    to load it unsafely, else the first sentence of the error's message (a zip archive cut
    short: ``PytorchStreamReader failed reading zip archive: failed finding central directory``)."""
    text = str(exc)
    found = re.search(r"WeightsUnpickler error:\s*(.+?)\s*(?:\n\s*\n|Check the documentation|$)", text, re.S)
    if found:
        return f"not a checkpoint that torch.load reads safely: {' '.join(found[1].split())}"[:200]
    return " ".join(one_line(exc).split()).split(". ")[0][:200]  # its first sentence (torch's go on)


def load_torch_file(path: Path, map_location: tp.Any = "cpu", mmap: bool = False) -> tp.Any:
    """``torch.load(path, weights_only=True)`` (``mmap``: memory-mapped where the file's format
    allows, else read whole); a file that cannot be read (not torch's, cut short) is a
    ``ValueError`` "cannot read PATH (reason)" (:func:`_unreadable_reason`)."""
    try:
        try:
            return torch.load(path, map_location=map_location, weights_only=True, mmap=mmap)
        except Exception:  # noqa: BLE001 - mmap needs torch.save's zip format: read it whole
            if not mmap:
                raise
            return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # noqa: BLE001 - torch raises many types for a bad file
        raise ValueError(f"cannot read {path} ({_unreadable_reason(exc)})") from exc


def read_checkpoint(path: Path, map_location: tp.Any = "cpu", mmap: bool = False) -> dict[str, tp.Any]:
    """A run's ``checkpoint.pt`` (:func:`load_torch_file`); a file that cannot be read (not a
    checkpoint, cut short) or does not hold a dict is a one-line :class:`ConfigError` naming
    ``path``."""
    try:
        ckpt = load_torch_file(path, map_location, mmap)
    except ValueError as exc:
        raise ConfigError(f"{exc}: use another --run-dir") from exc.__cause__
    if not isinstance(ckpt, dict):
        raise ConfigError(f"{path} is not a training checkpoint: use another --run-dir")
    return ckpt


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


#: The optimiser settings a resume takes from the config, not from the checkpoint (none changes what
#: the optimiser's state holds).
OPTIMIZER_SETTINGS = ("lr", "betas", "eps", "weight_decay", "decoupled_weight_decay")  # (the last: adam/adamw)
#: The optimiser settings that choose its kernel (``optim.fused``): also the config's on a resume.
KERNEL_SETTINGS = ("fused",)


def load_optimizer_state(opt: torch.optim.Optimizer, state: dict[str, tp.Any]) -> None:
    """Restore ``opt``'s moments and step counts from a checkpoint's ``state``, keeping this
    invocation's :data:`OPTIMIZER_SETTINGS`: ``Optimizer.load_state_dict`` puts back the
    checkpoint's, so a resume with a changed ``optim.betas`` (which the changed-config warning
    names) would otherwise go on with the old betas. The :data:`KERNEL_SETTINGS` are this
    invocation's too (a changed ``optim.fused`` is used, and saved with the next checkpoint)."""
    configured = [{k: group[k] for k in OPTIMIZER_SETTINGS if k in group} for group in opt.param_groups]
    if isinstance(state, dict) and isinstance(state.get("param_groups"), list):  # the configured kernel
        # (optim.fused), set before loading: load_state_dict places the step counts for it
        groups = [{**saved, **{k: group[k] for k in KERNEL_SETTINGS if k in group}} if isinstance(saved, dict)
                  else saved for saved, group in zip(state["param_groups"], opt.param_groups)]
        state = {**state, "param_groups": groups + state["param_groups"][len(groups):]}
    opt.load_state_dict(state)
    for group, own in zip(opt.param_groups, configured):
        group.update(own)


def export_is_behind(export: Path, checkpoint: Path) -> bool:
    """Whether ``export`` (a run's exported model) is missing or not newer than ``checkpoint``:
    a run killed between writing its last checkpoint and that checkpoint's export. (Equal times,
    on a file system of coarse times, count as behind: exporting again gives the same file.)"""
    try:
        return export.stat().st_mtime_ns <= checkpoint.stat().st_mtime_ns
    except FileNotFoundError:
        return True


def _mismatch(state: tp.Any, module: torch.nn.Module) -> str | None:
    """How checkpoint weights ``state`` differ from ``module``'s, in a few words: the first
    tensor of another shape (``size mismatch for KEY: [8, 1, 7] in the checkpoint, [4, 1, 7]
    configured``, and how many more), else the tensors missing and extra (counted, one named);
    None when no key or shape differs."""
    if not isinstance(state, dict):
        return f"no weights of this model but a {type(state).__name__}"
    own = module.state_dict()
    shapes = [(k, list(v.shape), list(own[k].shape)) for k, v in state.items()
              if k in own and isinstance(v, torch.Tensor) and v.shape != own[k].shape]
    if shapes:
        key, theirs, ours = shapes[0]
        more = f" (and {len(shapes) - 1} more tensors of other sizes)" if len(shapes) > 1 else ""
        return f"size mismatch for {key}: {theirs} in the checkpoint, {ours} configured{more}"
    missing, extra = [k for k in own if k not in state], [k for k in state if k not in own]
    parts = ([f"{len(missing)} of the model's {len(own)} tensors missing (e.g. {missing[0]})"] if missing else []) + (
        [f"{len(extra)} tensors the model does not have (e.g. {extra[0]})"] if extra else [])
    return "; ".join(parts) or None


#: The config fields that set the sizes of the codec trainer's discriminator, with their defaults
#: (``solver.py`` builds it; the model's own fields are checked by ``check_codec_checkpoint``).
DISC_SIZES: dict[str, tp.Any] = {"adversarial.filters": 32}


def disc_size_changes(previous: tp.Any, cfg: dict) -> dict[str, tuple[tp.Any, tp.Any]]:
    """``{field: (the run's, this config's)}`` of the :data:`DISC_SIZES` fields whose values differ
    between a checkpoint's config ``previous`` and ``cfg`` (defaults filled in on both sides);
    empty where ``previous`` is not a config."""
    def at(config: tp.Any, dotted: str) -> tp.Any:
        node = config
        for part in dotted.split("."):
            node = node.get(part) if isinstance(node, dict) else None
        return DISC_SIZES[dotted] if node is None else node

    if not isinstance(previous, dict):
        return {}
    return {key: (at(previous, key), at(cfg, key)) for key in DISC_SIZES if at(previous, key) != at(cfg, key)}


def named_fields(values: dict[str, tuple[tp.Any, tp.Any]], side: int) -> str:
    """``lm.dim=32, bandwidths=null``: each field of ``values`` with its value of ``side`` (0: the run's)."""
    return ", ".join(f"{key}={'null' if pair[side] is None else pair[side]}" for key, pair in values.items())


def load_run_weights(path: Path, ckpt: dict[str, tp.Any], modules: dict[str, torch.nn.Module]) -> None:
    """Load each module's weights from checkpoint ``ckpt`` (read from ``path``); a run folder
    of another model configuration is a :class:`ConfigError` in one short line naming the first
    mismatch (a tensor of another size, or how many are missing or extra), not PyTorch's list
    of every key."""
    for key, module in modules.items():
        if key not in ckpt:
            raise ConfigError(f"{path} has no {key!r} weights; use another --run-dir")
        try:
            module.load_state_dict(ckpt[key])
        except (RuntimeError, TypeError) as exc:  # TypeError: not a state dict at all (a list...)
            reason = _mismatch(ckpt[key], module)
            if reason is None:  # another problem of the state dict: its first line, cut short
                lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
                reason = (lines[1] if len(lines) > 1 else str(exc))[:200]
            raise ConfigError(f"{path} does not match the configured model ({reason}); "
                              f"use another --run-dir") from exc
