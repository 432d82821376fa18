"""Which weights a compressed file names, and whether a model is those weights.

A file's header names its model (``m``) and, for every model but the official ones, a prefix
of its weights hash (``mh``, :mod:`opencodec.weights_hash`); an entropy-coded file also
records its entropy model's hash (``lmh``). Decoding never uses other weights:

- :func:`header_identity` gives what a header written by a model carries: an official name
  without a hash only for weights proven official (loaded by name, or
  :func:`declare_official`), else ``<name>_custom`` and the hash;
- :func:`check_model_for_file` refuses a model whose architecture (sample rate, channels,
  codebooks, codebook size, frame rate) or weights do not fit a header;
- :func:`model_for_file` loads the model a header names (a registered release, see
  :mod:`opencodec.releases`, or an official model), refusing an ambiguous legacy header;
- :func:`lm_for_file` does the same for the entropy model.

The packet stream (:mod:`opencodec.stream`) uses the same checks with its own header.
"""

from __future__ import annotations

import typing as tp
import warnings

from .bitstream.header import check_num_codebooks
from .errors import BitstreamError, ModelLoadError
# OFFICIAL_NAMES, is_registered_name and export_name live in releases (pretrained uses them)
from .releases import (CODEC_ALIAS, CODEC_RELEASES, HASH_CHARS, LM_ALIAS, LM_RELEASES, OFFICIAL_NAMES,
                       codec_release, codec_releases_by_hash, export_name, is_registered_name,
                       legacy_choice_message, lm_release, lm_release_by_fixed_hash, needs_weights_hash,
                       short_hash)
from .official_proof import DECLARED_KEY, header_identity, is_proven_official, warn_not_proven
from .weights_hash import weights_sha256

if tp.TYPE_CHECKING:
    from .entropy import EntropyLM
    from .entropy.fixed import FixedLM
    from .model import EncodecModel


def model_hash(model: "EncodecModel") -> str:
    """The weights hash prefix a header carries for ``model`` (:data:`HASH_CHARS` hex digits)."""
    return short_hash(weights_sha256(model))


def lm_hash(lm: "EntropyLM | FixedLM") -> str:
    """The entropy model's weights hash as headers carry it: ``FixedLM.weights_hash`` of its
    integer twin (converted once and cached)."""
    from .entropy.fixed import fixed_lm_for

    return fixed_lm_for(lm).weights_hash


def declare_official(model: "EncodecModel") -> "EncodecModel":
    """Let ``model``, an official architecture (``encodec_24khz``/``encodec_48khz``) with
    weights that were not loaded by name, write the official package's headers (no weights
    hash); returns ``model``.

    Without it such a model (built with ``EncodecModel(EncodecConfig.encodec_24khz())``,
    given weights with ``load_state_dict``) writes ``<name>_custom`` and its weights hash
    (:func:`header_identity`), as a copy loaded from a file does; a model named
    ``<name>_custom`` (a copy loaded from a file) is renamed ``<name>``. RISK: an official
    header records no weights hash, so nothing checks the weights that decode it: the official
    package, or opencodec loading ``encodec_24khz`` by name, decodes the file with the
    official weights, which gives wrong audio without an error unless ``model`` really holds
    them. Use it for interoperability with those weights or byte-identity tests with random
    weights, never for fine-tuned or random weights whose files others will decode. The
    declaration holds for the weights ``model`` has now: changing them in place (training,
    ``load_state_dict``, another dtype) ends it. ``ValueError`` for another name, an
    architecture that is not the official one (sample rate, channels, codebooks, codebook size,
    frame rate), or a configuration that computes otherwise than the official one (``causal``,
    ``pad_mode``, ``segment``...: :func:`opencodec.config_identity.config_differences`; the
    official package would decode its files with the official one).
    """
    import dataclasses

    from .config_identity import config_differences
    from .model import EncodecConfig

    name = getattr(model, "name", None)
    official = next((n for n in OFFICIAL_NAMES if name in (n, export_name(n))), None)
    if official is None:
        names = " or ".join(OFFICIAL_NAMES)
        raise ValueError(f"declare_official needs a model named {names} (or <name>_custom, a copy "
                         f"loaded from a file), got {name!r}")
    facts = _named_facts(official)
    assert facts is not None
    have = dict(sample_rate=model.sample_rate, channels=model.channels, n_q=model.n_q,
                bins=model.bins, frame_rate=model.frame_rate)
    wrong = [f"{key} {have[key]} (official {facts[key]})" for key in facts
             if int(round(have[key])) != facts[key]]
    if wrong:
        raise ValueError(f"model {name!r} does not have the official architecture: {', '.join(wrong)}")
    reference = getattr(EncodecConfig, official)()
    wrong = config_differences(model.config, reference, official, shapes=False)
    if wrong:
        raise ValueError(f"model {name!r} computes otherwise than the official {official}, which "
                         f"would decode its files: {', '.join(wrong)}; declare a model with the "
                         f"official configuration (EncodecConfig.{official}())")
    if name != official:  # a copy loaded from a file: its config is its own (load_model copies it)
        model.config = dataclasses.replace(model.config, name=official)
    model.__dict__[DECLARED_KEY] = weights_sha256(model)
    return model


