"""Rate-quality evaluation report: score neural codecs and classic baselines on eval sets.

::

    opencodec eval --models opencodec_24khz --bandwidths 1.5 3 6 12 \\
        --baselines opus6 opus12 opus24 mp3_64 --set data/small_24k/manifests \\
        [--categories clean_speech music ...] [--max-items N] [--metrics si_snr mel ...] \\
        --out reports/NAME [-f] [--workers N] [-q]

(also ``python -m opencodec.eval.report ...``).

Protocol
--------
* Every item of ``SET/eval_<category>.jsonl`` is read and converted to the **scoring rate
  and channels** (those of the first ``--models`` entry; all models must agree; without
  models ``--sample-rate``/``--channels``, default 24 kHz mono), channels first, then soxr
  resampling (:class:`opencodec.data.dataset.EvalDataset`). This converted signal is the
  input of every system *and* the reference every output is scored against. An item whose
  file cannot be read is skipped with a warning (also with ``-q``) and listed under
  "Skipped items" in ``report.md`` and ``meta.skipped`` in ``summary.json``; when no item
  can be scored the run fails. An empty manifest is an error when its category is named
  by ``--categories``, else skipped with a note; a set with only empty manifests is an error.
* Neural systems: a real ``compress`` -> ``.ecdc`` bytes -> ``decompress`` round trip at each
  bandwidth the model supports (a requested bandwidth a model does not support is skipped
  with a warning, also with ``-q``, and stated in ``report.md``); actual kbps =
  ``8 * len(ecdc bytes) / duration / 1000`` (header included); real-time factor = (encode +
  decode wall time) / duration, measured in the worker with one torch thread on CPU. Two
  models with the same name but other weights (two checkpoints of one config) are named
  ``NAME#<first 8 digits of the weights hash>``.
* Baselines (``opusN``, ``mp3_N``; Opus 6..510 and MP3 8..320 kbit/s, checked before any
  work): :meth:`Codec.roundtrip` on the converted signal; actual kbps as reported by the
  baseline (payload bits, no container). ``report.md`` states both ways of measuring.
* Metrics: ``si_snr`` (dB), ``mel`` and ``stft`` distances (lower is better), ``visqol``
  (audio mode at 48 kHz for music/general, speech mode at 16 kHz for categories whose name
  contains ``speech``), ``pesq`` (wide-band) and ``stoi`` for speech categories only. A
  metric that fails on an item (clip too short, silence, ...) is stored as ``null`` with the
  reason under ``errors`` and left out of that metric's mean.
* ``OUT/results.jsonl`` gets one row per (category, item, system) as soon as it is scored,
  with the hash of the item's file (``item_sha256``), the metrics it was asked for
  (``scored_metrics``) and, for a neural system, its model's weights hash
  (``weights_sha256``). ``--out`` must be a new or empty folder or an earlier eval output
  (one with ``results.jsonl``), which is resumed; any other folder needs ``-f``. A rerun
  reuses a row only when everything matches this request: category, item id and file hash,
  system name and weights hash, scoring rate and channels, and the row holds every metric
  asked for now (else the row is scored again with this run's metrics; of several matching
  rows the last wins). So a model retrained under the same name, another eval set whose
  items share ids, or a newly asked metric is scored again. Rows without a file hash or a
  weights hash (written by earlier versions) are stale: they match no item or model. The
  report (``OUT/summary.json``, ``OUT/report.md``, ``OUT/plots/<category>_<metric>.png``) is
  rebuilt from exactly this request's rows: rows of other runs into the same folder stay in
  ``results.jsonl`` but are not reported. A last line cut short by a killed run is dropped
  with a warning (its row is scored again); any other line that is not a result row is an
  error naming the line.
* Mean and 95 % confidence interval (Student t, half-width) per metric.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
import typing as tp
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

from .._files import error_reason, output_folder, write_bytes_atomic
from ..argtypes import bandwidth_arg, positive_int
from ..bandwidth import check_bandwidth, format_kbps
from ..errors import OpenCodecError, UnsupportedBandwidthError
from .report_writer import make_plots, versus_opus, write_report
from .scoring import (_WORKER, ItemReadError, _init_pool_worker, _init_worker, _neural_roundtrip,
                      evaluate_item, score)
from .summary import mean_ci95, paired_versus_opus, read_results, repair_results, summarize
from .systems import (ALL_METRICS, DEFAULT_CATEGORIES, ITEM_KEY, LOWER_IS_BETTER, METRIC_LABELS,
                      SCORED_KEY, SPEECH_ONLY_METRICS, WEIGHTS_KEY, EvalReportError, SystemSpec,
                      is_speech_category, metrics_for, neural_system_name, parse_baseline, row_key,
                      row_scored_metrics, visqol_mode)

__all__ = [
    # defined here: the driver and the command line
    "run_eval", "build_parser", "main",
    # re-exported from the modules that define them (.systems, .scoring, .summary, .report_writer)
    "ALL_METRICS", "DEFAULT_CATEGORIES", "LOWER_IS_BETTER", "METRIC_LABELS", "SPEECH_ONLY_METRICS",
    "WEIGHTS_KEY", "ITEM_KEY", "SCORED_KEY", "EvalReportError", "ItemReadError", "SystemSpec",
    "is_speech_category", "metrics_for", "neural_system_name", "parse_baseline", "row_key",
    "row_scored_metrics", "visqol_mode", "evaluate_item", "score", "_neural_roundtrip",
    "mean_ci95", "paired_versus_opus", "read_results", "repair_results", "summarize",
    "make_plots", "versus_opus", "write_report",
]


# ------------------------------------------------------------------------------------------
# Driver
# ------------------------------------------------------------------------------------------
PROG = "opencodec eval"
RESULTS_FILE = "results.jsonl"


def _warn(message: str) -> None:
    """Print ``opencodec eval: warning: MESSAGE`` on stderr (also with ``-q``, which hides the
    progress bar only), above a progress bar that may be showing."""
    from tqdm import tqdm

    tqdm.write(f"{PROG}: warning: {message}", file=sys.stderr)


def _kbps_list(bandwidths: tp.Iterable[float]) -> str:
    """``[1.5, 3.0]`` -> ``'1.5, 3'``."""
    return ", ".join(format_kbps(float(b)) for b in bandwidths)


def _supported_bandwidths() -> str:
    """``'NAME supports 1.5, 3, 6, 12; ...'`` for the models loaded in this process."""
    return "; ".join(f"{m.name} supports {_kbps_list(m.target_bandwidths)}"
                     for m in _WORKER["models"].values())


def _model_labels(models: tp.Sequence[str], hashes: dict[str, str]) -> dict[str, str]:
    """``{spec: label}``: each loaded model's name, with ``#`` and its weights hash's first 8
    digits when another model of ``models`` has the same name but other weights (two
    checkpoints of one config), so that every system name is unique."""
    by_name: dict[str, set[str]] = {}
    for spec in models:
        by_name.setdefault(_WORKER["models"][spec].name, set()).add(hashes[spec])
    labels = {}
    for spec in models:
        name = _WORKER["models"][spec].name
        labels[spec] = name if len(by_name[name]) == 1 else f"{name}#{hashes[spec][:8]}"
    return labels


def _neural_systems(models: tp.Sequence[str], bandwidths: tp.Sequence[float] | None
                    ) -> tuple[list[SystemSpec], tuple[int, int] | None, list[str]]:
    """Load ``models`` (in this process, raising ``ModelLoadError`` for a bad name or missing
    weights) and return their systems, one per requested bandwidth the model supports (each
    model's own bandwidths without ``bandwidths``), the models' common (sample rate,
    channels) (``None`` without models) and a note per model that skips a requested
    bandwidth it does not support (also printed as a warning, even with ``-q``)."""
    from ..identity import model_hash

    if not models:
        return [], None, []
    _init_worker(tuple(models), ())
    hashes = {spec: model_hash(_WORKER["models"][spec]) for spec in models}
    labels = _model_labels(models, hashes)
    systems: list[SystemSpec] = []
    notes: list[str] = []
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
        if skipped:
            notes.append(f"{labels[spec]} does not support {_kbps_list(skipped)} kbps "
                         f"(supports {_kbps_list(m.target_bandwidths)}); skipped")
            _warn(notes[-1])
        for b in bws:
            systems.append(SystemSpec(neural_system_name(labels[spec], b), labels[spec], "neural",
                                      float(b), model=spec, weights=hashes[spec]))
    if len(rates) > 1:
        raise EvalReportError(f"models disagree on sample rate/channels: {sorted(rates)}")
    return systems, rates.pop(), notes


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


def _list_items(eval_set: Path, categories: list[str], chosen: bool,
                max_items: int | None) -> dict[str, list[dict]]:
    """``{category: [manifest row, ...]}`` (the first ``max_items`` of each). A category whose
    manifest lists no item is an ``EvalReportError`` when ``chosen`` (named by
    ``--categories``), else skipped with a note; a set whose manifests are all empty is an
    ``EvalReportError`` too."""
    from ..data.dataset import load_manifests

    items: dict[str, list[dict]] = {}
    for cat in categories:
        manifest = eval_set / f"eval_{cat}.jsonl"
        rows = load_manifests(manifest)
        if not rows:
            if chosen:
                raise EvalReportError(f"{manifest} lists no items (category {cat!r})")
            print(f"note: {manifest} is empty; category {cat!r} skipped", file=sys.stderr)
            continue
        items[cat] = rows[:max_items] if max_items is not None else rows
    if not items:
        raise EvalReportError(f"every eval_<category>.jsonl manifest under {eval_set} is empty")
    return items


def _item_id(row: dict) -> str:
    """A manifest row's item id (its ``item_id``, else its file's stem)."""
    return str(row.get("item_id") or Path(row["path"]).stem)


def _file_sha256(path: str) -> str:
    """The first 16 hex digits of the sha256 of the file's bytes (``OSError`` if unreadable)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()[:16]


