"""Cheap checks of the tensors the low-level APIs take, with errors that say what was given
and what is expected (never a failure from deep inside the network, never silently wrong
output).

- Audio (``EncodecModel.encode``, ``batching.encode_batch``, the streaming and multistream
  encoders): a ``torch.Tensor`` of the model's float dtype on its device
  (:func:`check_audio_tensor`) whose samples are all finite (:func:`check_finite`, the same
  message as :func:`opencodec.compress.compress`'s); else :class:`InvalidAudioError`.
- Codes (``EncodecModel.decode``, ``batching.decode_batch``, the streaming and multistream
  decoders): an integer ``torch.Tensor`` with 1 to ``max_codebooks`` codebooks whose codes
  are in ``[0, bins)`` (:func:`check_codes`); else :class:`InvalidCodesError`.

Each check is one pass over the data at most (``isfinite``, ``aminmax``); the slower search
for the offending sample or code runs only when there is one. A low layer: this module
imports nothing from opencodec but :mod:`opencodec.errors`.
"""

from __future__ import annotations

import numbers

import torch

from .errors import InvalidAudioError, InvalidCodesError

__all__ = ["check_audio_tensor", "check_codes", "check_device", "check_finite", "check_model",
           "check_segment_frames", "describe", "parameter_dtype_device"]


def check_model(model: object, what: str) -> None:
    """``TypeError`` unless ``model`` is an ``EncodecModel`` (any ``torch.nn.Module``: a
    wrapper of one passes), naming ``what`` takes it, e.g. "StreamingEncoder: model must be an
    EncodecModel, got str 'opencodec_24khz'; load one with ...". A name or path is not loaded
    here (as :func:`opencodec.compress.compress`)."""
    if isinstance(model, torch.nn.Module):
        return
    shown = f" {model!r:.60}" if isinstance(model, (str, bytes)) or hasattr(model, "__fspath__") else ""
    raise TypeError(f"{what}: model must be an EncodecModel, got {type(model).__name__}{shown}; "
                    f"load one with opencodec.pretrained.load_model(NAME_OR_PATH)")


def check_device(device: object, what: str = "load_model") -> torch.device:
    """``device`` as a ``torch.device`` that this machine has. Taken as torch takes it: a str
    such as ``"cpu"``, ``"cuda:0"``, ``"meta"``, a ``torch.device``, or an int >= 0 (numpy's
    too), the index of the accelerator (``0``: ``cuda:0`` on a CUDA machine). Else
    ``TypeError`` (another type: a bool, a float, a tensor) or ``ValueError`` (a name torch does
    not know, a negative index, or a device this machine lacks: ``"cuda"`` or ``0`` without
    CUDA, ``"cuda:3"`` with fewer GPUs, the count named, ``"hpu"`` on a PyTorch without that
    backend), naming ``what`` takes it. Run before any weights are read, so a bad device fails
    at once."""
    if isinstance(device, bool) or not isinstance(device, (str, torch.device, numbers.Integral)):
        raise TypeError(f"{what}: device must be a str such as 'cpu' or 'cuda:0', an int (an "
                        f"accelerator index, 0 for cuda:0) or a torch.device, got "
                        f"{type(device).__name__} {device!r:.40}")
    if isinstance(device, numbers.Integral):
        device = int(device)
        if device < 0:
            raise ValueError(f"{what}: device index must be >= 0 (0 for cuda:0), got {device}")
    shown = f"{device}" if isinstance(device, int) else repr(str(device))
    try:
        resolved = torch.device(device)
    except (RuntimeError, ValueError, OverflowError) as exc:
        if isinstance(device, int):  # torch reads an int as the accelerator's index
            raise ValueError(f"{what}: device {shown} (an accelerator index) is not available here "
                             f"({str(exc).splitlines()[0]:.160})") from None
        raise ValueError(f"{what}: unknown device {shown}; pass e.g. 'cpu', 'cuda', 'cuda:0' "
                         f"or a torch.device") from None
    if resolved.type == "cuda" and resolved.index is not None and torch.cuda.is_available() \
            and resolved.index >= torch.cuda.device_count():
        count = torch.cuda.device_count()
        raise ValueError(f"{what}: device {shown} is not available here: this machine has {count} "
                         f"CUDA device(s), cuda:0 to cuda:{count - 1}")
    try:
        torch.empty(0, device=resolved)
    except ImportError as exc:  # 'hpu', 'privateuseone': torch imports a backend module it lacks
        raise ValueError(f"{what}: device {shown} is not available here (this PyTorch has no "
                         f"{resolved.type} backend: {str(exc).splitlines()[0]:.160})") from None
    except (RuntimeError, AssertionError, ValueError) as exc:  # AssertionError: torch without CUDA
        raise ValueError(f"{what}: device {shown} is not available here "
                         f"({str(exc).splitlines()[0]:.160})") from None
    return resolved


