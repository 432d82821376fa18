"""The ``.ecdc`` header: its constants, :class:`EcdcHeader` (with version 1's
:class:`DeterministicCoding`), the validation of its fields, and reading and writing it."""

from __future__ import annotations

import io
import json
import struct
import typing as tp
import warnings
from dataclasses import dataclass

from ..errors import BitstreamError
from ..releases import needs_weights_hash

MAGIC = b"ECDC"
"""The four bytes every ``.ecdc`` file starts with."""

VERSION = 0
"""The official format's version byte (the only one the official package reads)."""

DETERMINISTIC_VERSION = 1
"""Version byte of the deterministic entropy-coded format (opencodec only)."""

VERSIONS = (VERSION, DETERMINISTIC_VERSION)
"""Version bytes this reader accepts."""

HEADER_STRUCT = struct.Struct("!4sBI")
"""Fixed part of the header: magic, version byte, big-endian uint32 JSON length (9 bytes)."""

MAX_HEADER_JSON_BYTES = 1 << 16
"""Largest JSON header accepted (a real one is under 100 bytes); guards against huge reads."""

DEFAULT_CHECK_BITS = 8
"""Default width of the periodic checks of the deterministic format (see
:mod:`opencodec.bitstream`)."""

MAX_LM_NAME_CHARS = 200
"""Longest entropy-model name a version 1 header may carry."""

MAX_MODEL_NAME_CHARS = 200
"""Longest model name (``m``) a header may carry: registered names are under 30 characters,
``<name>_custom`` and a trained model's name far below it."""

_HASH_CHARS = frozenset("0123456789abcdef")

KNOWN_KEYS = {VERSION: ("m", "al", "nc", "lm", "mh", "lmh"),
              DETERMINISTIC_VERSION: ("m", "al", "nc", "lm", "mh", "lmn", "lmh", "fx", "cb", "ci")}
"""The JSON keys each version defines; a reader warns about others (another writer's, or a
damaged key name) and ignores them."""


def default_check_interval(frame_rate: float) -> int:
    """Frames between the periodic checks by default: about one second of frames."""
    return max(1, int(round(frame_rate)))


@dataclass(frozen=True)
class DeterministicCoding:
    """What a version 1 (deterministic) header adds: the entropy model's name (JSON
    ``lmn``) and weights hash (``lmh``, 16 lowercase hex digits), its fixed-point scheme
    (``fx``), and the checks: ``check_bits`` (``cb``, 0..32) every ``check_interval`` frames
    (``ci``, >= 1), besides the CRC-32 that ends every segment."""

    lm_name: str
    lm_hash: str
    scheme: int
    check_bits: int = DEFAULT_CHECK_BITS
    check_interval: int = 75

    def __post_init__(self) -> None:
        _check_deterministic_fields(self.to_dict())

    def to_dict(self) -> dict[str, tp.Any]:
        """The JSON keys this adds to the header, in order ``lmn, lmh, fx, cb, ci``."""
        return {"lmn": self.lm_name, "lmh": self.lm_hash, "fx": self.scheme,
                "cb": self.check_bits, "ci": self.check_interval}


