"""Rendering a summary: one rate-quality plot per (category, metric) and ``OUT/report.md``
(per-category tables and the comparison with Opus at the same bitrate).
"""

from __future__ import annotations

import typing as tp
from collections import defaultdict
from pathlib import Path

from .._files import atomic_output
from .summary import RATE_DEFINITION, RTF_DEFINITION, _opus_partners
from .systems import LOWER_IS_BETTER, METRIC_LABELS


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


def _metric_cell(stat: dict | None, n_items: int, digits: int = 2) -> str:
    """A metric's table cell: :func:`_fmt`, with ``(n=K)`` when the metric is defined on
    only K of the row's ``n_items`` items (its mean and interval are over those K)."""
    text = _fmt(stat, digits)
    if stat and stat.get("mean") is not None and stat.get("n", n_items) < n_items:
        text += f" (n={stat['n']})"
    return text


def make_plots(summary: dict, out: Path, metrics: tp.Sequence[str]) -> dict[str, list[str]]:
    """One PNG per (category, metric): metric vs actual kbps, one curve per family, each written
    atomically (:func:`opencodec._files.atomic_output`); any other PNG in ``out/plots`` is
    removed (:func:`remove_stale_plots`)."""
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
            try:
                with atomic_output(path) as tmp:  # an interrupted write leaves no partial PNG
                    fig.savefig(tmp, dpi=100, format="png")
            finally:
                plt.close(fig)
            made[cat].append(str(path.relative_to(out)))
    remove_stale_plots(plots_dir, {Path(p).name for paths in made.values() for p in paths})
    return made


def remove_stale_plots(plots_dir: Path, keep: tp.Container[str]) -> list[str]:
    """Delete the PNG files of ``plots_dir`` not named in ``keep`` (those of an earlier run, or
    of a folder given with ``-f``), so that ``plots/`` holds exactly this report's plots;
    returns the names deleted."""
    removed = []
    for png in sorted(plots_dir.glob("*.png")):
        if png.name not in keep and png.is_file():
            png.unlink()
            removed.append(png.name)
    return removed


def _markdown_table(header: tp.Sequence[str], rows: tp.Iterable[tp.Sequence[str]]) -> list[str]:
    """Lines of a Markdown table."""
    return (["| " + " | ".join(header) + " |", "|" + "|".join(["---"] * len(header)) + "|"]
            + ["| " + " | ".join(cells) + " |" for cells in rows])


def _verdict_line(name: str, verdicts: tp.Sequence[tuple[str, bool, bool]]) -> str:
    """The headline of ``name`` against Opus on ViSQOL from its ``(category, better, settled)``
    verdicts: only established results count as above or below; the categories where the
    result is not established are named apart, with the direction of the point estimate."""
    above = [cat for cat, better, settled in verdicts if settled and better]
    below = [cat for cat, better, settled in verdicts if settled and not better]
    open_ = [f"{cat} (point estimate {'above' if better else 'below'})"
             for cat, better, settled in verdicts if not settled]
    return (f"- **{name}**: ViSQOL established above Opus in {len(above)} of {len(verdicts)} "
            "categories" + (f" ({', '.join(above)})" if above else "")
            + (f"; **established below in {', '.join(below)}**" if below else "")
            + (f"; not established in {', '.join(open_)}" if open_ else "") + ".")


def _direction(better: bool, tied: bool) -> str:
    """A cell's word for ours against Opus: "equal" when the means (or the mean paired
    difference) are exactly equal, else "better" or "worse"."""
    return "equal" if tied else ("better" if better else "worse")


