"""The scripts behind the README's and docs/BENCHMARKS.md's numbers still import and parse.

No other test runs ``benchmarks/*.py``, ``benchmarks/probes/*.py`` or ``scripts/**/*.py``, so
a function moved or renamed in ``src/opencodec`` broke them silently (for a while
``benchmarks/probes/serve_message_memory.py`` failed with ``ImportError: cannot import name
'_parsed' from 'opencodec.serve.server'``). Three cheap checks, one test per script:

* every ``import`` / ``from ... import`` of ``opencodec`` or of a sibling module (``provenance``,
  ``multistream_capacity``, ``tests/official_ref``...) anywhere in the file, function bodies
  included, resolves: the module imports and has each imported name; and ``alias.name`` for an
  imported module (``sf._elu`` after ``import opencodec.step_fast as sf``) exists. This is
  read from the source (``ast``), so it covers the probes that do their work at import time;
* a script with an ``if __name__ == "__main__":`` guard is imported in-process
  (``spec_from_file_location``), which runs its module-level code but not its ``main``;
* a script with an argparse ``main`` is run as ``main()`` with ``sys.argv = [script,
  "--help"]``: it must exit 0 and print its usage.

Nothing is timed or measured here; running the scripts at a small size is left to a person
(docs/BENCHMARKS.md gives their commands).
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import sys
import types
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SCRIPTS = sorted(
    [*REPO.glob("benchmarks/*.py"), *REPO.glob("benchmarks/probes/*.py"),
     *REPO.glob("scripts/*.py"), *REPO.glob("scripts/device/*.py")]
)
# The probes that run their measurement at import time (no __main__ guard; README in
# benchmarks/probes/ says they are one-off and unmaintained): only their imports are checked.
# A new script must either have a guard or be added here on purpose.
RUN_AT_IMPORT = {
    "benchmarks/probes/block_probe.py", "benchmarks/probes/chunk_probe.py",
    "benchmarks/probes/compile_probe.py", "benchmarks/probes/elu_ab.py",
    "benchmarks/probes/few_row_products.py", "benchmarks/probes/half_matvec.py",
    "benchmarks/probes/jit_probe.py", "benchmarks/probes/lstm_threads.py",
    "benchmarks/probes/ms6.py", "benchmarks/probes/ort6.py",
    "benchmarks/probes/pipe_probe.py", "benchmarks/probes/tick_shapes.py",
}
# Library modules, not scripts: no guard and no main, nothing runs at import.
LIBRARIES = {"benchmarks/provenance.py", "benchmarks/probes/_fast_steps.py"}
# Folders a script's sibling imports come from (each script puts the ones it needs on sys.path).
LOCAL_DIRS = (REPO / "benchmarks", REPO / "benchmarks" / "probes", REPO / "tests", REPO / "scripts")


def _rel(path: Path) -> str:
    return path.relative_to(REPO).as_posix()


def _tree(path: Path) -> ast.Module:
    return ast.parse(path.read_text(encoding="utf-8"), filename=str(path))


def _has_main_guard(tree: ast.Module) -> bool:
    for node in tree.body:
        if isinstance(node, ast.If) and "__name__" in ast.unparse(node.test) \
                and "__main__" in ast.unparse(node.test):
            return True
    return False


def _has_argparse_main(tree: ast.Module) -> bool:
    mains = [n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "main"]
    return bool(mains) and any(
        isinstance(n, ast.Attribute) and n.attr == "parse_args" for n in ast.walk(mains[0])
    )


def _is_checked(module: str) -> bool:
    """opencodec, or a module that lives as a file in one of the repository's script folders."""
    top = module.split(".")[0]
    return top == "opencodec" or any((d / f"{top}.py").is_file() for d in LOCAL_DIRS)


