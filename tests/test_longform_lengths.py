"""The long-file path resamples to ``convert_audio``'s length (``resampled_length``: rounded
half up), not Python's ``round`` (halves to even).

A 48 kHz file of 128001 samples is 64000.5 samples at 24 kHz: ``convert_audio`` gives 64001
(201 frames of 320), ``round`` gave 64000 (200 frames): ``opencodec tokenize --max-seconds``
rows and ``compress`` of files over 60 s (both read through ``_ConvertedBlocks``) had one
frame and one sample fewer than the whole-file path, and the ``.ecdc`` bytes differed.
"""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import soundfile as sf
import torch

from opencodec import EncodecModel
from opencodec.audio import convert_audio, read_audio, resampled_length
from opencodec.compress import compress
from opencodec.longform import compress_file_streaming, encode_file_streaming
from opencodec.longform.blocks import _ConvertedBlocks
from stream_models import tiny_random_model
from test_longform_exact import _one_thread  # noqa: F401  (autouse: one thread, restored after)

#: 48 kHz samples whose 24 kHz length is a tie rounded up to 1 (mod 320): a frame more.
TIE = 128001


@pytest.fixture(scope="module")
def tiny() -> EncodecModel:
    """A small random-weight streamable 24 kHz mono model (hop 320)."""
    model = tiny_random_model()
    model.set_target_bandwidth(3.0)
    return model


def _write(path: Path, samples: int, rate: int, channels: int = 1, seed: int = 0) -> Path:
    """A float WAV of ``samples`` frames: a tone plus seeded noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(samples) / rate
    x = 0.3 * np.sin(2 * np.pi * 330 * t)[:, None] + 0.05 * rng.standard_normal((samples, channels))
    sf.write(str(path), x.astype(np.float32), rate, subtype="FLOAT")
    return path


def _whole(model: EncodecModel, path: Path) -> torch.Tensor:
    """The whole-file reference: read_audio + convert_audio, [C, T] at the model's rate."""
    wav, rate = read_audio(path)
    return convert_audio(wav, rate, model.sample_rate, model.channels)


