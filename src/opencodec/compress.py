"""Compress audio to ``.ecdc`` bytes and back, byte-compatible with the official package.

::

    data = compress(model, wav, bandwidth=6.0)      # wav [C, T]: C channels, T samples at model.sample_rate
    wav2, sample_rate = decompress(data)            # model named in the header, [C, T] again

The bytes equal those of the official ``encodec.compress.compress(model, wav,
use_lm=False)`` for the same weights; see :mod:`opencodec.bitstream` for the format.

With an entropy model (:class:`~opencodec.entropy.EntropyLM`, e.g. from
``opencodec.pretrained.load_lm_model``) the codes are arithmetic coded, as the official
``use_lm=True`` does (same bytes for the same weights, on the same machine and thread count)::

    lm = load_lm_model(codec=model)                  # encodec_lm_24khz for encodec_24khz
    data = compress(model, wav, bandwidth=6.0, lm=lm)
    wav2, sample_rate = decompress(data)             # loads the model's entropy model too

``deterministic=True`` writes the deterministic format instead (version 1, see
:mod:`opencodec.bitstream`): the entropy model runs in integer arithmetic
(:mod:`opencodec.entropy.fixed`), so the file decodes identically on any machine, thread
count or math library, and checksums turn damage or a wrong entropy model into a
``BitstreamError``::

    data = compress(model, wav, bandwidth=6.0, lm=lm, deterministic=True,
                    lm_name="encodec_lm_24khz")      # the name decompress() loads it by
    wav2, sample_rate = decompress(data)             # or decompress(data, lm=lm)
"""

from __future__ import annotations

import dataclasses
import io
import typing as tp

import torch

from .bitstream import (DEFAULT_CHECK_BITS, MAX_LM_NAME_CHARS, DeterministicCoding, EcdcHeader,
                        StreamLayout, default_check_interval, read_body, write_ecdc)
from .bandwidth import check_bandwidth
from .ecdc_info import read_file_header
from .errors import BitstreamError, InvalidAudioError, ModelLoadError, shown
from .input_checks import check_finite, parameter_dtype_device
from .model import EncodecModel

if tp.TYPE_CHECKING:
    from .entropy import EntropyLM
    from .entropy.fixed import FixedLM

__all__ = ["InvalidAudioError", "compress", "compress_to_file", "decompress", "decompress_from_file"]


def model_device(model: EncodecModel) -> torch.device:
    """The device of ``model``'s parameters."""
    return parameter_dtype_device(model)[1]


def model_dtype(model: EncodecModel) -> torch.dtype:
    """The dtype of ``model``'s parameters."""
    return parameter_dtype_device(model)[0]


def check_model_arg(model: tp.Any, optional: bool = False) -> None:
    """``TypeError`` unless ``model`` is an ``EncodecModel`` (or None when ``optional``): a
    name or path is not loaded here, so the model that writes or reads a file is always the
    one the caller chose and holds (``load_model(NAME_OR_PATH)`` loads one)."""
    if isinstance(model, torch.nn.Module) or (optional and model is None):
        return  # an EncodecModel, or a wrapper of one (torch.compile)
    what = _what(model)
    none = " or None (the model the file names)" if optional else ""
    order = "; a tensor is audio: the model comes first, compress(model, wav, ...)" \
        if isinstance(model, torch.Tensor) and not optional else ""
    raise TypeError(f"model must be an EncodecModel{none}, got {what}; load one with "
                    f"opencodec.pretrained.load_model(NAME_OR_PATH){order}")


#: A first dimension at least this long, with the model's channel count as the last, reads as
#: audio given as [T, C] (samples first, as soundfile and numpy give it) instead of [C, T].
TRANSPOSED_MIN_SAMPLES = 64


