"""Paths of ``opencodec.train`` that no other test ran (the uncovered-lines audit): config and
override refusals, device names this machine lacks, the refusals of the loss, balancer and
discriminator constructors, the campaign pack/unpack errors, checkpoint files that are not a
run's, the codec trainer's TensorBoard and progress-bar outputs. The entropy-model trainer's are
in test_lm_train_uncovered.py. Each test checks the value or the exact message."""

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
from opencodec.errors import ConfigError, OutputError
from opencodec.train import campaign, distributed, lm_eval, lm_solver, run_folder, run_state
from opencodec.train.balancer import Balancer
from opencodec.train.config_checks import resolve_device
from opencodec.train.device_data import DeviceCorpus
from opencodec.train.discriminator import MultiScaleSTFTDiscriminator
from opencodec.train.init import data_dependent_init
from opencodec.train.losses import (MultiScaleMelLoss, generator_hinge_loss, mel_filterbank,
                                    relative_feature_matching_loss)
from opencodec.train.validation import _spectrogram_image
from test_train_solver import _config, _corpus
from train_helpers import set_dotted

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
    assert sorted((tmp_path / "parts").iterdir()) == [*second, tmp_path / "parts" / "state.pt.sha256"]
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
