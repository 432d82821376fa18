"""Checks of the trainers' config values, made before anything is built or written: a value
the run could not use (a batch of 0 items, a probability of 2, a device this machine does not
have, a bandwidth the model cannot code) is a :class:`ConfigError` naming the field, never a
traceback from deep inside PyTorch or a silently different run. Also what a resumed run
compares with its checkpoint's config (:func:`config_changes`), and the architecture a run
trains against its checkpoint's (:func:`check_codec_checkpoint`) and the model ``init_from``
names (:func:`init_from_config`)."""

from __future__ import annotations

import dataclasses
import math
import os
import typing as tp
from pathlib import Path

import torch

from ..config_identity import FREE_FIELDS, config_differences
from ..errors import ConfigError, EntropyModelAsCodecError, advice_for_entropy_model

if tp.TYPE_CHECKING:
    from ..model import EncodecConfig

__all__ = ["CODEC_BOOLEAN_KEYS", "RankConfigError", "check_betas", "check_codec_bandwidths",
           "check_codec_checkpoint", "check_codec_config", "check_number", "codec_field", "config_changes",
           "init_from_config", "resolve_device"]

#: The codec trainer's true/false keys, besides the boolean fields of ``EncodecConfig``
#: (``model.causal``, ...) and of the data augmentation (``data.augment.pad_short``, ...),
#: which :func:`_boolean_keys` adds. Only YAML booleans are accepted: an override's text is
#: read as YAML, so ``adversarial.enabled=false`` (or ``no``) is the boolean false, while
#: ``adversarial.enabled=maybe`` is the string 'maybe' (which ``bool()`` would take as true).
CODEC_BOOLEAN_KEYS = ("adversarial.enabled", "balancer.enabled", "log.audio", "log.tensorboard",
                      "quantizer.detach_residual", "cudnn_benchmark", "tf32")

#: ``EncodecConfig`` integer fields that may be 0 (no residual layer, no LSTM); the others are >= 1.
_MODEL_FIELDS_FROM_ZERO = ("n_residual_layers", "lstm")


class RankConfigError(ConfigError):
    """A config error of one torchrun process alone (its GPU index), which the other ranks do
    not see: every rank reports its own, where a config error common to all is said once."""


def codec_field(field: str, advice: str) -> tp.ContextManager[None]:
    """Inside the block (loading the codec a config's ``field`` names), an entropy model given
    as that codec (:class:`~opencodec.errors.EntropyModelAsCodecError`, whose loader's advice
    names ``--lm-model``, an option the trainers do not have) becomes a one-line
    :class:`ConfigError` ``config field FIELD: <problem>; <advice>``
    (:func:`~opencodec.errors.advice_for_entropy_model`, as a config error)."""
    def config_error(exc: EntropyModelAsCodecError) -> ConfigError:
        return ConfigError(f"config field {field}: {exc.problem}; {exc.advice}")
    return advice_for_entropy_model(advice, config_error)


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


def _set(cfg: dict, dotted: str, value: tp.Any) -> None:
    """Replace the (present) value at ``dotted`` with ``value``."""
    *parents, leaf = dotted.split(".")
    node = cfg
    for part in parents:
        node = node[part]
    node[leaf] = value


def _boolean(cfg: dict, dotted: str) -> None:
    """Refuse a value at ``dotted`` that is not true or false (an absent one is the default)."""
    value = _value(cfg, dotted)
    if value is not None and not isinstance(value, bool):
        raise ConfigError(f"config field {dotted}: expected true or false, got {value!r}")


def _integer(cfg: dict, dotted: str, low: int) -> None:
    """Refuse a value at ``dotted`` that is not an integer >= ``low`` (an absent one is the default)."""
    value = _value(cfg, dotted)
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"config field {dotted}: expected an integer, got {value!r}")
    if value < low:
        raise ConfigError(f"config field {dotted} must be >= {low}, got {value}")


