"""Rate-quality evaluation report: score neural codecs and classic baselines on eval sets.

::

    opencodec eval --models opencodec_24khz --bandwidths 1.5 3 6 12 \\
        --baselines opus6 opus12 opus24 mp3_64 --set data/small_24k/manifests \\
        [--categories clean_speech music ...] [--max-items N] [--metrics si_snr mel ...] \\
        --out reports/NAME [--workers N] [-q]

(also ``python -m opencodec.eval.report ...``).

Protocol
--------
* Every item of ``SET/eval_<category>.jsonl`` is read and converted to the **scoring rate
  and channels** (those of the first ``--models`` entry; all models must agree; without
  models ``--sample-rate``/``--channels``, default 24 kHz mono), channels first, then soxr
  resampling (:class:`opencodec.data.dataset.EvalDataset`). This converted signal is the
  input of every system *and* the reference every output is scored against.
* Neural systems: a real ``compress`` -> ``.ecdc`` bytes -> ``decompress`` round trip at each
  bandwidth the model supports; actual kbps = ``8 * len(ecdc bytes) / duration / 1000``
  (header included); real-time factor = (encode + decode wall time) / duration, measured in
  the worker with one torch thread on CPU.
* Baselines (``opusN``, ``mp3_N``): :meth:`Codec.roundtrip` on the converted signal;
  actual kbps as reported by the baseline (payload bits).
* Metrics: ``si_snr`` (dB), ``mel`` and ``stft`` distances (lower is better), ``visqol``
  (audio mode at 48 kHz for music/general, speech mode at 16 kHz for categories whose name
  contains ``speech``), ``pesq`` (wide-band) and ``stoi`` for speech categories only. A
  metric that fails on an item (clip too short, silence, ...) is stored as ``null`` with the
  reason under ``errors`` and left out of that metric's mean.
* ``OUT/results.jsonl`` gets one row per (category, item, system) as soon as it is scored,
  a neural system's row with its model's weights hash (``weights_sha256``); a rerun skips
  the rows already there for the same (category, item, system, weights hash) (resume), so a
  model retrained under the same name is scored again, and only the rows of the weights
  evaluated now are reported. Rows without a hash (written before it was recorded) are
  stale: they match no model. ``OUT/summary.json``, ``OUT/report.md`` and
  ``OUT/plots/<category>_<metric>.png`` are rebuilt from all rows at the end.
* Mean and 95 % confidence interval (Student t, half-width) per metric.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
import typing as tp
from collections import defaultdict
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..argtypes import bandwidth_arg, positive_int

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


def is_speech_category(category: str) -> bool:
    return "speech" in category


def visqol_mode(category: str) -> str:
    return "speech" if is_speech_category(category) else "audio"


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


def read_results(path: Path) -> list[dict]:
    rows = []
    if path.exists():
        with open(path) as fh:
            for line in fh:
                line = line.strip()
                if not line:
                    continue
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError:  # a line cut by an interrupted run
                    continue
    return rows


def summarize(rows: list[dict], metrics: tp.Sequence[str]) -> dict:
    """``{category: {system: {...}}}`` with mean/ci95/n per metric, mean kbps and RTF."""
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
                "n_codec_failures": sum(1 for r in rs if "codec" in r.get("errors", {})),
                "visqol_mode": rs[0].get("visqol_mode"),
            }
            m, ci, n = mean_ci95([r.get("actual_kbps") for r in rs])
            entry["actual_kbps"] = {"mean": m, "ci95": ci, "n": n}
            m, ci, n = mean_ci95([r.get("rtf") for r in rs])
            entry["rtf"] = {"mean": m, "ci95": ci, "n": n}
            entry["metrics"] = {}
            for name in metrics:
                vals = [r.get("metrics", {}).get(name) for r in rs]
                if all(name not in r.get("metrics", {}) for r in rs):
                    continue
                m, ci, n = mean_ci95(vals)
                entry["metrics"][name] = {"mean": m, "ci95": ci, "n": n}
            out[cat][system] = entry
    return out


# ------------------------------------------------------------------------------------------
# Report
# ------------------------------------------------------------------------------------------
def _fmt(stat: dict | None, digits: int = 2) -> str:
    if not stat or stat.get("mean") is None:
        return "–"
    s = f"{stat['mean']:.{digits}f}"
    if stat.get("ci95") is not None:
        s += f" ± {stat['ci95']:.{digits}f}"
    return s


def make_plots(summary: dict, out: Path, metrics: tp.Sequence[str]) -> dict[str, list[str]]:
    """One PNG per (category, metric): metric vs actual kbps, one curve per family."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plots_dir = out / "plots"
    plots_dir.mkdir(parents=True, exist_ok=True)
    made: dict[str, list[str]] = {}
    for cat, systems in summary.items():
        made[cat] = []
        for name in metrics:
            fams: dict[str, list[tuple[float, float, float]]] = defaultdict(list)
            for s in systems.values():
                st = s["metrics"].get(name)
                kbps = s["actual_kbps"]["mean"]
                if st is None or st["mean"] is None or kbps is None:
                    continue
                fams[s["family"]].append((kbps, st["mean"], st["ci95"] or 0.0))
            if not fams:
                continue
            fig, ax = plt.subplots(figsize=(5.5, 4))
            for fam, pts in sorted(fams.items()):
                pts.sort()
                x, y, e = zip(*pts)
                ax.errorbar(x, y, yerr=e, marker="o", capsize=3, label=fam)
            ax.set_xscale("log")
            from matplotlib.ticker import FormatStrFormatter, NullFormatter
            xs = [p[0] for pts in fams.values() for p in pts]
            ticks = [t for t in (0.75, 1.5, 3, 6, 12, 24, 64, 128, 256)
                     if min(xs) / 1.6 <= t <= max(xs) * 1.6]
            ax.set_xticks(ticks)
            ax.xaxis.set_major_formatter(FormatStrFormatter("%g"))
            ax.xaxis.set_minor_formatter(NullFormatter())
            ax.set_xlabel("actual bitrate (kbps)")
            ax.set_ylabel(METRIC_LABELS.get(name, name))
            ax.set_title(f"{cat}: {name}")
            ax.grid(True, which="both", alpha=0.3)
            ax.legend(fontsize=8)
            fig.tight_layout()
            path = plots_dir / f"{cat}_{name}.png"
            fig.savefig(path, dpi=100)
            plt.close(fig)
            made[cat].append(str(path.relative_to(out)))
    return made


