"""Finding and loading model weights: official checkpoints, Hugging Face layout, our own files.

``load_model(name_or_path)`` accepts

- ``opencodec_24khz`` (the default): the model shipped inside the package, trained by
  opencodec (``src/opencodec/weights``); an alias for the current release of its weights,
  ``opencodec_24khz_v5``. Every release has its versioned name (:mod:`opencodec.releases`);
  a release that is not shipped is read from ``<cache_dir()>/<name>.safetensors``, or the
  error says which commit has it and how to extract it. Weights are checked against the
  release's hash, and weights loaded from a file that hold a release get its name;
- a known name (``encodec_24khz``, ``encodec_48khz``): the official checkpoint file is
  looked up in the cache folder (``$OPENCODEC_CACHE``, default ``~/.cache/opencodec``;
  torch hub's checkpoint folder is also searched), downloaded from the official URL
  when it is missing (unless ``OPENCODEC_OFFLINE=1``), and its sha256 is checked against
  the prefix in the file name;
- a path to a weights file: ``.th``/``.pt``/``.pth``/``.bin`` (loaded with
  ``torch.load(weights_only=True)``: no arbitrary objects are unpickled) or
  ``.safetensors``. Keys may follow the official layout (legacy weight-norm names
  ``weight_g``/``weight_v``), the newer ``parametrizations.weight.original0/1``
  naming, or the Hugging Face layout (``encoder.layers.N.conv.*``,
  ``quantizer.layers.N.codebook.*``). A file never gives a model a registered name its
  weights are not proven to have: weights of a release get its name, other weights stored
  under a registered name load as ``<name>_custom`` (their files record their weights hash).
  An official name is kept for the official checkpoint file itself (its sha256 prefix), and
  for a copy of its weights once the official checkpoint was loaded by name in this process
  (so the same copy can load under either name, depending on what the process loaded first).

``load_lm_model(name_or_path, codec=...)`` (:mod:`opencodec.lm_loading`, re-exported here)
finds the entropy model; the names both know are in :mod:`opencodec.model_registry`.

The configuration comes from the file's metadata when it has one (files written by
``save_model``), otherwise it is inferred from the tensor shapes; weights whose
architecture is one of the official ones get that model's full configuration (sample
rate, causality, segmenting), anything else needs metadata. Loading is strict: a
missing, unexpected or mis-shaped tensor is a ``ModelLoadError`` that names it.
"""

from __future__ import annotations

import dataclasses
import json
import os
import tempfile
from pathlib import Path

import torch

from .config_identity import check_config, release_config
from .errors import EntropyModelAsCodecError, ModelLoadError
from .input_checks import check_device
# Re-exported: defined here before lm_pairing, official_files, weights_layout, model_registry and
# lm_loading were split out of this module.
from .lm_loading import load_lm_model, trained_lm_name
from .lm_pairing import (LM_METADATA_KEY, TRAINED_LM_FILE, check_lm_for_codec, check_lm_for_decoding,
                         check_lm_trained_for, lm_codec_mismatch, read_lm_info)
from .model import EncodecConfig, EncodecModel
from .model_registry import (BUNDLED_DIR, BUNDLED_LM_FRAME_RATES, BUNDLED_LMS, BUNDLED_MODELS, CODEC_LMS,
                             DEFAULT_MODEL, OFFICIAL_CHECKPOINTS, OFFICIAL_LM_CHECKPOINTS,
                             OFFICIAL_LM_FRAME_RATES, config_for_name, known_lm_models, known_models,
                             lm_name_for_codec, release_path, verify_release, weights_path)
from .official_files import ROOT_URL, cache_dir, official_file_path, sha256_prefix_ok
from .official_proof import record_official
from .releases import (CODEC_ALIAS, CODEC_RELEASES, CodecRelease, codec_release, export_name, extract_command,
                       is_registered_name, resolve_alias)
from .weights_hash import weights_sha256
from .weights_layout import (CONFIG_METADATA_KEY, INFERENCE_ONLY_KEY, OFFICIAL_CONFIGS,
                             TORCH_SUFFIXES, StateDict, config_problem, infer_config, model_from_state_dict,
                             normalize_keys, read_weights)

