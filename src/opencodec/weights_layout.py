"""Weight files and state-dict layouts: reading, key conversion, configuration from shapes.

``read_weights`` reads ``.th``/``.pt``/``.pth``/``.bin``/``.ckpt`` (``torch.load`` with
``weights_only=True``) or ``.safetensors`` files (with the configuration that ``save_model``
stores in their metadata). ``normalize_keys`` renames the Hugging Face layout
(``encoder.layers.N.conv.*``, ``quantizer.layers.N.codebook.*``) and the newer
``parametrizations.weight.original0/1`` names to the official one (``weight_g``/``weight_v``).
``infer_config`` reads the architecture off the tensor shapes, and ``model_from_state_dict``
builds a model strictly: a missing, unexpected or mis-shaped tensor is a ``ModelLoadError``
that names it.
"""

from __future__ import annotations

import dataclasses
import json
import math
import numbers
import re
import typing as tp
from pathlib import Path

import torch

from .errors import EntropyModelAsCodecError, ModelLoadError
from .model import EncodecConfig, EncodecModel
from .model_config import CONFIG_METADATA_KEY, OFFICIAL_CONFIGS  # (defined there, torch-free)
INFERENCE_ONLY_KEY = "opencodec_inference_only"
TORCH_SUFFIXES = {".th", ".pt", ".pth", ".bin", ".ckpt"}

StateDict = dict[str, torch.Tensor]
_TRAINING_BUFFER_SUFFIXES = ("._codebook.embed_avg", "._codebook.cluster_size")


# -- reading weight files ------------------------------------------------------------------
def read_weights(path: Path) -> tuple[StateDict, dict[str, tp.Any] | None]:
    """Tensors and (if stored) the configuration dict of a weights file. ``ModelLoadError``
    for a file that cannot be used; :class:`~opencodec.errors.EntropyModelAsCodecError` (a
    ``ModelLoadError`` too) for a ``train-lm`` training checkpoint, which holds an entropy model."""
    suffix = path.suffix.lower()
    if suffix == ".safetensors":
        return _read_safetensors(path)
    if suffix not in TORCH_SUFFIXES:
        raise ModelLoadError(f"{path}: unknown weights format {suffix!r}; expected .safetensors or "
                             f"one of {', '.join(sorted(TORCH_SUFFIXES))}")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for bad or unsafe pickles
        raise ModelLoadError(f"{path}: cannot load as a PyTorch state dict "
                             f"({_torch_load_reason(path, exc)})") from exc
    config = None
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        config = obj.get("config")
        obj = obj["state_dict"]
    if isinstance(obj, dict) and {"model", "step"} <= set(obj) and ({"optim", "opt_g"} & set(obj)):
        if "codec_hash" in obj:  # a train-lm run's: its export is an entropy model, not a codec
            export = Path(path).with_name("lm.safetensors")
            raise EntropyModelAsCodecError(
                f"{path} is a train-lm training checkpoint (model, optimiser and step {obj['step']}), "
                f"not codec weights: it holds an entropy model",
                f"pass --lm-model {export} (load_lm_model in Python), which the run exports next to "
                f"it at every checkpoint")
        export = Path(path).with_name("model.safetensors")
        raise ModelLoadError(f"{path} is a training checkpoint (model, optimiser and step "
                             f"{obj['step']}), not model weights: load {export}, which the run "
                             f"exports next to it at every checkpoint")
    problem = _state_dict_problem(obj)
    if problem:
        raise ModelLoadError(f"{path}: {problem}")
    if config is not None and not isinstance(config, dict):
        raise ModelLoadError(f"{path}: 'config' must be a dict, got {type(config).__name__}")
    return dict(obj), config


def _state_dict_problem(obj: object) -> str | None:
    """Why ``obj`` is not a state dict (a dict of tensors keyed by str names), or None."""
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        return "expected a dict of tensors (a state dict)"
    bad = [k for k in obj if not isinstance(k, str)]
    if bad:
        return (f"expected a dict of tensors (a state dict) keyed by names, got key {bad[0]!r:.40} "
                f"({type(bad[0]).__name__})")
    return None


