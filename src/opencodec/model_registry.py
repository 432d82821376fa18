"""Which models and entropy models opencodec knows by name, and where their files are.

The official checkpoints (:data:`OFFICIAL_CHECKPOINTS`, :data:`OFFICIAL_LM_CHECKPOINTS`), the
releases shipped inside the package (:data:`BUNDLED_MODELS`, :data:`BUNDLED_LMS`; every release
is recorded in :mod:`opencodec.releases`), which entropy model belongs to which codec
(:data:`CODEC_LMS`), and the file of a release (:func:`release_path`, checked with
:func:`verify_release`). Loading is :mod:`opencodec.pretrained` (codecs) and
:mod:`opencodec.lm_loading` (entropy models).
"""

from __future__ import annotations

import errno
import os
import typing as tp
from pathlib import Path

from .errors import PATH_CHARS, CodecAsEntropyModelError, ModelLoadError, shown  # shown: re-exported
# Moved to the torch-free opencodec.model_config (for ``opencodec info``), re-exported here:
from .model_config import BUNDLED_DIR, BUNDLED_MODELS, config_for_name
from .official_files import cache_dir
from .releases import (CODEC_ALIAS, CODEC_RELEASES, CURRENT_LM, DEFAULT_MODEL, LM_ALIAS, LM_RELEASES,
                       CodecRelease, LMRelease, extract_command, lm_release)

__all__ = ["OFFICIAL_CHECKPOINTS", "OFFICIAL_LM_CHECKPOINTS", "OFFICIAL_LM_FRAME_RATES", "CODEC_LMS",
           "BUNDLED_DIR", "BUNDLED_MODELS", "BUNDLED_LMS", "BUNDLED_LM_FRAME_RATES", "DEFAULT_MODEL",
           "known_models", "config_for_name", "known_lm_models", "lm_name_for_codec", "release_path",
           "verify_release", "weights_path", "shown", "unknown_lm_error"]

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
# The models shipped inside the package: BUNDLED_DIR and BUNDLED_MODELS (opencodec.model_config).
# Entropy models shipped inside the package, with the frame rate of the codec they serve.
BUNDLED_LMS: dict[str, str] = {
    LM_ALIAS: tp.cast(str, lm_release(CURRENT_LM).file),  # type: ignore[union-attr]
    **{r.name: r.file for r in LM_RELEASES if r.file is not None}}
BUNDLED_LM_FRAME_RATES: dict[str, int] = {
    LM_ALIAS: 75, **{r.name: 75 for r in LM_RELEASES}}
CODEC_LMS[CODEC_ALIAS] = LM_ALIAS
CODEC_LMS.update({r.name: r.lm for r in CODEC_RELEASES})

def known_models() -> list[str]:
    """Names ``load_model`` resolves without a path (releases that are not shipped are
    named too: loading one explains how to get its file)."""
    return sorted(set(OFFICIAL_CHECKPOINTS) | set(BUNDLED_MODELS) | {r.name for r in CODEC_RELEASES})


def release_path(release: CodecRelease | LMRelease, what: str) -> Path:
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
    option = "--model" if isinstance(release, CodecRelease) else "--lm-model"  # the other refuses it
    raise ModelLoadError(
        f"{what} {release.name!r} ({release.summary}) is not shipped in the package: commit "
        f"{release.commit[:7]} of the opencodec repository has it. In a clone, run "
        f"`{extract_command(release)}`, then pass that file ({option} PATH; its "
        f"weights hash is checked) or put it at {path}")


def verify_release(release: CodecRelease | LMRelease, digest: str, path: Path, what: str) -> None:
    if digest != release.sha256:
        raise ModelLoadError(
            f"{path} does not hold the {what} release {release.name!r}: its weights hash is "
            f"{digest[:16]}, the release's is {release.sha256[:16]} (file replaced or damaged; new "
            f"weights need a new release in opencodec/releases.py; "
            f"`{extract_command(release)}` writes the release's file)")


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


def weights_path(target: tp.Any, what: str = "model") -> Path:
    """``target`` (a name that is not known, or a path) as a path: a ``TypeError`` for
    another type, a ``ModelLoadError`` for an empty string (which ``Path`` reads as ``.``) and
    for one too long for a file name (``Path.exists`` raises ``OSError`` for it; the error shows
    it shortened, :func:`shown`)."""
    if not isinstance(target, (str, os.PathLike)):
        raise TypeError(f"expected a {what} name or a weights file path (str or os.PathLike), got "
                        f"{type(target).__name__} {target!r:.60}")
    if str(os.fspath(target)).strip() == "":
        known = known_models() if what == "model" else known_lm_models()
        article = "an" if what[:1] in "aeiou" else "a"
        raise ModelLoadError(f"empty {what} name: pass {article} {what} name ({', '.join(known)}) or a "
                             f"weights file path")
    path = Path(target).expanduser()
    try:
        path.exists()
    except OSError as exc:  # ENAMETOOLONG: Path.exists raises it instead of answering False
        if exc.errno != errno.ENAMETOOLONG:
            raise
        raise ModelLoadError(f"no {what} named {shown(os.fspath(target))}, and too long for a file "
                             f"name ({exc.strerror})") from None
    return path


def unknown_lm_error(target: str | os.PathLike[str], advice: str) -> ModelLoadError:
    """The error for ``target`` given as an entropy model when it is neither a known entropy
    model name nor a file: a codec's name says so and names that codec's entropy model
    (``CodecAsEntropyModelError`` with ``advice``, the command's words for where a codec goes),
    anything else lists the known names."""
    name = os.fspath(target)
    if isinstance(name, str) and name in known_models():
        own = lm_name_for_codec(name)
        which = (f"its entropy model is {own!r}" if own is not None else
                 "no entropy model is known for it")
        return CodecAsEntropyModelError(f"{name!r} is a codec, not an entropy model: {which}", advice)
    return ModelLoadError(f"no entropy model named {shown(str(name), PATH_CHARS)} and no such file; "
                          f"known names: {', '.join(known_lm_models())}")