def check_number(cfg: dict, dotted: str, low: float, high: float = math.inf, *, open_low: bool = False,
            what: str = "") -> None:
    """Refuse a value at ``dotted`` that is not a finite number in [low, high] (``(low, high]``
    with ``open_low``; infinity is refused even where ``high`` is: a learning rate or loss weight
    of ``.inf`` turns every weight to NaN). A number written as a string (YAML reads ``1e-3`` so)
    counts as one, and is replaced by the number in ``cfg`` (so that ``config.json`` and
    ``history.jsonl`` hold a number)."""
    value = _value(cfg, dotted)
    if value is None:
        return
    try:
        if isinstance(value, bool):
            raise TypeError
        number = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"config field {dotted}: expected a number, got {value!r}") from None
    if math.isinf(number):
        raise ConfigError(f"config field {dotted}: expected a finite number, got {value!r}")
    if not (low < number if open_low else low <= number) or number > high or math.isnan(number):
        interval = f"{'(' if open_low else '['}{low:g}, {high:g}]" if high < math.inf else (
            f"{'>' if open_low else '>='} {low:g}")
        raise ConfigError(f"config field {dotted} must be {what or ('in ' + interval if high < math.inf else interval)}"
                          f", got {value!r}")
    if isinstance(value, str):
        _set(cfg, dotted, number)


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
            error = RankConfigError if device.index is None and local_rank else ConfigError  # this rank's GPU
            raise error(f"config field device is {want}, but this machine has "
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
    durations, probabilities, rates, booleans, the architecture, the manifests' types, the
    device), naming the field; called before any work (the manifest files are checked after)."""
    nullable = ("log", "valid", "model") if cfg.get("init_from") else ("log", "valid")  # (null: the defaults;
    # model: init_from's model)
    for dotted in _CODEC_SECTIONS:  # (a scalar there would be an AttributeError deep in the set-up)
        _section(cfg, dotted, nullable=dotted in nullable)
    for dotted in ("optim.batch_size", "optim.steps", "optim.steps_per_epoch", "log.every",
                   "log.valid_every", "log.checkpoint_every", "init_items", "quantizer.kmeans_iters",
                   "adversarial.filters"):
        _integer(cfg, dotted, 1)
    if (_value(cfg, "init_items") or 0) > MAX_INIT_ITEMS:
        raise ConfigError(f"config field init_items must be <= {MAX_INIT_ITEMS}, got {_value(cfg, 'init_items')}: "
                          f"data-dependent init reads that many training segments into memory and runs the "
                          f"model on them in one batch (the default 16 is enough for its per-channel statistics)")
    for dotted in ("data.num_workers", "valid.items", "adversarial.start_step", "adversarial.disc_warmup_steps",
                   "quantizer.warmup_steps", "seed"):
        _integer(cfg, dotted, 0)
    _integer(cfg, "threads", 1)
    for dotted in ("data.segment_seconds", "valid.seconds", "optim.lr", "optim.lr_disc", "max_minutes"):
        check_number(cfg, dotted, 0.0, open_low=True)
    check_number(cfg, "data.segment_seconds", 0.0, MAX_SEGMENT_SECONDS, open_low=True,  # (> 0 checked above)
                 what=f"a length in seconds in (0, {MAX_SEGMENT_SECONDS:g}] (a training segment of an hour at most)")
    for dotted in ("adversarial.disc_prob", "optim.min_lr_ratio", "balancer.ema_decay", "quantizer.decay"):
        check_number(cfg, dotted, 0.0, 1.0)
    if _value(cfg, "ema") not in (None, False):
        check_number(cfg, "ema", 0.0, 1.0, open_low=True, what="a decay in (0, 1] (or false: no EMA copy)")
    for dotted in ("losses.l1", "losses.mel", "losses.adv", "losses.feat", "losses.commit"):
        check_number(cfg, dotted, 0.0)
    if _value(cfg, "optim.betas") is not None:
        check_betas(_value(cfg, "optim.betas"))
    for dotted in _boolean_keys():
        _boolean(cfg, dotted)
    _check_model(cfg)
    _check_bandwidth_lists(cfg)
    _check_mel_scales(cfg)
    _check_augment(cfg)
    for dotted in ("data.train", "data.valid"):
        _check_manifest_list(cfg, dotted)
    resolve_device(cfg.get("device", "auto"))


#: The most training segments data-dependent init (``init: data_dependent``) may use (``init_items``):
#: they are read whole and go through the model in one batch.
MAX_INIT_ITEMS = 1024

#: The longest training segment (``data.segment_seconds``, s): each of a batch's segments is read
#: whole into memory (an hour of 48 kHz stereo is 1.4 GB); a file shorter is zero-padded.
MAX_SEGMENT_SECONDS = 3600.0

#: The codec trainer's config sections: each, where present, holds ``key: value`` settings.
_CODEC_SECTIONS = ("model", "data", "valid", "optim", "losses", "balancer", "adversarial", "quantizer", "log",
                   "data.augment")


def _section(cfg: dict, dotted: str, nullable: bool = False) -> None:
    """Refuse a section at ``dotted`` (present) that is not a mapping of settings (``optim=5``,
    or ``optim:`` with nothing under it unless ``nullable``)."""
    *parents, leaf = dotted.split(".")
    node: tp.Any = cfg
    for part in parents:
        node = node.get(part) if isinstance(node, dict) else None
    if isinstance(node, dict) and leaf in node and not isinstance(node[leaf], dict) and not (
            nullable and node[leaf] is None):
        raise ConfigError(f"config field {dotted}: expected a section of key: value settings, got {node[leaf]!r}")


def check_betas(value: tp.Any, dotted: str = "optim.betas") -> tuple[float, float]:
    """Adam's ``betas`` (both trainers): two numbers in [0, 1), else a ``ConfigError``."""
    try:
        if isinstance(value, (str, bytes, dict)) or len(value) != 2 or any(isinstance(b, bool) for b in value):
            raise TypeError
        first, second = (float(b) for b in value)
    except (TypeError, ValueError):
        raise ConfigError(f"config field {dotted}: expected two numbers in [0, 1), got {value!r}") from None
    if not (0 <= first < 1 and 0 <= second < 1):
        raise ConfigError(f"config field {dotted}: each must be in [0, 1), got {[first, second]}")
    return first, second