def _named_facts(name: str) -> dict[str, int] | None:
    """Architecture facts of a model known by name (official or a release), else None."""
    release = codec_release(name)
    if release is not None:
        return dict(sample_rate=release.sample_rate, channels=release.channels, n_q=release.n_q,
                    bins=release.bins, frame_rate=release.frame_rate)
    if name in OFFICIAL_NAMES:
        from .model import EncodecConfig

        config = EncodecConfig.encodec_24khz() if name == "encodec_24khz" else EncodecConfig.encodec_48khz()
        return dict(sample_rate=config.sample_rate, channels=config.channels, n_q=config.n_q,
                    bins=config.bins, frame_rate=config.frame_rate)
    return None


def _hashless_release_error(name: str, what: str) -> BitstreamError:
    """A header naming a release (or a bundled entropy model) without a weights hash: no
    writer produced one (versioned names came with ``mh``), so the header is damaged."""
    return BitstreamError(f"{what} names model {name!r} without a weights hash, which every file "
                          f"of that release records: its header is damaged")


def check_model_for_file(model: "EncodecModel", name: str, weights_hash: str | None,
                         num_codebooks: int, what: str = "the file", loaded_for: str | None = None,
                         lm_hash: str | None = None) -> None:
    """Raise ``BitstreamError`` unless ``model`` can decode a file whose header names model
    ``name`` with ``weights_hash`` (None: no hash) and ``num_codebooks`` codebooks.

    Checked: the codebooks used are at most the model's; when ``name`` is a known model (an
    official one or a release) the model has its sample rate, channels, codebook count,
    codebook size and frame rate; a hash must be the model's (:func:`model_hash`), whatever
    its name. Without a hash the names must agree, except that an official name accepts, with a
    warning, ``<name>_custom`` (weights loaded from a file that may be a copy of the official
    ones), and a header saying bare
    ``opencodec_24khz`` (written before versioned names) accepts any release of it that the
    caller named explicitly; a release's name without a hash is a damaged header.
    ``loaded_for``: why the model was chosen when the caller did not give it (e.g. "the
    release whose weights hash the file records"); errors then do not speak of "the model
    given". ``lm_hash``: the entropy-model hash the header records (``header.entropy_model_hash``),
    for :func:`warn_legacy_lm_of_another_release`.
    """
    who = (f"the model given ({model.name!r})" if loaded_for is None
           else f"model {model.name!r} ({loaded_for})")
    if weights_hash is None and needs_weights_hash(name):
        raise _hashless_release_error(name, what)
    check_num_codebooks(num_codebooks, model.n_q, model.name, what)
    facts = _named_facts(name)
    if facts is not None:
        have = dict(sample_rate=model.sample_rate, channels=model.channels, n_q=model.n_q,
                    bins=model.bins, frame_rate=model.frame_rate)
        wrong = [f"{key} {have[key]} (expected {facts[key]})" for key in facts
                 if int(round(have[key])) != facts[key]]
        if wrong:
            raise BitstreamError(f"{what} was written by model {name!r}, but {who} has another "
                                 f"architecture: {', '.join(wrong)}")
    if weights_hash is not None:
        actual = model_hash(model)
        if actual != weights_hash:
            raise BitstreamError(
                f"{what} was written by model {name!r} with weights hash {weights_hash}, but "
                f"{who} has weights hash {actual}: other weights would decode it to wrong audio; "
                f"pass the model that wrote it")
        return
    if name == CODEC_ALIAS and (codec_release(model.name) is not None or model.name == CODEC_ALIAS):
        if getattr(model, "loaded_by_alias", False):
            raise BitstreamError(legacy_choice_message(what) + f"; the model given was loaded as "
                                 f"{CODEC_ALIAS!r} (today's release, {model.name}), which is not a "
                                 f"choice of the release that wrote the file")
        warn_legacy_lm_of_another_release(model, lm_hash, what, stacklevel=3)
        return  # a legacy file, decoded with the release the caller chose
    if name in OFFICIAL_NAMES and (model.name == export_name(name)
                                   or (model.name == name and not is_proven_official(model))):
        # The official package's headers record no hash, so nothing proves which weights wrote
        # them, as before; a copy of the official weights loaded from a file is named
        # <name>_custom (opencodec.pretrained) and may be exactly those weights, as may a
        # model built with the official architecture.
        warn_not_proven(name, who, what, stacklevel=3)
        return
    if name != model.name:
        given = f"the model given is {model.name!r}" if loaded_for is None else f"{who} is another model"
        raise BitstreamError(f"{what} was written by model {name!r}, but {given}")


