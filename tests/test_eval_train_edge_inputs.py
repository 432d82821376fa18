"""Edge inputs of ``opencodec eval``, the MUSHRA tools, the training configuration and run
folders, and the data tools: clips shorter than a metric's window, a near-miss bandwidth,
``mushra build -f`` onto a folder that is not a test, infinite or mistyped config values,
a ``run_dir`` that is not a path, a training manifest listing a missing file."""

from __future__ import annotations

import json
import logging
import warnings
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from opencodec import cli
from opencodec.data.dataset import AudioDataset
from opencodec.errors import AudioIOError, ConfigError
from opencodec.eval import metrics as M
from opencodec.train.config_checks import check_codec_config, check_number


@pytest.fixture(autouse=True)
def _always_offline(offline: Path) -> Path:
    """No download in any test here (conftest's ``offline``): the bundled codec is found locally."""
    return offline


# -- STOI on clips too short for its frames ----------------------------------------------------------------
@pytest.mark.parametrize("samples", [1, 100, 600])
def test_stoi_of_a_clip_under_one_frame_is_clip_too_short_not_an_axis_error(samples: int) -> None:
    """pystoi fails with ``AxisError: axis 1 is out of bounds`` on a clip under one of its
    25.6 ms frames (at most 256 samples at 10 kHz); the metric says the clip is too short."""
    x = np.random.default_rng(0).standard_normal(samples).astype(np.float32) * 0.1
    with pytest.raises(M.ClipTooShortError, match=r"STOI needs about 0\.4 s.*channel 0"):
        M.stoi(x, x, 24000)


@pytest.mark.parametrize("rate", [8000, 16000, 24000, 44100, 48000, 11025])
def test_stoi_length_limit_is_where_pystoi_gets_its_30_frames(rate: int) -> None:
    """The length check refuses exactly the clips pystoi cannot score (0.4096 s and under at
    each rate) and leaves one sample more to pystoi, which scores noise there."""
    rng = np.random.default_rng(1)
    limit = int(np.floor(4096 * rate / 10000))
    short = rng.standard_normal(limit).astype(np.float64) * 0.1
    with pytest.raises(M.ClipTooShortError):
        M.stoi(short, short, rate)
    longer = rng.standard_normal(limit + 1) * 0.1
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "Not enough STFT frames" from pystoi
        assert M.stoi(longer, longer, rate) > 0.99


# -- training configs: infinite numbers, bandwidths that are not numbers -------------------------------------
REPO = Path(__file__).resolve().parents[1]


def _train(capsys: pytest.CaptureFixture[str], command: str, config: str, run: Path,
           *overrides: str) -> tuple[int, str]:
    """``opencodec -q COMMAND configs/CONFIG --run-dir RUN --max-steps 1 OVERRIDES``: (status, stderr)."""
    code = cli.main(["-q", command, str(REPO / "configs" / config), "--run-dir", str(run),
                     "--max-steps", "1", *overrides])
    return code, capsys.readouterr().err


@pytest.mark.parametrize("override", ["optim.lr=.inf", "optim.lr_disc=.inf", "losses.l1=.inf",
                                      "data.segment_seconds=.inf", "valid.seconds=.inf"])
def test_train_refuses_an_infinite_number_before_writing(
        capsys: pytest.CaptureFixture[str], tmp_path: Path, override: str) -> None:
    """``optim.lr=.inf`` passed the "> 0" check and trained, every weight NaN (``train/lr``
    Infinity, validation NaN) and exported; each such value is one line naming the field."""
    run = tmp_path / "run"
    code, err = _train(capsys, "train", "tiny_24khz.yaml", run, override)
    field = override.split("=")[0]
    assert code == 1
    assert err.strip() == f"opencodec train: error: config field {field}: expected a finite number, got inf"
    assert not run.exists()


@pytest.mark.parametrize("override", ["optim.lr=.inf", "optim.weight_decay=.inf"])
def test_train_lm_refuses_an_infinite_rate_or_decay_before_writing(
        capsys: pytest.CaptureFixture[str], tmp_path: Path, override: str) -> None:
    """``train-lm`` with ``optim.lr=.inf`` trained to NaN bits per code and exported
    ``lm.safetensors``; ``optim.weight_decay=.inf`` likewise makes AdamW's weights NaN."""
    run = tmp_path / "run"
    code, err = _train(capsys, "train-lm", "lm_tiny.yaml", run, override)
    field = override.split("=")[0]
    assert code == 1
    assert err.strip() == f"opencodec train-lm: error: config field {field}: expected a finite number, got inf"
    assert not run.exists()


@pytest.mark.parametrize(("value", "shown"), [("[abc]", "['abc']"), ("[{a: 1}]", "[{'a': 1}]"),
                                              ("[true]", "[True]")])
def test_train_lm_bandwidths_that_are_not_numbers_name_the_field(
        capsys: pytest.CaptureFixture[str], tmp_path: Path, value: str, shown: str) -> None:
    """``bandwidths=[{a: 1}]`` was a TypeError traceback, ``bandwidths=[abc]`` a line without
    the field ("could not convert string to float"), ``[true]`` read as 1 kbps."""
    run = tmp_path / "run"
    code, err = _train(capsys, "train-lm", "lm_tiny.yaml", run, f"bandwidths={value}")
    assert code == 1
    assert err.strip() == f"opencodec train-lm: error: config field bandwidths: expected a list of kbps, got {shown}"
    assert not run.exists()


