"""What an evaluation is made of: metric names, eval-set categories, the systems scored (a
neural model at one bandwidth, or a classic baseline) and the result rows' resume key.

The protocol of ``opencodec eval`` is described in :mod:`opencodec.eval.report`.
"""

from __future__ import annotations

import re
import typing as tp
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

ITEM_KEY = "item_sha256"
"""Result-row field holding the hash prefix of the item's audio file (its bytes), so that a
row is only ever reused for the same audio: another eval set whose item has the same id, or
a rebuilt file, is scored again. Rows without it (written before it was recorded) are stale."""

SCORED_KEY = "scored_metrics"
"""Result-row field listing the metrics the row was asked to compute (those that apply to
its category); a rerun that asks for a metric a row lacks scores that row again."""

SILENT_KEY = "decoded_silent"
"""Result-row field: True when the decoded audio is digital silence (a channel of it all
exact zeros while that channel of the reference is not), where PESQ is undefined and left
out of its mean; the report names such items
(:func:`opencodec.eval.summary.silent_left_out`). Rows written before it existed lack it."""


def row_key(row: dict) -> tuple[str, str, str, str, str, int, int]:
    """A result row's resume key: (category, item, item file hash or "", system, weights
    hash or "", scoring sample rate, scoring channels)."""
    return (row["category"], row["item_id"], row.get(ITEM_KEY) or "", row["system"],
            row.get(WEIGHTS_KEY) or "", int(row.get("sample_rate") or 0), int(row.get("channels") or 0))


def metrics_for(category: str, metrics: tp.Sequence[str]) -> list[str]:
    """The metrics of ``metrics`` that apply to ``category`` (PESQ and STOI only for speech)."""
    speech = is_speech_category(category)
    return [m for m in metrics if speech or m not in SPEECH_ONLY_METRICS]


def row_scored_metrics(row: dict) -> set[str]:
    """The metrics ``row`` was computed with (:data:`SCORED_KEY`, else its ``metrics``' keys)."""
    scored = row.get(SCORED_KEY)
    if isinstance(scored, list):
        return {str(m) for m in scored}
    metrics = row.get("metrics")
    return set(metrics) if isinstance(metrics, dict) else set()


BASELINE_FORMS = "opusN or mp3_N, N in kbit/s (e.g. opus6, opus12, mp3_64)"
"""The baseline spellings ``--baselines`` takes (README "Evaluation", ``eval --help``)."""

_BASELINE_RE = re.compile(r"(opus|mp3_)((?:0|[1-9][0-9]*)(?:\.[0-9]+)?)")


def parse_baseline(spec: str):  # -> Codec
    """``opusN`` -> OpusCodec(N); ``mp3_N`` -> MP3Codec(N) (N in kbit/s, e.g. ``opus6``,
    ``mp3_64``): the documented spellings only, exactly as written, so that the report's
    "Baselines:" line names what was scored; ``opus_6``, ``mp364``, ``Opus6`` or ``opus6kbps``
    are refused.

    Raises :class:`EvalReportError` for any other spec, or a bitrate outside the encoder's
    whole range (Opus 6..510, MP3 8..320 kbit/s; :func:`opencodec.eval.baselines.check_bitrate`),
    so that ``eval`` and ``mushra build`` refuse it before any work. Whether the encoder
    takes it at the scoring rate and channels (Opus at most 256 kbit/s per channel, MP3
    LAME's bitrates of the MPEG version) is checked once those are known
    (:func:`opencodec.eval.lineup.check_baselines`)."""
    from .baselines import BaselineError, MP3Codec, OpusCodec, check_bitrate

    match = _BASELINE_RE.fullmatch(spec)
    if match is None:
        raise EvalReportError(f"unknown baseline {spec!r}: expected {BASELINE_FORMS}")
    prefix, kbps = match.group(1).rstrip("_"), float(match.group(2))
    try:
        check_bitrate(prefix, kbps)
    except BaselineError as exc:
        raise EvalReportError(f"baseline {spec!r}: {exc}") from None
    return OpusCodec(kbps) if prefix == "opus" else MP3Codec(kbps)


def neural_system_name(model_name: str, bandwidth: float) -> str:
    """``('tiny', 1.5)`` -> ``'tiny@1.5kbps'``."""
    return f"{model_name}@{bandwidth:g}kbps"


def is_speech_category(category: str) -> bool:
    """Whether ``category`` holds speech (its name contains ``speech``)."""
    return "speech" in category


def visqol_mode(category: str) -> str:
    """ViSQOL's mode for ``category``: ``speech`` (16 kHz) or ``audio`` (48 kHz)."""
    return "speech" if is_speech_category(category) else "audio"
