"""Which configuration the weights of a release, or of the official checkpoint, may run with.

A weights hash (:func:`opencodec.weights_hash.weights_sha256`) covers the tensors only, but the
configuration also decides what encode and decode compute: the bundled release's weights
loaded with ``causal: false`` decode its files to other audio without an error. So weights
that are a release's (same hash) or the official checkpoint's load only with that release's
configuration (:func:`release_config`: what its shipped file stores) or the official one
(``OFFICIAL_CONFIGS[name]()``) in every field that changes the computation
(:func:`config_differences`); :func:`check_config` words the refusal.

Measured field by field (the weights kept, one field changed; the bundled release and random
official 24 and 48 kHz weights; ``tests/test_release_config_identity.py``):

- ``causal``, ``pad_mode``, ``segment``: codes and decoded audio change; ``overlap`` too when
  segmenting (the 48 kHz model), and nothing without segments;
- ``sample_rate``: the frame rate, hence the codebooks a bandwidth uses (and what input is
  resampled to); ``normalize``: the codes (each segment is divided by its RMS);
- ``dilation_base``: the residual blocks' dilations ``dilation_base ** j``, which act only with
  more than one residual layer (every released model has one);
- :data:`SHAPE_FIELDS`: set by the tensor shapes (another value does not load the weights);
- :data:`FREE_FIELDS`: ``name``, and ``target_bandwidths`` (which bandwidths may be chosen: a
  bandwidth's codebook count depends on the frame rate alone, and files record the count).

Weights of no release and not the official checkpoint are not checked: their hash is
weights-only, so a copy of them with another configuration writes files under the same hash.

A low layer: it imports only :mod:`opencodec.errors` and :mod:`opencodec.releases`.
"""

from __future__ import annotations

import dataclasses
import typing as tp

from .errors import ModelLoadError
from .releases import RELEASE_SETTINGS, CodecRelease

if tp.TYPE_CHECKING:
    from .model import EncodecConfig

__all__ = ["FREE_FIELDS", "SHAPE_FIELDS", "config_differences", "check_config", "release_config"]

FREE_FIELDS: frozenset[str] = frozenset({"name", "target_bandwidths"})
"""Configuration fields that change nothing encode or decode compute."""

SHAPE_FIELDS: frozenset[str] = frozenset({
    "channels", "norm", "n_q", "bins", "dimension", "n_filters", "n_residual_layers", "ratios",
    "lstm", "kernel_size", "last_kernel_size", "residual_kernel_size", "compress", "true_skip"})
"""Fields the tensor shapes set: weights do not load with another value."""


def _matters(key: str, a: "EncodecConfig", b: "EncodecConfig", shapes: bool) -> bool:
    """Whether field ``key`` changes what configurations ``a`` and ``b`` compute."""
    if key in FREE_FIELDS or (not shapes and key in SHAPE_FIELDS):
        return False
    if key == "overlap":  # only between segments
        return a.segment is not None or b.segment is not None
    if key == "dilation_base":  # dilation_base ** j over the residual layers j
        return a.n_residual_layers > 1 or b.n_residual_layers > 1
    return True


def _plain(value: tp.Any) -> tp.Any:
    return list(value) if isinstance(value, (list, tuple)) else value


def config_differences(config: "EncodecConfig", reference: "EncodecConfig", label: str,
                       shapes: bool = True) -> list[str]:
    """The fields where ``config`` computes otherwise than ``reference``, each as
    ``"causal False (<label>: True)"``; ``shapes=False`` leaves out :data:`SHAPE_FIELDS`."""
    out = []
    for field in dataclasses.fields(reference):
        have, want = getattr(config, field.name), getattr(reference, field.name)
        if _matters(field.name, config, reference, shapes) and _plain(have) != _plain(want):
            out.append(f"{field.name} {have!r} ({label}: {want!r})")
    return out


def check_config(config: "EncodecConfig", reference: "EncodecConfig", name: str, what: str,
                 advice: str | None = None) -> None:
    """``ModelLoadError`` in one line (``what``, each differing field with both values, what to
    do: ``advice``, by default loading ``name`` by name or with its ``config_for_name``) when
    ``config`` computes otherwise than ``reference``, the configuration of ``name`` (a release
    or an official model)."""
    wrong = config_differences(config, reference, name)
    if wrong:
        advice = advice or (f"load {name!r} by name (--model {name}) without config=, or pass "
                            f"config=config_for_name({name!r})")
        raise ModelLoadError(f"{what}: {', '.join(wrong)}; these weights give other codes and audio "
                             f"with it: {advice} (only name and target_bandwidths may differ)")


def release_config(release: CodecRelease, shipped: "EncodecConfig | None",
                   loaded: "EncodecConfig") -> "EncodecConfig":
    """The configuration ``release`` was released with: ``shipped``, what its file in the
    package stores, or for a release not shipped, ``loaded``'s sizes (its weights have the
    release's hash, hence its shapes) with the release's ``sample_rate`` and
    :data:`~opencodec.releases.RELEASE_SETTINGS`."""
    if shipped is not None:
        return shipped
    return dataclasses.replace(loaded, sample_rate=release.sample_rate, **RELEASE_SETTINGS)  # type: ignore[arg-type]
