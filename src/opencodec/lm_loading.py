"""Loading entropy models (the transformer that arithmetic-codes ``.ecdc`` files with
``"lm": true``).

``load_lm_model(name_or_path, codec=...)`` finds the official ``encodec_lm_24khz`` /
``encodec_lm_48khz`` (the cache, download, hash check and offline message of the official
codecs), a released one (:mod:`opencodec.releases`), the one belonging to a codec
(:func:`~opencodec.model_registry.lm_name_for_codec`), or a state-dict file, and checks that
it fits the codec it will serve (:mod:`opencodec.lm_pairing`).
"""

from __future__ import annotations

import numbers
import os
import typing as tp
import warnings
from pathlib import Path

import torch

from .errors import CODEC_AS_LM_ADVICE, CodecAsEntropyModelError, ModelLoadError
from .input_checks import check_device, check_model
from .lm_pairing import TRAINED_LM_FILE, check_lm_for_codec, check_lm_trained_for, read_lm_info
from .model import EncodecModel
from .model_registry import (BUNDLED_LM_FRAME_RATES, BUNDLED_LMS, CODEC_LMS, OFFICIAL_CHECKPOINTS,
                             OFFICIAL_LM_CHECKPOINTS, OFFICIAL_LM_FRAME_RATES, known_lm_models, known_models,
                             lm_name_for_codec, release_path, unknown_lm_error, verify_release, weights_path)
from .official_files import official_file_path
from .releases import (CODEC_ALIAS, LM_ALIAS, LM_RELEASES, OFFICIAL_NAMES, LMRelease, codec_release, lm_release,
                       resolve_alias, short_hash)
from .weights_hash import state_dict_sha256, weights_sha256
from .weights_layout import TORCH_SUFFIXES, StateDict, normalize_keys, read_weights

if tp.TYPE_CHECKING:
    from .entropy import EntropyLM

__all__ = ["CODEC_AS_LM_ADVICE", "CodecAsEntropyModelError", "load_lm_model", "trained_lm_name"]


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


def _is_codec_state(state: StateDict) -> bool:
    """Whether ``state`` holds a codec's tensors (an encoder and a quantizer, in the official or
    Hugging Face layout)."""
    keys = normalize_keys(state).keys()
    return "quantizer.vq.layers.0._codebook.embed" in keys and any(k.startswith("encoder.model.") for k in keys)


def _codec_error(path: Path, state: StateDict, config: dict[str, tp.Any] | None,
                 advice: str = CODEC_AS_LM_ADVICE) -> CodecAsEntropyModelError | None:
    """The error for a codec's weights file read from ``path`` (``state``, stored ``config``), else None."""
    if not _is_codec_state(state):
        return None
    name = config.get("name") if isinstance(config, dict) else None
    return CodecAsEntropyModelError(f"{path} is a codec's weights{f' ({name})' if isinstance(name, str) else ''}, "
                                    f"not an entropy model state dict", advice)


