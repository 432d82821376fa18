"""Paths of ``opencodec.train`` that no other test ran (the uncovered-lines audit): config and
override refusals, device names this machine lacks, the refusals of the loss, balancer and
discriminator constructors, the campaign pack/unpack errors, checkpoint files that are not a
run's, the TensorBoard and progress-bar outputs of both trainers, an unreadable code cache and
the report's unreadable or missing audio. Each test checks the value or the exact message."""

from __future__ import annotations

import json
import signal
import subprocess
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
import yaml

import test_train_lm  # tests/ is on sys.path (conftest.py)
from opencodec import EncodecConfig, EncodecModel, cli
from opencodec.errors import AudioIOError, ConfigError, OutputError
from opencodec.train import campaign, distributed, lm_codes, lm_eval, lm_solver, run_folder, run_state
from opencodec.train.balancer import Balancer
from opencodec.train.config_checks import resolve_device
from opencodec.train.device_data import DeviceCorpus
from opencodec.train.discriminator import MultiScaleSTFTDiscriminator
from opencodec.train.init import data_dependent_init
from opencodec.train.lm_config import parse_settings
from opencodec.train.losses import (MultiScaleMelLoss, generator_hinge_loss, mel_filterbank,
                                    relative_feature_matching_loss)
from opencodec.train.validation import _spectrogram_image
from test_train_solver import _config, _corpus
from train_helpers import set_dotted

codec_setup = test_train_lm.codec_setup  # the tiny codec and its manifests (a module fixture)
ROOT = test_train_lm.ROOT
TINY = ROOT / "configs" / "tiny_24khz.yaml"
TRACE = "Traceback (most recent call last)"


def _train(tmp_path: Path, capsys: pytest.CaptureFixture[str], cfg: dict, *extra: str) -> tuple[int, str]:
    """``opencodec train`` on ``cfg`` (run folder ``tmp_path/run``): exit status and stderr."""
    config = tmp_path / "unit.yaml"
    config.write_text(yaml.safe_dump(cfg))
    capsys.readouterr()
    try:
        status = cli.main(["train", str(config), "--run-dir", str(tmp_path / "run"), *extra])
    except SystemExit as exc:  # a usage error
        status = exc.code
    return status, capsys.readouterr().err


def _last_line(err: str) -> str:
    return err.strip().splitlines()[-1]


