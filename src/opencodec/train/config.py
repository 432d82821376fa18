"""The trainers' configuration: a YAML file plus dotted ``key=value`` overrides, and the keys
an override may add (those the trainers read although a config may leave them out), so that a
typo such as ``optim.step=500`` is refused instead of silently ignored."""

from __future__ import annotations

import argparse
import contextlib
import os
import typing as tp
from pathlib import Path

from ..errors import ConfigError, OpenCodecError
from ..model import EncodecConfig

__all__ = ["CODEC_OPTIONAL_KEYS", "LM_OPTIONAL_KEYS", "codec_optional_keys", "config_errors", "load_config",
           "parse_run_arguments"]


#: The keys the codec trainer reads although a config may leave them out (each has a default),
#: as dotted paths: an override may set them. An override of a key that is neither in the
#: config nor listed here is refused as a likely typo (``optim.step=500``). Also accepted:
#: ``model.<field>`` for every :class:`~opencodec.model.EncodecConfig` field and
#: ``data.augment.<name>`` for every augmentation parameter of
#: :class:`~opencodec.data.dataset.AudioDataset` (see :func:`codec_optional_keys`).
#: Keep this list in step with what ``solver.py``, ``batches.py`` and ``step.py`` read.
CODEC_OPTIONAL_KEYS: tuple[str, ...] = (
    "name", "run_dir", "seed", "device", "threads", "max_minutes", "init", "init_from",
    "init_items", "bandwidths", "compile", "amp", "cudnn_benchmark", "tf32", "ema",
    "mel_scales", "mel_alpha",
    "data.train", "data.valid", "data.segment_seconds", "data.num_workers", "data.loader",
    "data.device_storage", "data.augment",
    "valid.items", "valid.seconds", "valid.bandwidths",
    "optim.lr", "optim.lr_disc", "optim.betas", "optim.batch_size", "optim.steps",
    "optim.steps_per_epoch", "optim.schedule", "optim.min_lr_ratio", "optim.fused",
    "optim.lr_scale", "optim.lr_reference_batch",
    "losses.l1", "losses.mel", "losses.adv", "losses.feat", "losses.commit",
    "balancer.enabled", "balancer.ema_decay",
    "adversarial.enabled", "adversarial.disc_prob", "adversarial.start_step",
    "adversarial.disc_warmup_steps", "adversarial.filters", "adversarial.negative_slope",
    "quantizer.detach_residual", "quantizer.threshold_ema_dead_code", "quantizer.decay",
    "quantizer.kmeans_iters", "quantizer.warmup_steps",
    "log.every", "log.valid_every", "log.checkpoint_every", "log.tensorboard", "log.audio",
)

#: The same for the entropy-model trainer (``opencodec train-lm``): every field that
#: :func:`opencodec.train.lm_config.parse_settings` reads, and ``run_dir``.
LM_OPTIONAL_KEYS: tuple[str, ...] = (
    "name", "run_dir", "codec", "bandwidths", "seq_len", "seed", "threads", "device", "amp",
    "data.train", "data.valid", "data.cache_dir",
    "lm.dim", "lm.num_heads", "lm.num_layers", "lm.hidden_scale", "lm.past_context_s",
    "optim.name", "optim.lr", "optim.betas", "optim.weight_decay", "optim.warmup_steps",
    "optim.schedule", "optim.min_lr_ratio", "optim.grad_clip", "optim.batch_size", "optim.steps",
    "log.every", "log.valid_every", "log.checkpoint_every", "log.tensorboard",
    "valid.max_items", "report.items", "report.manifests",
)


def codec_optional_keys() -> frozenset[str]:
    """:data:`CODEC_OPTIONAL_KEYS` with ``model.<EncodecConfig field>`` and
    ``data.augment.<AudioDataset augmentation parameter>``."""
    import dataclasses
    import inspect

    from ..data.dataset import AudioDataset

    set_by_trainer = {"self", "manifests", "segment_seconds", "sample_rate", "channels",
                      "epoch_size", "seed", "rank", "world_size"}
    augment = [name for name in inspect.signature(AudioDataset.__init__).parameters
               if name not in set_by_trainer]
    return frozenset((*CODEC_OPTIONAL_KEYS, *(f"model.{f.name}" for f in dataclasses.fields(EncodecConfig)),
                      *(f"data.augment.{name}" for name in augment)))