__all__ = [
    # loading and saving codecs (this module)
    "official_checkpoint_path", "load_model", "save_model",
    # re-exported from model_registry (names and releases) and lm_loading (entropy models)
    "known_models", "config_for_name",
    "known_lm_models", "lm_name_for_codec", "load_lm_model", "trained_lm_name",
    "OFFICIAL_CHECKPOINTS", "OFFICIAL_LM_CHECKPOINTS", "OFFICIAL_LM_FRAME_RATES", "CODEC_LMS",
    "BUNDLED_DIR", "BUNDLED_MODELS", "BUNDLED_LMS", "BUNDLED_LM_FRAME_RATES", "DEFAULT_MODEL",
    # re-exported from lm_pairing (does an entropy model belong to a codec), official_files
    # (cache and downloads) and weights_layout (file formats)
    "LM_METADATA_KEY", "TRAINED_LM_FILE", "read_lm_info", "check_lm_for_codec", "lm_codec_mismatch",
    "check_lm_trained_for", "check_lm_for_decoding",
    "ROOT_URL", "cache_dir", "official_file_path", "sha256_prefix_ok",
    "CONFIG_METADATA_KEY", "INFERENCE_ONLY_KEY", "OFFICIAL_CONFIGS", "TORCH_SUFFIXES", "StateDict",
    "infer_config", "model_from_state_dict", "normalize_keys", "read_weights",
]

# The dtypes save_model stores weights in (integer or complex ones would destroy them).
_SAVE_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
# Codebook training statistics that an inference-only export leaves out (see save_model).
_TRAINING_BUFFERS = ("._codebook.embed_avg", "._codebook.cluster_size")


# -- what loaded weights are ------------------------------------------------------------------
def _check_release_config(config: EncodecConfig, release: CodecRelease, what: str) -> None:
    """``ModelLoadError`` unless ``config`` computes as ``release`` (:mod:`opencodec.config_identity`)."""
    shipped = config_for_name(release.name) if release.file is not None else None
    advice = None if shipped else (f"load {release.name!r} by name without config=, from the file "
                                   f"`{extract_command(release)}` writes")
    check_config(config, release_config(release, shipped, config), release.name, what, advice)


# Weights hashes of official checkpoints loaded by name in this process (see record_official).
_OFFICIAL_WEIGHTS: dict[str, set[str]] = {}


def _is_official_file(path: Path, name: str) -> bool:
    """Whether ``path`` is the official checkpoint of ``name`` (its sha256 prefix)."""
    try:
        return sha256_prefix_ok(path, OFFICIAL_CHECKPOINTS[name])[0]
    except OSError:
        return False


def _name_loaded_model(model: EncodecModel, path: Path) -> EncodecModel:
    """Name a model loaded from ``path`` after what its weights are, so that the files it
    writes never claim other weights (see :mod:`opencodec.identity`):

    - weights that hold a release (same weights hash) get the release's name;
    - an official name (``encodec_24khz``, stored or inferred from the shapes) is kept only
      for the official checkpoint file itself (the sha256 prefix of
      :data:`OFFICIAL_CHECKPOINTS`) or weights equal to an official checkpoint loaded by name
      in this process (a converted copy, e.g. the Hugging Face one, is not provable
      otherwise: the official weights hash is not known offline);
    - any other registered name (an official name, a release, the alias) becomes
      ``<name>_custom`` (:func:`opencodec.releases.export_name`, as training exports are
      named), whose files carry the weights hash and decode only with these weights.

    A release's or the official checkpoint's weights with another configuration (``causal``,
    ``pad_mode``...: :mod:`opencodec.config_identity`) are a ``ModelLoadError`` naming the fields.
    """
    digest = weights_sha256(model)
    release = next((r for r in CODEC_RELEASES if r.sha256 == digest), None)
    name = model.config.name
    if release is not None:
        _check_release_config(model.config, release, f"{path} holds the weights of release "
                              f"{release.name} with another configuration")
        model.config.name = release.name
    elif (official := infer_config(model.state_dict()).name) in OFFICIAL_CHECKPOINTS and (  # by shapes
            digest in _OFFICIAL_WEIGHTS.get(official, ()) or _is_official_file(path, official)):
        check_config(model.config, OFFICIAL_CONFIGS[official](), official,
                     f"{path} holds the official {official} weights with another configuration")
        if name == official:
            record_official(model, _OFFICIAL_WEIGHTS)
        elif is_registered_name(name):
            model.config.name = export_name(name)
    elif is_registered_name(name):
        model.config.name = export_name(name)
    return model


