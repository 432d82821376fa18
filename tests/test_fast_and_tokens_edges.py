"""Edges of fast mode and of the token commands: an empty batch (B = 0) in fast mode gives
what exact mode gives; meta-tensor lengths for ``encode_batch``; ``detokenize --ids`` of a
file that failed to tokenise; the ``--loader-workers`` warning on the processes that run;
the command-line advice for an unfinished token folder."""

from __future__ import annotations

import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from opencodec import EncodecModel, cli
from opencodec.batching import encode_batch
from opencodec.errors import InvalidAudioError
from opencodec.tokens import TokenDataset, TokenizeError, TokenizeOptions, tokenize

from stream_models import tiny_stream_model
from test_tokenize import tiny_model_file  # noqa: F401 (pytest fixture: the tiny codec's weights file)

BROKEN = b"RIFF\x10\x00\x00\x00WAVEnot really audio"


# -- 1: fast mode and an empty batch ----------------------------------------------------------------
def _segmenting_48k_style() -> EncodecModel:
    """A tiny stereo, normalising, segmenting model laid out as the 48 kHz one (960-sample
    segments with 1% overlap, time_group_norm)."""
    return tiny_stream_model("tiny48", 5, causal=False, channels=2, sample_rate=48000, norm="time_group_norm",
                             normalize=True, segment=0.02, overlap=0.01)


@pytest.mark.parametrize("make", [lambda: tiny_stream_model("tiny24", 5), _segmenting_48k_style],
                         ids=["24khz", "segmenting"])
def test_fast_mode_encodes_and_decodes_an_empty_batch_as_exact_mode(make) -> None:
    model = make()
    wav = torch.zeros(0, model.channels, 3000)
    with torch.inference_mode():
        exact_frames = model.encode(wav)
        exact_audio = model.decode(exact_frames)
        model.exact_decode = False
        fast_audio = model.decode(exact_frames)
        model.exact = False
        fast_frames = model.encode(wav)
    assert [f.codes.shape for f in fast_frames] == [f.codes.shape for f in exact_frames]
    assert all(f.codes.shape[:2] == (0, 4) for f in fast_frames)
    assert [f.scale is None for f in fast_frames] == [f.scale is None for f in exact_frames]
    assert fast_audio.shape == exact_audio.shape
    assert fast_audio.shape[:2] == (0, model.channels) and fast_audio.shape[-1] >= 3000


def test_fast_mode_decodes_a_batch_as_before() -> None:
    """Fast mode still decodes a non-empty batch of segments (batched) within float rounding."""
    torch.manual_seed(0)
    model = _segmenting_48k_style()
    with torch.inference_mode():
        frames = model.encode(0.1 * torch.randn(2, 2, 3000))
        exact = model.decode(frames)
        model.exact_decode = False
        fast = model.decode(frames)
    assert fast.shape == exact.shape
    assert float((fast - exact).norm() / exact.norm()) < 1e-5


# -- 2: lengths on the meta device ----------------------------------------------------------------
def test_encode_batch_names_meta_lengths() -> None:
    model = tiny_stream_model("tiny24", 5)
    wav = 0.1 * torch.randn(2, 1, 4000, generator=torch.Generator().manual_seed(0))
    with pytest.raises(InvalidAudioError, match=r"^lengths is a meta tensor, which holds no values: pass"):
        encode_batch(model, wav, torch.tensor([4000, 10], device="meta"))
    with pytest.raises(InvalidAudioError, match=r"^lengths holds a meta tensor, which has no value"):
        encode_batch(model, wav, [torch.tensor(4000, device="meta"), torch.tensor(10, device="meta")])


# -- 3, 5: detokenize of a failed id; an unfinished folder on the command line ---------------------
def _corpus(root: Path, seconds: tuple[float, ...]) -> Path:
    rng = np.random.default_rng(0)
    root.mkdir(parents=True)
    for i, s in enumerate(seconds):
        sf.write(root / f"f{i}.wav", (0.1 * rng.standard_normal(int(s * 24000))).astype(np.float32), 24000)
    (root / "broken.wav").write_bytes(BROKEN)
    return root


@pytest.fixture(scope="module")
def token_folder(tiny_model_file: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:  # noqa: F811
    """Two short files and a broken one, one row per shard (3 shards)."""
    root = tmp_path_factory.mktemp("edges")
    out = root / "tokens"
    tokenize(TokenizeOptions([str(_corpus(root / "corpus", (0.1, 0.2)))], out, model=str(tiny_model_file),
                             device="cpu", shard_rows=1))
    return out


def _cli(capsys: pytest.CaptureFixture[str], *argv: object) -> tuple[int, str]:
    code = cli.main([str(a) for a in argv])
    return code, capsys.readouterr().err


def test_detokenize_of_a_file_that_failed_says_why(token_folder: Path, tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    code, err = _cli(capsys, "detokenize", token_folder, "--out", tmp_path / "audio", "--ids", "broken.wav")
    assert code == 1
    assert err.startswith(f"opencodec: error: no row with id 'broken.wav' in {token_folder}: that file failed "
                          "to tokenise (see errors.jsonl): cannot read audio file ")
    assert "broken.wav" in err.splitlines()[0] and len(err.splitlines()) == 1
    assert not (tmp_path / "audio").exists()
    code, err = _cli(capsys, "detokenize", token_folder, "--out", tmp_path / "audio", "--ids", "nope.wav")
    assert (code, err) == (1, f"opencodec: error: no row with id 'nope.wav' in {token_folder}\n")


def test_detokenize_of_an_unfinished_job_gives_command_line_advice(token_folder: Path, tmp_path: Path,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    part = tmp_path / "part"
    shutil.copytree(token_folder, part)
    (part / "index.json").unlink()
    (part / "shard-00001-of-00003.parquet").unlink()
    code, err = _cli(capsys, "detokenize", part, "--out", tmp_path / "audio")
    assert (code, err) == (1, f"opencodec: error: token folder {part}: job incomplete: 2 of 3 shards written "
                              "(no index.json yet); rerun the tokenize command to finish it\n")
    with pytest.raises(TokenizeError, match=r"TokenDataset\(folder, partial=True\) reads the finished shards"):
        TokenDataset(part)  # Python keeps its own advice


# -- 4: --loader-workers warned on the processes that run -----------------------------------------
def test_loader_workers_warning_counts_the_processes_that_run(tiny_model_file: Path, tmp_path: Path,  # noqa: F811
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    from opencodec.tokens import job

    monkeypatch.setattr(job, "usable_cores", lambda: 1)
    corpus = _corpus(tmp_path / "corpus", (0.1, 0.1))

    def said(out: str, batch_seconds: float) -> list[str]:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            tokenize(TokenizeOptions([str(corpus)], tmp_path / out, model=str(tiny_model_file), device="cpu",
                                     loader_workers=3, batch_seconds=batch_seconds))
        return [str(w.message) for w in caught if "loader-workers" in str(w.message)]

    # the two files in one batch (the broken one in another): 2 loader processes run, for 1 core
    assert said("two", 120.0) == [
        "--loader-workers 3: the 2 decoding processes that will run (one per batch at most) are more than "
        "the 1 usable core(s): they will compete for them (and with the encoding)"]
    monkeypatch.setattr(job, "usable_cores", lambda: 2)
    assert said("fits", 120.0) == []  # 2 processes run on 2 cores: no warning for the 3 asked
    assert said("three", 0.1) == [  # one file a batch: 3 run
        "--loader-workers 3 is more than the 2 usable core(s): the decoding processes will compete for them "
        "(and with the encoding)"]
