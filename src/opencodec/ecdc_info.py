"""What an ``.ecdc`` file says about itself, without loading any weights (``opencodec info``).

Torch-free (``tests/test_cli_light_info.py``): only the header and layout parts of
:mod:`opencodec.bitstream` and the configurations of :mod:`opencodec.model_config`, so that
``info`` answers without the seconds ``import torch`` takes. Only :func:`known_model` for a
weights file (``info -m PATH``) loads the model, and with it torch.
"""

from __future__ import annotations

import io
import json
import math
import os
import struct
import typing as tp
from pathlib import Path

from .bitstream.header import EcdcHeader, check_num_codebooks, read_header
from .bitstream.layout import StreamLayout, body_size, min_lm_body_size
from .errors import BitstreamError
from .model_config import CONFIG_METADATA_KEY, EncodecConfig, config_for_name
from .releases import (CODEC_ALIAS, OFFICIAL_NAMES, RELEASE_SETTINGS, CodecRelease, codec_release,
                       codec_releases_by_hash)

ECDC_SUFFIX = ".ecdc"
#: The first bytes of a packet stream (``opencodec.stream.format.SYNC``, which imports torch
#: with the stream package; ``tests/test_cli_light_info.py`` checks that the two agree).
PACKET_STREAM_SYNC = b"OCSP"
#: The first bytes of a zip archive: ``torch.save``'s format (``.pt``, ``.th``) since torch 1.6.
ZIP_MAGIC = b"PK\x03\x04"
#: The first bytes of a checkpoint that ``torch.save`` wrote in its legacy (pickle) format.
LEGACY_TORCH_MAGIC = b"\x80\x02\x8a\nl\xfc\x9cF\xf9 j\xa8P\x19."
#: The metadata key of an exported entropy model's record (``opencodec.lm_pairing.LM_METADATA_KEY``,
#: which imports torch; ``tests/test_cli_light_info.py`` checks that the two agree).
LM_METADATA_KEY = "opencodec_lm_config"
#: Largest safetensors JSON header read to tell what a weights file holds (a codec's is ~20 kB).
MAX_SAFETENSORS_HEADER = 16 << 20


