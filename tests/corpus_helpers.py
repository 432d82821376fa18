"""A fake speech corpus for corpus-builder tests: tone files in three speech packages
(train / probe / speech_unseen) and an evaluation noise package, with their sources and preset."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile as sf

from opencodec.data.corpus import Preset, Source, _rx


def tone(path: Path, seconds: float, freq: float, sr: int = 16000) -> None:
    """A sine of ``freq`` Hz at 0.1, ``seconds`` long, as a 16 kHz WAV at ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    t = np.arange(int(seconds * sr)) / sr
    sf.write(str(path), (0.1 * np.sin(2 * np.pi * freq * t)).astype(np.float32), sr)


def fake_corpus(root: Path, unseen_items: int = 3, unseen_seconds: float = 3.0,
                probe_items: int = 3) -> tuple[dict[str, Source], Preset, dict[str, Path]]:
    """Packages ``tr`` (3 training speakers of 4 clips of 1.5 s), ``un`` (2 unseen speakers of
    ``unseen_items`` clips), ``pr`` (one probe speaker of ``probe_items`` clips of 3 s) and ``nz``
    (12 s of evaluation noise) under ``root``; returns (sources, preset, package roots)."""
    for spk in range(3):
        for i in range(4):
            tone(root / "tr" / f"train/s{spk}/c{i}.wav", 1.5, 200 + 30 * spk + i)
    for spk in range(2):
        for i in range(unseen_items):
            tone(root / "un" / f"unseen/u{spk}/c{i}.wav", unseen_seconds, 300 + 40 * spk + i)
    for i in range(probe_items):
        tone(root / "pr" / f"probe/p0/c{i}.wav", 3.0, 500 + i)
    tone(root / "nz" / "noise/rain.wav", 12.0, 1234.0)
    sources = {s.name: s for s in [
        Source("tr", "tr", "speech", "train", _rx(r"train/([^/]+)/", lambda m: m.group(1))),
        Source("un", "un", "speech", "eval", _rx(r"unseen/([^/]+)/", lambda m: m.group(1)), "speech_unseen"),
        Source("pr", "pr", "speech", "probe", _rx(r"probe/([^/]+)/", lambda m: m.group(1))),
        Source("nz", "nz", "noise", "eval_noise", _rx(r"noise/([^/]+)\.wav$", lambda m: m.group(1))),
    ]}
    preset = Preset({n: None for n in sources}, {"speech_unseen": None, "noisy_speech_unseen": None},
                    valid_fraction=0.3, items_per_speaker={"speech_unseen": 2, "probe": 8})
    return sources, preset, {p: root / p for p in ("tr", "un", "pr", "nz")}
