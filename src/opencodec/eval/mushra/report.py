"""``opencodec mushra report``: post-screening and per-system means of a MUSHRA test.

* **Post-screening** (ITU-R BS.1534-3, section 4.1.2): a listener is excluded when they
  rated the hidden reference below 90 in more than 15 % of the trials they rated
  (strictly more: 3 of 20 trials = 15 % is kept, 1 of 6 = 16.7 % is excluded). All of an
  excluded listener's ratings are left out.
* **Statistics** over the kept listeners' ratings: per system, over all trials and per
  category, the mean, the 95 % confidence interval half-width from Student's t
  (``t(0.975, n - 1) * s / sqrt(n)``, ``s`` the sample standard deviation of the ``n``
  ratings; :func:`opencodec.eval.summary.mean_ci95`), the interval's bounds
  ``mean -/+ half-width`` cut to the rating scale [0, 100] (a mean of 0-100 ratings cannot
  leave it, so the cut interval still holds the mean whenever the uncut one does; with few
  ratings near the ends, ``97.5 ± 31.8`` would otherwise read ``[65.7, 129.3]``), the number
  of ratings and listeners, and the measured bitrate of the system's conditions (total bits
  over total seconds of the group's clips, :func:`opencodec.eval.summary.rate_kbps`). The
  half-width ``ci95`` is kept uncut, so a cut bound is nearer the mean than ``ci95``.
* **Outputs** (default folder ``TEST_DIR/report``): ``mushra_report.md`` (tables and the
  screening), ``mushra_summary.csv``, ``mushra_summary.json`` and ``mushra.png`` (means with
  95 % CI error bars per category). Existing files are only replaced with ``--force``.
"""

from __future__ import annotations

import csv
import io
import json
import typing as tp
from collections import defaultdict
from dataclasses import asdict, dataclass
from pathlib import Path

from ..._files import atomic_output, check_output, write_bytes_atomic
from ..report_writer import markdown_cell
from ..summary import RATE_DEFINITION, mean_ci95, rate_kbps
from .db import Rating, load_ratings
from .spec import DB_FILE, HIDDEN_REFERENCE_KIND, MushraError, MushraTest, Trial, load_test

HIDDEN_REFERENCE_MIN = 90.0
MAX_FAILED_FRACTION = 0.15
#: The MUSHRA rating scale: the shown interval bounds are cut to it.
SCALE_MIN, SCALE_MAX = 0.0, 100.0
ALL = "all"
OUTPUT_FILES = ("mushra_report.md", "mushra_summary.csv", "mushra_summary.json", "mushra.png")
CSV_FIELDS = ("category", "system", "kind", "nominal_kbps", "actual_kbps", "n_ratings",
              "n_listeners", "mean", "ci95", "ci_low", "ci_high")


@dataclass(frozen=True)
class ListenerScreening:
    """Post-screening of one listener: trials rated, trials with the hidden reference
    rated below 90, that fraction, and whether the listener is excluded."""

    listener: str
    n_trials: int
    n_hidden_reference_below: int
    fraction: float
    excluded: bool


def screen_listeners(ratings: tp.Sequence[Rating], hidden_reference: str,
                     threshold: float = HIDDEN_REFERENCE_MIN,
                     max_fraction: float = MAX_FAILED_FRACTION) -> dict[str, ListenerScreening]:
    """Screen every listener in ``ratings``: excluded when the hidden reference (system
    ``hidden_reference``) got a rating below ``threshold`` in more than ``max_fraction`` of
    the trials the listener rated. A trial without a hidden-reference rating counts as
    rated but not failed (the server never stores one; hand-made data may)."""
    trials: dict[str, set[str]] = defaultdict(set)
    failed: dict[str, set[str]] = defaultdict(set)
    for r in ratings:
        trials[r.listener].add(r.trial_id)
        if r.system == hidden_reference and r.rating < threshold:
            failed[r.listener].add(r.trial_id)
    out = {}
    for listener in sorted(trials):
        n, bad = len(trials[listener]), len(failed[listener])
        fraction = bad / n
        # 1e-12: a fraction equal to the limit (3/20 vs 0.15) must not be excluded by rounding.
        out[listener] = ListenerScreening(listener, n, bad, fraction, fraction > max_fraction + 1e-12)
    return out


def _stat(values: tp.Sequence[float]) -> dict[str, float | int | None]:
    """Mean, 95 % CI half-width ``ci95`` (Student t, uncut), ``n`` and the interval's bounds
    ``ci_low``/``ci_high`` = mean -/+ ci95 cut to [:data:`SCALE_MIN`, :data:`SCALE_MAX`]."""
    mean, ci, n = mean_ci95(values)
    return {"mean": mean, "ci95": ci, "n": n,
            "ci_low": None if mean is None or ci is None else max(SCALE_MIN, mean - ci),
            "ci_high": None if mean is None or ci is None else min(SCALE_MAX, mean + ci)}