def _training_checkpoint_error(path: Path, advice: str = CODEC_AS_LM_ADVICE) -> ModelLoadError | None:
    """A clear error when ``path`` is a training checkpoint rather than weights, else None: a
    train-lm run's (pass its export), or a codec's (:class:`CodecAsEntropyModelError`)."""
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # noqa: BLE001 - not loadable: the ordinary error stands
        return None
    if not isinstance(obj, dict) or not {"model", "step"} <= set(obj):
        return None
    if "disc" in obj or "opt_g" in obj:  # opencodec train's
        return CodecAsEntropyModelError(f"{path} is a codec's training checkpoint (opencodec train, step "
                                        f"{obj['step']}), not an entropy model", advice)
    if "optim" not in obj:
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
                  device: str | int | torch.device = "cpu", any_codec: bool = False,
                  codec_advice: str = CODEC_AS_LM_ADVICE) -> "EntropyLM":
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
    (:func:`trained_lm_name`). A released entropy model serving another codec (another release,
    or other weights) only warns (:mod:`opencodec.releases` records which codec each was
    trained for), naming the codec's own entropy model when it has one; not with
    ``any_codec``: when decoding, the file's size is already fixed. Raises
    ``ModelLoadError`` (missing or corrupt file, training checkpoint, a codec's weights or
    training checkpoint: :class:`CodecAsEntropyModelError`, whose advice is ``codec_advice``
    (by default :data:`CODEC_AS_LM_ADVICE`, compress's options), no entropy model known
    for the codec, wrong layout, a NaN or infinite weight, mismatch); ``TypeError`` for a ``codec`` that is not a model
    (a name: ``codec=load_model(name)``), a ``num_codebooks`` that is not an int or a ``device``
    that is not a str, an int or a ``torch.device``; ``ValueError`` for ``num_codebooks`` < 1 (or
    more than ``codec``'s ``n_q``) or a device
    this machine does not have. The arguments are checked before any file is read.
    """
    from .entropy import load_lm

    device = check_device(device, "load_lm_model")
    if codec is not None:
        check_model(codec, "load_lm_model: codec")
    if num_codebooks is not None:
        if isinstance(num_codebooks, bool) or not isinstance(num_codebooks, numbers.Integral):
            raise TypeError(f"load_lm_model: num_codebooks must be an int (or None), got "
                            f"{type(num_codebooks).__name__} {num_codebooks!r:.40}")
        if num_codebooks < 1:
            raise ValueError(f"load_lm_model: num_codebooks must be >= 1, got {num_codebooks}")
        most = getattr(codec, "n_q", None)
        if most is not None and num_codebooks > most:  # a count no file of the codec has
            raise ValueError(f"load_lm_model: num_codebooks must be at most the {most} codebooks "
                             f"of codec {codec.name}, got {num_codebooks}")
        num_codebooks = int(num_codebooks)

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
        path = release_path(release, "entropy model")
        frame_rate = BUNDLED_LM_FRAME_RATES[name]
        source = f"entropy model {name!r} ({path})"
    else:
        path = weights_path(name_or_path, "entropy model")
        if not path.exists():
            raise unknown_lm_error(name_or_path, codec_advice)  # a codec's name: its entropy model
        if path.is_dir():
            raise ModelLoadError(f"{path} is a folder; pass an entropy model weights file (.th, .pt, "
                                 f".safetensors)")
        frame_rate = codec.frame_rate if codec is not None else None
        source = f"entropy model {path}"
    try:
        state, stored = read_weights(path)
    except ModelLoadError:
        better = _training_checkpoint_error(path, codec_advice) if path.suffix.lower() in TORCH_SUFFIXES else None
        if better is None:
            raise
        raise better from None
    if "emb.0.weight" not in state:  # a codec's weights: say so (else the layout error below)
        codec_error = _codec_error(path, state, stored, codec_advice)
        if codec_error is not None:
            raise codec_error
    sizes = _lm_sizes(state, str(path))
    _check_finite(state, path)
    try:
        lm = load_lm(state, frame_rate=frame_rate, **sizes)
    except (TypeError, ValueError) as exc:
        raise ModelLoadError(f"{path}: cannot build the entropy model ({exc})") from exc
    digest = state_dict_sha256(lm.state_dict())
    if release is not None:
        verify_release(release, digest, path, "entropy model")
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


def _check_finite(state: StateDict, path: Path) -> None:
    """``ModelLoadError`` naming the first tensor of ``state`` with a NaN or infinite value: such
    a model gives NaN probabilities, which no coder can use (the official format's coder would
    fail deep inside, and the deterministic one's integer conversion is machine dependent)."""
    for key, value in state.items():
        if isinstance(value, torch.Tensor) and value.is_floating_point() and not bool(torch.isfinite(value).all()):
            raise ModelLoadError(f"{path}: entropy model tensor {key} has non-finite values (NaN or "
                                 f"infinity): the file is damaged, or its training diverged")


def _codecs_with_lms() -> list[str]:
    """Codecs whose entropy model is available: the official ones (downloaded) and the
    releases whose entropy model ships in the package (not those only a commit has)."""
    return sorted(c for c, lm in CODEC_LMS.items() if c in OFFICIAL_CHECKPOINTS or lm in BUNDLED_LMS)


def _warn_if_trained_for_another_codec(lm_name: str | None, codec: EncodecModel) -> None:
    """Warn when a released entropy model serves a codec other than its own (another
    release, or a codec whose weights are not its release's: one of the user's, an official
    one): the codes stay lossless, but they are predicted worse, so files come out larger.
    The warning names the codec's own entropy model when there is one."""
    release = lm_release(lm_name) if lm_name is not None else None
    if release is None or release.codec == codec.name:
        return
    if codec_release(codec.name) is None:  # the user's own codec: the weights tell
        own_codec = codec_release(release.codec)
        digest = weights_sha256(codec)
        if own_codec is not None and digest == own_codec.sha256:
            return
        own_lm = lm_name_for_codec(codec.name)  # an official codec has its own
        kind = "" if codec.name in OFFICIAL_NAMES else ", not a release"
        advice = (f"its own entropy model is {own_lm}" if own_lm
                  else "train its own with opencodec train-lm")
        warnings.warn(f"entropy model {release.name} was trained for codec {release.codec}, not "
                      f"{codec.name} (weights hash {short_hash(digest)}{kind}): files stay "
                      f"lossless but may come out larger; {advice}", stacklevel=3)
        return
    own = lm_name_for_codec(codec.name)
    warnings.warn(f"entropy model {release.name} was trained for codec {release.codec}, not "
                  f"{codec.name}: files stay lossless but come out larger"
                  + (f" (its own entropy model is {own})" if own else ""), stacklevel=3)
