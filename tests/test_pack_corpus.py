"""scripts/device/pack_corpus.py: a corpus larger than the cap loses training files only."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import soundfile as sf

_SPEC = importlib.util.spec_from_file_location(
    "pack_corpus", Path(__file__).resolve().parents[1] / "scripts" / "device" / "pack_corpus.py")
pack_corpus = importlib.util.module_from_spec(_SPEC)  # type: ignore[arg-type]
_SPEC.loader.exec_module(pack_corpus)  # type: ignore[union-attr]


def _manifest(root: Path, split: str, n: int, category: str, seconds: float) -> None:
    rng = np.random.default_rng(len(split) + n)
    rows = []
    for i in range(n):
        path = root / "audio" / split / f"{i}.flac"
        path.parent.mkdir(parents=True, exist_ok=True)
        sf.write(str(path), (0.1 * rng.standard_normal(int(seconds * 24000))).astype(np.float32), 24000)
        rows.append({"path": f"../audio/{split}/{i}.flac", "duration": seconds, "sample_rate": 24000,
                     "channels": 1, "category": category})
    (root / "manifests").mkdir(exist_ok=True)
    (root / "manifests" / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_cap_cuts_train_not_valid_or_noise(tmp_path: Path) -> None:
    _manifest(tmp_path, "train", 40, "speech", 2.0)
    _manifest(tmp_path, "valid", 3, "speech", 2.0)
    _manifest(tmp_path, "train_noise", 2, "noise", 2.0)
    out = tmp_path / "packed"
    # white noise at ~35 kbps: ~9 kB per 2 s file, so 0.15 MiB holds ~17 of the 45 files
    pack_corpus.pack(tmp_path / "manifests", out, ["train", "train_noise", "valid"], 0.9, 0.15, None, True)
    count = {s: len((out / "manifests" / f"{s}.jsonl").read_text().splitlines())
             for s in ("train", "train_noise", "valid")}
    assert count["valid"] == 3 and count["train_noise"] == 2
    assert 0 < count["train"] < 40
    size = sum(p.stat().st_size for p in (out / "audio").rglob("*.opus"))
    assert size <= 0.15 * 2**20


def test_seed_changes_which_files_a_cut_keeps() -> None:
    rows = [{"path": f"{i}.flac", "duration": 1.0, "category": "speech" if i % 2 else "music"} for i in range(40)]
    a = [r["path"] for r in pack_corpus._interleave_categories(rows, seed=0)[:10]]
    b = [r["path"] for r in pack_corpus._interleave_categories(rows, seed=1)[:10]]
    assert a != b and sorted(a) != sorted(b)
    assert a == [r["path"] for r in pack_corpus._interleave_categories(rows, seed=0)[:10]]
