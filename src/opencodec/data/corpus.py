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
    <preset>_<rate>/manifests/*.jsonl      train, valid, train_noise, eval_<category>
    <preset>_<rate>/build.log, summary.json

Every step is idempotent: a ``.deb`` present is not downloaded again, an extraction with a
``.done`` marker is not redone, an existing output FLAC (written to a temporary name and
renamed atomically) or ``.failed`` marker is not converted again, an existing eval item is
not cut again, and manifests are rewritten (cheap) from what is on disk.  An interrupted run
simply continues when started again.

The steps live in sibling modules: :mod:`.presets` (the presets), :mod:`.debian` (download,
extract), :mod:`.source_files` (list, cap, split), :mod:`.convert` (decode, normalise, FLAC),
:mod:`.eval_items` (plan and cut evaluation items), :mod:`.loudness` (level and mixing
helpers); this module runs them (:func:`build`), writes the manifests and the summary, and is
the command line.
"""
from __future__ import annotations

import argparse
import dataclasses
import hashlib
import importlib.util
import json
import logging
import math
import os
import shutil
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from ..argtypes import positive_int
from ._jsonl import read_jsonl, write_jsonl
from .convert import MIDI_GAIN, convert_all, convert_file
from .debian import ARCHIVE_EXTS, _unpack_wad_midi, download, extract
from .eval_items import Clip, _item_id, plan_eval_items, render_item
from .loudness import gated_rms_db, mix_at_snr, normalize_loudness
from .presets import EVAL_CATEGORIES, PRESETS, UNSEEN_CATEGORIES, Preset
from .probe import build_probe
from .source_files import SourceFile, cap_files, list_source_files, split_groups
from .sources import AUDIO_EXTS, SOURCES, Selector, Source, _rx, _stem_group
from .split import SpeakerUse, check_split, role_of

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
NOISY_OF = {"clean_speech": "noisy_speech", "speech_unseen": "noisy_speech_unseen"}
EVAL_SNRS_DB = (0.0, 5.0, 10.0, 15.0)

# ---------------------------------------------------------------------------------------
# Manifests
# ---------------------------------------------------------------------------------------


def _entry(path: str, manifest_dir: Path, category: str, source: str, **extra: object) -> dict:
    import soundfile as sf
    info = sf.info(path)
    return {"path": os.path.relpath(path, manifest_dir), "duration": round(float(info.duration), 4),
            "sample_rate": int(info.samplerate), "channels": int(info.channels),
            "category": category, "source": source, **extra}


# ---------------------------------------------------------------------------------------
# Build
# ---------------------------------------------------------------------------------------


def build(preset: str, out: Path, sample_rate: int = 24000, seed: int = 1234,
          workers: int = 2, sources: Optional[dict[str, Source]] = None,
          presets: Optional[dict[str, Preset]] = None,
          roots: Optional[dict[str, Path]] = None,
          categories: Optional[Sequence[str]] = None) -> dict:
    """Build (or resume) a preset; returns the summary dict (also written to summary.json).

    Args:
        preset: key of ``presets`` (``tiny``, ``small``, ``full``).
        out: root folder (caches shared between presets; see the module docstring).
        sample_rate: rate in Hz of every converted file and eval item.
        seed: seed of the caps, the train/valid split, the eval cutting and mixing.
        workers: conversion processes.
        sources, presets: override the built-in tables (tests).
        roots: package name -> already extracted tree, used instead of downloading.
        categories: build only the preset's sources of these categories (``speech``,
            ``music``, ``general``, ``noise``); ``None`` builds all.

    Returns a dict with ``table`` (split -> category -> files/hours), ``seconds_total``,
    ``seconds_fetch`` (download + extraction), ``skipped_files``, ``notes``, ``manifests``.
    Sets ``$OPENCODEC_SF2`` to the extracted sound font when a MIDI source is built."""
    sources = sources or SOURCES
    presets = presets or PRESETS
    p = presets[preset]
    if categories is not None:
        unknown = set(categories) - {"speech", "music", "general", "noise"}
        if unknown:
            raise ValueError(f"unknown categories {sorted(unknown)} (speech, music, general, noise)")
        p = dataclasses.replace(p, sources={n: c for n, c in p.sources.items()
                                            if sources[n].category in categories})
    out = out.resolve()
    work = out / f"{preset}_{sample_rate // 1000}k"
    man_dir = work / "manifests"
    audio_dir = out / f"audio_{sample_rate}"
    eval_dir = out / f"eval_{sample_rate}"
    man_dir.mkdir(parents=True, exist_ok=True)
    fh = logging.FileHandler(work / "build.log")
    fh.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    log.addHandler(fh)
    t0 = time.time()
    try:
        return _build(preset, p, sources, out, work, man_dir, audio_dir, eval_dir, sample_rate,
                      seed, workers, roots or {}, t0)
    finally:
        log.removeHandler(fh)
        fh.close()


def _build(preset: str, p: Preset, sources: dict[str, Source], out: Path, work: Path,
           man_dir: Path, audio_dir: Path, eval_dir: Path, sample_rate: int, seed: int,
           workers: int, roots: dict[str, Path], t0: float) -> dict:
    log.info("build preset=%s rate=%d out=%s", preset, sample_rate, out)
    notes: list[str] = []
    # 1. download + extract
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
    t_fetch = time.time() - t0
    # 2. list + cap + convert
    converted: dict[str, list[tuple[SourceFile, float, int, int]]] = {}
    skipped: list[tuple[str, str]] = []
    for name, cap in p.sources.items():
        src = sources[name]
        files = list_source_files(src, pkg_roots[src.package], audio_dir)
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
        files = cap_files(files, cap, seed)
        res = convert_all(files, sample_rate, workers)
        import soundfile as sf
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
    # 3. the speech split (speaker- and source-disjoint roles), then train / valid / noise
    speakers = check_split(
        SpeakerUse(name, sources[name].package, sources[name].speaker(f.group),
                   role_of(sources[name].role, sources[name].eval_category))
        for name, ok in converted.items() if sources[name].category == "speech"
        and sources[name].role in ("train", "probe", "eval") for f, _, _, _ in ok)
    for role, keys in speakers.items():
        log.info("speech %-22s %3d speakers: %s", role, len(keys), ", ".join(keys))
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
            rows[split].append({**_entry(f.out_path, man_dir, src.category, name),
                                "group": f"{name}/{f.group}", "original": f.rel})
    # 4. evaluation items
    eval_rows = _build_eval(p, sources, converted, man_dir, audio_dir, eval_dir, sample_rate, seed, notes)
    probe_rows = eval_rows.pop("probe", [])
    for cat, r in eval_rows.items():
        rows[f"eval_{cat}"] = r
    unseen = [c for c in UNSEEN_CATEGORIES if c in p.eval_max_items]
    for split in ("train", "valid", "train_noise", *[f"eval_{c}" for c in (*EVAL_CATEGORIES, *unseen)]):
        write_jsonl(man_dir / f"{split}.jsonl", rows.get(split, []))
    if probe_rows:
        rows["probe_speech"] = probe_rows
        probe_dir = build_probe(work, speech=[
            {**{k: v for k, v in r.items() if k != "parts"},
             "path": os.path.relpath(os.path.normpath(man_dir / r["path"]), work / "probe")}
            for r in probe_rows], seed=0)
        notes.append(f"validation probe: {probe_dir}")
    write_jsonl(work / "skipped.jsonl", [{"path": a, "reason": b} for a, b in skipped])
    # 5. summary
    table: dict[str, dict[str, dict[str, float]]] = defaultdict(dict)
    for split, r in rows.items():
        by_cat: dict[str, list[float]] = defaultdict(list)
        for e in r:
            by_cat[e["category"]].append(e["duration"])
        for cat, ds in by_cat.items():
            table[split][cat] = {"files": len(ds), "hours": round(sum(ds) / 3600, 4)}
    summary = {"preset": preset, "sample_rate": sample_rate, "seed": seed,
               "manifests": str(man_dir), "seconds_total": round(time.time() - t0, 1),
               "seconds_fetch": round(t_fetch, 1), "skipped_files": len(skipped),
               "notes": notes, "table": table,
               "speakers": {role: len(keys) for role, keys in speakers.items()}}
    (work / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(format_summary(summary))
    return summary


def _build_eval(p: Preset, sources: dict[str, Source], converted: dict, man_dir: Path, audio_dir: Path,
                eval_dir: Path, sample_rate: int, seed: int, notes: list[str]) -> dict[str, list[dict]]:
    """Cut the evaluation items of every clean category (and the ``probe`` speech items),
    then mix each clean speech category's items with the evaluation noise."""
    import soundfile as sf
    # Clip keys are paths relative to audio_dir, so item ids (and the seeded selection of
    # items) do not depend on where the corpus lives.
    plans: dict[str, list[tuple[str, list[tuple[str, float, float]], int, str]]] = defaultdict(list)
    for name, ok in converted.items():
        src = sources[name]
        cat = "probe" if src.role == "probe" else src.eval_category if src.role == "eval" else None
        if cat is None:
            continue
        # issue 19's categories group items by speaker; the public set keeps its groups
        by_speaker = cat == "probe" or cat in UNSEEN_CATEGORIES
        rel = {f.out_path: os.path.relpath(f.out_path, audio_dir) for f, _, _, _ in ok}
        spk = {rel[f.out_path]: src.speaker(f.group) for f, _, _, _ in ok}
        clips = [Clip(rel[f.out_path], f"{name}/{src.speaker(f.group) if by_speaker else f.group}", d)
                 for f, d, _, _ in ok]
        chans = {rel[f.out_path]: ch for f, _, _, ch in ok}
        for parts in plan_eval_items(clips, seed):
            plans[cat].append((name, parts, max(chans[k] for k, _, _ in parts),
                               f"{name}/{spk[parts[0][0]]}"))
    out: dict[str, list[dict]] = {}
    for cat in ("clean_speech", "music", "general", "speech_unseen", "probe"):
        items = sorted(plans.get(cat, []),
                       key=lambda it: hashlib.sha1(f"{seed}:{_item_id(it[1])}".encode()).hexdigest())
        per_speaker = p.items_per_speaker.get(cat)
        if per_speaker is not None:
            count: dict[str, int] = defaultdict(int)
            kept = []
            for it in items:
                count[it[3]] += 1
                if count[it[3]] <= per_speaker:
                    kept.append(it)
            items = kept
        cap = p.eval_max_items.get(cat)
        items = items[:cap] if cap is not None else items
        rows = []
        for name, parts, ch, speaker in items:
            iid = _item_id(parts)
            path = eval_dir / cat / f"{iid}.flac"
            if not path.exists():
                path.parent.mkdir(parents=True, exist_ok=True)
                x = render_item([(str(audio_dir / k), a, b) for k, a, b in parts], sample_rate, ch)
                tmp = str(path) + ".tmp.flac"
                sf.write(tmp, x.T, sample_rate, subtype="PCM_16", format="FLAC")
                os.replace(tmp, path)
            extra = {"speaker": speaker} if per_speaker is not None else {}
            rows.append(_entry(str(path), man_dir, "clean_speech" if cat == "probe" else cat, name,
                               item_id=iid, **extra,
                               parts=[[os.path.relpath(audio_dir / k, man_dir), a, b] for k, a, b in parts]))
        if rows or cat in p.eval_max_items:
            out[cat] = rows
        if not rows and cat in p.eval_max_items:
            notes.append(f"eval category {cat}: no items in this preset")
    noise = sorted((f.out_path, d) for name, ok in converted.items()
                   if sources[name].role == "eval_noise" for f, d, _, _ in ok)
    for clean_cat, noisy_cat in NOISY_OF.items():
        if noisy_cat not in p.eval_max_items:
            continue
        if not out.get(clean_cat):
            out[noisy_cat] = []
            continue
        if not noise:
            notes.append(f"{noisy_cat}: no eval noise source in this preset")
            out[noisy_cat] = []
            continue
        cap = p.eval_max_items.get(noisy_cat)
        out[noisy_cat] = [_noisy_item(e, noise, noisy_cat, man_dir, eval_dir, sample_rate, seed)
                          for e in (out[clean_cat][:cap] if cap is not None else out[clean_cat])]
    return out


def _noisy_item(e: dict, noise: list[tuple[str, float]], category: str, man_dir: Path, eval_dir: Path,
                sample_rate: int, seed: int) -> dict:
    """Mix one clean item with the evaluation noise at SNR 0/5/10/15 dB (peak-limited to 0.99).

    SNR, noise file and offset depend only on (seed, item): the same clean item gets the same
    noisy version in every preset."""
    import soundfile as sf
    h = int(hashlib.sha1(f"{seed}:noisy:{e['item_id']}".encode()).hexdigest(), 16)
    rng = np.random.default_rng([seed, h % 2**63])
    snr = EVAL_SNRS_DB[h % len(EVAL_SNRS_DB)]
    npath, ndur = noise[int(rng.integers(len(noise)))]
    offset = float(rng.uniform(0, max(0.0, ndur - e["duration"])))
    path = eval_dir / category / f"{e['item_id']}_snr{int(snr)}.flac"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        x, _ = sf.read(os.path.normpath(man_dir / e["path"]), dtype="float32", always_2d=True)
        x = x.T
        nz, _ = sf.read(npath, dtype="float32", always_2d=True)
        nz = nz.T.mean(0, keepdims=True)
        start = int(offset * sample_rate)
        nz = np.tile(nz, (1, math.ceil((x.shape[1] + start) / max(1, nz.shape[1])) + 1))
        nz = np.repeat(nz[:, start:start + x.shape[1]], x.shape[0], 0)
        y = mix_at_snr(x, nz, snr)
        peak = float(np.abs(y).max())
        if peak > 0.99:
            y = y * (0.99 / peak)
        tmp = str(path) + ".tmp.flac"
        sf.write(tmp, y.T, sample_rate, subtype="PCM_16", format="FLAC")
        os.replace(tmp, path)
    extra = {"speaker": e["speaker"]} if "speaker" in e else {}
    return _entry(str(path), man_dir, category, e["source"], item_id=f"{e['item_id']}_snr{int(snr)}",
                  snr_db=snr, clean_path=e["path"], noise=os.path.relpath(npath, man_dir),
                  noise_offset=round(offset, 3), **extra)


def format_summary(summary: dict) -> str:
    """Render the hours-per-split/category table of a build summary as text."""
    lines = [f"preset {summary['preset']} @ {summary['sample_rate']} Hz  "
             f"({summary['seconds_total']} s, {summary['skipped_files']} files skipped)",
             f"{'split':<22}{'category':<14}{'files':>7}{'hours':>9}"]
    for split in sorted(summary["table"]):
        for cat, v in sorted(summary["table"][split].items()):
            lines.append(f"{split:<22}{cat:<14}{v['files']:>7}{v['hours']:>9.3f}")
    for n in summary.get("notes", []):
        lines.append(f"note: {n}")
    return "\n".join(lines)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """CLI entry point: ``build`` a preset or print a built preset's ``summary``."""
    ap = argparse.ArgumentParser(prog="python -m opencodec.data.corpus", description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build", help="download, extract, convert, cut and write manifests")
    b.add_argument("--preset", choices=sorted(PRESETS), default="tiny")
    b.add_argument("--out", type=Path, default=Path("data"))
    b.add_argument("--sample-rate", type=positive_int, default=24000)
    b.add_argument("--seed", type=int, default=1234)
    b.add_argument("--workers", type=positive_int, default=min(4, os.cpu_count() or 1))
    b.add_argument("--categories", nargs="+", default=None, choices=("speech", "music", "general", "noise"),
                   help="build only the preset's sources of these categories (speech music general noise)")
    s = sub.add_parser("summary", help="print the summary of a built preset")
    s.add_argument("--preset", choices=sorted(PRESETS), default="tiny")
    s.add_argument("--out", type=Path, default=Path("data"))
    s.add_argument("--sample-rate", type=positive_int, default=24000)
    a = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", stream=sys.stderr)
    if a.cmd == "build":
        build(a.preset, a.out, a.sample_rate, a.seed, a.workers, categories=a.categories)
    else:
        f = a.out / f"{a.preset}_{a.sample_rate // 1000}k" / "summary.json"
        print(format_summary(json.loads(f.read_text())))
    return 0


if __name__ == "__main__":
    sys.exit(main())
