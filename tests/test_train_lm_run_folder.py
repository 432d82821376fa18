"""``opencodec train-lm``'s run folders and inputs: a resume whose codec changed, a codec
run folder, manifests listing no file, a codec or checkpoint given as the entropy model,
``--out`` a file, an old checkpoint of an official codec (nothing downloaded)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from opencodec import EncodecConfig, EncodecModel, cli, save_model
from opencodec.errors import ModelLoadError
from opencodec.identity import model_hash
from opencodec.pretrained import load_lm_model, load_model
from opencodec.train.lm_codes import codec_fingerprint


SR = 24000


ROOT = Path(__file__).resolve().parent.parent


def _codec(name: str, seed: int) -> EncodecModel:
    torch.manual_seed(seed)
    return EncodecModel(EncodecConfig(name=name, n_filters=4, dimension=16, ratios=[8, 5, 4, 2], lstm=1,
                                      n_q=4, bins=1024, target_bandwidths=[1.5, 3.0])).eval()


def _run(capsys: pytest.CaptureFixture[str], *argv: object) -> tuple[int, list[str]]:
    code = cli.main([str(a) for a in argv])
    return code, capsys.readouterr().err.strip().splitlines()


def _train_lm(setup: dict, run: Path, *over: str) -> list[str]:
    """``opencodec train-lm`` with the shipped tiny config on this module's codec and audio."""
    return ["train-lm", ROOT / "configs" / "lm_tiny.yaml", f"codec={setup['paths']['a']}",
            f"data.train=[{setup['train']}]", f"data.valid=[{setup['valid']}]", "device=cpu", "threads=1",
            "optim.steps=2", "log.tensorboard=false", "report.items=0", *over, "--run-dir", run,
            "--no-progress"]


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Codecs A and B (files), audio and manifests, and a two-step train-lm run on A's codes."""
    folder = tmp_path_factory.mktemp("lmfix")
    paths = {k: save_model(_codec(f"fix_{k}_24khz", seed), folder / f"{k}.safetensors")
             for k, seed in (("a", 1), ("b", 2))}
    rows = []
    for i in range(3):
        t = np.arange(int(0.5 * SR)) / SR
        x = 0.3 * np.sin(2 * np.pi * (180 + 60 * i) * t) + 0.02 * np.random.default_rng(i).standard_normal(len(t))
        sf.write(folder / f"x{i}.wav", x.astype(np.float32), SR, subtype="FLOAT")
        rows.append(json.dumps({"path": str(folder / f"x{i}.wav")}))
    (folder / "train.jsonl").write_text("\n".join(rows[:2]) + "\n")
    (folder / "valid.jsonl").write_text(rows[2] + "\n")
    (folder / "empty.jsonl").write_text("")
    setup = {"folder": folder, "paths": paths, "train": folder / "train.jsonl", "valid": folder / "valid.jsonl",
             "empty": folder / "empty.jsonl", "wav": folder / "x0.wav"}
    run = folder / "runs" / "lm1"
    assert cli.main([str(a) for a in _train_lm(setup, run)]) == 0
    return {**setup, "run": run, "a": load_model(paths["a"]), "b": load_model(paths["b"])}


def _copy_run(setup: dict, tmp_path: Path) -> Path:
    run = tmp_path / "lm1e"
    shutil.copytree(setup["run"], run)
    shutil.rmtree(run / "codes")
    return run


