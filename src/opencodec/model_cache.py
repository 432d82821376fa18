"""The models that decode a file: chosen from its header, loaded at most once per run.

:class:`CodecModels` gives the codec for a header's model name and weights hash (or the one
the user named, checked against the header); :class:`EntropyModels` gives the entropy model
of an entropy-coded file. Both remember failures too, so a folder of files written by a
model that cannot load reports each file without retrying the load.
"""

from __future__ import annotations

import typing as tp
from pathlib import Path

from .bandwidth import check_bandwidth
from .bitstream import EcdcHeader
from .bitstream.header import check_num_codebooks
from .errors import BitstreamError, OpenCodecError, UnsupportedBandwidthError, UsageError
from .identity import (check_codebooks_before_loading, check_lm_for_file, check_model_for_file,
                       lm_name_for_file, model_for_file)
from .model import EncodecConfig, EncodecModel
from .lm_pairing import check_lm_for_decoding
from .pretrained import (DEFAULT_MODEL, config_for_name, known_lm_models, lm_name_for_codec, load_lm_model,
                         load_model)
from .releases import CODEC_ALIAS, OFFICIAL_NAMES, codec_release, codec_releases_by_hash, resolve_alias
from .streamability import check_streamable

if tp.TYPE_CHECKING:
    from .entropy import EntropyLM

Loader = tp.Callable[[str], EncodecModel]


def check_model_bandwidth(bandwidth: float, name: str, supported: tp.Sequence[float]) -> None:
    """:class:`~opencodec.errors.UsageError` for a bandwidth (kbps) the model does not support."""
    try:
        check_bandwidth(bandwidth, supported, name)
    except UnsupportedBandwidthError as error:
        raise UsageError(str(error)) from None


def load_checked_model(model_arg: str | None, bandwidth: float | None, *, streaming: bool = False,
                       load: tp.Callable[[str | None], EncodecModel] | None = None) -> EncodecModel:
    """The model ``model_arg`` names (default :data:`~opencodec.pretrained.DEFAULT_MODEL`),
    checked to support ``bandwidth`` (kbps; None: not checked) and, with ``streaming``, to be
    streamable. A known
    name is checked before any weights load, so a bad option fails fast; the loaded model is
    checked again (a weights file). ``load`` defaults to :func:`~opencodec.pretrained.load_model`."""
    def check(config: EncodecConfig) -> None:
        if streaming:
            check_streamable(config)
        if bandwidth is not None:
            check_model_bandwidth(bandwidth, config.name, config.target_bandwidths)

    known = config_for_name(model_arg or DEFAULT_MODEL)
    if known is not None:
        check(known)
    model = (load or load_model)(model_arg)
    check(model.config)
    return model


def is_codec_name(model_arg: str) -> bool:
    """Whether ``model_arg`` names codec weights whose identity is known without loading them:
    an official model, a release of the bundled codec, or its alias."""
    return model_arg in OFFICIAL_NAMES or model_arg == CODEC_ALIAS or codec_release(model_arg) is not None


def check_named_model(model_arg: str, name: str, weights_hash: str | None, num_codebooks: int | None = None,
                      what: str = "the file") -> None:
    """Before model ``model_arg`` (a name given with ``-m``) is loaded, or downloaded: raise
    ``BitstreamError`` when a header naming model ``name`` with ``weights_hash`` (None: none)
    and ``num_codebooks`` (None: not checked) certainly needs other weights.

    Known without loading (:func:`is_codec_name`): a release's weights hash and codebooks
    (:mod:`opencodec.releases`), an official model's codebooks, that an official model's
    weights are no release's, and that a header naming an official model without a hash
    needs that model. Anything else (a weights file, a header naming another model without a
    hash) is checked once the model is loaded (:func:`~opencodec.identity.check_model_for_file`).
    """
    if not is_codec_name(model_arg):
        return
    release = codec_release(resolve_alias(model_arg))
    if num_codebooks is not None:
        if release is not None:
            check_num_codebooks(num_codebooks, release.n_q, release.name, what)
        else:
            config = config_for_name(model_arg)
            if config is not None:
                check_num_codebooks(num_codebooks, config.n_q, model_arg, what)
    if weights_hash is None:
        given = model_arg if release is None else release.name
        if name in OFFICIAL_NAMES and given != name:
            raise BitstreamError(f"{what} was written by model {name!r}, but the model given is "
                                 f"{model_arg!r}: pass the model that wrote it (or no -m: the "
                                 f"header's model)")
        return
    if release is not None:
        other = release.short_hash != weights_hash
    else:  # an official model: its weights are no release's
        other = codec_release(name) is not None or bool(codec_releases_by_hash(weights_hash))
    if other:
        raise BitstreamError(f"{what} was written by model {name!r} with weights hash {weights_hash}, "
                             f"but the model given is {model_arg!r}, whose weights are others: "
                             "pass the model that wrote it (or no -m: the header's model)")


