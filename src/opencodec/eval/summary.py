"""Statistics over result rows: mean and 95 % confidence interval (Student t, half-width)
per metric and system, and the per-item differences of each neural system against the Opus
baseline of the same nominal bitrate. (Reading ``results.jsonl`` moved to
:mod:`opencodec.eval.results_file`; :func:`read_results` and :func:`repair_results` stay
importable from here.)
"""

from __future__ import annotations

import math
import numbers
import typing as tp
from collections import defaultdict

import numpy as np

from .results_file import read_results, repair_results  # their old import path
from .systems import LOWER_IS_BETTER, SILENT_KEY

__all__ = ["mean_ci95", "per_second", "rate_kbps", "RATE_DEFINITION", "rtf_total",
           "RTF_DEFINITION", "SILENT_KEY", "silent_left_out", "summarize", "paired_versus_opus",
           "read_results", "repair_results"]


# ------------------------------------------------------------------------------------------
# Aggregation
# ------------------------------------------------------------------------------------------
def mean_ci95(values: tp.Sequence[float]) -> tuple[float | None, float | None, int]:
    """(mean, 95 % CI half-width via Student t, n); CI None for n < 2."""
    vals = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    n = len(vals)
    if n == 0:
        return None, None, 0
    mean = float(np.mean(vals))
    if n < 2:
        return mean, None, n
    try:
        from scipy.stats import t as student_t
        q = float(student_t.ppf(0.975, n - 1))
    except ImportError:  # pragma: no cover
        q = 1.96
    return mean, q * float(np.std(vals, ddof=1)) / math.sqrt(n), n


#: What ``actual_kbps`` of :func:`summarize` is (the report states it).
RATE_DEFINITION = ("total bits of the items over their total duration (a duration-weighted "
                   "mean of the per-item rates, so that a very short item weighs as little as "
                   "its few bits)")


def _is_number(x: object) -> bool:
    """A real number (Python or NumPy scalar: ``np.float32`` counts), not a bool."""
    return isinstance(x, numbers.Real) and not isinstance(x, (bool, np.bool_))


def per_second(rows: tp.Sequence[dict], key: str) -> dict[str, float | int | None]:
    """A per-second quantity of a system over ``rows``, weighted by duration: ``key`` is a
    result-row field that is a total over the item divided by its ``duration_s`` (s), such as
    ``actual_kbps`` (kbit / s) or ``rtf`` (wall s / s). Returns ``{"mean": sum(v_i * d_i) /
    sum(d_i), "ci95", "n", "seconds": sum(d_i)}``: the item totals added up over the total
    duration, the value of all items run one after the other.

    ``ci95`` is the 95 % half-width of that ratio estimate (Student t on the residuals
    ``b_i - mean * d_i`` of the item totals ``b_i = v_i * d_i``, divided by the mean
    duration: the usual linearised interval of a ratio), None for fewer than 2 items. Rows
    without a finite ``key`` or a positive finite duration are left out (``n`` counts the
    others)."""
    pairs = []
    for r in rows:
        value, seconds = r.get(key), r.get("duration_s")
        if (_is_number(value) and _is_number(seconds)
                and math.isfinite(value) and math.isfinite(seconds) and seconds > 0):
            pairs.append((float(value) * float(seconds), float(seconds)))
    n = len(pairs)
    if n == 0:
        return {"mean": None, "ci95": None, "n": 0, "seconds": 0.0}
    totals = np.array([b for b, _ in pairs])
    seconds = np.array([d for _, d in pairs])
    total_s = float(seconds.sum())
    mean = float(totals.sum()) / total_s
    ci = None
    if n >= 2:
        _, half, _ = mean_ci95(list(totals - mean * seconds))
        ci = None if half is None else half / float(seconds.mean())
    return {"mean": mean, "ci95": ci, "n": n, "seconds": total_s}


def rate_kbps(rows: tp.Sequence[dict]) -> dict[str, float | int | None]:
    """The bitrate of a system over ``rows`` (result rows with ``actual_kbps``, kbit/s, and
    ``duration_s``, s): ``{"mean": total kbit / total s, "ci95", "n", "seconds"}``
    (:func:`per_second` of ``actual_kbps``).

    ``mean`` = sum(kbps_i * d_i) / sum(d_i), the rate of all items coded one after the
    other (:data:`RATE_DEFINITION`); a plain mean of the per-item rates would let a clip of
    one sample (19,776 kbps for a 103-byte ``.ecdc`` file at 24 kHz) outweigh hours of audio."""
    return per_second(rows, "actual_kbps")


#: What ``rtf`` of :func:`summarize` is (the report states it).
RTF_DEFINITION = ("total encode + decode wall time of the items over their total duration "
                  "(a duration-weighted mean of the per-item RTFs, so that a very short item, "
                  "whose fixed costs make its own RTF large, weighs as little as its duration)")


def rtf_total(rows: tp.Sequence[dict]) -> dict[str, float | int | None]:
    """The real-time factor of a system over ``rows`` (result rows with ``rtf``, wall s per
    audio s, and ``duration_s``, s): ``{"mean": total wall s / total audio s, "ci95", "n",
    "seconds"}`` (:func:`per_second` of ``rtf``; :data:`RTF_DEFINITION`). Baselines' rows
    (``rtf`` None) give ``mean`` None and ``n`` 0."""
    return per_second(rows, "rtf")