# -- 1. checked before any code is extracted or written; 2. the hash users see --------------------
def test_a_resume_whose_codec_changed_is_refused_before_any_code(setup: dict, tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    run = _copy_run(setup, tmp_path)
    before = {p.name: p.stat().st_mtime_ns for p in run.iterdir()}
    code, err = _run(capsys, *_train_lm(setup, run, f"codec={setup['paths']['b']}"))
    a, b = setup["a"], setup["b"]
    assert code == 1 and len(err) == 1, err
    assert (f"trained on the codes of codec fix_a_24khz (weights hash {model_hash(a)}, codec={setup['paths']['a']})"
            in err[0]), err
    assert f"not on this config's codec fix_b_24khz (weights hash {model_hash(b)}, codec={setup['paths']['b']})" \
        in err[0], err
    assert codec_fingerprint(a)[:12] not in err[0] and codec_fingerprint(b)[:12] not in err[0]
    assert not (run / "codes").exists()  # nothing encoded
    assert {p.name: p.stat().st_mtime_ns for p in run.iterdir()} == before  # nothing written (no .lock)
    # a run checkpointed before checkpoints recorded the weights hash: the export beside it has it,
    # else the codec its config names
    ckpt = torch.load(run / "checkpoint.pt", weights_only=True)
    assert ckpt.pop("codec_weights_hash") == model_hash(a)
    torch.save(ckpt, run / "checkpoint.pt")
    for remove in ("lm.safetensors", None):
        if remove:
            (run / remove).unlink()
            (run / "lm_best.safetensors").unlink(missing_ok=True)
        code, err = _run(capsys, *_train_lm(setup, run, f"codec={setup['paths']['b']}"))
        assert code == 1 and f"fix_a_24khz (weights hash {model_hash(a)}" in err[0], err
        assert not (run / "codes").exists()
    # the run's own codec resumes
    code, err = _run(capsys, *_train_lm(setup, run, "optim.steps=3"))
    assert code == 0 and any("resumed from" in line and "at step 2" in line for line in err), err


def test_a_codec_run_folder_is_refused_before_any_code(setup: dict, tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    codec_run = tmp_path / "t1d"  # as opencodec train leaves it
    codec_run.mkdir()
    (codec_run / "config.json").write_text(json.dumps({"name": "t1", "model": {"n_filters": 4}}))
    torch.save({"model": {}, "disc": {}, "opt_g": {}, "opt_d": {}, "step": 20, "config": {}},
               codec_run / "checkpoint.pt")
    for with_checkpoint in (True, False):  # also a codec run that has not checkpointed yet
        if not with_checkpoint:
            (codec_run / "checkpoint.pt").unlink()
        code, err = _run(capsys, *_train_lm(setup, codec_run))
        assert code == 1 and len(err) == 1, err
        assert (f"--run-dir {codec_run} holds a codec's training run (opencodec train), not an entropy "
                f"model's") in err[0], err
        assert "another codec" not in err[0] and "None" not in err[0]
        assert sorted(p.name for p in codec_run.iterdir()) == (["checkpoint.pt"] if with_checkpoint else []) + [
            "config.json"]
        assert json.loads((codec_run / "config.json").read_text())["name"] == "t1"


def test_manifests_listing_no_file_write_nothing(setup: dict, tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    run, cache = tmp_path / "r", tmp_path / "cache"
    code, err = _run(capsys, *_train_lm(setup, run, f"data.valid=[{setup['empty']}]", f"data.cache_dir={cache}"))
    assert code == 1 and len(err) == 1, err
    assert err[0].endswith(f"config field data.valid: the manifest(s) {setup['empty']} list no files; set "
                           f"data.valid=[] to train without validation"), err
    assert not run.exists() and not cache.exists()
    code, err = _run(capsys, *_train_lm(setup, run, f"data.train=[{setup['empty']}]"))
    assert code == 1 and "config field data.train: the manifest(s)" in err[0] and not run.exists(), err
    missing = tmp_path / "missing.jsonl"
    missing.write_text(json.dumps({"path": str(tmp_path / "nope.wav")}) + "\n")
    code, err = _run(capsys, *_train_lm(setup, run, f"data.valid=[{missing}]"))
    assert code == 1 and "config field data.valid: none of the 1 file(s)" in err[0] and not run.exists(), err


# -- 3. what the file given as the entropy model is -------------------------------------------------------
def test_a_codec_or_a_checkpoint_as_the_entropy_model_says_what_it_is(setup: dict, tmp_path: Path,
                                                                      capsys: pytest.CaptureFixture[str]) -> None:
    codec_file, lm_ckpt = setup["paths"]["a"], setup["run"] / "checkpoint.pt"
    codec_ckpt = tmp_path / "checkpoint.pt"
    torch.save({"model": {}, "disc": {}, "opt_g": {}, "opt_d": {}, "step": 20}, codec_ckpt)
    report = ["train-lm", "report", "--manifest", setup["valid"], "--no-progress", "--no-verify"]
    for extra in ([], ["--codec", codec_file]):
        code, err = _run(capsys, *report, "--lm", codec_file, *extra)
        assert code == 1 and len(err) == 1, err
        assert err[0] == (f"opencodec train-lm report: error: {codec_file} is a codec's weights (fix_a_24khz), not an "
                          f"entropy model state dict; a codec goes to --codec; --lm takes an entropy model (the "
                          f"lm.safetensors that opencodec train-lm exports)"), err
        code, err = _run(capsys, *report, "--lm", codec_ckpt, *extra)
        assert code == 1 and f"{codec_ckpt} is a codec's training checkpoint (opencodec train, step 20)" in err[0], err
        code, err = _run(capsys, *report, "--lm", lm_ckpt, *extra)
        assert code == 1 and len(err) == 1 and "does not name its codec" not in err[0], err
        assert f"{lm_ckpt} is a train-lm training checkpoint" in err[0] \
            and f"pass {setup['run'] / 'lm.safetensors'}" in err[0], err
    # compress and the loader: the loader's advice names compress's options
    out = tmp_path / "x.ecdc"
    code, err = _run(capsys, "-q", "compress", setup["wav"], out, "-b", "3", "-m", codec_file, "--lm-model", codec_file)
    assert code == 1 and len(err) == 1 and not out.exists(), err
    assert f"{codec_file} is a codec's weights (fix_a_24khz)" in err[0] and "goes to -m/--model" in err[0], err
    with pytest.raises(ModelLoadError, match="is a codec's training checkpoint"):
        load_lm_model(codec_ckpt)
    load_lm_model(setup["run"] / "lm.safetensors", codec=setup["a"])  # the run's export still loads


# -- 4. report's own options --------------------------------------------------------------------------------
def test_report_out_file_and_empty_manifest_are_clear_lines(setup: dict, tmp_path: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    lm = setup["run"] / "lm.safetensors"
    a_file = tmp_path / "afile"
    a_file.write_text("keep")
    for out, why in ((a_file, "is a file"), (a_file / "sub", f"cannot be a folder: {a_file} is a file")):
        code, err = _run(capsys, "train-lm", "report", "--lm", lm, "--manifest", setup["valid"], "--out", out,
                         "--no-progress")
        assert code == 1 and err == [f"opencodec train-lm report: error: --out {out} {why}; give a folder for "
                                     f"report.json and report.md"], err
    assert a_file.read_text() == "keep"
    code, err = _run(capsys, "train-lm", "report", "--lm", lm, "--manifest", setup["empty"], "--no-progress")
    assert code == 1 and err == [f"opencodec train-lm report: error: --manifest {setup['empty']}: the manifest(s) "
                                 f"list no files; give manifest(s) of held-out audio"], err


def test_an_old_checkpoint_of_an_official_codec_downloads_nothing_to_word_the_error(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A checkpoint without ``codec_weights_hash`` whose config names the official codec: the
    hash is said to be not recorded, and no weights are loaded (or downloaded) for a message."""
    from opencodec import pretrained
    from opencodec.train.lm_solver import _recorded_weights_hash

    def no_loading(*args: object, **kwargs: object) -> None:
        raise AssertionError("load_model called")

    monkeypatch.setattr(pretrained, "load_model", no_loading)
    ckpt = {"codec_hash": "ab" * 32, "config": {"codec": "encodec_24khz"}}
    assert _recorded_weights_hash(tmp_path / "checkpoint.pt", ckpt) is None