@dataclass(frozen=True)
class EcdcHeader:
    """The JSON header of an ``.ecdc`` file.

    ``model_name`` (JSON ``m``), ``audio_length`` in samples per channel (``al``),
    ``num_codebooks`` per frame (``nc``) and ``use_lm``: whether the body is entropy coded
    (``lm``). ``deterministic`` (None for the official version 0 format) makes it a
    version 1 header, entropy coded with the integer model (``use_lm`` must be true).
    ``model_hash`` (``mh``, 16 hex digits): the model's weights hash, written for every model
    but the official ones; ``lm_hash`` (``lmh``): the entropy model's, for a version 0
    entropy-coded file (version 1 carries it in ``deterministic``). See
    :mod:`opencodec.identity`.
    """

    model_name: str
    audio_length: int
    num_codebooks: int
    use_lm: bool
    deterministic: DeterministicCoding | None = None
    model_hash: str | None = None
    lm_hash: str | None = None

    def __post_init__(self) -> None:
        if self.deterministic is not None and not isinstance(self.deterministic, DeterministicCoding):
            raise TypeError("deterministic must be a DeterministicCoding or None")
        if self.lm_hash is not None and (self.deterministic is not None or not self.use_lm):
            raise BitstreamError("ECDC header: lm_hash is for version 0 entropy-coded files "
                                 "(a deterministic header carries its own)")
        _check_header_fields(self.to_dict(), self.version)

    @property
    def entropy_model_hash(self) -> str | None:
        """The entropy model's weights hash the file records (``lmh``), or None."""
        return self.deterministic.lm_hash if self.deterministic is not None else self.lm_hash

    @property
    def version(self) -> int:
        """The version byte: 1 with ``deterministic``, else 0."""
        return VERSION if self.deterministic is None else DETERMINISTIC_VERSION

    def to_dict(self) -> dict[str, tp.Any]:
        """The JSON object, keys in the official order ``m, al, nc, lm`` (then version 1's)."""
        meta: dict[str, tp.Any] = {"m": self.model_name, "al": self.audio_length,
                                   "nc": self.num_codebooks, "lm": self.use_lm}
        if self.model_hash is not None:
            meta["mh"] = self.model_hash
        if self.lm_hash is not None:
            meta["lmh"] = self.lm_hash
        if self.deterministic is not None:
            meta.update(self.deterministic.to_dict())
        return meta

    def to_json(self) -> bytes:
        """UTF-8 JSON exactly as the official writer produces it (default separators)."""
        return json.dumps(self.to_dict()).encode("utf-8")

    @classmethod
    def from_dict(cls, meta: tp.Any, version: int = VERSION) -> "EcdcHeader":
        """Validate a decoded JSON value of a ``version`` header and build the header;
        unknown keys are ignored with a warning that names them."""
        _check_header_fields(meta, version)
        unknown = [key for key in meta if key not in KNOWN_KEYS[version]]
        if unknown:
            warnings.warn(f"ECDC header: unknown key(s) {', '.join(map(repr, unknown))} ignored "
                          f"(known: {', '.join(KNOWN_KEYS[version])}); written by another "
                          f"program, or the header is damaged", stacklevel=2)
        det = None
        if version == DETERMINISTIC_VERSION:
            det = DeterministicCoding(lm_name=meta["lmn"], lm_hash=meta["lmh"], scheme=meta["fx"],
                                      check_bits=meta["cb"], check_interval=meta["ci"])
        return cls(model_name=meta["m"], audio_length=meta["al"], num_codebooks=meta["nc"],
                   use_lm=meta["lm"], deterministic=det, model_hash=meta.get("mh"),
                   lm_hash=meta.get("lmh") if det is None else None)

    @classmethod
    def from_json(cls, data: bytes | str, version: int = VERSION) -> "EcdcHeader":
        """Parse the JSON part of a ``version`` header (bytes must be UTF-8)."""
        if isinstance(data, (bytes, bytearray, memoryview)):
            try:
                text = bytes(data).decode("utf-8")
            except UnicodeDecodeError as exc:
                raise BitstreamError(f"ECDC header: JSON is not valid UTF-8 ({exc})") from None
        else:
            text = data
        try:
            meta = json.loads(text)
        except (ValueError, RecursionError) as exc:
            raise BitstreamError(f"ECDC header: invalid JSON ({_short(exc)})") from None
        return cls.from_dict(meta, version)


def _short(exc: BaseException, limit: int = 200) -> str:
    text = f"{type(exc).__name__}: {exc}"
    return text if len(text) <= limit else text[:limit] + "..."


def _describe(value: tp.Any) -> str:
    text = repr(value)
    if len(text) > 60:
        text = text[:60] + "..."
    return f"{type(value).__name__} {text}"


def _check_int(meta: dict[str, tp.Any], key: str, what: str, low: int, high: int | None = None) -> None:
    value = meta[key]
    bounds = f">= {low}" if high is None else f"in [{low}, {high}]"
    if isinstance(value, bool) or not isinstance(value, int):
        raise BitstreamError(f"ECDC header field {key!r} ({what}): expected an integer {bounds}, "
                             f"got {_describe(value)}")
    if value < low or (high is not None and value > high):
        raise BitstreamError(f"ECDC header field {key!r} ({what}): expected an integer {bounds}, "
                             f"got {value}")


