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
import subprocess
import sys
import time
import zipfile
from collections import defaultdict
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Iterable, Optional, Sequence

import numpy as np

# re-exported: the source table and its helpers used to live here
from ..argtypes import positive_int
from .sources import AUDIO_EXTS, SOURCES, Selector, Source, _rx, _stem_group  # noqa: F401
from ._jsonl import read_jsonl, write_jsonl  # noqa: F401 (re-exported)
from .probe import build_probe
from .split import SpeakerUse, check_split, role_of

log = logging.getLogger("opencodec.data.corpus")

SOUNDFONT_PACKAGE = "fluid-soundfont-gm"
SOUNDFONT_REL = "usr/share/sounds/sf2/FluidR3_GM.sf2"
MIDI_GAIN = 0.25  # fluidsynth synth gain; DATA.md: 0.2-0.3, higher clips
ARCHIVE_EXTS = (".pk3", ".zip", ".wz")
EVAL_CATEGORIES = ("clean_speech", "noisy_speech", "music", "general")
UNSEEN_CATEGORIES = ("speech_unseen", "noisy_speech_unseen")  # issue 19, presets that have them
NOISY_OF = {"clean_speech": "noisy_speech", "speech_unseen": "noisy_speech_unseen"}
EVAL_SNRS_DB = (0.0, 5.0, 10.0, 15.0)

# ---------------------------------------------------------------------------------------
# Presets (the sources themselves: opencodec.data.sources.SOURCES)
# ---------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Preset:
    """Which sources a preset uses.

    Attributes:
        sources: source name -> cap in hours of converted audio (``None`` = everything).
        eval_max_items: evaluation category -> maximum number of items (``None`` = all);
            items are a prefix of one seeded order, so a smaller preset's evaluation items
            are a subset of a larger preset's ones (same seed/rate).
        valid_fraction: fraction of each training source's hours held out (whole groups).
        items_per_speaker: evaluation category (or ``probe``) -> at most this many items
            per speaker group, so one long source does not fill the category.
    """

    sources: dict[str, Optional[float]]
    eval_max_items: dict[str, Optional[int]]
    valid_fraction: float = 0.05
    items_per_speaker: dict[str, int] = dataclasses.field(default_factory=dict)


_EVAL_ALL = {"tuxpaint_fr": None, "ktuberling_eval": None, "asterisk_fr": None,
             "singularity_music": None, "ufoai_general": None, "ufoai_noise": None}

_UNSEEN = {"zeroad_speech": None, "menardi_speech": None, "redeclipse_speech": None,
           "freedroid_speech": None}
_PROBE = {"hedgewars_probe": None}
_PER_SPEAKER = {"speech_unseen": 24, "noisy_speech_unseen": 24, "probe": 8}
_TRAIN_SPEECH = [n for n, s in SOURCES.items() if s.role == "train" and s.category == "speech"
                 and not n.startswith("tiny_")]

PRESETS: dict[str, Preset] = {
    "tiny": Preset(
        {"tiny_alsa_speech": None, "tiny_alsa_noise": None, "tiny_fd_general": None,
         "tiny_fd_speech_eval": None, "tiny_fd_general_eval": None, "tiny_alsa_noise_eval": None},
        {c: None for c in EVAL_CATEGORIES}, valid_fraction=0.2),
    "small": Preset(
        {"ktuberling_speech": 0.3, "fillets_speech": 0.45, "asterisk_en": 0.42,
         "wesnoth_music": 1.1, "megaglest_general": None, "wesnoth_general": 0.15, "megaglest_noise": None, **_EVAL_ALL},
        {"clean_speech": 120, "noisy_speech": 120, "music": 60, "general": None}),
    # issue 19: every released training speech source in full, small's music and general,
    # the public evaluation set, the speech_unseen evaluation and the speech probe
    "wide": Preset(
        {**{n: None for n in _TRAIN_SPEECH}, "wesnoth_music": 1.1, "megaglest_general": None,
         "wesnoth_general": 0.15, "megaglest_noise": None, **_EVAL_ALL, **_UNSEEN, **_PROBE},
        {"clean_speech": 120, "noisy_speech": 120, "music": 60, "general": None,
         "speech_unseen": None, "noisy_speech_unseen": None}, items_per_speaker=_PER_SPEAKER),
    "full": Preset(
        {**{n: None for n, s in SOURCES.items() if s.role in ("train", "train_noise")
            and not n.startswith("tiny_")}, **_EVAL_ALL, **_UNSEEN, **_PROBE},
        {c: None for c in (*EVAL_CATEGORIES, *UNSEEN_CATEGORIES)}, items_per_speaker=_PER_SPEAKER),
}