def _annotated_bool(annotation: tp.Any) -> bool:
    """Whether a dataclass field's or parameter's annotation (a string under postponed
    evaluation) is ``bool``."""
    return annotation in (bool, "bool")


def _boolean_keys() -> list[str]:
    """:data:`CODEC_BOOLEAN_KEYS` and the boolean fields of ``model`` and ``data.augment``."""
    import dataclasses
    import inspect

    from ..data.dataset import AudioDataset
    from ..model import EncodecConfig

    model = [f"model.{f.name}" for f in dataclasses.fields(EncodecConfig) if _annotated_bool(f.type)]
    augment = [f"data.augment.{name}" for name, p in inspect.signature(AudioDataset.__init__).parameters.items()
               if _annotated_bool(p.annotation)]
    return [*CODEC_BOOLEAN_KEYS, *model, *augment]


def _check_model(cfg: dict) -> None:
    """The architecture (``model.*``, ``EncodecConfig`` fields): integer sizes >= 1 (layer
    counts >= 0), ``ratios`` a non-empty list of integers >= 1, ``target_bandwidths`` a
    non-empty list of kbps (each checked against the codebooks once the model is built)."""
    import dataclasses

    from ..model import EncodecConfig
    from ..weights_layout import config_problem

    for f in dataclasses.fields(EncodecConfig):
        if f.type in (int, "int"):
            _integer(cfg, f"model.{f.name}", 0 if f.name in _MODEL_FIELDS_FROM_ZERO else 1)
    ratios = _value(cfg, "model.ratios")
    if ratios is not None and (not isinstance(ratios, (list, tuple)) or not ratios or any(
            isinstance(r, bool) or not isinstance(r, int) or r < 1 for r in ratios)):
        raise ConfigError(f"config field model.ratios: expected a non-empty list of integers >= 1, got {ratios!r}")
    bandwidths = _value(cfg, "model.target_bandwidths")
    if bandwidths is not None and (not isinstance(bandwidths, (list, tuple)) or not bandwidths):
        raise ConfigError(f"config field model.target_bandwidths: expected a non-empty list of kbps, "
                          f"got {bandwidths!r}")
    bandwidth_list(cfg, "model.target_bandwidths")
    section = _value(cfg, "model")
    try:  # what load_model refuses (save_model too): found here, not at the first checkpoint
        config = EncodecConfig.from_dict({**EncodecConfig().to_dict(), **section}) if isinstance(section, dict) else None
    except (TypeError, ValueError):  # an unknown field: the key checks name it
        config = None
    problem = None if config is None else config_problem(config)
    if problem:
        raise ConfigError(f"config field model.{problem}")


