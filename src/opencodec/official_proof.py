"""Which name and weights hash a file's header gives a model (:func:`header_identity`), and
whether a model with an official name has weights proven official (:func:`is_proven_official`).

A low layer (it imports only :mod:`opencodec.releases` and :mod:`opencodec.weights_hash`), so
that the ``.ecdc`` layout (:meth:`opencodec.bitstream.StreamLayout.from_model`) names a model as
its headers do; :mod:`opencodec.identity` re-exports both and has
:func:`~opencodec.identity.declare_official`, which sets what :data:`DECLARED_KEY` records.
"""

from __future__ import annotations

import sys
import typing as tp

from .releases import OFFICIAL_NAMES, export_name, short_hash
from .weights_hash import weights_sha256

if tp.TYPE_CHECKING:
    from .model import EncodecModel

__all__ = ["DECLARED_KEY", "is_proven_official", "header_identity"]

#: Key in a model's ``__dict__`` holding the weights hash :func:`~opencodec.identity.declare_official`
#: declared official.
DECLARED_KEY = "_declared_official_weights"


def is_proven_official(model: "EncodecModel") -> bool:
    """Whether ``model`` has an official name and weights proven to be that official model's in
    this process: loaded by name (or from the official checkpoint file, or a copy of weights
    so loaded; :func:`opencodec.pretrained.load_model` records their hash), or declared so by
    :func:`opencodec.identity.declare_official` (then only while its weights are unchanged)."""
    if model.name not in OFFICIAL_NAMES:
        return False
    # pretrained's record, read at call time (nothing was loaded by name if it is not imported)
    loaded = getattr(sys.modules.get(f"{__package__}.pretrained"), "_OFFICIAL_WEIGHTS", None) or {}
    digest = weights_sha256(model)
    return digest in loaded.get(model.name, ()) or model.__dict__.get(DECLARED_KEY) == digest


def header_identity(model: "EncodecModel") -> tuple[str, str | None]:
    """``(name, weights hash or None)`` for the header of a file ``model`` writes: official
    models give no hash (their headers stay the official package's) when their weights are
    proven official (:func:`is_proven_official`: loaded by name, or declared official);
    a model with an official name and other weights gives ``<name>_custom`` and its hash,
    every other model its name and its weights hash prefix."""
    if model.name in OFFICIAL_NAMES:
        if is_proven_official(model):
            return model.name, None
        return export_name(model.name), short_hash(weights_sha256(model))
    return model.name, short_hash(weights_sha256(model))