def _identify_items(items: dict[str, list[dict]]) -> tuple[list[dict], list[dict]]:
    """``(readable, skipped)``: every item as ``{category, item_id, row, sha}`` (its file's
    hash, part of the resume key), and ``{category, item_id, path, error}`` for each whose
    file cannot be opened (warned about now; the run goes on without it)."""
    readable, skipped = [], []
    for cat, rows in items.items():
        for row in rows:
            item_id = _item_id(row)
            try:
                readable.append({"category": cat, "item_id": item_id, "row": row,
                                 "sha": _file_sha256(row["path"])})
            except OSError as exc:
                skipped.append(_skip(cat, item_id, row["path"], error_reason(exc)))
    return readable, skipped


def _skip(category: str, item_id: str, path: str, reason: str) -> dict:
    """Warn that an item is skipped because its file cannot be read (also with ``-q``) and
    return its record for the report: ``{category, item_id, path, error}``."""
    _warn(f"skipping item {item_id!r} of {category}: cannot read {path}: {reason}")
    return {"category": category, "item_id": item_id, "path": path, "error": reason}


def _check_out(out: Path, force: bool) -> None:
    """Refuse an ``--out`` that is a file, or a non-empty folder that is not an eval output
    folder (no ``results.jsonl``) unless ``force``; an eval output folder is resumed."""
    if out.exists() and not out.is_dir():
        raise EvalReportError(f"--out {out} exists and is not a folder")
    if out.is_dir() and not (out / RESULTS_FILE).exists() and any(out.iterdir()) and not force:
        raise EvalReportError(f"--out {out} is not empty and holds no eval results ({RESULTS_FILE}); "
                              "use a new or empty folder, or -f/--force to write the report into "
                              "it (report.md, summary.json, plots/ are replaced)")


