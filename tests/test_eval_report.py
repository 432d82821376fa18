"""End-to-end test of the evaluation report on a tiny synthetic eval set."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import soundfile as sf
import torch

import matplotlib  # noqa: F401  (installed by make test: a missing extra fails, never skips)
import av  # noqa: F401  (installed by make test: a missing extra fails, never skips)

from opencodec.eval import report as R  # noqa: E402
from opencodec.model import EncodecConfig, EncodecModel  # noqa: E402
from opencodec.pretrained import save_model  # noqa: E402

CATEGORIES = ("clean_speech", "music")
SR = 24000


def _signal(kind: str, seed: int, seconds: float = 1.2) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SR)) / SR
    if kind == "music":
        x = sum(0.2 * np.sin(2 * np.pi * f * t) for f in (220.0 * (seed + 1), 330.0, 440.0))
        x = np.stack([x, 0.8 * x])  # stereo file: converted to the model's mono
    else:  # speech-like: AM-modulated harmonic tone + a little noise
        f0 = 120 + 20 * seed
        x = sum(np.sin(2 * np.pi * k * f0 * t) / k for k in range(1, 8))
        x = 0.3 * x * (0.5 + 0.5 * np.sin(2 * np.pi * 3 * t)) + 0.01 * rng.standard_normal(t.size)
        x = x[None]
    return x.astype(np.float32)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("evalrep")
    man = root / "manifests"
    man.mkdir()
    for cat in CATEGORIES:
        (root / "audio" / cat).mkdir(parents=True)
        with open(man / f"eval_{cat}.jsonl", "w") as fh:
            for i in range(2):
                x = _signal("music" if cat == "music" else "speech", i, seconds=1.2 + 0.6 * i)
                path = root / "audio" / cat / f"{cat}_{i}.flac"
                sf.write(path, x.T, SR)
                fh.write(json.dumps({"category": cat, "item_id": f"{cat}_{i}",
                                     "path": f"../audio/{cat}/{cat}_{i}.flac",
                                     "sample_rate": SR, "channels": x.shape[0],
                                     "duration": x.shape[1] / SR}) + "\n")
    torch.manual_seed(0)
    model = EncodecModel(EncodecConfig(name="tiny", n_filters=4, dimension=16, lstm=0, n_q=4,
                                       target_bandwidths=[1.5, 3.0]))
    model_path = root / "tiny.safetensors"
    save_model(model, model_path)
    return root, man, str(model_path)


def _run(man, model_path, out, **kw):
    return R.run_eval([model_path], [1.5, 3.0], ["opus12"], man, out, quiet=True, **kw)


def test_report_end_to_end_and_resume(setup, tmp_path, monkeypatch):
    root, man, model_path = setup
    out = tmp_path / "rep"
    doc = _run(man, model_path, out)
    rows = R.read_results(out / "results.jsonl")
    systems = {"tiny@1.5kbps", "tiny@3kbps", "opus-12kbps"}
    assert len(rows) == len(CATEGORIES) * 2 * len(systems)
    assert {r["system"] for r in rows} == systems
    assert {(r["category"], r["item_id"]) for r in rows} == {
        (c, f"{c}_{i}") for c in CATEGORIES for i in range(2)}
    for r in rows:
        assert "codec" not in r["errors"], r["errors"]
        assert r["sample_rate"] == SR and r["channels"] == 1
        assert r["actual_kbps"] > 0
        assert r["metrics"]["si_snr"] is not None and r["metrics"]["mel"] is not None
        assert r["visqol_mode"] == ("speech" if "speech" in r["category"] else "audio")
        if r["kind"] == "neural":
            assert r["rtf"] > 0
            # actual kbps includes the .ecdc header: at least the nominal rate
            assert r["actual_kbps"] >= r["nominal_kbps"]
        if r["category"] == "music":
            assert "pesq" not in r["metrics"] and "stoi" not in r["metrics"]
        else:
            assert "pesq" in r["metrics"] and "stoi" in r["metrics"]

    # summary.json == means of results.jsonl
    summary = json.loads((out / "summary.json").read_text())
    assert summary["categories"] == doc["categories"]
    for cat in CATEGORIES:
        for system in systems:
            rs = [r for r in rows if r["category"] == cat and r["system"] == system]
            entry = summary["categories"][cat][system]
            assert entry["n_items"] == 2
            # the rate is total bits over total seconds (duration-weighted), not a plain mean
            bits = sum(r["actual_kbps"] * r["duration_s"] for r in rs)
            assert math.isclose(entry["actual_kbps"]["mean"],
                                bits / sum(r["duration_s"] for r in rs), rel_tol=1e-9)
            for name, stat in entry["metrics"].items():
                vals = [r["metrics"][name] for r in rs if r["metrics"].get(name) is not None]
                if vals:
                    assert math.isclose(stat["mean"], float(np.mean(vals)), rel_tol=1e-9)
                    assert stat["n"] == len(vals)

    # report.md: a table per category, every system, CIs
    md = (out / "report.md").read_text()
    for cat in CATEGORIES:
        assert f"## {cat}" in md
        section = md.split(f"## {cat}")[1].split("\n## ")[0]
        for system in systems:
            assert f"| {system} |" in section
        assert "±" in section and "| System |" in section
    assert "speech mode at 16 kHz" in md and "audio mode at 48 kHz" in md

    # plots exist and are non-empty PNGs
    pngs = sorted((out / "plots").glob("*.png"))
    assert {p.name for p in pngs} >= {f"{c}_si_snr.png" for c in CATEGORIES} | {"clean_speech_pesq.png"}
    for p in pngs:
        data = p.read_bytes()
        assert len(data) > 1000 and data[:8] == b"\x89PNG\r\n\x1a\n"

    # resume: nothing recomputed, no duplicate rows
    calls = []
    monkeypatch.setattr(R, "evaluate_item", lambda task: calls.append(task) or [])
    _run(man, model_path, out)
    assert calls == []
    assert len(R.read_results(out / "results.jsonl")) == len(rows)


def test_resume_partial(setup, tmp_path):
    """A run interrupted after some rows only computes the missing (item, system) pairs."""
    root, man, model_path = setup
    out = tmp_path / "rep"
    R.run_eval([], None, ["opus12"], man, out, categories=["music"], metrics=["si_snr"],
               max_items=1, quiet=True)
    assert len(R.read_results(out / "results.jsonl")) == 1
    R.run_eval([], None, ["opus12"], man, out, categories=["music"], metrics=["si_snr"], quiet=True)
    rows = R.read_results(out / "results.jsonl")
    assert sorted(r["item_id"] for r in rows) == ["music_0", "music_1"]


def test_parse_baseline_and_cli_usage():
    assert R.parse_baseline("opus6").nominal_kbps == 6
    assert R.parse_baseline("mp3_64").name == "mp3-64kbps"
    with pytest.raises(R.EvalReportError):
        R.parse_baseline("aac32")
    mean, ci, n = R.mean_ci95([1.0, 2.0, 3.0])
    assert mean == 2.0 and n == 3 and math.isclose(ci, 4.302652729911275 * 1.0 / math.sqrt(3))
    from opencodec.cli import main
    assert main(["eval", "--help"]) == 0


def test_versus_opus_states_where_the_model_falls_short():
    def entry(family, kind, kbps, visqol, mel, ci=0.1):
        return {"family": family, "kind": kind, "nominal_kbps": kbps,
                "metrics": {"visqol": {"mean": visqol, "ci95": ci, "n": 8},
                            "mel": {"mean": mel, "ci95": ci, "n": 8}}}

    summary = {
        "music": {"m@6kbps": entry("m", "neural", 6.0, 3.1, 0.7), "m@3kbps": entry("m", "neural", 3.0, 2.0, 1.0),
                  "opus-6kbps": entry("opus", "baseline", 6.0, 2.6, 1.5)},
        "speech": {"m@6kbps": entry("m", "neural", 6.0, 2.7, 1.0, ci=0.5),
                   "opus-6kbps": entry("opus", "baseline", 6.0, 3.0, 1.4, ci=0.5)},
    }
    lines = R.versus_opus(summary, ["mel", "visqol"])
    text = "\n".join(lines)
    # only established results count in the headline; speech is a point estimate only
    assert ("**m@6kbps**: ViSQOL established above Opus in 1 of 2 categories (music); "
            "not established in speech (point estimate below).") in text
    assert "| music | m@6kbps | opus-6kbps | – vs – | 0.70 vs 1.50: better | 3.10 vs 2.60: better |" in text
    # 2.7 +- 0.5 against 3.0 +- 0.5: the means differ, the intervals do not tell them apart
    assert ("| speech | m@6kbps | opus-6kbps | – vs – | 1.00 vs 1.40: better (intervals overlap) "
            "| 2.70 vs 3.00: worse (intervals overlap) |") in text
    assert "m@3kbps" not in text  # no Opus at 3 kbps to compare with
    assert R.versus_opus({"music": {"m@3kbps": summary["music"]["m@3kbps"]}}, ["visqol"]) == []


def test_paired_versus_opus_tests_per_item_differences():
    def row(system, family, kind, item, visqol, mel):
        return {"category": "speech", "item_id": item, "system": system, "family": family, "kind": kind,
                "nominal_kbps": 6.0, "actual_kbps": 6.0, "rtf": None, "metrics": {"visqol": visqol, "mel": mel}}

    # ours = Opus + 0.1 +- 0.01 ViSQOL on every item: the items spread widely (2.0 to 4.0), so
    # the two separate intervals overlap, but the paired difference is tight and above 0.
    base = [2.0, 2.5, 3.0, 3.5, 4.0]
    offsets = [0.09, 0.11, 0.10, 0.09, 0.11]
    mel_offsets = [0.2, -0.3, 0.25, -0.2, 0.1]  # mixed signs: not established
    rows = [row("opus-6kbps", "opus", "baseline", f"i{k}", b, 1.0) for k, b in enumerate(base)]
    rows += [row("m@6kbps", "m", "neural", f"i{k}", b + o, 1.0 + mo)
             for k, (b, o, mo) in enumerate(zip(base, offsets, mel_offsets))]
    rows.append(row("opus-6kbps", "opus", "baseline", "only_opus", 1.0, 1.0))  # unpaired: left out
    paired = R.paired_versus_opus(rows, ["visqol", "mel"])
    d = paired["speech"]["m@6kbps"]
    assert d["opus"] == "opus-6kbps"
    assert d["visqol"]["n"] == 5 and d["visqol"]["wins"] == 5
    assert math.isclose(d["visqol"]["mean"], 0.1)
    diffs = np.array(offsets)
    ci = 2.7764451051977987 * diffs.std(ddof=1) / math.sqrt(5)  # t(0.975, 4)
    assert math.isclose(d["visqol"]["ci95"], ci)
    assert d["mel"]["wins"] == 2  # mel: lower is better, so the two negative offsets win
    summary = R.summarize(rows, ["visqol", "mel"])
    assert R.summarize(rows, ["visqol"])["speech"]["m@6kbps"]["metrics"]["visqol"]["ci95"] > 0.1
    text = "\n".join(R.versus_opus(summary, ["mel", "visqol"], paired))
    # the means are each system's own (Opus's includes its unpaired item); the difference is paired
    assert f"3.10 vs 2.67: +0.10 ± {ci:.2f}, better, 5/5 items" in text
    assert "+0.01 ± " in text and "worse (not established), 2/5 items" in text
    assert "**m@6kbps**: ViSQOL established above Opus in 1 of 1 categories (speech)." in text


def test_retrained_model_is_rescored(setup, tmp_path):
    """Resume is keyed by the model's weights too: the same name with other weights (a retrain)
    is scored again and only its rows are reported; rows without a hash (older files) are stale."""
    from opencodec.identity import model_hash
    from opencodec.pretrained import load_model

    root, man, model_path = setup
    out = tmp_path / "rep"
    kw = dict(categories=["music"], metrics=["si_snr"], max_items=1)
    _run(man, model_path, out, **kw)
    first = R.read_results(out / "results.jsonl")
    old_hash = model_hash(load_model(model_path))
    assert {r.get(R.WEIGHTS_KEY) for r in first if r["kind"] == "neural"} == {old_hash}
    assert all(R.WEIGHTS_KEY not in r for r in first if r["kind"] == "baseline")

    torch.manual_seed(1)  # "retrained": same name and architecture, other weights
    retrained = EncodecModel(EncodecConfig(name="tiny", n_filters=4, dimension=16, lstm=0, n_q=4,
                                           target_bandwidths=[1.5, 3.0]))
    path = root / "retrained" / "tiny.safetensors"
    save_model(retrained, path)
    new_hash = model_hash(load_model(path))
    assert new_hash != old_hash
    doc = _run(man, str(path), out, **kw)
    rows = R.read_results(out / "results.jsonl")
    added = rows[len(first):]
    # the two neural systems scored again with the new weights, the baseline not
    assert sorted((r["system"], r.get(R.WEIGHTS_KEY)) for r in added) == [
        ("tiny@1.5kbps", new_hash), ("tiny@3kbps", new_hash)]
    for system in ("tiny@1.5kbps", "tiny@3kbps"):
        reported = doc["categories"]["music"][system]["metrics"]["si_snr"]["mean"]
        new_row = next(r for r in added if r["system"] == system)
        old_row = next(r for r in first if r["system"] == system)
        assert reported == new_row["metrics"]["si_snr"] != old_row["metrics"]["si_snr"]

    # rows without a hash (written before it was recorded) are stale: scored again
    (out / "results.jsonl").write_text("".join(
        json.dumps({k: v for k, v in r.items() if k != R.WEIGHTS_KEY}) + "\n" for r in added))
    _run(man, str(path), out, **kw)
    again = R.read_results(out / "results.jsonl")[len(added):]
    neural = sorted((r["system"], r.get(R.WEIGHTS_KEY)) for r in again if r["kind"] == "neural")
    assert neural == [("tiny@1.5kbps", new_hash), ("tiny@3kbps", new_hash)]


@pytest.mark.parametrize("model", ["nosuch", "encodec_24khz"])
def test_cli_model_that_cannot_load_is_one_line_before_any_output(setup, tmp_path, monkeypatch,
                                                                  capsys, model):
    """A model name that does not exist, or an official model whose weights are missing offline,
    is an ``opencodec eval: error:`` line and exit status 1 (not a traceback), before the output
    folder is made."""
    from opencodec.cli import main

    root, man, model_path = setup
    monkeypatch.setenv("OPENCODEC_OFFLINE", "1")
    monkeypatch.setenv("OPENCODEC_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    out = tmp_path / "rep"
    assert main(["eval", "--models", model, "--set", str(man), "--out", str(out), "-q"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("opencodec eval: error: ") and "Traceback" not in err
    assert err.count("\n") == 1
    assert ("no model named 'nosuch'" in err if model == "nosuch"
            else "needs the weights file encodec_24khz-" in err and "OPENCODEC_OFFLINE" in err)
    assert not out.exists()


def test_cli_no_supported_bandwidth_says_so(setup, tmp_path, capsys):
    """``--bandwidths`` that no model supports: the error says so and lists what each model
    supports (not 'give --models'), and nothing is written."""
    root, man, model_path = setup
    out = tmp_path / "rep"
    assert R.main(["--models", model_path, "--bandwidths", "5", "24", "--set", str(man),
                   "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert "warning: tiny does not support 5, 24 kbps (supports 1.5, 3); skipped" in err
    assert err.endswith("opencodec eval: error: nothing to evaluate: no model supports the "
                        "requested bandwidths 5, 24; tiny supports 1.5, 3\n")
    assert not out.exists()
    # with a baseline there is still something to evaluate: the model is skipped, Opus scored
    doc = R.run_eval([model_path], [5.0], ["opus12"], man, out, categories=["music"],
                     metrics=["si_snr"], max_items=1, quiet=True)
    assert {r["system"] for r in R.read_results(out / "results.jsonl")} == {"opus-12kbps"}
    assert doc["meta"]["sample_rate"] == SR


def test_missing_category_manifest_writes_nothing(setup, tmp_path):
    root, man, model_path = setup
    out = tmp_path / "rep"
    with pytest.raises(R.EvalReportError, match=r"missing manifest\(s\) .*eval_nosuch\.jsonl"):
        R.run_eval([], None, ["opus12"], man, out, categories=["music", "nosuch"], quiet=True)
    assert not out.exists()
