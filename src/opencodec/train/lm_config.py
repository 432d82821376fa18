"""The ``train-lm`` configuration: a YAML file from ``configs/`` (``lm_tiny.yaml``,
``lm_opencodec_24khz.yaml``) plus dotted ``key=value`` overrides, checked field by field
(:func:`parse_settings`).
"""

from __future__ import annotations

import dataclasses
import math
import typing as tp

import torch

from ..errors import ConfigError  # every check's error (importable from here too)
from .config_checks import bandwidth_list, check_betas, check_number, resolve_device

# What load_lm_model builds for a weights file: 8 heads, a 3.5 s window, max period 10000.
LOADABLE_HEADS = 8
LOADABLE_PAST_SECONDS = 3.5


# -- 1. configuration --------------------------------------------------------------------------
_MISSING = object()


def _get(cfg: dict, dotted: str, kind: type | tuple[type, ...] | None, default: tp.Any = _MISSING) -> tp.Any:
    """The value at ``dotted`` (``"optim.lr"``) checked against ``kind`` (None: any value, which
    the caller checks); ``default`` if absent."""
    node: tp.Any = cfg
    *parents, leaf = dotted.split(".")
    for i, part in enumerate(parents):
        node = node.get(part) if isinstance(node, dict) else None
        if node is None:
            node = {}
        if not isinstance(node, dict):
            raise ConfigError(f"config field {'.'.join(parents[:i + 1])} must be a section, "
                              f"got {node!r}")
    value = node.get(leaf, _MISSING)
    if value is _MISSING or (value is None and default is not _MISSING):
        if default is _MISSING:
            raise ConfigError(f"config field {dotted} is missing")
        return default
    if kind is None:
        return value
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if float in kinds and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if float in kinds and isinstance(value, str):  # YAML reads 5e-4 as a string
        try:
            value = node[leaf] = float(value)  # the number, also in config.json and history.jsonl
        except ValueError:
            pass  # refused below
    if list in kinds and isinstance(value, str):
        value = [value]
    if (isinstance(value, bool) and bool not in kinds) or not isinstance(value, kinds):
        names = " or ".join(k.__name__ for k in kinds)
        raise ConfigError(f"config field {dotted}: expected {names}, got {value!r}")
    return value


def _kbps_list(cfg: dict, dotted: str) -> list[float] | None:
    """The bandwidths (kbps) at ``dotted``, None where absent or null (every bandwidth of the
    codec); a ``ConfigError`` naming the field for an empty list (no bandwidth to train) or an
    entry that is not a number (each is checked against the codec's bandwidths once it is loaded)."""
    values = _get(cfg, dotted, list, None)  # a list (a string is taken as one), or absent
    if values is not None and not values:
        raise ConfigError(f"config field {dotted}: an empty list trains no bandwidth; leave it out "
                          f"(or null) to train every bandwidth of the codec")
    return bandwidth_list(cfg, dotted)


@dataclasses.dataclass
class Settings:
    """Everything a ``train-lm`` run reads from its config (see ``configs/lm_*.yaml``)."""

    name: str
    codec: str | None
    train_manifests: list[str]
    valid_manifests: list[str]
    cache_dir: str | None
    bandwidths: list[float] | None
    dim: int
    num_heads: int
    num_layers: int
    hidden_scale: float
    past_context_s: float
    seq_len: int
    batch_size: int
    optimizer: str
    lr: float
    betas: tuple[float, float]
    weight_decay: float
    warmup_steps: int
    schedule: str
    min_lr_ratio: float
    grad_clip: float
    steps: int
    log_every: int
    valid_every: int
    checkpoint_every: int
    tensorboard: bool
    valid_max_items: int
    report_items: int
    report_manifests: list[str]
    seed: int
    threads: int | None
    device: str
    amp: str


