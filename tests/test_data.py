"""Tests of the corpus builder (fake package tree, no network) and the datasets."""
from __future__ import annotations

import json
import logging
import math
import os
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from opencodec.data import corpus
from opencodec.data.corpus import Clip, Preset, Source, _rx, plan_eval_items, split_groups
from opencodec.data.dataset import (AudioDataset, EvalDataset, apply_reverb, coloured_noise,
                                    iter_eval_items, load_manifests, mix_at_snr, synthetic_rir)


def _write(path: Path, seconds: float, sr: int, channels: int = 1, freq: float = 440.0,
           amp: float = 0.1, seed: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    t = np.arange(int(seconds * sr)) / sr
    rng = np.random.default_rng(seed)
    x = amp * np.sin(2 * np.pi * freq * t)[:, None] + 0.01 * rng.standard_normal((len(t), channels))
    sf.write(str(path), x.astype(np.float32), sr)
    return path


def _rows(tmp: Path, specs: list[tuple[str, float, int, int, str]]) -> list[dict]:
    rows = []
    for i, (name, dur, sr, ch, cat) in enumerate(specs):
        p = _write(tmp / f"{name}.wav", dur, sr, ch, freq=200 + 50 * i, seed=i)
        rows.append({"path": str(p), "duration": dur, "sample_rate": sr, "channels": ch,
                     "category": cat, "source": "synthetic"})
    return rows


@pytest.fixture()
def rows(tmp_path: Path) -> list[dict]:
    return _rows(tmp_path, [("short", 1.0, 24000, 1, "speech"), ("long", 9.0, 16000, 2, "music"),
                            ("mid", 3.0, 44100, 1, "general")])


# ---------------------------------------------------------------------------------- dataset


def test_segment_shape_dtype_and_resampling(rows: list[dict]) -> None:
    for ch in (1, 2):
        ds = AudioDataset(rows, segment_seconds=0.5, sample_rate=24000, channels=ch, epoch_size=12, seed=3)
        for i in range(len(ds)):
            x = ds[i]
            assert x.dtype == torch.float32 and x.shape == (ch, 12000)
            assert torch.isfinite(x).all() and x.abs().max() <= 1.0
    # Each file is one tone (200, 250, 300 Hz at 24, 16, 44.1 kHz): every segment's spectral
    # peak is its file's tone at the output rate, and each file's tone is drawn.
    ds = AudioDataset(rows, segment_seconds=0.5, sample_rate=24000, channels=1, epoch_size=24, seed=5)
    found = set()
    for i in range(len(ds)):
        x = ds[i][0].numpy().astype(np.float64)
        spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x))))
        peak = float(np.fft.rfftfreq(len(x), 1 / 24000)[np.argmax(spectrum)])
        tone = min((200.0, 250.0, 300.0), key=lambda f: abs(f - peak))
        assert abs(peak - tone) <= 2.0, peak
        found.add(tone)
    assert found == {200.0, 250.0, 300.0}


def test_duration_weighting(tmp_path: Path) -> None:
    rows = _rows(tmp_path, [("a", 1.0, 8000, 1, "speech"), ("b", 9.0, 8000, 1, "speech")])
    ds = AudioDataset(rows, segment_seconds=0.25, sample_rate=8000, augment=False, epoch_size=600, seed=0)
    c = Counter(Path(ds.sample(i)[1]["sources"][0]).stem for i in range(600))
    assert abs(c["b"] / 600 - 0.9) < 0.05


def test_determinism_epochs_and_shards(rows: list[dict]) -> None:
    kw = dict(segment_seconds=0.25, epoch_size=6, seed=7)
    a, b = AudioDataset(rows, **kw), AudioDataset(rows, **kw)  # type: ignore[arg-type]
    for i in range(6):
        assert torch.equal(a[i], b[i])
    c = AudioDataset(rows, **{**kw, "seed": 8})  # type: ignore[arg-type]
    assert any(not torch.equal(a[i], c[i]) for i in range(6))
    r0 = AudioDataset(rows, rank=0, world_size=2, **kw)  # type: ignore[arg-type]
    r1 = AudioDataset(rows, rank=1, world_size=2, **kw)  # type: ignore[arg-type]
    assert all(not torch.equal(r0[i], r1[i]) for i in range(6))
    e0 = [a[i] for i in range(6)]
    a.set_epoch(1)
    assert any(not torch.equal(e0[i], a[i]) for i in range(6))
    loader = torch.utils.data.DataLoader(b, batch_size=3, num_workers=0)
    assert torch.equal(torch.cat(list(loader)), torch.stack(e0))
    with pytest.raises(ValueError):
        AudioDataset(rows, rank=2, world_size=2)