def _markdown_table(header: tp.Sequence[str], rows: tp.Iterable[tp.Sequence[str]]) -> list[str]:
    """Lines of a Markdown table."""
    return (["| " + " | ".join(header) + " |", "|" + "|".join(["---"] * len(header)) + "|"]
            + ["| " + " | ".join(cells) + " |" for cells in rows])


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


def versus_opus(summary: dict, metrics: tp.Sequence[str], paired: dict | None = None) -> list[str]:
    """Markdown lines comparing every neural system with Opus at the same nominal bitrate,
    per category and metric. With ``paired`` (from ``paired_versus_opus``) a cell gives the
    mean per-item difference (ours minus Opus) ± its 95 % interval and the items won, and
    a difference whose interval contains 0 is marked "not established"; without it, the
    two systems' separate intervals are compared ("intervals overlap"). Empty when no Opus
    baseline shares a neural system's bitrate."""
    rows = []
    verdicts: dict[str, dict[str, list[str]]] = defaultdict(lambda: {"above": [], "below": [], "open": []})
    for cat, systems in summary.items():
        partners = _opus_partners((name, s["kind"], s["family"], s["nominal_kbps"]) for name, s in systems.items())
        for name, opus_name in partners.items():
            s, o = systems[name], systems[opus_name]
            cells = [cat, name, opus_name, f"{_fmt(s.get('actual_kbps'))} vs {_fmt(o.get('actual_kbps'))}"]
            for metric in metrics:
                ours, theirs = s["metrics"].get(metric), o["metrics"].get(metric)
                if not ours or not theirs or ours.get("mean") is None or theirs.get("mean") is None:
                    cells.append("–")
                    continue
                diff = ((paired or {}).get(cat, {}).get(name, {}).get(metric) or {})
                if diff.get("ci95") is not None:
                    better = (diff["mean"] < 0) == (metric in LOWER_IS_BETTER)
                    settled = abs(diff["mean"]) > diff["ci95"]
                    text = (f"{ours['mean']:.2f} vs {theirs['mean']:.2f}: {diff['mean']:+.2f} ± "
                            f"{diff['ci95']:.2f}, {'better' if better else 'worse'}"
                            + ("" if settled else " (not established)")
                            + f", {diff['wins']}/{diff['n']} items")
                else:
                    better = (ours["mean"] < theirs["mean"]) == (metric in LOWER_IS_BETTER)
                    settled = not (ours.get("ci95") is None or theirs.get("ci95") is None
                                   or abs(ours["mean"] - theirs["mean"]) <= ours["ci95"] + theirs["ci95"])
                    text = (f"{ours['mean']:.2f} vs {theirs['mean']:.2f}: {'better' if better else 'worse'}"
                            + ("" if settled else " (intervals overlap)"))
                cells.append(text)
                if metric == "visqol":
                    verdicts[name]["above" if better else "below"].append(cat)
                    if not settled:
                        verdicts[name]["open"].append(cat)
            rows.append(cells)
    if not rows:
        return []
    if paired:
        intro = ("Each neural system against the Opus baseline of the same nominal bitrate, on the "
                 "same items: means (ours vs Opus), then the mean per-item difference (ours minus "
                 "Opus) ± its 95 % interval, and the items where ours scores better. \"Not "
                 "established\": the difference's interval contains 0.")
    else:
        intro = ("Each neural system against the Opus baseline of the same nominal bitrate, by the "
                 "mean over the category's items (ours vs Opus).")
    lines = ["## Against Opus at the same bitrate", "", intro, ""]
    for name, v in verdicts.items():
        total = len(v["above"]) + len(v["below"])
        lines.append(f"- **{name}**: ViSQOL above Opus in {len(v['above'])} of {total} categories"
                     + (f" ({', '.join(v['above'])})" if v["above"] else "")
                     + (f"; **below in {', '.join(v['below'])}**" if v["below"] else "")
                     + (f"; not established in {', '.join(v['open'])}" if v["open"] else "") + ".")
    header = (["Category", "System", "Opus", "kbps (actual)"]
              + [METRIC_LABELS.get(m, m) for m in metrics])
    lines += ["", *_markdown_table(header, rows)]
    return lines + [""]


