"""Corpus builder: Debian packages -> normalised FLAC files + JSONL manifests.

Run as ``python -m opencodec.data.corpus build --preset {tiny,small,full} --out data/``.

Follows ``/work/shared/docs/DATA.md``: only the packages/subsets listed there for training
are used for ``train``/``valid``; the public evaluation set is built from the evaluation
sources only; every other package is reserved and never touched.

Layout under ``--out`` (shared caches, so presets reuse each other's work)::

    debs/<pkg>_<ver>_<arch>.deb           downloaded packages (apt-get download)
    extract/<pkg>/ + extract/<pkg>.done    dpkg -x (+ unzipped .pk3/.zip archives)
    audio_<rate>/<source>/<rel>.flac       converted files (resampled, loudness-normalised)
    audio_<rate>/<source>/<rel>.flac.failed  marker + reason for unreadable / too-short inputs
    eval_<rate>/<category>/<item>.flac     cut evaluation items (5-10 s)
    <preset>_<kHz>k/manifests/*.jsonl      train, valid, train_noise, eval_<category>
    <preset>_<kHz>k/build.log, summary.json  (``<preset>_<Hz>`` for a rate such as 22050)

Every step is idempotent: a ``.deb`` present is not downloaded again, an extraction with a
``.done`` marker is not redone, an existing output FLAC (written to a temporary name and
renamed atomically) or ``.failed`` marker is not converted again, an existing eval item is
not cut again, and manifests are rewritten (cheap) from what is on disk.  An interrupted run
simply continues when started again.  A build of some ``categories`` only replaces those
sources' rows and keeps the other rows of the manifests already there.

The steps live in sibling modules: :mod:`.presets` (the presets), :mod:`.debian` (download,
extract), :mod:`.source_files` (list, cap, split), :mod:`.convert` (decode, normalise, FLAC),
:mod:`.eval_items` (plan and cut evaluation items), :mod:`.loudness` (level and mixing
helpers); this module runs them (:func:`build`), writes the manifests and the summary, and is
the command line.
"""
from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import json
import logging
import numbers
import os
import shutil
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import IO, Optional, Sequence

from .._files import LockHeld, exclusive_lock, file_in_the_way
from ..argtypes import MAX_SAMPLE_RATE as MAX_RATE, MIN_SAMPLE_RATE as MIN_RATE, count_arg, positive_int, sample_rate_arg
from ..errors import EXPECTED_ERRORS, OpenCodecError, one_line, print_traceback_if_asked, stdout_closed_status
from ._jsonl import read_jsonl, write_jsonl
from .convert import MIDI_GAIN, convert_all, convert_file
from .debian import ARCHIVE_EXTS, _unpack_wad_midi, download, extract
from .eval_items import Clip, plan_eval_items, render_item
from .eval_sets import EVAL_SNRS_DB, NOISY_OF, build_eval
from .loudness import gated_rms_db, mix_at_snr, normalize_loudness
from .manifests import entry, merge_rows, preset_dir_name
from .presets import EVAL_CATEGORIES, PRESETS, UNSEEN_CATEGORIES, Preset
from .probe import build_probe
from .source_files import SourceFile, cap_files, drop_duplicates, list_source_files, split_groups
from .sources import AUDIO_EXTS, SOURCES, Selector, Source, _rx, _stem_group
from .split import SpeakerUse, check_recordings, check_split, role_of

__all__ = [
    # the build and its command line (this module)
    "build", "format_summary", "main", "SOUNDFONT_PACKAGE", "SOUNDFONT_REL", "NOISY_OF",
    "EVAL_SNRS_DB",
    # re-exported: they used to live here (.presets, .loudness, .debian, .source_files,
    # .convert, .eval_items, .sources, ._jsonl)
    "EVAL_CATEGORIES", "UNSEEN_CATEGORIES", "PRESETS", "Preset",
    "gated_rms_db", "normalize_loudness", "mix_at_snr",
    "ARCHIVE_EXTS", "download", "extract", "_unpack_wad_midi",
    "SourceFile", "list_source_files", "cap_files", "split_groups",
    "MIDI_GAIN", "convert_file", "convert_all",
    "Clip", "plan_eval_items", "render_item",
    "AUDIO_EXTS", "SOURCES", "Selector", "Source", "_rx", "_stem_group",
    "read_jsonl", "write_jsonl",
]