def _resolve_imports(path: Path) -> list[str]:
    """Every unresolvable project import of ``path`` (and ``alias.attr`` on an imported module),
    as ``line N: what``; empty when all resolve."""
    problems: list[str] = []
    bound: dict[str, types.ModuleType] = {}  # local name -> module it names
    tree = _tree(path)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if not _is_checked(alias.name):
                    continue
                try:
                    module = importlib.import_module(alias.name)
                except Exception as exc:  # noqa: BLE001 - any failure is the finding
                    problems.append(f"line {node.lineno}: import {alias.name}: {exc!r}")
                    continue
                if alias.asname:
                    bound[alias.asname] = module
        elif isinstance(node, ast.ImportFrom):
            if node.level or not node.module or not _is_checked(node.module):
                continue
            try:
                module = importlib.import_module(node.module)
            except Exception as exc:  # noqa: BLE001
                problems.append(f"line {node.lineno}: from {node.module}: {exc!r}")
                continue
            for alias in node.names:
                if alias.name == "*":
                    continue
                if hasattr(module, alias.name):
                    value = getattr(module, alias.name)
                else:
                    try:
                        value = importlib.import_module(f"{node.module}.{alias.name}")
                    except ImportError:
                        problems.append(f"line {node.lineno}: cannot import name "
                                        f"{alias.name!r} from {node.module!r}")
                        continue
                if isinstance(value, types.ModuleType):
                    bound[alias.asname or alias.name] = value
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) \
                and node.value.id in bound and isinstance(node.ctx, ast.Load):
            module = bound[node.value.id]
            if not hasattr(module, node.attr):
                problems.append(f"line {node.lineno}: {module.__name__} has no {node.attr!r}")
    return problems


@pytest.fixture
def script_env(monkeypatch):
    """sys.path with the script folders (as the scripts set it up themselves) and src,
    restored afterwards; sys.modules entries added by a test are dropped afterwards, and torch's
    thread count is put back (benchmarks/long_file_memory.py sets it to 1 at import)."""
    monkeypatch.setattr(sys, "path", [*map(str, LOCAL_DIRS), str(REPO / "src"), *sys.path])
    before = set(sys.modules)
    threads = torch.get_num_threads()
    yield monkeypatch
    torch.set_num_threads(threads)
    for name in set(sys.modules) - before:
        if name.startswith("benchsmoke_"):
            del sys.modules[name]


def _load(path: Path, monkeypatch) -> types.ModuleType:
    where = _rel(path) if path.is_relative_to(REPO) else path.name
    name = "benchsmoke_" + where.replace("/", "_").removesuffix(".py")
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, name, module)  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def test_the_script_list_is_complete():
    """The glob finds the scripts, and each is a guarded script, a library, or a probe
    listed as running at import: a new unguarded script must be listed on purpose."""
    rels = {_rel(p) for p in SCRIPTS}
    assert "benchmarks/probes/serve_message_memory.py" in rels and len(rels) >= 30
    assert RUN_AT_IMPORT | LIBRARIES <= rels
    for path in SCRIPTS:
        guarded = _has_main_guard(_tree(path))
        rel = _rel(path)
        assert guarded != (rel in RUN_AT_IMPORT | LIBRARIES), (
            f"{rel}: {'guarded but listed' if guarded else 'no __main__ guard and not listed'}"
        )


@pytest.mark.parametrize("path", SCRIPTS, ids=_rel)
def test_project_imports_resolve(path, script_env):
    assert _resolve_imports(path) == [], _rel(path)


GUARDED = [p for p in SCRIPTS if _has_main_guard(_tree(p))]
ARGPARSE = [p for p in GUARDED if _has_argparse_main(_tree(p))]


@pytest.mark.parametrize("path", GUARDED, ids=_rel)
def test_guarded_script_imports(path, script_env):
    module = _load(path, script_env)
    assert callable(getattr(module, "main", None)), f"{_rel(path)} has no main()"


@pytest.mark.parametrize("path", ARGPARSE, ids=_rel)
def test_help_exits_zero(path, script_env, capsys):
    module = _load(path, script_env)
    script_env.setattr(sys, "argv", [str(path), "--help"])
    with pytest.raises(SystemExit) as exit_info:
        module.main()
    assert exit_info.value.code in (0, None), _rel(path)
    assert capsys.readouterr().out.startswith("usage: "), _rel(path)


def test_the_checks_catch_a_moved_function(tmp_path, script_env):
    """The import check on a copy of serve_message_memory.py with its old import (the one that
    broke): it names the missing function."""
    script = REPO / "benchmarks" / "probes" / "serve_message_memory.py"
    text = script.read_text(encoding="utf-8")
    new = "from opencodec.serve.decode_input import PARSE_SLICE, parsed"
    assert new in text
    old = tmp_path / "serve_message_memory.py"
    old.write_text(text.replace(new, "from opencodec.serve.server import PARSE_SLICE, _parsed"),
                   encoding="utf-8")
    problems = _resolve_imports(old)
    assert any("'_parsed' from 'opencodec.serve.server'" in p for p in problems), problems
    with pytest.raises(ImportError, match="_parsed"):
        _load(old, script_env)