def _check_mel_scales(cfg: dict) -> None:
    """``mel_scales: [lo, hi]``: the window exponents ``lo .. hi-1``, at least one, lo >= 2
    (a window of 4 samples, hop 1)."""
    scales = _value(cfg, "mel_scales")
    if scales is None:
        return
    if (not isinstance(scales, (list, tuple)) or len(scales) != 2
            or any(isinstance(v, bool) or not isinstance(v, int) for v in scales)):
        raise ConfigError(f"config field mel_scales: expected [lo, hi], two integers, got {scales!r}")
    if not 2 <= scales[0] < scales[1]:
        raise ConfigError(f"config field mel_scales: expected 2 <= lo < hi (windows 2^lo .. 2^(hi-1) samples), "
                          f"got {scales!r}")


def _numbers(cfg: dict, dotted: str, count: int, what: str) -> list[float] | None:
    """The ``count`` finite numbers at ``dotted`` (None when absent), else a ``ConfigError``
    saying ``what`` is expected; numbers YAML read as strings are replaced by the numbers."""
    value = _value(cfg, dotted)
    if value is None:
        return None
    try:
        if not isinstance(value, (list, tuple)) or len(value) != count or any(isinstance(v, bool) for v in value):
            raise TypeError
        numbers = [float(v) for v in value]
    except (TypeError, ValueError):
        numbers = []
    if not numbers or not all(map(math.isfinite, numbers)):
        raise ConfigError(f"config field {dotted}: expected {what}, got {value!r}")
    if any(isinstance(v, str) for v in value):
        _set(cfg, dotted, numbers)
    return numbers


def _check_augment(cfg: dict) -> None:
    """``data.augment``'s numbers (``AudioDataset``'s and the device loader's): probabilities in
    [0, 1], ``min_seconds`` >= 0, the ranges ``gain_db``, ``snr_db`` and ``rt60`` (s, > 0) as
    ``[low, high]`` and ``mix_probs`` as three weights >= 0 (1, 2 or 3 sources), not all 0; a
    bad one would otherwise fail at a random step, after the run folder is written."""
    for name in ("reverb_prob", "noisy_speech_prob", "generated_noise_prob"):
        check_number(cfg, f"data.augment.{name}", 0.0, 1.0)
    check_number(cfg, "data.augment.min_seconds", 0.0)
    for name, above_zero in (("gain_db", False), ("snr_db", False), ("rt60", True)):
        what = f"[low, high], two numbers with {'0 < ' if above_zero else ''}low <= high"
        pair = _numbers(cfg, f"data.augment.{name}", 2, what)
        if pair is not None and (pair[0] > pair[1] or (above_zero and pair[0] <= 0)):
            shown = _value(cfg, f"data.augment.{name}")
            raise ConfigError(f"config field data.augment.{name}: expected {what}, got {shown!r}")
    what = "three weights >= 0 of mixtures of 1, 2 and 3 sources, not all 0"
    weights = _numbers(cfg, "data.augment.mix_probs", 3, what)
    if weights is not None and (min(weights) < 0 or sum(weights) <= 0):
        shown = _value(cfg, "data.augment.mix_probs")
        raise ConfigError(f"config field data.augment.mix_probs: expected {what}, got {shown!r}")


