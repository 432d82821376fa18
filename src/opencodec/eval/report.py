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
import os
import sys
import time
import typing as tp
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

from ..argtypes import bandwidth_arg, positive_int
from ..bandwidth import check_bandwidth, format_kbps
from ..errors import OpenCodecError, UnsupportedBandwidthError
from .report_writer import make_plots, versus_opus, write_report
from .scoring import _WORKER, _init_worker, _neural_roundtrip, evaluate_item, score
from .summary import mean_ci95, paired_versus_opus, read_results, summarize
from .systems import (ALL_METRICS, DEFAULT_CATEGORIES, LOWER_IS_BETTER, METRIC_LABELS,
                      SPEECH_ONLY_METRICS, WEIGHTS_KEY, EvalReportError, SystemSpec,
                      is_speech_category, neural_system_name, parse_baseline, row_key, visqol_mode)

__all__ = [
    # defined here: the driver and the command line
    "run_eval", "build_parser", "main",
    # re-exported from the modules that define them (.systems, .scoring, .summary, .report_writer)
    "ALL_METRICS", "DEFAULT_CATEGORIES", "LOWER_IS_BETTER", "METRIC_LABELS", "SPEECH_ONLY_METRICS",
    "WEIGHTS_KEY", "EvalReportError", "SystemSpec", "is_speech_category", "neural_system_name",
    "parse_baseline", "row_key", "visqol_mode", "evaluate_item", "score", "_neural_roundtrip",
    "mean_ci95", "paired_versus_opus", "read_results", "summarize", "make_plots", "versus_opus",
    "write_report",
]


# ------------------------------------------------------------------------------------------
# Driver
# ------------------------------------------------------------------------------------------
def _kbps_list(bandwidths: tp.Iterable[float]) -> str:
    """``[1.5, 3.0]`` -> ``'1.5, 3'``."""
    return ", ".join(format_kbps(float(b)) for b in bandwidths)


def _supported_bandwidths() -> str:
    """``'NAME supports 1.5, 3, 6, 12; ...'`` for the models loaded in this process."""
    return "; ".join(f"{m.name} supports {_kbps_list(m.target_bandwidths)}"
                     for m in _WORKER["models"].values())


def _neural_systems(models: tp.Sequence[str], bandwidths: tp.Sequence[float] | None,
                    quiet: bool) -> tuple[list[SystemSpec], tuple[int, int] | None]:
    """Load ``models`` (in this process, raising ``ModelLoadError`` for a bad name or missing
    weights) and return their systems, one per requested bandwidth the model supports (each
    model's own bandwidths without ``bandwidths``), with the models' common (sample rate,
    channels), ``None`` without models. An unsupported bandwidth is skipped with a warning."""
    from ..identity import model_hash

    if not models:
        return [], None
    _init_worker(tuple(models), ())
    systems: list[SystemSpec] = []
    rates = set()
    for spec in models:
        m = _WORKER["models"][spec]
        rates.add((m.sample_rate, m.channels))
        bws, skipped = list(m.target_bandwidths), []
        if bandwidths:
            bws = []
            for b in bandwidths:
                try:
                    bws.append(check_bandwidth(b, m.target_bandwidths, m.name))
                except UnsupportedBandwidthError:
                    skipped.append(b)
        if skipped and not quiet:
            print(f"opencodec eval: warning: {m.name} does not support {_kbps_list(skipped)} kbps "
                  f"(supports {_kbps_list(m.target_bandwidths)}); skipped", file=sys.stderr)
        for b in bws:
            systems.append(SystemSpec(neural_system_name(m.name, b), m.name, "neural",
                                      float(b), model=spec, weights=model_hash(m)))
    if len(rates) > 1:
        raise EvalReportError(f"models disagree on sample rate/channels: {sorted(rates)}")
    return systems, rates.pop()


def _categories(eval_set: Path, categories: tp.Sequence[str] | None) -> list[str]:
    """The categories to evaluate (by default those of :data:`DEFAULT_CATEGORIES` with a
    manifest under ``eval_set``, else every ``eval_*.jsonl`` there); ``EvalReportError`` when
    there is none or one of the ``categories`` asked for has no manifest."""
    if categories is None:
        categories = [c for c in DEFAULT_CATEGORIES if (eval_set / f"eval_{c}.jsonl").exists()]
        if not categories:
            categories = sorted(p.stem[len("eval_"):] for p in eval_set.glob("eval_*.jsonl"))
    if not categories:
        raise EvalReportError(f"no eval_<category>.jsonl manifests under {eval_set}")
    missing = [str(eval_set / f"eval_{c}.jsonl") for c in categories
               if not (eval_set / f"eval_{c}.jsonl").exists()]
    if missing:
        raise EvalReportError(f"missing manifest(s) {', '.join(missing)}")
    return list(categories)


def run_eval(models: tp.Sequence[str], bandwidths: tp.Sequence[float] | None,
             baselines: tp.Sequence[str], eval_set: str | os.PathLike[str], out: str | os.PathLike[str],
             categories: tp.Sequence[str] | None = None, max_items: int | None = None,
             metrics: tp.Sequence[str] = ALL_METRICS, workers: int = 1, quiet: bool = False,
             sample_rate: int = 24000, channels: int = 1) -> dict:
    """Run (or resume) an evaluation; returns the summary dict (also written to OUT)."""
    from ..data.dataset import load_manifests
    from ..progress import progress_bar

    t_start = time.perf_counter()
    out = Path(out)
    eval_set = Path(eval_set)
    bad = [m for m in metrics if m not in ALL_METRICS]
    if bad:
        raise EvalReportError(f"unknown metric(s) {bad}; choose from {list(ALL_METRICS)}")
    for b in baselines:
        parse_baseline(b)

    # checked before the models are loaded (which may download weights) and before any output
    categories = _categories(eval_set, categories)

    # Systems (each model loaded once here, before any output or worker: a bad name fails now).
    systems, rate = _neural_systems(models, bandwidths, quiet)
    if rate is not None:
        sample_rate, channels = rate
    if models and not systems and not baselines:
        raise EvalReportError(f"nothing to evaluate: no model supports the requested bandwidths "
                              f"{_kbps_list(bandwidths or [])}; {_supported_bandwidths()}")
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
    results_path = out / "results.jsonl"
    # resumed by weights too: a model retrained under the same name is scored again
    done = {row_key(r) for r in read_results(results_path)}
    tasks = []
    for cat in categories:
        rows = load_manifests(eval_set / f"eval_{cat}.jsonl")
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
    out.mkdir(parents=True, exist_ok=True)
    bar = progress_bar(total=len(tasks), desc="eval items", unit="item", disable=quiet, file=sys.stderr)
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
    except (EvalReportError, OpenCodecError, OSError) as exc:  # bad input, model, weights: one line
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return 1
    if not args.quiet:
        print(f"wrote {Path(args.out) / 'report.md'} ({doc['meta']['n_rows']} rows)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(prog="python -m opencodec.eval.report"))