def test_gain_range_and_actual_gain(tmp_path: Path) -> None:
    # a pure stationary sine: output RMS / input RMS must equal the reported gain
    p = tmp_path / "sine.wav"
    sr = 16000
    t = np.arange(sr * 4) / sr
    sf.write(str(p), (0.1 * np.sin(2 * np.pi * 500 * t)).astype(np.float32), sr)
    rows = [{"path": str(p), "duration": 4.0, "sample_rate": sr, "channels": 1, "category": "speech"}]
    ds = AudioDataset(rows, segment_seconds=0.5, sample_rate=sr, mix_probs=(1, 0, 0), reverb_prob=0.0,
                      noisy_speech_prob=0.0, epoch_size=40, seed=1)
    gains = []
    for i in range(40):
        x, info = ds.sample(i)
        g = info["gains_db"][0]
        gains.append(g)
        assert -10.0 <= g <= 6.0
        measured = 20 * math.log10(float(x.pow(2).mean().sqrt()) / (0.1 / math.sqrt(2)))
        assert abs(measured - g) < 0.1
    assert min(gains) < -6 and max(gains) > 2  # the whole range is used


def test_mix_at_snr_exact() -> None:
    rng = np.random.default_rng(0)
    s = rng.standard_normal((1, 24000)).astype(np.float32)
    n = 3 * rng.standard_normal((1, 24000)).astype(np.float32)
    for snr in (0.0, 5.0, 10.0, 15.0):
        y = mix_at_snr(s, n, snr)
        measured = 10 * math.log10(np.mean(s.astype(np.float64) ** 2) / np.mean((y - s).astype(np.float64) ** 2))
        assert abs(measured - snr) < 0.01


def test_noisy_speech_snr_in_dataset(tmp_path: Path) -> None:
    rows = _rows(tmp_path, [("sp", 3.0, 16000, 1, "speech"), ("nz", 3.0, 16000, 1, "noise")])
    ds = AudioDataset(rows, segment_seconds=0.5, sample_rate=16000, noisy_speech_prob=1.0, reverb_prob=0.0,
                      snr_db=(5.0, 15.0), epoch_size=20, seed=2)
    seen = set()
    for i in range(20):
        _, info = ds.sample(i)
        assert 5.0 <= info["snr_db"] <= 15.0 and info["categories"] == ["speech"]
        seen.add(info["noise"].startswith("generated"))
    assert seen == {True, False}  # both file noise and generated noise are used


def test_reverb_and_mixtures(rows: list[dict]) -> None:
    rng = np.random.default_rng(0)
    h = synthetic_rir(0.8, 24000, rng)
    assert h.dtype == np.float32 and abs(float(np.sum(h.astype(np.float64) ** 2)) - 1) < 1e-4
    # energy decays by ~60 dB over the RT60: compare the first and last 50 ms of the tail
    e_start = np.mean(h[48:1248] ** 2)
    e_end = np.mean(h[-1200:] ** 2)
    assert 40 < 10 * math.log10(e_start / e_end) < 75
    x = coloured_noise(2, 4800, 1.0, rng)
    assert apply_reverb(x, h).shape == (2, 4800)
    ds = AudioDataset(rows, segment_seconds=0.25, mix_probs=(0, 0, 1), reverb_prob=1.0, epoch_size=10, seed=0)
    for i in range(10):
        _, info = ds.sample(i)
        assert len(info["sources"]) == 3 and "music" not in info["categories"]
        assert 0.3 <= info["rt60"] <= 1.3