def test_check_number_still_takes_finite_numbers_and_strings() -> None:
    """The finite-number check leaves a finite value (or one YAML read as a string) as it was."""
    cfg = {"optim": {"lr": "5e-4", "lr_disc": 1e30}}
    check_number(cfg, "optim.lr", 0.0, open_low=True)
    check_number(cfg, "optim.lr_disc", 0.0, open_low=True)
    assert cfg["optim"] == {"lr": 5e-4, "lr_disc": 1e30}
    with pytest.raises(ConfigError, match="config field optim.lr must be > 0, got 'nan'"):
        check_number({"optim": {"lr": "nan"}}, "optim.lr", 0.0, open_low=True)


# -- training manifests listing files that are missing -------------------------------------------------------
def test_training_data_names_a_missing_file_as_missing(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A training manifest row whose file is gone was warned about, and the run stopped, with
    soundfile's "Error opening '...': System error."; the reason is now "no such file"."""
    manifest = tmp_path / "train.jsonl"
    manifest.write_text(json.dumps({"path": "gone.flac", "duration": 2.0, "category": "speech"}) + "\n")
    ds = AudioDataset(manifest, segment_seconds=0.5, augment=False)
    with caplog.at_level(logging.WARNING, logger="opencodec.data.dataset"), \
            pytest.raises(AudioIOError) as info:
        ds.sample(0)
    gone = tmp_path / "gone.flac"
    assert str(info.value) == (f"no readable audio file left in the manifests: 1 unreadable, the last "
                               f"{gone} (no such file)")
    assert [r.getMessage() for r in caplog.records] == [f"skipping unreadable file {gone}: no such file"]


# -- mushra build --force: only an earlier test is replaced --------------------------------------------------
def _mushra_set(folder: Path) -> Path:
    """An eval set of one speech_clean item (0.5 s of noise at 24 kHz) in ``folder``."""
    folder.mkdir(parents=True)
    noise = np.random.default_rng(3).standard_normal(12000).astype(np.float32) * 0.1
    sf.write(folder / "a.wav", noise, 24000)
    (folder / "eval_speech_clean.jsonl").write_text(json.dumps({"path": "a.wav"}) + "\n")
    return folder


def _build(capsys: pytest.CaptureFixture[str], eval_set: Path, out: Path) -> tuple[int, str]:
    """``opencodec mushra build --set EVAL_SET --out OUT -n 1 -f -q`` (no codec): (status, stderr)."""
    code = cli.main(["mushra", "build", "--set", str(eval_set), "--out", str(out), "-n", "1",
                     "--max-seconds", "0.25", "-f", "-q"])
    return code, capsys.readouterr().err


@pytest.mark.parametrize("where", ["same", "parent"])
def test_mushra_build_force_never_deletes_the_eval_set(
        capsys: pytest.CaptureFixture[str], tmp_path: Path, where: str) -> None:
    """``mushra build --set X --out X -f`` (or an --out above X) replaced the folder with the
    test: the eval set's manifests and audio were deleted."""
    eval_set = _mushra_set(tmp_path / "set" if where == "same" else tmp_path / "top" / "set")
    out = eval_set if where == "same" else tmp_path / "top"
    before = sorted(p.name for p in eval_set.iterdir())
    code, err = _build(capsys, eval_set, out)
    assert code == 1
    assert err.strip() == (f"opencodec mushra build: error: output folder {out} holds the eval set {eval_set}; "
                           "refusing to replace it even with --force: choose an --out outside the set")
    assert sorted(p.name for p in eval_set.iterdir()) == before


def test_mushra_build_force_replaces_a_test_but_not_another_folder(
        capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """``-f`` is documented as replacing an existing *test* folder; any non-empty folder
    (a home folder, a project) was deleted and replaced by the test."""
    eval_set = _mushra_set(tmp_path / "set")
    other = tmp_path / "notes"
    other.mkdir()
    (other / "keep.txt").write_text("mine")
    code, err = _build(capsys, eval_set, other)
    assert code == 1
    assert err.strip() == (f"opencodec mushra build: error: output folder {other} is not a MUSHRA test folder "
                           "(no test.json); refusing to replace it even with --force: choose a new or empty folder")
    assert [p.name for p in other.iterdir()] == ["keep.txt"]
    test = tmp_path / "test"
    assert _build(capsys, eval_set, test)[0] == 0
    first = json.loads((test / "test.json").read_text())["test_id"]
    assert _build(capsys, eval_set, test)[0] == 0  # an earlier test is replaced
    assert json.loads((test / "test.json").read_text())["test_id"] != first


# -- eval: a requested bandwidth a hair off a supported one -------------------------------------------------
def test_eval_names_a_near_miss_bandwidth_with_its_digits(capsys: pytest.CaptureFixture[str],
                                                          tmp_path: Path) -> None:
    """``--bandwidths 6.0000001`` read "does not support 6 kbps (supports 1.5, 3, 6, 12)":
    the skipped value is shown with every digit, as ``compress`` and ``mushra build`` show it."""
    eval_set = _mushra_set(tmp_path / "set")
    out = tmp_path / "out"
    code = cli.main(["eval", "--set", str(eval_set), "--models", "opencodec_24khz", "--bandwidths",
                     "6.0000001", "--metrics", "si_snr", "--out", str(out), "-q"])
    err = capsys.readouterr().err
    assert code == 1
    assert err.splitlines() == [
        "opencodec eval: warning: opencodec_24khz_v5 does not support 6.0000001 kbps (supports 1.5, 3, 6, 12); "
        "skipped",
        "opencodec eval: error: nothing to evaluate: no model supports the requested bandwidths 6.0000001; "
        "opencodec_24khz_v5 supports 1.5, 3, 6, 12"]
    assert not out.exists()


# -- a config whose run_dir is not a path ---------------------------------------------------------------------
@pytest.mark.parametrize(("command", "config"), [("train", "tiny_24khz.yaml"), ("train-lm", "lm_tiny.yaml")])
@pytest.mark.parametrize(("value", "said"), [("5", '5 (quote a number: run_dir: "5")'), ("[a]", "['a']")])
def test_a_run_dir_that_is_not_a_path_is_one_line(capsys: pytest.CaptureFixture[str], tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch, command: str, config: str,
                                                  value: str, said: str) -> None:
    """``run_dir: 5`` in a config (or ``run_dir=[a]``) was a TypeError traceback from
    ``os.fspath`` in both trainers."""
    monkeypatch.chdir(tmp_path)
    manifests = tmp_path / "data" / "tiny_24k" / "manifests"  # where the tiny configs read
    manifests.mkdir(parents=True)
    sf.write(manifests / "a.wav", np.random.default_rng(4).standard_normal(36000).astype(np.float32) * 0.1, 24000)
    for name in ("train", "valid"):
        (manifests / f"{name}.jsonl").write_text(json.dumps({"path": "a.wav", "duration": 1.5,
                                                             "category": "speech"}) + "\n")
    code = cli.main(["-q", command, str(REPO / "configs" / config), "--max-steps", "1", f"run_dir={value}"])
    assert code == 1
    assert capsys.readouterr().err.strip() == (f"opencodec {command}: error: config field run_dir: "
                                               f"expected a folder path, got {said}")
    assert [p.name for p in tmp_path.iterdir()] == ["data"]


# -- data.augment values that failed only at a random training step -----------------------------------------
@pytest.mark.parametrize(("override", "said"), [
    ("data.augment.rt60=5", "data.augment.rt60: expected [low, high], two numbers with 0 < low <= high, got 5"),
    ("data.augment.rt60=[0, 1]", "data.augment.rt60: expected [low, high], two numbers with 0 < low <= high, "
                                 "got [0, 1]"),
    ("data.augment.snr_db=abc", "data.augment.snr_db: expected [low, high], two numbers with low <= high, got 'abc'"),
    ("data.augment.gain_db=[1]", "data.augment.gain_db: expected [low, high], two numbers with low <= high, got [1]"),
    ("data.augment.mix_probs=[0, 0, 0]", "data.augment.mix_probs: expected three weights >= 0 of mixtures of 1, 2 "
                                         "and 3 sources, not all 0, got [0, 0, 0]"),
    ("data.augment.reverb_prob=2", "data.augment.reverb_prob must be in [0, 1], got 2"),
])
def test_train_checks_the_augmentation_numbers_before_writing(
        capsys: pytest.CaptureFixture[str], tmp_path: Path, override: str, said: str) -> None:
    """``data.augment.rt60=5`` trained until a reverberated example was drawn, then stopped with a
    TypeError traceback (``uniform() argument after * must be an iterable``); ``snr_db=abc`` with
    "could not convert string to float: 'a'" and ``mix_probs=[0, 0, 0]`` with "Probabilities
    contain NaN", each after the run folder was written; ``gain_db=[1]`` drew uniform(1, 1.0)."""
    run = tmp_path / "run"
    code, err = _train(capsys, "train", "tiny_24khz.yaml", run, override)
    assert code == 1
    assert err.strip() == f"opencodec train: error: config field {said}"
    assert not run.exists()


def test_augmentation_numbers_yaml_read_as_strings_are_taken_as_numbers() -> None:
    """``rt60: [3e-1, 1.3]`` (YAML reads ``3e-1`` as a string) is the range [0.3, 1.3]; the
    shipped defaults pass."""
    cfg = {"data": {"augment": {"rt60": ["3e-1", 1.3], "gain_db": [-10, 6], "snr_db": [0, 20],
                                "mix_probs": [0.64, 0.24, 0.12], "reverb_prob": 0.2, "min_seconds": 0}}}
    check_codec_config(cfg)
    assert cfg["data"]["augment"]["rt60"] == [0.3, 1.3]
    assert cfg["data"]["augment"]["gain_db"] == [-10, 6]
