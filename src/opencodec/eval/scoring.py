"""Scoring one eval item: the worker processes' models and baselines, the neural
``compress`` -> ``.ecdc`` -> ``decompress`` round trip and the per-item metric values (the
result rows of ``OUT/results.jsonl``; protocol in :mod:`opencodec.eval.report`).
"""

from __future__ import annotations

import math
import time
import typing as tp

import numpy as np

from .systems import (ITEM_KEY, SCORED_KEY, SILENT_KEY, SPEECH_ONLY_METRICS, WEIGHTS_KEY,
                      EvalReportError,
                      SystemSpec, is_speech_category, metrics_for, parse_baseline, visqol_mode)

__all__ = ["ItemReadError", "init_worker", "init_pool_worker", "score_in_this_process",
           "loaded_models", "neural_roundtrip", "score", "load_reference", "is_silent",
           "check_channels", "evaluate_item"]


class ItemReadError(EvalReportError):
    """An eval item's audio cannot be read or holds no samples: the item is skipped.

    ``path`` is the item's file and ``reason`` why it cannot be read (the arguments, so that
    the error pickles back from a worker process)."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(path, reason)
        self.path, self.reason = path, reason

    def __str__(self) -> str:
        return f"cannot read {self.path}: {self.reason}"


# ------------------------------------------------------------------------------------------
# Worker side
# ------------------------------------------------------------------------------------------
_WORKER: dict[str, tp.Any] = {}


def init_worker(model_specs: tuple[str, ...], baseline_specs: tuple[str, ...]) -> None:
    """Load models and baselines once per process; one torch thread."""
    import warnings

    import torch

    torch.set_num_threads(1)
    warnings.filterwarnings("ignore", message=".*weight_norm.*")
    from ..pretrained import load_model

    models = {}
    for spec in model_specs:
        m = load_model(spec)
        m.eval()
        models[spec] = m
    _WORKER["models"] = models
    _WORKER["baselines"] = {b: parse_baseline(b) for b in baseline_specs}


def init_pool_worker(model_specs: tuple[str, ...], baseline_specs: tuple[str, ...]) -> None:
    """:func:`init_worker` for a worker process, which leaves Ctrl-C to its parent (the
    parent stops the pool; a worker's own ``KeyboardInterrupt`` would print a traceback)."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    init_worker(model_specs, baseline_specs)


def score_in_this_process(model_specs: tuple[str, ...], baseline_specs: tuple[str, ...]) -> None:
    """Make this process ready for :func:`evaluate_item`: load the models with
    :func:`init_worker` unless exactly these are loaded already (the parent loads them
    before any work), and fresh baselines."""
    if set(_WORKER.get("models", {})) != set(model_specs):
        init_worker(model_specs, baseline_specs)
    _WORKER["baselines"] = {b: parse_baseline(b) for b in baseline_specs}


def loaded_models() -> dict[str, tp.Any]:
    """The models :func:`init_worker` loaded in this process, by the spec they were loaded
    from (a copy of the mapping; empty before any load)."""
    return dict(_WORKER.get("models", {}))


def neural_roundtrip(model, wav: np.ndarray, bandwidth: float) -> tuple[np.ndarray, float, float]:
    """(decoded [C, T], actual kbps, encode+decode seconds)."""
    import torch

    from ..compress import compress, decompress

    x = torch.from_numpy(np.ascontiguousarray(wav, dtype=np.float32))
    t0 = time.perf_counter()
    data = compress(model, x, bandwidth)
    out, _sr = decompress(data, model=model)
    elapsed = time.perf_counter() - t0
    duration = wav.shape[-1] / model.sample_rate
    return out.detach().cpu().numpy().astype(np.float32), 8.0 * len(data) / duration / 1000.0, elapsed


# The names these functions had before they were made public (``eval/mushra/build.py`` imports
# ``_neural_roundtrip``).
_init_worker = init_worker
_init_pool_worker = init_pool_worker
_neural_roundtrip = neural_roundtrip


def score(est: np.ndarray, ref: np.ndarray, sample_rate: int, category: str,
          metrics: tp.Sequence[str]) -> tuple[dict[str, float | None], dict[str, str]]:
    """Metric values (None where undefined) and error messages for one output."""
    from . import metrics as M
    from .visqol import visqol

    speech = is_speech_category(category)
    funcs: dict[str, tp.Callable[[], float]] = {
        "si_snr": lambda: M.si_snr(est, ref),
        "mel": lambda: M.mel_distance(est, ref, sample_rate),
        "stft": lambda: M.stft_distance(est, ref),
        "visqol": lambda: visqol(est, ref, sample_rate, mode=visqol_mode(category)),
        "pesq": lambda: M.pesq_wb(est, ref, sample_rate),
        "stoi": lambda: M.stoi(est, ref, sample_rate),
    }
    values: dict[str, float | None] = {}
    errors: dict[str, str] = {}
    for name in metrics:
        if name in SPEECH_ONLY_METRICS and not speech:
            continue
        try:
            v = float(funcs[name]())
            values[name] = v if math.isfinite(v) else None
            if values[name] is None:
                errors[name] = f"non-finite value {v}"
        except Exception as exc:  # noqa: BLE001 - one metric failing must not stop the run
            values[name] = None
            errors[name] = f"{type(exc).__name__}: {exc}"
    return values, errors


def is_silent(audio: np.ndarray, reference: np.ndarray | None = None) -> bool:
    """Whether ``audio`` (``[C, T]``) is digital silence: some channel holds only exact zeros
    (PESQ is undefined there). With ``reference`` (``[C, T]``, the item), only a channel
    whose reference is not itself all zeros counts: silence coded as silence is no fault of
    the codec (PESQ is undefined there for every system)."""
    silent = ~np.any(np.atleast_2d(np.asarray(audio)) != 0, axis=-1)
    if reference is not None:
        silent = silent & np.any(np.atleast_2d(np.asarray(reference)) != 0, axis=-1)
    return bool(np.any(silent))


def check_channels(file_channels: int, channels: int) -> bool:
    """Whether an item of ``file_channels`` channels converts to ``channels`` as
    :func:`opencodec.audio.convert_channels` converts a file for ``compress``: the same count,
    a mono down-mix (the mean) or a mono up-mix. Any other (6 -> 2, 2 -> 6) would be a guess:
    the eval's reader would keep the first channels (a 5.1 file's front pair, without its
    centre) and score that as the item."""
    return file_channels == channels or channels == 1 or file_channels == 1


def load_reference(task: dict) -> np.ndarray:
    """The item of ``task`` as float32 ``[C, T]`` at the scoring rate and channels; raises
    :class:`ItemReadError` naming the file and the reason when it cannot be read, is empty,
    holds NaN or infinite samples, or has channels that convert to the scoring channels only
    by a guess (bad input: the item is skipped, not coded; :func:`check_channels`)."""
    import soundfile as sf

    from .._files import error_reason
    from ..data.dataset import EvalDataset

    path = str(task["row"].get("path"))
    try:
        with open(path, "rb"):  # the OS's reason (soundfile says only "System error.")
            pass
    except OSError as exc:
        raise ItemReadError(path, error_reason(exc)) from None
    try:
        file_channels = sf.info(path).channels
        if not check_channels(file_channels, task["channels"]):
            item = None
        else:
            item = EvalDataset([task["row"]], sample_rate=task["sample_rate"],
                               channels=task["channels"], skip_errors=False)[0]
    except (OSError, RuntimeError, ValueError) as exc:  # soundfile's errors are RuntimeErrors
        reason = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
        prefix = f"Error opening {path!r}: "  # soundfile's; the path is named already
        raise ItemReadError(path, reason[len(prefix):] if reason.startswith(prefix) else reason) from None
    if item is None:
        raise ItemReadError(path, f"it has {file_channels} channels and the scoring {task['channels']}: "
                            "only a mono down-mix or up-mix is made (as compress makes them), "
                            "any other would be a guess; convert it with a tool that knows its layout")
    ref = item["audio"].numpy().astype(np.float32)
    if ref.shape[-1] == 0:
        raise ItemReadError(path, "the file holds no audio samples")
    bad = int(ref.size - np.count_nonzero(np.isfinite(ref)))
    if bad:
        raise ItemReadError(path, f"the audio holds {bad} non-finite sample(s) (NaN or inf)")
    return ref


def evaluate_item(task: dict) -> list[dict]:
    """Score one item with the systems listed in ``task``; returns result rows. Raises
    :class:`ItemReadError` when the item's audio cannot be read (the caller skips the item)."""
    ref = load_reference(task)
    sr = int(task["sample_rate"])
    duration = ref.shape[-1] / sr
    rows = []
    for sys_d in task["systems"]:
        spec = SystemSpec(**sys_d)
        row: dict[str, tp.Any] = {
            "category": task["category"], "item_id": task["item_id"], "system": spec.name,
            "family": spec.family, "kind": spec.kind, "nominal_kbps": spec.nominal_kbps,
            "duration_s": duration, "sample_rate": sr, "channels": int(ref.shape[0]),
        }
        if spec.weights:
            row[WEIGHTS_KEY] = spec.weights
        if task.get("item_sha256"):
            row[ITEM_KEY] = task["item_sha256"]
        row[SCORED_KEY] = metrics_for(task["category"], task["metrics"])
        try:
            if spec.kind == "neural":
                model = _WORKER["models"][spec.model]
                est, kbps, elapsed = neural_roundtrip(model, ref, spec.nominal_kbps)
                row["rtf"] = elapsed / duration
            else:
                codec = _WORKER["baselines"][spec.baseline]
                est, kbps = codec.roundtrip(ref, sr)
                est = np.asarray(est, dtype=np.float32)
                row["rtf"] = None
            if est.shape != ref.shape:  # defensive: align lengths for scoring
                n = min(est.shape[-1], ref.shape[-1])
                est = np.pad(est[..., :n], ((0, 0), (0, ref.shape[-1] - n)))
            row["actual_kbps"] = float(kbps)
            row[SILENT_KEY] = is_silent(est, ref)
            values, errors = score(est, ref, sr, task["category"], task["metrics"])
            row["metrics"] = values
            row["errors"] = errors
        except Exception as exc:  # noqa: BLE001 - the codec itself failed on this item
            row["actual_kbps"] = None
            row["metrics"] = {}
            row["errors"] = {"codec": f"{type(exc).__name__}: {exc}"}
        row["visqol_mode"] = visqol_mode(task["category"])
        rows.append(row)
    return rows
