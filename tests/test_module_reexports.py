"""Modules split by responsibility keep their old import paths: ``opencodec.pretrained``
re-exports what moved to ``official_files`` and ``weights_layout``, ``opencodec.longform``
(now a package) its public functions, and ``opencodec.cli`` stays the entry point."""

from __future__ import annotations

import subprocess
import sys

import pytest

from opencodec import longform, official_files, pretrained, weights_layout
from opencodec.longform import decode, encode


def test_pretrained_reexports_the_moved_names() -> None:
    for name in ("ROOT_URL", "cache_dir", "official_file_path", "sha256_prefix_ok"):
        assert getattr(pretrained, name) is getattr(official_files, name)
    for name in ("read_weights", "normalize_keys", "infer_config", "model_from_state_dict", "OFFICIAL_CONFIGS",
                 "CONFIG_METADATA_KEY", "INFERENCE_ONLY_KEY", "TORCH_SUFFIXES"):
        assert getattr(pretrained, name) is getattr(weights_layout, name)
    assert set(pretrained.__all__) <= set(dir(pretrained))


def test_official_checkpoint_table_is_the_one_consulted(monkeypatch: pytest.MonkeyPatch, offline) -> None:
    monkeypatch.setitem(pretrained.OFFICIAL_CHECKPOINTS, "encodec_24khz", "encodec_24khz-00000000.th")
    with pytest.raises(pretrained.ModelLoadError, match="encodec_24khz-00000000.th"):
        pretrained.official_checkpoint_path("encodec_24khz")


def test_longform_public_names() -> None:
    assert longform.compress_file_streaming is encode.compress_file_streaming
    assert longform.encode_file_streaming is encode.encode_file_streaming
    assert longform.decompress_file_streaming is decode.decompress_file_streaming
    assert sorted(longform.__all__) == ["compress_file_streaming", "decompress_file_streaming",
                                        "encode_file_streaming", "supports_streaming"]


def test_encoded_frame_is_one_object() -> None:
    """``EncodedFrame`` moved to the low module ``opencodec.frames`` (so that ``bitstream`` need
    not import the model); ``opencodec.model``, ``opencodec`` and ``bitstream`` use that object."""
    import opencodec
    from opencodec import frames, model
    from opencodec.bitstream import body, coded_body

    assert model.EncodedFrame is frames.EncodedFrame
    assert opencodec.EncodedFrame is frames.EncodedFrame
    assert body.EncodedFrame is coded_body.EncodedFrame is frames.EncodedFrame


def test_one_streamability_rule() -> None:
    """The rule is written once (``opencodec.streamability``): ``stream.check_streamable`` is that
    function, and the streaming classes' ``step.check_streamable_model`` words the same problems."""
    import dataclasses

    import pytest

    from opencodec import step, stream, streamability, streaming
    from opencodec.model import EncodecModel
    from opencodec.errors import OpenCodecError
    from opencodec.pretrained import config_for_name

    assert stream.check_streamable is streamability.check_streamable
    assert streaming.check_streamable_model is step.check_streamable_model
    base = config_for_name("encodec_24khz")
    assert streamability.streaming_problems(base) == []
    assert streamability.streaming_problems(config_for_name("encodec_48khz")) == ["not_causal", "segmented",
                                                                                  "normalized"]
    for change, problem in ((dict(causal=False), "not_causal"), (dict(segment=1.0), "segmented"),
                            (dict(normalize=True), "normalized")):
        config = dataclasses.replace(base, **change)
        assert streamability.streaming_problems(config) == [problem]
        with pytest.raises(OpenCodecError) as error:
            streamability.check_streamable(config)
        assert "cannot be streamed" in str(error.value)
        with pytest.raises(ValueError):
            step.check_streamable_model(EncodecModel(config))


def test_python_m_entry_points() -> None:
    for module in ("opencodec", "opencodec.cli"):
        done = subprocess.run([sys.executable, "-m", module, "--version"], capture_output=True, text=True,
                              timeout=120)
        assert done.returncode == 0 and done.stdout.startswith("opencodec "), (module, done.stderr)


