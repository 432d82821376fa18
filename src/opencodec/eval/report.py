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
  models ``--sample-rate``/``--channels``, default 24 kHz mono), soxr resampling first, then
  the channels (:class:`opencodec.data.dataset.EvalDataset`). This converted signal is the
  input of every system *and* the reference every output is scored against. An item whose
  file cannot be read, whose audio holds NaN or infinite samples, or whose channels convert
  to the scoring channels only by a guess (neither the same count nor a mono down- or up-mix:
  a 5.1 file scored in stereo), is skipped with a warning (also with ``-q``) and listed under
  "Skipped items" in ``report.md`` and
  ``meta.skipped`` in ``summary.json``; when no item can be scored the run fails. An empty
  manifest is an error when its category is named by ``--categories``, else skipped with a
  note and stated in ``report.md`` and ``meta.empty_categories``; a set with only empty
  manifests is an error. Two rows of one manifest with the same item id (``item_id``, else
  the file's stem) are an error naming them. ``--sample-rate`` is 8000..192000 Hz and, with
  ``--channels``, only taken without ``--models``.
* A system whose codec fails on an item (an exception while coding) is warned about, its row
  is stored with the reason under ``errors.codec`` but left out of every table and of ``n``,
  listed under "Codec failures" in ``report.md`` (``meta.codec_failures``), and coded again
  by a rerun (such rows are never reused).
* Neural systems: a real ``compress`` -> ``.ecdc`` bytes -> ``decompress`` round trip at each
  bandwidth the model supports (a requested bandwidth a model does not support is skipped
  with a warning, also with ``-q``, and stated in ``report.md``); actual kbps =
  ``8 * len(ecdc bytes) / duration / 1000`` (header included); real-time factor = (encode +
  decode wall time) / duration, measured in the worker with one torch thread on CPU. A
  system's kbps and RTF in a category are totals over total duration (bits, wall seconds),
  not plain means of the per-item ratios (:func:`opencodec.eval.summary.rate_kbps`,
  :func:`opencodec.eval.summary.rtf_total`). Two
  models with the same name but other weights (two checkpoints of one config) are named
  ``NAME#<first 8 digits of the weights hash>``.
* Baselines (``opusN``, ``mp3_N``; checked before any work: Opus 6..256 kbit/s per channel,
  MP3 a bitrate LAME codes at the scoring rate, e.g. 8..160 in its steps at 16-24 kHz): :meth:`Codec.roundtrip` on the converted signal; actual kbps as reported by the
  baseline (payload bits, no container). ``report.md`` states both ways of measuring.
* Metrics: ``si_snr`` (dB), ``mel`` and ``stft`` distances (lower is better), ``visqol``
  (audio mode at 48 kHz for music/general, speech mode at 16 kHz for categories whose name
  contains ``speech``), ``pesq`` (wide-band, at scoring rates of 16 kHz or more) and
  ``stoi`` for speech categories only. A metric that fails on an item (clip too short,
  silence, ...) is stored as ``null`` with the reason under ``errors`` and left out of that
  metric's mean; the ``report.md`` cell then says over how many items it is taken, ``(n=K)``.
  A decoded output that is digital silence has no PESQ (undefined); such rows are marked
  ``decoded_silent`` and named under their category's table and in ``meta.silent_decoded``,
  since leaving them out raises the system's mean.
  ``report.md`` and ``summary.json`` (``meta.model_weights``) name each model's system name
  and weights hash.
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

import json
import os
import sys
import time
import typing as tp
from pathlib import Path

from .._files import write_bytes_atomic
from .cli import EVAL_RATE_RANGE, build_parser, run_command
from .console import PROG, warn
from .items import choose_categories, identify_items, list_items
from .lineup import build_systems
from .report_writer import make_plots, versus_opus, write_report
from .results_file import (RESULTS_FILE, ResultsFile, check_out, codec_failed, pick_rows,
                           read_results, repair_results)
from .scoring import ItemReadError, evaluate_item, neural_roundtrip, score
from .summary import mean_ci95, paired_versus_opus, silent_left_out, summarize
from .systems import (ALL_METRICS, DEFAULT_CATEGORIES, ITEM_KEY, LOWER_IS_BETTER, METRIC_LABELS,
                      SCORED_KEY, SPEECH_ONLY_METRICS, WEIGHTS_KEY, EvalReportError, SystemSpec,
                      is_speech_category, metrics_for, neural_system_name, parse_baseline, row_key,
                      row_scored_metrics, visqol_mode)
from .workers import pending_tasks, run_tasks

__all__ = [
    # defined here: the driver and the entry point of the command line
    "run_eval", "main",
    # re-exported from the modules that define them (.cli, .systems, .scoring, .results_file,
    # .summary, .report_writer)
    "build_parser",
    "ALL_METRICS", "DEFAULT_CATEGORIES", "LOWER_IS_BETTER", "METRIC_LABELS", "SPEECH_ONLY_METRICS",
    "WEIGHTS_KEY", "ITEM_KEY", "SCORED_KEY", "EvalReportError", "ItemReadError", "SystemSpec",
    "is_speech_category", "metrics_for", "neural_system_name", "parse_baseline", "row_key",
    "row_scored_metrics", "visqol_mode", "evaluate_item", "score", "neural_roundtrip",
    "mean_ci95", "paired_versus_opus", "read_results", "repair_results", "summarize",
    "make_plots", "versus_opus", "write_report",
]

_neural_roundtrip = neural_roundtrip  # its old name: out of __all__, still importable from here


# ------------------------------------------------------------------------------------------
# Driver
# ------------------------------------------------------------------------------------------
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
    _check_request(metrics, baselines, out, force)
    if not models and not EVAL_RATE_RANGE[0] <= sample_rate <= EVAL_RATE_RANGE[1]:
        raise EvalReportError(f"sample_rate must be {EVAL_RATE_RANGE[0]}..{EVAL_RATE_RANGE[1]} Hz, "
                              f"got {sample_rate}")

    # checked before the models are loaded (which may download weights) and before any output
    chosen = choose_categories(eval_set, categories)
    manifest_items = list_items(eval_set, chosen, categories is not None, max_items)
    empty_categories = [c for c in chosen if c not in manifest_items]
    categories = list(manifest_items)
    results_path = out / RESULTS_FILE
    previous, repaired = repair_results(results_path)
    if repaired:
        warn(repaired)

    # Systems (each model loaded once here, before any output or worker: a bad name fails now).
    lineup = build_systems(models, bandwidths, baselines, sample_rate, channels)
    systems, sample_rate, channels = lineup.systems, lineup.sample_rate, lineup.channels

    # Items: resumed by item file, system, weights, scoring format and metrics
    items, skipped = identify_items(manifest_items)
    done = pick_rows(previous, items, systems, metrics, sample_rate, channels, keep_failed=False)
    tasks = pending_tasks(items, systems, done, metrics, sample_rate, channels)
    # evaluate_item is looked up here, at call time, so that a test can replace it
    skipped += run_tasks(tasks, ResultsFile(results_path), tuple(models), tuple(baselines),
                         workers, quiet, evaluate_item)

    stored = read_results(results_path)
    picked = list(pick_rows(stored, items, systems, metrics, sample_rate, channels).values())
    all_rows = [r for r in picked if not codec_failed(r)]
    failures = [{"category": r["category"], "item_id": r["item_id"], "system": r["system"],
                 "error": r["errors"]["codec"]} for r in picked if codec_failed(r)]
    if not all_rows:
        raise _nothing_scored(eval_set, skipped, failures)
    summary = summarize(all_rows, metrics, failures)
    meta = {
        "models": list(models), "bandwidths": list(bandwidths or []), "baselines": list(baselines),
        "set": str(eval_set), "categories": list(categories), "max_items": max_items,
        "metrics": list(metrics), "sample_rate": sample_rate, "channels": channels,
        "workers": workers, "n_rows": len(all_rows), "n_rows_stored": len(stored),
        "wall_s": time.perf_counter() - t_start,
        "visqol_modes": {c: visqol_mode(c) for c in categories},
        "skipped_bandwidths": lineup.bandwidth_notes, "skipped": skipped,
        "codec_failures": failures, "empty_categories": empty_categories,
        "model_weights": model_weights(systems),
    }
    return _write_outputs(out, summary, meta, all_rows, metrics)


def model_weights(systems: tp.Sequence[SystemSpec]) -> dict[str, dict[str, str]]:
    """``{--models entry: {"system": the name its systems carry (before "@"), "weights_sha256":
    its weights hash prefix}}`` for the models that have systems in this run, so that the
    report names the weights it scored (an alias such as ``opencodec_24khz`` or a file name
    does not)."""
    return {s.model: {"system": s.family, "weights_sha256": s.weights}
            for s in systems if s.kind == "neural"}


def _check_request(metrics: tp.Sequence[str], baselines: tp.Sequence[str], out: Path,
                   force: bool) -> None:
    """Refuse no metric or unknown metrics, a baseline spec that does not parse and an ``out`` that is
    not an eval output folder (unless ``force``): ``EvalReportError``."""
    if not metrics:
        raise EvalReportError(f"no metric asked for; name one or more of: {', '.join(ALL_METRICS)}")
    bad = [m for m in metrics if m not in ALL_METRICS]
    if bad:
        raise EvalReportError(f"unknown metric(s) {bad}; choose from {list(ALL_METRICS)}")
    for b in baselines:
        parse_baseline(b)
    check_out(out, force)


def _nothing_scored(eval_set: Path, skipped: list[dict],
                    failures: list[dict] | None = None) -> EvalReportError:
    """The error of a run where no item could be scored, naming the first skipped item, or
    else the first codec failure."""
    if not skipped and failures:
        first = failures[0]
        return EvalReportError(f"no item of {eval_set} could be scored: every system failed on "
                               f"every item ({len(failures)} failure(s); first: {first['system']} "
                               f"on {first['item_id']!r}: {first['error']})")
    first = skipped[0] if skipped else None
    return EvalReportError(f"no item of {eval_set} could be scored: all {len(skipped)} were "
                           "skipped" + (f" (first: {first['path']}: {first['error']})"
                                        if first else ""))


def _write_outputs(out: Path, summary: dict, meta: dict, rows: list[dict],
                   metrics: tp.Sequence[str]) -> dict:
    """Write the plots, ``report.md`` and ``summary.json`` of a run into ``out``; returns the
    ``summary.json`` document."""
    from .visqol import VISQOL_IMPLEMENTATION

    meta["visqol_implementation"] = VISQOL_IMPLEMENTATION
    meta["silent_decoded"] = silent_left_out(rows, metrics)
    plots = make_plots(summary, out, metrics)
    paired = paired_versus_opus(rows, metrics)
    write_report(out, summary, meta, plots, metrics, paired)
    doc = {"meta": meta, "categories": summary, "plots": plots, "paired_versus_opus": paired}
    write_bytes_atomic(out / "summary.json", json.dumps(doc, indent=2).encode())
    return doc


# ------------------------------------------------------------------------------------------
# Command line (parsing and exit statuses: .cli)
# ------------------------------------------------------------------------------------------
def main(argv: list[str] | None = None, prog: str = PROG) -> int:
    """Run ``opencodec eval`` with ``argv`` (:func:`opencodec.eval.cli.run_command`, which
    gives the exit statuses) on :func:`run_eval`, looked up when called."""
    return run_command(argv, prog, run_eval)


if __name__ == "__main__":
    sys.exit(main(prog="python -m opencodec.eval.report"))
