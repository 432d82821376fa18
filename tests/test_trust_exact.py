"""Exact checks of the trust and file-handling rules, each written to kill a plausible bug the
rest of the suite lets pass: a file must decode with the weights that wrote it
or fail, a legacy header never picks a release by itself, the weights hash follows in-place
changes, and file outputs are exact (no overwrite without --force, no partial file, audio read
and written sample-exact)."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from opencodec import _files
from opencodec.audio import (convert_channels, find_truncation, limit_peak, read_audio, resampled_length,
                             to_file_samples, write_audio)
from opencodec.config_identity import config_differences, release_config
from opencodec.errors import AudioIOError, BitstreamError, ModelLoadError, OutputError
from opencodec.file_jobs import Job, Plan, plan_folder, run_jobs, single_output
from opencodec.identity import (check_lm_for_file, check_model_for_file, lm_name_for_file, model_for_file,
                                model_hash)
from opencodec.model import EncodecConfig
from opencodec.model_cache import CodecModels, check_named_model
from opencodec.releases import (CODEC_ALIAS, CODEC_RELEASES, LM_ALIAS, LM_RELEASES, RELEASE_SETTINGS,
                                codec_release, is_registered_name, lm_release, lm_release_by_fixed_hash,
                                needs_weights_hash, resolve_alias)
from opencodec.weights_hash import state_dict_sha256, weights_sha256

V4 = codec_release("opencodec_24khz_v4")
V5 = codec_release("opencodec_24khz_v5")
assert V4 is not None and V5 is not None


class FakeCodec(torch.nn.Module):
    """The attributes the identity checks read, with one small tensor of weights: a release's
    architecture by default (24 kHz mono, 16 codebooks of 1024, 75 Hz)."""

    def __init__(self, name: str, seed: int = 0, n_q: int = 16, bins: int = 1024) -> None:
        super().__init__()
        self.name, self.n_q, self.bins = name, n_q, bins
        self.sample_rate, self.channels, self.frame_rate = 24000, 1, 75
        self.weight = torch.nn.Parameter(torch.randn(3, generator=torch.Generator().manual_seed(seed)))


# -- releases: what a name or hash selects -----------------------------------------------------------------
def test_names_that_must_carry_a_hash_exactly() -> None:
    for release in CODEC_RELEASES:
        assert needs_weights_hash(release.name), release.name
    for release in LM_RELEASES:
        assert needs_weights_hash(release.name), release.name
    assert needs_weights_hash(LM_ALIAS)
    # a legacy codec file says the bare alias without a hash; official and custom names may lack one
    for name in (CODEC_ALIAS, "encodec_24khz", "encodec_48khz", "tiny", "opencodec_24khz_v5_custom"):
        assert not needs_weights_hash(name), name


def test_registered_names_exactly() -> None:
    for name in ("encodec_24khz", "encodec_48khz", CODEC_ALIAS, LM_ALIAS,
                 *(r.name for r in CODEC_RELEASES), *(r.name for r in LM_RELEASES)):
        assert is_registered_name(name), name
    for name in ("encodec_24khz_custom", "opencodec_24khz_v6", "tiny", "encodec_lm_24khz"):
        assert not is_registered_name(name), name


def test_aliases_resolve_to_the_current_releases_only() -> None:
    assert resolve_alias(CODEC_ALIAS) == "opencodec_24khz_v5"
    assert resolve_alias(LM_ALIAS) == "opencodec_lm_24khz_v5"
    for name in ("opencodec_24khz_v4", "encodec_24khz", "tiny"):
        assert resolve_alias(name) == name


def test_entropy_release_by_fixed_hash_is_an_exact_match() -> None:
    for release in LM_RELEASES:
        assert lm_release_by_fixed_hash(release.fixed_hash) is release
    assert lm_release_by_fixed_hash("") is None  # a prefix (here empty) names no release
    assert lm_release_by_fixed_hash(LM_RELEASES[0].fixed_hash[:8]) is None


# -- identity: a header's model and weights --------------------------------------------------------------
def test_a_hash_must_equal_the_models_exactly() -> None:
    model = FakeCodec("tiny")
    digest = model_hash(model)
    check_model_for_file(model, "tiny", digest, 4)
    for other in (digest[:8], "", digest[:-1] + ("0" if digest[-1] != "0" else "1")):
        with pytest.raises(BitstreamError, match="weights hash"):
            check_model_for_file(model, "tiny", other, 4)


def test_a_release_header_without_hash_is_damaged_even_for_that_release() -> None:
    model = FakeCodec("opencodec_24khz_v5")
    with pytest.raises(BitstreamError, match="without a weights hash, which every file of that release"):
        check_model_for_file(model, "opencodec_24khz_v5", None, 8)


def test_a_legacy_header_needs_a_release_chosen_not_the_alias() -> None:
    chosen = FakeCodec("opencodec_24khz_v4")
    check_model_for_file(chosen, CODEC_ALIAS, None, 8)  # the caller named the release
    by_alias = FakeCodec("opencodec_24khz_v5")
    by_alias.loaded_by_alias = True
    with pytest.raises(BitstreamError, match="loaded as 'opencodec_24khz'"):
        check_model_for_file(by_alias, CODEC_ALIAS, None, 8)


def test_a_header_without_hash_naming_another_model_is_refused_for_a_release_model() -> None:
    model = FakeCodec("opencodec_24khz_v4")
    with pytest.raises(BitstreamError, match="written by model 'someone_else', but the model given"):
        check_model_for_file(model, "someone_else", None, 8)


def test_the_architecture_of_a_named_release_is_checked() -> None:
    with pytest.raises(BitstreamError, match=r"another architecture: bins 512 \(expected 1024\)"):
        check_model_for_file(FakeCodec("mine", bins=512), "opencodec_24khz_v5", V5.short_hash, 8)


def test_model_for_file_loads_only_what_the_header_proves() -> None:
    loaded: list[str] = []

    def load(name: str) -> FakeCodec:
        loaded.append(name)
        return FakeCodec(name)

    # a release's name with another release's hash: refused before anything loads
    with pytest.raises(ModelLoadError, match="names release 'opencodec_24khz_v4' but weights hash"):
        model_for_file("opencodec_24khz_v4", V5.short_hash, 8, load=load)
    # an unknown hash under an unknown name never loads that name (it could be a path here)
    with pytest.raises(ModelLoadError, match="not a registered release"):
        model_for_file("/tmp/x.safetensors", "0123456789abcdef", 8, load=load)
    with pytest.raises(ModelLoadError, match="not a known model"):
        model_for_file("/tmp/x.safetensors", None, 8, load=load)
    with pytest.raises(ModelLoadError, match="without a weights hash"):
        model_for_file(CODEC_ALIAS, None, 8, load=load)
    assert loaded == []
    # a hash alone picks its release: the loader is asked for that release by name
    with pytest.raises(BitstreamError):  # the fake's weights are not the release's: checked after loading
        model_for_file("opencodec_24khz_v5_custom", V4.short_hash, 8, load=load)
    assert loaded == ["opencodec_24khz_v4"]


def test_entropy_model_hash_must_match(monkeypatch: pytest.MonkeyPatch) -> None:
    class Lm:
        weights_hash = "00112233445566ff"

    from opencodec.entropy import fixed

    lm = Lm()
    monkeypatch.setattr(fixed, "fixed_lm_for", lambda x: x)  # the fake is its own integer twin
    check_lm_for_file(lm, "00112233445566ff")
    check_lm_for_file(lm, None)
    with pytest.raises(BitstreamError, match="entropy model with weights hash 00112233445566fe"):
        check_lm_for_file(lm, "00112233445566fe")


def test_entropy_model_for_a_file_by_hash_or_name() -> None:
    v4 = FakeCodec("opencodec_24khz_v4")
    lm_v1 = lm_release("opencodec_lm_24khz_v1")
    assert lm_v1 is not None
    assert lm_name_for_file(None, lm_v1.fixed_hash, v4) == "opencodec_lm_24khz_v1"
    # a bundled entropy model's name whose hash is no release's: never loaded by that name
    for name in (LM_ALIAS, "opencodec_lm_24khz_v5"):
        with pytest.raises(ModelLoadError, match="not a known name"):
            lm_name_for_file(name, "0123456789abcdef", v4)
    # codec v4 had two entropy models (v4, v4b): a file that records none must name one
    with pytest.raises(ModelLoadError, match="served by 2 entropy models"):
        lm_name_for_file(None, None, v4)
    assert lm_name_for_file(None, None, FakeCodec("opencodec_24khz_v5")) is None


# -- the models that decode a folder ----------------------------------------------------------------------
def test_dash_m_release_is_checked_against_the_header_before_loading() -> None:
    with pytest.raises(BitstreamError, match="whose weights are others"):
        check_named_model("opencodec_24khz_v4", "opencodec_24khz_v5", V5.short_hash, 8)
    check_named_model("opencodec_24khz_v5", "opencodec_24khz_v5", V5.short_hash, 8)
    # an official model's weights are no release's
    with pytest.raises(BitstreamError, match="whose weights are others"):
        check_named_model("encodec_24khz", "x_custom", V5.short_hash, 8)
    with pytest.raises(BitstreamError, match="the model given is 'opencodec_24khz_v5'"):
        check_named_model("opencodec_24khz_v5", "encodec_24khz", None, 8)


def test_codec_models_never_reuse_a_model_for_another_hash() -> None:
    """Two files with the same name and different hashes: each gets the model of its own hash
    (the cache is keyed by both), and the codebooks of each file are checked on every file."""
    made: dict[str, FakeCodec] = {}

    def load(name: str) -> FakeCodec:
        made[name] = FakeCodec("tiny", seed=len(made))
        return made[name]

    models = CodecModels(None, load)
    first = models._load("a")  # the loader as CodecModels wraps it
    assert first.exact is True
    cache = models._by_name
    a, b = FakeCodec("tiny", seed=10), FakeCodec("tiny", seed=11)
    cache[("tiny", model_hash(a))] = a
    cache[("tiny", model_hash(b))] = b
    assert models.get("tiny", model_hash(a), 4) is a
    assert models.get("tiny", model_hash(b), 4) is b
    with pytest.raises(BitstreamError, match="uses 17 codebooks"):
        models.get("tiny", model_hash(a), 17)


# -- the weights hash ----------------------------------------------------------------------------------
def test_the_cached_hash_follows_an_in_place_change() -> None:
    model = FakeCodec("tiny")
    before = weights_sha256(model)
    with torch.no_grad():
        model.weight.add_(1.0)  # same storage, its version counter moves
    assert weights_sha256(model) == state_dict_sha256(model.state_dict()) != before


def test_the_hash_covers_shape_and_skips_only_training_buffers() -> None:
    flat = {"w": torch.arange(6, dtype=torch.float32)}
    assert state_dict_sha256(flat) != state_dict_sha256({"w": flat["w"].reshape(2, 3)})
    base = dict(flat)
    for key in ("q._codebook.embed_avg", "q._codebook.cluster_size", "q._codebook.inited"):
        assert state_dict_sha256({**base, key: torch.ones(2)}) == state_dict_sha256(base), key
    assert state_dict_sha256({**base, "q._codebook.embed": torch.ones(2)}) != state_dict_sha256(base)


# -- configuration identity ----------------------------------------------------------------------------
def test_overlap_matters_when_either_side_segments() -> None:
    ref = EncodecConfig(segment=1.0, overlap=0.01)
    assert config_differences(EncodecConfig(segment=None, overlap=0.02), ref, "r")  # segment, overlap
    assert any(d.startswith("overlap") for d in
               config_differences(EncodecConfig(segment=None, overlap=0.02), ref, "r"))
    assert not any(d.startswith("overlap") for d in config_differences(
        EncodecConfig(segment=None, overlap=0.02), EncodecConfig(segment=None, overlap=0.01), "r"))


def test_dilation_base_matters_with_two_residual_layers() -> None:
    wrong = config_differences(EncodecConfig(n_residual_layers=2, dilation_base=3),
                               EncodecConfig(n_residual_layers=2, dilation_base=2), "r")
    assert wrong == ["dilation_base 3 (r: 2)"]
    assert config_differences(EncodecConfig(n_residual_layers=1, dilation_base=3),
                              EncodecConfig(n_residual_layers=1, dilation_base=2), "r") == []


def test_release_config_of_a_release_not_shipped_uses_its_sample_rate() -> None:
    loaded = EncodecConfig(sample_rate=48000, causal=False, pad_mode="constant")
    config = release_config(V4, None, loaded)
    assert config.sample_rate == V4.sample_rate == 24000
    assert all(getattr(config, k) == v for k, v in RELEASE_SETTINGS.items())


# -- reading and writing audio ------------------------------------------------------------------------
def test_resampled_length_rounds_half_up_like_soxr() -> None:
    assert resampled_length(1001, 48000, 24000) == 501  # 500.5 -> 501
    assert resampled_length(48001, 48000, 24000) == 24001
    assert resampled_length(2, 3, 1) == 1 and resampled_length(1, 3, 1) == 0
    from opencodec.audio import resample

    assert resample(torch.zeros(1, 1001), 48000, 24000).shape[-1] == 501  # what soxr gives


def test_limit_peak_never_scales_up_and_leaves_full_scale_alone() -> None:
    quiet = torch.tensor([[0.5, -0.25]])
    assert torch.equal(limit_peak(quiet, rescale=True, clip=True), quiet)
    full = torch.tensor([[1.0, -1.0, 0.5]])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a peak of exactly 1.0 is not clipped: no warning
        assert torch.equal(limit_peak(full, rescale=False, clip=True), full)
    assert torch.equal(limit_peak(torch.tensor([[2.0, -1.0]]), rescale=True, clip=True),
                       torch.tensor([[0.99, -0.495]]))


def test_the_highest_allowed_file_rate_is_read(tmp_path: Path) -> None:
    from opencodec.audio import check_file_rate
    from opencodec.argtypes import MAX_SAMPLE_RATE, MIN_SAMPLE_RATE

    check_file_rate("x.wav", MAX_SAMPLE_RATE)
    check_file_rate("x.wav", MIN_SAMPLE_RATE)
    for rate in (MAX_SAMPLE_RATE + 1, MIN_SAMPLE_RATE - 1):
        with pytest.raises(AudioIOError, match=f"sample rate of {rate} Hz"):
            check_file_rate("x.wav", rate)


def test_read_audio_keeps_channels_apart_and_scales_int16_exactly(tmp_path: Path) -> None:
    ints = np.array([[1, -2, 3], [4, -5, 6], [32767, -32768, 0], [7, 8, 9]], dtype=np.int16)  # [T, C]
    path = tmp_path / "three.wav"
    sf.write(path, ints, 16000, subtype="PCM_16")
    wav, rate = read_audio(path)
    assert rate == 16000 and wav.shape == (3, 4) and wav.dtype == torch.float32
    assert wav[0].tolist() == [v / 32768 for v in (1, 4, 32767, 7)]
    assert wav[2].tolist() == [v / 32768 for v in (3, 6, 0, 9)]
    assert wav[1, 2].item() == -1.0


def test_a_wav_cut_by_one_frame_is_truncated(tmp_path: Path) -> None:
    path = tmp_path / "cut.wav"
    sf.write(path, np.zeros(100, dtype=np.int16), 8000, subtype="PCM_16")
    assert find_truncation(path) is None
    path.write_bytes(path.read_bytes()[:-2])  # one 16-bit mono frame short
    cut = find_truncation(path)
    assert cut is not None and (cut.declared, cut.held) == (100, 99)
    with pytest.raises(AudioIOError, match="truncated: its header says 100 samples, the file holds 99"):
        read_audio(path, refuse_truncated=True)


def test_write_audio_refuses_one_channel_more_than_allowed(tmp_path: Path) -> None:
    from opencodec.argtypes import MAX_CHANNELS

    write_audio(tmp_path / "max.wav", torch.zeros(MAX_CHANNELS, 8), 8000)
    assert sf.info(str(tmp_path / "max.wav")).channels == MAX_CHANNELS
    with pytest.raises(ValueError, match=f"at most {MAX_CHANNELS} channels"):
        write_audio(tmp_path / "more.wav", torch.zeros(MAX_CHANNELS + 1, 8), 8000)
    assert not (tmp_path / "more.wav").exists()


def test_a_file_name_that_is_not_utf8_is_written_and_read(tmp_path: Path) -> None:
    path = Path(os.fsdecode(bytes(tmp_path) + b"/caf\xe9.wav"))  # Latin-1 bytes: not UTF-8
    wav = torch.tensor([[0.5, -0.25, 0.0, 0.125]])
    write_audio(path, wav, 8000)
    back, rate = read_audio(path)
    assert rate == 8000 and torch.equal(back, wav)


def test_mono_down_mix_is_the_mean() -> None:
    wav = torch.tensor([[1.0, 0.5], [0.0, -0.5]])
    assert torch.equal(convert_channels(wav, 1), torch.tensor([[0.5, 0.0]]))


def test_pcm24_samples_are_in_the_top_bits() -> None:
    q = to_file_samples(np.array([[0.5], [-1.0]]), 24)
    assert q.dtype == np.int32 and q[:, 0].tolist() == [(1 << 22) << 8, -(1 << 23) << 8]


# -- safe outputs -----------------------------------------------------------------------------------------
def test_atomic_output_gives_the_usual_permissions(tmp_path: Path) -> None:
    path = tmp_path / "out.bin"
    _files.write_bytes_atomic(path, b"x")
    assert path.stat().st_mode & 0o777 == 0o666 & ~_files._UMASK


def test_keep_existing_never_replaces_a_file(tmp_path: Path) -> None:
    path = tmp_path / "out.bin"
    path.write_bytes(b"old")
    with _files.keep_existing(), pytest.raises(OutputError, match="already exists"):
        _files.write_bytes_atomic(path, b"new")
    assert path.read_bytes() == b"old" and sorted(os.listdir(tmp_path)) == ["out.bin"]


def test_keep_existing_without_hard_links_still_refuses(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "out.bin"
    path.write_bytes(b"old")

    def no_links(*args: object, **kwargs: object) -> None:
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(os, "link", no_links)
    with pytest.raises(OutputError, match="already exists"):
        _files.write_bytes_atomic(path, b"new", overwrite=False)
    assert path.read_bytes() == b"old" and sorted(os.listdir(tmp_path)) == ["out.bin"]
    _files.write_bytes_atomic(tmp_path / "fresh.bin", b"new", overwrite=False)  # the rename fallback
    assert (tmp_path / "fresh.bin").read_bytes() == b"new"


def test_a_failed_write_leaves_no_temporary_and_the_old_file(tmp_path: Path) -> None:
    path = tmp_path / "out.bin"
    path.write_bytes(b"old")
    with pytest.raises(RuntimeError, match="boom"):
        with _files.atomic_output(path) as tmp:
            tmp.write_bytes(b"partial")
            raise RuntimeError("boom")
    assert path.read_bytes() == b"old" and sorted(os.listdir(tmp_path)) == ["out.bin"]


def test_check_output_refuses_an_existing_file_without_force(tmp_path: Path) -> None:
    path = tmp_path / "out.wav"
    _files.check_output(path, force=False)
    path.write_bytes(b"x")
    with pytest.raises(FileExistsError, match="use -f/--force"):
        _files.check_output(path, force=False)
    _files.check_output(path, force=True)
    fifo = tmp_path / "fifo.wav"
    os.mkfifo(fifo)
    with pytest.raises(OutputError, match="not a regular file"):
        _files.check_output(fifo, force=True)


def test_only_temporaries_of_ended_processes_are_swept(tmp_path: Path) -> None:
    import subprocess
    import sys

    tag = f"{_files._host()}-{_files._pid_namespace()}"
    ended = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                           text=True, check=True)
    dead = tmp_path / f".a.wav.{tag}-{int(ended.stdout)}.x1.tmp"
    mine = tmp_path / f".b.wav.{tag}-{os.getpid()}.x2.tmp"
    other_host = tmp_path / f".c.wav.otherhost-1-{int(ended.stdout)}.x3.tmp"
    for p in (dead, mine, other_host):
        p.write_bytes(b"")
    assert _files.remove_dead_temporaries(tmp_path) == [dead]
    assert mine.exists() and other_host.exists() and not dead.exists()


def test_a_placement_that_failed_is_not_recorded() -> None:
    assert _files.recorded_placements(b"+1 2\n+3 4\n-1 2\n+5") == {(3, 4)}


def test_file_in_the_way_names_the_file(tmp_path: Path) -> None:
    (tmp_path / "f").write_bytes(b"")
    assert _files.file_in_the_way(tmp_path / "f" / "sub") == tmp_path / "f"
    assert _files.file_in_the_way(tmp_path / "new" / "sub") is None


# -- folder jobs ----------------------------------------------------------------------------------------
def test_plan_folder_marks_a_second_input_for_the_same_output_and_skips_hidden(tmp_path: Path) -> None:
    for name in ("song.flac", "song.wav", ".hidden.wav"):
        (tmp_path / name).write_bytes(b"")
    jobs = plan_folder(tmp_path, tmp_path / "out", lambda p: p.suffix in (".wav", ".flac"), ".ecdc", "audio")
    assert [(j.src.name, j.dst, j.conflict) for j in jobs] == [
        ("song.flac", tmp_path / "out" / "song.ecdc", None),
        ("song.wav", tmp_path / "out" / "song.ecdc", tmp_path / "song.flac")]


def test_run_jobs_of_a_folder_reports_each_failure_and_goes_on(tmp_path: Path) -> None:
    src = tmp_path / "a.wav"
    src.write_bytes(b"")
    calls: list[str] = []

    def work(job: Job, folder: bool) -> str:
        calls.append(job.src.name)
        if job.src.name == "b.wav":
            raise ZeroDivisionError("unexpected")
        return job.src.name

    jobs = [Job(src, src), Job(tmp_path / "b.wav", tmp_path / "b.ecdc"), Job(tmp_path / "c.wav", tmp_path / "c.ecdc")]
    outcomes = list(run_jobs(Plan(jobs, folder=True), work))
    assert calls == ["b.wav", "c.wav"]  # the job whose output is its input never runs
    assert isinstance(outcomes[0].error, FileExistsError) and "is the input file itself" in str(outcomes[0].error)
    assert isinstance(outcomes[1].error, ZeroDivisionError) and outcomes[2].result == "c.wav"


def test_single_output_accepts_an_upper_case_suffix(tmp_path: Path) -> None:
    src = tmp_path / "in.ecdc"
    assert single_output(src, tmp_path / "OUT.WAV", ".wav", (".wav", ".flac")) == tmp_path / "OUT.WAV"
    assert single_output(src, None, ".wav", (".wav",)) == tmp_path / "in.wav"


def test_skip_existing_skips_only_files(tmp_path: Path) -> None:
    (tmp_path / "done.ecdc").write_bytes(b"x")
    (tmp_path / "dir.ecdc").mkdir()
    plan = Plan([Job(tmp_path / "a", tmp_path / "done.ecdc"), Job(tmp_path / "b", tmp_path / "dir.ecdc")], True)
    kept = plan.skip_existing()
    assert [j.dst.name for j in kept.jobs] == ["dir.ecdc"] and [j.dst.name for j in kept.skipped] == ["done.ecdc"]


def test_write_audio_refuses_a_rate_that_is_not_a_whole_number(tmp_path: Path) -> None:
    """44100.7 Hz used to be written as 44100 Hz without a word; infinity or a rate libsndfile
    cannot store raised an OverflowError from inside."""
    wav = torch.zeros(1, 16)
    for rate in (44100.7, float("inf"), float("nan"), 2 ** 31, 0.5):
        with pytest.raises(ValueError, match="sample_rate must be a positive whole number of Hz"):
            write_audio(tmp_path / "x.wav", wav, rate)
        assert list(tmp_path.iterdir()) == []
    write_audio(tmp_path / "x.wav", wav, 24000.0)
    write_audio(tmp_path / "y.wav", wav, np.int64(8000))
    assert sf.info(str(tmp_path / "x.wav")).samplerate == 24000
    assert sf.info(str(tmp_path / "y.wav")).samplerate == 8000


# -- the command line's exit status -------------------------------------------------------------------
def _cli(capsys: pytest.CaptureFixture[str], *argv: object) -> tuple[int, str, str]:
    from opencodec import cli

    code = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_decompress_failures_exit_1_single_and_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                     offline: Path) -> None:
    bad = tmp_path / "in" / "bad.ecdc"
    bad.parent.mkdir()
    bad.write_bytes(b"not an ecdc file at all")
    (tmp_path / "in" / "worse.ecdc").write_bytes(b"ECDC")
    code, _, err = _cli(capsys, "decompress", "-q", "-j", "1", bad, tmp_path / "bad.wav")
    assert code == 1 and "bad.ecdc" in err and not (tmp_path / "bad.wav").exists()
    code, _, err = _cli(capsys, "decompress", "-q", "-j", "1", tmp_path / "in", tmp_path / "out")
    assert code == 1 and "2 of 2 file(s) failed" in err


def test_decompress_counts_outputs_that_exist(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                              offline: Path) -> None:
    """A folder whose outputs exist fails each file (no overwrite without -f) and says why."""
    (tmp_path / "in").mkdir()
    (tmp_path / "out").mkdir()
    for name in ("a", "b"):
        (tmp_path / "in" / f"{name}.ecdc").write_bytes(b"x")
        (tmp_path / "out" / f"{name}.wav").write_bytes(b"old")
    code, _, err = _cli(capsys, "decompress", "-q", "-j", "1", tmp_path / "in", tmp_path / "out")
    assert code == 1 and "2 of 2 file(s) failed (all because their output exists" in err
    assert (tmp_path / "out" / "a.wav").read_bytes() == b"old"


def _crafted_ecdc(path: Path, body_bytes: int) -> Path:
    """A plain .ecdc of release v5, 8 codebooks, 72000 samples: 2250 body bytes when complete."""
    from opencodec.bitstream import EcdcHeader, header_bytes

    header = EcdcHeader("opencodec_24khz_v5", 72000, 8, False, model_hash=V5.short_hash)
    path.write_bytes(header_bytes(header) + bytes(body_bytes))
    return path


def test_info_exits_1_for_a_truncated_file_only(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                               offline: Path) -> None:
    whole = _crafted_ecdc(tmp_path / "whole.ecdc", 2250)
    code, out, err = _cli(capsys, "info", whole)
    assert code == 0 and "complete:      yes" in out and err == ""
    cut = _crafted_ecdc(tmp_path / "cut.ecdc", 2249)
    code, out, err = _cli(capsys, "info", cut)
    assert code == 1 and "complete:      NO, truncated: 1 bytes missing" in out
    assert "cut.ecdc: truncated: 1 bytes missing" in err


def test_info_entropy_coded_body_bound_is_exact(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                               offline: Path) -> None:
    """An entropy-coded body of exactly the lower bound passes; one byte less is truncated."""
    from opencodec.bitstream import EcdcHeader, header_bytes
    from opencodec.ecdc_info import describe_file

    header = EcdcHeader("opencodec_24khz_v5", 72_000_000, 8, True, model_hash=V5.short_hash,
                        lm_hash="afe7bbb406b50526")  # 50 minutes: a bound of some bytes
    probe = tmp_path / "probe.ecdc"
    probe.write_bytes(header_bytes(header))
    minimum = describe_file(probe)["lm_body_min_bytes"]
    assert isinstance(minimum, int) and minimum > 0
    enough = tmp_path / "enough.ecdc"
    enough.write_bytes(header_bytes(header) + bytes(minimum))
    code, out, _ = _cli(capsys, "info", enough)
    assert code == 0 and "not checked (entropy coded: only decoding tells)" in out
    short = tmp_path / "short.ecdc"
    short.write_bytes(header_bytes(header) + bytes(minimum - 1))
    code, out, err = _cli(capsys, "info", short)
    assert code == 1 and f"the entropy-coded body has {minimum - 1} bytes" in err


# -- models loaded for decoding ----------------------------------------------------------------------
def test_an_entropy_model_given_is_checked_against_an_official_format_file(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """``--lm-model`` on a version 0 entropy-coded file: its hash must be the file's ``lmh``."""
    from opencodec import identity, model_cache
    from opencodec.bitstream import EcdcHeader

    class Lm:
        weights_hash = "00112233445566ff"

    monkeypatch.setattr(model_cache, "load_lm_model", lambda *a, **k: Lm())
    monkeypatch.setattr(model_cache, "check_lm_for_decoding", lambda *a, **k: None)
    monkeypatch.setattr(identity, "lm_hash", lambda lm: lm.weights_hash)
    codec = FakeCodec("opencodec_24khz_v5")
    models = model_cache.EntropyModels("some_lm")
    same = EcdcHeader("opencodec_24khz_v5", 320, 8, True, model_hash=V5.short_hash, lm_hash="00112233445566ff")
    assert isinstance(models.get(codec, same), Lm)
    other = EcdcHeader("opencodec_24khz_v5", 320, 8, True, model_hash=V5.short_hash, lm_hash="00112233445566fe")
    with pytest.raises(BitstreamError, match="weights hash 00112233445566fe, but the one given has 00112233445566ff"):
        models.get(codec, other)


