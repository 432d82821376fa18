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
  ``quantizer.layers.N.codebook.*``).

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

import hashlib
import json
import os
import re
import shutil
import tempfile
import typing as tp
import urllib.request
from pathlib import Path

import torch

from .errors import ModelLoadError
from .model import EncodecConfig, EncodecModel
from .releases import (CODEC_ALIAS, CODEC_RELEASES, CURRENT_CODEC, CURRENT_LM, LM_ALIAS, LM_RELEASES,
                       CodecRelease, LMRelease, codec_release, extract_command, lm_release,
                       resolve_alias)
from .weights_hash import state_dict_sha256, weights_sha256

if tp.TYPE_CHECKING:
    from .entropy import EntropyLM

ROOT_URL = "https://dl.fbaipublicfiles.com/encodec/v0/"
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
OFFICIAL_CONFIGS: dict[str, tp.Callable[[], EncodecConfig]] = {
    "encodec_24khz": EncodecConfig.encodec_24khz,
    "encodec_48khz": EncodecConfig.encodec_48khz,
}
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
CONFIG_METADATA_KEY = "opencodec_config"
INFERENCE_ONLY_KEY = "opencodec_inference_only"
# Codebook training statistics that an inference-only export leaves out (see save_model).
_TRAINING_BUFFERS = ("._codebook.embed_avg", "._codebook.cluster_size")
TORCH_SUFFIXES = {".th", ".pt", ".pth", ".bin", ".ckpt"}

StateDict = dict[str, torch.Tensor]


# -- names and the cache -------------------------------------------------------------------
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


def _name_release(model: EncodecModel) -> EncodecModel:
    """Give a model loaded from a path the name of the release with its weights, if any, so
    that the files it writes name the release."""
    digest = weights_sha256(model)
    for release in CODEC_RELEASES:
        if release.sha256 == digest:
            model.config.name = release.name
    return model


def cache_dir() -> Path:
    """Folder holding downloaded checkpoints: ``$OPENCODEC_CACHE`` or ``~/.cache/opencodec``."""
    env = os.environ.get("OPENCODEC_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "opencodec"


def _offline() -> bool:
    return os.environ.get("OPENCODEC_OFFLINE", "").strip().lower() in {"1", "true", "yes", "on"}


def sha256_prefix_ok(path: Path, filename: str | None = None) -> tuple[bool, str, str]:
    """Check a checkpoint against the hash prefix in its name (``name-<sha256 prefix>.ext``).

    Returns (ok, expected prefix, actual prefix).
    """
    stem = Path(filename or path.name).stem
    expected = stem.rsplit("-", 1)[-1]
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    actual = digest.hexdigest()[: len(expected)]
    return actual == expected, expected, actual


def _download(url: str, dest: Path) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=".download-", suffix=dest.suffix)
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=30) as resp:
            shutil.copyfileobj(resp, out)
        ok, expected, actual = sha256_prefix_ok(Path(tmp), dest.name)
        if not ok:
            raise ModelLoadError(f"downloaded {url} has sha256 prefix {actual}, expected {expected}")
        os.replace(tmp, dest)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def official_file_path(filename: str, what: str | None = None,
                       alternative: str = "pass a weights file path instead") -> Path:
    """Local path of the official file ``filename`` (e.g. ``encodec_24khz-d7cc33bc.th``).

    Looked up in ``cache_dir()`` and in torch hub's checkpoint folder, checked against the
    sha256 prefix in its name, and downloaded from ``ROOT_URL`` into ``cache_dir()`` when
    missing (unless ``OPENCODEC_OFFLINE`` is set). ``what`` names the thing in the error
    message (default: the file), ``alternative`` is the last hint of that message.
    Raises ``ModelLoadError`` for a corrupt file, or a missing one that cannot be downloaded.
    """
    what = what or f"file {filename!r}"
    folders = [cache_dir(), Path(torch.hub.get_dir()) / "checkpoints"]
    for folder in folders:
        path = folder / filename
        if path.is_file():
            ok, expected, actual = sha256_prefix_ok(path)
            if not ok:
                raise ModelLoadError(
                    f"{path} is corrupt: its sha256 starts with {actual}, expected {expected}. "
                    f"Delete it and put the official {filename} there.")
            return path
    dest = cache_dir() / filename
    url = ROOT_URL + filename
    reason = "downloads are disabled (OPENCODEC_OFFLINE is set)"
    if not _offline():
        try:
            _download(url, dest)
            return dest
        except ModelLoadError:
            raise
        except (OSError, ValueError) as exc:  # URLError is an OSError
            reason = f"downloading {url} failed ({exc})"
    raise ModelLoadError(
        f"{what} needs the weights file {filename}, which is not in {cache_dir()} and {reason}. "
        f"Get {filename} from {url} and put it at {dest} "
        f"(or set OPENCODEC_CACHE to the folder that holds it), or {alternative}.")