# ---------------------------------------------------------------------------------------
# Audio helpers (pure functions, unit-tested)
# ---------------------------------------------------------------------------------------


def gated_rms_db(audio: np.ndarray, sample_rate: int, block_s: float = 0.05) -> float:
    """Gated RMS level in dBFS of ``audio`` [C, T] (float, full scale 1.0).

    Blocks of ``block_s`` seconds of the channel-mean power are gated like ITU BS.1770
    (absolute gate -70 dBFS, then relative gate 10 dB under the mean of the kept blocks),
    but without K-weighting. Returns ``-inf`` for silence.
    """
    power = np.mean(audio.astype(np.float64) ** 2, axis=0)
    n = max(1, int(block_s * sample_rate))
    nb = max(1, len(power) // n)
    blocks = power[: nb * n].reshape(nb, n).mean(axis=1) if len(power) >= n else power.mean(keepdims=True)
    blocks = blocks[blocks > 10 ** (-70 / 10)]
    if blocks.size == 0:
        return float("-inf")
    rel = blocks.mean() * 10 ** (-10 / 10)
    kept = blocks[blocks >= rel]
    return float(10 * np.log10(kept.mean()))


def normalize_loudness(audio: np.ndarray, sample_rate: int, target_db: float = -20.0,
                       peak: float = 0.95) -> np.ndarray:
    """Scale ``audio`` [C, T] to a gated RMS of ``target_db`` dBFS, then lower the gain if
    needed so the absolute peak is at most ``peak`` (no clipping, no limiter).
    Silence is returned unchanged."""
    level = gated_rms_db(audio, sample_rate)
    if not math.isfinite(level):
        return audio
    gain = 10 ** ((target_db - level) / 20)
    mx = float(np.max(np.abs(audio))) * gain
    if mx > peak:
        gain *= peak / mx
    return (audio * gain).astype(np.float32)


def mix_at_snr(clean: np.ndarray, noise: np.ndarray, snr_db: float) -> np.ndarray:
    """Return ``clean + g * noise`` with ``g`` chosen so that the power ratio (over the
    whole signals, all channels) is ``snr_db`` dB. Shapes [C, T], equal; silent noise
    returns ``clean``."""
    ps = float(np.mean(clean.astype(np.float64) ** 2))
    pn = float(np.mean(noise.astype(np.float64) ** 2))
    if pn <= 0 or ps <= 0:
        return clean.copy()
    g = math.sqrt(ps / (pn * 10 ** (snr_db / 10)))
    return (clean + g * noise).astype(np.float32)


# ---------------------------------------------------------------------------------------
# Steps: download, extract, list, convert
# ---------------------------------------------------------------------------------------


def _run(cmd: Sequence[str], cwd: Optional[Path] = None) -> None:
    res = subprocess.run(list(cmd), cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if res.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({res.returncode}): {res.stderr.strip()[-500:]}")


def download(package: str, debs_dir: Path) -> Path:
    """``apt-get download`` ``package`` into ``debs_dir`` (skipped if a .deb is there).
    Downloads into a private partial folder and moves the file in when complete."""
    debs_dir.mkdir(parents=True, exist_ok=True)
    found = sorted(debs_dir.glob(f"{package}_*.deb"))
    if found:
        return found[-1]
    tmp = debs_dir / ".partial" / package
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    t0 = time.time()
    _run(["apt-get", "download", package], cwd=tmp)
    deb = next(tmp.glob("*.deb"))
    dst = debs_dir / deb.name
    os.replace(deb, dst)
    shutil.rmtree(tmp, ignore_errors=True)
    log.info("downloaded %s (%.1f MB, %.1f s)", dst.name, dst.stat().st_size / 1e6, time.time() - t0)
    return dst


def extract(deb: Path, package: str, extract_dir: Path) -> Path:
    """``dpkg -x`` the package into ``extract_dir/<package>`` and unzip game archives
    (.pk3/.zip/.wz) into ``<package>/_unzipped/<archive name>/``. Skipped when the
    ``<package>.done`` marker exists."""
    dst = extract_dir / package
    done = extract_dir / f"{package}.done"
    if done.exists() and dst.is_dir():
        return dst
    tmp = extract_dir / f"{package}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.rmtree(dst, ignore_errors=True)
    tmp.mkdir(parents=True)
    _run(["dpkg", "-x", str(deb), str(tmp)])
    for arc in [p for p in tmp.rglob("*") if p.suffix.lower() in ARCHIVE_EXTS and p.is_file()]:
        try:
            with zipfile.ZipFile(arc) as z:  # audio members only (0ad's public.zip is 3 GB)
                z.extractall(tmp / "_unzipped" / arc.name,
                             [n for n in z.namelist() if n.lower().endswith(AUDIO_EXTS)])
            arc.unlink()
        except zipfile.BadZipFile as e:
            log.warning("cannot unzip %s: %s", arc, e)
    seen: set[str] = set()
    for wad in sorted(p for p in tmp.rglob("*.wad") if p.is_file()):
        _unpack_wad_midi(wad, tmp / "_wadmidi" / wad.stem, seen)
    os.replace(tmp, dst)
    done.write_text(deb.name + "\n")
    log.info("extracted %s", package)
    return dst


def _unpack_wad_midi(wad: Path, dst: Path, seen: set[str]) -> int:
    """Write the Standard-MIDI music lumps (``D_*`` starting with ``MThd``) of a Doom WAD
    to ``dst/<LUMP>.mid``, skipping contents already in ``seen`` (sha1). Returns count."""
    import struct
    data = wad.read_bytes()
    if data[:4] not in (b"IWAD", b"PWAD"):
        return 0
    n, off = struct.unpack("<ii", data[4:12])
    count = 0
    for i in range(n):
        pos, size, raw = struct.unpack("<ii8s", data[off + 16 * i: off + 16 * i + 16])
        name = raw.rstrip(b"\0").decode("ascii", "replace")
        lump = data[pos:pos + size]
        if not name.startswith("D_") or lump[:4] != b"MThd":
            continue
        h = hashlib.sha1(lump).hexdigest()
        if h in seen:
            continue
        seen.add(h)
        dst.mkdir(parents=True, exist_ok=True)
        (dst / f"{name}.mid").write_bytes(lump)
        count += 1
    return count


@dataclasses.dataclass
class SourceFile:
    """One input audio file of a source (before conversion)."""

    source: str
    rel: str            # path relative to the package extraction root
    group: str
    src_path: str       # absolute input path
    out_path: str       # absolute output FLAC path
    est_duration: float  # seconds, estimated from the header (-1 if unreadable)


def list_source_files(src: Source, root: Path, audio_dir: Path) -> list[SourceFile]:
    """All files of ``src`` under the extracted package ``root``, sorted by path."""
    out: list[SourceFile] = []
    for dirpath, _dirs, files in os.walk(root):
        for f in files:
            p = Path(dirpath) / f
            rel = p.relative_to(root).as_posix()
            g = src.select(rel)
            if g is None:
                continue
            dst = audio_dir / src.name / (rel.rsplit(".", 1)[0] + ".flac")
            out.append(SourceFile(src.name, rel, g, str(p), str(dst), _estimate_duration(p)))
    out.sort(key=lambda s: s.rel)
    return out


def _estimate_duration(path: Path) -> float:
    if path.suffix.lower() == ".mid":
        return -1.0  # unknown before rendering (caps do not apply to MIDI sources)
    if path.suffix.lower() == ".g722":
        return path.stat().st_size / 8000.0  # 64 kbit/s
    try:
        import soundfile as sf
        return float(sf.info(str(path)).duration)
    except Exception:
        return -1.0


def _seeded_order(keys: Iterable[str], seed: int) -> list[str]:
    return sorted(keys, key=lambda k: hashlib.sha1(f"{seed}:{k}".encode()).hexdigest())


def cap_files(files: list[SourceFile], max_hours: Optional[float], seed: int) -> list[SourceFile]:
    """Keep whole groups (in a seeded order) until ``max_hours`` is reached; inside the
    last group, files are taken in order until the cap (so single-group sources are capped
    too). ``None`` keeps everything."""
    if max_hours is None:
        return files
    by_group: dict[str, list[SourceFile]] = defaultdict(list)
    for f in files:
        by_group[f.group].append(f)
    left = max_hours * 3600
    kept: list[SourceFile] = []
    for g in _seeded_order(by_group, seed):
        for f in by_group[g]:
            if left <= 0:
                break
            kept.append(f)
            left -= max(f.est_duration, 0)
        if left <= 0:
            break
    return sorted(kept, key=lambda s: s.rel)


def split_groups(group_hours: dict[str, float], valid_fraction: float, seed: int) -> set[str]:
    """Choose the validation groups (whole groups) holding out about ``valid_fraction`` of
    the hours: groups are taken in a seeded order, skipping those that would push the
    held-out hours over 1.5x the target, until the target is reached; if no group is small
    enough, the smallest group is held out. At least one group stays in train; with a
    single group nothing is held out. Returns the set of validation group keys."""
    groups = _seeded_order(group_hours, seed)
    if len(groups) < 2 or valid_fraction <= 0:
        return set()
    target = valid_fraction * sum(group_hours.values())
    chosen: set[str] = set()
    acc = 0.0
    for g in groups:
        if acc >= target or len(chosen) == len(groups) - 1:
            break
        if acc + group_hours[g] <= 1.5 * target:
            chosen.add(g)
            acc += group_hours[g]
    if not chosen:
        chosen.add(min(groups, key=lambda g: (group_hours[g], g)))
    return chosen


def _decode(path: str, sample_rate: int = 48000) -> tuple[np.ndarray, int]:
    """Decode any supported file to float32 [C, T] and its rate (MIDI is rendered with
    fluidsynth at ``sample_rate``, sound font from ``$OPENCODEC_SF2``)."""
    if path.lower().endswith(".mid"):
        sf2 = os.environ.get("OPENCODEC_SF2", "")
        if not sf2 or shutil.which("fluidsynth") is None:
            raise RuntimeError("MIDI needs fluidsynth and the fluid-soundfont-gm sound font")
        import soundfile as sf
        import tempfile
        with tempfile.TemporaryDirectory() as td:
            wav = os.path.join(td, "out.wav")
            _run(["fluidsynth", "-ni", "-q", "-g", str(MIDI_GAIN), "-r", str(sample_rate),
                  "-F", wav, "-T", "wav", sf2, path])
            data, sr = sf.read(wav, dtype="float32", always_2d=True)
        return np.ascontiguousarray(data.T), int(sr)
    if path.lower().endswith(".g722"):
        try:  # PyAV (bundled FFmpeg) decodes in-process, ~40x faster than spawning ffmpeg
            import av
        except ImportError:
            av = None
        if av is not None:
            with av.open(path, format="g722") as c:
                frames = [f.to_ndarray() for f in c.decode(audio=0)]
                rate = int(c.streams.audio[0].rate)
            x = np.concatenate(frames, axis=1).astype(np.float32)[:1]
            if frames and frames[0].dtype == np.int16:
                x /= 32768.0
            return x, rate
        if shutil.which("ffmpeg") is None:
            raise RuntimeError("G.722 needs Debian's ffmpeg (apt-get install ffmpeg)")
        res = subprocess.run(["ffmpeg", "-v", "error", "-f", "g722", "-i", path, "-f", "f32le",
                              "-ac", "1", "-ar", "16000", "-"], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE)
        if res.returncode != 0:
            raise RuntimeError(res.stderr.decode(errors="replace")[-300:])
        return np.frombuffer(res.stdout, dtype=np.float32)[None, :].copy(), 16000
    import soundfile as sf
    data, sr = sf.read(path, dtype="float32", always_2d=True)
    return np.ascontiguousarray(data.T), int(sr)


def convert_file(src_path: str, out_path: str, sample_rate: int, min_seconds: float = 0.2,
                 max_channels: int = 2, target_db: float = -20.0) -> tuple[str, Optional[str]]:
    """Decode -> resample (soxr HQ) -> loudness-normalise -> FLAC (PCM_16) at ``out_path``.

    Channel count is kept (capped at ``max_channels`` by dropping extra channels).
    Returns ``(out_path, None)`` on success (also if it already existed) or
    ``(out_path, reason)`` when the input is skipped; the reason is stored in
    ``out_path + ".failed"`` so the file is not retried."""
    failed = out_path + ".failed"
    if os.path.exists(out_path):
        return out_path, None
    if os.path.exists(failed):
        with open(failed) as fh:
            return out_path, fh.read().strip() or "failed"
    os.makedirs(os.path.dirname(out_path), exist_ok=True)
    try:
        import soundfile as sf
        import soxr
        audio, sr = _decode(src_path, sample_rate)
        audio = audio[:max_channels]
        if audio.shape[1] < min_seconds * sr:
            raise ValueError(f"too short ({audio.shape[1] / sr:.3f} s < {min_seconds} s)")
        if not np.all(np.isfinite(audio)):
            raise ValueError("non-finite samples")
        if sr != sample_rate:
            audio = soxr.resample(audio.T, sr, sample_rate, quality="HQ").T
        audio = normalize_loudness(np.ascontiguousarray(audio, dtype=np.float32), sample_rate, target_db)
        if not math.isfinite(gated_rms_db(audio, sample_rate)):
            raise ValueError("silent")
        tmp = out_path + ".tmp.flac"
        sf.write(tmp, audio.T, sample_rate, subtype="PCM_16", format="FLAC")
        os.replace(tmp, out_path)
        return out_path, None
    except Exception as e:  # unreadable input: log + skip, never crash
        reason = f"{type(e).__name__}: {e}".replace("\n", " ")[:300]
        with open(failed, "w") as fh:
            fh.write(reason + "\n")
        return out_path, reason


def _convert_star(args: tuple) -> tuple[str, Optional[str]]:
    return convert_file(*args)


def convert_all(files: list[SourceFile], sample_rate: int, workers: int,
                min_seconds: float = 0.2) -> dict[str, Optional[str]]:
    """Convert ``files`` in parallel; returns out_path -> failure reason (None = ok)."""
    todo = [(f.src_path, f.out_path, sample_rate, min_seconds) for f in files]
    results: dict[str, Optional[str]] = {}
    pending = [t for t in todo if not (os.path.exists(t[1]) or os.path.exists(t[1] + ".failed"))]
    log.info("convert: %d files (%d already done)", len(todo), len(todo) - len(pending))
    if workers > 1 and len(pending) > 8:
        with ProcessPoolExecutor(workers) as ex:
            for out, reason in ex.map(_convert_star, pending, chunksize=8):
                results[out] = reason
    for t in todo:
        if t[1] not in results:
            results[t[1]] = _convert_star(t)[1]
    return results


# ---------------------------------------------------------------------------------------
# Evaluation items
# ---------------------------------------------------------------------------------------


@dataclasses.dataclass
class Clip:
    """A converted file available for evaluation cutting."""

    key: str       # unique id (output path)
    group: str     # speaker / track; items never mix groups
    duration: float  # seconds


def plan_eval_items(clips: Sequence[Clip], seed: int, min_s: float = 5.0, max_s: float = 10.0,
                    gap_s: float = 0.15) -> list[list[tuple[str, float, float]]]:
    """Plan evaluation items of ``min_s``..``max_s`` seconds.

    Per group (speaker / track), clips are shuffled with ``seed``; each item gets a target
    length drawn uniformly in [min_s, max_s] and is filled by concatenating clips (separated
    by ``gap_s`` of silence, counted in the length); a clip longer than what is missing is
    cut and its rest starts the next item. Leftovers shorter than ``min_s`` are dropped.
    Returns a list of items, each a list of ``(clip key, start_s, end_s)``; deterministic
    given ``clips`` and ``seed``; item order is groups sorted, then time order."""
    rng = np.random.default_rng(seed)
    by_group: dict[str, list[Clip]] = defaultdict(list)
    for c in sorted(clips, key=lambda c: c.key):
        by_group[c.group].append(c)
    items: list[list[tuple[str, float, float]]] = []
    for g in sorted(by_group):
        order = [by_group[g][i] for i in rng.permutation(len(by_group[g]))]
        cur: list[tuple[str, float, float]] = []
        cur_len = 0.0
        target = float(rng.uniform(min_s, max_s))
        for c in order:
            pos = 0.0
            while c.duration - pos >= 0.05:
                need = target - cur_len - (gap_s if cur else 0.0)
                take = min(c.duration - pos, need)
                if take < 0.05:  # only a sliver fits: close the item
                    if cur_len >= min_s - 1e-6:
                        items.append(cur)
                    cur, cur_len, target = [], 0.0, float(rng.uniform(min_s, max_s))
                    continue
                cur_len += take + (gap_s if cur else 0.0)
                cur.append((c.key, pos, pos + take))
                pos += take
                if cur_len >= target - 1e-6:
                    items.append(cur)
                    cur, cur_len, target = [], 0.0, float(rng.uniform(min_s, max_s))
        if cur and cur_len >= min_s - 1e-6:
            items.append(cur)
    return items


def _item_id(parts: list[tuple[str, float, float]]) -> str:
    return hashlib.sha1(json.dumps(parts).encode()).hexdigest()[:12]


def render_item(parts: list[tuple[str, float, float]], sample_rate: int, channels: int,
                gap_s: float = 0.15) -> np.ndarray:
    """Concatenate the planned parts (read from the converted FLACs) into [C, T] float32."""
    import soundfile as sf
    chunks: list[np.ndarray] = []
    gap = np.zeros((channels, int(round(gap_s * sample_rate))), np.float32)
    for i, (path, a, b) in enumerate(parts):
        start, stop = int(round(a * sample_rate)), int(round(b * sample_rate))
        x, _ = sf.read(path, start=start, stop=stop, dtype="float32", always_2d=True)
        x = x.T
        if x.shape[0] != channels:
            x = np.repeat(x[:1], channels, 0) if x.shape[0] == 1 else x.mean(0, keepdims=True)
        if i:
            chunks.append(gap)
        chunks.append(x)
    return np.concatenate(chunks, axis=1)


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