def _dotted_keys(node: tp.Any, prefix: str = "") -> list[str]:
    """Every key of a nested config as a dotted path (sections and leaves)."""
    if not isinstance(node, dict):
        return []
    keys = []
    for key, value in node.items():
        path = f"{prefix}{key}"
        keys += [path, *_dotted_keys(value, path + ".")]
    return keys


def _key_hint(key: str, known: tp.Collection[str]) -> str:
    """`` (did you mean ...?)`` naming the keys closest to ``key`` among ``known`` (dotted), else
    `` (keys of SECTION: ...)``, else nothing."""
    import difflib

    section, _, leaf = key.rpartition(".")
    siblings = sorted({k[len(section) + 1:].split(".")[0] for k in known if k.startswith(section + ".")}
                      if section else {k.split(".")[0] for k in known})
    by_leaf: dict[str, list[str]] = {}
    for k in sorted(known):
        by_leaf.setdefault(k.rpartition(".")[2], []).append(k)
    close = ([f"{section}.{k}" if section else k for k in difflib.get_close_matches(leaf, siblings, 2, 0.7)]
             or [k for name in difflib.get_close_matches(leaf, sorted(by_leaf), 2, 0.8) for k in by_leaf[name]])
    if close:
        return f" (did you mean {' or '.join(close)}?)"
    if siblings:
        return f" (keys{' of ' + section if section else ''}: {', '.join(siblings)})"
    return ""


def _check_override_key(cfg: dict[str, tp.Any], item: str, key: str, optional: tp.Collection[str]) -> None:
    """Raise ``ConfigError`` unless ``key`` is in ``cfg``, in ``optional`` or a section of an
    ``optional`` key, naming the closest keys (a typo such as ``optim.step``) or else the keys
    of its section. (A key under a value that is not a section is left to the caller.)"""
    present = _dotted_keys(cfg)
    if key in present or key in optional or any(k.startswith(key + ".") for k in optional):
        return
    parent: tp.Any = cfg
    for part in key.split(".")[:-1]:
        if part not in parent:
            break
        parent = parent[part]
        if not isinstance(parent, dict):
            return  # ``ema.decay`` with ``ema: 0.99``: the caller says "'ema' is not a section"
    raise ConfigError(f"override {item}: no key {key} in the config{_key_hint(key, set(present) | set(optional))}")


def _check_file_keys(cfg: dict[str, tp.Any], path: str | os.PathLike[str], known: tp.Collection[str]) -> None:
    """Refuse a key of the config file that the trainer does not read (``seq_lenn: 3``, or
    ``valid: {max_itmes: 5}``, which would silently leave the default), naming the closest
    keys as for an override. Below a key read whole (no known key goes deeper) anything goes."""
    for key in _dotted_keys(cfg):
        parts = key.split(".")
        prefixes = [".".join(parts[:i]) for i in range(1, len(parts) + 1)]
        if key in known or any(k.startswith(key + ".") for k in known) or any(
                p in known and not any(k.startswith(p + ".") for k in known) for p in prefixes[:-1]):
            continue
        raise ConfigError(f"{path}: unknown key {key}{_key_hint(key, known)}")


def _yaml_problem(exc: tp.Any) -> str:
    """A YAML parse error in one line: its problem and where (``line 3, column 7``)."""
    problem, mark = getattr(exc, "problem", None), getattr(exc, "problem_mark", None)
    if problem is None and isinstance(getattr(exc, "position", None), int):  # a character YAML refuses
        character = getattr(exc, "character", "")
        code = ord(character) if isinstance(character, str) and len(character) == 1 else character
        what = f"#x{code:04x}" if isinstance(code, int) else repr(code)
        return f"unacceptable character {what}: {getattr(exc, 'reason', 'not allowed')} (character {exc.position + 1})"
    if problem is None:
        return " ".join(str(exc).split())
    return f"{problem} (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else problem