def write_report(out: Path, summary: dict, meta: dict, plots: dict[str, list[str]],
                 metrics: tp.Sequence[str], paired: dict | None = None) -> None:
    from .visqol import VISQOL_IMPLEMENTATION

    lines = [
        "# opencodec evaluation report", "",
        f"- Models: {', '.join(meta['models']) or '–'}; bandwidths: "
        f"{', '.join(f'{b:g}' for b in meta['bandwidths']) or 'model defaults'} kbps",
        f"- Baselines: {', '.join(meta['baselines']) or '–'}",
        f"- Eval set: `{meta['set']}`; max items per category: {meta['max_items'] or 'all'}",
        f"- Scoring: every item is converted to {meta['sample_rate']} Hz, {meta['channels']} "
        "channel(s) (channels first, then soxr resampling) before coding; every system codes that "
        "converted signal and is scored against it at that rate.",
        "- Neural systems: real `compress` -> `.ecdc` bytes -> `decompress` round trip; actual kbps "
        "from the `.ecdc` size (header included); RTF = (encode + decode wall time) / audio "
        "duration, CPU, 1 torch thread per worker.",
        f"- ViSQOL: {VISQOL_IMPLEMENTATION}; **audio mode at 48 kHz** for music/general "
        "categories, **speech mode at 16 kHz** for speech categories. PESQ (wide-band) and STOI "
        "on speech categories only.",
        "- Cells: mean ± 95 % confidence interval half-width (Student t over items); "
        "metrics undefined on an item (too short, silent, ...) are left out of that mean "
        "(see `errors` in results.jsonl).",
        f"- Items scored: {meta['n_rows']} rows in results.jsonl; wall time of this run: "
        f"{meta['wall_s']:.1f} s with {meta['workers']} worker(s) (a resumed run only "
        "computes the missing rows).",
        "",
    ]
    for cat, systems in summary.items():
        shown = [m for m in metrics if any(m in s["metrics"] for s in systems.values())]
        mode = next(iter(systems.values())).get("visqol_mode")
        lines += [f"## {cat}", "", f"ViSQOL mode: {mode}.", ""]
        header = ["System", "n", "kbps (actual)", "RTF"] + [METRIC_LABELS.get(m, m) for m in shown]
        digits = {"stoi": 3}
        lines += _markdown_table(header, (
            [name, str(s["n_items"]), _fmt(s["actual_kbps"]), _fmt(s["rtf"], 3)]
            + [_fmt(s["metrics"].get(m), digits.get(m, 2)) for m in shown]
            for name, s in systems.items()))
        lines.append("")
        for p in plots.get(cat, []):
            lines.append(f"![{cat} {Path(p).stem}]({p})")
        lines.append("")
    lines += versus_opus(summary, [m for m in metrics if m in ("si_snr", "mel", "visqol")], paired)
    (out / "report.md").write_text("\n".join(lines))