# -- config files and overrides (config.py) -------------------------------------------------------
@pytest.mark.parametrize("text, overrides, expected", [
    (None, [], "no config file {path}"),
    ("- 1\n- 2\n", [], "{path}: the config must be a mapping, got list"),
    ("name: \x07\n", [], "{path}: not a YAML config: unacceptable character #x0007: special characters "
                         "are not allowed (character 7)"),
    (b"name: \xff\n", [], "{path}: not a YAML config: not UTF-8 text (byte 7: b'\\xff')"),
    ("name: x\n", ["seed"], "override 'seed' is not key=value"),
    ("name: x\n", ["=3"], "override '=3' is not key=value"),
    ("name: x\n", ["zzz.yyy=1"], "override zzz.yyy=1: no key zzz.yyy in the config"),
    ("name: x\noptim: {lr: 0.1}\n", ["optim.zzz.yyy=1"], "override optim.zzz.yyy=1: no key optim.zzz.yyy "
                                                         "in the config"),
    ("name: x\nseed: 0\n", ["seed.x=1"], "override 'seed.x=1': 'seed' is not a section"),
])
def test_bad_config_file_or_override_is_one_usage_line(text: str | bytes | None, overrides: list[str], expected: str,
                                                       tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "c.yaml"
    if isinstance(text, bytes):
        path.write_bytes(text)
    elif text is not None:
        path.write_text(text)
    capsys.readouterr()
    status = cli.main(["train", str(path), *overrides, "--run-dir", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert status == 2 and TRACE not in err
    assert _last_line(err) == "opencodec train: error: " + expected.format(path=path)
    assert not (tmp_path / "run").exists()


# -- the codec trainer's set-up refusals (config_checks.py, solver.py, step.py, batches.py) --------
@pytest.mark.parametrize("key, value, expected", [
    ("device", "mps", "config field device is mps, but MPS is not available on this machine"),
    ("device", "meta", "config field device: 'meta' is not supported (expected auto, cpu, cuda, cuda:N or mps)"),
    ("valid.bandwidths", [True], "config field valid.bandwidths: expected a list of kbps, got [True]"),
    ("valid.bandwidths", ["abc"], "config field valid.bandwidths: expected a list of kbps, got ['abc']"),
    ("init", "foo", "config field init: expected 'default' or 'data_dependent', got 'foo'"),
    ("optim.fused", "maybe", "optim.fused: expected auto, true or false, got 'maybe' (while setting up the "
                             "run; OPENCODEC_TRACEBACK=1 shows where)"),
    ("data.train", [], "config field data.train is missing (JSONL manifest(s) of training audio)"),
])
def test_codec_trainer_refuses_a_bad_value_in_one_line(key: str, value: object, expected: str, tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    if value == "mps" and torch.backends.mps.is_available():
        pytest.skip("this machine has MPS")
    train_m, valid_m = _corpus(tmp_path / "data")
    cfg = _config(train_m, valid_m, steps=1)
    set_dotted(cfg, key, value)
    status, err = _train(tmp_path, capsys, cfg, "--no-progress")
    assert (status, err.strip().splitlines()) == (1, [f"opencodec train: error: {expected}"])
    assert not (tmp_path / "run").exists()


def test_resolve_device_names_what_this_machine_lacks() -> None:
    assert resolve_device("cpu") == torch.device("cpu")
    with pytest.raises(ConfigError, match=r"^config field device: 'xpu' is not supported "):
        resolve_device("xpu")


def test_a_manifest_path_without_a_list_and_no_validation_manifests_train(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``data.train: a.jsonl`` (one path, not a list) and ``data.valid: []`` (no validation):
    the run trains and writes no validation row."""
    train_m, valid_m = _corpus(tmp_path / "data")
    cfg = _config(train_m, valid_m, steps=1)
    cfg["data"].update(train=str(train_m), valid=[])
    status, err = _train(tmp_path, capsys, cfg, "--no-progress")
    assert status == 0, err
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1] and not any(k.startswith("valid/") for r in rows for k in r)
    assert (tmp_path / "run" / "model.safetensors").is_file()


# -- the codec trainer's TensorBoard audio and images, and its progress bar ------------------------
def test_codec_run_writes_tensorboard_audio_and_spectrograms_and_a_progress_line(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    train_m, valid_m = _corpus(tmp_path / "data")
    cfg = _config(train_m, valid_m, steps=2)
    cfg["log"].update(tensorboard=True, audio=True, valid_every=2)
    status, err = _train(tmp_path, capsys, cfg)  # progress on: stderr is not a terminal, a plain line
    assert status == 0, err
    assert any("2/2" in line for line in err.splitlines())  # the bar's closing line
    events = EventAccumulator(str(tmp_path / "run" / "tensorboard"), size_guidance={"audio": 0, "images": 0})
    events.Reload()
    tags = events.Tags()
    assert {"valid/reference", "valid/decoded"} <= set(tags["audio"])
    assert {"valid/spectrogram_decoded", "valid/spectrogram_reference"} <= set(tags["images"])
    assert "train/mel" in tags["scalars"]
    assert [e.step for e in events.Scalars("train/mel")] == [1, 2]
    # validation at step 0 (the untrained baseline) and at the last step
    assert [e.step for e in events.Audio("valid/reference")] == [0, 2]
    reference = events.Audio("valid/reference")[-1]
    assert reference.sample_rate == 24000
    assert reference.length_frames == int(0.6 * 24000)  # valid.seconds of the held-out clip
    assert [e.step for e in events.Images("valid/spectrogram_decoded")] == [0, 2]
    image = events.Images("valid/spectrogram_decoded")[-1]
    assert image.height == 513  # n_fft 1024: 513 frequency rows


def test_spectrogram_image_is_scaled_to_0_1_low_frequencies_last() -> None:
    t = torch.arange(24000) / 24000
    low = torch.sin(2 * torch.pi * 200 * t)
    image = _spectrogram_image(low)
    assert image.shape == (1, 513, 1 + 24000 // 256)
    assert float(image.max()) == 1.0 and float(image.min()) >= 0.0
    row = int(image[0].mean(dim=1).argmax())
    assert row == 512 - round(200 / (24000 / 1024))  # 200 Hz: bin 9 from the bottom


# -- constructors and loss functions that refuse bad arguments ------------------------------------
def test_losses_discriminator_and_balancer_refuse_bad_arguments() -> None:
    with pytest.raises(ValueError, match=r"^norm must be None or 'slaney', got 'htk'$"):
        mel_filterbank(24000, 1024, 64, norm="htk")
    with pytest.raises(ValueError, match=r"^need 0 <= f_min < f_max <= sample_rate/2, got 100.0, 50.0$"):
        mel_filterbank(24000, 1024, 64, f_min=100.0, f_max=50.0)
    with pytest.raises(ValueError, match=r"^2 alphas for 3 scales$"):
        MultiScaleMelLoss(24000, scales=range(5, 8), alpha=[1.0, 1.0])
    with pytest.raises(ValueError, match=r"^no discriminator outputs$"):
        generator_hinge_loss([])
    with pytest.raises(ValueError, match=r"^expected matching non-empty lists, got 1 and 2$"):
        relative_feature_matching_loss([[torch.ones(1)]], [[torch.ones(1)], [torch.ones(1)]])
    with pytest.raises(ValueError, match=r"^one hop length per n_fft$"):
        MultiScaleSTFTDiscriminator(filters=4, n_ffts=(256, 128), hop_lengths=(64,))
    with pytest.raises(ValueError, match=r"^Balancer needs at least one weight$"):
        Balancer({})


def test_balancer_leaves_out_a_loss_of_weight_zero_and_reports_ema_norms() -> None:
    x = torch.linspace(-1, 1, 12).reshape(2, 1, 6).requires_grad_(True)
    out = x * 2
    losses = {"a": (out ** 2).sum(), "b": out.sum() * 100}
    both = Balancer({"a": 1.0, "b": 0.0}, ema_decay=0.5)
    stats = both.backward(losses, out)
    assert set(stats) == {"grad_norm/a", "ema_norm/a", "share/a", "total_norm"}
    assert both.ema_norms() == {"a": pytest.approx(stats["grad_norm/a"])}
    grad_both = x.grad.clone()
    x.grad = None
    out = x * 2
    Balancer({"a": 1.0}, ema_decay=0.5).backward({"a": (out ** 2).sum()}, out)
    assert torch.equal(grad_both, x.grad)  # b (weight 0) added nothing


def test_broadcast_object_outside_torchrun_is_the_object() -> None:
    obj = {"why": "time"}
    assert distributed.broadcast_object(obj) is obj


def test_data_dependent_init_refreshes_folded_weight_norm() -> None:
    """A model with its weight norm folded (inference) gets the same weights as an unfolded one,
    and its folded copies are the new weights (a stale fold would standardise later layers on
    the old weights)."""
    config = EncodecConfig(name="t", n_filters=4, dimension=16, lstm=1, n_q=4, target_bandwidths=[1.5])
    torch.manual_seed(0)
    plain = EncodecModel(config)
    folded = EncodecModel(config)
    folded.load_state_dict(plain.state_dict())
    folded.fold_weight_norm(True)
    wav = 0.1 * torch.randn(2, 1, 4800, generator=torch.Generator().manual_seed(1))
    data_dependent_init(plain, wav)
    data_dependent_init(folded, wav)
    for (name, a), b in zip(plain.state_dict().items(), folded.state_dict().values()):
        assert torch.allclose(a, b, atol=1e-6), name
    conv = folded.encoder.model[0].conv.conv
    assert torch.equal(conv._folded, torch._weight_norm(conv.weight_v, conv.weight_g, 0))


def test_device_corpus_without_speech_never_mixes_noisy_speech(tmp_path: Path) -> None:
    """No speech row: ``noisy_speech_prob`` changes nothing (the draw is made, then cleared)."""
    rows = []
    for i in range(2):
        path = tmp_path / f"m{i}.wav"
        sf.write(path, (0.1 * np.sin(np.arange(12000) * (0.05 + 0.02 * i))).astype(np.float32), 24000)
        rows.append({"path": str(path), "duration": 0.5, "category": "music"})
    manifest = tmp_path / "music.jsonl"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    never = DeviceCorpus([str(manifest)], 24000, 1, 0.25, torch.device("cpu"), seed=3, noisy_speech_prob=0.0,
                         reverb_prob=0.0, generated_noise_prob=0.0)
    always = DeviceCorpus([str(manifest)], 24000, 1, 0.25, torch.device("cpu"), seed=3, noisy_speech_prob=1.0,
                          reverb_prob=0.0, generated_noise_prob=0.0)
    assert never.weights_speech is None
    assert torch.equal(never.batch(0, 4), always.batch(0, 4))


def test_device_corpus_of_only_short_or_noise_rows_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "n.wav"
    sf.write(path, np.zeros(2400, dtype=np.float32), 24000)
    manifest = tmp_path / "n.jsonl"
    manifest.write_text(json.dumps({"path": str(path), "duration": 0.1, "category": "noise"}) + "\n"
                        + json.dumps({"path": str(path), "duration": 0.1, "category": "speech"}) + "\n")
    with pytest.raises(ConfigError, match=r"^no usable rows in the manifests \(a training row is not noise, "
                                          r"and lasts at least 0.5 s\)$"):
        DeviceCorpus([str(manifest)], 24000, 1, 0.25, torch.device("cpu"), min_seconds=0.5)


# -- the run folder and stop requests (run_folder.py, run_state.py) -------------------------------
def test_run_folder_defaults_to_runs_name() -> None:
    assert run_folder.run_folder_path(None, {}, "unit") == (Path("runs/unit"), "run folder")


def test_source_commit_is_none_without_git(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """An installed package (no .git above it) or no ``git`` program: no commit, no error."""
    monkeypatch.setattr(run_folder, "__file__", str(tmp_path / "a" / "b" / "c" / "run_folder.py"))
    assert run_folder._source_commit() is None

    def no_git(*args: object, **kwargs: object) -> None:
        raise FileNotFoundError("git")

    monkeypatch.setattr(run_folder, "__file__", str(ROOT / "src" / "opencodec" / "train" / "run_folder.py"))
    monkeypatch.setattr(subprocess, "run", no_git)
    assert run_folder._source_commit() is None


def test_saving_passes_an_output_error_and_a_non_os_error_through(tmp_path: Path) -> None:
    with pytest.raises(OutputError, match=r"^already worded$"):
        with run_folder.saving(tmp_path / "x"):
            raise OutputError("already worded")
    with pytest.raises(KeyError):
        with run_folder.saving(tmp_path / "x"):
            raise KeyError("a bug")


def test_a_second_ctrl_c_outside_torchrun_stops_at_once() -> None:
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    with run_folder.StopRequests(None) as stops:
        assert not stops.interrupted
        signal.raise_signal(signal.SIGINT)
        assert stops.interrupted and stops.reason(0) == "interrupted"
        with pytest.raises(KeyboardInterrupt):
            signal.raise_signal(signal.SIGINT)
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_load_run_weights_names_a_missing_or_odd_entry(tmp_path: Path) -> None:
    path = tmp_path / "checkpoint.pt"
    module = torch.nn.Linear(2, 3)
    with pytest.raises(ConfigError, match=rf"^{path} has no 'model' weights; use another --run-dir$"):
        run_state.load_run_weights(path, {"disc": {}}, {"model": module})
    with pytest.raises(ConfigError, match=rf"^{path} does not match the configured model \(no weights of this "
                                          r"model but a list\); use another --run-dir$"):
        run_state.load_run_weights(path, {"model": [1, 2]}, {"model": module})
    state = {"weight": torch.zeros(3, 2), "bias": "not a tensor"}  # keys and shapes fit: torch's own reason
    with pytest.raises(ConfigError, match=rf"^{path} does not match the configured model \(While copying the "
                                          r"parameter named \"bias\", .*\); use another --run-dir$"):
        run_state.load_run_weights(path, {"model": state}, {"model": module})


# -- campaign pack/unpack (campaign.py) ------------------------------------------------------------
def test_campaign_refusals_and_part_replacement(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        campaign.main(["pack", str(tmp_path / "none.pt"), str(tmp_path / "state")])
    assert exc.value.code == 2
    assert _last_line(capsys.readouterr().err) == (f"python -m opencodec.train.campaign: error: "
                                                   f"no checkpoint {tmp_path / 'none.pt'}")
    (tmp_path / "empty").mkdir()
    assert campaign.main(["unpack", str(tmp_path / "empty"), str(tmp_path / "run")]) == 2
    assert capsys.readouterr().err.splitlines() == [f"error: no state.pt.partNN files in {tmp_path / 'empty'}"]
    assert not (tmp_path / "run").exists()
    # a second write replaces the parts of the first (fewer parts: none of the old left over)
    first = campaign.write_parts({"x": torch.arange(1000)}, tmp_path / "parts", part_bytes=1000)
    second = campaign.write_parts({"y": 1}, tmp_path / "parts", part_bytes=10**6)
    assert len(first) > 1 and len(second) == 1
    assert sorted((tmp_path / "parts").iterdir()) == second
    assert campaign.read_parts(tmp_path / "parts") == {"y": 1}


def test_campaign_refuses_a_file_that_is_not_a_codec_checkpoint_or_cut_parts(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """One ``error:`` line and exit status 2, nothing written: a file torch cannot read, a
    checkpoint of something else, parts of which one is missing."""
    garbage, other = tmp_path / "garbage.pt", tmp_path / "other.pt"
    garbage.write_bytes(b"not a checkpoint")
    torch.save({"model": {}, "optim": {}, "step": 3, "codec_hash": "0" * 64}, other)  # a train-lm run's
    capsys.readouterr()
    assert campaign.main(["pack", str(garbage), str(tmp_path / "a")]) == 2
    lines = capsys.readouterr().err.splitlines()
    assert lines == [f"error: cannot read {garbage} (not a checkpoint that torch.load reads safely: "
                     f"Unsupported operand 110)"]
    assert campaign.main(["pack", str(other), str(tmp_path / "b")]) == 2
    assert capsys.readouterr().err.splitlines() == [
        f"error: {other} is not a codec training checkpoint (opencodec train writes its model, discriminator "
        f"and step)"]
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
    parts = campaign.write_parts({"x": torch.arange(1000)}, tmp_path / "parts", part_bytes=1000)
    parts[-1].unlink()
    assert campaign.main(["unpack", str(tmp_path / "parts"), str(tmp_path / "run")]) == 2
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1 and lines[0].startswith(
        f"error: {tmp_path / 'parts'}: its {len(parts) - 1} state.pt.partNN file(s) do not make a saved state "
        f"(a part missing or cut short?): ")
    assert not (tmp_path / "run").exists()


def test_embed_avg_is_rebuilt_only_where_missing() -> None:
    size, embed = torch.tensor([1.0, 3.0]), torch.ones(2, 2)
    kept = torch.full((2, 2), 7.0)
    state = {"a._codebook.cluster_size": size, "a._codebook.embed": embed, "a._codebook.embed_avg": kept,
             "b._codebook.cluster_size": size}  # no embed: nothing to rebuild from
    out = campaign._with_embed_avg(state)
    assert out["a._codebook.embed_avg"] is kept and set(out) == set(state)


def test_campaign_module_runs_as_a_program(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    """``python -m opencodec.train.campaign``: main's status is the exit status."""
    import runpy
    import sys

    monkeypatch.setattr(sys, "argv", ["campaign", "unpack", str(tmp_path), str(tmp_path / "run")])
    monkeypatch.delitem(sys.modules, "opencodec.train.campaign")  # (runpy warns of a module run twice)
    with pytest.raises(SystemExit) as exc:
        runpy.run_module("opencodec.train.campaign", run_name="__main__")
    assert exc.value.code == 2
    assert capsys.readouterr().err.splitlines() == [f"error: no state.pt.partNN files in {tmp_path}"]


def test_lazy_train_lm_and_evaluate_saving_names() -> None:
    import opencodec.train as train_package

    assert train_package.train_lm is lm_solver.train
    assert train_package.evaluate_saving is lm_eval.evaluate_saving
    with pytest.raises(AttributeError, match="has no attribute 'nothing'"):
        train_package.nothing  # noqa: B018


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


@pytest.mark.parametrize("case", ["garbage", "cut_short", "list", "no_discriminator"])
def test_codec_run_folder_with_a_checkpoint_that_is_not_a_run_is_one_line(
        case: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``opencodec train`` on a run folder whose checkpoint.pt is not one of its runs': one line
    naming it and exit status 1 (not torch's traceback), nothing written."""
    checkpoint = tmp_path / "run" / "checkpoint.pt"
    checkpoint.parent.mkdir()
    if case == "garbage":
        checkpoint.write_bytes(b"not a checkpoint")
        reason = "cannot read {path} (not a checkpoint that torch.load reads safely: Unsupported operand 110)"
    elif case == "cut_short":
        torch.save({"model": {"a": torch.zeros(1000)}, "disc": {}, "step": 1}, checkpoint)
        checkpoint.write_bytes(checkpoint.read_bytes()[:2000])
        reason = ("cannot read {path} (PytorchStreamReader failed reading zip archive: failed finding central "
                  "directory)")
    elif case == "list":
        torch.save([1, 2], checkpoint)
        reason = "{path} is not a training checkpoint"
    else:
        torch.save({"model": {}, "step": 1}, checkpoint)
        reason = ("{path} is not a codec training checkpoint (opencodec train writes its model, discriminator "
                  "and step)")
    train_m, valid_m = _corpus(tmp_path / "data")
    status, err = _train(tmp_path, capsys, _config(train_m, valid_m, steps=1), "--no-progress")
    expected = f"opencodec train: error: {reason.format(path=checkpoint)}: use another --run-dir"
    assert (status, err.strip().splitlines()) == (1, [expected])
    assert sorted(p.name for p in checkpoint.parent.iterdir()) in (["checkpoint.pt"], [".lock", "checkpoint.pt"])


def test_checkpoint_model_of_an_unusable_record_is_none() -> None:
    from opencodec.train.config_checks import _checkpoint_model

    assert _checkpoint_model({"model": 3}) is None
    assert _checkpoint_model({"model": {"no_such_field": 1}}) is None
    assert _checkpoint_model({"model": {"n_filters": 8}}).n_filters == 8


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


def test_global_batch_shard_length_is_the_base_over_the_ranks() -> None:
    from opencodec.train.batches import GlobalBatchShard

    assert len(GlobalBatchShard(list(range(10)), rank=1, world_size=2, local_batch=3)) == 5


def test_distributed_stop_requests_answer_every_n_steps_only() -> None:
    """Under torchrun the question is a collective asked every ``every`` steps (in between:
    None); outside an initialised process group the broadcast is the local answer."""
    stops = run_folder.StopRequests(None, every=3, distributed=True)
    assert [stops.reason(step) for step in (1, 2, 3)] == [None, None, None]
    stops.signalled = "terminated"
    assert [stops.reason(step) for step in (4, 5, 6)] == [None, None, "terminated"]