def _check_audio(model: EncodecModel, wav: tp.Any) -> None:
    if not isinstance(wav, torch.Tensor):
        hint = ""
        if isinstance(wav, (str, bytes)) or hasattr(wav, "__fspath__"):
            hint = ("; to compress a file, read it first: wav, rate = opencodec.audio.read_audio(path), then "
                    "opencodec.audio.convert_audio(wav, rate, model.sample_rate, model.channels)")
        elif type(wav).__module__ == "numpy":
            hint = "; convert it with torch.from_numpy(array) (shape [C, T], float)"
        raise InvalidAudioError(f"audio must be a torch.Tensor [C, T], got {type(wav).__name__}{hint}")
    if wav.dim() != 2:
        raise InvalidAudioError(f"audio must have shape [C, T] (channels, samples), "
                                f"got {tuple(wav.shape)}")
    if not wav.is_floating_point():
        raise InvalidAudioError(f"audio must be floating point, got dtype {wav.dtype}")
    channels, length = wav.shape
    if channels != model.channels:
        hint = ""
        if length == model.channels and channels >= TRANSPOSED_MIN_SAMPLES:
            hint = (f"; the audio looks transposed: shape {tuple(wav.shape)} reads as [T, C] (samples "
                    f"first), but [C, T] (channels, samples) is expected: pass wav.T")
        raise InvalidAudioError(f"model {model.name} expects {model.channels} channel(s), "
                                f"got {channels}{hint}")
    if length == 0:
        raise InvalidAudioError("cannot compress empty audio (0 samples)")
    check_finite(wav)  # the message model.encode and the streaming encoders give


def check_model_bandwidth(model: EncodecModel, bandwidth: tp.Any) -> float:
    """``bandwidth`` (kbps) as a float when ``model`` has it, else ``UnsupportedBandwidthError``."""
    return check_bandwidth(bandwidth, model.target_bandwidths, model.name)


def check_lm_covers(model: EncodecModel, lm: tp.Any, num_codebooks: int, deterministic: bool = False) -> None:
    """Raise unless ``lm`` can code ``model``'s codes with ``num_codebooks`` codebooks: its type
    (``TypeError``; a ``FixedLM`` only when ``deterministic``), bins and codebooks
    (``InvalidAudioError``) and the codec it was trained on (``ModelLoadError``)."""
    from .entropy import EntropyLM
    from .entropy.fixed import FixedLM

    if deterministic and not isinstance(lm, (EntropyLM, FixedLM)):
        raise TypeError(f"lm must be an opencodec.entropy.EntropyLM or FixedLM, got {type(lm).__name__}")
    if not deterministic and not isinstance(lm, EntropyLM):
        hint = " (a FixedLM codes only the deterministic format: deterministic=True)" \
            if isinstance(lm, FixedLM) else ""
        raise TypeError(f"lm must be an opencodec.entropy.EntropyLM, got {type(lm).__name__}{hint}")
    if lm.card != model.bins:
        raise InvalidAudioError(f"the entropy model predicts {lm.card} bins per codebook, but model "
                                f"{model.name} has {model.bins}")
    if num_codebooks > lm.n_q:
        raise InvalidAudioError(f"the entropy model covers {lm.n_q} codebooks, but model {model.name} "
                                f"uses {num_codebooks} at "
                                f"{model.bandwidth_for_codebooks(num_codebooks):g} kbps")
    trained_for = getattr(lm, "trained_for", None)
    if trained_for:  # loaded from a train-lm export: the codec it was trained on (ModelLoadError)
        from .lm_pairing import check_lm_trained_for

        name = getattr(lm, "name", None)
        check_lm_trained_for(trained_for, model, f"entropy model {name}" if name else "the entropy model")


def _what(value: tp.Any) -> str:
    """``value`` named for an error: its type, and for a path its value (shortened, :func:`shown`)."""
    if isinstance(value, (str, bytes)) or hasattr(value, "__fspath__"):
        return f"{type(value).__name__} {shown(value)}"
    return type(value).__name__


#: Largest ``check_interval`` (frames): what the header's ``ci`` field holds
#: (:class:`~opencodec.bitstream.DeterministicCoding`).
MAX_CHECK_INTERVAL = (1 << 31) - 1


