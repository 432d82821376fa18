"""Round two of the user walkthrough: small problems found by helpers walking opencodec as
demanding users (a warning printed twice, usage errors that were runtime errors or not errors
at all, a bool taken as an index, a note about work that does not run, an export into a mount
point, an error naming an argument the user never passed)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from codec_helpers import noise_wav, run, tiny_files_ckpt, with_header_key  # noqa: F401 (a pytest fixture)


@pytest.fixture(autouse=True)
def _always_offline(offline: Path) -> Path:
    return offline


# 1. a streamed decode printed the header's warnings twice --------------------------------------
def test_a_streamed_decode_prints_a_header_warning_once(tmp_path: Path, tiny_files_ckpt: str,
                                                        monkeypatch: pytest.MonkeyPatch,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    """A long ``.ecdc`` (decoded streamed; "long" lowered to 0.2 s) whose header has an unknown
    key: the warning was printed by the header check, then again from the streamed decode's
    result (which reads the header again). Once now, on the streamed path as on the whole one."""
    from opencodec import codec_files
    assert run(capsys, "compress", "-m", tiny_files_ckpt, noise_wav(tmp_path / "in.wav"), tmp_path / "a.ecdc")[0] == 0
    odd = with_header_key(tmp_path / "a.ecdc", tmp_path / "odd.ecdc", "zz")
    for low in (60.0, 0.2):  # the whole path, then the streamed one
        monkeypatch.setattr(codec_files, "STREAMING_MIN_SECONDS", low)
        code, _, err = run(capsys, "decompress", "-f", "-m", tiny_files_ckpt, odd, tmp_path / "odd.wav")
        assert code == 0, err
        lines = [line for line in err.splitlines() if "unknown key(s) 'zz' ignored" in line]
        assert len(lines) == 1, err


def test_a_streamed_decode_still_reports_clipping(tmp_path: Path, tiny_files_ckpt: str,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """Leaving out the header's warnings keeps the decode's own: the clipping warning."""
    from opencodec import codec_files
    from opencodec.codec_files import FileCompressor, FileDecompressor, OutputOptions
    from opencodec.file_jobs import Job
    FileCompressor(tiny_files_ckpt, 1.5, OutputOptions())(Job(noise_wav(tmp_path / "in.wav"), tmp_path / "a.ecdc"))
    monkeypatch.setattr(codec_files, "STREAMING_MIN_SECONDS", 0.2)
    real = codec_files.decompress_file_streaming

    def clipping(*args: object, **kwargs: object) -> int:
        import warnings
        length = real(*args, **kwargs)
        warnings.warn("x.wav: peak amplitude 1.5000 exceeds full scale 1.0; clipped", stacklevel=2)
        return length

    monkeypatch.setattr(codec_files, "decompress_file_streaming", clipping)
    odd = with_header_key(tmp_path / "a.ecdc", tmp_path / "odd.ecdc", "zz")
    with pytest.warns(UserWarning, match="unknown key"):
        result = FileDecompressor(tiny_files_ckpt, OutputOptions())(Job(odd, tmp_path / "odd.wav"))
    assert result.streamed
    assert result.warnings == ["x.wav: peak amplitude 1.5000 exceeds full scale 1.0; clipped"]


# 2. train / train-lm without arguments named the optional overrides as required ------------------
@pytest.mark.parametrize("command", ["train", "train-lm"])
def test_train_without_arguments_names_only_the_config(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    """Python 3.11's argparse makes a ``nargs="*"`` positional without a default required:
    "the following arguments are required: config, overrides"; overrides are optional."""
    code, _, err = run(capsys, command)
    assert code == 2
    last = err.splitlines()[-1]
    assert last == f"opencodec {command}: error: the following arguments are required: config"


def test_train_overrides_stay_optional_and_are_applied() -> None:
    """The default that makes them optional keeps them working, given or not."""
    import argparse

    from opencodec.train.config import parse_run_arguments
    config = str(Path(__file__).resolve().parent.parent / "configs" / "tiny_24khz.yaml")
    args, cfg = parse_run_arguments(argparse.ArgumentParser(), [config], "config")
    assert args.overrides == []
    args, changed = parse_run_arguments(argparse.ArgumentParser(), [config, "optim.steps=7"], "config")
    assert args.overrides == ["optim.steps=7"] and changed["optim"]["steps"] == 7 != cfg["optim"]["steps"]


# 3. tokenize -b with a bandwidth the model lacks: a usage error, as for compress -----------------
def test_tokenize_unsupported_bandwidth_is_a_usage_error(tmp_path: Path, tiny_files_ckpt: str,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "data").mkdir()
    noise_wav(tmp_path / "data" / "a.wav", 0.3)
    code, _, err = run(capsys, "tokenize", "-b", "5", tmp_path / "data", "--out", tmp_path / "out",
                       "-m", tiny_files_ckpt, "--device", "cpu", "--workers", "1")
    assert code == 2, err  # was 1, "model ... supports bandwidths 1.5, 3 kbps, got 5"
    assert err.splitlines()[-1] == ("opencodec tokenize: error: model tiny_files_model does not support 5 kbps; "
                                    "choose one of: 1.5, 3 kbps")
    assert not (tmp_path / "out").exists()
    code, _, err = run(capsys, "compress", "-b", "5", "-m", tiny_files_ckpt, tmp_path / "data" / "a.wav",
                       tmp_path / "a.ecdc")
    assert code == 2 and err.splitlines()[-1].split(": error: ")[1] == "model tiny_files_model does not support " \
        "5 kbps; choose one of: 1.5, 3 kbps"  # the same words as compress


# 4. eval: a list option given without a value ---------------------------------------------------
@pytest.mark.parametrize(("given", "flag"), [
    (["--categories"], "--categories"),
    (["--bandwidths", "--baselines", "opus6"], "--bandwidths"),  # was taken as the default
    (["--models", "--baselines", "opus6"], "--models"),  # was ignored
    (["--models"], "--models"),  # was "nothing to evaluate: give --models and/or --baselines"
    (["--baselines", "opus6", "--baselines"], "--baselines"),
])
def test_eval_list_option_without_a_value_is_a_usage_error(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                           given: list[str], flag: str) -> None:
    from opencodec.eval.cli import NO_VALUE_NAMED, run_command

    def never(*args: object, **kwargs: object) -> dict:
        raise AssertionError("the evaluation ran")

    out = tmp_path / "out"
    code = run_command(["--set", str(tmp_path), "--out", str(out), *given], "opencodec eval", never)
    assert (code, capsys.readouterr().err) == (2, f"opencodec eval: error: {NO_VALUE_NAMED[flag]}\n")
    assert NO_VALUE_NAMED[flag].startswith(f"{flag} names no ")
    assert not out.exists()


def test_eval_list_options_left_out_are_still_empty(tmp_path: Path) -> None:
    from opencodec.eval.cli import run_command
    seen: dict = {}

    def record(models: list, bandwidths: object, baselines: list, *args: object, **kwargs: object) -> dict:
        seen.update(models=models, bandwidths=bandwidths, baselines=baselines, categories=kwargs["categories"])
        return {"meta": {"n_rows": 0}}

    assert run_command(["--set", str(tmp_path), "--out", str(tmp_path / "o"), "-q"], "opencodec eval", record) == 0
    assert seen == {"models": [], "bandwidths": None, "baselines": [], "categories": None}


# 5. TokenDataset[True] was row 1 -------------------------------------------------------------------
def _tokens(tmp_path: Path, ckpt: str, capsys: pytest.CaptureFixture[str], workers: str = "1") -> tuple[int, str]:
    data = tmp_path / "data"
    if not data.exists():
        data.mkdir()
        noise_wav(data / "a.wav", 0.3)
        noise_wav(data / "b.wav", 0.2)
    code, _, err = run(capsys, "tokenize", data, "--out", tmp_path / "out", "-m", ckpt, "--device", "cpu",
                       "--workers", workers)
    return code, err


def test_token_dataset_refuses_a_bool_index(tmp_path: Path, tiny_files_ckpt: str,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    from opencodec.tokens import TokenDataset
    assert _tokens(tmp_path, tiny_files_ckpt, capsys)[0] == 0
    ds = TokenDataset(tmp_path / "out")
    assert len(ds) == 2 and ds[1]["id"] != ds[0]["id"]
    for flag in (True, False):
        with pytest.raises(TypeError, match=rf"^TokenDataset rows are indexed by an integer position, got bool {flag}$"):
            ds[flag]
    assert ds[np.int64(-1)]["id"] == ds[1]["id"]  # numpy integers still index


# 6. the --workers note on a rerun where nothing runs -----------------------------------------------
def test_tokenize_workers_note_not_given_on_a_rerun_with_nothing_to_do(
        tmp_path: Path, tiny_files_ckpt: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, err = _tokens(tmp_path, tiny_files_ckpt, capsys, workers="2")
    assert code == 0 and "so 1 of the 2 processes runs" in err  # true the first time
    code, err = _tokens(tmp_path, tiny_files_ckpt, capsys, workers="2")
    assert code == 0 and "--workers" not in err, err  # every shard done: no process runs
    assert "shards written 0, already done 1" in err


# 7. export-onnx into a folder on another file system than its parent -------------------------------
def _fake_mount(monkeypatch: pytest.MonkeyPatch, mount: Path, other_device: bool = True) -> None:
    """``mount`` seen as a mount point: a rename into it from outside fails as across devices
    (EXDEV), and (``other_device``) it has another st_dev than its parent (a bind mount of the
    same file system has the same one)."""
    import errno
    import os

    from opencodec import _files
    real_stat, real_replace = Path.stat, os.replace

    def stat(self: Path, *args: object, **kwargs: object) -> os.stat_result:
        st = real_stat(self, *args, **kwargs)
        return os.stat_result((st[0], st[1], st[2] + 1, *st[3:10])) if self == mount and other_device else st

    def replace(src: object, dst: object) -> None:
        if Path(dst).parent == mount and mount not in Path(src).parents:
            raise OSError(errno.EXDEV, os.strerror(errno.EXDEV))
        real_replace(src, dst)

    monkeypatch.setattr(Path, "stat", stat)
    monkeypatch.setattr(_files.os, "replace", replace)


@pytest.mark.parametrize("other_device", [True, False], ids=["another-file-system", "bind-mount"])
def test_staged_files_into_a_mount_point(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, other_device: bool) -> None:
    """``export-onnx MODEL OUT_DIR`` with OUT_DIR a mount point (a docker volume, /dev/shm, a bind
    mount of the same file system) made its temporary folder beside it, on the parent's file
    system, and failed after all the work with "cannot write OUT: Invalid cross-device link". The
    files now land; a previous export stays whole when a new one fails, and no temporary folder
    is left."""
    from opencodec._files import staged_files
    mount = tmp_path / "volume"
    mount.mkdir()
    (mount / "meta.json").write_text("old")
    _fake_mount(monkeypatch, mount, other_device)
    with pytest.raises(RuntimeError):
        with staged_files(mount) as tmp:
            (tmp / "meta.json").write_text("half")
            raise RuntimeError("the export failed")
    assert [p.name for p in mount.iterdir()] == ["meta.json"] and (mount / "meta.json").read_text() == "old"
    with staged_files(mount) as tmp:
        (tmp / "meta.json").write_text("new")
        (tmp / "encoder.onnx").write_text("graph")
    assert sorted(p.name for p in mount.iterdir()) == ["encoder.onnx", "meta.json"]
    assert (mount / "meta.json").read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["volume"]


def test_staged_files_into_dev_shm() -> None:
    """The same with a real mount point, where /dev/shm is one (tmpfs on another device than /dev)."""
    import os
    import uuid

    from opencodec._files import staged_files
    shm = Path("/dev/shm")
    if not (shm.is_dir() and os.access(shm, os.W_OK) and shm.stat().st_dev != shm.parent.stat().st_dev):
        pytest.skip("no writable /dev/shm mounted on another device than /dev")
    name = f"opencodec-test-{uuid.uuid4().hex}.txt"
    try:
        with staged_files(shm) as tmp:
            (tmp / name).write_text("data")
        assert (shm / name).read_text() == "data"
    finally:
        (shm / name).unlink(missing_ok=True)
    assert not [p for p in shm.iterdir() if p.name.startswith(".shm.")]


# 8. an entropy-model file whose name no header holds: the error blamed "lm_name" -------------------
@pytest.mark.parametrize(("name", "why"), [
    ("x" * 201, "is longer than the 200 characters a header holds"),
    ("my\nlm", r"holds '\\n' \(U\+000A\), which readers cannot print"),
])
def test_compress_names_the_entropy_model_file_whose_name_no_header_holds(
        tmp_path: Path, tiny_files_ckpt: str, capsys: pytest.CaptureFixture[str], name: str, why: str) -> None:
    import re

    import torch

    from opencodec.entropy.lm import EntropyLM
    from opencodec.pretrained import load_model
    from opencodec.train.lm_codes import codec_fingerprint
    from opencodec.train.lm_model import export_lm
    codec = load_model(tiny_files_ckpt)
    torch.manual_seed(0)
    lm = EntropyLM(n_q=4, card=codec.bins, dim=16, num_heads=8, num_layers=1, hidden_scale=2.0).eval()
    lm_file = export_lm(lm, tmp_path / "lm.safetensors",
                        {"codec": codec.name, "codec_source": tiny_files_ckpt, "codec_hash": codec_fingerprint(codec),
                         "frame_rate": 75, "bandwidths": [1.5, 3.0], "step": 5, "name": name})
    code, _, err = run(capsys, "compress", "-m", tiny_files_ckpt, "--lm-model", lm_file,
                       noise_wav(tmp_path / "in.wav", 0.2), tmp_path / "out.ecdc")
    assert code == 1 and "lm_name" not in err, err
    assert re.fullmatch(rf"opencodec: error: entropy model {re.escape(str(lm_file))}: the name in its metadata "
                        rf"'(x+\.\.\. \(201 characters\)|my\\nlm'), which deterministic \.ecdc headers record, "
                        rf"{why}; give it another name\n", err), err
    assert not (tmp_path / "out.ecdc").exists()


@pytest.mark.parametrize("key, value, said", [
    ("name", 2024, "config field model.name must be a non-empty string, got 2024"),
    ("name", None, "config field model.name must be a non-empty string, got None"),
    ("segment", "1.0", "config field model.segment must be a number of seconds or null, got '1.0'"),
    ("overlap", None, "config field model.overlap must be a number (a fraction of a segment), got None"),
])
def test_the_trainer_refuses_a_model_section_that_load_model_would_refuse(key: str, value: object, said: str) -> None:
    """``load_model`` (and ``save_model``) refuse a configuration of the wrong types; the trainer
    accepted ``model.name: 2024`` (YAML's int) and then failed with a traceback at its first
    checkpoint, after the training work. Its config check says so now, before any work."""
    import copy

    from opencodec.errors import ConfigError
    from opencodec.train.config import load_config
    from opencodec.train.config_checks import check_codec_config

    cfg = copy.deepcopy(load_config(str(Path(__file__).parents[1] / "configs" / "tiny_24khz.yaml")))
    check_codec_config(copy.deepcopy(cfg))  # as shipped: accepted
    cfg["model"][key] = value
    with pytest.raises(ConfigError) as caught:
        check_codec_config(cfg)
    assert str(caught.value) == said
