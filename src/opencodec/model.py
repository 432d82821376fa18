"""The EnCodec model: SEANet encoder -> residual VQ -> SEANet decoder.

``EncodecConfig`` holds every size, so the two released configurations and any
smaller or different model are built by the same code::

    model = EncodecModel(EncodecConfig.encodec_24khz())
    model.set_target_bandwidth(6.0)
    frames = model.encode(wav)            # wav [B, C, T] at model.sample_rate
    out = model.decode(frames)[..., :T]   # [B, C, T]

Segmenting models (the 48 kHz one) cut the input into ``segment`` seconds with
``overlap`` (1 %); each segment is normalised by its RMS ``scale`` (when
``normalize``), encoded alone, and decoding overlap-adds the segments with a
triangular window.
"""

from __future__ import annotations

import math
import numbers
import typing as tp

import torch
from torch import nn

from .bandwidth import check_bandwidth, format_kbps
from .errors import InvalidAudioError, InvalidCodesError, UnsupportedBandwidthError
from .frames import EncodedFrame, check_frames  # EncodedFrame re-exported: ``opencodec.model.EncodedFrame`` is that object
from .input_checks import (check_audio_tensor, check_finite, check_segment_frames, describe,
                           parameter_dtype_device)
from .model_config import EncodecConfig  # re-exported: ``opencodec.model.EncodecConfig`` is that class (torch-free)
from .modules.seanet import SEANetDecoder, SEANetEncoder
from .quantization.rvq import QuantizedResult, ResidualVectorQuantizer
from .threads import one_thread


def overlap_add_weight(first: torch.Tensor) -> torch.Tensor:
    """The triangle ``w(t) = 0.5 - |t - 0.5|`` (t uniform in (0, 1), ends excluded) over the
    length of ``first`` [..., L] (the first segment), on its device and dtype: [L]."""
    t = torch.linspace(0, 1, first.shape[-1] + 2, device=first.device, dtype=first.dtype)[1:-1]
    return 0.5 - (t - 0.5).abs()


def linear_overlap_add(frames: list[torch.Tensor], stride: int) -> torch.Tensor:
    """Overlap-add segments [..., L_i] placed every ``stride`` samples with a triangular weight.

    Each segment is weighted by ``w(t) = 0.5 - |t - 0.5|`` (t uniform in (0, 1), ends
    excluded) and the sum is divided by the summed weights, so a position covered by a
    single segment is unchanged and two overlapping segments cross-fade linearly.
    Returns [..., max_i(i * stride + L_i)].
    """
    if not frames:
        raise ValueError("no segments to overlap-add")
    ref = frames[0]
    # The reference sizes the output from the last segment alone, which fails when a
    # shorter last segment ends before the decoded (frame-rounded) one before it
    # (e.g. 95300 samples at 48 kHz); the furthest end is the right size.
    total = max(i * stride + f.shape[-1] for i, f in enumerate(frames))
    weight = overlap_add_weight(ref)
    out = torch.zeros(*ref.shape[:-1], total, device=ref.device, dtype=ref.dtype)
    weight_sum = torch.zeros(total, device=ref.device, dtype=ref.dtype)
    offset = 0
    for frame in frames:
        n = frame.shape[-1]
        out[..., offset:offset + n] += weight[:n] * frame
        weight_sum[offset:offset + n] += weight[:n]
        offset += stride
    return out / weight_sum


_PAD_MODES = ("reflect", "constant", "replicate", "circular")


def _check_config(config: object) -> None:
    """``TypeError`` unless ``config`` is an :class:`EncodecConfig`; ``ValueError`` naming the
    field for a value no model can have (a size < 1, no strides, a segment shorter than a
    sample, an overlap outside [0, 1), an unknown pad mode, ``bins`` not a power of two), which
    would otherwise fail deep inside the first encode or decode, or silently compute nonsense."""
    if not isinstance(config, EncodecConfig):
        hint = "; build one with EncodecConfig.from_dict(d)" if isinstance(config, dict) else ""
        raise TypeError(f"EncodecModel expects an EncodecConfig, got {type(config).__name__}{hint}")
    for key in ("sample_rate", "channels", "n_q", "dimension", "n_filters"):
        value = getattr(config, key)
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
            raise ValueError(f"EncodecConfig.{key} must be an integer >= 1, got {value!r}")
    if not config.ratios or any(isinstance(r, bool) or not isinstance(r, numbers.Integral) or r < 1
                                for r in config.ratios):
        raise ValueError(f"EncodecConfig.ratios must be a non-empty list of integers >= 1, got {config.ratios!r}")
    if isinstance(config.bins, bool) or not isinstance(config.bins, numbers.Integral) \
            or config.bins < 2 or config.bins & (config.bins - 1):
        raise ValueError(f"bins must be a power of two, got {config.bins}")
    if config.segment is not None and not config.segment * config.sample_rate >= 1:
        raise ValueError(f"EncodecConfig.segment must be None or at least one sample (seconds), got "
                         f"{config.segment!r}")
    if not 0 <= config.overlap < 1:
        raise ValueError(f"EncodecConfig.overlap must be in [0, 1) (a fraction of a segment), got {config.overlap!r}")
    if config.pad_mode not in _PAD_MODES:
        raise ValueError(f"EncodecConfig.pad_mode must be one of {', '.join(_PAD_MODES)}, got {config.pad_mode!r}")


