"""opencodec tokenize / TokenDataset: values other tests leave unpinned, pinned exactly.

The plan (its fingerprint, batch budgets, the streaming threshold, empty files), the rows'
stored metadata (exact float64 durations, rates and channels of streamed files), the shard
metadata check, the refusal of codebooks int16 cannot hold, stale temporaries of a killed run,
which GPU a local rank takes, DataLoader processes per GPU, the zero padding of read batches,
the collate's other fields, the bf16 check of the first batch only, the progress total of a
rerun, the command's defaults and messages, and which files folders and lists name.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import soundfile as sf
import torch

from opencodec import EncodecConfig, EncodecModel, convert_audio, load_model, read_audio, save_model
from opencodec.audio import resampled_length
from opencodec.tokens import TokenDataset, TokenizeError, TokenizeOptions, collate_tokens, list_inputs, tokenize
from opencodec.tokens.plan import Batch, PlannedItem, WorkerPlace, batches, header_duration, plan_sha256
import test_tokenize

# the fixture of test_tokenize (module-scoped: built again for this module)
tiny_model_file, corpus, tokens = test_tokenize.tiny_model_file, test_tokenize.corpus, test_tokenize.tokens


def _tone(path: Path, samples: int, rate: int, channels: int = 1, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    t = np.arange(samples) / rate
    wav = 0.3 * np.sin(2 * np.pi * rng.uniform(200, 800) * t)[:, None] + 0.05 * rng.standard_normal((samples, channels))
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, wav.astype(np.float32), rate)
    return path


# -- plan ------------------------------------------------------------------------------------------------
def test_the_plan_fingerprint_covers_ids_durations_and_order() -> None:
    """``job.json``'s files_sha256: a file whose duration changed (same name) is another job."""
    a, b = PlannedItem("a.wav", "/x/a.wav", 1.0), PlannedItem("b.wav", "/x/b.wav", 2.0)
    base = plan_sha256([a, b])
    assert base == plan_sha256([PlannedItem("a.wav", "/elsewhere/a.wav", 1.0), b])  # paths are not rows
    assert base != plan_sha256([PlannedItem("a.wav", "/x/a.wav", 1.5), b])
    assert base != plan_sha256([PlannedItem("c.wav", "/x/a.wav", 1.0), b])
    assert base != plan_sha256([b, a])


def test_a_batch_never_holds_more_padded_seconds_than_asked() -> None:
    """``n * longest <= batch_seconds``: four 1 s files in batches of 2 s are two pairs."""
    assert batches([1.0] * 4, batch_seconds=2.0, max_seconds=10.0) == [Batch((0, 1)), Batch((2, 3))]
    assert batches([0.5, 0.5, 0.5, 1.0], batch_seconds=2.0, max_seconds=10.0) == [Batch((0, 1, 2)), Batch((3,))]
    # a file alone over the budget still gets its own batch
    assert batches([3.0, 3.0], batch_seconds=2.0, max_seconds=10.0) == [Batch((0,)), Batch((1,))]


def test_a_file_of_exactly_max_seconds_is_batched_and_a_longer_one_streamed() -> None:
    assert batches([1.0, 2.0, 2.0001], batch_seconds=100.0, max_seconds=2.0) == [
        Batch((0, 1)), Batch((2,), streamed=True)]


def test_header_durations_are_exact_and_empty_or_unreadable_files_are_minus_one(tmp_path: Path) -> None:
    assert header_duration(str(_tone(tmp_path / "odd.wav", 4801, 48000))) == 4801 / 48000
    sf.write(tmp_path / "empty.wav", np.zeros(0, np.float32), 24000)
    assert header_duration(str(tmp_path / "empty.wav")) == -1.0
    (tmp_path / "junk.wav").write_bytes(b"RIFF junk")
    assert header_duration(str(tmp_path / "junk.wav")) == -1.0