def warn_legacy_lm_of_another_release(model: "EncodecModel", lm_hash: str | None, what: str = "the file",
                                      stacklevel: int = 2) -> None:
    """Warn (``UserWarning``) when a legacy file (bare ``opencodec_24khz``, no weights hash),
    which ``model`` (a release the caller chose) is to decode, records the hash ``lm_hash`` of
    a released entropy model that served another codec release than ``model``'s weights: the
    file was most likely written by that release, and other weights decode it to wrong audio.
    Not refused: the caller named the model."""
    release = lm_release_by_fixed_hash(lm_hash) if lm_hash is not None else None
    if release is None:
        return
    served = codec_release(release.codec)
    if served is None or weights_sha256(model) == served.sha256:
        return
    warnings.warn(f"{what} names model {CODEC_ALIAS!r} without a weights hash, and its entropy model "
                  f"({release.name}, by the hash it records, {lm_hash}) served codec {served.name}, "
                  f"not the model given ({model.name}): it was most likely written by {served.name}, "
                  f"and other weights decode it to wrong audio; decode with -m {served.name} (Python: "
                  f"load_model({served.name!r}))", stacklevel=stacklevel + 1)


def model_for_file(name: str, weights_hash: str | None, num_codebooks: int,
                   what: str = "the file",
                   load: "tp.Callable[[str], EncodecModel] | None" = None) -> "EncodecModel":
    """Load the model a header names (``name``, ``weights_hash``) and check it fits.

    A hash selects the release that has it (the name must not contradict it); without a
    hash the name must be an official model (a name that comes from a file never chooses a
    file on this disk); a release's name without a hash is a damaged header
    (``BitstreamError``: every release's files record it), and bare ``opencodec_24khz``,
    which five releases used, is a ``ModelLoadError`` explaining how to choose. A hash that
    no release has is a ``ModelLoadError`` asking for the weights file. ``load`` loads a
    model by name (default :func:`opencodec.pretrained.load_model`).
    """
    if load is None:
        from .pretrained import load_model as load

    if weights_hash is None:
        if name == CODEC_ALIAS:
            raise ModelLoadError(legacy_choice_message(what))
        if needs_weights_hash(name):
            raise _hashless_release_error(name, what)
        if name not in OFFICIAL_NAMES:
            # the name came from the input: never let it choose a file on this disk
            known = ", ".join((*OFFICIAL_NAMES, *(r.name for r in CODEC_RELEASES)))
            raise ModelLoadError(
                f"{what} names model {name!r} without a weights hash, which is not a known model "
                f"({known}); pass the model that wrote it with --model PATH (Python: "
                f"load_model(PATH))")
        check_codebooks_before_loading(name, None, num_codebooks, what)
        model = load(name)
        loaded_for = "loaded by the name the file records"
    else:
        release = codec_release(name)
        if release is not None and release.short_hash != weights_hash:
            raise ModelLoadError(
                f"{what} names release {name!r} but weights hash {weights_hash}, and {name} has "
                f"{release.short_hash}: it was written by other weights under that name (a "
                f"custom export?); pass those weights with --model PATH (their hash is checked)")
        matches = [release] if release is not None else codec_releases_by_hash(weights_hash)
        if matches:
            check_codebooks_before_loading(name, weights_hash, num_codebooks, what)
            model = load(matches[0].name)
            loaded_for = "the release whose weights hash the file records"
        elif name in OFFICIAL_NAMES:
            check_codebooks_before_loading(name, weights_hash, num_codebooks, what)
            model = load(name)
            loaded_for = "loaded by the name the file records"
        else:
            known = ", ".join(r.name for r in CODEC_RELEASES)
            raise ModelLoadError(
                f"{what} was written by model {name!r} with weights hash {weights_hash}, which is "
                f"not a registered release ({known}); pass that model's weights file with "
                f"--model PATH (Python: load_model(PATH)); its hash is checked")
    check_model_for_file(model, name, weights_hash, num_codebooks, what, loaded_for)
    return model