_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def _torch_load_reason(path: Path, exc: Exception) -> str:
    """Why ``torch.load(weights_only=True)`` refused ``path``, in one line: our words for a
    file that is not a PyTorch file or holds objects other than tensors (never torch's
    advice to retry with ``weights_only=False``, which would run the file's code), else the
    first line of torch's message; terminal escapes removed."""
    try:
        with open(path, "rb") as f:
            start = f.read(4)
    except OSError as err:
        return f"cannot read it: {err.strerror or err}"
    text = _ANSI.sub("", str(exc))
    if not start:
        return "the file is empty"
    if not start.startswith(b"PK\x03\x04") and start[:1] != b"\x80":
        return "not a PyTorch file: neither a torch.save zip archive nor a pickle"
    found = re.search(r"Unsupported global: GLOBAL (\S+)", text)
    if found:
        return (f"it holds Python objects other than tensors ({found.group(1)}), which are not "
                f"loaded: unpickling them could run code")
    detail = re.search(r"WeightsUnpickler error:\s*(\S[^\n]*)", text)
    line = detail.group(1) if detail else next((ln.strip() for ln in text.splitlines() if ln.strip()), "")
    return f"{type(exc).__name__}: {line}" if line else type(exc).__name__


def _read_safetensors(path: Path) -> tuple[StateDict, dict[str, tp.Any] | None]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file, safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise ModelLoadError(f"{path}: cannot read safetensors file ({exc})") from exc
    config = None
    if CONFIG_METADATA_KEY in metadata:
        try:
            config = json.loads(metadata[CONFIG_METADATA_KEY])
        except (ValueError, RecursionError) as exc:
            reason = "nested too deep" if isinstance(exc, RecursionError) else str(exc)
            raise ModelLoadError(f"{path}: metadata {CONFIG_METADATA_KEY!r} is not valid JSON ({reason})") from None
        if config is not None and not isinstance(config, dict):  # as read_weights says of a .th 'config'
            raise ModelLoadError(f"{path}: metadata {CONFIG_METADATA_KEY!r} must be a JSON object, got "
                                 f"{type(config).__name__}")
    if metadata.get(INFERENCE_ONLY_KEY) == "1":
        tensors = _restore_training_buffers(tensors)
    return tensors, config


def _restore_training_buffers(state: StateDict) -> StateDict:
    """Refill what an inference-only export dropped: each codebook's EMA sum is its entries
    (``embed_avg = embed``) with unit cluster sizes. Decoding never reads them; the trainer
    (``init_from``) replaces them with statistics estimated on training audio, since unit
    sizes would let dead-code expiry replace most entries at the first step."""
    out = dict(state)
    for key, value in state.items():
        if key.endswith("._codebook.embed"):
            prefix = key[: -len(".embed")]
            out.setdefault(prefix + ".embed_avg", value.clone())
            out.setdefault(prefix + ".cluster_size", torch.ones(value.shape[0], dtype=value.dtype))
    return out


# -- key layouts ---------------------------------------------------------------------------
_PARAMETRIZATION = re.compile(r"\.parametrizations\.weight\.original([01])$")


def normalize_keys(state: StateDict, expected: tp.Collection[str] | None = None) -> StateDict:
    """Rename keys from the Hugging Face or ``parametrizations`` layouts to the official one.

    ``expected`` (the target model's keys) resolves the one ambiguity of the Hugging Face
    layout, whether ``layers.N.conv`` is a conv or a transposed conv.
    """
    out: StateDict = {}
    for key, value in state.items():
        new = _PARAMETRIZATION.sub(lambda m: ".weight_g" if m.group(1) == "0" else ".weight_v", key)
        if new.startswith(("encoder.layers.", "decoder.layers.")) or ".codebook." in new \
                and new.startswith("quantizer.layers."):
            new = _from_hf(new, expected)
        out[new] = value
    return out