def test_skips_corrupt_and_short_files(tmp_path: Path, rows: list[dict], caplog: pytest.LogCaptureFixture) -> None:
    bad = tmp_path / "corrupt.wav"
    bad.write_bytes(b"RIFF not really audio" * 10)
    short = _write(tmp_path / "tiny.wav", 0.05, 24000)
    all_rows = rows + [{"path": str(bad), "duration": 50.0, "sample_rate": 24000, "channels": 1, "category": "speech"},
                       {"path": str(short), "duration": 0.05, "sample_rate": 24000, "channels": 1, "category": "speech"}]
    with caplog.at_level(logging.WARNING, logger="opencodec.data.dataset"):
        ds = AudioDataset(all_rows, segment_seconds=0.25, augment=False, epoch_size=30, seed=0)
        out = [ds.sample(i) for i in range(30)]
    assert "tiny.wav" in caplog.text and "shorter" in caplog.text
    assert "corrupt.wav" in caplog.text and "unreadable" in caplog.text
    assert all(str(bad) not in info["sources"] for _, info in out)
    assert all(x.shape == (1, 6000) for x, _ in out)


# ---------------------------------------------------------------------------------- builder


def test_plan_eval_items_lengths_groups_determinism() -> None:
    rng = np.random.default_rng(0)
    clips = [Clip(f"g{g}/c{i}", f"g{g}", float(rng.uniform(0.3, 4.0))) for g in range(3) for i in range(25)]
    clips.append(Clip("long", "track", 47.0))
    items = plan_eval_items(clips, seed=5)
    assert items == plan_eval_items(list(reversed(clips)), seed=5)
    assert items != plan_eval_items(clips, seed=6)
    gap = 0.15
    for it in items:
        length = sum(b - a for _, a, b in it) + gap * (len(it) - 1)
        assert 5.0 - 1e-6 <= length <= 10.0 + 1e-6
        assert len({k.split("/")[0] if "/" in k else k for k, _, _ in it}) == 1  # one group
    long_parts = [p for it in items for p in it if p[0] == "long"]
    assert len(long_parts) >= 4 and all(b - a <= 10.0 for _, a, b in long_parts)


def test_split_groups_disjoint() -> None:
    gh = {f"spk{i}": 1.0 + i for i in range(10)}
    valid = split_groups(gh, 0.1, seed=0)
    assert valid and len(valid) < len(gh)
    assert sum(gh[g] for g in valid) >= 0.1 * sum(gh.values())
    assert sum(gh[g] for g in valid) <= 1.5 * 0.1 * sum(gh.values())
    assert split_groups({"only": 1.0}, 0.5, seed=0) == set()
    assert split_groups({"big": 10.0, "small": 1.0, "huge": 20.0}, 0.01, seed=0) == {"small"}


def _fake_tree(root: Path) -> None:
    pk = root / "pkg"
    for spk in range(4):  # training speech, 4 speakers (one excluded language)
        for i in range(5):
            _write(pk / f"speech/lang{spk}/s{i}.wav", 1.2 + 0.1 * i, 16000, seed=spk * 10 + i)
    _write(pk / "speech/excluded/s0.wav", 2.0, 16000)
    for i in range(2):
        _write(pk / f"music/track{i}.wav", 12.0, 44100, channels=2, seed=100 + i)
    for spk in range(2):  # evaluation speech, short clips of two speakers
        for i in range(8):
            _write(pk / f"evalspeech/spk{spk}/c{i}.wav", 1.5 + 0.2 * i, 22050, seed=200 + spk * 10 + i)
    _write(pk / "evalmusic/song.wav", 25.0, 48000, channels=2, seed=300)
    _write(pk / "noise/rain.wav", 15.0, 16000, freq=1234.0, amp=0.05, seed=400)
    (pk / "speech/lang0/corrupt.wav").write_bytes(b"not audio at all" * 20)
    _write(pk / "speech/lang1/tooshort.wav", 0.05, 16000)


