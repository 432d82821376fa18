"""The tiny config learns: a short CPU run on real speech (the bundled demo sample) must
improve held-out SI-SNR and mel distance by a clear margin over the untrained model.

The first 4.5 s of the sample train, the rest (a different sentence) is held out. The full
demonstration on the `small` corpus is ``scripts/it_learns.py`` (docs/training/it_learns.md).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from opencodec.audio import convert_audio, read_audio
from opencodec.train.solver import load_config, train

ROOT = Path(__file__).resolve().parents[1]
SR = 24000
STEPS = 150


def _split_sample(folder: Path) -> tuple[Path, Path]:
    wav, rate = read_audio(ROOT / "demo" / "sample_speech_fr.flac")
    x = convert_audio(wav, rate, SR, 1)[0].numpy()
    cut = int(4.5 * SR)
    rows = []
    for name, part in (("train", x[:cut]), ("valid", x[cut:])):
        path = folder / f"{name}.wav"
        sf.write(path, part, SR, subtype="FLOAT")
        row = {"path": str(path), "duration": len(part) / SR, "sample_rate": SR, "channels": 1,
               "category": "speech"}
        (folder / f"{name}.jsonl").write_text(json.dumps(row) + "\n")
        rows.append(folder / f"{name}.jsonl")
    return rows[0], rows[1]


@pytest.mark.slow
def test_tiny_config_learns_on_real_speech(tmp_path):
    train_manifest, valid_manifest = _split_sample(tmp_path)
    cfg = load_config(ROOT / "configs" / "tiny_24khz.yaml", [
        f"data.train=[{train_manifest}]", f"data.valid=[{valid_manifest}]", "threads=1",
        f"optim.steps={STEPS}", f"log.valid_every={STEPS}", f"log.checkpoint_every={STEPS}",
        "log.tensorboard=false", "log.audio=false", "valid.items=1", "valid.seconds=1.9"])
    run = train(cfg, tmp_path / "run", progress=False)
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    valid = {r["step"]: r for r in records if "valid/si_snr/6kbps" in r}
    before, after = valid[0], valid[STEPS]
    for bw in ("1.5kbps", "6kbps"):
        snr0, snr1 = before[f"valid/si_snr/{bw}"], after[f"valid/si_snr/{bw}"]
        mel0, mel1 = before[f"valid/mel_distance/{bw}"], after[f"valid/mel_distance/{bw}"]
        assert np.isfinite([snr0, snr1, mel0, mel1]).all()
        assert snr1 > snr0 + 10, (bw, snr0, snr1)
        assert mel1 < 0.7 * mel0, (bw, mel0, mel1)
    assert after["valid/codebook0/perplexity"] > 8  # the first codebook did not collapse