# -- rows ------------------------------------------------------------------------------------------------
def test_row_metadata_is_exact_for_batched_and_streamed_files(tiny_model_file: Path, tmp_path: Path) -> None:
    """``duration`` is samples / rate in float64, exactly (detokenize rounds it back to the
    sample count); the source's own rate and channels, also for a file streamed over
    ``--max-seconds``; ``num_samples`` the length at the model's 24 kHz."""
    data = tmp_path / "data"
    files = {"odd.wav": (4801, 48000, 2), "mono.wav": (7351, 22050, 1), "long.wav": (1.6 * 44100, 44100, 2)}
    for name, (samples, rate, channels) in files.items():
        _tone(data / name, int(samples), rate, channels, seed=len(name))
    out = tmp_path / "out"
    tokenize(TokenizeOptions([str(data)], out, model=str(tiny_model_file), device="cpu", max_seconds=1.0))
    table = pq.read_table(sorted(out.glob("shard-*.parquet")))
    assert table.schema.field("duration").type == pa.float64()
    assert table.schema.field("codes").type == pa.list_(pa.list_(pa.int16()))
    rows = {row["id"]: row for row in table.to_pylist()}
    assert sorted(rows) == sorted(files)
    for name, (samples, rate, channels) in files.items():
        row, samples = rows[name], int(samples)
        assert row["duration"] == samples / rate, name  # exact: not float32, not from the model's rate
        assert (row["sample_rate"], row["channels"]) == (rate, channels), name
        assert row["num_samples"] == resampled_length(samples, rate, 24000), name
        assert (row["num_codebooks"], row["num_frames"]) == (4, len(row["codes"][0])), name
        assert [len(c) for c in row["codes"]] == [row["num_frames"]] * 4, name
        assert row["num_frames"] == -(-row["num_samples"] // 320), name  # ceil(samples / hop)


def _alone(model: EncodecModel, path: Path) -> tuple[np.ndarray, np.ndarray | None]:
    """Codes [K, F] (and scales [S] of a normalising model) of the file alone."""
    wav, rate = read_audio(path)
    with torch.inference_mode():
        frames = model.encode(convert_audio(wav, rate, model.sample_rate, model.channels)[None])
    scales = None if frames[0].scale is None else torch.cat([f.scale.reshape(-1) for f in frames]).numpy()
    return torch.cat([f.codes for f in frames], dim=-1)[0].numpy(), scales


def _saved(config: EncodecConfig, folder: Path) -> tuple[Path, EncodecModel]:
    from official_ref import random_codebooks
    torch.manual_seed(3)
    path = save_model(random_codebooks(EncodecModel(config), 4), folder / f"{config.name}.safetensors")
    model = load_model(path)
    model.set_target_bandwidth(max(model.target_bandwidths))
    return path, model


@pytest.mark.parametrize("normalising", [False, True])
def test_the_gpus_batched_path_gives_each_files_own_codes(normalising: bool, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """On a GPU the rows come from one padded ``encode_batch`` pass (the CPU encodes item by
    item): run that path here, files of mixed lengths in one batch, and compare every row
    (codes, and scales of a segmenting, normalising model) with the file alone: the same
    shape, and codes equal but for near-ties."""
    from opencodec.tokens import job

    config = (EncodecConfig(name="seg", sample_rate=48000, channels=2, causal=False, norm="time_group_norm",
                            normalize=True, segment=0.1, n_filters=4, dimension=16, n_q=4, lstm=1,
                            target_bandwidths=[3.0, 6.0])
              if normalising else
              EncodecConfig(name="plain", n_filters=4, dimension=16, n_q=4, lstm=1, target_bandwidths=[1.5, 3.0]))
    weights, model = _saved(config, tmp_path)
    data = tmp_path / "data"
    for i, (samples, rate, channels) in enumerate(((4801, 48000, 2), (3000, 16000, 1), (14400, 48000, 2))):
        _tone(data / f"f{i}.wav", samples, rate, channels, seed=i)
    monkeypatch.setattr(job, "encode_each", job.encode_batch)
    tokenize(TokenizeOptions([str(data)], tmp_path / "out", model=str(weights), device="cpu"))
    ds = TokenDataset(tmp_path / "out")
    assert len(ds) == 3
    for i in range(3):
        row = ds[i]
        codes, scales = _alone(model, data / row["id"])
        # A batch runs other kernels than one item, so a near-tied code may flip
        # (batching.encode_batch); another file's or a misaligned row would share few codes.
        got = row["codes"].numpy()
        assert got.shape == codes.shape, row["id"]
        assert (got == codes).mean() >= 0.95, row["id"]
        if normalising:
            np.testing.assert_allclose(row["scales"].numpy(), scales, rtol=1e-5, err_msg=row["id"])
        else:
            assert "scales" not in row


def test_a_model_that_cannot_stream_encodes_long_files_whole(tmp_path: Path) -> None:
    """--max-seconds streams long files only with a model that can stream them (causal, or
    segmenting); any other encodes them whole rather than fail."""
    weights, model = _saved(EncodecConfig(name="whole", causal=False, n_filters=4, dimension=16, n_q=4, lstm=1,
                                          target_bandwidths=[1.5, 3.0]), tmp_path)
    data = tmp_path / "data"
    _tone(data / "long.wav", 36000, 24000)
    summary = tokenize(TokenizeOptions([str(data)], tmp_path / "out", model=str(weights), device="cpu",
                                       max_seconds=1.0))
    assert summary.index is not None and (summary.index["rows"], summary.index["errors"]) == (1, 0)
    np.testing.assert_array_equal(TokenDataset(tmp_path / "out")[0]["codes"].numpy(), _alone(model, data / "long.wav")[0])


def test_a_streamed_file_one_sample_short_of_its_header_is_an_error(tiny_model_file: Path, tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """A streamed file that gives even one sample fewer than its header counts is truncated:
    no row, the reason in errors.jsonl; one that gives them all has its row."""
    from opencodec.tokens import job

    data = tmp_path / "data"
    _tone(data / "short.flac", 36000, 24000)
    _tone(data / "whole.flac", 36240, 24000, seed=1)
    stream = job.encode_file_streaming

    def one_short(model: EncodecModel, path: str) -> tuple:
        codes, scales, length = stream(model, path)
        return codes, scales, length - 1 if Path(path).name == "short.flac" else length

    monkeypatch.setattr(job, "encode_file_streaming", one_short)
    out = tmp_path / "out"
    tokenize(TokenizeOptions([str(data)], out, model=str(tiny_model_file), device="cpu", max_seconds=1.0))
    [error] = [json.loads(line) for line in (out / "errors.jsonl").read_text().splitlines()]
    assert error == {"id": "short.flac", "path": str(data / "short.flac"),
                     "error": f"cannot read audio file {data / 'short.flac'}: truncated: its header says 36000 "
                              "samples, the file holds 35999"}
    assert [row["id"] for row in pq.read_table(sorted(out.glob("shard-*.parquet"))).to_pylist()] == ["whole.flac"]


def test_reading_a_parquet_file_that_is_no_shard_says_so(tmp_path: Path) -> None:
    from opencodec.tokens.shards import read_metadata

    plain = tmp_path / "plain.parquet"
    pq.write_table(pa.table({"x": [1, 2]}), plain)
    with pytest.raises(TokenizeError, match=rf"^{plain} is not an opencodec token shard \(no 'opencodec' metadata\)$"):
        read_metadata(plain)


def test_codebooks_of_more_than_32768_codes_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    """Codes are stored as int16: 32768 codes (0..32767) fit, 65536 would wrap to negatives."""
    from opencodec.errors import OpenCodecError
    from opencodec.tokens import job

    def model(bins: int) -> EncodecModel:
        torch.manual_seed(0)
        return EncodecModel(EncodecConfig(name=f"b{bins}", n_filters=4, dimension=8, n_q=2, ratios=[8, 5, 4, 2],
                                          lstm=1, bins=bins, target_bandwidths=[1.5]))

    for bins, refused in ((32768, False), (65536, True)):
        built = model(bins)
        monkeypatch.setattr(job, "load_model", lambda name, device: built)
        if refused:
            with pytest.raises(OpenCodecError, match=f"^model b{bins} has {bins} codes per codebook: more than "
                                                     "int16 holds$"):
                job.prepare_model(TokenizeOptions(["x"], Path("o")), torch.device("cpu"))
        else:
            assert job.prepare_model(TokenizeOptions(["x"], Path("o")), torch.device("cpu")) is built


# -- resume ----------------------------------------------------------------------------------------------
def test_a_rerun_removes_the_temporaries_a_killed_run_left(tiny_model_file: Path, tmp_path: Path) -> None:
    """A killed run leaves ``.shard-...tmp`` files; the rerun deletes those of the shards it
    writes, and the folder ends as an uninterrupted run's (hidden files included)."""
    data = tmp_path / "data"
    for i in range(3):
        _tone(data / f"f{i}.wav", 2400 + 240 * i, 24000, seed=i)
    options = dict(model=str(tiny_model_file), device="cpu", shard_rows=2)
    tokenize(TokenizeOptions([str(data)], tmp_path / "full", **options))
    out = tmp_path / "out"
    tokenize(TokenizeOptions([str(data)], out, **options))
    (out / "index.json").unlink()
    (out / "shard-00001-of-00002.parquet").unlink()
    stale = out / ".shard-00001-of-00002.parquet.host-1234-1.a1b2c3d4.tmp"
    stale.write_bytes(b"half a shard")
    summary = tokenize(TokenizeOptions([str(data)], out, **options))
    assert (summary.stats.shards_written, summary.stats.shards_skipped) == (1, 1)
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in (tmp_path / "full").iterdir())
    for name in ("shard-00000-of-00002.parquet", "shard-00001-of-00002.parquet", "index.json", "errors.jsonl"):
        assert (out / name).read_bytes() == (tmp_path / "full" / name).read_bytes(), name


def test_the_progress_total_of_a_rerun_is_the_audio_left(tiny_model_file: Path, tmp_path: Path) -> None:
    """The bar's total counts the shards still to write, not those a killed run finished."""
    data = tmp_path / "data"
    for i, samples in enumerate((2400, 4800, 7200)):
        _tone(data / f"f{i}.wav", samples, 24000, seed=i)
    out = tmp_path / "out"
    totals: list[float] = []

    def progress(total: float):  # type: ignore[no-untyped-def]
        totals.append(total)
        return lambda seconds, files, errors: None

    options = TokenizeOptions([str(data)], out, model=str(tiny_model_file), device="cpu", shard_rows=2)
    tokenize(options, progress)
    (out / "index.json").unlink()
    (out / "shard-00001-of-00002.parquet").unlink()  # the 0.3 s file (rows sorted by duration)
    tokenize(options, progress)
    tokenize(options, progress)  # all done: nothing left
    assert totals == [pytest.approx(0.6), pytest.approx(0.3), 0]


# -- devices ---------------------------------------------------------------------------------------------
def test_each_local_rank_takes_its_own_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    """The GPU is the local rank's: with 3 processes on each 4-GPU node, rank 4 (the second
    node's second process) takes cuda:1, not cuda:(4 % 4); with 4 on 8-GPU nodes, rank 5 cuda:1."""
    from opencodec.tokens.job import resolve_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    assert resolve_device("cuda", WorkerPlace(rank=4, world=6, local_rank=1)) == torch.device("cuda", 1)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 8)
    assert resolve_device("auto", WorkerPlace(rank=5, world=8, local_rank=1)) == torch.device("cuda", 1)
    assert resolve_device("cpu", WorkerPlace(rank=5, world=8, local_rank=1)) == torch.device("cpu")


def test_loader_processes_share_the_nodes_cores(monkeypatch: pytest.MonkeyPatch) -> None:
    """On CUDA: the node's cores shared among its ranks, less one for the encoding, at most 8."""
    from opencodec.tokens.job import default_loader_workers

    monkeypatch.setattr(os, "cpu_count", lambda: 16)
    cuda = torch.device("cuda", 0)
    for local_world, expected in (("1", 8), ("2", 7), ("4", 3), ("8", 1), ("32", 1)):
        monkeypatch.setenv("LOCAL_WORLD_SIZE", local_world)
        assert default_loader_workers(cuda) == expected, local_world
    assert default_loader_workers(torch.device("cpu")) == 0


# -- reading audio and rows back --------------------------------------------------------------------------
def test_a_read_batch_is_padded_with_zeros_and_records_its_sources(tmp_path: Path) -> None:
    from opencodec.tokens.reader import BatchAudio

    short = _tone(tmp_path / "short.wav", 1000, 24000)
    long = _tone(tmp_path / "long.wav", 1600, 16000, channels=2, seed=1)  # 2400 at 24 kHz, mixed to mono
    items = {0: [PlannedItem("short.wav", str(short), 1000 / 24000), PlannedItem("long.wav", str(long), 0.1),
                 PlannedItem("bad.wav", str(tmp_path / "missing.wav"), -1.0)]}
    loaded = BatchAudio(items, [(0, Batch((0, 1, 2)))], 24000, 1)[0]
    assert loaded.rows == [0, 1] and loaded.lengths == [1000, 2400] and list(loaded.errors) == [2]
    assert loaded.audio is not None and loaded.audio.shape == (2, 1, 2400)
    assert torch.count_nonzero(loaded.audio[0, :, 1000:]) == 0 and torch.count_nonzero(loaded.audio[0, :, :1000]) > 900
    assert [(s.sample_rate, s.channels, s.duration) for s in loaded.sources] == [(24000, 1, 1000 / 24000),
                                                                                 (16000, 2, 0.1)]


def test_token_dataset_rows_end_at_its_length(tokens: Path) -> None:
    """``ds[len(ds)]`` is an IndexError (not row 0 again): iterating the dataset as a sequence
    gives each row once."""
    ds = TokenDataset(tokens)
    assert len(ds) == 6
    for bad in (6, 7, -7):
        with pytest.raises(IndexError, match=rf"^row {bad} out of range for 6 rows$"):
            ds[bad]
    ids = [item["id"] for item in ds]
    assert len(ids) == 6 and sorted(ids) == sorted(name for name, *_ in test_tokenize.FILES)
    assert ds[-6]["id"] == ds[0]["id"] and ds[5]["id"] == ds[-1]["id"]
    # the job's metadata, not that of the first shard (its index, seconds and errors)
    assert sorted(ds.metadata) == ["bandwidth", "dtype", "frame_rate", "model", "model_channels", "model_sample_rate",
                                   "num_shards", "opencodec_version", "weights_file", "weights_sha256"]
    assert (ds.metadata["num_shards"], ds.metadata["frame_rate"], ds.metadata["bandwidth"]) == (3, 75, 3.0)


def test_detokenize_gives_the_channels_and_rate_asked(tokens: Path, tiny_model_file: Path, tmp_path: Path) -> None:
    """A mono 24 kHz row decoded with channels=2 and rate=16000: stereo, 16 kHz, the source's
    length at that rate; without them, the source's own."""
    from opencodec.tokens import detokenize

    [path] = detokenize(tokens, tmp_path / "st", ids=["a.wav"], model=str(tiny_model_file), channels=2, rate=16000)
    info = sf.info(path)
    assert (info.channels, info.samplerate, info.frames) == (2, 16000, resampled_length(14400, 24000, 16000))
    [path] = detokenize(tokens, tmp_path / "own", ids=["sub/deeper/c.wav"], model=str(tiny_model_file))
    info = sf.info(path)
    assert (info.channels, info.samplerate, info.frames) == (2, 48000, 43200)


def _item(row_id: str, k: int, f: int, **extra: object) -> dict:
    return {"id": row_id, "codes": torch.arange(k * f).reshape(k, f), **extra}


def test_the_collate_pads_and_keeps_every_other_field() -> None:
    a = _item("a", 2, 3, sample_rate=16000, channels=1, duration=0.5, num_samples=12000, scales=torch.ones(1))
    b = _item("b", 2, 5, sample_rate=48000, channels=2, duration=0.75, num_samples=18000, scales=torch.zeros(2))
    batch = collate_tokens([a, b], pad_value=-7)
    assert batch["lengths"].tolist() == [3, 5] and batch["ids"] == ["a", "b"]
    assert batch["codes"].tolist() == [[[0, 1, 2, -7, -7], [3, 4, 5, -7, -7]],
                                       [[0, 1, 2, 3, 4], [5, 6, 7, 8, 9]]]
    assert (batch["sample_rate"], batch["channels"], batch["duration"], batch["num_samples"]) == (
        [16000, 48000], [1, 2], [0.5, 0.75], [12000, 18000])
    assert [s.tolist() for s in batch["scales"]] == [[1.0], [0.0, 0.0]]
    assert set(batch) == {"codes", "lengths", "ids", "sample_rate", "channels", "duration", "num_samples", "scales"}
    with pytest.raises(ValueError, match=r"^rows with different numbers of codebooks cannot be batched: \[2, 4\]$"):
        collate_tokens([a, _item("c", 4, 3)])


# -- bf16 -------------------------------------------------------------------------------------------------
def test_bf16_is_checked_against_fp32_on_the_first_batch_only(tiny_model_file: Path, tmp_path: Path) -> None:
    """The agreement reported counts the codes of the first batch (here the shortest file)."""
    data = tmp_path / "data"
    for i, samples in enumerate((2400, 4800, 7200)):
        _tone(data / f"f{i}.wav", samples, 24000, seed=i)
    with pytest.warns(UserWarning, match="--dtype bf16 on the CPU"):
        summary = tokenize(TokenizeOptions([str(data)], tmp_path / "out", model=str(tiny_model_file), device="cpu",
                                           dtype="bf16", batch_seconds=0.2))  # one file a batch
    first = TokenDataset(tmp_path / "out")[0]
    assert first["id"] == "f0.wav"
    assert summary.stats.bf16_checked == first["codes"].numel() == 4 * 8


# -- the command -------------------------------------------------------------------------------------------
def _fake_job(monkeypatch: pytest.MonkeyPatch, **stats: int) -> list[TokenizeOptions]:
    """``opencodec.tokens.tokenize`` replaced by one that records its options and returns an
    unfinished job's summary with ``stats``."""
    import opencodec.tokens as tokens_pkg
    from opencodec.tokens.job import Summary, WorkerStats

    seen: list[TokenizeOptions] = []

    def fake(options: TokenizeOptions, progress: object = None) -> Summary:
        seen.append(options)
        return Summary(WorkerStats(**stats), 1.0, WorkerPlace())

    monkeypatch.setattr(tokens_pkg, "tokenize", fake)
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    monkeypatch.delenv("RANK", raising=False)
    return seen


def test_the_commands_defaults(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from opencodec.cli import main

    seen = _fake_job(monkeypatch)
    assert main(["-q", "tokenize", "in", "--out", str(tmp_path / "o"), "--workers", "1"]) == 0
    [options] = seen
    assert (options.batch_seconds, options.shard_rows, options.max_seconds) == (120.0, 1000, 300.0)
    assert (options.model, options.bandwidth, options.device, options.dtype, options.loader_workers) == (
        None, None, "auto", "fp32", None)


def test_the_bf16_agreement_is_printed_in_percent(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                                  capsys: pytest.CaptureFixture) -> None:
    from opencodec.cli import main

    _fake_job(monkeypatch, bf16_equal=1, bf16_checked=3)
    assert main(["-q", "tokenize", "in", "--out", str(tmp_path / "o"), "--dtype", "bf16", "--workers", "1"]) == 0
    assert capsys.readouterr().err == ("opencodec: warning: bf16: 33.33% of codes equal fp32 encoding (3 codes of "
                                       "the first batch checked)\n")


def test_durations_and_bar_units_at_their_thresholds() -> None:
    from opencodec.cli.tokens import _bar_unit, _duration

    assert [_duration(s) for s in (0.00421, 0.999, 1.0, 59.9, 60.0, 3599.0, 3600.0, 8100.0)] == [
        "0.00421 s", "0.999 s", "1.0 s", "59.9 s", "1.0 min", "60.0 min", "1.00 h", "2.25 h"]
    assert [_bar_unit(s) for s in (119.0, 120.0, 7199.0, 7200.0)] == [(1.0, "s"), (60.0, "min"), (60.0, "min"),
                                                                       (3600.0, "h")]


# -- inputs -------------------------------------------------------------------------------------------------
def test_hidden_files_and_folders_are_not_listed(tmp_path: Path) -> None:
    root = tmp_path / "root"
    for name in ("a.wav", ".hidden.wav", ".cache/b.wav", "sub/c.wav", "sub/.d.wav"):
        _tone(root / name, 240, 24000)
    assert [item.id for item in list_inputs([root])] == ["a.wav", "sub/c.wav"]


def test_a_list_skips_comments_and_blank_lines(tmp_path: Path) -> None:
    a = _tone(tmp_path / "a.wav", 240, 24000)
    (tmp_path / "list.txt").write_text("# my files\n\n  a.wav  \n   # indented comment\n")
    assert [(i.id, i.path) for i in list_inputs([tmp_path / "list.txt"])] == [("a.wav", str(a))]


def test_a_manifest_with_some_missing_files_lists_them_all(tmp_path: Path) -> None:
    """Only a manifest none of whose files exist is refused; a missing file among others is
    listed (and reported in errors.jsonl when read)."""
    _tone(tmp_path / "a.wav", 240, 24000)
    manifest = tmp_path / "m.jsonl"
    manifest.write_text(json.dumps({"path": "a.wav"}) + "\n" + json.dumps({"path": "gone.wav"}) + "\n")
    assert [(i.id, i.path) for i in list_inputs([manifest])] == [("a.wav", str(tmp_path / "a.wav")),
                                                                  ("gone.wav", str(tmp_path / "gone.wav"))]
