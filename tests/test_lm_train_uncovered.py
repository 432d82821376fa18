"""Paths of the entropy-model trainer (``opencodec train-lm``) that no other test ran (the
uncovered-lines audit): settings refusals, run folders and checkpoints that are not its runs',
its progress line, an unreadable code cache, validation of empty sequences and the saving
report's unreadable or missing audio. Each test checks the value or the exact message."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import test_train_lm  # tests/ is on sys.path (conftest.py)
from opencodec import EncodecModel, cli
from opencodec.errors import AudioIOError, ConfigError
from opencodec.train import lm_codes, lm_eval, lm_solver
from opencodec.train.lm_config import parse_settings
from test_train_uncovered import _last_line
from train_helpers import set_dotted

codec_setup = test_train_lm.codec_setup  # the tiny codec and its manifests (a module fixture)
ROOT = test_train_lm.ROOT
TINY = ROOT / "configs" / "tiny_24khz.yaml"
TRACE = "Traceback (most recent call last)"


# -- the entropy-model trainer's settings (lm_config.py) -------------------------------------------
@pytest.mark.parametrize("key, value, expected", [
    ("lm", 3, "config field lm must be a section, got 3"),
    ("lm.past_context_s", 2.0, "config field lm.past_context_s is 2, but load_lm_model gives a weights file "
                               "a 3.5 s window"),
    ("lm.dim", 36, "config field lm.dim (36) must be even and a multiple of lm.num_heads (8)"),
    ("optim.name", "sgd", "config field optim.name: expected adamw or adam, got 'sgd'"),
    ("amp", "fp16", "config field amp: expected none or bf16, got 'fp16'"),
    ("threads", 0, "config field threads must be >= 1, got 0"),
])
def test_lm_settings_refuse_a_bad_value(key: str, value: object, expected: str) -> None:
    cfg = test_train_lm._lm_cfg(1)
    set_dotted(cfg, key, value)
    with pytest.raises(ConfigError) as exc:
        parse_settings(cfg)
    assert str(exc.value) == expected


def test_lm_settings_take_one_manifest_path_as_a_list() -> None:
    cfg = test_train_lm._lm_cfg(1)
    cfg["data"] = {"train": "a.jsonl", "valid": "b.jsonl"}
    s = parse_settings(cfg)
    assert (s.train_manifests, s.valid_manifests) == (["a.jsonl"], ["b.jsonl"])


# -- the entropy-model trainer's runs and checkpoints (lm_solver.py) -------------------------------
def _lm_args(setup: dict, tmp_path: Path, *over: str, progress: bool = False) -> list[str]:
    """``opencodec train-lm`` of the tiny config on ``setup``'s codec: 2 steps, no validation."""
    return ["train-lm", str(ROOT / "configs" / "lm_tiny.yaml"), f"codec={setup['codec_path']}",
            f"data.train=[{setup['train']}]", "data.valid=[]", f"data.cache_dir={tmp_path / 'cache'}",
            "optim.steps=2", "optim.batch_size=2", "seq_len=16", "threads=1", "report.items=0",
            "log.tensorboard=false", "log.every=1", *over, "--run-dir", str(tmp_path / "run"),
            *([] if progress else ["--no-progress"])]


def _lm_main(capsys: pytest.CaptureFixture[str], args: list[str]) -> tuple[int, str]:
    capsys.readouterr()
    status = cli.main(args)
    return status, capsys.readouterr().err