def versus_opus(summary: dict, metrics: tp.Sequence[str], paired: dict | None = None) -> list[str]:
    """Markdown lines comparing every neural system with Opus at the same nominal bitrate,
    per category and metric. With ``paired`` (from ``paired_versus_opus``) a cell gives the
    mean per-item difference (ours minus Opus) ± its 95 % interval and the items won, and
    a difference whose interval contains 0 is marked "not established"; without it, the
    two systems' separate intervals are compared ("intervals overlap"). Empty when no Opus
    baseline shares a neural system's bitrate."""
    rows = []
    verdicts: dict[str, list[tuple[str, bool, bool]]] = defaultdict(list)  # (category, better, settled)
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
                            f"{diff['ci95']:.2f}, {_direction(better, diff['mean'] == 0)}"
                            + ("" if settled else " (not established)")
                            + f", {diff['wins']}/{diff['n']} items")
                else:
                    better = (ours["mean"] < theirs["mean"]) == (metric in LOWER_IS_BETTER)
                    no_interval = ours.get("ci95") is None or theirs.get("ci95") is None
                    settled = not (no_interval or abs(ours["mean"] - theirs["mean"])
                                   <= ours["ci95"] + theirs["ci95"])
                    text = (f"{ours['mean']:.2f} vs {theirs['mean']:.2f}: "
                            f"{_direction(better, ours['mean'] == theirs['mean'])}"
                            + ("" if settled else " (no interval: fewer than 2 items)"
                               if no_interval else " (intervals overlap)"))
                cells.append(text)
                if metric == "visqol":
                    verdicts[name].append((cat, better, settled))
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
    if verdicts:
        lines += ["Summary on ViSQOL: a category counts as above or below Opus only where the "
                  "result is established; the others are listed apart with the direction of "
                  "their point estimate.", ""]
    lines += [_verdict_line(name, v) for name, v in verdicts.items()]
    header = (["Category", "System", "Opus", "kbps (actual)"]
              + [METRIC_LABELS.get(m, m) for m in metrics])
    lines += ["", *_markdown_table(header, rows)]
    return lines + [""]


def _header_lines(meta: dict) -> list[str]:
    """The bullet list at the top of ``report.md``: what was asked for, how items are scored
    and how each kind of system's bitrate is measured."""
    from .visqol import VISQOL_IMPLEMENTATION

    weights = meta.get("model_weights", {})
    models = ", ".join(f"{spec} (`{weights[spec]['system']}`, weights `{weights[spec]['weights_sha256']}`)"
                       if spec in weights else spec for spec in meta["models"])
    if not meta["models"]:
        lines = ["- Models: –"]
    elif meta["bandwidths"]:
        lines = [f"- Models: {models}; bandwidths: "
                 f"{', '.join(f'{b:g}' for b in meta['bandwidths'])} kbps"]
    else:
        lines = [f"- Models: {models}; bandwidths: each model's own"]
    lines += [f"- **Not evaluated**: {note}" for note in meta.get("skipped_bandwidths", [])]
    lines += [
        f"- Baselines: {', '.join(meta['baselines']) or '–'}",
        f"- Eval set: `{meta['set']}`; max items per category: {meta['max_items'] or 'all'}",
    ]
    if meta.get("metrics"):
        lines.append(f"- Metrics: {', '.join(meta['metrics'])}")
    lines += [
        f"- Scoring: every item is converted to {meta['sample_rate']} Hz, {meta['channels']} "
        "channel(s) (soxr resampling, then the channels) before coding; every system codes that "
        "converted signal and is scored against it at that rate.",
        "- Neural systems: real `compress` -> `.ecdc` bytes -> `decompress` round trip; actual kbps "
        "from the `.ecdc` size (header included); RTF = (encode + decode wall time) / audio "
        "duration, CPU, 1 torch thread per worker.",
        f"- \"RTF\" of a system in a category: {RTF_DEFINITION}, ± the 95 % interval of that "
        "ratio; not the plain mean of the per-item RTFs.",
        "- Bitrates are measured differently by kind of system: a neural system's \"kbps "
        "(actual)\" counts the whole `.ecdc` file, its header included; an Opus or MP3 "
        "baseline's counts the codec packets only (payload), without the Ogg or MP3 container "
        "(page headers, OpusHead/OpusTags, the Xing/LAME frame, ID3 tag).",
        f"- \"kbps (actual)\" of a system in a category: {RATE_DEFINITION}, ± the 95 % "
        "interval of that ratio; not the plain mean of the per-item rates.",
        f"- ViSQOL: {VISQOL_IMPLEMENTATION}; **audio mode at 48 kHz** for music/general "
        "categories, **speech mode at 16 kHz** for speech categories. PESQ (wide-band, "
        "at scoring rates of 16 kHz or more) and STOI on speech categories only.",
        *_narrow_band_lines(meta["sample_rate"]),
        "- Cells: mean ± 95 % confidence interval half-width (Student t over items); "
        "metrics undefined on an item (too short, silent, ...) are left out of that mean "
        "(see `errors` in results.jsonl), and the cell then says over how many items it is "
        "taken, `(n=K)`, K below the row's n.",
        f"- Items scored: {_rows_line(meta)}; wall time of this run: "
        f"{meta['wall_s']:.1f} s with {meta['workers']} worker(s) (a resumed run only "
        "computes the missing rows). Only the rows of this run's items, systems and metrics are "
        "reported; rows of other runs into the same folder stay in results.jsonl.",
    ]
    skipped = meta.get("skipped", [])
    if skipped:
        lines.append(f"- **Skipped items**: {len(skipped)} item(s) could not be read and are in no "
                     "table (listed at the end).")
    failures = meta.get("codec_failures", [])
    if failures:
        lines.append(f"- **Codec failures**: {len(failures)} (item, system) pair(s) could not be "
                     "coded; they are in no table and not counted in n (listed at the end; a "
                     "rerun tries them again).")
    silent = meta.get("silent_decoded", [])
    if silent:
        lines.append(f"- **Silent decoded audio**: on {len(silent)} (item, system) pair(s) the "
                     "decoded audio is digital silence, where PESQ is undefined: those items are "
                     "left out of that mean (named under each table), which flatters the system.")
    for cat in meta.get("empty_categories", []):
        lines.append(f"- **Empty manifest**: `eval_{cat}.jsonl` lists no items; category {cat!r} "
                     "is not evaluated.")
    return lines