def parse_settings(cfg: dict) -> Settings:
    """Check a loaded config and fill in the defaults (the paper's LM sizes).

    Raises :class:`ConfigError` naming the field for a missing or mistyped value, and for LM
    sizes that ``load_lm_model`` could not rebuild from the exported file (it assumes
    8 heads and a 3.5 s attention window) or the fixed-point coder could not run. A number
    written as a string (YAML reads ``5e-4`` so) is replaced by the number in ``cfg``.
    """
    s = Settings(
        name=_get(cfg, "name", str, "lm"),
        codec=_get(cfg, "codec", str, None),
        train_manifests=[str(m) for m in _get(cfg, "data.train", list, [])],
        valid_manifests=[str(m) for m in _get(cfg, "data.valid", list, [])],
        cache_dir=_get(cfg, "data.cache_dir", str, None),
        bandwidths=_kbps_list(cfg, "bandwidths"),
        dim=_get(cfg, "lm.dim", int, 200),
        num_heads=_get(cfg, "lm.num_heads", int, LOADABLE_HEADS),
        num_layers=_get(cfg, "lm.num_layers", int, 5),
        hidden_scale=_get(cfg, "lm.hidden_scale", float, 4.0),
        past_context_s=_get(cfg, "lm.past_context_s", float, LOADABLE_PAST_SECONDS),
        seq_len=_get(cfg, "seq_len", int, 300),
        batch_size=_get(cfg, "optim.batch_size", int, 32),
        optimizer=_get(cfg, "optim.name", str, "adamw").lower(),
        lr=_get(cfg, "optim.lr", float, 5e-4),
        betas=check_betas(_get(cfg, "optim.betas", None, [0.9, 0.95])),
        weight_decay=_get(cfg, "optim.weight_decay", float, 0.01),
        warmup_steps=_get(cfg, "optim.warmup_steps", int, 0),
        schedule=_get(cfg, "optim.schedule", str, "cosine").lower(),
        min_lr_ratio=_get(cfg, "optim.min_lr_ratio", float, 0.1),
        grad_clip=_get(cfg, "optim.grad_clip", float, 1.0),
        steps=_get(cfg, "optim.steps", int, 1000),
        log_every=_get(cfg, "log.every", int, 10),
        valid_every=_get(cfg, "log.valid_every", int, 500),
        checkpoint_every=_get(cfg, "log.checkpoint_every", int, 500),
        tensorboard=_get(cfg, "log.tensorboard", bool, True),
        valid_max_items=_get(cfg, "valid.max_items", int, 200),
        report_items=_get(cfg, "report.items", int, 16),
        report_manifests=[str(m) for m in _get(cfg, "report.manifests", list, [])],
        seed=_get(cfg, "seed", int, 0),
        threads=_get(cfg, "threads", int, None),
        device=_get(cfg, "device", str, "auto"),
        amp=_get(cfg, "amp", str, "none"),
    )
    positive = {"lm.dim": s.dim, "lm.num_layers": s.num_layers, "seq_len": s.seq_len,
                "optim.batch_size": s.batch_size, "optim.steps": s.steps, "log.every": s.log_every,
                "log.valid_every": s.valid_every, "log.checkpoint_every": s.checkpoint_every}
    for field, value in positive.items():
        if value < 1:
            raise ConfigError(f"config field {field} must be >= 1, got {value}")
    if s.num_heads != LOADABLE_HEADS:
        raise ConfigError(f"config field lm.num_heads is {s.num_heads}, but load_lm_model builds "
                          f"{LOADABLE_HEADS} heads, so the exported model would not load as trained")
    if s.past_context_s != LOADABLE_PAST_SECONDS:
        raise ConfigError(f"config field lm.past_context_s is {s.past_context_s:g}, but load_lm_model "
                          f"gives a weights file a {LOADABLE_PAST_SECONDS:g} s window")
    if s.dim % s.num_heads or s.dim % 2:
        raise ConfigError(f"config field lm.dim ({s.dim}) must be even and a multiple of lm.num_heads "
                          f"({s.num_heads})")
    if s.optimizer not in ("adamw", "adam"):
        raise ConfigError(f"config field optim.name: expected adamw or adam, got {s.optimizer!r}")
    if s.schedule not in ("cosine", "constant"):
        raise ConfigError(f"config field optim.schedule: expected cosine or constant, got {s.schedule!r}")
    if s.amp not in ("none", "bf16"):
        raise ConfigError(f"config field amp: expected none or bf16, got {s.amp!r}")
    check_number(cfg, "optim.lr", 0.0, open_low=True)  # > 0, as for the codec trainer
    _check_ranges(s)
    _check_loadable_sizes(s)
    resolve_device(s.device)  # one this machine has
    return s


def _check_ranges(s: Settings) -> None:
    """Refuse the numbers no run can use: negative (or NaN) counts, rates or decays, an
    infinite weight decay, ratios outside [0, 1]."""
    at_least_zero = {"optim.warmup_steps": s.warmup_steps, "optim.weight_decay": s.weight_decay,
                     "optim.grad_clip": s.grad_clip, "valid.max_items": s.valid_max_items,
                     "report.items": s.report_items, "seed": s.seed, "lm.hidden_scale": s.hidden_scale}
    for field, value in at_least_zero.items():
        if not value >= 0:  # (NaN too)
            raise ConfigError(f"config field {field} must be >= 0, got {value}")
    if math.isinf(s.weight_decay):  # (AdamW would make every weight NaN; grad_clip .inf: no clipping)
        raise ConfigError(f"config field optim.weight_decay: expected a finite number, got {s.weight_decay}")
    if s.threads is not None and s.threads < 1:
        raise ConfigError(f"config field threads must be >= 1, got {s.threads}")
    if not 0 <= s.min_lr_ratio <= 1:
        raise ConfigError(f"config field optim.min_lr_ratio must be in [0, 1], got {s.min_lr_ratio}")


