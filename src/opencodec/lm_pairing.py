"""Whether an entropy model belongs to a codec: its sizes, and the codec its export records.

An entropy model codes a codec's codes losslessly whatever it was trained on, but one trained
on another codec's codes predicts them badly, so files come out larger. ``train-lm`` exports
record the codec they were trained on (:func:`read_lm_info`); :func:`lm_codec_mismatch`
compares that record with a codec, and the ``check_*`` functions turn a mismatch into a
``ModelLoadError`` where it must stop the work (compressing, loading for a codec, decoding a
file that does not prove it was coded with that model).
"""

from __future__ import annotations

import json
import os
import typing as tp
from pathlib import Path

from .errors import ModelLoadError
from .releases import short_hash
from .weights_hash import codec_fingerprint, weights_sha256

if tp.TYPE_CHECKING:
    from .model import EncodecModel


# Metadata of an entropy model exported by ``opencodec train-lm`` (opencodec.train.lm_model.export_lm):
# its sizes, the codec it was trained on (``codec``: name; ``codec_weights_hash``: that codec's
# weights hash as headers and ``opencodec info`` show it, opencodec.identity.model_hash;
# ``codec_hash``: the older sha256 of the codec's config and state, recorded by every export),
# its name (``name``), bandwidths and training step.
LM_METADATA_KEY = "opencodec_lm_config"
TRAINED_LM_FILE = "lm.safetensors"


def read_lm_info(path: str | os.PathLike[str]) -> dict[str, tp.Any]:
    """The ``opencodec_lm_config`` metadata of an exported entropy model (empty for other
    files: another format, or no such metadata). ``ModelLoadError`` for unreadable metadata."""
    if Path(path).suffix.lower() != ".safetensors":
        return {}
    from safetensors import SafetensorError
    from safetensors.torch import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
        info = json.loads(meta[LM_METADATA_KEY]) if LM_METADATA_KEY in meta else {}
    except (SafetensorError, OSError, ValueError) as exc:
        raise ModelLoadError(f"{path}: cannot read the entropy model's metadata ({exc})") from exc
    return info if isinstance(info, dict) else {}


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


def _recorded_codec(info: tp.Mapping[str, tp.Any]) -> str:
    name = info.get("codec") if isinstance(info.get("codec"), str) else "an unnamed codec"
    weights = info.get("codec_weights_hash")
    if isinstance(weights, str) and weights:
        return f"codec {name} (weights hash {weights})"
    return f"codec {name} (config and weights sha256 {str(info.get('codec_hash'))[:16]})"


def lm_codec_mismatch(info: tp.Mapping[str, tp.Any], codec: EncodecModel) -> str | None:
    """The codec an entropy model's metadata (:func:`read_lm_info`) names, when it is not
    ``codec``; None when it is, or when the metadata names none.

    The codec's weights hash (``codec_weights_hash``) decides when recorded; otherwise the
    sha256 of its config and state (``codec_hash``, every ``train-lm`` export), computed with
    the codec's name or the name recorded with it (a release loaded today has its versioned
    name; an entropy model trained before versioned names recorded ``opencodec_24khz``)."""
    weights = info.get("codec_weights_hash")
    if isinstance(weights, str) and weights:  # as headers carry it (identity.model_hash)
        return None if weights == short_hash(weights_sha256(codec)) else _recorded_codec(info)
    fingerprint = info.get("codec_hash")
    if not isinstance(fingerprint, str) or not fingerprint:
        return None
    if codec_fingerprint(codec) == fingerprint:
        return None
    recorded = info.get("codec")
    if isinstance(recorded, str) and recorded != codec.config.name \
            and codec_fingerprint(codec, name=recorded) == fingerprint:
        return None
    return _recorded_codec(info)


def check_lm_trained_for(info: tp.Mapping[str, tp.Any], codec: EncodecModel,
                         source: str = "the entropy model") -> None:
    """Raise ``ModelLoadError`` when an entropy model's metadata says it was trained on the
    codes of another codec than ``codec`` (:func:`lm_codec_mismatch`): it would code them
    losslessly, but its predictions are for other codes, so files come out larger."""
    other = lm_codec_mismatch(info, codec)
    if other is not None:
        raise ModelLoadError(
            f"{source} was trained on the codes of {other}, not on {codec.name} (weights hash "
            f"{short_hash(weights_sha256(codec))}): files coded with it would come out larger; use an entropy "
            f"model trained for {codec.name} (opencodec train-lm), or the codec it was trained for")


def check_lm_for_decoding(lm: tp.Any, codec: EncodecModel, recorded_hash: str | None) -> None:
    """Decoding: an entropy model trained on another codec's codes (``lm.trained_for``, see
    :func:`load_lm_model`) may decode a file that records its weights hash (``recorded_hash``,
    checked separately: the file was coded with it, e.g. before such pairs were refused); for a
    file that records none, nothing says it was, so it is a ``ModelLoadError``."""
    trained_for = getattr(lm, "trained_for", None)
    if trained_for and recorded_hash is None:
        name = getattr(lm, "name", None)
        check_lm_trained_for(trained_for, codec, f"entropy model {name}" if name else "the entropy model")