log = logging.getLogger("opencodec.data.corpus")

SOUNDFONT_PACKAGE = "fluid-soundfont-gm"
SOUNDFONT_REL = "usr/share/sounds/sf2/FluidR3_GM.sf2"
CATEGORIES = ("speech", "music", "general", "noise")
MAX_WORKERS = 256  # conversion processes: a pool forks them all when it starts
PROG = "python -m opencodec.data.corpus"


# ---------------------------------------------------------------------------------------
# Build
# ---------------------------------------------------------------------------------------


def check_build_args(sample_rate: int, seed: int, workers: int) -> None:
    """Raise ``ValueError`` for a rate outside 1000..768000 Hz, a negative seed or a number of
    workers outside 1..``MAX_WORKERS`` (before anything is downloaded)."""
    if not _whole(sample_rate) or not MIN_RATE <= sample_rate <= MAX_RATE:
        raise ValueError(f"sample rate must be a whole number of Hz in {MIN_RATE}..{MAX_RATE}, "
                         f"got {sample_rate!r}")
    if not _whole(seed) or seed < 0:
        raise ValueError(f"seed must be a whole number >= 0, got {seed!r}")
    if not _whole(workers) or workers < 1:
        raise ValueError(f"workers must be a whole number >= 1, got {workers!r}")
    if workers > MAX_WORKERS:
        raise ValueError(f"workers must be at most {MAX_WORKERS}, got {workers!r} (each is a "
                         f"conversion process; this machine has {os.cpu_count()} CPU cores)")


def _whole(value: object) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _wanted(src: Source, categories: Sequence[str]) -> bool:
    """Whether a build of ``categories`` builds ``src``: its category is one of them, or it
    is evaluation noise and speech is built (the noisy speech items need it)."""
    return src.category in categories or (src.role == "eval_noise" and "speech" in categories)


def build(preset: str, out: Path, sample_rate: int = 24000, seed: int = 1234,
          workers: int = 2, sources: Optional[dict[str, Source]] = None,
          presets: Optional[dict[str, Preset]] = None,
          roots: Optional[dict[str, Path]] = None,
          categories: Optional[Sequence[str]] = None) -> dict:
    """Build (or resume) a preset; returns the summary dict (also written to summary.json).

    Args:
        preset: key of ``presets`` (``tiny``, ``small``, ``wide``, ``full``).
        out: root folder (caches shared between presets; see the module docstring).
        sample_rate: rate in Hz of every converted file and eval item (1000..768000).
        seed: seed of the caps, the train/valid split, the eval cutting and mixing (>= 0).
        workers: conversion processes.
        sources, presets: override the built-in tables (tests).
        roots: package name -> already extracted tree, used instead of downloading.
        categories: build only the preset's sources of these categories (``speech``,
            ``music``, ``general``, ``noise``; speech brings the evaluation noise, which the
            noisy speech items need); their rows replace those sources' rows in the
            manifests already there, the other rows are kept. ``None`` builds all.

    Returns a dict with ``table`` (split -> category -> files/hours), ``seconds_total``,
    ``seconds_fetch`` (download + extraction), ``skipped_files``, ``notes``, ``manifests``.
    Sets ``$OPENCODEC_SF2`` to the extracted sound font when a MIDI source is built.
    Raises ``ValueError`` for a bad argument, or for ``categories`` with another seed than
    the build already in the folder."""
    check_build_args(sample_rate, seed, workers)
    sources = sources or SOURCES
    presets = presets or PRESETS
    full = p = presets[preset]
    if categories is not None:
        unknown = set(categories) - set(CATEGORIES)
        if unknown:
            raise ValueError(f"unknown categories {sorted(unknown)} ({', '.join(CATEGORIES)})")
        p = dataclasses.replace(p, sources={n: c for n, c in p.sources.items()
                                            if _wanted(sources[n], categories)})
    out = out.resolve()
    work = out / preset_dir_name(preset, sample_rate)
    check_out_folder(out, work / "manifests")
    old_summary = _read_summary(work) if categories is not None else None
    if old_summary is not None and old_summary.get("seed") != seed:
        raise ValueError(f"{work} was built with seed {old_summary.get('seed')}; --categories keeps "
                         f"its other rows, so give the same --seed (or build every category)")
    man_dir = work / "manifests"
    man_dir.mkdir(parents=True, exist_ok=True)
    lock = _lock_out(out)
    fh = logging.FileHandler(work / "build.log")
    fh.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    log.addHandler(fh)
    try:
        return _build(preset, p, sources, out, work, sample_rate, seed, workers, roots or {},
                      merge_into=None if categories is None else (full, old_summary or {}))
    finally:
        log.removeHandler(fh)
        fh.close()
        lock.close()


