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

``load_lm_model(name_or_path, codec=...)`` finds the entropy model (the transformer that
arithmetic-codes ``.ecdc`` files with ``"lm": true``): the official ``encodec_lm_24khz`` /
``encodec_lm_48khz`` (same cache, download, hash check and offline message as the codecs),
the one belonging to a codec (``lm_name_for_codec``), or a state-dict file.

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
import typing as tp
import warnings
from pathlib import Path

import torch

from .config_identity import check_config, release_config
from .errors import EntropyModelAsCodecError, ModelLoadError
# Re-exported from lm_pairing, official_files and weights_layout: defined here before the split.
from .lm_pairing import (LM_METADATA_KEY, TRAINED_LM_FILE, check_lm_for_codec, check_lm_for_decoding,
                         check_lm_trained_for, lm_codec_mismatch, read_lm_info)
from .model import EncodecConfig, EncodecModel
from .official_files import ROOT_URL, cache_dir, official_file_path, sha256_prefix_ok
from .official_proof import record_official
from .releases import (CODEC_ALIAS, CODEC_RELEASES, CURRENT_CODEC, CURRENT_LM, LM_ALIAS, LM_RELEASES,
                       CodecRelease, LMRelease, codec_release, export_name, extract_command,
                       is_registered_name, lm_release, resolve_alias)
from .weights_hash import state_dict_sha256, weights_sha256
from .weights_layout import (CONFIG_METADATA_KEY, INFERENCE_ONLY_KEY, OFFICIAL_CONFIGS,
                             TORCH_SUFFIXES, StateDict, infer_config, model_from_state_dict, normalize_keys,
                             read_weights)

if tp.TYPE_CHECKING:
    from .entropy import EntropyLM