def check_binary_file(fo: tp.Any, mode: str) -> None:
    """``TypeError`` unless ``fo`` is a file object open in binary mode for ``mode`` ('rb':
    has ``read``, 'wb': has ``write``), naming what was given and how to open one: a path
    (str, ``Path``) is not opened here, the caller chooses where the bytes go."""
    method, for_what = ("read", "reading") if mode == "rb" else ("write", "writing")
    if isinstance(fo, io.TextIOBase):
        raise TypeError(f"expected a binary file object, got a text-mode file ({type(fo).__name__}); "
                        f"open it with open(path, {mode!r})")
    if not callable(getattr(fo, method, None)):
        wanted = f"expected a binary file object open for {for_what}"
        if isinstance(fo, str) or hasattr(fo, "__fspath__"):
            raise TypeError(f"{wanted}, got {_what(fo)}: a path is not opened here; pass open(path, {mode!r})")
        hint = "; to decode the bytes of a .ecdc file, use decompress(data)" \
            if mode == "rb" and isinstance(fo, (bytes, bytearray, memoryview)) else ""
        raise TypeError(f"{wanted} (open(path, {mode!r})), got {_what(fo)}{hint}")
    able = getattr(fo, "readable" if mode == "rb" else "writable", None)
    try:
        refused = callable(able) and not able()
    except (OSError, ValueError) as exc:  # a closed file
        raise TypeError(f"expected a binary file object open for {for_what}, got {type(fo).__name__}: {exc}") from None
    if refused:
        raise TypeError(f"the file object is not open for {for_what}: "
                        f"open it with open(path, {mode!r})")


def compress_to_file(model: EncodecModel, wav: torch.Tensor, fo: tp.BinaryIO,
                     bandwidth: float | None = None, lm: "EntropyLM | FixedLM | None" = None, *,
                     deterministic: bool = False, lm_name: str | None = None,
                     check_bits: int | None = None, check_interval: int | None = None) -> int:
    """Encode ``wav`` [C, T] (float; C = ``model.channels`` channels, T samples at
    ``model.sample_rate`` Hz, full scale 1.0) and write a ``.ecdc`` file to ``fo``, a binary file
    object open for writing (``open(path, "wb")``, ``io.BytesIO``); returns the bytes written.

    ``bandwidth`` in kbps must be one of ``model.target_bandwidths``; it is used for this
    call only (the model's own target is restored afterwards). None uses the model's
    current target (all codebooks when it has none). The header's model name is
    ``model.name`` (a release's versioned name for the bundled model), with the model's
    weights hash for every model but the official ones whose weights are proven official
    (loaded by name, or :func:`opencodec.identity.declare_official`; an official name on other
    weights writes ``<name>_custom``, see :func:`header_identity_fields`).
    Raises :class:`InvalidAudioError` for bad audio (not a float tensor [C, T], another channel
    count, audio that looks transposed [T, C], no samples, NaN or inf) or bandwidth,
    ``TypeError`` when ``model`` is not an ``EncodecModel`` (a name is not loaded: pass
    ``load_model(name)``) or ``fo`` is not a binary file object (a path is not opened here).

    ``lm``: an entropy model (:class:`~opencodec.entropy.EntropyLM`) to arithmetic-code the
    codes with (header ``"lm": true``); it must predict ``model.bins`` bins and cover the
    codebooks used (else :class:`InvalidAudioError`); one loaded from a ``train-lm`` export
    must have been trained on this model's codes (else ``ModelLoadError``, see
    :func:`opencodec.lm_pairing.check_lm_trained_for`). None writes plain packed codes.

    ``deterministic`` (needs ``lm``): write the deterministic format (version 1) with the
    integer twin of ``lm`` (an ``EntropyLM``, converted once and cached, or a
    :class:`~opencodec.entropy.fixed.FixedLM`) instead of the official one. ``lm_name`` is
    the entropy model's name stored in the header, by which :func:`decompress` finds it
    when no ``lm`` is given (default: ``lm.name`` if set, else ``"custom"``);
    ``check_bits`` (0..32, default :data:`DEFAULT_CHECK_BITS`) bits of checksum are coded
    every ``check_interval`` frames (1 to :data:`MAX_CHECK_INTERVAL`; default: about one second,
    :func:`~opencodec.bitstream.default_check_interval`), and a CRC-32 ends every segment.
    ``lm_name`` (a non-empty str of at most :data:`~opencodec.bitstream.MAX_LM_NAME_CHARS`
    printable characters), ``check_bits`` and ``check_interval`` belong to the
    deterministic format: given without ``deterministic=True`` they are an
    :class:`InvalidAudioError` (not silently ignored).
    """
    check_model_arg(model)
    _check_audio(model, wav)
    check_binary_file(fo, "wb")
    if deterministic and lm is None:
        raise InvalidAudioError("deterministic=True needs an entropy model (lm=...)")
    if not deterministic:
        given = [k for k, v in (("lm_name", lm_name), ("check_bits", check_bits),
                                ("check_interval", check_interval)) if v is not None]
        if given:
            raise InvalidAudioError(f"{', '.join(given)} only apply to the deterministic format: pass "
                                    f"deterministic=True (with lm=...), or leave them out")
    previous = model.bandwidth
    if bandwidth is not None:
        model.set_target_bandwidth(check_model_bandwidth(model, bandwidth))
    det = None
    try:
        if lm is not None:  # before the (slow) encoding
            check_lm_covers(model, lm, model.num_codebooks(), deterministic)
            if deterministic:
                det = deterministic_coding(model, lm, lm_name,
                                           DEFAULT_CHECK_BITS if check_bits is None else check_bits,
                                           check_interval)
        # before encoding: the weights hash also notices weights changed through .data, and
        # then refreshes the caches the encoder reads (folded or packed weights)
        identity = header_identity_fields(model, lm, det)
        x = wav.to(device=model_device(model), dtype=model_dtype(model))
        with torch.inference_mode():
            frames = model.encode(x[None])
    finally:
        model.bandwidth = previous
    header = EcdcHeader(audio_length=int(wav.shape[-1]), num_codebooks=int(frames[0].codes.shape[1]),
                        use_lm=lm is not None, deterministic=det, **identity)
    # named as the header (StreamLayout.from_model would hash the weights a second time)
    return write_ecdc(fo, header, frames, StreamLayout.from_config(model.config, header.model_name), lm)