class CodecModels:
    """Codecs for decompression, each loaded at most once: the ``model_arg`` one (name or
    weights file), or else the one each header names (a failure is remembered too). Either
    is checked against the header: architecture and weights hash (:mod:`opencodec.identity`).
    A ``model_arg`` weights file loads at once (a bad one fails before any file); a name
    (:func:`is_codec_name`) loads at the first header it can decode
    (:func:`check_named_model`), so weights a header rules out are never loaded or
    downloaded. ``load`` loads a model by name or path (default
    :func:`opencodec.pretrained.load_model`)."""

    def __init__(self, model_arg: str | None, load: Loader | None = None, exact: bool = True):
        base: Loader = load if load is not None else (lambda name: load_model(name))

        def load_in_mode(name: str | None) -> EncodecModel:  # each model's ``exact`` (fast when False)
            model = base(name)
            model.exact = exact
            return model

        self._load: Loader = load_in_mode
        self._arg = model_arg
        self._fixed: EncodecModel | Exception | None = None
        if model_arg is not None and not is_codec_name(model_arg):
            self._fixed = self._load(model_arg)
        self._by_name: dict[tuple[str, str | None], EncodecModel | Exception] = {}

    def _given(self) -> EncodecModel:
        """The ``model_arg`` model, loaded now if it was not (a failure is remembered)."""
        if self._fixed is None:
            try:
                self._fixed = self._load(self._arg)
            except OpenCodecError as exc:
                self._fixed = exc
        if isinstance(self._fixed, Exception):
            raise self._fixed
        return self._fixed

    def get(self, name: str, weights_hash: str | None = None, num_codebooks: int = 1,
            what: str = "the file") -> EncodecModel:
        """The model to decode a file whose header names model ``name`` with ``weights_hash``."""
        if self._arg is not None:
            check_named_model(self._arg, name, weights_hash, num_codebooks, what)
            model = self._given()
            check_model_for_file(model, name, weights_hash, num_codebooks, what)
            return model
        check_codebooks_before_loading(name, weights_hash, num_codebooks, what)
        key = (name, weights_hash)
        if key not in self._by_name:
            try:  # 1 codebook: the load is shared by this header's files, each checked below
                self._by_name[key] = model_for_file(name, weights_hash, 1, what, self._load)
            except OpenCodecError as exc:
                self._by_name[key] = exc
        found = self._by_name[key]
        if isinstance(found, Exception):
            raise found
        check_model_for_file(found, name, weights_hash, num_codebooks, what)
        return found


class EntropyModels:
    """Entropy models for decompression, each loaded at most once per codec: the ``lm_arg``
    one, or else the one each file records (release by weights hash, or name) or its codec's
    own (a failure is remembered too). Whether a model covers a file's codebooks, and its
    weights hash, are checked per file."""

    def __init__(self, lm_arg: str | None):
        self._arg = lm_arg
        self._by_codec: dict[tuple[int, str | None], tuple[EncodecModel, EntropyLM | Exception]] = {}

    def get(self, codec: EncodecModel, header: EcdcHeader) -> "EntropyLM":
        """The entropy model to decode an entropy-coded file of ``codec`` with ``header``."""
        det = header.deterministic
        name = self._arg or lm_name_for_file(det.lm_name if det is not None else None,
                                             header.entropy_model_hash, codec)
        key = (id(codec), name)
        if key not in self._by_codec:
            try:
                # another codec's entropy model may decode a file that records its hash
                found: EntropyLM | Exception = load_lm_model(name, codec=codec, any_codec=True)
            except OpenCodecError as exc:
                found = exc
            self._by_codec[key] = (codec, found)  # keeps codec alive, so its id stays unique
        found = self._by_codec[key][1]
        if isinstance(found, Exception):
            raise found
        if det is None:  # a deterministic file's hash is checked when it is decoded
            check_lm_for_file(found, header.lm_hash)
        check_lm_for_decoding(found, codec, header.entropy_model_hash)
        return found


def lm_header_name(lm_arg: str | None, model: EncodecModel, lm: "EntropyLM") -> str:
    """Entropy-model name for a deterministic file's header: the name it was loaded by (a
    release's versioned name, also for a file holding a release), a weights file's base
    name, or the name of the codec's own entropy model (``lm_arg`` None)."""
    if getattr(lm, "name", None):
        return str(lm.name)
    if lm_arg is None:
        return lm_name_for_codec(model.name) or "custom"
    return lm_arg if lm_arg in known_lm_models() else Path(lm_arg).name