SPLITS = {  # old public face -> the modules its code moved to
    "opencodec.bitstream": ["header", "packing", "layout", "coded_body", "body"],
    "opencodec.entropy.fixed": ["fixed_scheme", "fixed_ops", "fixed_params"],
    "opencodec.data.corpus": ["presets", "loudness", "debian", "source_files", "convert", "eval_items"],
    "opencodec.eval.report": ["systems", "scoring", "summary", "report_writer", "results_file", "cli",
                              "console", "items", "lineup", "workers"],
    "opencodec.train.lm_solver": ["lm_config", "lm_codes", "lm_model", "lm_eval"],
}


@pytest.mark.parametrize("old", sorted(SPLITS))
def test_split_modules_reexport_what_moved(old: str) -> None:
    """Every name in the old module's ``__all__`` is there, and a name the new modules define is
    the very object they define (not a copy that could drift)."""
    import importlib

    face = importlib.import_module(old)
    package = old if old == "opencodec.bitstream" else old.rsplit(".", 1)[0]
    assert set(face.__all__) <= set(dir(face))
    moved = 0
    for sub in SPLITS[old]:
        module = importlib.import_module(f"{package}.{sub}")
        for name in getattr(module, "__all__", None) or [n for n in vars(module) if not n.startswith("_")]:
            obj = getattr(module, name)
            if name in face.__all__ and getattr(obj, "__module__", module.__name__) == module.__name__:
                assert getattr(face, name) is obj, (old, sub, name)
                moved += 1
    assert moved >= len(SPLITS[old])


@pytest.mark.parametrize("module", ["opencodec.data.corpus", "opencodec.eval.report", "opencodec.train.lm_solver"])
def test_split_command_lines_still_run(module: str) -> None:
    done = subprocess.run([sys.executable, "-m", module, "--help"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and "usage" in done.stdout.lower(), (module, done.stderr)


def test_eval_report_keeps_its_names_after_the_split() -> None:
    """``opencodec.eval.report`` was split into ``items``, ``results_file``, ``lineup``,
    ``workers``, ``console`` and ``cli``: its names stay the very objects, private names are
    out of ``__all__`` but still importable, and reading ``results.jsonl`` keeps its old path."""
    from opencodec.eval import cli, console, report, results_file, scoring, summary

    assert report.build_parser is cli.build_parser
    assert report.PROG == console.PROG == "opencodec eval"
    assert report.RESULTS_FILE == results_file.RESULTS_FILE == "results.jsonl"
    for name in ("read_results", "repair_results"):
        assert getattr(report, name) is getattr(summary, name) is getattr(results_file, name)
    assert report.neural_roundtrip is report._neural_roundtrip is scoring._neural_roundtrip
    assert scoring._init_worker is scoring.init_worker
    assert scoring._init_pool_worker is scoring.init_pool_worker
    assert not [n for n in report.__all__ if n.startswith("_")]
    assert {"run_eval", "main", "build_parser"} <= set(report.__all__)


def test_eval_modules_do_not_import_upwards() -> None:
    """The modules split out of ``opencodec.eval.report`` never import it (no cycle), and
    only ``report`` imports the command line module ``cli``."""
    import ast
    import importlib

    for sub in ("items", "results_file", "lineup", "workers", "console", "cli", "scoring", "summary",
                "systems", "report_writer"):
        module = importlib.import_module(f"opencodec.eval.{sub}")
        tree = ast.parse(open(module.__file__, encoding="utf-8").read())
        imported = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):  # from .report import x / from . import report
                imported |= {node.module.rsplit(".", 1)[-1]} if node.module else {a.name for a in node.names}
        assert not imported & {"report", "cli"} - {sub}, (sub, sorted(imported))


def test_opencodec_eval_help_still_runs() -> None:
    done = subprocess.run([sys.executable, "-m", "opencodec", "eval", "--help"], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0 and "usage: opencodec eval" in done.stdout, done.stderr
