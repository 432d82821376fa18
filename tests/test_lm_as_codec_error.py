"""An entropy model (weights or a train-lm training checkpoint) given where a codec is
expected raises :class:`EntropyModelAsCodecError`, which keeps its type through the loader's
re-wrapping, so that ``opencodec eval`` gives its own advice (its ``--models``) instead of the
loader's (``--lm-model``, an option eval does not have); the other commands' messages stay."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from opencodec.errors import EntropyModelAsCodecError, ModelLoadError
from opencodec.eval.lineup import EVAL_LM_ADVICE, neural_systems
from opencodec.eval.report import main as eval_main
from opencodec.pretrained import load_model
from opencodec.weights_layout import model_from_state_dict, read_weights

REPO = Path(__file__).resolve().parents[1]
LM_FILE = REPO / "src" / "opencodec" / "weights" / "opencodec_lm_24khz.safetensors"
LOADER_LM_ADVICE = "use --lm-model (Python: load_lm_model(PATH, codec=...))"


@pytest.fixture()
def lm_checkpoint(tmp_path: Path) -> Path:
    """A train-lm run's ``checkpoint.pt`` (model, optimiser, step and the codec's hash)."""
    checkpoint = tmp_path / "lmrun" / "checkpoint.pt"
    checkpoint.parent.mkdir()
    torch.save({"model": {"w": torch.zeros(1)}, "optim": {}, "step": 7, "codec_hash": "0" * 64}, checkpoint)
    return checkpoint


def _checkpoint_problem(checkpoint: Path) -> str:
    return (f"{checkpoint} is a train-lm training checkpoint (model, optimiser and step 7), not codec "
            f"weights: it holds an entropy model")


# -- the loader: a typed error, the same messages ---------------------------------------------------
def test_entropy_model_file_as_codec_is_typed_with_its_message_unchanged() -> None:
    with pytest.raises(EntropyModelAsCodecError) as caught:
        load_model(LM_FILE)
    assert str(caught.value) == f"{LM_FILE}: this is an entropy model, not a codec: {LOADER_LM_ADVICE}"
    assert caught.value.problem == f"{LM_FILE}: this is an entropy model, not a codec"
    assert caught.value.advice == LOADER_LM_ADVICE
    assert isinstance(caught.value, ModelLoadError)  # callers catching the base class still do


def test_state_dict_rewrap_keeps_the_type_and_prefixes_the_source() -> None:
    state, _ = read_weights(LM_FILE)
    with pytest.raises(EntropyModelAsCodecError) as caught:
        model_from_state_dict(state, source="my source")
    assert str(caught.value) == f"my source: this is an entropy model, not a codec: {LOADER_LM_ADVICE}"


def test_train_lm_checkpoint_as_codec_is_typed_with_its_message_unchanged(lm_checkpoint: Path) -> None:
    with pytest.raises(EntropyModelAsCodecError) as caught:
        load_model(lm_checkpoint)
    export = lm_checkpoint.with_name("lm.safetensors")
    assert str(caught.value) == (f"{_checkpoint_problem(lm_checkpoint)}; pass --lm-model {export} "
                                 f"(load_lm_model in Python), which the run exports next to it at "
                                 f"every checkpoint")


def test_a_codec_training_checkpoint_is_not_an_entropy_model(tmp_path: Path) -> None:
    checkpoint = tmp_path / "checkpoint.pt"
    torch.save({"model": {"w": torch.zeros(1)}, "optim": {}, "step": 3}, checkpoint)
    with pytest.raises(ModelLoadError, match="is a training checkpoint") as caught:
        load_model(checkpoint)
    assert not isinstance(caught.value, EntropyModelAsCodecError)


def test_error_survives_pickling_with_its_parts() -> None:
    """Errors cross process boundaries (eval and DataLoader workers)."""
    error = EntropyModelAsCodecError("p", "a", joiner=": ").with_source("s")
    again = pickle.loads(pickle.dumps(error))
    assert type(again) is EntropyModelAsCodecError
    assert (str(again), again.problem, again.advice, again.joiner) == ("s: p: a", "s: p", "a", ": ")
    assert str(again.with_advice("b")) == "s: p: b"


# -- opencodec eval: its own advice ------------------------------------------------------------------
def test_eval_gives_its_own_advice_for_an_entropy_model_file() -> None:
    with pytest.raises(EntropyModelAsCodecError) as caught:
        neural_systems([str(LM_FILE)], None)
    assert str(caught.value) == f"{LM_FILE}: this is an entropy model, not a codec: {EVAL_LM_ADVICE}"


def test_eval_gives_its_own_advice_for_a_train_lm_checkpoint(lm_checkpoint: Path) -> None:
    """Before the typed error, eval rewrote only the state-dict case's advice by string
    replacement, and a train-lm checkpoint was told to use ``--lm-model``."""
    with pytest.raises(EntropyModelAsCodecError) as caught:
        neural_systems([str(lm_checkpoint)], None)
    assert str(caught.value) == f"{_checkpoint_problem(lm_checkpoint)}; {EVAL_LM_ADVICE}"
    assert "--lm-model" not in str(caught.value)


def test_eval_command_reports_a_train_lm_checkpoint_in_one_line(lm_checkpoint: Path, tmp_path: Path,
                                                                capsys: pytest.CaptureFixture) -> None:
    eval_set = tmp_path / "set"
    eval_set.mkdir()
    wav = 0.1 * np.random.default_rng(0).standard_normal(2400).astype(np.float32)
    sf.write(eval_set / "a.wav", wav, 24000)
    (eval_set / "eval_speech.jsonl").write_text(json.dumps({"path": "a.wav"}) + "\n")
    out = tmp_path / "out"
    code = eval_main(["--models", str(lm_checkpoint), "--set", str(eval_set), "--out", str(out), "-q"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1
    assert err == [f"opencodec eval: error: {_checkpoint_problem(lm_checkpoint)}; {EVAL_LM_ADVICE}"]
    assert not out.exists()
