"""Behaviour that mutation testing found unpinned, now pinned with real values: a tokenize rerun
over a changed corpus is refused, PESQ-WB and STOI take (reference, degraded) in their
libraries' order, entropy-coded segments longer than one decoding block round-trip, the
deterministic format's minimum body size, streaming ``flush`` starts a new stream, ``bins``
must be a power of two, and a dying worker never deletes an output that existed before."""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import soundfile as sf
import torch

from official_ref import random_codebooks
from test_eval_metrics import add_noise, speech_like
from test_streaming import _signal, _small
from opencodec import EncodecConfig, EncodedFrame, EncodecModel, cli, save_model
from opencodec.bitstream import (DeterministicCoding, EcdcHeader, StreamLayout, encode_ecdc,
                                 min_lm_body_size, parse_header, read_ecdc)
from opencodec.ecdc_info import describe_file
from opencodec.entropy import (EntropyLM, decode_segment_fixed, decode_segment_with_lm,
                               encode_segment_fixed, encode_segment_with_lm, fixed_lm_for)
from opencodec.entropy.arithmetic import DecodedColumns
from opencodec.entropy.fixed import SCHEME
from opencodec.errors import BitstreamError
from opencodec.eval import metrics as M
from opencodec.file_jobs import Job, Plan, run_jobs
from opencodec.streaming import StreamingDecoder, StreamingEncoder
from opencodec.tokens import TokenizeError, TokenizeOptions, tokenize


# -- tokenize: a rerun into the same --out over another corpus is refused (job.json files_sha256) --
def _tone_file(path: Path, seconds: float, hz: float) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    t = np.arange(int(24_000 * seconds)) / 24_000
    sf.write(path, (0.3 * np.sin(2 * np.pi * hz * t)).astype(np.float32), 24_000)