def header_identity_fields(model: EncodecModel, lm: "EntropyLM | FixedLM | None",
                           det: DeterministicCoding | None) -> dict[str, tp.Any]:
    """The header fields that say which weights wrote a file: ``model_name``, ``model_hash``
    (None for the official models) and, for an official-format entropy-coded file of another
    model, ``lm_hash`` (a deterministic header carries its own). See :mod:`opencodec.identity`."""
    from .identity import header_identity, lm_hash

    name, digest = header_identity(model)
    fields: dict[str, tp.Any] = {"model_name": name, "model_hash": digest}
    if digest is not None and lm is not None and det is None:
        fields["lm_hash"] = lm_hash(lm)
    return fields


def deterministic_coding(model: EncodecModel, lm: "EntropyLM | FixedLM", lm_name: str | None,
                          check_bits: int, check_interval: int | None) -> DeterministicCoding:
    """The version 1 header fields for ``lm`` (converted to its FixedLM here, cached)."""
    from .entropy.fixed import SCHEME, fixed_lm_for
    from .entropy.deterministic import MAX_CHECK_BITS

    if isinstance(check_bits, bool) or not isinstance(check_bits, int) \
            or not 0 <= check_bits <= MAX_CHECK_BITS:
        raise InvalidAudioError(f"check_bits must be an integer in [0, {MAX_CHECK_BITS}], got "
                                f"{shown(check_bits)}")
    if check_interval is None:
        check_interval = default_check_interval(model.frame_rate)
    if isinstance(check_interval, bool) or not isinstance(check_interval, int) \
            or not 1 <= check_interval <= MAX_CHECK_INTERVAL:
        raise InvalidAudioError(f"check_interval must be an integer in [1, {MAX_CHECK_INTERVAL}] (frames "
                                f"between checks), got {shown(check_interval)}")
    if lm_name is not None:
        if not isinstance(lm_name, str):
            raise TypeError(f"lm_name must be a str (the entropy model's name for the header), got "
                            f"{type(lm_name).__name__} {shown(lm_name)}")
        if not lm_name.strip():
            raise InvalidAudioError("lm_name is empty: give the entropy model's name, or None for "
                                    "lm.name")
        if len(lm_name) > MAX_LM_NAME_CHARS:
            raise InvalidAudioError(f"lm_name must be at most {MAX_LM_NAME_CHARS} characters (what the "
                                    f"header holds), got {shown(lm_name)}")
    flm = fixed_lm_for(lm)
    name = lm_name if lm_name is not None else (getattr(lm, "name", None) or flm.name or "custom")
    try:
        return DeterministicCoding(lm_name=str(name), lm_hash=flm.weights_hash, scheme=SCHEME,
                                   check_bits=check_bits, check_interval=check_interval)
    except BitstreamError as exc:  # the name (the other fields are checked above, or the FixedLM's)
        which = "lm_name" if lm_name is not None else "the entropy model's name (lm.name; pass lm_name=...)"
        raise InvalidAudioError(f"{which} {shown(str(name))}: {exc}") from None


