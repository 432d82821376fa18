"""The library behind ``opencodec compress/decompress/info``: planning, the per-job error
policy, the per-file model cache and the file compressor/decompressor results."""

from __future__ import annotations

import typing as tp
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from opencodec import codec_files
from opencodec.codec_files import FileCompressor, FileDecompressor, OutputOptions, plan_compress, plan_decompress
from opencodec.ecdc_info import describe_file, is_ecdc_file
from opencodec.errors import ModelLoadError, OpenCodecError, UsageError
from opencodec.file_jobs import Job, Plan, find_files, plan_folder, run_jobs, single_output
from opencodec.model import EncodecConfig, EncodecModel
from opencodec.identity import model_hash
from opencodec.releases import CURRENT_CODEC
from opencodec.model_cache import CodecModels, load_checked_model
from opencodec.pretrained import save_model


def touch(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x")
    return path


def write_wav(path: Path, seconds: float, rate: int = 16000, channels: int = 2, peak: float = 0.5) -> Path:
    rng = np.random.default_rng(0)
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, (peak * rng.uniform(-1, 1, (int(seconds * rate), channels))).astype(np.float32), rate)
    return path


@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    model = EncodecModel(EncodecConfig(name="tiny_files", n_filters=4, dimension=8, n_q=4, bins=16, lstm=0,
                                       target_bandwidths=[0.6, 1.2]))
    return save_model(model, tmp_path_factory.mktemp("tiny") / "tiny.safetensors")


# -- planning ---------------------------------------------------------------------------------
def test_plan_folder_mirrors_the_tree_and_flags_collisions(tmp_path: Path) -> None:
    for name in ("a.wav", "sub/b.flac", "sub/b.wav", ".hidden/c.wav", "sub/.d.wav", "notes.txt"):
        touch(tmp_path / "in" / name)
    jobs = plan_folder(tmp_path / "in", tmp_path / "out", lambda p: p.suffix in (".wav", ".flac"), ".ecdc",
                       "audio files")
    got = [(str(j.src.relative_to(tmp_path)), str(j.dst.relative_to(tmp_path)), j.conflict) for j in jobs]
    assert got == [("in/a.wav", "out/a.ecdc", None), ("in/sub/b.flac", "out/sub/b.ecdc", None),
                   ("in/sub/b.wav", "out/sub/b.ecdc", tmp_path / "in/sub/b.flac")]
    # no OUT: next to the inputs; OUT a file: a usage error; nothing accepted: not found
    assert plan_folder(tmp_path / "in", None, lambda p: p.suffix == ".wav", ".ecdc", "x")[0].dst == \
        tmp_path / "in/a.ecdc"
    with pytest.raises(UsageError, match="OUT must be a folder"):
        plan_folder(tmp_path / "in", tmp_path / "in/notes.txt", lambda p: True, ".ecdc", "x")
    with pytest.raises(FileNotFoundError, match="no ecdc files found under"):
        plan_folder(tmp_path / "in", None, is_ecdc_file, ".wav", "ecdc files")


def test_single_output_rules(tmp_path: Path) -> None:
    src = tmp_path / "song.flac"
    (tmp_path / "dir").mkdir()
    assert single_output(src, None, ".ecdc", (".ecdc",)) == tmp_path / "song.ecdc"
    assert single_output(src, tmp_path / "dir", ".ecdc", (".ecdc",)) == tmp_path / "dir/song.ecdc"
    assert single_output(src, tmp_path / "x.WAV", ".ecdc", (".ecdc", ".wav")) == tmp_path / "x.WAV"
    with pytest.raises(UsageError, match=r"output .*x\.mp3 must end in \.ecdc, \.wav"):
        single_output(src, tmp_path / "x.mp3", ".ecdc", (".ecdc", ".wav"))


def test_plan_compress_and_decompress_refusals(tmp_path: Path) -> None:
    src = write_wav(tmp_path / "a.wav", 0.1)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        plan_compress(tmp_path / "missing.wav", None, OutputOptions())
    touch(tmp_path / "a.ecdc")
    with pytest.raises(FileExistsError, match="already exists"):
        plan_compress(src, None, OutputOptions())
    assert plan_compress(src, None, OutputOptions(force=True)) == Plan([Job(src, tmp_path / "a.ecdc")])
    with pytest.raises(UsageError, match="--float needs a .wav output"):
        plan_compress(src, tmp_path / "rt.flac", OutputOptions(float32=True))
    with pytest.raises(UsageError, match="--rate applies to decoded audio: a round trip"):
        plan_compress(src, tmp_path / "b.ecdc", OutputOptions(rate=8000))
    with pytest.raises(UsageError, match="--float and -r/--rescale apply to decoded audio"):
        plan_compress(src, tmp_path / "b.ecdc", OutputOptions(float32=True, rescale=True))
    assert plan_compress(src, tmp_path / "rt.wav", OutputOptions(rate=8000)).jobs[0].dst == tmp_path / "rt.wav"
    plan = plan_decompress(tmp_path, tmp_path / "out", OutputOptions())
    assert plan.folder and plan.jobs == [Job(tmp_path / "a.ecdc", tmp_path / "out/a.wav")]


def test_find_files_expands_folders_only(tmp_path: Path) -> None:
    a, b = touch(tmp_path / "d/x.ecdc"), touch(tmp_path / "d/e/y.ECDC")
    touch(tmp_path / "d/z.wav")
    other = touch(tmp_path / "named.bin")
    assert find_files([other, tmp_path / "d"], is_ecdc_file) == [other, a, b]


