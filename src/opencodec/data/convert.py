"""Decode (soundfile, fluidsynth for MIDI, PyAV/ffmpeg for G.722), resample, loudness-normalise
and write FLAC: the conversion step of the corpus builder.

Layout under the corpus root::

    audio_<rate>/<source>/<rel>.flac       converted files (resampled, loudness-normalised)
    audio_<rate>/<source>/<rel>.flac.failed  marker + reason for unreadable / too-short inputs
"""
from __future__ import annotations

import logging
import math
import os
import shutil
import signal
import subprocess
from concurrent.futures import ProcessPoolExecutor
from typing import Optional

import numpy as np

from .debian import _run
from .loudness import gated_rms_db, normalize_loudness
from .source_files import SourceFile

# the builder's logger: these steps' lines go to the build.log that build() attaches to it
log = logging.getLogger("opencodec.data.corpus")

MIDI_GAIN = 0.25  # fluidsynth synth gain; DATA.md: 0.2-0.3, higher clips


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
        if res.returncode != 0:  # its last words, in one line short enough for the .failed reason
            tail = " ".join(res.stderr.decode(errors="replace").split())[-250:]
            raise RuntimeError(f"ffmpeg failed ({res.returncode}): {tail}")
        return np.frombuffer(res.stdout, dtype=np.float32)[None, :].copy(), 16000
    import soundfile as sf
    data, sr = sf.read(path, dtype="float32", always_2d=True)
    return np.ascontiguousarray(data.T), int(sr)


def readable(path: str) -> bool:
    """Whether the output ``path`` exists, its header reads and so does its last sample: a
    damaged one (cut short by a partial copy of the corpus folder, overwritten by something
    else) is redone, not trusted."""
    if not os.path.exists(path):
        return False
    import soundfile as sf
    try:
        with sf.SoundFile(path) as fh:
            if fh.frames > 0:
                fh.seek(fh.frames - 1)
                return fh.read(1).shape[0] == 1
    except Exception:  # soundfile's LibsndfileError / RuntimeError: not audio it can read
        return False
    return True


def convert_file(src_path: str, out_path: str, sample_rate: int, min_seconds: float = 0.2,
                 max_channels: int = 2, target_db: float = -20.0) -> tuple[str, Optional[str]]:
    """Decode -> resample (soxr HQ) -> loudness-normalise -> FLAC (PCM_16) at ``out_path``.

    Channel count is kept (capped at ``max_channels`` by dropping extra channels).
    Returns ``(out_path, None)`` on success (also if it already existed) or
    ``(out_path, reason)`` when the input is skipped; the reason is stored in
    ``out_path + ".failed"`` so the file is not retried."""
    failed = out_path + ".failed"
    if readable(out_path):
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


def _ignore_sigint() -> None:
    """Initializer of a conversion process: Ctrl-C is the parent's to handle."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


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
        # workers ignore Ctrl-C: the parent stops them (finishing the files they are writing,
        # each written atomically) and reports the interruption in one line
        # a fork pool starts all its processes at once: no more than there are chunks of 8
        ex = ProcessPoolExecutor(min(workers, math.ceil(len(pending) / 8)), initializer=_ignore_sigint)
        try:
            for out, reason in ex.map(_convert_star, pending, chunksize=8):
                results[out] = reason
        except BaseException:
            ex.shutdown(wait=True, cancel_futures=True)
            raise
        ex.shutdown(wait=True)
    for t in todo:
        if t[1] not in results:
            results[t[1]] = _convert_star(t)[1]
    return results