def _fake_sources() -> dict[str, Source]:
    return {s.name: s for s in [
        Source("sp", "pkg", "speech", "train",
               _rx(r"^speech/([^/]+)/", lambda m: None if m.group(1) == "excluded" else m.group(1))),
        Source("mu", "pkg", "music", "train", _rx(r"^music/([^/]+)\.wav$", lambda m: m.group(1))),
        Source("nz", "pkg", "noise", "train_noise", _rx(r"noise/([^/]+)\.wav$", lambda m: m.group(1))),
        Source("ev", "pkg", "speech", "eval", _rx(r"evalspeech/([^/]+)/", lambda m: m.group(1)), "clean_speech"),
        Source("em", "pkg", "music", "eval", _rx(r"evalmusic/([^/]+)\.wav$", lambda m: m.group(1)), "music"),
        Source("en", "pkg", "noise", "eval_noise", _rx(r"noise/([^/]+)\.wav$", lambda m: m.group(1))),
    ]}


def test_builder_on_fake_tree(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    _fake_tree(tmp_path / "src")
    sources = _fake_sources()
    presets = {"fake": Preset({n: None for n in sources}, {c: None for c in corpus.EVAL_CATEGORIES},
                              valid_fraction=0.25)}
    out = tmp_path / "out"
    kw = dict(sample_rate=24000, seed=3, workers=1, sources=sources, presets=presets,
              roots={"pkg": tmp_path / "src" / "pkg"})
    with caplog.at_level(logging.WARNING, logger="opencodec.data.corpus"):
        summary = corpus.build("fake", out, **kw)  # type: ignore[arg-type]
    man = out / "fake_24k" / "manifests"
    train, valid = load_manifests(man / "train.jsonl"), load_manifests(man / "valid.jsonl")
    raw = corpus.read_jsonl(man / "train.jsonl")
    for r in raw + corpus.read_jsonl(man / "eval_noisy_speech.jsonl"):
        assert {"path", "duration", "sample_rate", "channels", "category", "source"} <= set(r)
        assert not os.path.isabs(r["path"])
    assert all(os.path.exists(r["path"]) and r["sample_rate"] == 24000 for r in train + valid)
    # exclusions, skips, channels, splits
    assert not any("excluded" in r["original"] for r in train + valid)
    assert "corrupt.wav" in caplog.text and "tooshort.wav" in caplog.text
    assert summary["skipped_files"] == 2
    assert {r["channels"] for r in train + valid if r["category"] == "music"} == {2}
    assert {r["group"] for r in train}.isdisjoint({r["group"] for r in valid}) and valid
    assert load_manifests(man / "train_noise.jsonl")[0]["category"] == "noise"
    # evaluation items: 5-10 s, one speaker each, fixed SNRs
    clean = load_manifests(man / "eval_clean_speech.jsonl")
    music = load_manifests(man / "eval_music.jsonl")
    noisy = load_manifests(man / "eval_noisy_speech.jsonl")
    assert clean and music and len(noisy) == len(clean)
    for r in clean + music + noisy:
        assert 5.0 - 0.01 <= r["duration"] <= 10.0 + 0.01
    for r in clean:
        assert len({Path(p).parent.name for p, _, _ in r["parts"]}) == 1
    assert {r["channels"] for r in music} == {2}
    assert {r["snr_db"] for r in noisy} <= {0.0, 5.0, 10.0, 15.0}
    for r in noisy:  # the noise actually sits at the stated SNR (16-bit files)
        y, _ = sf.read(r["path"], dtype="float64")
        s, _ = sf.read(r["clean_path"], dtype="float64")
        scale = np.dot(y, s) / np.dot(s, s)  # undo a possible peak rescale
        n = y - scale * s
        assert abs(10 * math.log10(np.mean((scale * s) ** 2) / np.mean(n ** 2)) - r["snr_db"]) < 0.5
    # idempotent: a second run converts/cuts nothing and gives the same manifests
    mtimes = {p: p.stat().st_mtime_ns for p in out.rglob("*.flac")}
    before = (man / "eval_noisy_speech.jsonl").read_text()
    corpus.build("fake", out, **kw)  # type: ignore[arg-type]
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*.flac")} == mtimes
    assert (man / "eval_noisy_speech.jsonl").read_text() == before
    # resumable: delete one converted file -> only it is redone
    victim = Path(train[0]["path"])
    victim.unlink()
    corpus.build("fake", out, **kw)  # type: ignore[arg-type]
    assert victim.exists()
    # the eval dataset yields the fixed items
    items = list(iter_eval_items(man / "eval_noisy_speech.jsonl", sample_rate=16000, channels=1))
    assert [it["item_id"] for it in items] == [r["item_id"] for r in noisy]
    assert all(it["audio"].shape[0] == 1 and it["sample_rate"] == 16000 for it in items)
    ev = EvalDataset(man / "eval_music.jsonl")
    assert ev[0]["audio"].shape[0] == 2
    assert abs(ev[0]["audio"].shape[1] - music[0]["duration"] * 24000) <= 2
    # the training dataset reads the built manifests
    ds = AudioDataset([man / "train.jsonl", man / "train_noise.jsonl"], segment_seconds=0.5, epoch_size=4)
    assert ds[0].shape == (1, 12000) and ds.noise_rows
    json.loads((out / "fake_24k" / "summary.json").read_text())


def test_builtin_source_filters() -> None:
    s = corpus.SOURCES
    assert s["tuxpaint_speech"].select("usr/share/tuxpaint/stamps/a/cat_desc_ru.ogg") == "ru"
    assert s["tuxpaint_speech"].select("usr/share/tuxpaint/stamps/a/cat_desc_fr.ogg") is None
    assert s["tuxpaint_fr"].select("usr/share/tuxpaint/stamps/a/cat_desc_fr.ogg") is not None
    k = "usr/share/ktuberling/sounds/{}/apple.ogg"
    assert s["ktuberling_speech"].select(k.format("de")) == "de"
    assert all(s["ktuberling_speech"].select(k.format(x)) is None for x in ("ru", "uk", "el"))
    assert all(s["ktuberling_eval"].select(k.format(x)) is not None for x in ("ru", "uk", "el"))
    h = "usr/share/games/hedgewars/Data/Sounds/voices/{}/Hello.ogg"
    assert s["hedgewars_speech"].select(h.format("Pirate")) == "Pirate"
    assert all(s["hedgewars_speech"].select(h.format(x)) is None for x in ("British", "Mobster", "Default_uk"))
    u = "_unzipped/0snd.pk3/sound/ambience/{}.ogg"
    assert s["ufoai_noise"].select(u.format("rain")) is not None
    assert s["ufoai_noise"].select(u.format("tv_newswav")) is None
    assert s["ufoai_noise"].select(u.format("radiomessage")) is None
    assert s["ufoai_general"].select("_unzipped/0snd.pk3/sound/weapons/gun.ogg") == "weapons"
    assert s["ufoai_general"].select(u.format("rain")) is None
    # no package is both a training and an evaluation source except via disjoint filters
    train_pk = {v.package for v in s.values() if v.role.startswith("train") and not v.name.startswith("tiny")}
    eval_pk = {v.package for v in s.values() if v.role.startswith("eval") and not v.name.startswith("tiny")}
    assert train_pk & eval_pk == {"tuxpaint-stamps-default", "ktuberling-data"}


def test_unpack_wad_midi(tmp_path: Path) -> None:
    import struct
    midi = b"MThd" + b"\x00\x00\x00\x06\x00\x00\x00\x01\x00\x60" + b"MTrk\x00\x00\x00\x04\x00\xff\x2f\x00"
    lumps = [(b"D_E1M1", midi), (b"D_E1M2", midi), (b"D_INTRO", b"MUS\x1a" + b"\x00" * 12), (b"PLAYPAL", b"\x00" * 8)]
    body, directory, pos = b"", b"", 12
    for name, data in lumps:
        directory += struct.pack("<ii8s", pos, len(data), name)
        body += data
        pos += len(data)
    wad = tmp_path / "test.wad"
    wad.write_bytes(b"IWAD" + struct.pack("<ii", len(lumps), pos) + body + directory)
    n = corpus._unpack_wad_midi(wad, tmp_path / "out", set())
    assert n == 1  # duplicate content and non-MIDI (MUS) lumps are skipped
    assert (tmp_path / "out" / "D_E1M1.mid").read_bytes() == midi
    assert corpus.SOURCES["freedoom_music"].select("_wadmidi/freedoom1/D_E1M1.mid") == "freedoom1/D_E1M1"