def trial_seconds(test: MushraTest, trial: Trial) -> float:
    """The length (s) of ``trial``'s clips: its ``duration_s`` in ``test.json`` (``mushra
    build`` writes it), else that of its reference WAV file."""
    raw = next((t for t in test.raw.get("trials", []) if isinstance(t, dict)
                and t.get("trial_id") == trial.trial_id), {})
    seconds = raw.get("duration_s")
    if isinstance(seconds, (int, float)) and not isinstance(seconds, bool) and seconds > 0:
        return float(seconds)
    import soundfile as sf

    return float(sf.info(str(test.root / trial.reference)).duration)


def summarize(test: MushraTest, ratings: tp.Sequence[Rating]) -> dict:
    """Screen the listeners and compute per-system statistics.

    Returns ``{"test_id", "listeners": {name: screening}, "kept": [...], "excluded": [...],
    "groups": {"all" | category: {system: {"kind", "nominal_kbps", "actual_kbps", "mean",
    "ci95", "ci_low", "ci_high", "n" (ratings), "n_listeners"}}}}``; systems in the order of
    ``test.json``, categories in the order of the trials."""
    own = [r for r in ratings if r.test_id == test.test_id]
    unknown = sorted({r.trial_id for r in own if test.trial(r.trial_id) is None})
    if unknown:
        raise MushraError(f"ratings name trial(s) {unknown} that test {test.test_id!r} does not have")
    test.check_ratings_belong({(r.trial_id, r.condition_id) for r in own}, "the ratings database")
    hidden = test.systems_of_kind(HIDDEN_REFERENCE_KIND)[0]
    screening = screen_listeners(own, hidden)
    kept = [r for r in own if not screening[r.listener].excluded]
    category_of = {t.trial_id: t.category for t in test.trials}
    categories = list(dict.fromkeys(t.category for t in test.trials))
    nominal = {s["name"]: s.get("nominal_kbps") for s in test.raw.get("systems", [])}
    kbps: dict[tuple[str, str], list[dict]] = defaultdict(list)  # rate_kbps's rows
    for t in test.trials:
        seconds = trial_seconds(test, t)
        for c in t.conditions:
            if c.actual_kbps is not None:
                kbps[(ALL, c.system)].append({"actual_kbps": c.actual_kbps, "duration_s": seconds})
                kbps[(t.category, c.system)].append({"actual_kbps": c.actual_kbps,
                                                     "duration_s": seconds})
    groups: dict[str, dict[str, dict]] = {}
    for group in [ALL, *categories]:
        rows = [r for r in kept if group == ALL or category_of[r.trial_id] == group]
        groups[group] = {}
        for system, kind in test.systems.items():
            mine = [r for r in rows if r.system == system]
            entry: dict[str, tp.Any] = {"kind": kind, "nominal_kbps": nominal.get(system)}
            entry["actual_kbps"] = rate_kbps(kbps[(group, system)])["mean"]
            entry.update(_stat([r.rating for r in mine]))
            entry["n_listeners"] = len({r.listener for r in mine})
            groups[group][system] = entry
    return {"test_id": test.test_id, "listeners": {k: asdict(v) for k, v in screening.items()},
            "kept": [k for k, v in screening.items() if not v.excluded],
            "excluded": [k for k, v in screening.items() if v.excluded],
            "n_ratings": len(own), "n_ratings_kept": len(kept),
            "screening_rule": f"excluded if the hidden reference is rated below {HIDDEN_REFERENCE_MIN:g} "
                              f"in more than {MAX_FAILED_FRACTION:.0%} of the listener's trials",
            "groups": groups}