def check_codebooks_before_loading(name: str, weights_hash: str | None, num_codebooks: int,
                                   what: str = "the file") -> None:
    """``BitstreamError`` when the model a header naming ``name`` with ``weights_hash`` is decoded
    with (a release, by its name or by the hash, or an official model: known without its
    weights) has fewer codebooks than the header uses: refused before its weights are extracted
    or downloaded (as ``opencodec info`` refuses the header). Nothing for another model."""
    release = codec_release(name)
    if release is None and weights_hash is not None:
        release = next(iter(codec_releases_by_hash(weights_hash)), None)
    target = name if release is None else release.name
    facts = _named_facts(target)
    if facts is not None:
        check_num_codebooks(num_codebooks, facts["n_q"], target, what)


def check_lm_for_file(lm: "EntropyLM | FixedLM", weights_hash: str | None,
                      what: str = "the file") -> None:
    """Raise ``BitstreamError`` when a file records entropy-model hash ``weights_hash`` and
    ``lm`` has another (None: nothing to check)."""
    if weights_hash is None:
        return
    actual = lm_hash(lm)
    if actual != weights_hash:
        raise BitstreamError(f"{what} was entropy coded by an entropy model with weights hash "
                             f"{weights_hash}, but the one given has {actual}: pass the entropy "
                             f"model that wrote it")


def lm_name_for_file(lm_name: str | None, weights_hash: str | None, codec: "EncodecModel",
                     what: str = "the file") -> str | None:
    """The name of the entropy model to load for a file: the release whose hash the file
    records (``weights_hash``), else the name it records (``lm_name``, a deterministic file),
    else None: the codec's own entropy model. Raises ``ModelLoadError`` when the file's
    entropy model is not a known one."""
    from .pretrained import known_lm_models

    if weights_hash is not None:
        release = lm_release_by_fixed_hash(weights_hash)
        if release is not None:
            return release.name
    if lm_name is not None:
        bundled = lm_name == LM_ALIAS or lm_release(lm_name) is not None
        if lm_name in known_lm_models() and not bundled:
            return lm_name  # an official entropy model: its hash is checked when decoding
        if bundled:  # a release's name (or the alias) on weights that no release has
            raise ModelLoadError(f"{what} was entropy coded with entropy model {lm_name!r}, but with "
                                 f"weights hash {weights_hash}, which no release has: with those "
                                 f"weights it is not a known name (other weights under that name, "
                                 f"such as a changed or rounded copy, wrote it); pass that entropy "
                                 f"model (lm=..., or --lm-model PATH on the command line)")
        raise ModelLoadError(f"{what} was entropy coded with entropy model {lm_name!r} (weights "
                             f"hash {weights_hash}), which is not a known name "
                             f"({', '.join(known_lm_models())}); pass that entropy model "
                             f"(lm=..., or --lm-model PATH on the command line)")
    if weights_hash is not None:
        raise ModelLoadError(f"{what} was entropy coded by an entropy model with weights hash "
                             f"{weights_hash}, which is not a registered one; pass it with "
                             f"--lm-model PATH (lm=... in Python)")
    served = [r for r in LM_RELEASES if r.codec == codec.name]
    if len(served) > 1:  # a file that records no entropy model, of a codec that had several
        choices = ", ".join(f"{r.name} ({r.commit[:7]}, {r.summary})" for r in served)
        raise ModelLoadError(
            f"{what} records no entropy-model hash (written before versioned names), and "
            f"{codec.name} was served by {len(served)} entropy models: {choices}. Name the one "
            f"installed when it was written: --lm-model NAME (lm=load_lm_model(NAME) in Python)")
    return None  # the codec's own: load_lm_model(None, codec=...) finds it, or explains

__all__ = ["OFFICIAL_NAMES", "HASH_CHARS", "model_hash", "lm_hash", "header_identity",
           "is_proven_official", "declare_official",
           "is_registered_name", "export_name",
           "check_model_for_file", "warn_legacy_lm_of_another_release", "model_for_file",
           "check_lm_for_file", "lm_name_for_file"]
