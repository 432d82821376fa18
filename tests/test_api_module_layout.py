"""The package's layout seen from outside: dotted and failing submodule attributes, one copy of the
entropy-model-as-codec advice (and its wording), and the program name defined once."""

from __future__ import annotations

import importlib
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import opencodec
from opencodec.errors import (
    advice_for_entropy_model,
    codec_advice,
    ConfigError,
    EntropyModelAsCodecError,
    ModelLoadError,
)


SRC = Path(opencodec.__file__).resolve().parent


# -- B. lazy attributes of the package --------------------------------------------------------------
def test_a_dotted_name_is_no_attribute() -> None:
    """Before: ModuleNotFoundError: No module named 'opencodec.x'."""
    assert not hasattr(opencodec, "x.y")
    assert not hasattr(opencodec, "errors.nope")
    with pytest.raises(AttributeError, match=r"^module 'opencodec' has no attribute 'x\.y'$"):
        getattr(opencodec, "x.y")
    assert hasattr(opencodec, "errors") and opencodec.errors.__name__ == "opencodec.errors"
    assert not hasattr(opencodec, "no_such_module")


def test_a_submodule_that_fails_to_import_is_an_attribute_error(tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "broken_day17.py").write_text("raise ImportError('needs a package that is not installed')\n")
    monkeypatch.setattr(opencodec, "__path__", [*opencodec.__path__, str(tmp_path)])
    assert not hasattr(opencodec, "broken_day17")
    with pytest.raises(AttributeError, match="has no attribute 'broken_day17'") as caught:
        getattr(opencodec, "broken_day17")
    assert isinstance(caught.value.__cause__, ImportError)
    assert str(caught.value.__cause__) == "needs a package that is not installed"
    assert "opencodec.broken_day17" not in sys.modules and "broken_day17" not in vars(opencodec)


# -- D. one helper for an entropy model given as a codec ---------------------------------------------
def _entropy_model() -> EntropyModelAsCodecError:
    return EntropyModelAsCodecError("lm.safetensors: this is an entropy model, not a codec",
                                    "use --lm-model for an entropy model", joiner=": ")


def test_advice_for_entropy_model() -> None:
    advice = codec_advice("info")
    assert advice == "opencodec info takes a codec: pass a codec's name or weights file to -m/--model"
    with pytest.raises(EntropyModelAsCodecError) as caught:
        with advice_for_entropy_model(advice):
            raise _entropy_model()
    assert str(caught.value) == f"lm.safetensors: this is an entropy model, not a codec: {advice}"
    assert caught.value.__suppress_context__ and caught.value.advice == advice
    other = ModelLoadError("no such model")
    with pytest.raises(ModelLoadError) as caught_other:  # any other error passes as it is
        with advice_for_entropy_model(advice):
            raise other
    assert caught_other.value is other
    with pytest.raises(ConfigError) as config_error:  # error=: another type, from the advised error
        with advice_for_entropy_model("init_from takes a codec", lambda e: ConfigError(f"field: {e}")):
            raise _entropy_model()
    assert str(config_error.value) == ("field: lm.safetensors: this is an entropy model, not a codec: "
                                       "init_from takes a codec")


def test_one_copy_of_the_advice_code() -> None:
    """Before: seven ``except EntropyModelAsCodecError ... with_advice`` copies (cli/common,
    cli/tokens, train/config_checks, train/lm_eval, eval/mushra/build, eval/lineup,
    tokens/dataset), and library modules could not use the CLI's."""
    texts = {str(p.relative_to(SRC)): p.read_text("utf-8") for p in SRC.rglob("*.py") if p.name != "errors.py"}
    assert sorted(name for name, text in texts.items() if ".with_advice(" in text) == []
    # the loader, which puts the file's name before the problem and keeps the advice, and no other
    assert sorted(name for name, text in texts.items()
                  if "except EntropyModelAsCodecError as" in text) == ["weights_layout.py"]
    assert "opencodec.errors" in sys.modules
    code = "import opencodec.errors, sys; print('torch' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "PYTHONPATH": str(SRC.parent)})
    assert done.stdout == "False\n", done.stderr


# -- E. one PROG -------------------------------------------------------------------------------------
def test_prog_is_defined_once() -> None:
    """Before: ``PROG = "opencodec"`` in both cli/main.py and cli/common.py."""
    defining = sorted(p.name for p in (SRC / "cli").glob("*.py")
                      if re.search(r"^PROG\s*=", p.read_text("utf-8"), re.MULTILINE))
    assert defining == ["wrappers.py"]
    from opencodec.cli import common, wrappers

    main = importlib.import_module("opencodec.cli.main")  # (opencodec.cli.main is also its function)
    assert common.PROG == main.PROG == wrappers.PROG == "opencodec"
