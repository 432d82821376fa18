"""Test signals shared by the long-file tests."""

from __future__ import annotations

import numpy as np


def tones_and_noise(seconds: float, rate: int, channels: int = 1, seed: int = 0) -> np.ndarray:
    """[n, C] float32: per channel c a 0.3-amplitude tone at 220 + 110 c Hz plus N(0, 0.1^2)
    noise (seeded), n = round(seconds * rate)."""
    rng = np.random.default_rng(seed)
    n = int(round(seconds * rate))
    t = np.arange(n) / rate
    cols = [0.3 * np.sin(2 * np.pi * (220 + 110 * c) * t) + 0.1 * rng.standard_normal(n)
            for c in range(channels)]
    return np.stack(cols, axis=1).astype(np.float32)
