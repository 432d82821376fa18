"""Ctrl-C while the ``opencodec`` command is still importing torch (its first ~2 s) ends as
Ctrl-C later does: ``opencodec: error: interrupted``, exit status 130, no traceback. For that
``import opencodec`` and ``from opencodec.cli import main`` must not import torch (the package
loads its public names on first use), and main imports the command modules under its guard.
The public names stay the very objects they were, ``opencodec.compress`` the function too."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

import opencodec

# the source tree this test imports opencodec from (a scratch copy too), for the child processes
ENV = {**os.environ, "PYTHONPATH": str(Path(opencodec.__file__).parents[1]), "OMP_NUM_THREADS": "1"}

# Stands for torch's slow import, deterministically: the child's first import of torch says so
# on stdout, then waits there for SIGINT (whose KeyboardInterrupt is raised inside that import).
BLOCK_TORCH = """
import signal, sys, time
signal.signal(signal.SIGINT, signal.default_int_handler)  # (a background shell may ignore SIGINT)

class BlockTorch:
    def find_spec(self, name, path=None, target=None):
        if name == "torch" or name.startswith("torch."):
            print("importing torch", flush=True)
            time.sleep(120)
        return None

sys.meta_path.insert(0, BlockTorch())
sys.argv = ["opencodec", "decompress", "missing.ecdc"]
"""

ENTRIES = {  # how the command starts: the console script, python -m opencodec, python -m opencodec.cli
    "console script": "from opencodec.cli import main\nsys.exit(main())",
    "-m opencodec": "import runpy\nrunpy.run_module('opencodec', run_name='__main__', alter_sys=True)",
    "-m opencodec.cli": "import runpy\nrunpy.run_module('opencodec.cli', run_name='__main__', alter_sys=True)",
}


def _run(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=ENV)


@pytest.mark.parametrize("entry", sorted(ENTRIES))
def test_ctrl_c_while_torch_imports_is_one_line_and_status_130(entry: str) -> None:
    proc = subprocess.Popen([sys.executable, "-c", BLOCK_TORCH + ENTRIES[entry]], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=ENV)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()  # "" if the child ended without importing torch
        assert line == "importing torch\n", proc.communicate(timeout=60)
        os.kill(proc.pid, signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert (proc.returncode, err) == (130, "opencodec: error: interrupted\n")


def test_importing_the_package_and_the_command_does_not_import_torch() -> None:
    done = _run("import sys, opencodec, opencodec.cli\n"
                "from opencodec.cli import build_parser, main\n"
                "from opencodec import OpenCodecError, __version__\n"
                "print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'numpy', 'tqdm')))\n"
                "print(__version__, set(opencodec.__all__) <= set(dir(opencodec)))\n"
                "print(opencodec.bandwidth.__name__, hasattr(opencodec, 'no_such_module'))")  # submodules: on use
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["[]", f"{opencodec.__version__} True", "opencodec.bandwidth False"]


def test_public_names_are_the_defining_modules_objects() -> None:
    import importlib

    for name, module in opencodec._LAZY.items():
        assert getattr(opencodec, name) is getattr(importlib.import_module(f"opencodec.{module}"), name), name
    errors = {"AudioIOError", "BitstreamError", "InvalidAudioError", "InvalidCodesError", "ModelLoadError",
              "OpenCodecError", "UnsupportedBandwidthError"}
    assert set(opencodec._LAZY) | errors | {"__version__"} == set(opencodec.__all__)
    assert all(getattr(opencodec, name) is getattr(importlib.import_module("opencodec.errors"), name)
               for name in errors)
    star: dict[str, object] = {}
    exec("from opencodec import *", star)
    assert all(star[name] is getattr(opencodec, name) for name in opencodec.__all__)
    with pytest.raises(AttributeError, match="no attribute 'no_such_name'"):
        opencodec.no_such_name  # noqa: B018


# opencodec.compress is the function; importing the submodule of that name (directly or by a module
# that imports it) in a fresh process, before or after the attribute is used, must not replace it
ORDERS = {
    "submodule first": "from opencodec.compress import compress as g\nimport opencodec.codec_files, opencodec\n"
                       "f = opencodec.compress",
    "attribute first": "import opencodec\nf = opencodec.compress\nfrom opencodec.compress import compress as g\n"
                       "import opencodec.codec_files",
}


@pytest.mark.parametrize("order", sorted(ORDERS))
def test_compress_stays_the_function_whatever_is_imported_first(order: str) -> None:
    done = _run(ORDERS[order] + "\nimport sys, types\nm = sys.modules['opencodec.compress']\n"
                "import opencodec.compress as h\n"
                "print(type(f) is types.FunctionType, f is g is h is m.compress is opencodec.compress,\n"
                "      opencodec.decompress is m.decompress,\n"
                "      opencodec.model.EncodecModel is opencodec.EncodecModel)")  # a submodule, as eagerly
    assert (done.returncode, done.stdout) == (0, "True True True True\n"), done.stderr
