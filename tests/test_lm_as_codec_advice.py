"""An entropy model (its weights, its name, or a train-lm training checkpoint) given where a
command expects a codec is refused in one line whose advice names that command's own option
for a codec: ``-m/--model`` (stream-encode, stream-decode, serve, info), ``MODEL``
(export-onnx), ``--models`` (mushra build). Only compress and decompress, which have
``--lm-model``, keep the loader's advice to use it. An entropy model's name is recognised as
one (not "no model named ...")."""

from __future__ import annotations

import io
import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from opencodec import cli
from opencodec.errors import EntropyModelAsCodecError, ModelLoadError
from opencodec.eval.lineup import EVAL_LM_ADVICE, neural_systems
from opencodec.pretrained import known_lm_models, load_model
from test_lm_as_codec_error import (LM_FILE, LOADER_LM_ADVICE, _checkpoint_problem,  # tests/ is on sys.path
                                    lm_checkpoint)

LM_NAME = "opencodec_lm_24khz"
_ = lm_checkpoint  # a fixture (imported so that pytest finds it here)


def _advice(command: str, where: str = "to -m/--model") -> str:
    return f"opencodec {command} takes a codec: pass a codec's name or weights file {where}"


MUSHRA_ADVICE = "opencodec mushra build tests codecs only; pass a codec's name or weights to --models"
#: command -> (argv with MODEL for the entropy model and TMP for the test's folder, its advice;
#: None: the loader's, which names --lm-model), the output that must not be written.
COMMANDS: dict[str, tuple[list[str], str | None, str | None]] = {
    "stream-encode": (["stream-encode", "-m", "MODEL"], _advice("stream-encode"), None),
    "stream-decode": (["stream-decode", "-m", "MODEL"], _advice("stream-decode"), None),
    "serve": (["serve", "-m", "MODEL", "--port", "0"], _advice("serve"), None),
    "export-onnx": (["export-onnx", "MODEL", "TMP/onnx"], _advice("export-onnx", "as MODEL"), "onnx"),
    "info": (["info", "-m", "MODEL", "TMP/x.ecdc"], _advice("info"), None),
    "mushra build": (["mushra", "build", "--set", "TMP/set", "--out", "TMP/mout", "--models", "MODEL"],
                     MUSHRA_ADVICE, "mout"),
    "compress": (["compress", "TMP/set/a.wav", "TMP/out.ecdc", "-m", "MODEL"], None, "out.ecdc"),
    "decompress": (["decompress", "TMP/x.ecdc", "TMP/out.wav", "-m", "MODEL"], None, "out.wav"),
}


def _inputs(tmp: Path) -> None:
    """A 0.1 s WAV in an evaluation set (``set/eval_speech.jsonl``) and a stand-in .ecdc file
    (the model is refused before any input is read)."""
    (tmp / "set").mkdir()
    wav = 0.1 * np.random.default_rng(0).standard_normal(2400).astype(np.float32)
    sf.write(tmp / "set" / "a.wav", wav, 24000)
    (tmp / "set" / "eval_speech.jsonl").write_text(json.dumps({"path": "a.wav"}) + "\n")
    (tmp / "x.ecdc").write_bytes(b"ECDC" + bytes(60))


def _expected(kind: str, checkpoint: Path, advice: str | None) -> str:
    """The message for an entropy model given as ``kind`` (file, name, checkpoint) with
    ``advice`` (None: the loader's own)."""
    if kind == "file":
        return f"{LM_FILE}: this is an entropy model, not a codec: {advice or LOADER_LM_ADVICE}"
    if kind == "name":
        loader = f"use --lm-model {LM_NAME} (Python: load_lm_model({LM_NAME!r}, codec=...))"
        return f"{LM_NAME} is an entropy model, not a codec: {advice or loader}"
    loader = (f"pass --lm-model {checkpoint.with_name('lm.safetensors')} (load_lm_model in Python), "
              f"which the run exports next to it at every checkpoint")
    return f"{_checkpoint_problem(checkpoint)}; {advice or loader}"


@pytest.mark.parametrize("kind", ["file", "name", "checkpoint"])
@pytest.mark.parametrize("command", list(COMMANDS))
def test_each_command_advises_its_own_option(command: str, kind: str, lm_checkpoint: Path, tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    _inputs(tmp_path)
    model = {"file": str(LM_FILE), "name": LM_NAME, "checkpoint": str(lm_checkpoint)}[kind]
    argv_in, advice, output = COMMANDS[command]
    argv = [model if a == "MODEL" else a.replace("TMP", str(tmp_path)) for a in argv_in]
    stdout = io.BytesIO()  # the stream commands read stdin and write stdout (no terminal)
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"")))
    monkeypatch.setattr(sys, "stdout", io.TextIOWrapper(stdout))
    monkeypatch.chdir(tmp_path)  # no file named like the entropy model here
    assert cli.main([*argv, "-q"]) == 1
    err = capsys.readouterr().err.splitlines()
    prefix = "opencodec mushra build: error: " if command == "mushra build" else "opencodec: error: "
    assert err == [prefix + _expected(kind, lm_checkpoint, advice)]
    if advice is not None:  # a command without --lm-model is not told to use it
        assert "--lm-model" not in err[0] and "load_lm_model" not in err[0]
    else:
        assert "--lm-model" in err[0]
    assert stdout.getvalue() == b""
    assert output is None or not (tmp_path / output).exists()
    assert sorted(os.listdir(tmp_path)) == ["lmrun", "set", "x.ecdc"]  # nothing written (nor a temporary)


# -- the loader: an entropy model's name -------------------------------------------------------------
@pytest.mark.parametrize("name", known_lm_models())
def test_an_entropy_model_name_is_refused_as_one(name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Before: ``no model named 'opencodec_lm_24khz' and no such file; known names: ...``."""
    monkeypatch.chdir(tmp_path)
    with pytest.raises(EntropyModelAsCodecError) as caught:
        load_model(name)
    assert str(caught.value) == (f"{name} is an entropy model, not a codec: use --lm-model {name} "
                                 f"(Python: load_lm_model({name!r}, codec=...))")


def test_a_file_named_like_an_entropy_model_is_still_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A path is a path: a file of that name in the working folder is read (as before)."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / LM_NAME).write_bytes(b"not weights")
    with pytest.raises(ModelLoadError, match="unknown weights format ''") as caught:
        load_model(LM_NAME)
    assert not isinstance(caught.value, EntropyModelAsCodecError)


def test_an_unknown_name_is_still_unknown(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ModelLoadError, match="no model named 'opencodec_lm_96khz' and no such file") as caught:
        load_model("opencodec_lm_96khz")
    assert not isinstance(caught.value, EntropyModelAsCodecError)


def test_eval_gives_its_own_advice_for_an_entropy_model_name() -> None:
    with pytest.raises(EntropyModelAsCodecError) as caught:
        neural_systems([LM_NAME], None)
    assert str(caught.value) == f"{LM_NAME} is an entropy model, not a codec: {EVAL_LM_ADVICE}"