def official_checkpoint_path(name: str) -> Path:
    """Local path of the official checkpoint ``name``, downloading it if needed and allowed."""
    return official_file_path(OFFICIAL_CHECKPOINTS[name], f"model {name!r}")


def load_model(name_or_path: str | os.PathLike[str] | None = None, device: str | int | torch.device = "cpu",
               config: EncodecConfig | None = None) -> EncodecModel:
    """Load an ``EncodecModel`` by name (see ``known_models()``) or from a weights file.

    ``None`` loads ``DEFAULT_MODEL``. ``config`` overrides the stored/inferred
    configuration. The model is returned in eval mode on ``device``.

    A release name (``opencodec_24khz_v4``; the alias ``opencodec_24khz`` is the current
    release) loads that release's weights and checks their hash; the model is named after
    the release, as are weights loaded from a file that hold a release (same hash), so that
    the files they write name the release (see :mod:`opencodec.releases`). Weights loaded
    from a file whose stored or inferred name is registered to other weights (an official
    name, a release, the alias) are named ``<name>_custom``, except the official checkpoint
    file itself: their files carry their weights hash and decode only with them. A release's
    or the official checkpoint's weights load only with its configuration in every field that
    changes the computation (``name`` and ``target_bandwidths`` may differ; see
    :mod:`opencodec.config_identity`): another one is a ``ModelLoadError`` naming the fields.

    ``TypeError`` for a ``name_or_path`` that is not a str or path, a ``config`` that is not an
    ``EncodecConfig`` or a ``device`` that is not a str, an int or a ``torch.device``; ``ValueError`` for
    a device this machine does not have (``"cuda"`` or ``0`` without CUDA), before any file is read;
    ``ModelLoadError`` for an empty name, an unknown name, a missing, unreadable or mismatched file;
    :class:`~opencodec.errors.EntropyModelAsCodecError` (a ``ModelLoadError``) for an entropy
    model's name (``known_lm_models()``, unless a file of that name exists) or weights.
    """
    target = DEFAULT_MODEL if name_or_path is None else name_or_path
    device = check_device(device, "load_model")
    if config is not None and not isinstance(config, EncodecConfig):
        raise TypeError(f"load_model: config must be an EncodecConfig (or None: the file's own), got "
                        f"{type(config).__name__}" + ("; build one with EncodecConfig.from_dict(d)"
                                                      if isinstance(config, dict) else ""))
    if config is not None:  # the model is named below: not the caller's object
        config = dataclasses.replace(config)
    release = codec_release(resolve_alias(target)) if isinstance(target, str) else None
    if release is not None:
        if config is not None:  # before reading: a field that sets shapes is named, not tensors
            _check_release_config(config, release, f"config= does not fit release {release.name}")
        path = release_path(release, "model")
        state, stored = read_weights(path)
        model = model_from_state_dict(state, config or stored, str(path))
        verify_release(release, weights_sha256(model), path, "model")
        if config is None and release.file is None:  # a shipped file's stored config is the reference
            _check_release_config(model.config, release, f"{path} stores another configuration than "
                                  f"release {release.name}'s")  # a cached file of a release not shipped
        model.config.name = release.name
        # loaded as "the current release": no choice of release for a legacy file (identity.py)
        model.loaded_by_alias = target == CODEC_ALIAS
        return model.to(device)
    if isinstance(target, str) and target in OFFICIAL_CHECKPOINTS:
        if config is not None:  # the official weights compute the official model only with its own
            check_config(config, OFFICIAL_CONFIGS[target](), target, f"config= does not fit the "
                         f"official {target}")
        path = official_checkpoint_path(target)
        state, stored = read_weights(path)
        model = model_from_state_dict(state, config or OFFICIAL_CONFIGS[target](), str(path))
        if model.name == target:  # the official file (official_file_path checked its sha256)
            record_official(model, _OFFICIAL_WEIGHTS)
        elif is_registered_name(model.name):  # a config naming other weights
            model.config.name = export_name(model.name)
        return model.to(device)
    path = weights_path(target)
    if not path.exists():
        if isinstance(target, str) and target in known_lm_models():  # callers give their own advice
            raise EntropyModelAsCodecError(f"{target} is an entropy model, not a codec", f"use --lm-model "
                                           f"{target} (Python: load_lm_model({target!r}, codec=...))", ": ")
        raise ModelLoadError(f"no model named {str(target)!r} and no such file; "
                             f"known names: {', '.join(known_models())}")
    if path.is_dir():
        raise ModelLoadError(f"{path} is a folder; pass a weights file (.th, .pt, .safetensors)")
    state, stored = read_weights(path)
    model = model_from_state_dict(state, config or stored, str(path))
    return _name_loaded_model(model, path).to(device)