class BuildInProgress(OpenCodecError):
    """Another build holds the corpus root (``--out``)."""


def _lock_out(out: Path) -> IO:
    """Hold ``out/.build.lock`` for one build: builds share the caches under ``out``
    (``debs/.partial/<pkg>``, ``extract/<pkg>.tmp``), so a second one at the same time would
    delete the first's files. The lock goes with the process (also on kill -9); on a file
    system without locks the build goes on unlocked, with a warning."""
    try:
        handle, locked = exclusive_lock(out / ".build.lock")
    except LockHeld as held:
        raise BuildInProgress(f"another build is running in --out {out} ({held.holder or 'it holds ' + str(out / '.build.lock')}); "
                              f"wait for it to end, or give another --out") from None
    if not locked:
        log.warning("cannot lock %s: a second build into %s at the same time would not be refused",
                    out / ".build.lock", out)
    return handle


def check_out_folder(out: Path, folder: Path) -> None:
    """``NotADirectoryError`` (one line) when ``out`` (``--out``), a folder above it, or
    ``folder`` or a folder between it and ``out`` exists as a file: the build would fail to
    create ``folder`` with an ``[Errno 20]`` naming a path the user never gave."""
    blocker = file_in_the_way(folder)
    if blocker == out:
        raise NotADirectoryError(f"--out {out} is a file; give a folder (the corpus root, e.g. data/)")
    if blocker is not None:
        where = "under" if out in blocker.parents else "above"
        raise NotADirectoryError(f"{blocker} is a file, not a folder ({where} --out {out})")


def _read_summary(work: Path) -> Optional[dict]:
    f = work / "summary.json"
    return _summary_json(f) if f.exists() else None


