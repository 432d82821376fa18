"""Which name and weights hash a file's header gives a model (:func:`header_identity`), and
whether a model with an official name has weights proven official (:func:`is_proven_official`).

A low layer (it imports only :mod:`opencodec.releases` and :mod:`opencodec.weights_hash`), so
that the ``.ecdc`` layout (:meth:`opencodec.bitstream.StreamLayout.from_model`) names a model as
its headers do; :mod:`opencodec.identity` re-exports both and has
:func:`~opencodec.identity.declare_official`, which sets what :data:`DECLARED_KEY` records, as
:func:`record_official` does for weights :func:`opencodec.pretrained.load_model` proved official.
The proof is kept on the model itself (it pickles with it: a model sent to a spawned worker
process keeps writing the official header) and holds only while its weights are unchanged.
"""

from __future__ import annotations

import sys
import typing as tp
import warnings

from .releases import OFFICIAL_NAMES, export_name, short_hash
from .weights_hash import weights_sha256

if tp.TYPE_CHECKING:
    from .model import EncodecModel

__all__ = ["DECLARED_KEY", "is_proven_official", "header_identity", "record_official",
           "warn_not_proven"]

#: Key in a model's ``__dict__`` holding the weights hash declared official
#: (:func:`~opencodec.identity.declare_official`, :func:`record_official`).
DECLARED_KEY = "_declared_official_weights"


def record_official(model: "EncodecModel", record: dict[str, set[str]]) -> str:
    """Record ``model``'s weights (official checkpoint weights, which
    :func:`opencodec.pretrained.load_model` proved) as official: their hash is added to
    ``record`` (``pretrained``'s record of this process, under ``model.name``) and kept on the
    model (:data:`DECLARED_KEY`, which pickles with it, so the proof reaches a spawned process;
    changing the weights ends it). Returns the weights hash."""
    digest = weights_sha256(model)
    record.setdefault(model.name, set()).add(digest)
    model.__dict__[DECLARED_KEY] = digest
    return digest


def _proven(model: "EncodecModel", digest: str) -> bool:
    """Whether weights hashing to ``digest`` prove ``model`` (an official name) official."""
    # pretrained's record, read at call time (nothing was loaded by name if it is not imported)
    loaded = getattr(sys.modules.get(f"{__package__}.pretrained"), "_OFFICIAL_WEIGHTS", None) or {}
    return digest in loaded.get(model.name, ()) or model.__dict__.get(DECLARED_KEY) == digest


def is_proven_official(model: "EncodecModel") -> bool:
    """Whether ``model`` has an official name and weights proven to be that official model's:
    loaded by name (or from the official checkpoint file, or a copy of weights so loaded in
    this process; :func:`opencodec.pretrained.load_model` records their hash, in this process
    and on the model, see :func:`record_official`), or declared so by
    :func:`opencodec.identity.declare_official` (then only while its weights are unchanged)."""
    if model.name not in OFFICIAL_NAMES:
        return False
    return _proven(model, weights_sha256(model))


def header_identity(model: "EncodecModel") -> tuple[str, str | None]:
    """``(name, weights hash or None)`` for the header of a file ``model`` writes: official
    models give no hash (their headers stay the official package's) when their weights are
    proven official (:func:`is_proven_official`: loaded by name, or declared official);
    a model with an official name and other weights gives ``<name>_custom`` and its hash,
    every other model its name and its weights hash prefix."""
    digest = weights_sha256(model)  # once: a model of inference tensors is hashed on each call
    if model.name in OFFICIAL_NAMES:
        if _proven(model, digest):
            return model.name, None
        return export_name(model.name), short_hash(digest)
    return model.name, short_hash(digest)


def warn_not_proven(name: str, who: str, what: str, stacklevel: int) -> None:
    """Warn that ``what`` (a file whose header names official model ``name`` and records no
    weights hash) is read by ``who``, whose weights are not proven official (a copy loaded
    from a file, or a model built in this process): right only if they are the official ones."""
    warnings.warn(f"{what} was written by {name!r}, which records no weights hash; {who} has "
                  f"weights that are not proven to be the official ones (loaded from a file, "
                  f"or built in this process): decoding with them (right only if they are; "
                  f"load {name!r} by name to be sure)", stacklevel=stacklevel + 1)