# -- the per-job error policy ------------------------------------------------------------------
def test_run_jobs_single_file_lets_unexpected_errors_through(tmp_path: Path) -> None:
    job = Job(tmp_path / "a", tmp_path / "b")

    def fail(kind: type[Exception]) -> tp.Callable[[Job, bool], int]:
        def work(job: Job, folder: bool) -> int:
            raise kind("boom")
        return work

    (outcome,) = run_jobs(Plan([job]), fail(ValueError))
    assert isinstance(outcome.error, ValueError) and outcome.result is None
    with pytest.raises(RuntimeError, match="boom"):
        list(run_jobs(Plan([job]), fail(RuntimeError)))


def test_run_jobs_folder_reports_each_failure_and_goes_on(tmp_path: Path) -> None:
    jobs = [Job(tmp_path / "a", tmp_path / "o"), Job(tmp_path / "b", tmp_path / "p"),
            Job(tmp_path / "c", tmp_path / "o", conflict=tmp_path / "a")]
    seen: list[tuple[str, bool]] = []

    def work(job: Job, folder: bool) -> str:
        seen.append((job.src.name, folder))
        if job.src.name == "b":
            raise RuntimeError("unexpected")
        return job.src.name

    outcomes = list(run_jobs(Plan(jobs, folder=True), work))
    assert seen == [("a", True), ("b", True)]  # the conflicting job never runs
    assert [o.result for o in outcomes] == ["a", None, None]
    assert isinstance(outcomes[1].error, RuntimeError)
    assert isinstance(outcomes[2].error, FileExistsError) and "would also be written from" in str(outcomes[2].error)


# -- models ------------------------------------------------------------------------------------
def test_load_checked_model_fails_fast_for_known_names() -> None:
    def no_load(arg: str | None) -> EncodecModel:
        raise AssertionError("weights loaded")

    with pytest.raises(UsageError, match="model encodec_48khz does not support 1.5 kbps"):
        load_checked_model("encodec_48khz", 1.5, load=no_load)
    with pytest.raises(OpenCodecError, match="cannot be streamed"):
        load_checked_model("encodec_48khz", 6.0, streaming=True, load=no_load)


def test_codec_models_load_once_and_remember_failures() -> None:
    model = codec_files.load_model(CURRENT_CODEC)
    calls: list[str] = []

    def load(name: str) -> EncodecModel:
        calls.append(name)
        if name == CURRENT_CODEC:
            return model
        raise ModelLoadError(f"no model {name}")

    models = CodecModels(None, load)
    digest = model_hash(model)
    assert models.get(CURRENT_CODEC, digest) is model and models.get(CURRENT_CODEC, digest, 4) is model
    for _ in range(2):
        with pytest.raises(ModelLoadError, match="no model"):
            models.get("encodec_48khz")
    for _ in range(2):  # a name no release or official model has is never loaded
        with pytest.raises(ModelLoadError, match="not a known model"):
            models.get("tiny_files")
    assert calls == [CURRENT_CODEC, "encodec_48khz"]


# -- compress / decompress one file ------------------------------------------------------------
def test_file_compressor_and_decompressor_results(tmp_path: Path, tiny_ckpt: Path, offline: Path) -> None:
    src = write_wav(tmp_path / "in.wav", 0.5, rate=16000, channels=2)
    options = OutputOptions()
    compressor = FileCompressor(str(tiny_ckpt), 1.2, options)
    result = compressor(Job(src, tmp_path / "a.ecdc"))
    assert result.size_bytes == (tmp_path / "a.ecdc").stat().st_size and not result.streamed
    assert result.seconds == pytest.approx(0.5) and result.warnings == []
    info = describe_file(tmp_path / "a.ecdc")
    assert (info["model"], info["codebooks"], info["samples"]) == ("tiny_files", 4, 12000)
    with pytest.raises(FileExistsError):
        compressor(Job(src, tmp_path / "a.ecdc"))

    # a round trip keeps the input's rate and channels unless the options say otherwise
    rt = compressor(Job(src, tmp_path / "rt.wav"))
    assert (rt.sample_rate, rt.channels) == (16000, 2) == (sf.info(tmp_path / "rt.wav").samplerate,
                                                          sf.info(tmp_path / "rt.wav").channels)
    out = FileDecompressor(str(tiny_ckpt), OutputOptions(rate=8000, channels=1))
    dec = out(Job(tmp_path / "a.ecdc", tmp_path / "a.wav"))
    assert (dec.sample_rate, dec.channels, dec.size_bytes) == (8000, 1, None)
    assert sf.info(tmp_path / "a.wav").frames == 4000 and dec.seconds == pytest.approx(0.5)


def test_decompressor_returns_clipping_warnings(tmp_path: Path, tiny_ckpt: Path, offline: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    FileCompressor(str(tiny_ckpt), 0.6, OutputOptions())(Job(write_wav(tmp_path / "in.wav", 0.2), tmp_path / "a.ecdc"))
    monkeypatch.setattr(codec_files, "decompress", lambda data, model: (torch.tensor([[0.5, 1.5, -0.2]]), 24000))
    result = FileDecompressor(str(tiny_ckpt), OutputOptions())(Job(tmp_path / "a.ecdc", tmp_path / "a.wav"))
    assert len(result.warnings) == 1 and "1.5" in result.warnings[0]
    result = FileDecompressor(str(tiny_ckpt), OutputOptions(force=True, rescale=True))(
        Job(tmp_path / "a.ecdc", tmp_path / "a.wav"))
    assert result.warnings == []
