"""The GPU-lease benchmarks as a user runs them (benchmarks/train_throughput.py for
scripts/device/next_lease.sh, benchmarks/tokenize_throughput.py for
scripts/device/tokenize_bench.sh) and the corpus packer the lease carries
(scripts/device/pack_corpus.py): the figures they print are true, they say what they measured
with, and bad options are refused in one line before any minute is spent."""

from __future__ import annotations

import importlib.util
import sys
import types
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


def _load(monkeypatch: pytest.MonkeyPatch, name: str) -> types.ModuleType:
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))  # its provenance module, as when run as a script
    spec = importlib.util.spec_from_file_location(f"{name}_walk_under_test", ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    monkeypatch.setitem(sys.modules, spec.name, module)  # forked set writers unpickle functions by name
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


# -- train_throughput.py ----------------------------------------------------------------------------
def test_train_benchmark_flops_count_the_discriminator_updates_it_timed(monkeypatch: pytest.MonkeyPatch) -> None:
    """disc_prob 0.667 over 10 timed steps runs 6 discriminator updates: the FLOPs per step must
    count 6/10 of one update, not 0.667 of it (that overstated TFLOP/s and % peak)."""
    bench = _load(monkeypatch, "train_throughput")
    calls = {"g": 0, "d": 0}

    def generator(parts: object, x: torch.Tensor, *args: object) -> tuple[torch.Tensor, None, None]:
        calls["g"] += 1
        torch.ones(4, 8) @ torch.ones(8, 2)  # 2 * 4 * 8 * 2 = 128 FLOPs
        return x, None, None

    def discriminator(parts: object, x: torch.Tensor, y: torch.Tensor) -> None:
        calls["d"] += 1
        torch.ones(16, 16) @ torch.ones(16, 16)  # 2 * 16 ** 3 = 8192 FLOPs

    monkeypatch.setattr(bench, "generator_step", generator)
    monkeypatch.setattr(bench, "discriminator_step", discriminator)
    cfg = bench.load_config(bench.CONFIGS["bundled"])
    cfg["model"].update(bench.TINY_MODEL)
    cfg["adversarial"]["filters"] = 4
    assert cfg["adversarial"]["disc_prob"] == pytest.approx(0.667)
    row = bench.measure(cfg, torch.device("cpu"), batch=1, seconds=0.1, adversary=True, amp="none",
                        compile_=False, warmup=0, steps=10)
    assert calls == {"g": 11, "d": 1 + 6}  # one of each counted, then 10 timed steps with 6 updates
    assert row["gflop_per_step"] * 1e9 == pytest.approx(128 + 6 / 10 * 8192)


def test_train_benchmark_prints_its_provenance_line(monkeypatch: pytest.MonkeyPatch,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    """docs/BENCHMARKS.md: it 'measures the same quantities with a provenance line' (the table
    of the first GPU lease goes into the docs with it)."""
    bench = _load(monkeypatch, "train_throughput")
    monkeypatch.setattr(bench, "measure", lambda *a, **k: {"audio_s_per_s": 1.0, "gflop_per_step": 1.0, "tflops": 1.0,
                                                           "peak_share": None, "memory_gib": 1.0, "step_ms": 1.0})
    assert bench.main(["--tiny", "--device", "cpu", "--configs", "bundled", "--adversary", "off"]) == 0
    out = capsys.readouterr().out
    assert "measured with commit " in out and "OMP_WAIT_POLICY=" in out
    assert out.index("measured with commit") < out.index("| config |")


def test_train_benchmark_says_how_much_of_the_compiled_rows_was_compiled(monkeypatch: pytest.MonkeyPatch,
                                                                          capsys: pytest.CaptureFixture[str]) -> None:
    """The LSTM breaks dynamo's graph and the discriminator scales hit its recompile limit (seen on
    the CPU with backend aot_eager), so the "compiled" rows of next_lease.sh run partly eager: the
    table must say so, not pass for a compiled model's throughput."""
    from torch._dynamo.utils import counters

    bench = _load(monkeypatch, "train_throughput")
    monkeypatch.setattr(bench, "measure", lambda *a, **k: {"audio_s_per_s": 1.0, "gflop_per_step": 1.0, "tflops": 1.0,
                                                           "peak_share": None, "memory_gib": 1.0, "step_ms": 1.0})
    saved = {key: value.copy() for key, value in counters.items()}
    counters.clear()
    try:
        counters["stats"]["unique_graphs"] = 28
        counters["graph_break"]["Attempted to wrap RNN, GRU, or LSTM\n  Explanation: ..."] = 2
        counters["unimplemented"]["Dynamo recompile limit exceeded\n  Explanation: ..."] = 1
        assert bench.main(["--tiny", "--device", "cpu", "--configs", "bundled", "--adversary", "off", "--compile"]) == 0
    finally:
        counters.clear()
        counters.update(saved)
    out = capsys.readouterr().out
    assert ("compile: 28 graph(s) compiled; graph breaks: Attempted to wrap RNN, GRU, or LSTM x2; "
            "RECOMPILE LIMIT HIT: some module calls ran eager") in out


@pytest.mark.parametrize("args, message", [
    (["--configs", "bundled", "bundle"], "--configs bundle: no config file bundle (names: bundled, paper"),
    (["--steps", "0"], "--steps must be at least 1, got 0"),
    (["--batch", "-1"], "--batch must be at least 1, got -1"),
    (["--seconds", "nan"], "--seconds above 0"),
])
def test_train_benchmark_refuses_bad_options_before_measuring(monkeypatch: pytest.MonkeyPatch,
                                                              capsys: pytest.CaptureFixture[str],
                                                              args: list[str], message: str) -> None:
    """A typo in the last of --configs used to fail with a FileNotFoundError traceback after the
    first configs' rows (minutes of a lease); --steps 0 with a ZeroDivisionError."""
    bench = _load(monkeypatch, "train_throughput")
    measured: list[object] = []
    monkeypatch.setattr(bench, "measure", lambda *a, **k: measured.append(a))
    with pytest.raises(SystemExit) as exc:
        bench.main(["--device", "cpu", *args])
    assert exc.value.code == 2 and measured == []
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


# -- tokenize_throughput.py -------------------------------------------------------------------------
def test_tokenize_benchmark_set_in_a_reused_work_folder_has_the_asked_files(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """tokenize_bench.sh always passes --work /tmp/tokbench: a dry run with FILES=3 then one with
    FILES=2 measured 3 files (the first run's third stayed in the set)."""
    bench = _load(monkeypatch, "tokenize_throughput")
    sources = [ROOT / "demo" / "sample_speech_fr.flac"]
    folder = bench.make_set(sources, tmp_path / "set", 3, 0, 0.1, 0.2)
    assert sorted(p.name for p in folder.iterdir()) == ["item0000.flac", "item0001.flac", "item0002.flac"]
    (folder / "notes.txt").write_text("not ours")
    folder = bench.make_set(sources, tmp_path / "set", 2, 0, 0.1, 0.2)
    assert sorted(p.name for p in folder.iterdir()) == ["item0000.flac", "item0001.flac", "notes.txt"]


@pytest.mark.parametrize("args, message", [
    (["--files", "0"], "--files must be at least 1, got 0"),
    (["--cpu-files", "0"], "--cpu-files must be at least 1, got 0"),
    (["--cpu-processes", "1", "0"], "--cpu-processes must each be at least 1"),
    (["--max-seconds", "inf"], "--max-seconds must be above 0 and finite, got inf"),
    (["--min-seconds", "0"], "--min-seconds must be above 0 and finite, got 0"),
])
def test_tokenize_benchmark_refuses_bad_options_in_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                            capsys: pytest.CaptureFixture[str],
                                                            args: list[str], message: str) -> None:
    """These ended in a traceback (InputError from the empty set, ZeroDivisionError in the
    agreement or the shard size) after the set was written and the model built."""
    bench = _load(monkeypatch, "tokenize_throughput")
    monkeypatch.setattr(sys, "argv", ["tokenize_throughput.py", "--devices", "cpu", "--work", str(tmp_path / "w"),
                                      *args])
    with pytest.raises(SystemExit) as exc:
        bench.main()
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not (tmp_path / "w").exists()  # refused before any work


# -- scripts/device/pack_corpus.py ------------------------------------------------------------------
def _pack_corpus(monkeypatch: pytest.MonkeyPatch) -> types.ModuleType:
    spec = importlib.util.spec_from_file_location("pack_corpus_walk_under_test",
                                                  ROOT / "scripts" / "device" / "pack_corpus.py")
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    monkeypatch.setitem(sys.modules, spec.name, module)
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


def _noise_manifest(folder: Path, files: int, seconds: float) -> Path:
    import json

    import numpy as np
    import soundfile as sf

    rng = np.random.default_rng(0)
    (folder / "audio").mkdir(parents=True)
    (folder / "manifests").mkdir()
    rows = []
    for i in range(files):
        sf.write(folder / "audio" / f"{i}.wav", (0.3 * rng.standard_normal(int(24000 * seconds))).astype(np.float32),
                 24000)
        rows.append(json.dumps({"path": f"../audio/{i}.wav", "duration": seconds, "sample_rate": 24000,
                                "channels": 1, "category": "speech"}))
    (folder / "manifests" / "train.jsonl").write_text("\n".join(rows) + "\n")
    return folder / "manifests"


def test_pack_corpus_total_counts_only_the_files_it_kept(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    """The file that crossed --max-mb is deleted; the printed total kept counting it."""
    pack = _pack_corpus(monkeypatch)
    manifests = _noise_manifest(tmp_path / "src", 3, 30.0)  # ~120 KB of Opus each
    out = tmp_path / "packed"
    pack.pack(manifests, out, ["train"], 0.9, 0.3, None, True)
    kept = sorted(out.glob("audio/train/*.opus"))
    assert len(kept) == 2
    on_disk = sum(p.stat().st_size for p in kept) / 2**20
    assert f"train: 2 files, 0.02 h; total {on_disk:.1f} MiB" in capsys.readouterr().err


def test_pack_corpus_repacking_a_split_leaves_none_of_its_earlier_files(tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """A split packed again with fewer files (--max-rows, --max-mb or another --seed) kept the
    earlier pack's extra .opus files: not in the manifest, but carried in the 64 MiB all the same."""
    pack = _pack_corpus(monkeypatch)
    manifests = _noise_manifest(tmp_path / "src", 3, 1.0)
    out = tmp_path / "packed"
    pack.pack(manifests, out, ["train"], 0.9, 54.0, None, True)
    assert len(list(out.glob("audio/train/*.opus"))) == 3
    pack.pack(manifests, out, ["train"], 0.9, 54.0, 1, True)
    assert [p.name for p in out.glob("audio/train/*.opus")] == ["000000.opus"]
    assert len((out / "manifests" / "train.jsonl").read_text().splitlines()) == 1
