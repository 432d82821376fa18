"""Checks of the trainers' config values, made before anything is built or written: a value
the run could not use (a batch of 0 items, a probability of 2, a device this machine does not
have, a bandwidth the model cannot code) is a :class:`ConfigError` naming the field, never a
traceback from deep inside PyTorch or a silently different run. Also what a resumed run
compares with its checkpoint's config (:func:`config_changes`)."""

from __future__ import annotations

import math
import typing as tp

import torch

from ..errors import ConfigError

__all__ = ["check_codec_bandwidths", "check_codec_config", "config_changes", "resolve_device"]

#: Keys that may differ between the invocations of one run without changing what it trains
#: (where it is written, how long this invocation may take, the CPU threads and workers).
# what one invocation may set without changing the run (init_*: only a fresh start reads them)
PER_INVOCATION_KEYS = ("run_dir", "max_minutes", "threads", "data.num_workers", "init_from", "init",
                       "init_items")


def _value(cfg: dict, dotted: str) -> tp.Any:
    """The value at ``dotted`` (``"optim.lr"``), or None when it or a section is absent."""
    node: tp.Any = cfg
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def _integer(cfg: dict, dotted: str, low: int) -> None:
    """Refuse a value at ``dotted`` that is not an integer >= ``low`` (an absent one is the default)."""
    value = _value(cfg, dotted)
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"config field {dotted}: expected an integer, got {value!r}")
    if value < low:
        raise ConfigError(f"config field {dotted} must be >= {low}, got {value}")


def _number(cfg: dict, dotted: str, low: float, high: float = math.inf, *, open_low: bool = False,
            what: str = "") -> None:
    """Refuse a value at ``dotted`` that is not a number in [low, high] (``(low, high]`` with
    ``open_low``). A number written as a string (YAML reads ``1e-3`` so) counts as one."""
    value = _value(cfg, dotted)
    if value is None:
        return
    try:
        if isinstance(value, bool):
            raise TypeError
        number = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"config field {dotted}: expected a number, got {value!r}") from None
    if not (low < number if open_low else low <= number) or number > high or math.isnan(number):
        interval = f"{'(' if open_low else '['}{low:g}, {high:g}]" if high < math.inf else (
            f"{'>' if open_low else '>='} {low:g}")
        raise ConfigError(f"config field {dotted} must be {what or ('in ' + interval if high < math.inf else interval)}"
                          f", got {value!r}")


def resolve_device(want: tp.Any, local_rank: int = 0) -> torch.device:
    """The device that config field ``device`` names (``auto``: CUDA when available, else the
    CPU; ``cuda`` under torchrun: this process's GPU), checked to exist on this machine."""
    if want is None or want == "auto":
        return torch.device("cuda", local_rank) if torch.cuda.is_available() else torch.device("cpu")
    choices = "auto, cpu, cuda, cuda:N or mps"
    try:
        device = torch.device(str(want))
    except (RuntimeError, ValueError):
        raise ConfigError(f"config field device: {want!r} is not a device (expected {choices})") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"config field device is {want}, but CUDA is not available on this machine "
                              f"(torch {torch.__version__}); use device=cpu or device=auto")
        index = local_rank if device.index is None else device.index
        if index >= torch.cuda.device_count():
            raise ConfigError(f"config field device is {want}, but this machine has "
                              f"{torch.cuda.device_count()} CUDA device(s)")
        return torch.device("cuda", index)
    if device.type == "mps":
        if not torch.backends.mps.is_available():
            raise ConfigError(f"config field device is {want}, but MPS is not available on this machine")
        return device
    if device.type != "cpu":
        raise ConfigError(f"config field device: {want!r} is not supported (expected {choices})")
    return device


