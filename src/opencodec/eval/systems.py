"""What an evaluation is made of: metric names, eval-set categories, the systems scored (a
neural model at one bandwidth, or a classic baseline) and the result rows' resume key.

The protocol of ``opencodec eval`` is described in :mod:`opencodec.eval.report`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

ALL_METRICS = ("si_snr", "mel", "stft", "visqol", "pesq", "stoi")
SPEECH_ONLY_METRICS = ("pesq", "stoi")
DEFAULT_CATEGORIES = ("clean_speech", "noisy_speech", "music", "general")
METRIC_LABELS = {
    "si_snr": "SI-SNR (dB) ↑", "mel": "Mel distance ↓", "stft": "STFT distance ↓",
    "visqol": "ViSQOL ↑", "pesq": "PESQ-WB ↑", "stoi": "STOI ↑",
}
#: Metrics where a lower value is better (the ↓ ones above; the others: higher is better).
LOWER_IS_BETTER = frozenset({"mel", "stft"})


class EvalReportError(ValueError):
    """Bad arguments or inputs of the evaluation."""


# ------------------------------------------------------------------------------------------
# Systems
# ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SystemSpec:
    """One system to score: a neural model at one bandwidth, or a baseline."""

    name: str            # e.g. "opencodec_24khz@6kbps", "opus-12kbps"
    family: str          # curve in the plots: model name, "opus", "mp3"
    kind: str            # "neural" | "baseline"
    nominal_kbps: float
    model: str = ""      # name_or_path given to load_model (neural)
    baseline: str = ""   # baseline spec, e.g. "opus12" (baseline)
    weights: str = ""    # the model's weights hash prefix (neural; opencodec.identity.model_hash)


WEIGHTS_KEY = "weights_sha256"
"""Result-row field holding the weights hash prefix of a neural system's model; rows without
it (written before it existed) match no model: a rerun into their folder scores the model
again."""


def row_key(row: dict) -> tuple[str, str, str, str]:
    """A result row's resume key: (category, item, system, weights hash or "")."""
    return row["category"], row["item_id"], row["system"], row.get(WEIGHTS_KEY) or ""


def parse_baseline(spec: str):  # -> Codec
    """``opus6``/``opus-6``/``opus_6`` -> OpusCodec(6); ``mp3_64``/``mp3-64``/``mp364`` -> MP3Codec(64)."""
    from .baselines import MP3Codec, OpusCodec

    s = spec.lower().replace("-", "_").replace("kbps", "")
    for prefix, cls in (("opus", OpusCodec), ("mp3", MP3Codec)):
        if s.startswith(prefix):
            rest = s[len(prefix):].lstrip("_")
            try:
                kbps = float(rest)
            except ValueError:
                break
            if not math.isfinite(kbps) or kbps <= 0:
                break
            return cls(kbps)
    raise EvalReportError(f"unknown baseline {spec!r}: expected opusN or mp3_N (e.g. opus12, mp3_64)")


def neural_system_name(model_name: str, bandwidth: float) -> str:
    return f"{model_name}@{bandwidth:g}kbps"


def is_speech_category(category: str) -> bool:
    return "speech" in category


def visqol_mode(category: str) -> str:
    return "speech" if is_speech_category(category) else "audio"