def silent_left_out(rows: tp.Sequence[dict], metrics: tp.Sequence[str]) -> list[dict]:
    """The (category, system, item) rows whose decoded audio is digital silence
    (:data:`SILENT_KEY`) and that lack a value for some of ``metrics`` they were scored
    with (PESQ is undefined there): ``[{"category", "system", "item_id", "metrics": [...]}]``
    in the order of ``rows``. Such an item leaves those metrics' means, which a codec that
    outputs silence would otherwise *raise*; the report names them."""
    out = []
    for r in rows:
        if not r.get(SILENT_KEY):
            continue
        values = r.get("metrics") or {}
        missing = [m for m in metrics if m in values and values[m] is None]
        if missing:
            out.append({"category": r["category"], "system": r["system"],
                        "item_id": r["item_id"], "metrics": missing})
    return out


def summarize(rows: list[dict], metrics: tp.Sequence[str],
              failures: tp.Sequence[dict] = ()) -> dict:
    """``{category: {system: {...}}}`` with mean/ci95/n per metric, the bitrate
    (``actual_kbps``: :func:`rate_kbps`) and the real-time factor (``rtf``:
    :func:`rtf_total`), both duration-weighted.

    ``rows`` are the scored rows; ``failures`` (``{category, item_id, system, error}``, as
    ``meta.codec_failures`` lists them) are the (item, system) pairs whose codec failed, kept
    out of ``rows``: ``n_codec_failures`` counts them per category and system, with any row
    of ``rows`` whose codec failed (``errors["codec"]``; such a row also counts in ``n_items``,
    as when ``summarize(rows, metrics)`` is called with every row of ``results.jsonl``), each
    (item, system) pair once."""
    groups: dict[str, dict[str, list[dict]]] = defaultdict(lambda: defaultdict(list))
    for r in rows:
        groups[r["category"]][r["system"]].append(r)
    out: dict[str, dict] = {}
    for cat in sorted(groups):
        out[cat] = {}
        for system, rs in sorted(groups[cat].items(), key=lambda kv: (
                kv[1][0]["kind"] != "neural", kv[1][0]["family"], kv[1][0]["nominal_kbps"])):
            entry: dict[str, tp.Any] = {
                "family": rs[0]["family"], "kind": rs[0]["kind"],
                "nominal_kbps": rs[0]["nominal_kbps"], "n_items": len(rs),
                "n_codec_failures": len(
                    {f["item_id"] for f in failures if f["category"] == cat and f["system"] == system}
                    | {r["item_id"] for r in rs if "codec" in (r.get("errors") or {})}),
                "visqol_mode": rs[0].get("visqol_mode"),
            }
            entry["actual_kbps"] = rate_kbps(rs)
            entry["rtf"] = rtf_total(rs)
            entry["metrics"] = {}
            for name in metrics:
                vals = [r.get("metrics", {}).get(name) for r in rs]
                if all(name not in r.get("metrics", {}) for r in rs):
                    continue
                m, ci, n = mean_ci95(vals)
                entry["metrics"][name] = {"mean": m, "ci95": ci, "n": n}
            out[cat][system] = entry
    return out

def _opus_partners(systems: tp.Iterable[tuple[str, str, str, float]]) -> dict[str, str]:
    """``{neural system: Opus system}`` for (name, kind, family, nominal kbps) tuples of one
    category, pairing each neural system with the Opus baseline of the same nominal bitrate."""
    systems = list(systems)
    opus = {kbps: name for name, kind, family, kbps in systems if family == "opus"}
    return {name: opus[kbps] for name, kind, family, kbps in systems if kind == "neural" and kbps in opus}


def paired_versus_opus(rows: list[dict], metrics: tp.Sequence[str]) -> dict[str, dict[str, dict]]:
    """Per-item differences, neural system minus the Opus baseline of the same nominal bitrate.

    Both systems code the same items, so the mean of the per-item differences, with its
    own 95 % interval (Student t), is a sharper test than comparing the two systems'
    separate intervals. Returns ``{category: {neural system: {"opus": name, metric:
    {"mean", "ci95", "n", "wins"}}}}``; ``wins`` counts the items where the neural system
    scores better (lower for ``mel``/``stft``, higher otherwise). Items where either
    system lacks the metric are left out of that metric's difference.
    """
    items: dict[str, dict[str, dict[str, dict]]] = defaultdict(lambda: defaultdict(dict))  # cat -> item -> system
    systems: dict[str, set[tuple[str, str, str, float]]] = defaultdict(set)
    for r in rows:
        items[r["category"]][r["item_id"]][r["system"]] = r.get("metrics", {})
        systems[r["category"]].add((r["system"], r["kind"], r["family"], float(r["nominal_kbps"])))
    out: dict[str, dict[str, dict]] = {}
    for cat in sorted(systems):
        for name, opus_name in sorted(_opus_partners(systems[cat]).items()):
            entry: dict[str, tp.Any] = {"opus": opus_name}
            for metric in metrics:
                diffs = []
                for scored in items[cat].values():
                    ours, theirs = scored.get(name, {}).get(metric), scored.get(opus_name, {}).get(metric)
                    if ours is not None and theirs is not None and math.isfinite(ours) and math.isfinite(theirs):
                        diffs.append(float(ours) - float(theirs))
                if not diffs:
                    continue
                mean, ci, n = mean_ci95(diffs)
                lower = metric in LOWER_IS_BETTER
                wins = sum(1 for d in diffs if (d < 0 if lower else d > 0))
                entry[metric] = {"mean": mean, "ci95": ci, "n": n, "wins": wins}
            out.setdefault(cat, {})[name] = entry
    return out