def _from_hf(key: str, expected: tp.Collection[str] | None) -> str:
    if key.startswith("quantizer.layers."):
        return key.replace("quantizer.layers.", "quantizer.vq.layers.", 1).replace(".codebook.", "._codebook.")
    key = key.replace(".layers.", ".model.", 1)
    if ".lstm." in key:
        return key
    # "<prefix>.conv.<param>" or "<prefix>.norm.<param>" -> official wrapper paths.
    prefix, kind, param = key.rsplit(".", 2)
    candidates = ([f"{prefix}.conv.conv.{param}", f"{prefix}.convtr.convtr.{param}"] if kind == "conv"
                  else [f"{prefix}.conv.norm.{param}", f"{prefix}.convtr.norm.{param}"])
    if expected is not None:
        for cand in candidates:
            if cand in expected:
                return cand
    return candidates[0]


# -- configuration from weights ------------------------------------------------------------
def _conv_weight(state: StateDict, prefix: str) -> torch.Tensor | None:
    for suffix in (".conv.conv.weight_v", ".conv.conv.weight"):
        if prefix + suffix in state:
            return state[prefix + suffix]
    return None


def infer_config(state: StateDict) -> EncodecConfig:
    """Architecture sizes read off an (official-layout) state dict.

    Sample rate, causality, segmenting and bandwidths are not in the weights: when the
    sizes match an official model its configuration is returned; otherwise the
    EnCodec 24 kHz defaults fill them in and the caller should supply a config.
    :class:`~opencodec.errors.EntropyModelAsCodecError` for an entropy model's state dict.
    """
    first = _conv_weight(state, "encoder.model.0")
    if first is None:
        if "emb.0.weight" in state and "transformer.layers.0.linear1.weight" in state:
            raise EntropyModelAsCodecError("this is an entropy model, not a codec",
                                           "use --lm-model (Python: load_lm_model(PATH, codec=...))",
                                           joiner=": ")
        raise ModelLoadError("not an EnCodec state dict: no encoder.model.0 convolution weight "
                             f"(first keys: {', '.join(list(state)[:5])})")
    if "encoder.model.0.conv.conv.weight_g" in state:
        norm = "weight_norm"
    elif "encoder.model.0.conv.norm.weight" in state:
        norm = "time_group_norm"
    else:
        norm = "none"
    n_filters, channels, kernel_size = first.shape
    indices = sorted({int(k.split(".")[2]) for k in state if k.startswith("encoder.model.")})
    blocks = [i for i in indices if any(k.startswith(f"encoder.model.{i}.block.") for k in state)]
    lstm_idx = [i for i in indices if f"encoder.model.{i}.lstm.weight_ih_l0" in state]
    convs = [i for i in indices if i not in blocks and i not in lstm_idx and _conv_weight(state, f"encoder.model.{i}") is not None]
    down = convs[1:-1]
    ratios = [int(_conv_weight(state, f"encoder.model.{i}").shape[-1]) // 2 for i in down]  # type: ignore[union-attr]
    last = _conv_weight(state, f"encoder.model.{convs[-1]}")
    assert last is not None
    lstm_layers = 0
    if lstm_idx:
        lstm_layers = sum(1 for k in state if k.startswith(f"encoder.model.{lstm_idx[0]}.lstm.weight_ih_l"))
    n_q = len({k.split(".")[3] for k in state if k.startswith("quantizer.vq.layers.") and k.endswith("._codebook.embed")})
    embed = state.get("quantizer.vq.layers.0._codebook.embed")
    if embed is None:
        raise ModelLoadError("not an EnCodec state dict: no quantizer.vq.layers.0._codebook.embed")
    res_kernel, compress, true_skip = 3, 2, False
    if blocks:
        b1 = _conv_weight(state, f"encoder.model.{blocks[0]}.block.1")
        if b1 is not None:
            res_kernel = int(b1.shape[-1])
            compress = max(1, int(b1.shape[1]) // max(1, int(b1.shape[0])))
        true_skip = _conv_weight(state, f"encoder.model.{blocks[0]}.shortcut") is None
    sizes = dict(
        channels=int(channels), norm=norm, n_filters=int(n_filters), kernel_size=int(kernel_size),
        ratios=list(reversed(ratios)), n_residual_layers=len(blocks) // max(1, len(ratios)),
        lstm=lstm_layers, dimension=int(last.shape[0]), last_kernel_size=int(last.shape[-1]),
        n_q=n_q, bins=int(embed.shape[0]), residual_kernel_size=res_kernel, compress=compress,
        true_skip=true_skip)
    for factory in OFFICIAL_CONFIGS.values():
        official = factory()
        if all(getattr(official, k) == v for k, v in sizes.items()):
            return official
    base = EncodecConfig(causal=norm != "time_group_norm", name="unset")
    for k, v in sizes.items():
        setattr(base, k, v)
    frame_rate = base.frame_rate
    per_q = base.bins.bit_length() - 1
    base.target_bandwidths = [n * per_q * frame_rate / 1000 for n in _default_codebook_counts(n_q)]
    return base


def _default_codebook_counts(n_q: int) -> list[int]:
    counts, n = [], 2
    while n < n_q:
        counts.append(n)
        n *= 2
    return counts + [n_q]


# -- public entry points -------------------------------------------------------------------
def model_from_state_dict(state: StateDict, config: EncodecConfig | dict | None = None,
                          source: str = "state dict") -> EncodecModel:
    """Build a model from tensors (any supported key layout) and an optional config.
    ``ModelLoadError`` (prefixed with ``source``) for anything but a dict of tensors keyed by
    str names, or tensors that do not fit the architecture; ``TypeError`` for a ``config``
    that is not an ``EncodecConfig``, a dict or None (a name: ``config_for_name(name)``)."""
    problem = _state_dict_problem(state)
    if problem:
        raise ModelLoadError(f"{source}: {problem}")
    if config is not None and not isinstance(config, (dict, EncodecConfig)):
        raise TypeError(f"{source}: config must be an EncodecConfig, a dict or None (read off the "
                        f"tensors), got {type(config).__name__} {config!r:.40}")
    if isinstance(config, dict):
        try:
            config = EncodecConfig.from_dict(config)
        except (TypeError, ValueError) as exc:
            raise ModelLoadError(f"{source}: invalid model configuration ({exc})") from exc
    stored = config is not None  # else read off the tensors below, so it fits them
    problem = None if config is None else config_problem(config)
    if problem:
        raise ModelLoadError(f"{source}: invalid model configuration ({problem})")
    arch = f"the {config.name} architecture" if config is not None else ""
    if config is None:
        try:
            config = infer_config(normalize_keys(state))
        except EntropyModelAsCodecError as exc:  # keeps its type: callers give their own advice
            raise exc.with_source(source) from None
        except ModelLoadError as exc:
            raise ModelLoadError(f"{source}: {exc}") from None
        except (ValueError, IndexError, TypeError) as exc:  # e.g. a 1-D conv weight, a key "encoder.model.x"
            raise ModelLoadError(f"{source}: not an EnCodec state dict: its tensors give no architecture "
                                 f"({type(exc).__name__}: {str(exc)[:100]})") from None
        arch = (f"the {config.name} architecture (read off its tensor shapes)" if config.name != "unset"
                else "the architecture read off its tensor shapes (no stored configuration)")
    beyond = _beyond_tensors(config, state) if stored else None
    if beyond:  # before building: a damaged or hostile configuration could allocate without bound
        raise ModelLoadError(f"{source} does not match {arch}: {beyond}")
    try:
        model = EncodecModel(config)
    except (TypeError, ValueError) as exc:
        raise ModelLoadError(f"{source}: cannot build the model ({exc})") from exc
    expected = model.state_dict()
    state = normalize_keys(state, expected.keys())
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    problems = []
    if missing:
        problems.append(f"missing keys: {_short_list(missing)}")
    if unexpected:
        problems.append(f"unexpected keys: {_short_list(unexpected)}")
    shapes = [f"{k} (expected {tuple(expected[k].shape)}, got {tuple(state[k].shape)})"
              for k in sorted(set(expected) & set(state)) if expected[k].shape != state[k].shape]
    if shapes:
        problems.append(f"shape mismatch: {_short_list(shapes)}")
    if problems:
        hint = ""
        if missing and all(k.endswith(_TRAINING_BUFFER_SUFFIXES) for k in missing):
            hint = (" (only codebook training statistics are missing: an inference-only export "
                    "whose metadata was lost? re-save it with save_model)")
        raise ModelLoadError(f"{source} does not match {arch}: " + "; ".join(problems) + hint)
    model.load_state_dict(state, strict=True)
    return model.eval()


_SIZE_FIELDS = ("channels", "n_filters", "kernel_size", "last_kernel_size", "dimension", "n_q", "bins", "lstm",
                "n_residual_layers")


def _beyond_tensors(config: EncodecConfig, state: StateDict) -> str | None:
    """The sizes of ``config`` (and its strides) that are larger than those of the tensors in
    ``state`` (as :func:`infer_config` reads them), in words, or None (also when the tensors are
    no EnCodec model's: the key check names what is missing). Such a configuration never fits
    the tensors, and building it first could take any memory (``n_q`` 10**6 in a 64 kB file)."""
    try:
        found = infer_config(normalize_keys(state))
    except (ModelLoadError, ValueError, IndexError, TypeError):
        return None
    wrong = [f"{key} {getattr(config, key)} (its tensors: {getattr(found, key)})" for key in _SIZE_FIELDS
             if getattr(config, key) > getattr(found, key)]
    ratios = list(config.ratios)
    if all(isinstance(r, numbers.Integral) for r in ratios) and (
            len(ratios) > len(found.ratios) or any(a > b for a, b in zip(ratios, found.ratios))):
        wrong.append(f"ratios {ratios} (its tensors: {found.ratios})")
    return ", ".join(wrong) or None


# Integer fields that may be 0 (the trainer's config check allows the layer counts; a
# dilation base 0 computes with one residual layer); the others are >= 1.
_FIELDS_FROM_ZERO = ("n_residual_layers", "lstm", "dilation_base")


def config_problem(config: EncodecConfig) -> str | None:
    """What in ``config`` has a type or value no model can be loaded with, that
    ``EncodecModel`` does not refuse itself, in words (None when there is none): ``name`` not a
    non-empty str, ``ratios`` not a list, a bool field (``causal``, ``normalize``,
    ``true_skip``) not a bool (a stored ``"no"`` would compute as true), an integer field not
    an integer (>= 0 for ``lstm``, ``n_residual_layers`` and ``dilation_base``, else >= 1),
    ``segment`` or ``overlap`` not a number, ``target_bandwidths`` not a non-empty list of
    finite kbps > 0 (``compress`` would fail deep inside)."""
    def number(value: tp.Any) -> bool:
        return isinstance(value, numbers.Real) and not isinstance(value, bool)

    if not isinstance(config.name, str) or not config.name:
        return f"name must be a non-empty string, got {config.name!r:.60}"
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        if f.type in (bool, "bool") and not isinstance(value, bool):
            return f"{f.name} must be true or false, got {value!r:.60}"
        low = 0 if f.name in _FIELDS_FROM_ZERO else 1
        if f.type in (int, "int") and (isinstance(value, bool) or not isinstance(value, numbers.Integral)
                                       or value < low):
            return f"{f.name} must be an integer >= {low}, got {value!r:.60}"
    if not isinstance(config.ratios, (list, tuple)):
        return f"ratios must be a list of integers (the strides), got {config.ratios!r:.60}"
    if config.segment is not None and not number(config.segment):
        return f"segment must be a number of seconds or null, got {config.segment!r:.60}"
    if not number(config.overlap):
        return f"overlap must be a number (a fraction of a segment), got {config.overlap!r:.60}"
    bandwidths = config.target_bandwidths
    if not isinstance(bandwidths, (list, tuple)) or not bandwidths or not all(
            number(b) and math.isfinite(b) and b > 0 for b in bandwidths):
        return f"target_bandwidths must be a non-empty list of kbps > 0, got {bandwidths!r:.60}"
    return None


def _short_list(items: list[str], limit: int = 6) -> str:
    more = f" (+{len(items) - limit} more)" if len(items) > limit else ""
    return ", ".join(items[:limit]) + more