def _check_manifest_list(cfg: dict, dotted: str) -> None:
    """``data.train``/``data.valid``: a manifest path or a list of paths (or of row dicts)."""
    value = _value(cfg, dotted)
    if value is None or isinstance(value, (str, os.PathLike)):
        return
    if not isinstance(value, (list, tuple)) or any(not isinstance(m, (str, os.PathLike, dict)) for m in value):
        raise ConfigError(f"config field {dotted}: expected a manifest path or a list of them, got {value!r}")


def bandwidth_list(cfg: dict, dotted: str) -> list[float] | None:
    """The kbps at ``dotted`` (one number or a list), None when absent, else a ``ConfigError``."""
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


def _check_bandwidth_lists(cfg: dict) -> None:
    """Refuse an empty ``bandwidths`` or ``valid.bandwidths`` (left out or null: the defaults
    of :func:`check_codec_bandwidths`), which would train or measure no bandwidth."""
    if bandwidth_list(cfg, "bandwidths") == []:
        raise ConfigError("config field bandwidths: an empty list trains no bandwidth; leave it out (or null) "
                          "to train every one of model.target_bandwidths")
    if bandwidth_list(cfg, "valid.bandwidths") == []:
        raise ConfigError("config field valid.bandwidths: an empty list measures no bandwidth; leave it out "
                          "(or null) for the lowest and highest of model.target_bandwidths, or set valid.items=0 "
                          "to train without validation")


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
        values = bandwidth_list(cfg, dotted) or default
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


def _partial_fine_tune_record(config: dict) -> bool:
    """Whether ``config`` (a checkpoint's) is a fine-tune (``init_from``) recorded before
    fine-tunes recorded their model's whole configuration: its ``model`` section was the
    config's (some keys), not the model's (every ``EncodecConfig`` field)."""
    from ..model import EncodecConfig

    return bool(config.get("init_from")) and isinstance(config.get("model"), dict) and \
        set(config["model"]) != {f.name for f in dataclasses.fields(EncodecConfig)}


def _model_sections(old: dict, new: dict) -> tuple[dict, dict]:
    """``old`` and ``new`` with their ``model`` sections made comparable key by key: a key a
    config leaves out trains with its ``EncodecConfig`` default, so the defaults are filled in
    (a fine-tune records its model's whole configuration); but a fine-tune recorded before that
    (``init_from``, a partial section: the config's, not the model's) says nothing of the keys it
    lacks, so only those it has are compared."""
    from ..model import EncodecConfig

    if not (isinstance(old.get("model"), dict) and isinstance(new.get("model"), dict)):
        return old, new
    fields = EncodecConfig().to_dict()
    if _partial_fine_tune_record(old):
        return old, {**new, "model": {k: v for k, v in new["model"].items() if k in old["model"]}}
    return {**old, "model": {**fields, **old["model"]}}, {**new, "model": {**fields, **new["model"]}}


def config_changes(old: dict, new: dict) -> dict[str, tuple[tp.Any, tp.Any]]:
    """The leaves that differ between a run's earlier config and this invocation's, as
    ``{dotted key: (old, new)}`` (None for absent), apart from :data:`PER_INVOCATION_KEYS`;
    ``model.*`` keys as :func:`_model_sections` compares them."""
    old, new = _model_sections(old, new)
    before, after = _leaves(old), _leaves(new)
    return {key: (before.get(key), after.get(key)) for key in sorted(set(before) | set(after))
            if _plain(before.get(key)) != _plain(after.get(key)) and key not in PER_INVOCATION_KEYS}


def _plain(value: tp.Any) -> tp.Any:
    return list(value) if isinstance(value, tuple) else value


