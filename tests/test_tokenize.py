"""opencodec tokenize: every row's codes equal model.encode of that file alone; bad files are
reported and skipped; manifests; 2 processes = 1; kill -9 and rerun = uninterrupted run;
reading back with pyarrow, pandas, TokenDataset and detokenize."""

from __future__ import annotations

import json
import shutil
import os
import signal
import subprocess
import sys
import time
import typing as tp
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.dataset as pads
import pyarrow.parquet as pq
import pytest
import soundfile as sf
import torch

import opencodec
from official_ref import random_codebooks
from opencodec import EncodecConfig, EncodecModel, __version__, convert_audio, load_model, read_audio, save_model
from opencodec.audio import resampled_length
from opencodec.tokens import TokenDataset, TokenizeError, TokenizeOptions, collate_tokens, detokenize, tokenize
from opencodec.weights_hash import weights_sha256

SRC = Path(opencodec.__file__).resolve().parents[1]  # the package under test, also in subprocesses

#: (relative path, seconds, sample rate, channels): mixed rates, a stereo file, a very short one.
FILES = [("a.wav", 0.6, 24000, 1), ("sub/b.flac", 1.3, 16000, 1), ("sub/deeper/c.wav", 0.9, 48000, 2),
         ("d.wav", 2.2, 24000, 1), ("e.wav", 0.004, 24000, 1), ("f.ogg", 1.0, 22050, 1)]


@pytest.fixture(scope="module")
def tiny_model_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(5)
    config = EncodecConfig(name="tiny", n_filters=4, dimension=16, n_q=4, ratios=[8, 5, 4, 2], lstm=1,
                           target_bandwidths=[1.5, 3.0])
    model = random_codebooks(EncodecModel(config), 7)
    return save_model(model, tmp_path_factory.mktemp("model") / "tiny.safetensors")


