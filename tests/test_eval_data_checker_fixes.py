"""Fixes from an independent check of eval, info, compress and the corpus builder: baseline
spellings, duplicate item ids under ``--max-items``, why an entropy-coded file is larger
than plain coding, ``info``'s wording, ``corpus build --out FILE``."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from opencodec import cli
from opencodec.cli import codec as cli_codec
from opencodec.codec_files import FileCompressor, FileResult, OutputOptions
from opencodec.data import corpus
from opencodec.eval import report as R
from opencodec.eval.items import list_items
from opencodec.file_jobs import Job
from opencodec.model import EncodecConfig, EncodecModel
from opencodec.pretrained import save_model

RATE = 24_000


@pytest.fixture(autouse=True)
def _always_offline(offline: Path) -> Path:
    return offline


def run(capsys: pytest.CaptureFixture[str], *argv: object) -> tuple[int, str, str]:
    """``opencodec ARGV``: (exit status, stdout, stderr)."""
    code = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def tone_noise(path: Path, seconds: float, hz: float, noise: float, seed: int = 0) -> Path:
    """A sine of ``hz`` (0.3 peak) plus Gaussian noise of std ``noise``, 24 kHz mono float."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(round(seconds * RATE))) / RATE
    x = 0.3 * np.sin(2 * np.pi * hz * t) + noise * rng.standard_normal(len(t))
    sf.write(path, x.astype(np.float32), RATE, subtype="FLOAT")
    return path