@pytest.fixture(scope="module")
def tiny_tokenizer(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(5)
    config = EncodecConfig(name="tiny", n_filters=4, dimension=16, n_q=4, ratios=[8, 5, 4, 2], lstm=1,
                           target_bandwidths=[1.5, 3.0])
    folder = tmp_path_factory.mktemp("model")
    return save_model(random_codebooks(EncodecModel(config), 7), folder / "tiny.safetensors")


@pytest.mark.parametrize("change", ["other files", "a file's duration"])
def test_tokenize_rerun_over_a_changed_corpus_is_refused(tiny_tokenizer: Path, tmp_path: Path,
                                                         change: str) -> None:
    """Corpus A tokenised, one shard lost, then the same ``--out`` with a corpus of as many
    files (so only ``files_sha256`` tells them apart): refused, naming the changed inputs, and
    nothing written (the lost shard stays lost, the other shard is untouched)."""
    first = tmp_path / "A"
    for i in range(2):
        _tone_file(first / f"a{i}.wav", 0.5, 200.0 + 50 * i)
    out = tmp_path / "out"
    options = dict(out=out, model=str(tiny_tokenizer), device="cpu", shard_rows=1)
    done = tokenize(TokenizeOptions([str(first)], **options))
    assert done.index is not None and done.index["rows"] == 2
    lost, kept = out / "shard-00001-of-00002.parquet", out / "shard-00000-of-00002.parquet"
    kept_bytes = kept.read_bytes()
    lost.unlink()
    (out / "index.json").unlink()
    if change == "other files":
        second = tmp_path / "B"
        for i in range(2):
            _tone_file(second / f"b{i}.wav", 0.5, 700.0 + 50 * i)
    else:  # the same folder, the same names: one file is longer now
        second = first
        _tone_file(first / "a1.wav", 0.75, 250.0)
    with pytest.raises(TokenizeError) as caught:
        tokenize(TokenizeOptions([str(second)], **options))
    message = str(caught.value)
    assert f"{out} holds the tokens of another job: the input files, or their durations, changed " \
           "since that job (2 files then, 2 now)" in message
    assert not lost.exists() and kept.read_bytes() == kept_bytes
    assert [r["id"] for r in pq.read_table(kept).to_pylist()] == ["a0.wav"]


# -- PESQ-WB and STOI: (reference, degraded) in the libraries' documented order ------------------
@pytest.fixture(scope="module")
def speech16() -> np.ndarray:
    return speech_like(16_000, 3.0)[0]  # 16 kHz: pesq_wb does not resample, so values compare exactly


def test_pesq_wb_passes_reference_then_degraded(speech16: np.ndarray) -> None:
    """``pesq.pesq(fs, ref, deg, mode)``: the reference first. On this pair the order moves
    the score by ~0.4 MOS (3.61 against 4.00 measured)."""
    from pesq import pesq
    degraded = add_noise(speech16[None], 20.0)[0]
    ours = M.pesq_wb(degraded, speech16, 16_000)
    right = pesq(16_000, speech16.astype(np.float64), degraded.astype(np.float64), "wb")
    swapped = pesq(16_000, degraded.astype(np.float64), speech16.astype(np.float64), "wb")
    assert abs(right - swapped) > 0.2  # the order matters on this pair
    assert ours == pytest.approx(right, abs=1e-6)


def test_stoi_passes_reference_then_degraded(speech16: np.ndarray) -> None:
    """``pystoi.stoi(x_clean, y_degraded, fs)``: pystoi drops the frames where the *clean*
    signal is silent and clips the degraded one against it, so at 0 dB SNR the order moves
    the score by ~0.08 (0.710 against 0.626 measured)."""
    from pystoi import stoi
    degraded = add_noise(speech16[None], 0.0)[0]
    ours = M.stoi(degraded, speech16, 16_000)
    right = stoi(speech16.astype(np.float64), degraded.astype(np.float64), 16_000)
    swapped = stoi(degraded.astype(np.float64), speech16.astype(np.float64), 16_000)
    assert abs(right - swapped) > 0.03  # the order matters on this pair
    assert ours == pytest.approx(right, abs=1e-9)


# -- entropy coding: segments longer than DecodedColumns' 1024-frame block ---------------------
def test_decoded_columns_keep_frame_order_across_blocks() -> None:
    gen = torch.Generator().manual_seed(3)
    codes = torch.randint(0, 1024, (3, 2 * 1024 + 452), generator=gen)
    columns = DecodedColumns(3)
    for t in range(codes.shape[1]):
        columns.append(codes[:, t].tolist())
    assert torch.equal(columns.codes(), codes)
    assert columns.codes().shape == (3, 2500) and columns.codes().dtype == torch.long


def test_long_lm_segments_round_trip_both_formats() -> None:
    """1030 frames (a full 1024-frame block plus 6): the float-LM (official) coder and the
    deterministic integer coder both give the codes back in order."""
    torch.manual_seed(0)
    lm = EntropyLM(n_q=2, card=1024, dim=32, num_heads=8, num_layers=1, past_context=20).eval()
    codes = torch.randint(0, 1024, (2, 1030))
    assert torch.equal(decode_segment_with_lm(lm, encode_segment_with_lm(lm, codes), 2, 1030), codes)
    flm = fixed_lm_for(lm)
    data = encode_segment_fixed(flm, codes, check_bits=8, check_interval=75, crc_seed=5)
    assert torch.equal(decode_segment_fixed(flm, data, 2, 1030, check_bits=8, check_interval=75, crc_seed=5),
                       codes)


# -- the deterministic format's minimum body: scales + half a CRC-32 per segment + code bits/2 ----
LAYOUT_24K = StreamLayout(model_name="encodec_24khz", n_q=32, bits=10, hop_length=320, normalize=False)
LAYOUT_48K = StreamLayout(model_name="encodec_48khz", n_q=16, bits=10, hop_length=320, normalize=True,
                          segment_length=48000, segment_stride=47520)


def _coding(lm: EntropyLM) -> DeterministicCoding:
    return DeterministicCoding(lm_name="test_lm", lm_hash=fixed_lm_for(lm).weights_hash, scheme=SCHEME,
                               check_bits=8, check_interval=75)


def test_min_lm_body_size_counts_half_a_crc_per_segment() -> None:
    """The documented bound: ``n_seg * scale_bytes + 2 * n_seg (deterministic only) +
    int(frames * nc * -log2((2**24 - 2 card + 2) / 2**24) / 16)``."""
    torch.manual_seed(0)
    det = _coding(EntropyLM(n_q=32, card=1024, dim=32, num_layers=1, past_context=20).eval())
    bits = -math.log2((2 ** 24 - 2 * 1024 + 2) / 2 ** 24)
    hour = 24_000 * 3600  # 270000 frames x 32 codebooks: the code term is 95 bytes
    assert int(270_000 * 32 * bits / 16) == 95
    assert min_lm_body_size(EcdcHeader("encodec_24khz", hour, 32, True, det), LAYOUT_24K, 1024) == 2 + 95
    assert min_lm_body_size(EcdcHeader("encodec_24khz", hour, 32, True, None), LAYOUT_24K, 1024) == 95
    assert min_lm_body_size(EcdcHeader("encodec_24khz", 24_000, 2, True, det), LAYOUT_24K, 1024) == 2
    assert min_lm_body_size(EcdcHeader("encodec_24khz", 24_000, 2, True, None), LAYOUT_24K, 1024) == 0
    # 48 kHz, 60000 samples: two segments, each a 4-byte scale (+ 2 for its CRC when deterministic)
    assert min_lm_body_size(EcdcHeader("encodec_48khz", 60_000, 2, True, det), LAYOUT_48K, 1024) == 12
    assert min_lm_body_size(EcdcHeader("encodec_48khz", 60_000, 2, True, None), LAYOUT_48K, 1024) == 8


def test_a_deterministic_body_below_the_minimum_is_refused(tmp_path: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    """A 1 s deterministic file at 1.5 kbps needs at least 2 body bytes: cut to 1 (or 0), both
    ``info`` and decoding say it is truncated, before any decoding."""
    torch.manual_seed(0)
    lm = EntropyLM(n_q=32, card=1024, dim=32, num_layers=1, past_context=20).eval()
    header = EcdcHeader("encodec_24khz", 24_000, 2, True, _coding(lm))
    codes = torch.randint(0, 1024, (1, 2, 75))
    data = encode_ecdc(header, [EncodedFrame(codes, None)], LAYOUT_24K, lm)
    _, offset = parse_header(data)
    assert torch.equal(read_ecdc(data, LAYOUT_24K, lm)[1][0].codes, codes)
    for body in (1, 0):
        with pytest.raises(BitstreamError, match=rf"^ECDC body truncated: an entropy-coded body for 24000 "
                                                 rf"samples x 2 codebooks needs at least 2 bytes, got {body}$"):
            read_ecdc(data[:offset + body], LAYOUT_24K, lm)
    cut = tmp_path / "cut.ecdc"
    cut.write_bytes(data[:offset + 1])
    assert describe_file(cut)["lm_body_min_bytes"] == 2
    capsys.readouterr()
    assert cli.main(["info", str(cut)]) == 1
    assert (f"{cut}: truncated: the entropy-coded body has 1 bytes, and 24000 samples x 2 codebooks "
            "need at least 2") in capsys.readouterr().err
    whole = tmp_path / "whole.ecdc"
    whole.write_bytes(data)
    assert cli.main(["info", str(whole)]) == 0


# -- streaming: flush ends the stream and resets it (a new batch size is a new stream) ----------
@pytest.fixture(scope="module")
def small_model() -> EncodecModel:
    return _small(11, ratios=[4, 2], lstm=1)


def _encode_stream(enc: StreamingEncoder, x: torch.Tensor) -> torch.Tensor:
    parts = [enc.push(x[..., i:i + 37]) for i in range(0, x.shape[-1], 37)]
    return torch.cat(parts + [enc.flush()], dim=-1)


def _decode_stream(dec: StreamingDecoder, codes: torch.Tensor) -> torch.Tensor:
    parts = [dec.push(codes[..., i:i + 3]) for i in range(0, codes.shape[-1], 3)]
    return torch.cat(parts + [dec.flush()], dim=-1)


@pytest.mark.parametrize("exact", [True, False])
def test_flush_starts_a_new_stream(small_model: EncodecModel, exact: bool) -> None:
    """After ``flush``, a stream of another batch size is accepted and gives exactly what a
    fresh encoder/decoder gives; the counters start again at 0."""
    one, two = _signal(1, 1, 700, seed=1), _signal(2, 1, 900, seed=2)
    enc = StreamingEncoder(small_model, exact=exact)
    first = _encode_stream(enc, one)
    assert first.shape == (1, 4, math.ceil(700 / 8))
    assert (enc.samples_in, enc.frames_out) == (0, 0)
    again = _encode_stream(enc, two)
    assert torch.equal(again, _encode_stream(StreamingEncoder(small_model, exact=exact), two))
    assert again.shape == (2, 4, math.ceil(900 / 8))

    dec = StreamingDecoder(small_model, exact=exact)
    assert _decode_stream(dec, first).shape == (1, 1, first.shape[-1] * 8)
    assert (dec.frames_in, dec.samples_out) == (0, 0)
    audio = _decode_stream(dec, again)
    assert torch.equal(audio, _decode_stream(StreamingDecoder(small_model, exact=exact), again))
    assert audio.shape == (2, 1, again.shape[-1] * 8)


# -- the model: bins must be a power of two -------------------------------------------------------
@pytest.mark.parametrize("bins", [1000, 3, 1, 0, -4])
def test_bins_not_a_power_of_two_is_refused(bins: int) -> None:
    config = EncodecConfig(name="b", n_filters=4, dimension=8, n_q=2, bins=bins, ratios=[2], lstm=0,
                           target_bandwidths=[1.0])
    with pytest.raises(ValueError, match=rf"^bins must be a power of two, got {bins}$"):
        EncodecModel(config)


def test_bins_a_power_of_two_builds() -> None:
    for bins in (2, 1024):
        model = EncodecModel(EncodecConfig(name="b", n_filters=4, dimension=8, n_q=2, bins=bins, ratios=[2],
                                           lstm=0, target_bandwidths=[1.0]))
        assert model.bins == bins and model.config.bits_per_codebook == int(math.log2(bins))


# -- file jobs in processes: a dying worker never deletes an output that existed before the run ----
class _DiesOn:
    """Work that kills its worker process on the job named ``die`` (every time), after leaving
    a half-written temporary output like an interrupted atomic write; other jobs write
    ``new <name>`` over their output (as ``--force`` does)."""

    def __call__(self, job: Job, folder: bool) -> str:
        if job.src.name == "die":
            (job.dst.parent / f".{job.dst.name}.x1.tmp").write_bytes(b"partial")
            os._exit(3)
        job.dst.write_bytes(b"new " + job.src.name.encode())
        return job.src.name


def test_a_dying_worker_keeps_an_output_that_existed(tmp_path: Path) -> None:
    """``-j 2 -f`` over a folder whose outputs exist: the job whose worker dies (twice, so it
    fails) keeps its old output (only outputs this run wrote are removed before a job runs
    again); the others are overwritten; no temporary file is left."""
    names = ["a", "die", "c", "d"]
    plan = Plan([Job(tmp_path / n, tmp_path / f"{n}.out") for n in names], folder=True)
    for n in names:
        (tmp_path / f"{n}.out").write_bytes(b"old " + n.encode())
    outcomes = list(run_jobs(plan, _DiesOn(), processes=2))
    assert [o.job.src.name for o in outcomes] == names
    assert [o.result for o in outcomes] == ["a", None, "c", "d"]
    error = outcomes[1].error
    assert isinstance(error, RuntimeError) and "its worker process died" in str(error)
    assert (tmp_path / "die.out").read_bytes() == b"old die"
    assert [(tmp_path / f"{n}.out").read_bytes() for n in ("a", "c", "d")] == [b"new a", b"new c", b"new d"]
    assert not list(tmp_path.glob(".*.tmp"))