# ------------------------------------------------------------------------------------------
# Outputs
# ------------------------------------------------------------------------------------------
def _num(value: float | None, digits: int = 1) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def csv_text(summary: dict) -> str:
    """The per-(category, system) statistics as CSV (columns :data:`CSV_FIELDS`)."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(CSV_FIELDS)
    for group, systems in summary["groups"].items():
        for system, s in systems.items():
            writer.writerow([group, system, s["kind"], s["nominal_kbps"], s["actual_kbps"], s["n"],
                             s["n_listeners"], s["mean"], s["ci95"], s["ci_low"], s["ci_high"]])
    return buf.getvalue()


def markdown_text(summary: dict, test: MushraTest, plot: str | None) -> str:
    """The report as Markdown: screening table, then one table per group (all, categories)."""
    categories = ", ".join(c for c in summary["groups"] if c != ALL)
    excluded = f" ({', '.join(summary['excluded'])})" if summary["excluded"] else ""
    lines = [f"# MUSHRA results: {test.test_id}", "",
             f"- Trials: {len(test.trials)} ({categories}); systems: {', '.join(test.systems)}",
             (f"- Post-screening: {summary['screening_rule']} (ITU-R BS.1534-3). Listeners kept: "
              f"{len(summary['kept'])}, excluded: {len(summary['excluded'])}{excluded}."),
             f"- Ratings: {summary['n_ratings']} stored, {summary['n_ratings_kept']} used.",
             ("- Cells: mean ± 95 % confidence interval half-width (Student t over the kept "
              "ratings) [interval bounds, cut to the 0–100 rating scale: a bound nearer the mean "
              "than the half-width was cut], n = ratings, listeners = kept listeners who rated "
              "the system; kbps (actual) = the system's clips in that group, "
              f"{RATE_DEFINITION}."), "",
             "## Listeners", "",
             "| Listener | Trials rated | Hidden reference < 90 | Fraction | Kept |",
             "|---|---|---|---|---|"]
    for name, s in summary["listeners"].items():
        lines.append(f"| {markdown_cell(name)} | {s['n_trials']} | {s['n_hidden_reference_below']} | "
                     f"{s['fraction']:.1%} | {'no' if s['excluded'] else 'yes'} |")
    for group, systems in summary["groups"].items():
        lines += ["", f"## {'All trials' if group == ALL else group}", "",
                  "| System | kbps (actual) | Mean | 95 % CI | n | Listeners |", "|---|---|---|---|---|---|"]
        for system, s in systems.items():
            ci = "–" if s["ci95"] is None else f"± {s['ci95']:.1f} [{s['ci_low']:.1f}, {s['ci_high']:.1f}]"
            lines.append(f"| {system} | {_num(s['actual_kbps'], 2)} | {_num(s['mean'])} | {ci} | "
                         f"{s['n']} | {s['n_listeners']} |")
    lines.append("")
    if plot:
        lines += [f"![MUSHRA means with 95 % confidence intervals]({plot})", ""]
    else:
        lines += ["No plot: no ratings are left after the post-screening.", ""]
    return "\n".join(lines)


def plot_png(summary: dict, path: Path) -> bool:
    """Means with 95 % CI error bars (bounds cut to the scale, as in the table), one cluster
    per group (all, categories), one colour per system, the MUSHRA scale (0-100) on the y
    axis; written atomically. False (no file) if nothing to plot."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = list(summary["groups"])
    systems = list(summary["groups"][ALL])
    if not any(s["mean"] is not None for g in groups for s in summary["groups"][g].values()):
        return False
    fig, ax = plt.subplots(figsize=(max(6.0, 0.6 * len(groups) * len(systems)) + 2.0, 4.5))
    width = 0.8 / max(1, len(systems))
    for k, system in enumerate(systems):
        xs: list[float] = []
        ys: list[float] = []
        lows: list[float] = []
        highs: list[float] = []
        for g, group in enumerate(groups):
            s = summary["groups"][group][system]
            if s["mean"] is None:
                continue
            xs.append(g - 0.4 + width * (k + 0.5))
            ys.append(s["mean"])
            # the interval as in the table: its bounds cut to the rating scale
            lows.append(0.0 if s["ci_low"] is None else s["mean"] - s["ci_low"])
            highs.append(0.0 if s["ci_high"] is None else s["ci_high"] - s["mean"])
        ax.errorbar(xs, ys, yerr=[lows, highs], fmt="o", capsize=3, label=system)
    for y in (20, 40, 60, 80):
        ax.axhline(y, color="0.85", lw=0.8, zorder=0)
    ax.set_xticks(range(len(groups)))
    ax.set_xticklabels(["all trials" if g == ALL else g for g in groups])
    ax.set_ylim(0, 100)
    ax.set_ylabel("MUSHRA score (0-100)")
    ax.set_title(f"{summary['test_id']}: mean ± 95 % CI, {len(summary['kept'])} listener(s) kept")
    ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5))
    fig.tight_layout()
    try:
        with atomic_output(path) as tmp:
            fig.savefig(tmp, dpi=100, format="png")
    finally:
        plt.close(fig)
    return True


def make_report(test_dir: str | Path, db_path: str | Path | None = None,
                out: str | Path | None = None, force: bool = False) -> dict:
    """Screen, summarise and write the report files (see the module notes) for the test in
    ``test_dir`` with the ratings in ``db_path`` (default ``TEST_DIR/ratings.sqlite``);
    returns the summary dict (also written as ``mushra_summary.json``)."""
    test = load_test(test_dir)
    db_file = Path(db_path) if db_path is not None else test.root / DB_FILE
    ratings = load_ratings(db_file, test.test_id)
    if not ratings:
        raise MushraError(f"{db_file} holds no ratings for test {test.test_id!r}")
    summary = summarize(test, ratings)
    folder = Path(out) if out is not None else test.root / "report"
    folder.mkdir(parents=True, exist_ok=True)
    for name in OUTPUT_FILES:
        check_output(folder / name, force)
    has_plot = plot_png(summary, folder / "mushra.png")
    if not has_plot and (folder / "mushra.png").exists():
        (folder / "mushra.png").unlink()  # a stale plot would contradict the new report
    summary["plot"] = "mushra.png" if has_plot else None
    write_bytes_atomic(folder / "mushra_summary.csv", csv_text(summary).encode())
    write_bytes_atomic(folder / "mushra_summary.json", (json.dumps(summary, indent=2) + "\n").encode())
    write_bytes_atomic(folder / "mushra_report.md", markdown_text(summary, test, summary["plot"]).encode())
    summary["out"] = str(folder)
    return summary