def parameter_dtype_device(module: torch.nn.Module) -> tuple[torch.dtype, torch.device]:
    """The dtype and device of ``module``'s first parameter (float32 on the CPU if it has none):
    what its inputs must be."""
    for param in module.parameters():
        return param.dtype, param.device
    return torch.float32, torch.device("cpu")


def _dtype_name(dtype: torch.dtype) -> str:
    """``torch.float32`` -> ``'float32'``."""
    return str(dtype).replace("torch.", "")


def describe(x: object) -> str:
    """What ``x`` is, for an error message: ``'float64'`` for a tensor (its dtype), else its
    type (``'a numpy.ndarray of int16'``, ``'a list'``)."""
    if isinstance(x, torch.Tensor):
        return _dtype_name(x.dtype)
    kind = type(x)
    module = kind.__module__
    name = kind.__name__ if module in ("builtins", None) else f"{module.split('.')[0]}.{kind.__name__}"
    dtype = getattr(x, "dtype", None)
    return f"a {name}" + (f" of {dtype}" if dtype is not None else "")


def _audio_hint(x: object, dtype: torch.dtype) -> str:
    """How to turn ``x`` into what is expected."""
    convert = {torch.float32: ".float()", torch.float64: ".double()", torch.float16: ".half()",
               torch.bfloat16: ".bfloat16()"}.get(dtype, f".to(torch.{_dtype_name(dtype)})")
    if not isinstance(x, torch.Tensor):
        return f"; convert with torch.as_tensor(x){convert}" if hasattr(x, "dtype") else ""
    if x.dtype == torch.bool or x.is_complex():
        return ""
    if not x.is_floating_point():  # integer PCM
        return f"; integer PCM must be scaled to [-1, 1] first (int16: x{convert} / 32768)"
    return f"; convert with {convert}"


def check_audio_tensor(x: object, layout: str, dtype: torch.dtype, device: torch.device | None = None,
                       prefix: str = "") -> torch.Tensor:
    """``x`` if it is a ``torch.Tensor`` of ``dtype`` (on ``device`` when given); else
    ``InvalidAudioError`` such as "expected audio as a float32 torch.Tensor [B, C, T], got
    float64; convert with .float()". ``layout`` names the expected shape, ``prefix`` starts
    the message (e.g. ``"stream 3: "``). Checks no shape and no values."""
    expected = f"expected audio as a {_dtype_name(dtype)} torch.Tensor {layout}"
    if not isinstance(x, torch.Tensor) or x.dtype != dtype:
        raise InvalidAudioError(f"{prefix}{expected}, got {describe(x)}{_audio_hint(x, dtype)}")
    if device is not None and x.device != device:
        raise InvalidAudioError(f"{prefix}{expected} on {device} (the model's device), got one on "
                                f"{x.device}; move it with .to({str(device)!r})")
    return x


#: The largest finite float32 (about 3.4e38): float64 audio beyond it is infinite in the model.
FLOAT32_MAX = float(torch.finfo(torch.float32).max)


def check_finite(x: torch.Tensor, prefix: str = "", allow_meta: bool = False) -> None:
    """``InvalidAudioError("audio contains N non-finite sample(s) (NaN or inf)")`` (after
    ``prefix``) unless every sample of ``x`` is finite: one ``isfinite`` pass (a second one
    only to count). The message is :func:`opencodec.compress.compress`'s. Float64 audio beyond
    float32's range (:data:`FLOAT32_MAX`: infinite in the float32 the model computes in) is an
    ``InvalidAudioError`` saying so. A meta tensor (a shape without samples) is an
    ``InvalidAudioError`` too, unless ``allow_meta`` (a model on the meta device, which
    computes shapes only)."""
    if x.is_meta and allow_meta:
        return
    if x.is_meta:
        raise InvalidAudioError(f"{prefix}audio is on the meta device: it has a shape but no "
                                f"samples; pass a tensor with data (e.g. on the CPU)")
    finite = torch.isfinite(x)
    if not bool(finite.all()):
        bad = int((~finite).sum())
        raise InvalidAudioError(f"{prefix}audio contains {bad} non-finite sample(s) (NaN or inf)")
    if x.dtype == torch.float64 and x.numel():  # finite, yet infinite once in float32
        peak = float(x.abs().max())
        if peak > FLOAT32_MAX:
            beyond = int((x.abs() > FLOAT32_MAX).sum())
            raise InvalidAudioError(f"{prefix}audio contains {beyond} sample(s) beyond float32's range (peak "
                                    f"{peak:.3g}, float32 reaches {FLOAT32_MAX:.3g}): the model computes in "
                                    f"float32, where they become infinite; full scale is 1.0")