def header_lm_name(name: str, lm_arg: str | None, lm: tp.Any) -> str:
    """``name``, the name deterministic headers give the entropy model ``lm`` (loaded from
    ``lm_arg``, None: the codec's own), or ``ModelLoadError`` naming the entropy model and that
    name when no header holds it: longer than :data:`~opencodec.bitstream.MAX_LM_NAME_CHARS`, or
    a line break or other character readers cannot print (the command line never took an
    ``lm_name``: the name comes from the file's metadata, or is its file name)."""
    from .bitstream.header import unprintable

    bad = unprintable(name)
    if len(name) <= MAX_LM_NAME_CHARS and bad is None:
        return name
    why = (f"is longer than the {MAX_LM_NAME_CHARS} characters a header holds" if bad is None
           else f"holds {bad}, which readers cannot print")
    source = "the name in its metadata" if getattr(lm, "name", None) else "its file name"
    raise ModelLoadError(f"entropy model {lm_arg or name}: {source} {shown(name)}, which deterministic "
                         f".ecdc headers record, {why}; give it another name")


def compress(model: EncodecModel, wav: torch.Tensor, bandwidth: float | None = None,
             lm: "EntropyLM | FixedLM | None" = None, *, deterministic: bool = False,
             lm_name: str | None = None, check_bits: int | None = None,
             check_interval: int | None = None) -> bytes:
    """Encode ``wav`` [C, T] (float; C = ``model.channels`` channels, T samples at
    ``model.sample_rate`` Hz) to the bytes of a ``.ecdc`` file (see :func:`compress_to_file`);
    with ``lm`` the codes are entropy coded, in the official format, or with
    ``deterministic=True`` in the deterministic one."""
    fo = io.BytesIO()
    compress_to_file(model, wav, fo, bandwidth=bandwidth, lm=lm, deterministic=deterministic,
                     lm_name=lm_name, check_bits=check_bits, check_interval=check_interval)
    return fo.getvalue()


def model_for_header(header: EcdcHeader, model: EncodecModel | None) -> EncodecModel:
    """The model to decode ``header``'s file: ``model`` checked against the header (names,
    architecture, weights hash), or the model the header names (see
    :func:`opencodec.identity.model_for_file`)."""
    from .identity import check_model_for_file, model_for_file

    check_model_arg(model, optional=True)
    if model is not None:
        check_model_for_file(model, header.model_name, header.model_hash, header.num_codebooks,
                             "the ECDC file", lm_hash=header.entropy_model_hash)
        return model
    return model_for_file(header.model_name, header.model_hash, header.num_codebooks, "the ECDC file")


def decoding_layout(model: EncodecModel) -> StreamLayout:
    """The body layout of ``model``, without the name check: :func:`model_for_header` checked
    the model against the header (a legacy name may differ from the release's)."""
    return dataclasses.replace(StreamLayout.from_config(model.config), model_name=None)