def _summary_json(f: Path) -> dict:
    """A build's ``summary.json``; ``ValueError`` naming it (and the cure) when damaged."""
    try:
        summary = json.loads(f.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        summary = exc
    if not isinstance(summary, dict):
        what = summary if isinstance(summary, Exception) else f"a {type(summary).__name__}"
        raise ValueError(f"{f} is not a JSON object ({what}); a build of every category (without "
                         f"--categories) writes it again")
    return summary


def _fetch(p: Preset, sources: dict[str, Source], out: Path, roots: dict[str, Path]) -> dict[str, Path]:
    """Download and extract every package of ``p`` (and the sound font for MIDI sources);
    returns package -> extracted tree."""
    pkg_roots: dict[str, Path] = {}
    for name in p.sources:
        pkg = sources[name].package
        if pkg in pkg_roots:
            continue
        if pkg in roots:
            pkg_roots[pkg] = roots[pkg]
            continue
        deb = download(pkg, out / "debs")
        pkg_roots[pkg] = extract(deb, pkg, out / "extract")
    if any(sources[n].package == "freedoom" for n in p.sources) and "OPENCODEC_SF2" not in os.environ:
        try:
            sf_root = roots.get(SOUNDFONT_PACKAGE) or extract(
                download(SOUNDFONT_PACKAGE, out / "debs"), SOUNDFONT_PACKAGE, out / "extract")
            if (sf_root / SOUNDFONT_REL).exists():
                os.environ["OPENCODEC_SF2"] = str(sf_root / SOUNDFONT_REL)
        except Exception as e:
            log.warning("no sound font: %s", e)
    return pkg_roots


def _convert(p: Preset, sources: dict[str, Source], pkg_roots: dict[str, Path], audio_dir: Path,
             sample_rate: int, seed: int, workers: int, notes: list[str],
             inputs: set[str]) -> tuple[dict[str, list], list[tuple[str, str]]]:
    """List, cap and convert every source of ``p`` (training sources without byte-identical
    copies: :func:`drop_duplicates`). Returns source ->
    [(file, duration, rate, channels)] of the converted files, and the skipped
    (input, reason); adds every listed input to ``inputs``."""
    import soundfile as sf
    converted: dict[str, list[tuple[SourceFile, float, int, int]]] = {}
    skipped: list[tuple[str, str]] = []
    planned: dict[str, list[SourceFile]] = {}
    for name, cap in p.sources.items():
        src = sources[name]
        files = list_source_files(src, pkg_roots[src.package], audio_dir)
        inputs.update(f.src_path for f in files)
        # training sources: a recording in two groups could land in train and valid;
        # evaluation sources keep their files (their item ids must not change)
        files, dups = drop_duplicates(files) if src.role == "train" else (files, [])
        if dups:
            notes.append(f"{name}: {len(dups)} inputs dropped, byte-identical to another input")
            log.info("source %s: %d duplicate inputs dropped (%s ...)", name, len(dups), dups[0].rel)
        if any(f.rel.endswith(".mid") for f in files):
            if shutil.which("fluidsynth") is None or not os.environ.get("OPENCODEC_SF2"):
                notes.append(f"{name}: skipped, MIDI rendering needs fluidsynth "
                             f"(apt-get install fluidsynth) and {SOUNDFONT_PACKAGE}")
                log.warning("skip source %s: no fluidsynth / sound font", name)
                continue
        if any(f.rel.endswith(".g722") for f in files) and shutil.which("ffmpeg") is None \
                and importlib.util.find_spec("av") is None:
            notes.append(f"{name}: skipped, G.722 needs Debian's ffmpeg (or PyAV)")
            log.warning("skip source %s: no ffmpeg for G.722", name)
            continue
        planned[name] = cap_files(files, cap, seed)
    # one recording (byte-identical input) in two speech roles leaks whatever its names say:
    # training drops its copies of probe/evaluation inputs (probe + evaluation: refused)
    leaked = check_recordings((f"{f.rel} of {name}", role_of(sources[name].role, sources[name].eval_category),
                               f.src_path) for name, files in planned.items()
                              if sources[name].category == "speech"
                              and sources[name].role in ("train", "probe", "eval") for f in files)
    for name, files in planned.items():
        dups = [f for f in files if f.src_path in leaked and sources[name].role == "train"]
        if dups:
            files = [f for f in files if f.src_path not in leaked]
            notes.append(f"{name}: {len(dups)} inputs dropped, the same recording as a probe or "
                         f"evaluation input ({dups[0].rel} ...)")
            log.warning("source %s: %d inputs dropped, byte-identical to a probe or evaluation "
                        "input (%s ...)", name, len(dups), dups[0].rel)
        res = convert_all(files, sample_rate, workers)
        ok = []
        for f in files:
            reason = res.get(f.out_path)
            if reason is not None:
                skipped.append((f.src_path, reason))
                continue
            info = sf.info(f.out_path)
            ok.append((f, float(info.duration), int(info.samplerate), int(info.channels)))
        converted[name] = ok
        log.info("source %-20s %5d files %7.3f h (%d skipped)", name, len(ok),
                 sum(d for _, d, _, _ in ok) / 3600, len(files) - len(ok))
    for path, reason in skipped:
        log.warning("SKIP %s: %s", path, reason)
    return converted, skipped


def _build(preset: str, p: Preset, sources: dict[str, Source], out: Path, work: Path,
           sample_rate: int, seed: int, workers: int, roots: dict[str, Path],
           merge_into: Optional[tuple[Preset, dict]]) -> dict:
    """The steps of :func:`build`; ``merge_into`` = (the whole preset, the summary already
    there) for a build of some categories only."""
    t0 = time.time()
    man_dir, audio_dir, eval_dir = work / "manifests", out / f"audio_{sample_rate}", out / f"eval_{sample_rate}"
    log.info("build preset=%s rate=%d out=%s", preset, sample_rate, out)
    notes: list[str] = []
    # 1. download + extract, 2. list + cap + convert
    pkg_roots = _fetch(p, sources, out, roots)
    t_fetch = time.time() - t0
    inputs: set[str] = set()
    converted, skipped = _convert(p, sources, pkg_roots, audio_dir, sample_rate, seed, workers, notes, inputs)
    # 3. the speech split (speaker- and source-disjoint roles), then train / valid / noise
    speakers = check_split(
        SpeakerUse(name, sources[name].package, sources[name].speaker(f.group),
                   role_of(sources[name].role, sources[name].eval_category))
        for name, ok in converted.items() if sources[name].category == "speech"
        and sources[name].role in ("train", "probe", "eval") for f, _, _, _ in ok)
    for role, keys in speakers.items():
        log.info("speech %-22s %3d speakers: %s", role, len(keys), ", ".join(keys))
    rows = _train_rows(p, sources, converted, man_dir, seed)
    # 4. evaluation items
    eval_rows = build_eval(p, sources, converted, man_dir, audio_dir, eval_dir, sample_rate, seed, notes)
    probe_rows = eval_rows.pop("probe", [])
    for cat, r in eval_rows.items():
        rows[f"eval_{cat}"] = r
    unseen = [c for c in UNSEEN_CATEGORIES if c in p.eval_max_items]
    splits = ("train", "valid", "train_noise", *[f"eval_{c}" for c in (*EVAL_CATEGORIES, *unseen)])
    skipped_rows = [{"path": a, "reason": b} for a, b in skipped]
    speaker_counts = {role: len(keys) for role, keys in speakers.items()}
    if merge_into is not None:
        full, old_summary = merge_into
        notes.append(f"built only the sources {', '.join(p.sources) or '(none)'}; the other rows "
                     f"are kept from the manifests already there")
        for split in splits:
            old = man_dir / f"{split}.jsonl"
            rows[split] = merge_rows(read_jsonl(old) if old.exists() else [], rows.get(split, []),
                                     set(p.sources), list(full.sources))
        old_skipped = work / "skipped.jsonl"
        skipped_rows = [r for r in (read_jsonl(old_skipped) if old_skipped.exists() else [])
                        if r["path"] not in inputs] + skipped_rows
        if not speakers:  # no speech built: the speech split is the one already there
            speaker_counts = dict(old_summary.get("speakers", {}))
        if not probe_rows and any(sources[n].role == "probe" for n in full.sources) \
                and (work / "probe" / "eval_clean_speech.jsonl").exists():
            rows["probe_speech"] = read_jsonl(work / "probe" / "eval_clean_speech.jsonl")
    for cat in (c for c in ("clean_speech", "music", "general", "speech_unseen") if c in p.eval_max_items):
        if not rows.get(f"eval_{cat}"):
            notes.append(f"eval category {cat}: no items in this preset")
    for split in splits:
        write_jsonl(man_dir / f"{split}.jsonl", rows.get(split, []))
    if probe_rows:
        rows["probe_speech"] = probe_rows
        probe_dir = build_probe(work, speech=[
            {**{k: v for k, v in r.items() if k != "parts"},
             "path": os.path.relpath(os.path.normpath(man_dir / r["path"]), work / "probe")}
            for r in probe_rows], seed=0)
        notes.append(f"validation probe: {probe_dir}")
    write_jsonl(work / "skipped.jsonl", skipped_rows)
    # 5. summary
    summary = {"preset": preset, "sample_rate": sample_rate, "seed": seed,
               "manifests": str(man_dir), "seconds_total": round(time.time() - t0, 1),
               "seconds_fetch": round(t_fetch, 1), "skipped_files": len(skipped_rows),
               "notes": notes, "table": _table(rows),
               "speakers": speaker_counts}
    (work / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(format_summary(summary))
    return summary


def _train_rows(p: Preset, sources: dict[str, Source], converted: dict[str, list], man_dir: Path,
                seed: int) -> dict[str, list[dict]]:
    """The ``train``, ``valid`` and ``train_noise`` rows: each training source's groups
    split by :func:`split_groups` (whole groups to ``valid``)."""
    rows: dict[str, list[dict]] = defaultdict(list)
    for name, ok in converted.items():
        src = sources[name]
        if src.role not in ("train", "train_noise"):
            continue
        gh: dict[str, float] = defaultdict(float)
        for f, d, _, _ in ok:
            gh[f.group] += d / 3600
        valid = split_groups(gh, p.valid_fraction, seed) if src.role == "train" else set()
        for f, d, sr, ch in ok:
            split = "train_noise" if src.role == "train_noise" else ("valid" if f.group in valid else "train")
            rows[split].append({**entry(f.out_path, man_dir, src.category, name),
                                "group": f"{name}/{f.group}", "original": f.rel})
    return rows


def _table(rows: dict[str, list[dict]]) -> dict[str, dict[str, dict[str, float]]]:
    """split -> category -> {files, hours} of the manifest rows."""
    table: dict[str, dict[str, dict[str, float]]] = defaultdict(dict)
    for split, r in rows.items():
        by_cat: dict[str, list[float]] = defaultdict(list)
        for e in r:
            by_cat[e["category"]].append(e["duration"])
        for cat, ds in by_cat.items():
            table[split][cat] = {"files": len(ds), "hours": round(sum(ds) / 3600, 4)}
    return table


def format_summary(summary: dict) -> str:
    """Render the hours-per-split/category table of a build summary as text."""
    table = summary["table"]
    # columns as wide as their longest name (eval_noisy_speech_unseen: 24 characters)
    ws = max([22, *(len(s) + 2 for s in table)])
    wc = max([14, *(len(c) + 1 for t in table.values() for c in t)])
    lines = [f"preset {summary['preset']} @ {summary['sample_rate']} Hz  "
             f"({summary['seconds_total']} s, {summary['skipped_files']} files skipped)",
             f"{'split':<{ws}}{'category':<{wc}}{'files':>7}{'hours':>9}"]
    for split in sorted(table):
        for cat, v in sorted(table[split].items()):
            lines.append(f"{split:<{ws}}{cat:<{wc}}{v['files']:>7}{v['hours']:>9.3f}")
    for n in summary.get("notes", []):
        lines.append(f"note: {n}")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build", help="download, extract, convert, cut and write manifests")
    s = sub.add_parser("summary", help="print the summary of a built preset")
    for p in (b, s):
        p.add_argument("--preset", choices=sorted(PRESETS), default="tiny", help="the preset (default tiny)")
        p.add_argument("--out", type=Path, default=Path("data"),
                       help="corpus root: caches, audio and <preset>_<kHz>k/ (default data)")
        p.add_argument("--sample-rate", type=sample_rate_arg, default=24000,
                       help="rate in Hz of the corpus, 1000-768000 (default 24000)")
    b.add_argument("--seed", type=count_arg, default=1234,
                   help="seed of the caps, the train/valid split and the evaluation items (default 1234)")
    workers = min(4, os.cpu_count() or 1)
    b.add_argument("--workers", type=positive_int, default=workers,
                   help=f"conversion processes (default min(4, CPU cores) = {workers} here)")
    b.add_argument("--categories", nargs="+", default=None, choices=CATEGORIES,
                   help="build only the preset's sources of these categories; their rows replace "
                        "those sources' rows in the manifests already there (default: all)")
    return ap


def _print_summary(preset: str, out: Path, sample_rate: int) -> None:
    f = out / preset_dir_name(preset, sample_rate) / "summary.json"
    if not f.is_file():
        rate = "" if sample_rate == 24000 else f" --sample-rate {sample_rate}"
        raise FileNotFoundError(f"{f} does not exist: build the preset first "
                                f"({PROG} build --preset {preset} --out {out}{rate})")
    print(format_summary(_summary_json(f)))


def main(argv: Optional[Sequence[str]] = None) -> int:
    """CLI entry point: ``build`` a preset or print a built preset's ``summary``. Exit status:
    0 done, 1 an error (one line ``error: ...``), 2 a usage error, 130 interrupted (what is
    done is kept: the same command resumes)."""
    a = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", stream=sys.stderr)
    try:
        if a.cmd == "build":
            build(a.preset, a.out, a.sample_rate, a.seed, a.workers, categories=a.categories)
        else:
            _print_summary(a.preset, a.out, a.sample_rate)
    except KeyboardInterrupt:
        print(f"{PROG}: error: interrupted (finished files are kept; rerun the same command to resume)",
              file=sys.stderr)
        return 130
    except BrokenPipeError:  # `summary | head -2`
        return stdout_closed_status()
    except EXPECTED_ERRORS as exc:
        print_traceback_if_asked()
        print(f"{PROG}: error: {one_line(exc)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