def save_model(model: EncodecModel, path: str | os.PathLike[str], dtype: torch.dtype | None = None,
               inference_only: bool = False) -> Path:
    """Write the model's weights and configuration to a ``.safetensors`` file (atomically).

    ``dtype`` (one of ``torch.float16``, ``torch.bfloat16``, ``torch.float32``,
    ``torch.float64``; else ``ValueError``) stores floating-point tensors in that type (they
    are loaded back as float32); ``inference_only`` leaves out the codebooks' training
    statistics (``embed_avg``, ``cluster_size``), which decoding does not use, and marks
    the file so that ``load_model`` refills them. ``TypeError`` when ``model`` is not an
    ``EncodecModel`` (a name is not loaded: ``save_model(load_model(name), path)``);
    ``ValueError`` for a model on the meta device (no weights) or whose configuration
    ``load_model`` would refuse (:func:`~opencodec.weights_layout.config_problem`: e.g. no
    ``target_bandwidths``, a ``name`` that is not a string); ``IsADirectoryError`` for a
    ``path`` that is a folder (checked before anything is written).
    """
    from safetensors.torch import save_file

    if not isinstance(model, EncodecModel):
        hint = " (a name is not loaded: pass load_model(name))" if isinstance(model, (str, os.PathLike)) else ""
        raise TypeError(f"save_model expects an opencodec EncodecModel, got "
                        f"{type(model).__name__} {model!r:.60}{hint}")
    if dtype is not None and dtype not in _SAVE_DTYPES:
        raise ValueError(f"save_model stores weights as a floating-point dtype "
                         f"({', '.join(map(str, _SAVE_DTYPES))}), got {dtype!r}")
    path = Path(path)
    if path.suffix.lower() != ".safetensors":
        raise ValueError(f"save_model writes .safetensors files, got {path.name}")
    if path.is_dir():  # os.replace would fail only after writing every tensor
        raise IsADirectoryError(f"save_model: {path} is a folder; pass the path of a .safetensors file")
    problem = config_problem(model.config)
    if problem:  # load_model would refuse the file
        raise ValueError(f"save_model: the model's configuration cannot be loaded back ({problem})")
    meta = next((k for k, v in model.state_dict().items() if v.is_meta), None)
    if meta is not None:
        raise ValueError(f"save_model: the model is on the meta device ({meta}): it has shapes but "
                         f"no weights to save; load it on a device with data (e.g. 'cpu')")
    state = {}
    for k, v in model.state_dict().items():
        if inference_only and k.endswith(_TRAINING_BUFFERS):
            continue
        v = v.detach().cpu()
        if dtype is not None and v.is_floating_point():
            v = v.to(dtype)
        state[k] = v.contiguous().clone()
    metadata = {CONFIG_METADATA_KEY: json.dumps(model.config.to_dict())}
    if inference_only:
        metadata[INFERENCE_ONLY_KEY] = "1"
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        save_file(state, tmp, metadata=metadata)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path
