"""Evaluation items of the corpus builder: plan 5-10 s items from converted clips (per
speaker / track, seeded) and render them by concatenating the planned parts."""
from __future__ import annotations

import dataclasses
import hashlib
import json
from collections import defaultdict
from typing import Sequence

import numpy as np


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


def item_id_of(parts: list[tuple[str, float, float]]) -> str:
    """An evaluation item's id: 12 hex digits of the sha1 of its parts ``[(file, start, seconds)]``."""
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
