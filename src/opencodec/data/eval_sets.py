"""The evaluation sets of a corpus build: cut the clean items of every evaluation category
(and the probe's speech items) from the converted clips, and mix the clean speech items with
the evaluation noise.

Layout under the corpus root::

    eval_<rate>/<category>/<item_id>.flac                      clean items (id = hash of the parts)
    eval_<rate>/<noisy category>/<item_id>_snr<S>_<mix>.flac   noisy items; ``mix`` hashes
                                                               everything that decides the mix
"""
from __future__ import annotations

import hashlib
import json
import math
import os
from collections import defaultdict
from pathlib import Path

import numpy as np

from .convert import readable
from .eval_items import Clip, item_id_of, plan_eval_items, render_item
from .loudness import mix_at_snr
from .manifests import entry as _entry
from .presets import UNSEEN_CATEGORIES, Preset
from .sources import Source

NOISY_OF = {"clean_speech": "noisy_speech", "speech_unseen": "noisy_speech_unseen"}
EVAL_SNRS_DB = (0.0, 5.0, 10.0, 15.0)


def build_eval(p: Preset, sources: dict[str, Source], converted: dict, man_dir: Path, audio_dir: Path,
               eval_dir: Path, sample_rate: int, seed: int, notes: list[str]) -> dict[str, list[dict]]:
    """Cut the evaluation items of every clean category (and the ``probe`` speech items),
    then mix each clean speech category's items with the evaluation noise.

    Returns evaluation category (and ``probe``) -> manifest rows (paths relative to
    ``man_dir``); appends what is missing to ``notes``."""
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
                       key=lambda it: hashlib.sha1(f"{seed}:{item_id_of(it[1])}".encode()).hexdigest())
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
            iid = item_id_of(parts)
            path = eval_dir / cat / f"{iid}.flac"
            if not readable(str(path)):
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
        out[noisy_cat] = [noisy_item(e, noise, noisy_cat, man_dir, audio_dir, eval_dir, sample_rate, seed)
                          for e in (out[clean_cat][:cap] if cap is not None else out[clean_cat])]
    return out


def noisy_item(e: dict, noise: list[tuple[str, float]], category: str, man_dir: Path, audio_dir: Path,
               eval_dir: Path, sample_rate: int, seed: int) -> dict:
    """Mix one clean item with the evaluation noise at SNR 0/5/10/15 dB (peak-limited to 0.99).

    SNR, noise file and offset depend only on (seed, item): the same clean item gets the same
    noisy version in every preset. The file name carries :func:`mix_key` of everything that
    decides the audio, so a file mixed with another seed (another noise, offset or SNR) is
    never taken for this one."""
    import soundfile as sf
    h = int(hashlib.sha1(f"{seed}:noisy:{e['item_id']}".encode()).hexdigest(), 16)
    rng = np.random.default_rng([seed, h % 2**63])
    snr = EVAL_SNRS_DB[h % len(EVAL_SNRS_DB)]
    npath, ndur = noise[int(rng.integers(len(noise)))]
    offset = float(rng.uniform(0, max(0.0, ndur - e["duration"])))
    start = int(offset * sample_rate)
    key = mix_key(e["item_id"], snr, os.path.relpath(npath, audio_dir), start)
    path = eval_dir / category / f"{e['item_id']}_snr{int(snr)}_{key}.flac"
    if not readable(str(path)):
        path.parent.mkdir(parents=True, exist_ok=True)
        x, _ = sf.read(os.path.normpath(man_dir / e["path"]), dtype="float32", always_2d=True)
        x = x.T
        nz, _ = sf.read(npath, dtype="float32", always_2d=True)
        nz = nz.T.mean(0, keepdims=True)
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


def mix_key(item_id: str, snr: float, noise: str, start: int) -> str:
    """Short hash of what decides a noisy item's audio besides the rate (the folder's):
    the clean item, the SNR, the noise file (relative to the audio folder) and the first
    noise sample."""
    return hashlib.sha1(json.dumps([item_id, snr, noise, start]).encode()).hexdigest()[:10]