def official_checkpoint_path(name: str) -> Path:
    """Local path of the official checkpoint ``name``, downloading it if needed and allowed."""
    return official_file_path(OFFICIAL_CHECKPOINTS[name], f"model {name!r}")


# -- reading weight files ------------------------------------------------------------------
def read_weights(path: Path) -> tuple[StateDict, dict[str, tp.Any] | None]:
    """Tensors and (if stored) the configuration dict of a weights file."""
    suffix = path.suffix.lower()
    if suffix == ".safetensors":
        return _read_safetensors(path)
    if suffix not in TORCH_SUFFIXES:
        raise ModelLoadError(f"{path}: unknown weights format {suffix!r}; expected .safetensors or "
                             f"one of {', '.join(sorted(TORCH_SUFFIXES))}")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for bad or unsafe pickles
        raise ModelLoadError(f"{path}: cannot load as a PyTorch state dict ({type(exc).__name__}: "
                             f"{str(exc).splitlines()[0] if str(exc) else ''})") from exc
    config = None
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        config = obj.get("config")
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ModelLoadError(f"{path}: expected a dict of tensors (a state dict)")
    if config is not None and not isinstance(config, dict):
        raise ModelLoadError(f"{path}: 'config' must be a dict, got {type(config).__name__}")
    return dict(obj), config


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
        except json.JSONDecodeError as exc:
            raise ModelLoadError(f"{path}: metadata {CONFIG_METADATA_KEY!r} is not valid JSON ({exc})") from exc
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
    """
    first = _conv_weight(state, "encoder.model.0")
    if first is None:
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
    """Build a model from tensors (any supported key layout) and an optional config."""
    if isinstance(config, dict):
        try:
            config = EncodecConfig.from_dict(config)
        except (TypeError, ValueError) as exc:
            raise ModelLoadError(f"{source}: invalid model configuration ({exc})") from exc
    if config is None:
        config = infer_config(normalize_keys(state))
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
        raise ModelLoadError(f"{source} does not match the {config.name} architecture: " + "; ".join(problems))
    model.load_state_dict(state, strict=True)
    return model.eval()


def _short_list(items: list[str], limit: int = 6) -> str:
    more = f" (+{len(items) - limit} more)" if len(items) > limit else ""
    return ", ".join(items[:limit]) + more


def load_model(name_or_path: str | os.PathLike[str] | None = None, device: str | torch.device = "cpu",
               config: EncodecConfig | None = None) -> EncodecModel:
    """Load an ``EncodecModel`` by name (see ``known_models()``) or from a weights file.

    ``None`` loads ``DEFAULT_MODEL``. ``config`` overrides the stored/inferred
    configuration. The model is returned in eval mode on ``device``.

    A release name (``opencodec_24khz_v4``; the alias ``opencodec_24khz`` is the current
    release) loads that release's weights and checks their hash; the model is named after
    the release, as are weights loaded from a file that hold a release (same hash), so that
    the files they write name the release (see :mod:`opencodec.releases`).
    """
    target = DEFAULT_MODEL if name_or_path is None else name_or_path
    release = codec_release(resolve_alias(target)) if isinstance(target, str) else None
    if release is not None:
        path = _release_path(release, "model")
        state, stored = read_weights(path)
        model = model_from_state_dict(state, config or stored, str(path))
        _verify_release(release, weights_sha256(model), path, "model")
        model.config.name = release.name
        # loaded as "the current release": no choice of release for a legacy file (identity.py)
        model.loaded_by_alias = target == CODEC_ALIAS
        return model.to(device)
    if isinstance(target, str) and target in OFFICIAL_CHECKPOINTS:
        path = official_checkpoint_path(target)
        state, stored = read_weights(path)
        model = model_from_state_dict(state, config or OFFICIAL_CONFIGS[target](), str(path))
        return model.to(device)
    path = Path(target).expanduser()
    if not path.exists():
        raise ModelLoadError(f"no model named {str(target)!r} and no such file; "
                             f"known names: {', '.join(known_models())}")
    if path.is_dir():
        raise ModelLoadError(f"{path} is a folder; pass a weights file (.th, .pt, .safetensors)")
    state, stored = read_weights(path)
    model = model_from_state_dict(state, config or stored, str(path))
    return _name_release(model).to(device)


def save_model(model: EncodecModel, path: str | os.PathLike[str], dtype: torch.dtype | None = None,
               inference_only: bool = False) -> Path:
    """Write the model's weights and configuration to a ``.safetensors`` file (atomically).

    ``dtype`` (e.g. ``torch.float16``) stores floating-point tensors in that type (they
    are loaded back as float32); ``inference_only`` leaves out the codebooks' training
    statistics (``embed_avg``, ``cluster_size``), which decoding does not use, and marks
    the file so that ``load_model`` refills them.
    """
    from safetensors.torch import save_file

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
    return dict(n_q=n_q, card=int(emb.shape[0]) - 1, dim=dim, num_layers=num_layers,
                hidden_scale=int(lin1.shape[0]) / dim)


def check_lm_for_codec(lm: tp.Any, codec: EncodecModel, num_codebooks: int | None = None,
                       source: str = "the entropy model") -> None:
    """Raise ``ModelLoadError`` unless ``lm`` predicts ``codec.bins`` bins and covers
    ``num_codebooks`` codebooks (when given)."""
    if lm.card != codec.bins:
        raise ModelLoadError(f"{source} predicts {lm.card} bins per codebook, but codec "
                             f"{codec.name} has {codec.bins}: it is not this codec's entropy model")
    if num_codebooks is not None and num_codebooks > lm.n_q:
        raise ModelLoadError(f"{source} covers {lm.n_q} codebooks, but {num_codebooks} are used "
                             f"({codec.name} at {codec.bandwidth_for_codebooks(num_codebooks):g} kbps)")


def load_lm_model(name_or_path: str | os.PathLike[str] | None = None,
                  codec: EncodecModel | None = None, *, num_codebooks: int | None = None,
                  device: str | torch.device = "cpu") -> "EntropyLM":
    """Load an entropy model (:class:`~opencodec.entropy.EntropyLM`), in eval mode on ``device``.

    ``name_or_path``: an official name (``known_lm_models()``; the file is found like the
    official codec checkpoints, see ``official_file_path``), a state-dict file in the
    official ``LMModel`` layout (``.th``/``.pt``/... with ``weights_only``, or
    ``.safetensors``; sizes are read off the tensors), or None for the entropy model that
    belongs to ``codec`` (``lm_name_for_codec``).

    ``codec``: the codec the model will serve. The attention window of a file's model is
    3.5 s of the codec's frames (262 at 75 Hz when no codec is given). The model must
    predict ``codec.bins`` bins and, when ``num_codebooks`` is given, cover that many
    codebooks. Raises ``ModelLoadError`` (missing or corrupt file, no entropy model known for
    the codec, wrong layout, mismatch).
    """
    from .entropy import load_lm

    if name_or_path is None:
        if codec is None:
            raise ModelLoadError("load_lm_model needs an entropy model name or path, or the codec "
                                 "whose entropy model to load")
        name_or_path = lm_name_for_codec(codec.name)
        if name_or_path is None:
            raise ModelLoadError(
                f"no entropy model is known for codec {codec.name!r} (official ones exist for "
                f"{', '.join(sorted(CODEC_LMS))}); pass an entropy model weights file "
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
        path = Path(name_or_path).expanduser()
        if not path.exists():
            raise ModelLoadError(f"no entropy model named {str(name_or_path)!r} and no such file; "
                                 f"known names: {', '.join(known_lm_models())}")
        if path.is_dir():
            raise ModelLoadError(f"{path} is a folder; pass an entropy model weights file (.th, .pt, "
                                 f".safetensors)")
        frame_rate = codec.frame_rate if codec is not None else None
        source = f"entropy model {path}"
    state, _ = read_weights(path)
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
    if codec is not None:
        check_lm_for_codec(lm, codec, num_codebooks, source)
    if name is not None:
        lm.name = name  # deterministic files record it, and decompress finds the model by it
    return lm.to(device)