def test_lm_run_progress_line_nothing_to_train_and_a_legacy_checkpoint(
        codec_setup: dict, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The bar's closing line; a rerun of a finished run trains nothing (and says so); a
    checkpoint in torch's legacy (not zip) format, which cannot be memory-mapped, is read whole."""
    status, err = _lm_main(capsys, _lm_args(codec_setup, tmp_path, progress=True))
    assert status == 0, err
    assert any("2/2" in line and "bits=" in line for line in err.splitlines())  # the bar with its postfix
    run, checkpoint = tmp_path / "run", tmp_path / "run" / "checkpoint.pt"
    weights = (run / "lm.safetensors").read_bytes()
    nothing = f"{run} is at step 2, optim.steps is 2: nothing to train"
    status, err = _lm_main(capsys, _lm_args(codec_setup, tmp_path))
    assert status == 0 and nothing in err.splitlines(), err
    torch.save(torch.load(checkpoint, weights_only=True), checkpoint, _use_new_zipfile_serialization=False)
    with pytest.raises(RuntimeError):  # what makes the reader fall back
        torch.load(checkpoint, weights_only=True, mmap=True)
    status, err = _lm_main(capsys, _lm_args(codec_setup, tmp_path))
    assert status == 0 and nothing in err.splitlines() and f"resumed from {checkpoint} at step 2" in err, err
    assert (run / "lm.safetensors").read_bytes() == weights


@pytest.mark.parametrize("case", ["garbage", "list", "no_optimiser", "model_list"])
def test_lm_run_folder_with_a_checkpoint_that_is_not_a_run_is_one_line(
        case: str, codec_setup: dict, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    checkpoint = tmp_path / "run" / "checkpoint.pt"
    checkpoint.parent.mkdir()
    if case == "garbage":
        checkpoint.write_bytes(b"not a checkpoint")
        expected = (f"opencodec train-lm: error: cannot read {checkpoint} (not a checkpoint that torch.load "
                    f"reads safely: Unsupported operand 110): use another --run-dir")
    elif case == "list":
        torch.save([1, 2], checkpoint)
        expected = f"opencodec train-lm: error: {checkpoint} is not a training checkpoint: use another --run-dir"
    elif case == "no_optimiser":
        torch.save({"model": {}, "step": 1}, checkpoint)
        expected = (f"opencodec train-lm: error: {checkpoint} is not a train-lm training checkpoint (it writes "
                    f"the model, optimiser, step and codec): use another --run-dir")
    else:
        from opencodec.train.lm_codes import codec_fingerprint

        torch.save({"model": [1], "optim": {}, "step": 1, "codec_hash": codec_fingerprint(codec_setup["codec"]),
                    "rng": {}}, checkpoint)
        expected = (f"opencodec train-lm: error: {checkpoint} does not match the configured model (no weights "
                    f"of this model but a list); use another --run-dir")
    status, err = _lm_main(capsys, _lm_args(codec_setup, tmp_path))
    errors = [line for line in err.splitlines() if "error:" in line]
    assert status == 1 and TRACE not in err and len(errors) == 1, err
    assert errors[0] == expected
    assert sorted(p.name for p in checkpoint.parent.iterdir()) in (["checkpoint.pt"], [".lock", "checkpoint.pt"])
    assert not (checkpoint.parent / "config.json").exists()  # nothing written (the run's lock may stay)


def test_lm_resume_with_another_codec_names_the_run_codec_weights_hash(
        codec_setup: dict, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A checkpoint that does not record its codec's weights hash (an older run) takes it from
    the export beside it; with neither that nor the codec's source, it says 'not recorded'."""
    from opencodec import save_model
    from opencodec.identity import model_hash

    assert _lm_main(capsys, _lm_args(codec_setup, tmp_path))[0] == 0
    checkpoint = tmp_path / "run" / "checkpoint.pt"
    ckpt = torch.load(checkpoint, weights_only=True)
    del ckpt["codec_weights_hash"]
    torch.save(ckpt, checkpoint)
    other = EncodecModel(codec_setup["codec"].config)
    with torch.no_grad():
        for p in other.parameters():
            p.add_(0.01)
    other_path = save_model(other, tmp_path / "other.safetensors")
    args = _lm_args(codec_setup, tmp_path, f"codec={other_path}")
    status, err = _lm_main(capsys, args)
    ours = model_hash(codec_setup["codec"])
    was = f"codec unit_lm_24khz (weights hash {ours}, codec={codec_setup['codec_path']})"
    now = f"codec unit_lm_24khz (weights hash {model_hash(other)}, codec={other_path})"
    assert (status, err.strip()) == (1, f"opencodec train-lm: error: {checkpoint} was trained on the codes of "
                                        f"{was}, not on this config's {now}: resume with the run's codec, or "
                                        f"use another --run-dir")
    (tmp_path / "run" / "lm.safetensors").write_bytes(b"not safetensors")
    del ckpt["config"]["codec"]
    torch.save(ckpt, checkpoint)
    status, err = _lm_main(capsys, args)
    assert status == 1 and "(weights hash not recorded)" in err and len(err.strip().splitlines()) == 1, err


def test_lm_config_without_codec_or_training_manifests(codec_setup: dict, tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    args = _lm_args(codec_setup, tmp_path)
    status, err = _lm_main(capsys, args[:2] + ["codec=null"] + args[3:])
    assert (status, err.strip()) == (1, "opencodec train-lm: error: config field codec is missing (a codec name "
                                        "such as opencodec_24khz, or a weights file)")
    s = parse_settings({**test_train_lm._lm_cfg(1), "codec": str(codec_setup["codec_path"])})
    with pytest.raises(ConfigError, match=r"^config field data.train is missing \(JSONL manifest\(s\) of "
                                          r"training audio\)$"):
        lm_codes.load_codec(s)
    assert not (tmp_path / "run").exists()


# -- codes and their cache (lm_codes.py) -----------------------------------------------------------
def test_code_set_of_nothing_and_a_missing_manifest_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"^a CodeSet needs at least one sequence$"):
        lm_codes.CodeSet.from_sequences([], [])
    with pytest.raises(FileNotFoundError, match=rf"^no manifest file {tmp_path / 'none.jsonl'}$"):
        lm_codes._manifest_rows([str(tmp_path / "none.jsonl")])


def test_report_manifests_that_list_no_file_are_refused(tmp_path: Path) -> None:
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    train = tmp_path / "train.jsonl"
    train.write_text(json.dumps({"path": str(TINY)}) + "\n")  # any file that exists
    s = parse_settings({**test_train_lm._lm_cfg(1), "data": {"train": [str(train)]},
                        "report": {"items": 2, "manifests": [str(empty)]}})
    with pytest.raises(ConfigError) as exc:
        lm_codes.check_manifest_rows(s)
    assert str(exc.value) == (f"config field report.manifests: the manifest(s) {empty} list no files; set "
                              f"report.items=0 to skip the report")


def test_an_unreadable_code_cache_is_encoded_again(codec_setup: dict, tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    codec = codec_setup["codec"]
    manifests = [str(codec_setup["valid"])]
    codes, from_cache = lm_codes.extract_codes(codec, manifests, tmp_path, progress=False)
    (cache,) = tmp_path.glob("codes-*.safetensors")
    cache.write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{broken}")
    capsys.readouterr()
    again, again_from_cache = lm_codes.extract_codes(codec, manifests, tmp_path, progress=False)
    err = capsys.readouterr().err
    assert (from_cache, again_from_cache) == (False, False)
    assert f"warning: ignoring unreadable code cache {cache} (" in err and "); encoding again" in err
    assert torch.equal(again.codes, codes.codes) and torch.equal(again.offsets, codes.offsets)
    assert lm_codes.extract_codes(codec, manifests, tmp_path, progress=False)[1]  # rewritten: read from now on


def test_extract_codes_of_no_file_or_no_readable_file(codec_setup: dict, tmp_path: Path) -> None:
    codec = codec_setup["codec"]
    empty, broken = tmp_path / "empty.jsonl", tmp_path / "broken.jsonl"
    empty.write_text("\n")
    broken.write_text(json.dumps({"path": str(codec_setup["folder"] / "broken.wav")}) + "\n")
    with pytest.raises(ConfigError, match=rf"^manifest\(s\) {empty} list no files$"):
        lm_codes.extract_codes(codec, [str(empty)], tmp_path, progress=False)
    with pytest.raises(AudioIOError, match=rf"^no file of {broken} could be read \(1 skipped\)$"):
        lm_codes.extract_codes(codec, [str(broken)], tmp_path, progress=False)
    assert not list(tmp_path.glob("codes-*"))  # no cache of nothing


# -- validation and the saving report (lm_eval.py) -------------------------------------------------
def test_validate_skips_a_sequence_of_no_frames() -> None:
    s = parse_settings(test_train_lm._lm_cfg(1))
    torch.manual_seed(0)
    lm = lm_solver.build_lm(s, 4, 64, 75)
    seq = torch.randint(0, 64, (4, 12), generator=torch.Generator().manual_seed(0))
    with_empty = lm_codes.CodeSet.from_sequences([torch.zeros(4, 0, dtype=torch.long), seq], ["empty", "seq"])
    alone = lm_codes.CodeSet.from_sequences([seq], ["seq"])
    got = lm_eval.validate(lm, with_empty, [1.5, 3.0], [2, 4], 75)
    assert got == lm_eval.validate(lm, alone, [1.5, 3.0], [2, 4], 75)
    bits = float(lm_eval.sequence_bits(lm.eval(), seq[:2]).sum())
    assert got["bits_per_code/1.5kbps"] == pytest.approx(bits / seq[:2].numel())


@pytest.fixture(scope="module")
def lm_file(codec_setup: dict, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An entropy model of the tiny codec, trained one step (its export records the codec)."""
    folder = tmp_path_factory.mktemp("lm_file")
    args = _lm_args(codec_setup, folder, "optim.steps=1")
    assert cli.main(args) == 0
    return folder / "run" / "lm.safetensors"


def test_report_skips_unreadable_audio_and_stops_at_items(codec_setup: dict, lm_file: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    """``codec_setup['train']``: item0, item1, item2 and an unreadable file (last)."""
    from opencodec.pretrained import load_lm_model

    codec = codec_setup["codec"]
    lm = load_lm_model(str(lm_file), codec=codec)
    manifests = [str(codec_setup["train"])]
    capsys.readouterr()
    two = lm_eval.evaluate_saving(codec, lm, manifests, [1.5], max_items=2, progress=False, verify=False)
    assert (two["items"], two["skipped"]) == (2, [])
    assert two["seconds"] == pytest.approx(0.6 + 0.8)  # item0 and item1
    every = lm_eval.evaluate_saving(codec, lm, manifests, [1.5], progress=False, verify=False)
    broken = str(codec_setup["folder"] / "broken.wav")
    assert every["items"] == 3 and [s["path"] for s in every["skipped"]] == [broken]
    assert f"warning: skipping {broken}: " in capsys.readouterr().err


def test_report_of_no_listed_or_no_readable_file(codec_setup: dict, lm_file: Path, tmp_path: Path) -> None:
    from opencodec.pretrained import load_lm_model

    codec = codec_setup["codec"]
    lm = load_lm_model(str(lm_file), codec=codec)
    empty, broken = tmp_path / "empty.jsonl", tmp_path / "broken.jsonl"
    empty.write_text("")
    broken.write_text(json.dumps({"path": str(codec_setup["folder"] / "broken.wav")}) + "\n")
    with pytest.raises(ConfigError, match=rf"^manifest\(s\) {empty} list no files$"):
        lm_eval.evaluate_saving(codec, lm, [str(empty)], progress=False)
    with pytest.raises(AudioIOError, match=rf"^no file of {broken} could be read \(1 skipped\)$"):
        lm_eval.evaluate_saving(codec, lm, [str(broken)], progress=False)


def test_report_command_threads_and_an_lm_file_that_names_no_codec(
        codec_setup: dict, lm_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from opencodec.pretrained import load_lm_model
    from opencodec.train.lm_model import export_lm

    threads = torch.get_num_threads()
    try:
        capsys.readouterr()
        status = cli.main(["train-lm", "report", "--lm", str(lm_file), "--manifest", str(codec_setup["valid"]),
                           "--bandwidths", "1.5", "--threads", "2", "--no-progress", "--no-verify"])
        assert status == 0 and torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(threads)
    out = capsys.readouterr().out
    assert "| 1.5 kbps | 2 |" in out and "Held-out audio: 1 files" in out
    bare = export_lm(load_lm_model(str(lm_file), codec=codec_setup["codec"]), tmp_path / "bare.safetensors", {})
    status = cli.main(["train-lm", "report", "--lm", str(bare), "--manifest", str(codec_setup["valid"])])
    err = capsys.readouterr().err
    assert status == 2 and _last_line(err) == (f"opencodec train-lm report: error: {bare} does not name its "
                                               f"codec: pass --codec")


def test_lm_time_stop_between_validations_validates_and_checkpoints_that_step(
        codec_setup: dict, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``--max-minutes`` spent after step 1 of 3 (valid_every 1000): step 1 is validated,
    checkpointed and exported before the run stops."""
    args = _lm_args(codec_setup, tmp_path, f"data.valid=[{codec_setup['valid']}]", "optim.steps=3",
                    "log.valid_every=1000", "log.checkpoint_every=1000", "--max-minutes", "1e-9")
    status, err = _lm_main(capsys, args)
    run = tmp_path / "run"
    assert status == 0, err
    assert "stopped at step 1 of 3; rerun the same command to continue" in err
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if any(k.startswith("valid/") for k in r)] == [0, 1]
    assert torch.load(run / "checkpoint.pt", weights_only=True)["step"] == 1


def test_weights_hash_of_a_source_that_does_not_load_is_none(tmp_path: Path) -> None:
    from opencodec.train.lm_model import _weights_hash_of_source

    assert _weights_hash_of_source(str(tmp_path / "gone.safetensors"), "0" * 64, str(tmp_path)) is None