def is_ecdc_file(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` (str or path-like) has the ``.ecdc`` suffix (any case)."""
    return Path(path).suffix.lower() == ECDC_SUFFIX


class KnownModel(tp.NamedTuple):
    """A model ``info --model`` names: its ``name``, its configuration and, for weights loaded
    from a file, its weights hash as headers carry it (None for a model known by name)."""

    name: str
    config: EncodecConfig
    weights_hash: str | None = None


def known_model(model_arg: str) -> KnownModel:
    """(name, configuration, weights hash) of a model name or weights file, for
    :func:`describe_file`'s ``known``: a known name needs no weights (hash None), a file is
    loaded for its configuration and weights hash."""
    config = config_for_name(model_arg)
    if config is not None:
        release = codec_release(config.name)
        return KnownModel(config.name, config, None if release is None else release.short_hash)
    from .identity import model_hash  # only here: a weights file needs torch to be read
    from .pretrained import load_model

    model = load_model(model_arg)
    return KnownModel(model.name, model.config, model_hash(model))


def known_fits(known: tuple[str, EncodecConfig] | KnownModel, model_name: str, model_hash: str | None) -> bool:
    """Whether ``known`` (:func:`known_model`, or a (name, configuration) pair) is the model
    that wrote a file whose header names ``model_name`` with weights hash ``model_hash``, as
    decompress decides: the hash is its own (whatever the name), or the header names it and
    records no other hash (a file of other weights under the same name is not its), or the
    header is a legacy one (the bare alias, no hash) and ``known`` a codec release."""
    recorded = known[2] if len(known) > 2 else None  # type: ignore[misc]
    if model_hash is not None and recorded is not None:
        return recorded == model_hash
    if model_name == CODEC_ALIAS and model_hash is None:  # a file from before versioned names:
        return codec_release(known[0]) is not None  # decompress takes the release the caller names
    return known[0] == model_name


def describe_file(path: str | os.PathLike[str], known: tuple[str, EncodecConfig] | KnownModel | None = None
                  ) -> dict[str, tp.Any]:
    """What an ``.ecdc`` file's header and size say, without loading any weights.

    ``path``: the file, a str or path-like (``Path``).

    Keys: ``file``, ``model``, ``model_hash``, ``release`` (what the name and hash say about
    the weights, in words), ``sample_rate`` (Hz), ``channels``, ``codebooks``,
    ``bandwidth_kbps`` (nominal: codebooks x log2(bins) x frame rate), ``samples``,
    ``duration_s``, ``size_bytes``, ``bitrate_kbps`` (actual: 8 x size / duration) and
    ``entropy_coded``, ``body_bytes_missing`` (a plain body's bytes missing, negative for
    bytes too many, 0 for a complete file; None for an entropy-coded body, whose length only
    decoding tells, or an unknown model), ``lm_body_min_bytes`` (an entropy-coded body's
    lower bound in bytes, :func:`~opencodec.bitstream.min_lm_body_size`; None otherwise) and
    ``body_bytes`` (the bytes after the header). Values that need the model's configuration are None for a model
    name that is not known; ``known`` = (model name, its configuration[, weights hash]),
    :func:`known_model`, describes the files it wrote (``info --model``; :func:`known_fits`:
    its weights hash, or its name without another hash). Deterministic (version 1) files add
    ``format_version``, ``lm_name``, ``lm_hash``, ``lm_scheme``, ``check_bits`` and ``check_interval`` (frames).
    A release that is not shipped is known from its record (:func:`release_layout`).

    Raises ``BitstreamError`` for a damaged header (:func:`read_file_header`) and for one that
    uses more codebooks than its known model has (the check decompress makes,
    :func:`~opencodec.bitstream.header.check_num_codebooks`).
    """
    path = Path(path)
    with open(path, "rb") as raw:
        if path.is_file():
            header: EcdcHeader = read_file_header(raw)
            header_bytes = raw.tell()
            size = raw.seek(0, io.SEEK_END)
        else:  # a pipe (/dev/stdin) or device cannot seek: the header, then the rest counted, not kept
            fo = _CountingReader(raw)
            header = read_file_header(fo)  # type: ignore[arg-type]
            header_bytes = fo.count
            while fo.read(1 << 20):
                pass
            size = fo.count
    release = codec_release(header.model_name)
    facts: tuple[int, int, int, float] | None = None  # sample rate, channels, bins, frame rate
    config: EncodecConfig | None = config_for_name(header.model_name)
    if config is None and known is not None and known_fits(known, header.model_name, header.model_hash):
        config = known[1]
    if config is None and release is None and header.model_hash is not None:
        # the release whose weights hash the file records: the one decompress decodes it with
        # (opencodec.identity.model_for_file), whatever name the header gives
        by_hash = codec_releases_by_hash(header.model_hash)
        if by_hash:
            release = by_hash[0]
            config = config_for_name(release.name)
    layout: StreamLayout | None = None
    if config is not None:
        facts = (config.sample_rate, config.channels, config.bins, config.frame_rate)
        layout = StreamLayout.from_config(config, header.model_name)
        check_num_codebooks(header.num_codebooks, config.n_q, config.name)
    elif release is not None:  # a release that is not shipped: its record has the numbers
        facts = (release.sample_rate, release.channels, release.bins, release.frame_rate)
        layout = release_layout(release, header.model_name)
        check_num_codebooks(header.num_codebooks, release.n_q, release.name)
    info: dict[str, tp.Any] = {
        "file": str(path), "model": header.model_name, "model_hash": header.model_hash,
        "release": release_note(header.model_name, header.model_hash),
        "sample_rate": None, "channels": None,
        "codebooks": header.num_codebooks, "bandwidth_kbps": None, "samples": header.audio_length,
        "duration_s": None, "size_bytes": size, "bitrate_kbps": None, "entropy_coded": header.use_lm,
        "body_bytes": size - header_bytes}
    if facts is not None:
        rate, channels, bins, frame_rate = facts
        duration = header.audio_length / rate
        info.update(
            sample_rate=rate, channels=channels,
            bandwidth_kbps=header.num_codebooks * math.log2(bins) * frame_rate / 1000,
            duration_s=duration, bitrate_kbps=size * 8 / duration / 1000)
    info["body_bytes_missing"] = _body_bytes_missing(header, layout, size - header_bytes)
    info["lm_body_min_bytes"] = None if facts is None else _lm_body_min_bytes(header, layout, facts[2])
    if header.lm_hash is not None:
        info.update(lm_hash=header.lm_hash)
    det = header.deterministic
    if det is not None:
        info.update(format_version=header.version, lm_name=det.lm_name, lm_hash=det.lm_hash,
                    lm_scheme=det.scheme, check_bits=det.check_bits, check_interval=det.check_interval)
    return info


class _CountingReader:
    """A binary stream that counts the bytes read from it (a pipe's size, which ``tell`` and
    ``seek`` do not give); it has no ``seekable``, so :func:`read_file_header` reads it once."""

    def __init__(self, raw: tp.BinaryIO) -> None:
        self.raw = raw
        self.count = 0

    def read(self, size: int = -1) -> bytes:
        data = self.raw.read(size)
        self.count += len(data)
        return data


class _KeepingReader(_CountingReader):
    """A :class:`_CountingReader` that keeps what was read (``taken``)."""

    def __init__(self, raw: tp.BinaryIO) -> None:
        super().__init__(raw)
        self.parts: list[bytes] = []

    def read(self, size: int = -1) -> bytes:
        data = super().read(size)
        self.parts.append(data)
        return data


def read_stream_file(path: str | os.PathLike[str], reader: str) -> tuple[EcdcHeader, bytes]:
    """A pipe's or device's (a file that cannot seek) header and all its bytes: the header is
    read and checked first (:func:`read_file_header`), so that a stream that is no ``.ecdc``
    file (``/dev/zero``, ``/dev/urandom``) is refused at its first bytes, not read until memory
    runs out."""
    with open(path, "rb") as raw:
        kept = _KeepingReader(raw)
        header = read_file_header(kept, reader)  # type: ignore[arg-type]
        return header, b"".join(kept.parts) + raw.read()


def read_file_header(fo: tp.BinaryIO, reader: str = "opencodec info") -> EcdcHeader:
    """:func:`~opencodec.bitstream.read_header`, whose error for a file that starts with the
    packet stream's sync word (``opencodec stream-encode``'s output) says so, and for a
    weights file (:func:`weights_file_kind`) names it and says that ``reader`` (the command
    or function reading, in the message) reads compressed files. A file object that cannot
    seek (a pipe) gets :func:`~opencodec.bitstream.read_header`'s own error."""
    if not _seekable(fo):
        return read_header(fo)
    start = fo.tell()
    try:
        return read_header(fo)
    except BitstreamError as exc:
        fo.seek(start)
        if fo.read(len(PACKET_STREAM_SYNC)) == PACKET_STREAM_SYNC:
            raise BitstreamError(f"{exc} (a packet stream: use opencodec stream-decode)") from None
        fo.seek(start)
        weights = weights_file_kind(fo)
        if weights is not None:
            raise BitstreamError(f"{weights}, not an .ecdc file: {reader} reads compressed files "
                                 f"(.ecdc, written by opencodec compress)") from None
        raise


def _seekable(fo: tp.Any) -> bool:
    """Whether file object ``fo`` can go back to where it was (``seekable()`` and ``tell``)."""
    try:
        return bool(fo.seekable()) and callable(getattr(fo, "tell", None))
    except (AttributeError, OSError, ValueError):
        return False


def weights_file_kind(fo: tp.BinaryIO) -> str | None:
    """What weights file ``fo`` holds, from its first bytes (read from the current position),
    in words for an error: ``"a safetensors weights file (an entropy model, for codec X)"``,
    ``"... (a codec, X)"``, ``"a torch checkpoint (...)"``; None for anything else. Reads only
    the start of the file and a safetensors file's JSON header (no torch, no tensors)."""
    start = fo.tell()
    head = fo.read(8)
    if head.startswith(ZIP_MAGIC):
        rest = fo.read(22)  # the rest of the zip's first local header: its name length at 26..28
        size = struct.unpack("<H", rest[18:20])[0] if len(rest) == 22 else 0
        first = fo.read(size) if size else b""
        if first.endswith(b"/data.pkl"):  # the first entry torch.save writes
            return "a torch checkpoint (a zip archive as torch.save writes: .pt, .th)"
        return None
    if (head + fo.read(len(LEGACY_TORCH_MAGIC) - len(head))).startswith(LEGACY_TORCH_MAGIC):
        return "a torch checkpoint (torch.save's legacy format)"
    if len(head) < 8:
        return None
    size = struct.unpack("<Q", head)[0]
    if not 2 <= size <= MAX_SAFETENSORS_HEADER:
        return None
    fo.seek(start + 8)  # a safetensors file: 8 bytes of JSON size (little endian), the JSON
    text = fo.read(size)
    if not text.startswith(b"{"):
        return None
    try:
        meta = json.loads(text)
    except (ValueError, RecursionError):
        return None
    return None if not isinstance(meta, dict) else f"a safetensors weights file{_safetensors_kind(meta)}"


def _safetensors_kind(header: dict[str, tp.Any]) -> str:
    """`` (an entropy model, for codec X)``, `` (a codec, X)`` or "" for a safetensors header."""
    meta = header.get("__metadata__")
    meta = meta if isinstance(meta, dict) else {}

    def recorded(key: str, field: str) -> str | None:
        try:
            value = json.loads(meta[key]).get(field)
        except (KeyError, TypeError, ValueError, AttributeError, RecursionError):
            return None
        return value if isinstance(value, str) and value.isprintable() and len(value) <= 60 else None

    if "emb.0.weight" in header:  # an entropy model's first embedding (opencodec.lm_loading)
        codec = recorded(LM_METADATA_KEY, "codec")
        return f" (an entropy model{f', for codec {codec}' if codec else ''})"
    if any(key.startswith(("encoder.", "quantizer.")) for key in header):
        name = recorded(CONFIG_METADATA_KEY, "name")
        return f" (a codec{f', {name}' if name else ''})"
    return ""


def release_layout(release: CodecRelease, name: str | None = None) -> StreamLayout | None:
    """The body layout of a release's files from its record and :data:`RELEASE_SETTINGS` (no
    weights; ``tests/test_trust_info_and_names.py`` checks it against the shipped releases);
    None when the record's frame rate does not give a whole hop length, its codebook size is
    not a power of two, or the releases' settings segment (a segment layout needs the model).
    ``name``: checked against headers (default the release's)."""
    hop, rest = divmod(release.sample_rate, release.frame_rate)
    bits = release.bins.bit_length() - 1
    if rest or release.bins != 1 << bits or RELEASE_SETTINGS["segment"] is not None:
        return None
    return StreamLayout(model_name=release.name if name is None else name, n_q=release.n_q, bits=bits,
                        hop_length=hop, normalize=bool(RELEASE_SETTINGS["normalize"]))


def _body_bytes_missing(header: EcdcHeader, layout: StreamLayout | None, body: int) -> int | None:
    """How many bytes a plain (not entropy-coded) body lacks (negative: bytes too many), from
    the header and the model's layout; None when that cannot be told without decoding
    (entropy coded) or without the layout."""
    if layout is None or header.use_lm:
        return None
    return body_size(header, layout) - body


def _lm_body_min_bytes(header: EcdcHeader, layout: StreamLayout | None, bins: int) -> int | None:
    """A lower bound on an entropy-coded body's bytes (:func:`~opencodec.bitstream.min_lm_body_size`:
    a body below it is surely damaged; one above it is not proven whole, only decoding tells);
    None for a plain body or an unknown model. Each segment also has at least its scale and a
    coded byte (the coder writes its 24-bit range for the first code: 3 bytes), so an
    official-format body cut to nothing is caught too (a deterministic one's CRCs count more)."""
    if layout is None or not header.use_lm:
        return None
    segments = layout.num_segments(header.audio_length)
    return max(min_lm_body_size(header, layout, bins), segments * (layout.scale_bytes + 1))


def release_note(name: str, weights_hash: str | None) -> str:
    """What a header's model name and hash say about the weights, in words."""
    release = codec_release(name)
    if name in OFFICIAL_NAMES and weights_hash is None:
        return "official EnCodec weights"
    if weights_hash is None:
        if name == CODEC_ALIAS:
            return ("ambiguous: written before versioned names; decode with --model "
                    "opencodec_24khz_vN, the release installed when it was written")
        return "no weights hash recorded: decode with --model PATH to the weights that wrote it"
    if release is not None:
        where = "shipped" if release.file else f"not shipped, commit {release.commit[:7]} has it"
        if release.short_hash == weights_hash:
            return f"release {release.name} ({where})"
        return f"NOT release {release.name} (its hash is {release.short_hash}): other weights"
    matches = codec_releases_by_hash(weights_hash)
    if matches:
        return f"the weights of release {matches[0].name}"
    return "not a registered release: decode with --model PATH to its weights"
