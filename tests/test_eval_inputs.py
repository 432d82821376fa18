"""What ``opencodec eval`` accepts before any work: baseline spellings and bitrates (per
MPEG version, per channel), item ids (duplicates, also under ``--max-items``), ``--set``,
manifests (empty, not UTF-8), ``--sample-rate``, ``--bandwidth``, an entropy model given as
a codec."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from opencodec.eval import baselines as BL, report as R
from opencodec.eval.cli import build_parser, run_command
from opencodec.eval.items import list_items
from opencodec.eval.lineup import check_bandwidths_once
from opencodec.eval.systems import EvalReportError

from train_helpers import RATE, REPO, SR, _always_offline, _noise, _write_set  # noqa: F401


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


# ------------------------------------------------------------------------------------------
# 3, 4. Baseline bitrates the encoder cannot take at the coding rate/channels
# ------------------------------------------------------------------------------------------
def test_mp3_bitrates_per_mpeg_version():
    assert BL.mp3_bitrates(24000)[-1] == 160 and BL.mp3_bitrates(48000)[-1] == 320
    assert BL.mp3_bitrates(8000) == (8, 16, 24, 32, 40, 48, 56, 64)
    assert BL.mp3_bitrates(96000)[0] == 32  # coded at 48 kHz: MPEG-1
    for kbps in (320, 161, 100):
        with pytest.raises(BL.BaselineError, match="8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, "
                                                   "128, 144, 160"):
            BL.check_bitrate_for("mp3", kbps, 24000, 1)
    BL.check_bitrate_for("mp3", 64, 24000, 1)
    BL.check_bitrate_for("mp3", 320, 48000, 2)
    with pytest.raises(BL.BaselineError, match="at 8000 Hz"):
        BL.check_bitrate_for("mp3", 80, 8000, 1)
    with pytest.raises(BL.BaselineError, match="LAME"):
        BL.mp3_roundtrip(_noise(0.2), SR, 320)


def test_opus_bitrate_per_channel():
    with pytest.raises(BL.BaselineError, match=r"6\.\.256 kbit/s for 1 channel"):
        BL.check_bitrate_for("opus", 257, SR, 1)
    BL.check_bitrate_for("opus", 256, SR, 1)
    BL.check_bitrate_for("opus", 510, SR, 2)
    with pytest.raises(BL.BaselineError, match=r"6\.\.256"):
        BL.opus_roundtrip(_noise(0.2), SR, 300)


@pytest.mark.parametrize("spec, allowed", [("mp3_320", "144, 160"), ("opus510", "6..256")])
def test_eval_refuses_bad_baseline_bitrate_before_work(tmp_path, capsys, spec, allowed):
    eval_set = _write_set(tmp_path / "set", {"music": [("a", _noise())]})
    out = tmp_path / "out"
    with pytest.raises(EvalReportError, match=allowed):
        R.run_eval([], None, [spec], eval_set, out, metrics=["si_snr"], quiet=True)
    assert not out.exists()
    status = R.main(["--baselines", spec, "--set", str(eval_set), "--out", str(out), "-q"])
    err = capsys.readouterr().err
    assert status == 1 and "Traceback" not in err and allowed in err and len(err.splitlines()) == 1


# ------------------------------------------------------------------------------------------
# 5. Duplicate item ids
# ------------------------------------------------------------------------------------------
def test_duplicate_item_ids_are_refused(tmp_path):
    eval_set = _write_set(tmp_path / "set", {"music": [("a/x", _noise(seed=1)),
                                                       ("b/x", _noise(seed=2)),
                                                       ("a/y", _noise(seed=3))]})
    with pytest.raises(EvalReportError, match=r"'x': .*a/x\.wav, .*b/x\.wav"):
        R.run_eval([], None, ["opus6"], eval_set, tmp_path / "out", metrics=["si_snr"], quiet=True)
    assert not (tmp_path / "out").exists()
    rows = [{"path": "a.wav", "item_id": "same"}, {"path": "b.wav", "item_id": "same"}]
    (eval_set / "eval_general.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(EvalReportError, match="'same'"):
        R.run_eval([], None, ["opus6"], eval_set, tmp_path / "out", categories=["general"],
                   metrics=["si_snr"], quiet=True)


# ------------------------------------------------------------------------------------------
# 6. --sample-rate bounds; --sample-rate/--channels with --models
# ------------------------------------------------------------------------------------------
def test_sample_rate_is_bounded_and_refused_with_models(tmp_path, capsys):
    parser = build_parser()
    for bad in ("1", "7999", "192001"):
        with pytest.raises(SystemExit):
            parser.parse_args(["--set", "s", "--out", "o", "--sample-rate", bad])
    assert parser.parse_args(["--set", "s", "--out", "o", "--sample-rate", "8000"]).sample_rate == 8000
    calls = []
    status = run_command(["--models", "m", "--sample-rate", "16000", "--channels", "2", "--set", "s",
                          "--out", "o"], "opencodec eval", lambda *a, **k: calls.append(k))
    assert status == 2 and calls == []
    assert "--sample-rate and --channels apply only without --models" in capsys.readouterr().err
    run_command(["--baselines", "opus6", "--set", "s", "--out", "o", "-q"], "opencodec eval",
                lambda *a, **k: calls.append(k) or {"meta": {"n_rows": 0}})
    assert (calls[0]["sample_rate"], calls[0]["channels"]) == (24000, 1)
    with pytest.raises(EvalReportError, match="8000..192000"):
        R.run_eval([], None, ["opus6"], tmp_path, tmp_path / "out", sample_rate=1)


# ------------------------------------------------------------------------------------------
# 8. An empty manifest is stated in report.md and summary.json
# ------------------------------------------------------------------------------------------
def test_empty_manifest_is_stated_in_report(tmp_path):
    eval_set = _write_set(tmp_path / "set", {"clean_speech": [("a", _noise())]})
    (eval_set / "eval_music.jsonl").write_text("")
    doc = R.run_eval([], None, ["opus6"], eval_set, tmp_path / "out", metrics=["si_snr"], quiet=True)
    assert doc["meta"]["empty_categories"] == ["music"]
    assert doc["meta"]["categories"] == ["clean_speech"]
    assert ("**Empty manifest**: `eval_music.jsonl` lists no items; category 'music'"
            in (tmp_path / "out" / "report.md").read_text())


# ------------------------------------------------------------------------------------------
# 9. A manifest that is not UTF-8
# ------------------------------------------------------------------------------------------
def test_non_utf8_manifest_is_one_line_error(tmp_path):
    eval_set = tmp_path / "mal"
    eval_set.mkdir()
    (eval_set / "eval_music.jsonl").write_bytes(b"\xff\xfe garbage\n")
    with pytest.raises(EvalReportError, match=r"eval_music\.jsonl is not UTF-8 text \(byte 0xff at offset 0\)"):
        R.run_eval([], None, ["opus6"], eval_set, tmp_path / "out", metrics=["si_snr"], quiet=True)


# ------------------------------------------------------------------------------------------
# 11. --set that does not exist or is a file
# ------------------------------------------------------------------------------------------
def test_set_missing_or_file(tmp_path):
    with pytest.raises(EvalReportError, match=r"--set .*nosuchdir does not exist$"):
        R.run_eval([], None, ["opus6"], tmp_path / "nosuchdir", tmp_path / "out")
    manifest = _write_set(tmp_path / "set", {"music": [("a", _noise())]}) / "eval_music.jsonl"
    with pytest.raises(EvalReportError, match="is a file; pass the folder holding"):
        R.run_eval([], None, ["opus6"], manifest, tmp_path / "out")


# ------------------------------------------------------------------------------------------
# 13. Smaller messages and labels
# ------------------------------------------------------------------------------------------
def test_bandwidth_given_twice():
    with pytest.raises(EvalReportError, match=r"bandwidth\(s\) 6 kbps given more than once"):
        check_bandwidths_once([6.0, 6, 12])
    check_bandwidths_once([6.0, 12])
    check_bandwidths_once(None)


def test_entropy_model_given_as_codec_names_no_missing_option(tmp_path):
    from opencodec.errors import ModelLoadError
    from opencodec.eval.lineup import neural_systems

    lm = REPO / "src" / "opencodec" / "weights" / "opencodec_lm_24khz.safetensors"
    with pytest.raises(ModelLoadError) as info:
        neural_systems([str(lm)], None)
    assert "entropy model, not a codec" in str(info.value)
    assert "--lm-model" not in str(info.value) and "--models" in str(info.value)
