"""Evaluation: objective metrics (SI-SNR, mel/STFT distances, PESQ, STOI, ViSQOL) and
classic-codec baselines (Opus, MP3) behind a common :class:`Codec` interface."""

from .baselines import (Codec, FunctionCodec, MP3Codec, OpusCodec, RoundtripResult,
                        mp3_roundtrip, opus_roundtrip, paper_baselines)
from .metrics import (ClipTooShortError, MetricError, SilentSignalError, mel_distance,
                      pesq_wb, si_snr, stft_distance, stoi)
from .visqol import VISQOL_IMPLEMENTATION, visqol

__all__ = [
    "Codec", "FunctionCodec", "MP3Codec", "OpusCodec", "RoundtripResult", "mp3_roundtrip",
    "opus_roundtrip", "paper_baselines", "ClipTooShortError", "MetricError",
    "SilentSignalError", "mel_distance", "pesq_wb", "si_snr", "stft_distance", "stoi",
    "VISQOL_IMPLEMENTATION", "visqol",
]