def load_config(path: str | os.PathLike[str], overrides: tp.Sequence[str] = (),
                optional: tp.Collection[str] | None = None) -> dict[str, tp.Any]:
    """YAML config with dotted ``key=value`` overrides (values parsed as YAML), as a plain dict.

    ``optim.steps=500`` sets ``cfg["optim"]["steps"] = 500``; ``data.train=[a.jsonl,b.jsonl]``
    sets a list. A key of the file that the trainer does not read is refused (naming the
    closest keys), and a key that is not in the config is created only when the trainer reads it:
    when it is one of ``optional`` (default :func:`codec_optional_keys`; the entropy-model
    trainer passes :data:`LM_OPTIONAL_KEYS`) or a section of one; any other is refused with a
    ``ConfigError`` that names the closest keys (``optim.step=500``: did you mean optim.steps?).
    """
    import yaml

    if not Path(path).is_file():
        raise FileNotFoundError(f"no config file {path}")
    try:
        text = Path(path).read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not a YAML config: not UTF-8 text (byte {exc.start + 1}: "
                          f"{exc.object[exc.start:exc.start + 1]!r})") from exc
    try:
        cfg = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not a YAML config: {_yaml_problem(exc)}") from exc
    if not isinstance(cfg, dict):
        raise ConfigError(f"{path}: the config must be a mapping, got {type(cfg).__name__}")
    if optional is None:
        optional = codec_optional_keys()
    _check_file_keys(cfg, path, optional)
    for item in overrides:
        key, sep, text = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"override {item!r} is not key=value")
        _check_override_key(cfg, item, key, optional)
        node = cfg
        *parents, leaf = key.split(".")
        for part in parents:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(f"override {item!r}: {part!r} is not a section")
            node = child
        try:
            node[leaf] = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise ConfigError(f"override {item!r}: the value is not YAML: {_yaml_problem(exc)}") from exc
    return cfg


@contextlib.contextmanager
def config_errors() -> tp.Iterator[None]:
    """The run's set-up reads the config through constructors and helpers (the model's, the
    optimisers', ``step.py``'s, ``int()``) that refuse a bad value with a plain ``ValueError``:
    one raised there is the config's and leaves as a :class:`ConfigError` (one line; the
    original is its ``__cause__``). The loop runs outside, so that a ``ValueError`` there, a
    bug, keeps its traceback."""
    try:
        yield
    except ValueError as exc:
        if isinstance(exc, OpenCodecError):
            raise
        raise ConfigError(f"{exc} (while setting up the run; OPENCODEC_TRACEBACK=1 shows where)") from exc


def parse_run_arguments(parser: argparse.ArgumentParser, argv: tp.Sequence[str] | None,
                        config_help: str, optional_keys: tp.Collection[str] | None = None
                        ) -> tuple[argparse.Namespace, dict[str, tp.Any]]:
    """Add and parse the arguments every trainer takes (CONFIG, overrides, --run-dir,
    --max-steps, --max-minutes, --no-progress), overrides and options in any order; returns
    them and the loaded config (a bad config or override is a usage error). ``optional_keys``:
    as :func:`load_config`'s ``optional`` (the keys this trainer reads that a config may omit)."""
    from ..argtypes import positive_float, positive_int

    parser.add_argument("config", help=config_help)
    parser.add_argument("overrides", nargs="*", default=[],  # a default: else 3.11 requires it
                        help="dotted key=value overrides, e.g. optim.steps=500")
    parser.add_argument("--run-dir", default=None, help="output folder (default: run_dir in the config)")
    parser.add_argument("--max-steps", type=positive_int, default=None,
                        help="stop after this many steps (>= 1; rerun to continue)")
    parser.add_argument("--max-minutes", type=positive_float, default=None,
                        help="stop (validate, checkpoint, export) after this many minutes")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = parser.parse_intermixed_args(argv)
    try:
        cfg = load_config(args.config, args.overrides, optional_keys)
    except (FileNotFoundError, ValueError) as exc:
        parser.error(str(exc))
    return args, cfg