class EncodecModel(nn.Module):
    """Waveform codec. Attributes mirror the config: ``sample_rate`` (Hz), ``channels``,
    ``frame_rate`` (Hz), ``hop_length`` (samples), ``n_q``, ``bins``, ``target_bandwidths`` (kbps)."""

    #: Most segments decoded in one batch by ``decode`` without autograd (segmenting models).
    DECODE_BATCH_SEGMENTS = 12

    def __init__(self, config: EncodecConfig):
        super().__init__()
        _check_config(config)
        self.config = config
        self.encoder = SEANetEncoder(config.seanet())
        self.quantizer = ResidualVectorQuantizer(dimension=config.dimension, n_q=config.n_q, bins=config.bins)
        self.decoder = SEANetDecoder(config.seanet())
        # With ``exact_decode`` off, ``decode`` batches segments; a segment decoded alone (e.g.
        # by the long-file path) must still give the same bits.
        self.decoder.batch_invariant = config.segment is not None
        self.bandwidth: float | None = None
        self.eval()

    # -- properties -----------------------------------------------------------------------
    @property
    def name(self) -> str:
        """Model name written into `.ecdc` headers."""
        return self.config.name

    @property
    def sample_rate(self) -> int:
        """Sample rate of the audio the model encodes and decodes, in Hz."""
        return self.config.sample_rate

    @property
    def channels(self) -> int:
        """Audio channels the model encodes and decodes (1: mono, 2: stereo)."""
        return self.config.channels

    @property
    def normalize(self) -> bool:
        """True when each segment is divided by its RMS ``scale`` before encoding
        (``EncodedFrame.scale``; the 48 kHz model), False when ``scale`` is None."""
        return self.config.normalize

    @property
    def target_bandwidths(self) -> list[float]:
        """The bandwidths ``set_target_bandwidth`` accepts, in kbps (a copy)."""
        return list(self.config.target_bandwidths)

    @property
    def hop_length(self) -> int:
        """Audio samples per code frame (the product of the encoder's strides)."""
        return self.config.hop_length

    @property
    def frame_rate(self) -> int:
        """Code frames per second (Hz), ``ceil(sample_rate / hop_length)``."""
        return self.config.frame_rate

    @property
    def n_q(self) -> int:
        """Codebooks the quantiser has (the most ``encode`` uses, at the highest bandwidth)."""
        return self.config.n_q

    @property
    def bins(self) -> int:
        """Entries per codebook: every code is in ``[0, bins)``."""
        return self.config.bins

    @property
    def bits_per_codebook(self) -> int:
        """Bits of one code, ``log2(bins)`` (10 for 1024 entries)."""
        return self.config.bits_per_codebook

    @property
    def segment_length(self) -> int | None:
        """Segment length in samples, or None when the whole signal is one segment."""
        return self.config.segment_length

    @property
    def segment_stride(self) -> int | None:
        """Samples between segment starts, or None when not segmenting."""
        return self.config.segment_stride

    @property
    def exact_decode(self) -> bool:
        """True (default): ``decode`` gives bitwise the audio of the plain (and the official)
        computation. False: a faster decoder (channels-last kernels, fused products, the
        48 kHz model's segments batched), within 1e-5 relative L2 of it (measured 3e-7 at
        24 kHz, 1.3e-6 at 48 kHz; see ``modules.fast_cl``).
        Encoding is bitwise exact unless ``exact`` is off (which switches both)."""
        return bool(self.decoder.exact)

    @exact_decode.setter
    def exact_decode(self, exact: bool) -> None:
        self.decoder.exact = bool(exact)

    @property
    def exact(self) -> bool:
        """True (default): encode and decode give bitwise the plain (official) computation.
        False: fast mode for both (channels-last kernels, fused products; the encoder too),
        equal up to float rounding; the measured differences on real audio are in the README.
        ``opencodec compress/decompress --fast`` set it."""
        return bool(self.encoder.exact) and bool(self.decoder.exact)

    @exact.setter
    def exact(self, exact: bool) -> None:
        self.encoder.exact = bool(exact)
        self.decoder.exact = bool(exact)

    # -- bandwidth ------------------------------------------------------------------------
    def num_codebooks(self, bandwidth: float | None = None) -> int:
        """Codebooks used at ``bandwidth`` kbps (default: the current target; all when unset).
        ``bandwidth`` is a finite real number (a numpy scalar too) or None, as
        ``set_target_bandwidth`` takes; anything else (a bool, a str, a tensor: pass
        ``float(t)``, NaN, inf) raises ``UnsupportedBandwidthError`` (a ``ValueError``)."""
        bw = self.bandwidth if bandwidth is None else bandwidth
        if bw is not None and (isinstance(bw, bool) or not isinstance(bw, numbers.Real)):
            hint = "; pass float(t)" if isinstance(bw, torch.Tensor) and bw.numel() == 1 else ""
            raise UnsupportedBandwidthError(f"bandwidth must be a number of kbps (or None: every "
                                            f"codebook), got {bw!r:.40} ({type(bw).__name__}){hint}")
        if bw is not None and not math.isfinite(float(bw)):
            raise UnsupportedBandwidthError(f"bandwidth must be a finite number of kbps, got {float(bw)!r}")
        return self.quantizer.num_quantizers_for_bandwidth(self.frame_rate, bw)

    def bandwidth_for_codebooks(self, num_codebooks: int) -> float:
        """Nominal kbps of ``num_codebooks`` codebooks."""
        return num_codebooks * self.quantizer.bandwidth_per_quantizer(self.frame_rate)

    def set_target_bandwidth(self, bandwidth: float) -> None:
        """Select one of ``target_bandwidths`` (kbps) for ``encode``; any other value raises
        ``UnsupportedBandwidthError`` (a ``ValueError``). ``bandwidth`` None (a new model's
        state: every codebook) is not a choice here: set ``model.bandwidth = None``."""
        if bandwidth is None:
            choices = ", ".join(format_kbps(float(b)) for b in self.config.target_bandwidths)
            raise UnsupportedBandwidthError(
                f"set_target_bandwidth needs a bandwidth of model {self.name}: one of {choices} kbps, "
                "got None (a new model's bandwidth is None, all its codebooks; to return to that, "
                "set model.bandwidth = None)")
        self.bandwidth = check_bandwidth(bandwidth, self.config.target_bandwidths, self.name)

    # -- inference ------------------------------------------------------------------------
    def segments(self, length: int) -> list[tuple[int, int]]:
        """(offset, length) of each segment for an input of ``length`` samples."""
        seg = self.segment_length
        if seg is None:
            return [(0, length)]
        stride = self.segment_stride
        assert stride is not None
        return [(off, min(seg, length - off)) for off in range(0, length, stride)]

    def num_frames(self, length: int) -> int:
        """Code frames produced for a segment of ``length`` samples."""
        return -(-length // self.hop_length)

    def _check_input(self, wav: torch.Tensor) -> None:
        """A tensor [B, C, T] with ``channels`` channels and T >= 1, else ``InvalidAudioError``
        (a ``ValueError``)."""
        if not isinstance(wav, torch.Tensor):
            raise InvalidAudioError(f"expected audio as a torch.Tensor [B, C, T], got {describe(wav)}")
        if wav.dim() != 3:
            raise InvalidAudioError(f"expected audio of shape [B, C, T], got {tuple(wav.shape)}")
        if wav.shape[1] != self.channels:
            raise InvalidAudioError(f"model {self.name} expects {self.channels} channel(s), got {wav.shape[1]}")
        if wav.shape[-1] == 0:
            raise InvalidAudioError("cannot encode an empty signal (0 samples)")

    def check_audio(self, wav: torch.Tensor, layout: str = "[B, C, T]", prefix: str = "") -> None:
        """``InvalidAudioError`` (a ``ValueError``) unless ``wav`` is a ``torch.Tensor`` of the
        model's float dtype (float32 unless converted) on its device with finite samples (one
        ``isfinite`` pass). The shape is the caller's to check; ``layout`` and ``prefix`` go
        into the message."""
        dtype, device = parameter_dtype_device(self)
        check_audio_tensor(wav, layout, dtype, device, prefix)
        check_finite(wav, prefix, allow_meta=device.type == "meta")

    def encode(self, wav: torch.Tensor) -> list[EncodedFrame]:
        """Audio [B, C, T] at ``sample_rate`` -> one ``EncodedFrame`` per segment,
        codes [B, K, ceil(segment / hop)] with K = ``num_codebooks()``.

        ``wav`` must be a float32 tensor (the model's dtype) on the model's device with finite
        samples: anything else raises ``InvalidAudioError`` (a ``ValueError``) naming the
        problem (``compress`` converts float64 itself). On the CPU the encoder runs on one
        thread, so the codes do not depend on the caller's thread count (see
        :mod:`opencodec.threads`)."""
        dtype, device = parameter_dtype_device(self)
        check_audio_tensor(wav, "[B, C, T]", dtype, device)
        self._check_input(wav)
        check_finite(wav, allow_meta=device.type == "meta")
        with one_thread(wav):
            return [self._encode_segment(wav[:, :, off:off + n]) for off, n in self.segments(wav.shape[-1])]

    def _encode_segment(self, x: torch.Tensor) -> EncodedFrame:
        scale = None
        if self.normalize:
            mono = x.mean(dim=1, keepdim=True)
            volume = mono.pow(2).mean(dim=2, keepdim=True).sqrt()
            # Finite samples whose squares overflow float32 (RMS over ~1e17) get the RMS of
            # the signal over its peak, times the peak, which fits; other inputs keep the bits
            # above (a select, not a test: no device sync, and a meta tensor passes; no float64,
            # which some devices lack).
            peak = mono.abs().amax(dim=2, keepdim=True).clamp_min(torch.finfo(mono.dtype).tiny)
            wide = peak * (mono / peak).pow(2).mean(dim=2, keepdim=True).sqrt()
            volume = torch.where(torch.isfinite(volume), volume, wide)
            scale = 1e-8 + volume
            x = x / scale
            scale = scale.view(-1, 1)
        emb = self.encoder(x)
        codes = self.quantizer.encode(emb, self.num_codebooks())
        return EncodedFrame(codes, scale)

    def decode(self, frames: tp.Sequence[EncodedFrame] | tp.Sequence[tuple[torch.Tensor, torch.Tensor | None]]
               ) -> torch.Tensor:
        """Segments' codes -> audio [B, C, T'] with T' >= the encoded length (trim it).

        ``frames``: what ``encode`` returns, a list of ``EncodedFrame(codes [B, K, F], scale)``
        (or ``(codes, scale)`` pairs) with integer codes in ``[0, bins)``, 1 <= K <= ``n_q``
        and F >= 1; anything else raises ``InvalidCodesError`` (a ``ValueError``) naming the
        problem. A segmenting model takes segments as ``encode`` gives them: none longer than
        ``ceil(segment_length / hop_length)`` frames or than the first, and each but the last
        at least the frames of ``min(segment_length, segment_stride + 1)`` samples (a segment
        before the last holds more samples than the stride; with ``overlap`` 0 it is a whole
        segment). Other lengths would leave gaps, NaN, or overlap wrongly; one segment alone
        may have any length. Any other model takes one segment. Run it under
        ``torch.inference_mode()`` (or ``torch.no_grad()``) unless you need gradients:
        otherwise the output requires grad (``.numpy()`` refuses it) and autograd keeps the
        decoder's activations."""
        frames = self._check_frames(frames)
        if self.segment_length is None:
            if len(frames) != 1:
                raise InvalidCodesError(f"model {self.name} does not segment, got {len(frames)} segments: "
                                        f"pass the one EncodedFrame encode returns")
            return self._decode_segment(*frames[0])
        stride = self.segment_stride
        assert stride is not None
        # A segment before the last holds min(segment, T - offset) samples, T - offset > stride.
        check_segment_frames([f.codes for f in frames], self.num_frames(self.segment_length),
                             self.num_frames(min(self.segment_length, stride + 1)), self.name)
        return linear_overlap_add(self._decode_segments(frames), stride)

    def _check_frames(self, frames: tp.Any) -> list[EncodedFrame]:
        """``frames`` checked by :func:`opencodec.frames.check_frames` (codes, batch sizes,
        scales), or ``InvalidCodesError``."""
        return check_frames(frames, self.bins, self.quantizer.n_q, parameter_dtype_device(self)[1])

    def _decode_segments(self, frames: tp.Sequence[EncodedFrame] | tp.Sequence[tuple[torch.Tensor, torch.Tensor | None]]
                         ) -> list[torch.Tensor]:
        """Decode each segment to [B, C, T_i]. With ``exact_decode`` off and without autograd,
        consecutive segments of the same shape go through the decoder together (up to
        ``DECODE_BATCH_SEGMENTS`` at a time): one pass over a batch is much cheaper than one
        per segment (the LSTM's per-step cost barely grows with B). Not in exact mode:
        PyTorch's LSTM rounds a batch of one differently, and the official decoder sees one
        segment at a time. An empty batch (B = 0) is decoded segment by segment: a batch of
        them could not be split back into segments."""
        for codes, _ in frames:
            if codes.dim() != 3:
                raise ValueError(f"expected codes of shape [B, K, F], got {tuple(codes.shape)}")
        if torch.is_grad_enabled() or self.training or self.exact_decode or frames[0][0].shape[0] == 0:
            return [self._decode_segment(*f) for f in frames]
        out: list[torch.Tensor] = []
        start = 0
        while start < len(frames):
            codes, scale = frames[start]
            end = start + 1
            while (end < len(frames) and frames[end][0].shape == codes.shape
                   and (frames[end][1] is None) == (scale is None)):
                end += 1
            run = frames[start:end]  # consecutive segments of one shape
            chunks = -(-len(run) // self.DECODE_BATCH_SEGMENTS)
            size = -(-len(run) // chunks)  # even chunks: no small remainder batch
            for i in range(0, len(run), size):
                group = run[i: i + size]
                if len(group) == 1:
                    out.append(self._decode_segment(*group[0]))
                    continue
                scales = None if scale is None else torch.cat([f[1].reshape(-1, 1) for f in group if f[1] is not None])
                audio = self._decode_segment(torch.cat([f[0] for f in group]), scales)
                out.extend(audio.split(codes.shape[0]))
            start = end
        return out

    def _decode_segment(self, codes: torch.Tensor, scale: torch.Tensor | None) -> torch.Tensor:
        if codes.dim() != 3:
            raise ValueError(f"expected codes of shape [B, K, F], got {tuple(codes.shape)}")
        out = self.decoder(self.quantizer.decode(codes))
        if scale is not None:  # in the output's dtype: a float64 scale does not make float64 audio
            out = out * scale.view(-1, 1, 1).to(out.dtype)
        return out

    def forward(self, wav: torch.Tensor) -> torch.Tensor:
        """Encode then decode (inference): [B, C, T] -> [B, C, T]."""
        return self.decode(self.encode(wav))[:, :, : wav.shape[-1]]

    # -- training -------------------------------------------------------------------------
    def train_forward(self, wav: torch.Tensor, n_q: int | None = None,
                      bypass_quantizer: bool = False) -> tuple[torch.Tensor, QuantizedResult]:
        """Differentiable pass for training on one segment [B, C, T] (no segmenting):
        returns (reconstruction [B, C, T], quantiser result with the commitment loss).
        ``bypass_quantizer`` skips quantisation (warm-up, see ``ResidualVectorQuantizer``).
        ``wav`` must be of the model's dtype on its device, as for :meth:`encode`: anything else
        is an ``InvalidAudioError`` naming it (float64: convert with ``.float()``)."""
        check_audio_tensor(wav, "[B, C, T]", *parameter_dtype_device(self))
        self._check_input(wav)
        x, scale = wav, None
        if self.normalize:
            mono = x.mean(dim=1, keepdim=True)
            scale = 1e-8 + mono.pow(2).mean(dim=2, keepdim=True).sqrt()
            x = x / scale
        q = self.quantizer(self.encoder(x), self.frame_rate, n_q, bypass=bypass_quantizer)
        out = self.decoder(q.quantized)[:, :, : wav.shape[-1]]
        if scale is not None:
            out = out * scale
        return out, q

    def fold_weight_norm(self, enabled: bool = True) -> None:
        """Precompute weight-normed conv weights for faster inference (same results: a
        folded weight is recomputed when its weights change, and not used while a gradient
        may flow to them); ``enabled`` False turns it off."""
        for module in self.modules():
            fold = getattr(module, "fold", None)
            if callable(fold) and module is not self:
                fold(enabled)