def _check_header_fields(meta: tp.Any, version: int = VERSION) -> None:
    """Raise ``BitstreamError`` unless ``meta`` is a valid header object of ``version``."""
    if not isinstance(meta, dict):
        raise BitstreamError(f"ECDC header: expected a JSON object, got {_describe(meta)}")
    missing = [key for key in ("m", "al", "nc", "lm") if key not in meta]
    if missing:
        raise BitstreamError(f"ECDC header: missing key(s) {', '.join(map(repr, missing))} "
                             f"(expected 'm', 'al', 'nc', 'lm'; got {sorted(map(str, meta))})")
    _check_name(meta, "m", "model name", MAX_MODEL_NAME_CHARS)
    name = meta["m"]
    _check_int(meta, "al", "audio length", 1)
    _check_int(meta, "nc", "number of codebooks", 1)
    if not isinstance(meta["lm"], bool):
        raise BitstreamError(f"ECDC header field 'lm' (entropy coded): expected true or false, "
                             f"got {_describe(meta['lm'])}")
    if "mh" in meta:
        _check_hash(meta, "mh", "model weights hash")
    elif needs_weights_hash(name):
        raise BitstreamError(f"ECDC header names model {name!r} but has no weights hash ('mh'), "
                             f"which every file of that release records: the header is damaged "
                             f"(keys: {', '.join(map(str, meta))})")
    if version == DETERMINISTIC_VERSION:
        if meta["lm"] is not True:
            raise BitstreamError("ECDC version 1 (deterministic entropy coding) header: field 'lm' "
                                 "must be true, got false")
        _check_deterministic_fields(meta)
    elif "lmh" in meta:
        if meta["lm"] is not True:
            raise BitstreamError("ECDC header field 'lmh' (entropy model weights hash) in a file "
                                 "that is not entropy coded ('lm': false)")
        _check_hash(meta, "lmh", "entropy model weights hash")


def _check_name(meta: dict[str, tp.Any], key: str, what: str, limit: int) -> None:
    """A model name: a non-empty string of at most ``limit`` printable characters (no line
    break, tab or terminal escape: readers print it, and it must not fake lines there)."""
    name = meta[key]
    if not isinstance(name, str) or not name:
        raise BitstreamError(f"ECDC header field {key!r} ({what}): expected a non-empty string, "
                             f"got {_describe(name)}")
    if len(name) > limit:
        raise BitstreamError(f"ECDC header field {key!r} ({what}): expected at most {limit} "
                             f"characters, got {len(name)} ({_describe(name)})")
    bad = unprintable(name)
    if bad:
        raise BitstreamError(f"ECDC header field {key!r} ({what}): expected printable characters only "
                             f"(readers print the name), got {bad} in {_describe(name)}")


def unprintable(name: str) -> str | None:
    """The first character of a model name that readers cannot print as is (a line break, tab
    or terminal escape, which could fake lines where they print it), as ``'\\n' (U+000A)``;
    None when every character is printable. ``.ecdc`` and packet-stream headers check their
    model names with it."""
    bad = next((ch for ch in name if not ch.isprintable()), None)
    return None if bad is None else f"{bad!r} (U+{ord(bad):04X})"


def check_num_codebooks(num_codebooks: int, n_q: int, model_name: str, what: str = "the file") -> None:
    """``BitstreamError`` when a header's ``num_codebooks`` exceeds the ``n_q`` codebooks of model
    ``model_name``: that model did not write ``what`` (a file, a stream)."""
    if num_codebooks > n_q:
        raise BitstreamError(f"{what} uses {num_codebooks} codebooks, but model {model_name!r} has "
                             f"at most {n_q}: it is not the model that wrote it")


def _check_hash(meta: dict[str, tp.Any], key: str, what: str) -> None:
    digest = meta[key]
    if not isinstance(digest, str) or len(digest) != 16 or not set(digest) <= _HASH_CHARS:
        raise BitstreamError(f"ECDC header field {key!r} ({what}): expected 16 "
                             f"lowercase hex digits, got {_describe(digest)}")