# ------------------------------------------------------------------------------------------
# Driver
# ------------------------------------------------------------------------------------------
def run_eval(models: tp.Sequence[str], bandwidths: tp.Sequence[float] | None,
             baselines: tp.Sequence[str], eval_set: str | os.PathLike[str], out: str | os.PathLike[str],
             categories: tp.Sequence[str] | None = None, max_items: int | None = None,
             metrics: tp.Sequence[str] = ALL_METRICS, workers: int = 1, quiet: bool = False,
             sample_rate: int = 24000, channels: int = 1) -> dict:
    """Run (or resume) an evaluation; returns the summary dict (also written to OUT)."""
    from tqdm import tqdm

    from ..data.dataset import load_manifests
    from ..identity import model_hash

    t_start = time.perf_counter()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    eval_set = Path(eval_set)
    bad = [m for m in metrics if m not in ALL_METRICS]
    if bad:
        raise EvalReportError(f"unknown metric(s) {bad}; choose from {list(ALL_METRICS)}")
    for b in baselines:
        parse_baseline(b)

    # Systems (load each model once here, for names / rates / bandwidths).
    systems: list[SystemSpec] = []
    if models:
        _init_worker(tuple(models), ())
        rates = set()
        for spec in models:
            m = _WORKER["models"][spec]
            rates.add((m.sample_rate, m.channels))
            bws = m.target_bandwidths if not bandwidths else [
                b for b in bandwidths if any(abs(b - t) < 1e-9 for t in m.target_bandwidths)]
            skipped = [b for b in (bandwidths or []) if b not in bws]
            if skipped and not quiet:
                print(f"opencodec eval: warning: {m.name} does not support {skipped} kbps "
                      f"(supports {m.target_bandwidths}); skipped", file=sys.stderr)
            for b in bws:
                systems.append(SystemSpec(neural_system_name(m.name, b), m.name, "neural",
                                          float(b), model=spec, weights=model_hash(m)))
        if len(rates) > 1:
            raise EvalReportError(f"models disagree on sample rate/channels: {sorted(rates)}")
        sample_rate, channels = rates.pop()
    for b in baselines:
        c = parse_baseline(b)
        systems.append(SystemSpec(c.name, c.name.split("-")[0], "baseline", float(c.nominal_kbps),
                                  baseline=b))
    names = [s.name for s in systems]
    if len(set(names)) != len(names):
        raise EvalReportError(f"duplicate system names: {names}")
    if not systems:
        raise EvalReportError("nothing to evaluate: give --models and/or --baselines")

    # Items.
    if categories is None:
        categories = [c for c in DEFAULT_CATEGORIES if (eval_set / f"eval_{c}.jsonl").exists()]
        if not categories:
            categories = sorted(p.stem[len("eval_"):] for p in eval_set.glob("eval_*.jsonl"))
    if not categories:
        raise EvalReportError(f"no eval_<category>.jsonl manifests under {eval_set}")
    results_path = out / "results.jsonl"
    # resumed by weights too: a model retrained under the same name is scored again
    done = {row_key(r) for r in read_results(results_path)}
    tasks = []
    for cat in categories:
        manifest = eval_set / f"eval_{cat}.jsonl"
        if not manifest.exists():
            raise EvalReportError(f"missing manifest {manifest}")
        rows = load_manifests(manifest)
        if max_items is not None:
            rows = rows[:max_items]
        for i, row in enumerate(rows):
            item_id = str(row.get("item_id") or Path(row["path"]).stem)
            todo = [s for s in systems if (cat, item_id, s.name, s.weights) not in done]
            if todo:
                tasks.append({"row": row, "category": cat, "item_id": item_id,
                              "sample_rate": sample_rate, "channels": channels,
                              "metrics": list(metrics), "systems": [s.__dict__ for s in todo]})

    model_specs = tuple(models)
    baseline_specs = tuple(baselines)
    bar = tqdm(total=len(tasks), desc="eval items", unit="item", disable=quiet, file=sys.stderr)
    with open(results_path, "a") as fh:
        def _write(rows: list[dict]) -> None:
            for r in rows:
                fh.write(json.dumps(r) + "\n")
            fh.flush()
            bar.update(1)

        if workers <= 1 or len(tasks) <= 1:
            if set(_WORKER.get("models", {})) != set(model_specs):
                _init_worker(model_specs, baseline_specs)
            _WORKER["baselines"] = {b: parse_baseline(b) for b in baseline_specs}
            for task in tasks:
                _write(evaluate_item(task))
        elif tasks:
            import multiprocessing as mp
            ctx = mp.get_context("spawn")
            with ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=_init_worker,
                                     initargs=(model_specs, baseline_specs)) as pool:
                futures = [pool.submit(evaluate_item, t) for t in tasks]
                for fut in as_completed(futures):
                    _write(fut.result())
    bar.close()

    wanted = {(s.name, s.weights) for s in systems}
    latest = {row_key(r): r for r in read_results(results_path)  # the last row of a key wins
              if r["category"] in categories and row_key(r)[2:] in wanted}
    all_rows = list(latest.values())
    summary = summarize(all_rows, metrics)
    meta = {
        "models": list(models), "bandwidths": list(bandwidths or []), "baselines": list(baselines),
        "set": str(eval_set), "categories": list(categories), "max_items": max_items,
        "metrics": list(metrics), "sample_rate": sample_rate, "channels": channels,
        "workers": workers, "n_rows": len(all_rows), "wall_s": time.perf_counter() - t_start,
        "visqol_modes": {c: visqol_mode(c) for c in categories},
    }
    from .visqol import VISQOL_IMPLEMENTATION
    meta["visqol_implementation"] = VISQOL_IMPLEMENTATION
    plots = make_plots(summary, out, metrics)
    paired = paired_versus_opus(all_rows, metrics)
    write_report(out, summary, meta, plots, metrics, paired)
    doc = {"meta": meta, "categories": summary, "plots": plots, "paired_versus_opus": paired}
    (out / "summary.json").write_text(json.dumps(doc, indent=2))
    return doc