def _first_bad(codes: torch.Tensor, low: int, bins: int) -> tuple[tuple[int, ...], int]:
    """Index and value of the first code of ``codes`` outside ``[low, bins)`` (there is one)."""
    where = tuple(int(i) for i in ((codes < low) | (codes >= bins)).nonzero()[0])
    return where, int(codes[where])


def check_codes(codes: object, layout: str, bins: int, max_codebooks: int,
                device: torch.device | None = None, codebook_dim: int = 1, prefix: str = "",
                padding: bool = False) -> torch.Tensor:
    """``codes`` as int64 (the same tensor when it already is) if it is an integer
    ``torch.Tensor`` of ``len(layout's dims)`` dimensions (checked by the caller) whose
    dimension ``codebook_dim`` (K) is 1 to ``max_codebooks`` and whose codes are in
    ``[0, bins)`` (``padding``: ``[-1, bins)``, -1 being documented padding); on ``device``
    when given. Else ``InvalidCodesError`` naming the problem, e.g. "codes must be in
    [0, 1024); got 5000 in codebook 0". ``prefix`` starts the message. Meta codes (shapes
    only) are taken only for a ``device`` on the meta device, and have no values to check."""
    if not isinstance(codes, torch.Tensor) or codes.dtype == torch.bool or codes.is_floating_point() \
            or codes.is_complex():
        raise InvalidCodesError(f"{prefix}expected codes as an integer torch.Tensor {layout}, "
                                f"got {describe(codes)}")
    if codes.is_meta and (device is None or device.type != "meta"):
        raise InvalidCodesError(f"{prefix}codes are on the meta device: they have a shape but no "
                                f"values; pass a tensor with data (e.g. on the CPU)")
    if device is not None and codes.device != device:
        raise InvalidCodesError(f"{prefix}expected codes on {device} (the model's device), got codes "
                                f"on {codes.device}; move them with .to({str(device)!r})")
    k = codes.shape[codebook_dim]
    if not 1 <= k <= max_codebooks:
        raise InvalidCodesError(f"{prefix}expected 1 to {max_codebooks} codebooks (K in {layout}), "
                                f"got {k}")
    low = -1 if padding else 0
    codes = codes.long()  # the same tensor when int64 (aminmax has no kernel for uint16/uint32)
    if codes.numel() and not codes.is_meta:
        lo, hi = torch.aminmax(codes)
        if int(lo) < low or int(hi) >= bins:
            where, value = _first_bad(codes, low, bins)
            allowed = f"[0, {bins})" + (" (or -1: padding)" if padding else "")
            item = f" of item {where[0]}" if codebook_dim == 1 and codes.shape[0] > 1 else ""
            raise InvalidCodesError(f"{prefix}codes must be in {allowed}; got {value} in codebook "
                                    f"{where[codebook_dim]} at frame {where[-1]}{item}")
    return codes


def check_segment_frames(codes: list[torch.Tensor], full: int, least: int, model_name: str) -> None:
    """``InvalidCodesError`` unless the segments' codes (each [B, K, F_i]) have frame counts a
    segmenting model's ``encode`` can give: none more than ``full`` (a whole segment's) or
    than segment 0's, and each but the last at least ``least`` (the frames of the shortest
    segment before the last: ``min(segment, stride + 1)`` samples, since more than a stride of
    the input follows its start; a whole segment when the stride is the segment, overlap 0;
    the caller computes it). Overlap-adding other lengths leaves
    gaps (NaN audio), fails, or mixes segments at the wrong places. One segment alone
    overlaps nothing: any length."""
    if len(codes) < 2:
        return
    first = int(codes[0].shape[-1])
    for i, c in enumerate(codes):
        frames, last = int(c.shape[-1]), i == len(codes) - 1
        top, low = min(full, first), 1 if last else least
        if not low <= frames <= top:
            which = "the last segment" if last else "a segment before the last"
            allowed = f"{low} to {top}" if low < top else f"{top}" if low == top else f"at least {low}"
            raise InvalidCodesError(f"segment {i}: {frames} code frame(s), but {which} of model {model_name} "
                                    f"has {allowed} (a whole segment has {full}, none more than segment 0, "
                                    f"here {first}); pass the EncodedFrames encode returns, in order")