__all__ = [
    # names, releases, loading and saving (this module)
    "known_models", "config_for_name", "official_checkpoint_path", "load_model", "save_model",
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

OFFICIAL_CHECKPOINTS: dict[str, str] = {
    "encodec_24khz": "encodec_24khz-d7cc33bc.th",
    "encodec_48khz": "encodec_48khz-7e698e3e.th",
}
# Entropy models (official LMModel checkpoints), the codec each belongs to and its frame rate.
OFFICIAL_LM_CHECKPOINTS: dict[str, str] = {
    "encodec_lm_24khz": "encodec_lm_24khz-1608e3c0.th",
    "encodec_lm_48khz": "encodec_lm_48khz-7add9fc3.th",
}
OFFICIAL_LM_FRAME_RATES: dict[str, int] = {"encodec_lm_24khz": 75, "encodec_lm_48khz": 150}
CODEC_LMS: dict[str, str] = {"encodec_24khz": "encodec_lm_24khz", "encodec_48khz": "encodec_lm_48khz"}
# Models shipped inside the package (trained by opencodec itself; see docs/training/): every
# released set of weights has a versioned name (opencodec.releases); the unversioned alias
# loads the current release.
BUNDLED_DIR = Path(__file__).parent / "weights"
BUNDLED_MODELS: dict[str, str] = {
    CODEC_ALIAS: tp.cast(str, codec_release(CURRENT_CODEC).file),  # type: ignore[union-attr]
    **{r.name: r.file for r in CODEC_RELEASES if r.file is not None}}
# Entropy models shipped inside the package, with the frame rate of the codec they serve.
BUNDLED_LMS: dict[str, str] = {
    LM_ALIAS: tp.cast(str, lm_release(CURRENT_LM).file),  # type: ignore[union-attr]
    **{r.name: r.file for r in LM_RELEASES if r.file is not None}}
BUNDLED_LM_FRAME_RATES: dict[str, int] = {
    LM_ALIAS: 75, **{r.name: 75 for r in LM_RELEASES}}
CODEC_LMS[CODEC_ALIAS] = LM_ALIAS
CODEC_LMS.update({r.name: r.lm for r in CODEC_RELEASES})
DEFAULT_MODEL = CODEC_ALIAS
# The dtypes save_model stores weights in (integer or complex ones would destroy them).
_SAVE_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
# Codebook training statistics that an inference-only export leaves out (see save_model).
_TRAINING_BUFFERS = ("._codebook.embed_avg", "._codebook.cluster_size")


# -- names and releases --------------------------------------------------------------------
def known_models() -> list[str]:
    """Names ``load_model`` resolves without a path (releases that are not shipped are
    named too: loading one explains how to get its file)."""
    return sorted(set(OFFICIAL_CHECKPOINTS) | set(BUNDLED_MODELS) | {r.name for r in CODEC_RELEASES})


def config_for_name(name: str) -> EncodecConfig | None:
    """Configuration of a known model name, or None (reads no weights; for a shipped
    release only the file's metadata). The alias gives the current release's, named so."""
    factory = OFFICIAL_CONFIGS.get(name)
    if factory is not None:
        return factory()
    if name in BUNDLED_MODELS:
        from safetensors.torch import safe_open

        with safe_open(str(BUNDLED_DIR / BUNDLED_MODELS[name]), framework="pt") as f:
            config = EncodecConfig.from_dict(json.loads((f.metadata() or {})[CONFIG_METADATA_KEY]))
        config.name = resolve_alias(name)
        return config
    return None


def _release_path(release: CodecRelease | LMRelease, what: str) -> Path:
    """The file of a release: shipped in the package, or ``<cache_dir()>/<name>.safetensors``
    for one that is not (ModelLoadError explaining how to get it when it is missing)."""
    if release.file is not None:
        path = BUNDLED_DIR / release.file
        if not path.is_file():
            raise ModelLoadError(f"the bundled {what} {release.name!r} is missing from the "
                                 f"installation ({path}); reinstall opencodec")
        return path
    path = cache_dir() / f"{release.name}.safetensors"
    if path.is_file():
        return path
    raise ModelLoadError(
        f"{what} {release.name!r} ({release.summary}) is not shipped in the package: commit "
        f"{release.commit[:7]} of the opencodec repository has it. In a clone, run "
        f"`{extract_command(release)}`, then pass that file (--model/--lm-model PATH; its "
        f"weights hash is checked) or put it at {path}")


def _verify_release(release: CodecRelease | LMRelease, digest: str, path: Path, what: str) -> None:
    if digest != release.sha256:
        raise ModelLoadError(
            f"{path} does not hold the {what} release {release.name!r}: its weights hash is "
            f"{digest[:16]}, the release's is {release.sha256[:16]} (file replaced or damaged; new "
            f"weights need a new release in opencodec/releases.py; "
            f"`{extract_command(release)}` writes the release's file)")


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


def _weights_path(target: tp.Any, what: str = "model") -> Path:
    """``target`` (a name that is not known, or a path) as a path: a ``TypeError`` for
    another type, a ``ModelLoadError`` for an empty string (which ``Path`` reads as ``.``)."""
    if not isinstance(target, (str, os.PathLike)):
        raise TypeError(f"expected a {what} name or a weights file path (str or os.PathLike), got "
                        f"{type(target).__name__} {target!r:.60}")
    if str(os.fspath(target)).strip() == "":
        known = known_models() if what == "model" else known_lm_models()
        raise ModelLoadError(f"empty {what} name: pass a {what} name ({', '.join(known)}) or a "
                             f"weights file path")
    return Path(target).expanduser()


def official_checkpoint_path(name: str) -> Path:
    """Local path of the official checkpoint ``name``, downloading it if needed and allowed."""
    return official_file_path(OFFICIAL_CHECKPOINTS[name], f"model {name!r}")


def load_model(name_or_path: str | os.PathLike[str] | None = None, device: str | torch.device = "cpu",
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

    ``TypeError`` for a ``name_or_path`` that is not a str or path; ``ModelLoadError`` for
    an empty name, an unknown name, a missing, unreadable or mismatched file;
    :class:`~opencodec.errors.EntropyModelAsCodecError` (a ``ModelLoadError``) for an entropy
    model's name (``known_lm_models()``, unless a file of that name exists) or weights.
    """
    target = DEFAULT_MODEL if name_or_path is None else name_or_path
    if config is not None:  # the model is named below: not the caller's object
        config = dataclasses.replace(config)
    release = codec_release(resolve_alias(target)) if isinstance(target, str) else None
    if release is not None:
        if config is not None:  # before reading: a field that sets shapes is named, not tensors
            _check_release_config(config, release, f"config= does not fit release {release.name}")
        path = _release_path(release, "model")
        state, stored = read_weights(path)
        model = model_from_state_dict(state, config or stored, str(path))
        _verify_release(release, weights_sha256(model), path, "model")
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
    path = _weights_path(target)
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
    ``EncodecModel`` (a name is not loaded: ``save_model(load_model(name), path)``).
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


# -- entropy models ------------------------------------------------------------------------
def known_lm_models() -> list[str]:
    """Names ``load_lm_model`` resolves without a path (releases that are not shipped are
    named too: loading one explains how to get its file)."""
    return sorted(set(OFFICIAL_LM_CHECKPOINTS) | set(BUNDLED_LMS) | {r.name for r in LM_RELEASES})


def lm_name_for_codec(codec_name: str) -> str | None:
    """The entropy model of codec ``codec_name`` (``encodec_24khz`` -> ``encodec_lm_24khz``,
    ``encodec_48khz`` -> ``encodec_lm_48khz``, a bundled release such as
    ``opencodec_24khz_v5`` -> its entropy model ``opencodec_lm_24khz_v5``, the alias
    ``opencodec_24khz`` -> ``opencodec_lm_24khz``), or None."""
    return CODEC_LMS.get(codec_name)


def _lm_sizes(state: StateDict, source: str) -> dict[str, tp.Any]:
    """``EntropyLM`` sizes read off an official-layout LM state dict."""
    emb = state.get("emb.0.weight")
    lin1 = state.get("transformer.layers.0.linear1.weight")
    if emb is None or lin1 is None or emb.dim() != 2 or lin1.dim() != 2:
        raise ModelLoadError(f"{source} is not an entropy model state dict (expected "
                             f"emb.0.weight and transformer.layers.0.linear1.weight; first keys: "
                             f"{', '.join(list(state)[:5])})")
    n_q = len({k.split(".")[1] for k in state if k.startswith("emb.") and k.endswith(".weight")})
    num_layers = len({k.split(".")[2] for k in state
                      if k.startswith("transformer.layers.") and k.endswith(".linear1.weight")})
    dim = int(emb.shape[1])
    # EntropyLM's width is int(dim * hidden_scale): half a unit over the stored width gives it
    # back for every width (width / dim can round to just under it, e.g. 61 / 56)
    return dict(n_q=n_q, card=int(emb.shape[0]) - 1, dim=dim, num_layers=num_layers,
                hidden_scale=(int(lin1.shape[0]) + 0.5) / dim)


def trained_lm_name(codec_name: str | None, path: str | os.PathLike[str]) -> str:
    """The name of an entropy model that ``train-lm`` exports to ``path`` (``<run>/lm.safetensors``):
    ``<codec name>_lm_<run folder name>``, e.g. ``opencodec_24khz_v5_lm_speech1``, which
    headers record and errors show (``_custom`` is added to a name that means other weights)."""
    from .bitstream import MAX_LM_NAME_CHARS

    folder = Path(path).expanduser().absolute().parent.name or "run"
    name = f"{codec_name or 'codec'}_lm_{folder}"[:MAX_LM_NAME_CHARS - len("_custom")]
    registered = (name in known_lm_models() or name in known_models() or name in (CODEC_ALIAS, LM_ALIAS)
                  or codec_release(name) is not None or lm_release(name) is not None)
    return f"{name}_custom" if registered else name  # as identity.is_registered_name


def _training_checkpoint_error(path: Path) -> ModelLoadError | None:
    """A clear error when ``path`` is a training checkpoint rather than weights, else None."""
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # noqa: BLE001 - not loadable: the ordinary error stands
        return None
    if not isinstance(obj, dict) or not {"model", "optim", "step"} <= set(obj):
        return None
    if "codec_hash" in obj:  # a train-lm run's checkpoint.pt
        export = path.with_name(TRAINED_LM_FILE)
        there = "" if export.is_file() else " (not written yet: the run exports it at each checkpoint)"
        return ModelLoadError(f"{path} is a train-lm training checkpoint (model, optimiser and step "
                              f"{obj['step']}), not an entropy model: pass {export}, the entropy "
                              f"model the run exports{there}")
    return ModelLoadError(f"{path} is a training checkpoint (model, optimiser and step {obj['step']}), "
                          f"not an entropy model weights file")


def load_lm_model(name_or_path: str | os.PathLike[str] | None = None,
                  codec: EncodecModel | None = None, *, num_codebooks: int | None = None,
                  device: str | torch.device = "cpu", any_codec: bool = False) -> "EntropyLM":
    """Load an entropy model (:class:`~opencodec.entropy.EntropyLM`), in eval mode on ``device``.

    ``name_or_path``: an official name (``known_lm_models()``; the file is found like the
    official codec checkpoints, see ``official_file_path``), a state-dict file in the
    official ``LMModel`` layout (``.th``/``.pt``/... with ``weights_only``, or
    ``.safetensors``; sizes are read off the tensors), or None for the entropy model that
    belongs to ``codec`` (``lm_name_for_codec``).

    ``codec``: the codec the model will serve. The attention window of a file's model is
    3.5 s of the codec's frames (262 at 75 Hz when no codec is given). The model must
    predict ``codec.bins`` bins and, when ``num_codebooks`` is given, cover that many
    codebooks. A file exported by ``train-lm`` names the codec whose codes it was trained on
    (:func:`read_lm_info`): another codec than ``codec`` is a ``ModelLoadError``
    (:func:`check_lm_trained_for`), unless ``any_codec`` (decoding a file whose header proves it
    was coded with this entropy model); the loaded model keeps that record as ``trained_for``,
    which :func:`opencodec.compress.compress` checks too, and is named after its run
    (:func:`trained_lm_name`). A released entropy model serving another release of its codec
    only warns (not with ``any_codec``: when decoding, the file's size is already fixed) (:mod:`opencodec.releases` records which codec each was trained for). Raises
    ``ModelLoadError`` (missing or corrupt file, training checkpoint, no entropy model known
    for the codec, wrong layout, mismatch).
    """
    from .entropy import load_lm

    if name_or_path is None:
        if codec is None:
            raise ModelLoadError("load_lm_model needs an entropy model name or path, or the codec "
                                 "whose entropy model to load")
        name_or_path = lm_name_for_codec(codec.name)
        if name_or_path is None:
            raise ModelLoadError(
                f"no entropy model is known for codec {codec.name!r} (entropy models exist for "
                f"{', '.join(_codecs_with_lms())}); pass an entropy model weights file "
                f"(--lm-model PATH on the command line)")
    name: str | None = None
    release: LMRelease | None = None
    if isinstance(name_or_path, str) and name_or_path in OFFICIAL_LM_CHECKPOINTS:
        name = name_or_path
        path = official_file_path(OFFICIAL_LM_CHECKPOINTS[name], f"entropy model {name!r}",
                                  "pass an entropy model weights file (--lm-model PATH)")
        frame_rate: int | None = OFFICIAL_LM_FRAME_RATES[name]
        source = f"entropy model {name!r} ({path})"
    elif isinstance(name_or_path, str) and lm_release(resolve_alias(name_or_path)) is not None:
        release = lm_release(resolve_alias(name_or_path))
        assert release is not None
        name = release.name
        path = _release_path(release, "entropy model")
        frame_rate = BUNDLED_LM_FRAME_RATES[name]
        source = f"entropy model {name!r} ({path})"
    else:
        path = _weights_path(name_or_path, "entropy model")
        if not path.exists():
            raise ModelLoadError(f"no entropy model named {str(name_or_path)!r} and no such file; "
                                 f"known names: {', '.join(known_lm_models())}")
        if path.is_dir():
            raise ModelLoadError(f"{path} is a folder; pass an entropy model weights file (.th, .pt, "
                                 f".safetensors)")
        frame_rate = codec.frame_rate if codec is not None else None
        source = f"entropy model {path}"
    try:
        state, _ = read_weights(path)
    except ModelLoadError:
        better = _training_checkpoint_error(path) if path.suffix.lower() in TORCH_SUFFIXES else None
        if better is None:
            raise
        raise better from None
    sizes = _lm_sizes(state, str(path))
    try:
        lm = load_lm(state, frame_rate=frame_rate, **sizes)
    except (TypeError, ValueError) as exc:
        raise ModelLoadError(f"{path}: cannot build the entropy model ({exc})") from exc
    digest = state_dict_sha256(lm.state_dict())
    if release is not None:
        _verify_release(release, digest, path, "entropy model")
    elif name is None:  # a file: named after the release with its weights, if any
        name = next((r.name for r in LM_RELEASES if r.sha256 == digest), None)
    trained_for: dict[str, tp.Any] = {}
    if name is None:  # not a release (whose codec opencodec.releases records): the file's record
        info = read_lm_info(path)
        trained_for = {k: info[k] for k in ("codec", "codec_weights_hash", "codec_hash") if k in info}
        if isinstance(info.get("name"), str) and info["name"]:
            name = info["name"]
        elif "codec" in info and path.name == TRAINED_LM_FILE:  # exported before LMs had names
            name = trained_lm_name(str(info["codec"]), path)
    if codec is not None:
        check_lm_for_codec(lm, codec, num_codebooks, source)
        if not any_codec:  # compressing: the pairing decides the size of the files
            check_lm_trained_for(trained_for, codec, source)
            _warn_if_trained_for_another_codec(name, codec)
    if name is not None:
        lm.name = name  # deterministic files record it, and decompress finds the model by it
    if trained_for:
        lm.trained_for = trained_for  # compress() checks it against the codec
    return lm.to(device)


def _codecs_with_lms() -> list[str]:
    """Codecs whose entropy model is available: the official ones (downloaded) and the
    releases whose entropy model ships in the package (not those only a commit has)."""
    return sorted(c for c, lm in CODEC_LMS.items() if c in OFFICIAL_CHECKPOINTS or lm in BUNDLED_LMS)


def _warn_if_trained_for_another_codec(lm_name: str | None, codec: EncodecModel) -> None:
    """Warn when a released entropy model serves a released codec other than its own: the
    codes stay lossless, but they are predicted worse, so files come out larger."""
    release = lm_release(lm_name) if lm_name is not None else None
    if release is None or codec_release(codec.name) is None or release.codec == codec.name:
        return
    own = lm_name_for_codec(codec.name)
    warnings.warn(f"entropy model {release.name} was trained for codec {release.codec}, not "
                  f"{codec.name}: files stay lossless but come out larger"
                  + (f" (its own entropy model is {own})" if own else ""), stacklevel=3)