def check_codec_config(cfg: dict) -> None:
    """Refuse a value of the codec trainer's config that the run could not use (sizes, counts,
    durations, probabilities, the device), naming the field; called before any work."""
    for dotted in ("optim.batch_size", "optim.steps", "optim.steps_per_epoch", "log.every",
                   "log.valid_every", "log.checkpoint_every", "init_items", "quantizer.kmeans_iters"):
        _integer(cfg, dotted, 1)
    for dotted in ("data.num_workers", "valid.items", "adversarial.start_step", "adversarial.disc_warmup_steps",
                   "quantizer.warmup_steps", "seed"):
        _integer(cfg, dotted, 0)
    _integer(cfg, "threads", 1)
    for dotted in ("data.segment_seconds", "valid.seconds"):
        _number(cfg, dotted, 0.0, open_low=True)
    for dotted in ("adversarial.disc_prob", "optim.min_lr_ratio", "balancer.ema_decay", "quantizer.decay"):
        _number(cfg, dotted, 0.0, 1.0)
    if _value(cfg, "ema") not in (None, False):
        _number(cfg, "ema", 0.0, 1.0, open_low=True, what="a decay in (0, 1] (or false: no EMA copy)")
    for dotted in ("losses.l1", "losses.mel", "losses.adv", "losses.feat", "losses.commit"):
        _number(cfg, dotted, 0.0)
    for dotted in ("data.train", "data.valid"):
        if isinstance(_value(cfg, dotted), (int, float, bool)):
            raise ConfigError(f"config field {dotted}: expected a manifest path or a list of them, "
                              f"got {_value(cfg, dotted)!r}")
    resolve_device(cfg.get("device", "auto"))


def _bandwidth_list(cfg: dict, dotted: str) -> list[float] | None:
    value = _value(cfg, dotted)
    if value is None:
        return None
    values = value if isinstance(value, list) else [value]
    try:
        if any(isinstance(v, bool) for v in values):
            raise TypeError
        return [float(v) for v in values]
    except (TypeError, ValueError):
        raise ConfigError(f"config field {dotted}: expected a list of kbps, got {value!r}") from None


def check_codec_bandwidths(cfg: dict, model: tp.Any) -> tuple[list[float], list[float]]:
    """The bandwidths (kbps) the loop draws from and those validation measures: each checked
    to be one of the model's, whose every bandwidth must fit its codebooks (``n_q`` of
    ``log2(bins)`` bits at the frame rate). Called once the model is built (``init_from``
    brings its own), before the run folder is written."""
    from ..bandwidth import check_bandwidth, format_kbps

    most = model.bandwidth_for_codebooks(model.config.n_q)
    for bw in model.target_bandwidths:
        if not 0 < bw <= most + 1e-9:
            raise ConfigError(f"config field model.target_bandwidths: {format_kbps(bw)} kbps cannot be coded by "
                              f"{model.config.n_q} codebooks of {model.bins} entries at {model.frame_rate} Hz "
                              f"(at most {format_kbps(most)} kbps)")
    chosen = {}
    defaults = {"bandwidths": list(model.target_bandwidths),
                "valid.bandwidths": sorted({model.target_bandwidths[0], model.target_bandwidths[-1]})}
    for dotted, default in defaults.items():
        values = _bandwidth_list(cfg, dotted) or default
        try:
            chosen[dotted] = [float(check_bandwidth(b, model.target_bandwidths, model.name)) for b in values]
        except ValueError as exc:
            raise ConfigError(f"config field {dotted}: {exc}") from None
    return chosen["bandwidths"], chosen["valid.bandwidths"]


def _leaves(node: dict, prefix: str = "") -> dict[str, tp.Any]:
    """A nested config as ``{dotted key: value}`` of its leaves (a list is one value)."""
    out: dict[str, tp.Any] = {}
    for key, value in node.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out.update(_leaves(value, path + "."))
        else:
            out[path] = value
    return out


def config_changes(old: dict, new: dict) -> dict[str, tuple[tp.Any, tp.Any]]:
    """The leaves that differ between a run's earlier config and this invocation's, as
    ``{dotted key: (old, new)}`` (None for absent), apart from :data:`PER_INVOCATION_KEYS`."""
    before, after = _leaves(old), _leaves(new)
    return {key: (before.get(key), after.get(key)) for key in sorted(set(before) | set(after))
            if before.get(key) != after.get(key) and key not in PER_INVOCATION_KEYS}