def _check_baselines(baselines: tp.Sequence[str], sample_rate: int, channels: int) -> None:
    """Code 0.1 s of silence with each baseline at the scoring rate and channels, so that a
    baseline its encoder cannot run there fails now with one line, not on every item."""
    import numpy as np

    from .baselines import BaselineError

    silence = np.zeros((channels, max(1, sample_rate // 10)), dtype=np.float32)
    for spec in baselines:
        try:
            parse_baseline(spec).roundtrip(silence, sample_rate)
        except BaselineError as exc:
            raise EvalReportError(f"baseline {spec!r} cannot code {sample_rate} Hz, {channels} "
                                  f"channel(s): {exc}") from None


def _pick_rows(rows: tp.Iterable[dict], items: tp.Sequence[dict], systems: tp.Sequence[SystemSpec],
               metrics: tp.Sequence[str], sample_rate: int, channels: int) -> dict[tuple, dict]:
    """The rows of this request, by :func:`row_key`: an item asked for (same category, id and
    file hash), a system asked for (same name and weights hash), the same scoring rate and
    channels, and every asked metric that applies to the category computed. Of several rows
    with one key, the last wins."""
    wanted_items = {(it["category"], it["item_id"], it["sha"]) for it in items}
    wanted_systems = {(s.name, s.weights) for s in systems}
    picked: dict[tuple, dict] = {}
    for r in rows:
        key = row_key(r)
        category, item_id, sha, system, weights, rate, chans = key
        if ((category, item_id, sha) in wanted_items and (system, weights) in wanted_systems
                and (rate, chans) == (sample_rate, channels)
                and set(metrics_for(category, metrics)) <= row_scored_metrics(r)):
            picked[key] = r
    return picked


class _ResultsFile:
    """Appends result rows to ``OUT/results.jsonl``, one flushed line each; the folder and the
    file are only created with the first row (a run where every item fails writes nothing)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fh: tp.TextIO | None = None

    def write(self, rows: list[dict]) -> None:
        """Append ``rows``."""
        if not rows:
            return
        if self._fh is None:
            output_folder(self.path.parent, "--out")
            self._fh = open(self.path, "a")
        for r in rows:
            self._fh.write(json.dumps(r) + "\n")
        self._fh.flush()

    def close(self) -> None:
        """Close the file if it was opened."""
        if self._fh is not None:
            self._fh.close()
            self._fh = None


def _run_tasks(tasks: list[dict], results: _ResultsFile, models: tuple[str, ...],
               baselines: tuple[str, ...], workers: int, quiet: bool) -> list[dict]:
    """Score ``tasks`` (in this process, or ``workers`` processes), appending each item's rows
    as soon as they are ready; returns the items skipped because their audio cannot be read.
    On Ctrl-C (or any error) the worker processes are stopped at once."""
    from ..progress import progress_bar

    skipped: list[dict] = []
    bar = progress_bar(total=len(tasks), desc="eval items", unit="item", disable=quiet, file=sys.stderr)

    def done(task: dict, get_rows: tp.Callable[[], list[dict]]) -> None:
        try:
            results.write(get_rows())
        except ItemReadError as exc:
            skipped.append(_skip(task["category"], task["item_id"], exc.path, exc.reason))
        bar.update(1)

    try:
        if workers <= 1 or len(tasks) <= 1:
            if set(_WORKER.get("models", {})) != set(models):
                _init_worker(models, baselines)
            _WORKER["baselines"] = {b: parse_baseline(b) for b in baselines}
            for task in tasks:
                done(task, lambda task=task: evaluate_item(task))
        elif tasks:
            import multiprocessing as mp
            pool = ProcessPoolExecutor(max_workers=workers, mp_context=mp.get_context("spawn"),
                                       initializer=_init_pool_worker, initargs=(models, baselines))
            try:
                futures = {pool.submit(evaluate_item, t): t for t in tasks}
                for fut in as_completed(futures):
                    done(futures[fut], fut.result)
            except BaseException:
                pool.shutdown(wait=False, cancel_futures=True)
                for process in list((getattr(pool, "_processes", None) or {}).values()):
                    process.terminate()
                raise
            pool.shutdown()
    finally:
        bar.close()
        results.close()
    return skipped


def run_eval(models: tp.Sequence[str], bandwidths: tp.Sequence[float] | None,
             baselines: tp.Sequence[str], eval_set: str | os.PathLike[str], out: str | os.PathLike[str],
             categories: tp.Sequence[str] | None = None, max_items: int | None = None,
             metrics: tp.Sequence[str] = ALL_METRICS, workers: int = 1, quiet: bool = False,
             sample_rate: int = 24000, channels: int = 1, force: bool = False) -> dict:
    """Run (or resume) an evaluation; returns the summary dict (also written to OUT).

    Everything that can be checked is checked before the models are loaded and before any
    output: metrics, baselines, ``out`` (a non-empty folder that is not an eval output needs
    ``force``), the categories and their items. An item whose audio cannot be read is
    skipped with a warning and listed in the report; ``EvalReportError`` when no item at all
    can be scored. The report covers exactly this request's items, systems and metrics."""
    t_start = time.perf_counter()
    out = Path(out)
    eval_set = Path(eval_set)
    bad = [m for m in metrics if m not in ALL_METRICS]
    if bad:
        raise EvalReportError(f"unknown metric(s) {bad}; choose from {list(ALL_METRICS)}")
    for b in baselines:
        parse_baseline(b)
    _check_out(out, force)

    # checked before the models are loaded (which may download weights) and before any output
    chosen = categories is not None
    categories = _categories(eval_set, categories)
    manifest_items = _list_items(eval_set, categories, chosen, max_items)
    categories = list(manifest_items)
    results_path = out / RESULTS_FILE
    previous, repaired = repair_results(results_path)
    if repaired:
        _warn(repaired)

    # Systems (each model loaded once here, before any output or worker: a bad name fails now).
    systems, rate, bandwidth_notes = _neural_systems(models, bandwidths)
    if rate is not None:
        sample_rate, channels = rate
    if models and not systems and not baselines:
        raise EvalReportError(f"nothing to evaluate: no model supports the requested bandwidths "
                              f"{_kbps_list(bandwidths or [])}; {_supported_bandwidths()}")
    _check_baselines(baselines, sample_rate, channels)
    for b in baselines:
        c = parse_baseline(b)
        systems.append(SystemSpec(c.name, c.name.split("-")[0], "baseline", float(c.nominal_kbps),
                                  baseline=b))
    names = [s.name for s in systems]
    if len(set(names)) != len(names):
        twice = sorted({n for n in names if names.count(n) > 1})
        raise EvalReportError(f"duplicate systems {twice}: the same model or baseline is given twice")
    if not systems:
        raise EvalReportError("nothing to evaluate: give --models and/or --baselines")

    # Items: resumed by item file, system, weights, scoring format and metrics
    items, skipped = _identify_items(manifest_items)
    done = _pick_rows(previous, items, systems, metrics, sample_rate, channels)
    tasks = []
    for it in items:
        todo = [s for s in systems if (it["category"], it["item_id"], it["sha"], s.name, s.weights,
                                       sample_rate, channels) not in done]
        if todo:
            tasks.append({"row": it["row"], "category": it["category"], "item_id": it["item_id"],
                          "item_sha256": it["sha"], "sample_rate": sample_rate, "channels": channels,
                          "metrics": list(metrics), "systems": [s.__dict__ for s in todo]})
    skipped += _run_tasks(tasks, _ResultsFile(results_path), tuple(models), tuple(baselines),
                          workers, quiet)

    all_rows = list(_pick_rows(read_results(results_path), items, systems, metrics,
                               sample_rate, channels).values())
    if not all_rows:
        first = skipped[0] if skipped else None
        raise EvalReportError(f"no item of {eval_set} could be scored: all {len(skipped)} were "
                              "skipped" + (f" (first: {first['path']}: {first['error']})"
                                           if first else ""))
    summary = summarize(all_rows, metrics)
    meta = {
        "models": list(models), "bandwidths": list(bandwidths or []), "baselines": list(baselines),
        "set": str(eval_set), "categories": list(categories), "max_items": max_items,
        "metrics": list(metrics), "sample_rate": sample_rate, "channels": channels,
        "workers": workers, "n_rows": len(all_rows), "wall_s": time.perf_counter() - t_start,
        "visqol_modes": {c: visqol_mode(c) for c in categories},
        "skipped_bandwidths": bandwidth_notes, "skipped": skipped,
    }
    from .visqol import VISQOL_IMPLEMENTATION
    meta["visqol_implementation"] = VISQOL_IMPLEMENTATION
    plots = make_plots(summary, out, metrics)
    paired = paired_versus_opus(all_rows, metrics)
    write_report(out, summary, meta, plots, metrics, paired)
    doc = {"meta": meta, "categories": summary, "plots": plots, "paired_versus_opus": paired}
    write_bytes_atomic(out / "summary.json", json.dumps(doc, indent=2).encode())
    return doc


def build_parser(prog: str = PROG) -> argparse.ArgumentParser:
    """The ``opencodec eval`` command line."""
    p = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="*", default=[], metavar="NAME_OR_PATH",
                   help="neural model names or weight files (two checkpoints of one config are "
                        "told apart by NAME#<weights hash>)")
    p.add_argument("--bandwidths", nargs="*", type=bandwidth_arg, default=None, metavar="KBPS",
                   help="bandwidths for the models (default: each model's own; one a model does "
                        "not support is skipped for it with a warning)")
    p.add_argument("--baselines", nargs="*", default=[], metavar="SPEC",
                   help="baselines: opusN (6..510), mp3_N (8..320) (e.g. opus6 opus12 opus24 mp3_64)")
    p.add_argument("--set", dest="eval_set", required=True, metavar="DIR",
                   help="folder with eval_<category>.jsonl manifests")
    p.add_argument("--categories", nargs="*", default=None,
                   help="categories (default: all eval_*.jsonl found)")
    p.add_argument("--max-items", type=positive_int, default=None, metavar="N", help="first N items per category")
    p.add_argument("--metrics", nargs="*", default=list(ALL_METRICS), choices=ALL_METRICS)
    p.add_argument("--out", required=True, metavar="DIR",
                   help="output folder: new, empty, or an earlier eval output (with results.jsonl), "
                        "which is resumed: only missing rows are computed, and the report covers "
                        "exactly this run's items, systems and metrics")
    p.add_argument("-f", "--force", action="store_true",
                   help="write into a non-empty --out folder that is not an eval output "
                        "(its report.md, summary.json and plots/ are replaced)")
    p.add_argument("--workers", type=positive_int, default=1, help="worker processes (1 torch thread each)")
    p.add_argument("--sample-rate", type=positive_int, default=24000,
                   help="scoring rate when no model is given (default 24000)")
    p.add_argument("--channels", type=positive_int, default=1, help="scoring channels when no model is given")
    p.add_argument("-q", "--quiet", action="store_true",
                   help="no progress bar (warnings, such as skipped items or bandwidths, still show)")
    return p


def main(argv: list[str] | None = None, prog: str = PROG) -> int:
    """Run ``opencodec eval`` with ``argv``. Exit status: 0 success, 1 failure (one line
    ``opencodec eval: error: ...``), 2 usage (including a baseline the encoders do not take),
    130 interrupted (the rows written so far are kept: rerun the command to resume)."""
    import torch

    torch.set_num_threads(1)
    args = build_parser(prog).parse_args(argv)
    try:
        for spec in args.baselines:
            parse_baseline(spec)
    except EvalReportError as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return 2
    try:
        doc = run_eval(args.models, args.bandwidths, args.baselines, args.eval_set, args.out,
                       categories=args.categories, max_items=args.max_items, metrics=args.metrics,
                       workers=args.workers, quiet=args.quiet, sample_rate=args.sample_rate,
                       channels=args.channels, force=args.force)
    except (EvalReportError, OpenCodecError, OSError) as exc:  # bad input, model, weights: one line
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{prog}: error: interrupted (the rows already scored are kept in "
              f"{Path(args.out) / RESULTS_FILE}; rerun the same command to resume)", file=sys.stderr)
        return 130
    if not args.quiet:
        print(f"wrote {Path(args.out) / 'report.md'} ({doc['meta']['n_rows']} rows)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(prog="python -m opencodec.eval.report"))