def _check_loadable_sizes(s: Settings) -> None:
    """Refuse LM sizes the fixed-point coder cannot run (``FixedLM.from_float``'s limits: width
    and feed-forward width at most ``_MAX_DIM``), before any work: the run would otherwise
    train, then fail at its report, leaving an export ``--lm-model`` refuses."""
    from ..entropy.fixed_scheme import _MAX_DIM

    if s.dim > _MAX_DIM:
        raise ConfigError(f"config field lm.dim is {s.dim}, over the entropy coder's fixed-point limit of {_MAX_DIM}")
    finite = math.isfinite(s.hidden_scale)
    hidden = int(s.dim * s.hidden_scale) if finite else -1  # EntropyLM's feed-forward width
    if not 1 <= hidden <= _MAX_DIM:
        raise ConfigError(f"config field lm.hidden_scale is {s.hidden_scale:g}: lm.dim {s.dim} x {s.hidden_scale:g} "
                          f"gives a feed-forward width of {hidden if finite else s.hidden_scale:g}, outside the "
                          f"entropy coder's fixed-point limits (1 to {_MAX_DIM})")


#: The longest training window, in attention windows (``lm.past_context_s``): a longer one
#: only costs memory (the attention matrix grows with its square) and teaches nothing more.
MAX_SEQ_LEN_WINDOWS = 8


def check_seq_len(s: Settings, frame_rate: int) -> None:
    """Refuse a ``seq_len`` (frames) beyond :data:`MAX_SEQ_LEN_WINDOWS` attention windows of the
    codec's ``frame_rate`` (a window of 100000 frames asks for tens of GB)."""
    window = int(s.past_context_s * frame_rate)
    if s.seq_len > MAX_SEQ_LEN_WINDOWS * window:
        raise ConfigError(f"config field seq_len is {s.seq_len} frames, over {MAX_SEQ_LEN_WINDOWS} attention windows "
                          f"({MAX_SEQ_LEN_WINDOWS} x {window} frames: lm.past_context_s={s.past_context_s:g} s at "
                          f"{frame_rate} Hz); the paper's configs use 300")


def check_coder_limits(s: Settings, codec_name: str, codebooks: dict[float, int], card: int,
                       frame_rate: int) -> None:
    """Refuse a codec whose codes the fixed-point entropy coder cannot code, before anything is
    written: the run would otherwise train, then fail at its end when its report converts the
    export, or (no report audio) succeed with an export that ``--lm-model`` refuses.
    The limits are ``FixedLM.from_float``'s (:data:`~opencodec.entropy.fixed_scheme.MAX_N_Q`,
    ``MAX_CARD``, ``MAX_PAST_CONTEXT``) on the entropy model :func:`~.lm_model.build_lm` makes.

    Args:
        codec_name: the codec's name (for the message).
        codebooks: ``{kbps: codebook count}`` of the bandwidths trained; the model's ``n_q``
            is the largest count.
        card: entries per codebook (the codec's ``bins``).
        frame_rate: the codec's frame rate (Hz); the window ``past_context`` is
            ``int(lm.past_context_s * frame_rate)`` frames.
    """
    from ..entropy.fixed_scheme import MAX_CARD, MAX_N_Q, MAX_PAST_CONTEXT

    kbps, n_q = max(codebooks.items(), key=lambda item: (item[1], item[0]))
    if n_q > MAX_N_Q:
        field = "bandwidths" if s.bandwidths else "codec"
        fits = [b for b, n in codebooks.items() if n <= MAX_N_Q]
        hint = f" (bandwidths up to {max(fits):g} kbps are within it)" if fits else ""
        raise ConfigError(f"config field {field}: codec {codec_name} uses n_q={n_q} codebooks at {kbps:g} kbps, "
                          f"over the entropy coder's fixed-point limit of {MAX_N_Q}{hint}")
    if card > MAX_CARD:
        raise ConfigError(f"config field codec: codec {codec_name} has card={card} entries per codebook, over "
                          f"the entropy coder's fixed-point limit of {MAX_CARD}")
    past_context = int(s.past_context_s * frame_rate)  # as build_lm
    if past_context > MAX_PAST_CONTEXT:
        raise ConfigError(f"config field lm.past_context_s is {s.past_context_s:g}: at codec {codec_name}'s "
                          f"{frame_rate} Hz frame rate that is past_context={past_context} frames, over the "
                          f"entropy coder's fixed-point limit of {MAX_PAST_CONTEXT}")


def _device(want: str) -> torch.device:
    """The device config field ``device`` names, checked to exist here (``auto``: CUDA if any)."""
    return resolve_device(want)