# -- the architecture: a fine-tune's, a resumed run's ------------------------------------------------
def init_from_config(section: dict | None, loaded: EncodecConfig, source: str) -> EncodecConfig:
    """The configuration a fine-tune of ``source`` (the ``init_from`` model, whose configuration
    is ``loaded``) trains: ``loaded``, with the config's ``model.name`` and
    ``model.target_bandwidths`` where ``section`` (the config's ``model`` section) sets them
    (:data:`~opencodec.config_identity.FREE_FIELDS`: they change no weight and nothing encode or
    decode compute; which bandwidths are trained is the config's choice, checked against the
    codebooks later). Any other value ``section`` sets that changes what the model computes or
    its shapes (:func:`~opencodec.config_identity.config_differences`) and differs from
    ``loaded``'s is a one-line :class:`ConfigError` naming each such field: a fine-tune keeps
    its model's architecture, and silently training another than the config says is refused."""
    from ..model import EncodecConfig

    explicit = dict(section or {})
    wanted = EncodecConfig.from_dict({**loaded.to_dict(), **explicit})  # (an unknown field: a ValueError)
    wrong = config_differences(wanted, loaded, "init_from", shapes=True)
    if wrong:
        raise ConfigError(f"config field init_from: {source} has another architecture than the config's model "
                          f"section: {', '.join(wrong)}; a fine-tune keeps its model's architecture: remove these "
                          f"model.* keys or set them to its values (only model.name and model.target_bandwidths "
                          f"may differ)")
    return dataclasses.replace(loaded, **{k: getattr(wanted, k) for k in sorted(FREE_FIELDS) if k in explicit})


def _checkpoint_model(config: tp.Any) -> EncodecConfig | None:
    """The architecture a codec checkpoint's ``config`` trained, or None where it does not say
    reliably: no ``model`` section, or a fine-tune (``init_from``) recorded before fine-tunes
    recorded their model's whole configuration (the section was the config's, not the model's)."""
    from ..model import EncodecConfig

    section = config.get("model") if isinstance(config, dict) else None
    if not isinstance(section, dict):
        return None
    if _partial_fine_tune_record(config):
        return None
    try:
        return EncodecConfig.from_dict(section)
    except (TypeError, ValueError):
        return None


def check_codec_checkpoint(path: Path, ckpt: dict[str, tp.Any], config: EncodecConfig) -> None:
    """Refuse, in one short line and before anything is written, a ``checkpoint.pt`` (read from
    ``path``) that the codec trainer cannot resume with the model of ``config``: an entropy
    model's run (``opencodec train-lm``), anything else that is not a codec training
    checkpoint, or a codec whose recorded architecture differs from ``config`` in a field that
    changes what the model computes or its shapes (``causal``, ``n_filters``, ...: each named
    with both values). ``name`` and ``target_bandwidths`` may change on a resume (the trainer
    warns and ``history.jsonl`` records it): they change no weight, only the export's name and
    which bandwidths the following steps train (e.g. a run continued at its higher rates)."""
    if "codec_hash" in ckpt and "disc" not in ckpt:
        codec = f" of {ckpt['codec_name']}" if isinstance(ckpt.get("codec_name"), str) else ""
        raise ConfigError(f"{path.parent} holds an entropy model's run (opencodec train-lm, the entropy model"
                          f"{codec}), not a codec's: continue it with opencodec train-lm, or give this codec "
                          f"another --run-dir")
    if not isinstance(ckpt.get("model"), dict) or "disc" not in ckpt or "step" not in ckpt:
        raise ConfigError(f"{path} is not a codec training checkpoint (opencodec train writes its model, "
                          f"discriminator and step): use another --run-dir")
    previous = _checkpoint_model(ckpt.get("config"))
    wrong = [] if previous is None else config_differences(config, previous, "checkpoint", shapes=True)
    if wrong:
        raise ConfigError(f"{path} holds a codec of another architecture: {', '.join(wrong)}; resume with the "
                          f"checkpoint's model.* values (only model.name and model.target_bandwidths may change) "
                          f"or use another --run-dir")