def lm_for_header(header: EcdcHeader, model: EncodecModel, lm: "EntropyLM | FixedLM | None"
                ) -> "EntropyLM | FixedLM":
    """The entropy model to decode ``header``'s file: ``lm`` (its hash checked against the
    file's record), or the one the file records (release by hash, or name), or the codec's."""
    from .identity import check_lm_for_file, lm_name_for_file
    from .lm_pairing import check_lm_for_decoding

    if lm is None:
        from .pretrained import load_lm_model  # late: loading weights is optional

        det = header.deterministic
        name = lm_name_for_file(det.lm_name if det is not None else None,
                                header.entropy_model_hash, model, "the ECDC file")
        lm = load_lm_model(name, codec=model, num_codebooks=header.num_codebooks, any_codec=True)
    if header.deterministic is None:  # version 1 checks its hash when decoding
        check_lm_for_file(lm, header.lm_hash, "the ECDC file")
    check_lm_for_decoding(lm, model, header.entropy_model_hash)
    return lm



def decompress_from_file(fo: tp.BinaryIO, model: EncodecModel | None = None,
                         lm: "EntropyLM | FixedLM | None" = None) -> tuple[torch.Tensor, int]:
    """Read a ``.ecdc`` file from ``fo``, a binary file object open for reading
    (``open(path, "rb")``, ``io.BytesIO``; a path is a ``TypeError``: it is not opened here),
    to its end, and decode it.

    Returns ``(wav, sample_rate)``: wav [C, T] float on the model's device, C = the model's
    channels, T = the header's audio length in samples (the input's length at encoding), at
    ``sample_rate`` Hz (the model's). With ``model`` None the model named in the header is loaded (the release its weights
    hash names, see :func:`opencodec.identity.model_for_file`; a header that names bare
    ``opencodec_24khz`` without a hash, written before versioned names, is a
    ``ModelLoadError`` that says to name the release). A given model must fit the header:
    its architecture, and its weights hash when the header has one, else its name
    (``BitstreamError``). ``model`` must be an ``EncodecModel`` or None (``TypeError`` for a
    name: the header already names the weights; to insist on a release, pass
    ``load_model(name)``, which is then checked against the header).

    An entropy-coded file (header ``"lm": true``) is decoded with ``lm``, or, when it is
    None, with the entropy model that belongs to the codec
    (``opencodec.pretrained.load_lm_model(codec=model)``, which raises ``ModelLoadError``
    when it is not available); ``lm`` is ignored for other files. A deterministic (version
    1) file is decoded with ``lm`` (an ``EntropyLM`` or ``FixedLM``) or, when it is None, the
    entropy model named in its header (a known name, else ``ModelLoadError``); its weights
    hash must be the header's. Raises ``BitstreamError`` for a malformed, truncated or padded
    file (a weights file or a packet stream is named as such), a model mismatch, an entropy model that does not fit the file, or a failed check.
    """
    check_binary_file(fo, "rb")
    header = read_file_header(fo, "decompress")  # a weights file or packet stream is named as such
    body = fo.read()
    model = model_for_header(header, model)
    layout = decoding_layout(model)
    if header.use_lm:
        lm = lm_for_header(header, model, lm)
        frames = read_body(body, header, layout, lm)
    else:
        frames = read_body(body, header, layout)
    device = model_device(model)
    frames = [(codes.to(device), None if scale is None else scale.to(device)) for codes, scale in frames]
    with torch.no_grad():  # not inference_mode: the caller gets an ordinary tensor
        wav = model.decode(frames)
    if wav.shape[-1] < header.audio_length:  # cannot happen with a consistent model
        raise BitstreamError(f"model {model.name} decoded {wav.shape[-1]} samples, "
                             f"header says {header.audio_length}")
    return wav[0, :, :header.audio_length], model.sample_rate


def decompress(data: bytes, model: EncodecModel | None = None,
               lm: "EntropyLM | FixedLM | None" = None) -> tuple[torch.Tensor, int]:
    """Decode the bytes of a ``.ecdc`` file: ``(wav, sample_rate)``, wav [C, T] float (C
    channels, T = the header's audio length in samples) at ``sample_rate`` Hz (see
    :func:`decompress_from_file`)."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        hint = ("; to read a file, use decompress_from_file(open(path, 'rb'))"
                if isinstance(data, str) or hasattr(data, "__fspath__") or hasattr(data, "read") else "")
        raise TypeError(f"expected the bytes of a .ecdc file, got {type(data).__name__}{hint}")
    return decompress_from_file(io.BytesIO(bytes(data)), model=model, lm=lm)
