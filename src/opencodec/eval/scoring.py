"""Scoring one eval item: the worker processes' models and baselines, the neural
``compress`` -> ``.ecdc`` -> ``decompress`` round trip and the per-item metric values (the
result rows of ``OUT/results.jsonl``; protocol in :mod:`opencodec.eval.report`).
"""

from __future__ import annotations

import math
import time
import typing as tp

import numpy as np

from .systems import (SPEECH_ONLY_METRICS, WEIGHTS_KEY, SystemSpec, is_speech_category,
                      parse_baseline, visqol_mode)


# ------------------------------------------------------------------------------------------
# Worker side
# ------------------------------------------------------------------------------------------
_WORKER: dict[str, tp.Any] = {}


def _init_worker(model_specs: tuple[str, ...], baseline_specs: tuple[str, ...]) -> None:
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


def _neural_roundtrip(model, wav: np.ndarray, bandwidth: float) -> tuple[np.ndarray, float, float]:
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


def evaluate_item(task: dict) -> list[dict]:
    """Score one item with the systems listed in ``task``; returns result rows."""
    from ..data.dataset import EvalDataset

    ds = EvalDataset([task["row"]], sample_rate=task["sample_rate"], channels=task["channels"],
                     skip_errors=False)
    item = ds[0]
    ref = item["audio"].numpy().astype(np.float32)
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
        try:
            if spec.kind == "neural":
                model = _WORKER["models"][spec.model]
                est, kbps, elapsed = _neural_roundtrip(model, ref, spec.nominal_kbps)
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