def _check_deterministic_fields(meta: dict[str, tp.Any]) -> None:
    """Raise ``BitstreamError`` unless ``meta`` has valid version 1 fields."""
    keys = ("lmn", "lmh", "fx", "cb", "ci")
    missing = [key for key in keys if key not in meta]
    if missing:
        raise BitstreamError(f"ECDC version 1 (deterministic entropy coding) header: missing key(s) "
                             f"{', '.join(map(repr, missing))} (expected {', '.join(map(repr, keys))})")
    _check_name(meta, "lmn", "entropy model name", MAX_LM_NAME_CHARS)
    _check_hash(meta, "lmh", "entropy model weights hash")
    _check_int(meta, "fx", "fixed-point scheme", 1)
    _check_int(meta, "cb", "check bits", 0, 32)
    _check_int(meta, "ci", "check interval in frames", 1, (1 << 31) - 1)


def header_bytes(header: EcdcHeader) -> bytes:
    """The header's bytes as :func:`write_header` writes them (fixed part + JSON)."""
    meta = header.to_json()
    if len(meta) > MAX_HEADER_JSON_BYTES:
        raise BitstreamError(f"ECDC header: JSON is {len(meta)} bytes, at most "
                             f"{MAX_HEADER_JSON_BYTES} allowed (model name too long?)")
    return HEADER_STRUCT.pack(MAGIC, header.version, len(meta)) + meta


def write_header(fo: tp.BinaryIO, header: EcdcHeader) -> int:
    """Write the header (fixed part + JSON) to ``fo``; returns the bytes written."""
    data = header_bytes(header)
    fo.write(data)
    return len(data)


def _read_up_to(fo: tp.BinaryIO, size: int) -> bytes:
    """Read ``size`` bytes or fewer at end of stream (chunked, never allocating more)."""
    parts: list[bytes] = []
    remaining = size
    while remaining > 0:
        chunk = fo.read(min(remaining, 1 << 16))
        if not chunk:
            break
        parts.append(chunk)
        remaining -= len(chunk)
    return b"".join(parts)


def read_header(fo: tp.BinaryIO) -> EcdcHeader:
    """Read and validate a header from ``fo``, leaving it positioned at the body.

    Raises ``BitstreamError`` for a wrong magic or version (0 and 1 are read), a truncated
    header, a JSON length beyond :data:`MAX_HEADER_JSON_BYTES` or beyond the data
    available, invalid UTF-8/JSON, missing or mistyped fields, and a release's name without
    its weights hash (:func:`opencodec.releases.needs_weights_hash`); warns about unknown keys.
    """
    fixed = _read_up_to(fo, HEADER_STRUCT.size)
    if len(fixed) < HEADER_STRUCT.size:
        start = fixed[:len(MAGIC)]
        if start != MAGIC[:len(start)]:
            raise BitstreamError(f"not an ECDC file: magic expected {MAGIC!r}, got {start!r}")
        raise BitstreamError(f"ECDC header truncated: expected {HEADER_STRUCT.size} bytes "
                             f"(magic, version, JSON length), got {len(fixed)}")
    magic, version, meta_size = HEADER_STRUCT.unpack(fixed)
    if magic != MAGIC:
        raise BitstreamError(f"not an ECDC file: magic expected {MAGIC!r}, got {magic!r}")
    if version not in VERSIONS:
        raise BitstreamError(f"unsupported ECDC version: expected {VERSION} (official format) or "
                             f"{DETERMINISTIC_VERSION} (deterministic entropy coding), got {version}")
    meta = _read_up_to(fo, min(meta_size, MAX_HEADER_JSON_BYTES))
    if len(meta) < min(meta_size, MAX_HEADER_JSON_BYTES):
        raise BitstreamError(f"ECDC header truncated: JSON length field says {meta_size} bytes, "
                             f"only {len(meta)} available")
    if meta_size > MAX_HEADER_JSON_BYTES:
        raise BitstreamError(f"ECDC header: JSON length field says {meta_size} bytes, at most "
                             f"{MAX_HEADER_JSON_BYTES} allowed")
    return EcdcHeader.from_json(meta, version)


def parse_header(data: bytes) -> tuple[EcdcHeader, int]:
    """Parse the header at the start of ``data``; returns it and the body's offset in bytes."""
    fo = io.BytesIO(data)
    header = read_header(fo)
    return header, fo.tell()