def _rows_line(meta: dict) -> str:
    """How many result rows the tables hold (``meta["n_rows"]``: this run's scored (item,
    system) rows) and, when known, how many ``results.jsonl`` holds (``meta["n_rows_stored"]``:
    also other runs' rows and codec failures), so that neither count passes for the other."""
    line = f"{meta['n_rows']} (item, system) rows in the tables"
    stored = meta.get("n_rows_stored")
    return line + (f", of the {stored} rows in results.jsonl" if stored is not None
                   else " (from results.jsonl)")


def _narrow_band_lines(sample_rate: int) -> list[str]:
    """A header line for a scoring rate (Hz) below 16 kHz: the items are narrow-band, so
    ViSQOL's speech mode (a wide-band model, 16 kHz) scores their upsampled copies against a
    narrow-band reference, and PESQ-WB is not given (:data:`~.metrics.PESQ_WB_MIN_RATE`)."""
    from .metrics import PESQ_WB_MIN_RATE

    if sample_rate >= PESQ_WB_MIN_RATE:
        return []
    return [f"- **Narrow-band scoring**: at {sample_rate} Hz the items hold only "
            f"0-{sample_rate / 2:g} Hz. ViSQOL's speech mode scores them upsampled to 16 kHz, "
            "against that narrow-band reference: not comparable with runs at 16 kHz or more. "
            "PESQ-WB is not given (none, with the reason, in results.jsonl)."]


def _listing(title: str, intro: str, headers: list[str], rows: tp.Iterable[list[str]]) -> list[str]:
    """A ``## title`` section of ``report.md``: ``intro``, then a table (in every cell, which
    may hold an item id, a file name or a free-text reason, ``|`` is escaped and a line break
    made a space, so that the row stays one table row)."""
    return ([f"## {title}", "", intro, ""]
            + _markdown_table(headers, ([markdown_cell(cell) for cell in row] for row in rows))
            + [""])