def build_parser(prog: str = "opencodec eval") -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="*", default=[], metavar="NAME_OR_PATH",
                   help="neural model names or weight files")
    p.add_argument("--bandwidths", nargs="*", type=bandwidth_arg, default=None, metavar="KBPS",
                   help="bandwidths for the models (default: each model's own)")
    p.add_argument("--baselines", nargs="*", default=[], metavar="SPEC",
                   help="baselines: opusN, mp3_N (e.g. opus6 opus12 opus24 mp3_64)")
    p.add_argument("--set", dest="eval_set", required=True, metavar="DIR",
                   help="folder with eval_<category>.jsonl manifests")
    p.add_argument("--categories", nargs="*", default=None,
                   help="categories (default: all eval_*.jsonl found)")
    p.add_argument("--max-items", type=positive_int, default=None, metavar="N", help="first N items per category")
    p.add_argument("--metrics", nargs="*", default=list(ALL_METRICS), choices=ALL_METRICS)
    p.add_argument("--out", required=True, metavar="DIR", help="output folder (resumable)")
    p.add_argument("--workers", type=positive_int, default=1, help="worker processes (1 torch thread each)")
    p.add_argument("--sample-rate", type=positive_int, default=24000,
                   help="scoring rate when no model is given (default 24000)")
    p.add_argument("--channels", type=positive_int, default=1, help="scoring channels when no model is given")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    return p


def main(argv: list[str] | None = None, prog: str = "opencodec eval") -> int:
    import torch

    torch.set_num_threads(1)
    args = build_parser(prog).parse_args(argv)
    try:
        doc = run_eval(args.models, args.bandwidths, args.baselines, args.eval_set, args.out,
                       categories=args.categories, max_items=args.max_items, metrics=args.metrics,
                       workers=args.workers, quiet=args.quiet, sample_rate=args.sample_rate,
                       channels=args.channels)
    except (EvalReportError, OSError) as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return 1
    if not args.quiet:
        print(f"wrote {Path(args.out) / 'report.md'} ({doc['meta']['n_rows']} rows)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(prog="python -m opencodec.eval.report"))