def _write_corpus(root: Path, files: list[tuple[str, float, int, int]] = FILES, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    for name, seconds, rate, channels in files:
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        t = np.arange(int(seconds * rate)) / rate
        tone = 0.3 * np.sin(2 * np.pi * rng.uniform(100, 900) * t)[:, None]
        noise = 0.05 * rng.standard_normal((t.size, channels))
        sf.write(path, (tone + noise).astype(np.float32), rate)
    (root / "broken.wav").write_bytes(b"RIFF\x10\x00\x00\x00WAVEnot really audio")
    return root


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _write_corpus(tmp_path_factory.mktemp("corpus"))


def _alone(model: EncodecModel, path: Path) -> np.ndarray:
    """Codes [K, F] of the file alone: read, convert, model.encode."""
    wav, rate = read_audio(path)
    wav = convert_audio(wav, rate, model.sample_rate, model.channels)
    with torch.inference_mode():
        frames = model.encode(wav[None])
    return torch.cat([f.codes for f in frames], dim=-1)[0].numpy()


def _table(folder: Path):
    import pyarrow as pa
    return pa.concat_tables([pq.read_table(p) for p in sorted(folder.glob("shard-*.parquet"))])


@pytest.fixture(scope="module")
def tokens(tiny_model_file: Path, corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("tokens") / "out"
    # max_seconds 2: d.wav (2.2 s) is streamed in bounded memory; small batches mix lengths.
    summary = tokenize(TokenizeOptions([str(corpus)], out, model=str(tiny_model_file), device="cpu",
                                       batch_seconds=2.5, shard_rows=3, max_seconds=2.0))
    assert summary.stats.files == len(FILES) and summary.stats.errors == 1
    assert summary.index is not None and summary.index["rows"] == len(FILES)
    return out


def test_rows_equal_file_alone(tokens: Path, corpus: Path, tiny_model_file: Path) -> None:
    model = load_model(tiny_model_file)
    model.set_target_bandwidth(3.0)  # the default: the model's largest
    table = _table(tokens)
    assert table.column_names == ["id", "codes", "num_codebooks", "num_frames", "sample_rate", "duration",
                                  "channels", "num_samples"]
    assert sorted(table.column("id").to_pylist()) == sorted(name for name, *_ in FILES)
    for row in table.to_pylist():
        codes = np.array(row["codes"], dtype=np.int64)
        expected = _alone(model, corpus / row["id"])
        assert codes.shape == expected.shape == (4, row["num_frames"])
        np.testing.assert_array_equal(codes, expected, err_msg=row["id"])
        name, seconds, rate, channels = next(f for f in FILES if f[0] == row["id"])
        assert (row["sample_rate"], row["channels"], row["num_codebooks"]) == (rate, channels, 4)
        assert row["duration"] == int(seconds * rate) / rate  # exact: float64 samples / rate
        assert row["num_samples"] == resampled_length(int(seconds * rate), rate, 24000)
    # rows sorted by duration within and across shards
    assert table.column("duration").to_pylist() == sorted(table.column("duration").to_pylist())


def test_metadata_index_errors(tokens: Path, tiny_model_file: Path) -> None:
    model = load_model(tiny_model_file)
    shards = sorted(tokens.glob("shard-*.parquet"))
    assert [p.name for p in shards] == [f"shard-0000{i}-of-00003.parquet" for i in range(3)]
    meta = json.loads(pq.read_schema(shards[0]).metadata[b"opencodec"])
    assert meta["model"] == "tiny" and meta["bandwidth"] == 3.0 and meta["opencodec_version"] == __version__
    assert meta["weights_sha256"] == weights_sha256(model)
    index = json.loads((tokens / "index.json").read_text())
    assert [(s["rows"], s["errors"]) for s in index["shards"]] == [(2, 1), (3, 0), (1, 0)]
    assert index["rows"] == 6 and index["errors"] == 1
    # the hours of audio: the files' lengths at their own rates, summed over every shard
    assert index["hours"] == pytest.approx(sum(int(sec * rate) / rate for _, sec, rate, _ in FILES) / 3600,
                                           rel=1e-9)
    assert index["hours"] == pytest.approx(sum(shard["seconds"] for shard in index["shards"]) / 3600)
    errors = [json.loads(line) for line in (tokens / "errors.jsonl").read_text().splitlines()]
    assert [e["id"] for e in errors] == ["broken.wav"]
    assert "cannot read audio file" in errors[0]["error"]


def test_plain_pyarrow_and_pandas(tokens: Path, corpus: Path, tiny_model_file: Path) -> None:
    model = load_model(tiny_model_file)
    shards = [str(p) for p in sorted(tokens.glob("shard-*.parquet"))]
    frame = pd.read_parquet(shards)  # all shards at once, as the README shows
    assert len(frame) == 6 and pq.read_table(shards).num_rows == 6
    row = frame[frame["id"] == "sub/b.flac"].iloc[0]
    codes = np.stack([np.asarray(c) for c in row["codes"]])
    assert codes.dtype == np.int16
    np.testing.assert_array_equal(codes, _alone(model, corpus / "sub/b.flac"))
    # the folder itself, with index.json, errors.jsonl and job.json beside the shards
    assert pads.dataset(str(tokens), format="parquet", exclude_invalid_files=True).to_table().num_rows == 6


def test_token_dataset_collate_and_detokenize(tokens: Path, corpus: Path, tiny_model_file: Path,
                                             tmp_path: Path) -> None:
    model = load_model(tiny_model_file)
    ds = TokenDataset(tokens)
    assert len(ds) == 6 and ds.metadata["model"] == "tiny"
    item = ds[ds.index_of("d.wav")]
    torch.testing.assert_close(item["codes"], torch.from_numpy(_alone(model, corpus / "d.wav")))
    batch = collate_tokens([ds[0], ds[5]])
    frames = [ds[0]["codes"].shape[1], ds[5]["codes"].shape[1]]
    assert batch["lengths"].tolist() == frames and batch["codes"].shape == (2, 4, max(frames))
    assert (batch["codes"][0, :, frames[0]:] == -1).all() and batch["ids"] == [ds[0]["id"], ds[5]["id"]]
    paths = detokenize(tokens, tmp_path / "audio", ids=["sub/deeper/c.wav"], model=str(tiny_model_file))
    assert paths == [tmp_path / "audio" / "sub/deeper/c.wav"]
    info = sf.info(paths[0])
    assert (info.samplerate, info.channels, info.frames) == (48000, 2, int(0.9 * 48000))
    with pytest.raises(FileExistsError):
        detokenize(tokens, tmp_path / "audio", ids=["sub/deeper/c.wav"], model=str(tiny_model_file))
    # the decoded audio is the model's decoding of those codes, converted back to 48 kHz stereo
    c = ds[ds.index_of("sub/deeper/c.wav")]
    with torch.inference_mode():
        ref = model.decode([(c["codes"][None], None)])[0, :, : c["num_samples"]]
    ref = convert_audio(ref, 24000, 48000, 2)
    got, _ = read_audio(paths[0])
    assert (got - ref).abs().max() < 2 / 32768


def test_manifests_and_ids(tiny_model_file: Path, corpus: Path, tmp_path: Path) -> None:
    (tmp_path / "m.jsonl").write_text(json.dumps({"path": str(corpus / "a.wav"), "id": "utt-1"}) + "\n")
    (tmp_path / "m.csv").write_text(f"path,id\n{corpus / 'd.wav'},utt-2\n")
    (tmp_path / "list.txt").write_text(f"# a list\n{corpus / 'sub/b.flac'}\n")
    out = tmp_path / "out"
    tokenize(TokenizeOptions([str(tmp_path / n) for n in ("m.jsonl", "m.csv", "list.txt")], out,
                             model=str(tiny_model_file), device="cpu", bandwidth=1.5))
    rows = _table(out).to_pylist()
    assert sorted(r["id"] for r in rows) == sorted(["utt-1", "utt-2", str(corpus / "sub/b.flac")])
    assert {r["num_codebooks"] for r in rows} == {2}
    assert (out / "errors.jsonl").read_text() == ""  # the list's comment line is no file
    # the same folder with other settings is refused, never mixed
    with pytest.raises(TokenizeError, match="bandwidth"):
        tokenize(TokenizeOptions([str(tmp_path / n) for n in ("m.jsonl", "m.csv", "list.txt")], out,
                                 model=str(tiny_model_file), device="cpu", bandwidth=3.0))


def test_two_processes_same_rows_as_one(tiny_model_file: Path, corpus: Path, tokens: Path,
                                        tmp_path: Path) -> None:
    out = tmp_path / "two"
    summary = tokenize(TokenizeOptions([str(corpus)], out, model=str(tiny_model_file), device="cpu",
                                       batch_seconds=2.5, shard_rows=3, max_seconds=2.0, workers=2))
    assert summary.stats.shards_written == 3 and summary.stats.files == 6
    for a, b in zip(sorted(tokens.glob("shard-*")), sorted(out.glob("shard-*")), strict=True):
        assert pq.read_table(a).equals(pq.read_table(b), check_metadata=True)
    assert (tokens / "index.json").read_text() == (out / "index.json").read_text()


def test_rerun_rewrites_only_the_missing_shard(tiny_model_file: Path, corpus: Path, tokens: Path,
                                               tmp_path: Path) -> None:
    """A finished shard is never recomputed: after one shard is deleted, a rerun writes that one
    shard (equal to the uninterrupted run's) and leaves the two others untouched."""
    out = tmp_path / "resume"
    shutil.copytree(tokens, out)
    (out / "index.json").unlink()
    middle = out / "shard-00001-of-00003.parquet"
    middle.unlink()
    kept = {p.name: p.stat().st_mtime_ns for p in out.glob("shard-*.parquet")}
    summary = tokenize(TokenizeOptions([str(corpus)], out, model=str(tiny_model_file), device="cpu",
                                       batch_seconds=2.5, shard_rows=3, max_seconds=2.0))
    assert summary.stats.shards_skipped == 2 and summary.stats.shards_written == 1
    assert {p.name: p.stat().st_mtime_ns for p in out.glob("shard-*.parquet") if p.name in kept} == kept
    assert pq.read_table(middle).equals(pq.read_table(tokens / middle.name), check_metadata=True)
    assert (out / "index.json").read_text() == (tokens / "index.json").read_text()


def _run_cli(args: list[str], new_session: bool = False) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(SRC), "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "opencodec", "-q", *args], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=new_session)


def _children(pid: int) -> list[int]:
    """Process ids whose parent is ``pid`` (from /proc)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def _alive(pid: int) -> bool:
    """True while ``pid`` runs (a zombie waiting for its reaper counts as ended)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_kill9_then_rerun_equals_uninterrupted(official_checkpoints: dict, tmp_path: Path) -> None:
    corpus = tmp_path / "corpus"
    _write_corpus(corpus, [(f"x{i:02d}.wav", 1.0 + 0.06 * i, 24000, 1) for i in range(12)], seed=3)
    args = [str(corpus), "-m", str(official_checkpoints["encodec_24khz"]), "-b", "6", "--device", "cpu",
            "--shard-rows", "1", "--batch-seconds", "1"]
    full = _run_cli(["tokenize", *args, "--out", str(tmp_path / "full")])
    assert full.wait(timeout=120) == 0, full.stderr.read().decode()
    shards = sorted(p.name for p in (tmp_path / "full").glob("shard-*.parquet"))
    assert len(shards) == 13

    # 2 worker processes. Once 2 shards exist the whole job is frozen (SIGSTOP), so the kill
    # lands half-way whatever the machine's speed; then the command alone gets kill -9 and
    # the job is let go: its workers must notice and stop by themselves.
    killed = tmp_path / "killed"
    proc = _run_cli(["tokenize", *args, "--out", str(killed), "--workers", "2"], new_session=True)
    deadline = time.monotonic() + 120
    while len(list(killed.glob("shard-*.parquet"))) < 2 and time.monotonic() < deadline:
        time.sleep(0.001)
    os.killpg(proc.pid, signal.SIGSTOP)
    workers = _children(proc.pid)
    done = len(list(killed.glob("shard-*.parquet")))
    assert len(workers) == 2 and 2 <= done < 13, (workers, done)
    proc.kill()
    proc.wait()
    os.killpg(proc.pid, signal.SIGCONT)
    deadline = time.monotonic() + 10
    while any(_alive(pid) for pid in workers) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(_alive(pid) for pid in workers), "worker processes outlived the killed command"
    # each worker may finish the shard it was encoding (it checks its parent every 0.1 s), no more
    assert len(list(killed.glob("shard-*.parquet"))) <= done + 2, "workers went on after the kill"
    assert not (killed / "index.json").exists()

    rerun = _run_cli(["tokenize", *args, "--out", str(killed), "--workers", "2"])
    assert rerun.wait(timeout=120) == 0, rerun.stderr.read().decode()
    assert sorted(p.name for p in killed.iterdir()) == sorted(p.name for p in (tmp_path / "full").iterdir())
    for name in shards + ["index.json", "errors.jsonl", "job.json"]:
        assert (killed / name).read_bytes() == (tmp_path / "full" / name).read_bytes(), name


def test_torchrun_ranks_write_the_same_shards(tiny_model_file: Path, corpus: Path, tokens: Path, tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """RANK/WORLD_SIZE (torchrun, or the same command on each node) split the shards between
    them (balanced by seconds); the rank that finds every shard written writes the index."""
    out = tmp_path / "ranks"
    options = TokenizeOptions([str(corpus)], out, model=str(tiny_model_file), device="cpu",
                              batch_seconds=2.5, shard_rows=3, max_seconds=2.0)
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    first = tokenize(options)
    by_rank_1 = sorted(p.name for p in out.glob("shard-*"))
    assert 1 <= len(by_rank_1) < 3 and first.stats.shards_written == len(by_rank_1)
    assert first.index is None and not (out / "index.json").exists()
    monkeypatch.setenv("RANK", "0")
    second = tokenize(options)
    assert second.stats.shards_written == 3 - len(by_rank_1) and second.index is not None
    for a, b in zip(sorted(tokens.glob("shard-*")), sorted(out.glob("shard-*")), strict=True):
        assert pq.read_table(a).equals(pq.read_table(b), check_metadata=True)
    monkeypatch.setenv("RANK", "2")
    with pytest.raises(ValueError, match="RANK=2"):
        tokenize(options)


def test_loader_workers_and_bf16(tiny_model_file: Path, corpus: Path, tokens: Path, tmp_path: Path) -> None:
    base = dict(model=str(tiny_model_file), device="cpu", batch_seconds=2.5, shard_rows=3, max_seconds=2.0)
    tokenize(TokenizeOptions([str(corpus)], tmp_path / "loaders", loader_workers=2, **base))
    assert _table(tmp_path / "loaders").equals(_table(tokens))  # decoding in DataLoader processes
    with pytest.warns(UserWarning, match="--dtype bf16 on the CPU"):
        summary = tokenize(TokenizeOptions([str(corpus)], tmp_path / "bf16", dtype="bf16", **base))
    bf16, fp32 = _table(tmp_path / "bf16"), _table(tokens)
    assert json.loads(bf16.schema.metadata[b"opencodec"])["dtype"] == "bf16"
    assert bf16.column("id").to_pylist() == fp32.column("id").to_pylist()
    assert bf16.column("num_frames").to_pylist() == fp32.column("num_frames").to_pylist()
    # This tiny random model's codebook entries lie close together (fitted near its encoder's
    # outputs), so bf16 rounding moves many codes: chance agreement is 1/1024, fp32 gives all.
    # Measured: 113 of 1808 codes (6.3%) of the bf16 table equal the fp32 run's; the job's own
    # check of its first batch counted 21 of 184 (11.4%). Lower bounds: about half of those;
    # upper bound 1/2: bf16 really in use (an agreement counter counting all as equal gives 100%).
    pairs = [(np.array(a), np.array(b)) for a, b in zip(bf16.column("codes").to_pylist(),
                                                        fp32.column("codes").to_pylist(), strict=True)]
    equal = sum(int((a == b).sum()) for a, b in pairs)
    total = sum(b.size for _, b in pairs)
    assert 0.03 < equal / total < 0.5, (equal, total)
    stats = summary.stats
    assert stats.bf16_checked > 0 and 0.05 < stats.bf16_equal / stats.bf16_checked < 0.5, stats


def test_48khz_rows_with_scales(official_checkpoints: dict, tmp_path: Path) -> None:
    corpus = tmp_path / "corpus"
    _write_corpus(corpus, [("s.wav", 1.4, 48000, 2), ("m.wav", 0.5, 44100, 1)], seed=4)
    (corpus / "broken.wav").unlink()
    ckpt = official_checkpoints["encodec_48khz"]
    tokenize(TokenizeOptions([str(corpus)], tmp_path / "out", model=str(ckpt), bandwidth=6.0, device="cpu"))
    model = load_model(ckpt)
    model.set_target_bandwidth(6.0)
    ds = TokenDataset(tmp_path / "out")
    for name in ("s.wav", "m.wav"):
        item = ds[ds.index_of(name)]
        wav, rate = read_audio(corpus / name)
        with torch.inference_mode():
            frames = model.encode(convert_audio(wav, rate, 48000, 2)[None])
        torch.testing.assert_close(item["codes"], torch.cat([f.codes for f in frames], dim=-1)[0])
        torch.testing.assert_close(item["scales"], torch.cat([f.scale.reshape(-1) for f in frames]))
    paths = detokenize(tmp_path / "out", tmp_path / "audio", ids=["m.wav"], model=str(ckpt))
    assert (sf.info(paths[0]).samplerate, sf.info(paths[0]).channels) == (44100, 1)


def test_plan_batches_and_shards() -> None:
    from opencodec.tokens.plan import Batch, WorkerPlace, assign_shards, batches, shard_ranges, shards_for

    durations = [-1.0, 0.5, 1.0, 1.0, 2.0, 9.0]
    assert batches(durations, batch_seconds=3.0, max_seconds=5.0) == [
        Batch((0,)), Batch((1, 2, 3)), Batch((4,)), Batch((5,), streamed=True)]
    assert [list(r) for r in shard_ranges(5, 2)] == [[0, 1], [2, 3], [4]]
    # longest first to the least-loaded worker: 9 (w0), 7 (w1), 5 (w1), 3 (w0), 1 (w0)
    seconds = [1.0, 3.0, 5.0, 7.0, 9.0]
    assert shards_for(seconds, WorkerPlace(0, 2)) == [0, 1, 4] and shards_for(seconds, WorkerPlace(1, 2)) == [2, 3]
    # shards sorted by length, as the plan makes them: every worker within the shortest shard of
    # the mean (round robin would give worker 0 of 2 the longest of every pair: 2.5 over)
    seconds = [float(i + 1) for i in range(9)]
    for world in (2, 3, 4):
        mine = assign_shards(seconds, world)
        assert sorted(s for m in mine for s in m) == list(range(9))
        loads = [sum(seconds[s] for s in m) for m in mine]
        assert max(loads) - sum(seconds) / world <= min(seconds), (world, loads)
    assert assign_shards(seconds[:1], 3) == [[0], [], []]


def test_hugging_face_datasets_loads_the_shards(tokens: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import datasets  # installed by make test: a missing extra fails, never skips
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    files = sorted(str(p) for p in tokens.glob("shard-*.parquet"))
    ds = datasets.load_dataset("parquet", data_files=files, split="train", cache_dir=str(tmp_path / "cache"))
    ds = ds.with_format("torch")
    ours = TokenDataset(tokens)
    assert len(ds) == len(ours) == 6
    for i in range(len(ds)):
        assert ds[i]["id"] == ours[i]["id"]
        torch.testing.assert_close(ds[i]["codes"].long(), ours[i]["codes"])


# -- failures and output folders -----------------------------------------------------------------
def _tokenize_cli(inputs: Path, out: Path, model: Path) -> int:
    from opencodec.cli import main
    return main(["-q", "tokenize", str(inputs), "--out", str(out), "-m", str(model), "--device", "cpu"])


def test_every_file_failing_exits_1(tiny_model_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """A corrupt and an empty WAV only: exit 1 with a clear error; the errors are listed."""
    corpus = tmp_path / "bad"
    corpus.mkdir()
    (corpus / "corrupt.wav").write_bytes(b"RIFF\x10\x00\x00\x00WAVEnot really audio")
    sf.write(corpus / "empty.wav", np.zeros(0, np.float32), 24000)
    out = tmp_path / "out"
    assert _tokenize_cli(corpus, out, tiny_model_file) == 1
    err = capsys.readouterr().err
    assert f"error: no file could be tokenised: all 2 failed (reasons in {out / 'errors.jsonl'})" in err
    errors = [json.loads(line) for line in (out / "errors.jsonl").read_text().splitlines()]
    assert sorted(e["id"] for e in errors) == ["corrupt.wav", "empty.wav"]
    assert _tokenize_cli(corpus, out, tiny_model_file) == 1  # a rerun (all shards done) says the same


def test_some_files_failing_exit_0_and_progress_reaches_the_total(tiny_model_file: Path, tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture) -> None:
    """3 good files and one whose header is fine but whose samples are NaN: exit 0 with a
    warning; the progress reports add up to the planned seconds (the bar reaches 100%), while
    the summary counts the tokenised audio only."""
    corpus = _write_corpus(tmp_path / "corpus", [(f"g{i}.wav", 1.0, 24000, 1) for i in range(3)])
    (corpus / "broken.wav").unlink()
    sf.write(corpus / "nan.wav", np.full(24000, np.nan, np.float32), 24000, subtype="FLOAT")
    done: dict[str, float] = {}

    def progress(total: float):
        done["total"], done["seconds"] = total, 0.0
        return lambda seconds, files, errors: done.__setitem__("seconds", done["seconds"] + seconds)

    summary = tokenize(TokenizeOptions([str(corpus)], tmp_path / "lib", model=str(tiny_model_file), device="cpu",
                                       batch_seconds=2.0), progress)
    assert done["total"] == pytest.approx(4.0) and done["seconds"] == pytest.approx(4.0)
    assert (summary.stats.files, summary.stats.errors, summary.stats.seconds) == (3, 1, pytest.approx(3.0))
    assert not summary.all_failed
    out = tmp_path / "out"
    assert _tokenize_cli(corpus, out, tiny_model_file) == 0
    assert (f"warning: 1 of 4 files could not be tokenised (reasons in {out / 'errors.jsonl'})"
            in capsys.readouterr().err)


def test_out_not_a_writable_folder(tiny_model_file: Path, corpus: Path, tokens: Path, tmp_path: Path,
                                   monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    """--out an existing file, or a folder that cannot be written to: one clear error naming it."""
    from opencodec.cli import main
    file = tmp_path / "speech.wav"
    file.write_bytes(b"x")
    detok = ["-q", "detokenize", str(tokens), "-m", str(tiny_model_file), "--out"]
    assert _tokenize_cli(corpus, file, tiny_model_file) == 1
    assert capsys.readouterr().err.strip() == f"opencodec: error: --out {file} exists and is not a folder"
    assert main(detok + [str(file)]) == 1
    assert capsys.readouterr().err.strip() == f"opencodec: error: --out {file} exists and is not a folder"

    def read_only(*args, **kwargs):
        raise OSError(30, "Read-only file system", str(tmp_path / "ro" / "tmpXYZ"))
    monkeypatch.setattr("opencodec._files.tempfile.TemporaryFile", read_only)
    ro = tmp_path / "ro"
    assert _tokenize_cli(corpus, ro, tiny_model_file) == 1
    assert capsys.readouterr().err.strip() == f"opencodec: error: cannot write to --out folder {ro}: Read-only file system"
    assert main(detok + [str(ro)]) == 1
    assert capsys.readouterr().err.strip() == f"opencodec: error: cannot write to --out folder {ro}: Read-only file system"
    assert file.read_bytes() == b"x" and not ro.exists()


def test_default_workers(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without --workers: one process per usable core on the CPU (encoding runs on one
    thread), one on a GPU or under torchrun."""
    from opencodec.tokens.job import default_workers

    monkeypatch.delenv("WORLD_SIZE", raising=False)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 5}, raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert default_workers("cpu") == 4 and default_workers("auto") == 4 and default_workers("cuda") == 1
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert default_workers("auto") == 1 and default_workers("cpu") == 4
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert default_workers("cpu") == 1


def test_the_command_uses_the_default_and_never_more_workers_than_shards(
        tiny_model_file: Path, corpus: Path, tokens: Path, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    import opencodec.tokens as tokens_pkg
    from opencodec import cli

    seen: list[TokenizeOptions] = []
    run = tokens_pkg.tokenize

    def spy(options: TokenizeOptions, progress: tp.Any = None) -> tp.Any:
        seen.append(options)
        return run(options, progress)

    monkeypatch.setattr(tokens_pkg, "tokenize", spy)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(8)), raising=False)
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    out = tmp_path / "one_shard"
    assert cli.main(["tokenize", str(corpus), "--out", str(out), "-m", str(tiny_model_file), "--device", "cpu",
                     "-b", "3", "--batch-seconds", "2.5", "--max-seconds", "2", "-q"]) == 0  # 1000 rows a shard
    assert seen[0].workers == 8
    summary = tokenize(TokenizeOptions([str(corpus)], tmp_path / "again", model=str(tiny_model_file),
                                       device="cpu", batch_seconds=2.5, max_seconds=2.0, workers=8))
    assert summary.place.world == 1  # one shard: one process, not eight
    assert _table(out).equals(_table(tmp_path / "again"))


def test_a_malformed_manifest_line_is_named(tmp_path: Path) -> None:
    from opencodec.tokens.inputs import InputError, list_inputs

    manifest = tmp_path / "list.jsonl"
    manifest.write_text('{"path": "a.wav"}\n\n{"id": "b"}\n')
    with pytest.raises(InputError, match=f'^{manifest}:3: a manifest row needs a string "path"$'):
        list_inputs([str(manifest)])
    manifest.write_text('{"path": "a.wav"\n')
    with pytest.raises(InputError, match=rf"^{manifest}:1: not a JSON object \("):
        list_inputs([str(manifest)])