def markdown_cell(text: str) -> str:
    """``text`` made safe for one Markdown table cell: ``|`` escaped, line breaks as spaces."""
    return " ".join(str(text).splitlines()).replace("|", "\\|")


def _skipped_lines(skipped: tp.Sequence[dict]) -> list[str]:
    """The ``## Skipped items`` section of ``report.md`` (empty when none was skipped)."""
    if not skipped:
        return []
    return _listing("Skipped items", "These items could not be read; they are left out of every "
                    "table (a rerun tries them again).", ["Category", "Item", "File", "Reason"],
                    ([s["category"], s["item_id"], f"`{s['path']}`", s["error"]] for s in skipped))


def _failure_lines(failures: tp.Sequence[dict]) -> list[str]:
    """The ``## Codec failures`` section of ``report.md`` (empty when none failed)."""
    if not failures:
        return []
    return _listing("Codec failures", "These systems failed to code these items; the pairs are "
                    "left out of every table and of n (a rerun tries them again).",
                    ["Category", "Item", "System", "Reason"],
                    ([f["category"], f["item_id"], f["system"], f["error"]] for f in failures))


def _silent_lines(category: str, silent: tp.Sequence[dict]) -> list[str]:
    """Lines under a category's table naming, per metric, the items whose decoded audio is
    digital silence and that metric is left out of the mean on (``meta.silent_decoded``,
    :func:`opencodec.eval.summary.silent_left_out`): such an item would otherwise go unseen,
    and a codec that outputs silence gets a *higher* PESQ mean (empty when none)."""
    by_metric: dict[str, list[str]] = {}
    for s in silent:
        if s["category"] == category:
            for m in s["metrics"]:
                by_metric.setdefault(m, []).append(f"{markdown_cell(s['system'])} on "
                                                   f"`{markdown_cell(s['item_id'])}`")
    label = {m: METRIC_LABELS.get(m, m).rstrip(" ↑↓") for m in by_metric}
    lines = []
    for m, items in by_metric.items():
        lines += [f"**{label[m]} left out on {len(items)} item(s) where the decoded audio is "
                  f"silent** (undefined there; the mean above is over the other items, so it "
                  f"flatters a system that outputs silence): {', '.join(items)}.", ""]
    return lines


def write_report(out: Path, summary: dict, meta: dict, plots: dict[str, list[str]],
                 metrics: tp.Sequence[str], paired: dict | None = None) -> None:
    """Write ``out/report.md`` (atomically) from the summary, the run's ``meta`` (as in
    ``summary.json``), the plots and the paired comparison with Opus."""
    from .._files import write_bytes_atomic

    lines = ["# opencodec evaluation report", "", *_header_lines(meta), ""]
    for cat, systems in summary.items():
        shown = [m for m in metrics if any(m in s["metrics"] for s in systems.values())]
        mode = next(iter(systems.values())).get("visqol_mode")
        lines += [f"## {cat}", "", f"ViSQOL mode: {mode}.", ""]
        header = ["System", "n", "kbps (actual)", "RTF"] + [METRIC_LABELS.get(m, m) for m in shown]
        digits = {"stoi": 3}
        lines += _markdown_table(header, (
            [name, str(s["n_items"]), _fmt(s["actual_kbps"]), _fmt(s["rtf"], 3)]
            + [_metric_cell(s["metrics"].get(m), s["n_items"], digits.get(m, 2)) for m in shown]
            for name, s in systems.items()))
        lines.append("")
        lines += _silent_lines(cat, meta.get("silent_decoded", []))
        for p in plots.get(cat, []):
            lines.append(f"![{cat} {Path(p).stem}]({p})")
        lines.append("")
    lines += versus_opus(summary, [m for m in metrics if m in ("si_snr", "mel", "visqol")], paired)
    lines += _skipped_lines(meta.get("skipped", []))
    lines += _failure_lines(meta.get("codec_failures", []))
    write_bytes_atomic(out / "report.md", "\n".join(lines).encode())