# -- 1: only the documented baseline spellings ----------------------------------------------------------------------
@pytest.mark.parametrize("spec", ["opus_6", "opus-6", "mp364", "mp3-64", "Opus6", "opus6kbps", "mp3_64kbps"])
def test_undocumented_baseline_spellings_are_refused(spec: str, tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(R.EvalReportError, match=r"unknown baseline .*: expected opusN or mp3_N"):
        R.parse_baseline(spec)
    assert R.main(["--baselines", spec, "--set", str(tmp_path / "none"), "--out", str(tmp_path / "o"), "-q"]) == 2
    assert capsys.readouterr().err == (f"opencodec eval: error: unknown baseline {spec!r}: expected opusN or "
                                       "mp3_N, N in kbit/s (e.g. opus6, opus12, mp3_64)\n")
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("spec,name,kbps", [("opus6", "opus-6kbps", 6.0), ("opus12.5", "opus-12.5kbps", 12.5),
                                            ("mp3_64", "mp3-64kbps", 64.0), ("mp3_8", "mp3-8kbps", 8.0)])
def test_documented_baseline_spellings_parse(spec: str, name: str, kbps: float) -> None:
    codec = R.parse_baseline(spec)
    assert (codec.name, codec.nominal_kbps) == (name, kbps)


# -- 2: duplicate ids are found over the whole manifest, before --max-items cuts it ---------------------------------
def _set_with_late_duplicate(folder: Path) -> Path:
    folder.mkdir()
    rows = []
    for n, ident in enumerate(["a", "b", "b"]):
        path = folder / f"{ident}{n}.wav"
        sf.write(path, np.zeros(RATE // 10, np.float32), RATE)
        rows.append({"category": "music", "item_id": ident, "path": str(path)})
    (folder / "eval_music.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return folder


def test_max_items_does_not_hide_duplicate_ids(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    eval_set = _set_with_late_duplicate(tmp_path / "set")
    for max_items in (None, 1):
        with pytest.raises(R.EvalReportError, match=r"1 item id\(s\) are shared by several rows \('b': "):
            list_items(eval_set, ["music"], False, max_items)
    out = tmp_path / "out"
    assert R.main(["--baselines", "opus12", "--set", str(eval_set), "--max-items", "1",
                   "--metrics", "si_snr", "--out", str(out), "-q"]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"opencodec eval: error: {eval_set / 'eval_music.jsonl'}: 1 item id(s) are shared")
    assert "'b'" in err and err.count("\n") == 1


# -- 3: why an entropy-coded file is larger than plain coding -------------------------------------------------------
def _result(body_overhead: int) -> FileResult:
    # the checker's numbers: a 1-step entropy model at 6 kbps, 1365 bytes against 1219 plain
    return FileResult(Path("a.wav"), Path("a.ecdc"), 1.43, size_bytes=1365, plain_bytes=1219, header_extra=92,
                      checksums=True, body_overhead=body_overhead)


def test_warning_blames_the_model_when_the_body_alone_is_larger(capsys: pytest.CaptureFixture[str]) -> None:
    result = _result(8)  # its body codes the codes into 46 bytes more than plain coding's
    assert result.body_extra == 46 and not cli_codec._header_bound(result)
    cli_codec._warn_larger([result], 1)
    err = capsys.readouterr().err
    assert "the entropy model predicts these codes poorly" in err and "header" not in err
    result = _result(60)  # fixed costs of 152 bytes: the body itself is 6 bytes smaller than plain
    assert result.body_extra == -6 and cli_codec._header_bound(result)
    cli_codec._warn_larger([result], 1)
    err = capsys.readouterr().err
    assert ("the entropy-coded format's header (92 bytes more: the entropy model's name and hash) and checksums "
            "outweigh what the entropy model saves (6 bytes on the codes) on so short an input") in err


def test_compress_names_the_right_reason(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The bundled codec and entropy model at 1.5 kbps, deterministic format (86 header bytes
    more, 7 bytes of checks and coder end on a one-segment file): on a tone in noise its body
    is larger than plain coding's (the old heuristic blamed the header, as the 86 extra header
    bytes exceed the 27 extra body bytes); on half a second of another, the body is smaller and
    only the fixed costs make the file larger."""
    poor = tone_noise(tmp_path / "poor.wav", 1.0, 220.0, 0.05)
    compressor = FileCompressor(None, 1.5, OutputOptions(), lm=True)
    result = compressor(Job(poor, tmp_path / "direct.ecdc"))
    assert (result.header_extra, result.body_overhead) == (86, 7)
    assert result.size_bytes - result.plain_bytes == 113 and result.body_extra == 20
    code, _, err = run(capsys, "compress", poor, tmp_path / "poor.ecdc", "-b", "1.5", "--lm", "-q")
    assert code == 0 and err.count("warning:") == 1 and "is larger than plain coding" in err
    assert "the entropy model predicts these codes poorly" in err and "header" not in err

    short = tone_noise(tmp_path / "short.wav", 0.5, 440.0, 0.05)
    code, _, err = run(capsys, "compress", short, tmp_path / "short.ecdc", "-b", "1.5", "--lm", "-q")
    assert code == 0 and err.count("warning:") == 1
    assert "and checksums outweigh what the entropy model saves (13 bytes on the codes) on so short" in err
    assert "predicts" not in err

    official = FileCompressor(None, 1.5, OutputOptions(), lm=True, lm_format="official")
    assert official(Job(poor, tmp_path / "official.ecdc")).body_overhead == 3  # the coder's end only


# -- 4a, 4b: info --------------------------------------------------------------------------------------------------
def test_info_on_an_unregistered_model_says_what_it_decodes_to(tmp_path: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    torch.manual_seed(0)
    model = EncodecModel(EncodecConfig(name="tiny_t3", n_filters=4, dimension=16, lstm=0, n_q=4,
                                       target_bandwidths=[1.5, 3.0]))
    weights = save_model(model, tmp_path / "tiny.safetensors")
    src = tone_noise(tmp_path / "a.wav", 0.2, 440.0, 0.01)
    assert run(capsys, "compress", src, tmp_path / "a.ecdc", "-m", weights, "-b", "1.5", "-q")[0] == 0
    code, out, _ = run(capsys, "info", tmp_path / "a.ecdc")
    assert code == 0 and "sample rate:   unknown (model not known)" in out
    assert "the sample rate and channels above" not in out
    assert ("decodes to:    the sample rate and channels of the model that wrote it (not known here: "
            "decompress with --model PATH to its weights)") in out
    code, out, _ = run(capsys, "info", tmp_path / "a.ecdc", "-m", weights)
    assert code == 0 and "sample rate:   24000 Hz" in out
    assert "decodes to:    the sample rate and channels above; decompress --rate HZ" in out


def test_info_on_a_missing_file_says_as_the_other_commands_do(tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "w" / "x.ecdc"
    code, out, err = run(capsys, "info", missing)
    assert (code, out, err) == (1, "", f"opencodec: error: input {missing} does not exist\n")
    assert run(capsys, "decompress", missing, tmp_path / "o.wav")[2] == err


# -- 4c: corpus build --out FILE -----------------------------------------------------------------------------------
def test_corpus_build_out_a_file_is_one_clear_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    afile = tmp_path / "afile"
    afile.write_text("x")
    assert corpus.main(["build", "--preset", "tiny", "--out", str(afile)]) == 1
    err = capsys.readouterr().err
    assert err.endswith(f"error: --out {afile} is a file; give a folder (the corpus root, e.g. data/)\n")
    assert "Errno" not in err and afile.read_text() == "x"
    (tmp_path / "root").mkdir()
    (tmp_path / "root" / "tiny_24k").write_text("")  # the preset's folder is a file
    assert corpus.main(["build", "--preset", "tiny", "--out", str(tmp_path / "root")]) == 1
    err = capsys.readouterr().err
    assert err.endswith(f"error: {tmp_path / 'root' / 'tiny_24k'} is a file, not a folder "
                        f"(under --out {tmp_path / 'root'})\n")
    assert corpus.main(["build", "--preset", "tiny", "--out", str(afile / "sub")]) == 1
    assert capsys.readouterr().err.endswith(f"error: {afile} is a file, not a folder (above --out {afile / 'sub'})\n")