def test_tie_case_is_the_reported_one() -> None:
    # the case itself: a tie that round() (half to even) and resampled_length (half up) split
    assert TIE * 24000 / 48000 == 64000.5
    assert round(TIE * 24000 / 48000) == 64000
    assert resampled_length(TIE, 48000, 24000) == 64001
    assert -(-64001 // 320) == 201 and -(-64000 // 320) == 200


def test_blocks_length_equals_convert_audio(tmp_path: Path) -> None:
    src = _write(tmp_path / "in.wav", TIE, 48000)
    blocks = _ConvertedBlocks(src, 24000, 1, 0.37)
    got = np.concatenate(list(blocks))
    wav, rate = read_audio(src)
    ref = convert_audio(wav, rate, 24000, 1)
    assert blocks.length == got.shape[0] == ref.shape[-1] == 64001
    np.testing.assert_array_equal(got.T, ref.numpy())


def test_encode_file_streaming_codes_and_length_equal_whole_file(tiny: EncodecModel, tmp_path: Path) -> None:
    """What ``tokenize`` stores for a file over ``--max-seconds``: codes and num_samples."""
    src = _write(tmp_path / "edge2.wav", TIE, 48000)
    wav = _whole(tiny, src)
    with torch.inference_mode():
        expected = torch.cat([f.codes for f in tiny.encode(wav[None])], dim=-1)[0]
    codes, scales, length = encode_file_streaming(tiny, src, block_seconds=0.5)
    assert scales is None
    assert length == wav.shape[-1] == 64001
    assert tuple(codes.shape) == tuple(expected.shape) == (4, 201)
    torch.testing.assert_close(codes, expected, rtol=0, atol=0)


def test_tokenize_long_file_row_equals_whole_file(tiny: EncodecModel, tmp_path: Path) -> None:
    """``opencodec tokenize --max-seconds 1`` of the 128001-sample 48 kHz file: the streamed
    row has whole-file encode's 201 frames and convert_audio's 64001 samples."""
    from opencodec.pretrained import save_model
    from opencodec.tokens import TokenizeOptions, tokenize

    ckpt = save_model(tiny, tmp_path / "tiny.safetensors")
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    src = _write(corpus / "edge2.wav", TIE, 48000)
    out = tmp_path / "tokens"
    summary = tokenize(TokenizeOptions([str(corpus)], out, model=str(ckpt), device="cpu",
                                       max_seconds=1.0, workers=1, loader_workers=0))
    assert summary.stats.files == 1 and summary.stats.errors == 0
    rows = [r for p in sorted(out.glob("shard-*.parquet")) for r in pq.read_table(p).to_pylist()]
    assert len(rows) == 1
    row = rows[0]
    wav = _whole(tiny, src)
    with torch.inference_mode():
        expected = torch.cat([f.codes for f in tiny.encode(wav[None])], dim=-1)[0].numpy()
    codes = np.array(row["codes"], dtype=np.int64)
    assert (row["num_samples"], row["num_frames"]) == (64001, 201)
    assert codes.shape == expected.shape == (4, 201)
    np.testing.assert_array_equal(codes, expected)


@pytest.mark.parametrize("samples,rate,channels", [(TIE, 48000, 1), (48003, 16000, 2), (64006, 32000, 1)])
def test_compress_file_streaming_bytes_equal_whole_file(tiny: EncodecModel, tmp_path: Path,
                                                        samples: int, rate: int, channels: int) -> None:
    """Ties at 48 kHz (odd length), 16 kHz (odd) and 32 kHz (2 mod 4), each rounding up to
    an even count (where half-to-even went down): the long path's bytes are compress()'s."""
    assert resampled_length(samples, rate, 24000) == round(samples * 24000 / rate) + 1
    src = _write(tmp_path / "in.wav", samples, rate, channels, seed=samples)
    out = tmp_path / "out.ecdc"
    compress_file_streaming(tiny, src, out, 3.0, block_seconds=0.41)
    assert out.read_bytes() == compress(tiny, _whole(tiny, src), 3.0)


def test_cli_compress_long_path_bytes_equal_whole_file(tiny: EncodecModel, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch, offline) -> None:
    """``opencodec compress`` of a file over the long-file threshold (lowered to 1 s here)
    writes the bytes the whole-file path writes below the threshold."""
    from opencodec import cli, codec_files
    from opencodec.pretrained import save_model

    ckpt = save_model(tiny, tmp_path / "tiny.safetensors")
    src = _write(tmp_path / "in.wav", TIE, 48000)
    args = ["--model", str(ckpt), "-b", "3"]
    assert cli.main(["compress", str(src), str(tmp_path / "whole.ecdc"), *args]) == 0
    calls: list[int] = []
    stream = codec_files.compress_file_streaming
    monkeypatch.setattr(codec_files, "compress_file_streaming",
                        lambda *a, **k: calls.append(1) or stream(*a, **k))
    monkeypatch.setattr(codec_files, "STREAMING_MIN_SECONDS", 1.0)
    assert cli.main(["compress", str(src), str(tmp_path / "long.ecdc"), *args]) == 0
    assert calls == [1]
    assert (tmp_path / "long.ecdc").read_bytes() == (tmp_path / "whole.ecdc").read_bytes()


def _is_tie(samples: int, rate: int, target: int) -> bool:
    """``samples * target / rate`` is an exact half (where the two roundings can differ)."""
    return (2 * samples * target) % (2 * rate) == rate


def _length_cases(count: int, seed: int) -> list[tuple[int, int, int]]:
    """``count`` seeded (samples, source rate, target rate) triples; every third one a tie."""
    rng = random.Random(seed)
    rates = [8000, 11025, 16000, 22050, 24000, 32000, 44100, 48000, 96000]
    cases = []
    for i in range(count):
        samples = rng.randint(1, 3000)
        if i % 3 == 0:  # rates with ties at a 24 kHz target: the next length that is one
            rate, target = rng.choice([16000, 32000, 48000, 96000]), 24000
            while not _is_tie(samples, rate, target):
                samples += 1
        else:
            rate, target = rng.choice(rates), rng.choice([24000, 48000])
        cases.append((samples, rate, target))
    return cases


def test_blocks_length_is_resampled_length_for_many_lengths_and_rates(tmp_path: Path) -> None:
    """Property: over 200 seeded (length, rate) pairs the long path's length (what
    ``_ConvertedBlocks`` yields and reports) is ``resampled_length``, which is the length
    of convert_audio's output."""
    cases = _length_cases(200, seed=1234)
    ties = [c for c in cases if _is_tie(*c)]
    assert len(ties) >= 67  # the cases hold many exact halves, where the two roundings differ
    for i, (samples, rate, target) in enumerate(cases):
        src = _write(tmp_path / f"{i}.wav", samples, rate, seed=i)
        blocks = _ConvertedBlocks(src, target, 1, 0.05)
        got = sum(block.shape[0] for block in blocks)
        want = resampled_length(samples, rate, target)
        assert (blocks.length, got) == (want, want), (samples, rate, target)
        if i % 20 == 0:  # and that is convert_audio's length
            assert convert_audio(torch.zeros(1, samples), rate, target, 1).shape[-1] == want


def test_stream_encode_counts_convert_audio_samples(tiny: EncodecModel) -> None:
    """``opencodec stream-encode`` counts the stream resampler's samples (no length formula of
    its own): for the tie case that is convert_audio's 64001, in 201 frames, as a whole file."""
    import io

    from opencodec.stream import encode_stream

    x = np.random.default_rng(3).standard_normal((TIE, 1)).astype(np.float32) * 0.1
    wav = io.BytesIO()
    sf.write(wav, x, 48000, subtype="FLOAT", format="WAV")
    report = encode_stream(tiny, io.BytesIO(wav.getvalue()), io.BytesIO(), read_bytes=1 << 14)
    assert (report.samples, report.frames) == (64001, 201)