def test_a_cached_file_of_a_release_with_other_weights_is_refused(offline: Path) -> None:
    """A release that is not shipped is read from the cache folder, and its weights hash checked."""
    from opencodec.pretrained import config_for_name, load_model, save_model
    from opencodec.model import EncodecModel

    config = config_for_name("opencodec_24khz_v5")
    assert config is not None
    config.name = "opencodec_24khz_v3"
    torch.manual_seed(3)
    save_model(EncodecModel(config), offline / "opencodec_24khz_v3.safetensors")
    with pytest.raises(ModelLoadError, match="does not hold the model release 'opencodec_24khz_v3': its weights hash"):
        load_model("opencodec_24khz_v3")


def test_a_file_with_a_release_name_and_other_weights_loads_as_custom(tmp_path: Path) -> None:
    from opencodec.pretrained import load_model, save_model
    from opencodec.model import EncodecModel

    torch.manual_seed(4)
    model = EncodecModel(EncodecConfig(name="opencodec_24khz_v4", n_filters=4, dimension=16, lstm=0, n_q=4,
                                       target_bandwidths=[1.5]))
    assert load_model(save_model(model, tmp_path / "w.safetensors")).name == "opencodec_24khz_v4_custom"


def test_the_alias_is_no_choice_of_release_for_a_legacy_file() -> None:
    """``load_model("opencodec_24khz")`` marks its model, so a legacy header (bare alias, no hash)
    is refused with it; the same weights loaded by their versioned name are a choice."""
    from opencodec.pretrained import load_model

    by_alias, by_name = load_model(CODEC_ALIAS), load_model("opencodec_24khz_v5")
    assert by_alias.name == by_name.name == "opencodec_24khz_v5"
    with pytest.raises(BitstreamError, match="loaded as 'opencodec_24khz'"):
        check_model_for_file(by_alias, CODEC_ALIAS, None, 8)
    check_model_for_file(by_name, CODEC_ALIAS, None, 8)
