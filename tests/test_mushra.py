"""MUSHRA listening test: build, submission checks, HTTP server, screening, statistics, CLI.

The browser end-to-end test is in test_mushra_browser.py."""

from __future__ import annotations

import csv
import json
import math
import os
import sqlite3
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

import scipy  # noqa: F401  (installed by make test: a missing extra fails, never skips)
import matplotlib  # noqa: F401  (installed by make test: a missing extra fails, never skips)
import av  # noqa: F401  (installed by make test: a missing extra fails, never skips)

from opencodec.cli import main as cli_main  # noqa: E402
from opencodec.eval.mushra import build as B  # noqa: E402
from opencodec.eval.mushra import db as D  # noqa: E402
from opencodec.eval.mushra import report as R  # noqa: E402
from opencodec.eval.mushra import server as S  # noqa: E402
from opencodec.eval.mushra.spec import MushraError, load_test  # noqa: E402

SR = 24000
CATEGORIES = ("clean_speech", "music")
ITEMS = 3


def _signal(seed: int, seconds: float = 0.8) -> np.ndarray:
    """A harmonic tone with a little noise, [1, T] float32, peak below 0.6."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SR)) / SR
    f0 = 150.0 + 40.0 * seed
    x = sum(0.15 / k * np.sin(2 * np.pi * k * f0 * t) for k in range(1, 6))
    x = x + 0.05 * np.sin(2 * np.pi * 6000.0 * t) + 0.01 * rng.standard_normal(t.size)
    return x[None].astype(np.float32)


def make_eval_set(root: Path, seconds: float = 0.8) -> Path:
    """eval_<category>.jsonl manifests (relative paths) over synthetic FLAC files."""
    man = root / "manifests"
    man.mkdir(parents=True)
    for c, cat in enumerate(CATEGORIES):
        (root / "audio" / cat).mkdir(parents=True)
        with open(man / f"eval_{cat}.jsonl", "w") as fh:
            for i in range(ITEMS):
                x = _signal(10 * c + i, seconds)
                sf.write(root / "audio" / cat / f"{cat}_{i}.flac", x.T, SR)
                fh.write(json.dumps({"category": cat, "item_id": f"{cat}_{i}",
                                     "path": f"../audio/{cat}/{cat}_{i}.flac", "sample_rate": SR,
                                     "channels": 1, "duration": x.shape[1] / SR}) + "\n")
    return man


@pytest.fixture(scope="module")
def eval_set(tmp_path_factory) -> Path:
    return make_eval_set(tmp_path_factory.mktemp("mushra_set"))


@pytest.fixture(scope="module")
def built(eval_set, tmp_path_factory):
    """A test: 2 items per category, hidden reference + anchor + Opus 12 kbit/s."""
    out = tmp_path_factory.mktemp("mushra_built") / "test"
    test = B.build_test(eval_set, out, baselines=["opus12"], items_per_category=2, seed=3,
                        test_id="unit-test", quiet=True)
    return test


def _read(path: Path) -> np.ndarray:
    x, sr = sf.read(path, dtype="float32", always_2d=True)
    assert sr == SR
    return x.T


def _tone_amplitude(x: np.ndarray, freq: float) -> float:
    """Amplitude of the ``freq`` component of 1-D ``x`` (least squares on sin/cos), middle half."""
    n = x.size
    sl = slice(n // 4, 3 * n // 4)
    t = np.arange(n)[sl] / SR
    basis = np.stack([np.sin(2 * np.pi * freq * t), np.cos(2 * np.pi * freq * t)], axis=1)
    coef, *_ = np.linalg.lstsq(basis, x[sl].astype(np.float64), rcond=None)
    return float(np.hypot(*coef))


# ------------------------------------------------------------------------------------------
# Anchor and item selection
# ------------------------------------------------------------------------------------------
def test_lowpass_anchor_response():
    t = np.arange(SR) / SR
    gains = {}
    for f in (1000.0, 3500.0, 7000.0):
        x = np.sin(2 * np.pi * f * t)[None].astype(np.float32)
        y = B.lowpass_anchor(x, SR)
        assert y.shape == x.shape and y.dtype == np.float32
        gains[f] = _tone_amplitude(y[0], f)
    # Butterworth order 8 applied twice: |H|^2 = 1 / (1 + (f / fc)^16).
    assert gains[1000.0] == pytest.approx(1.0, abs=1e-3)
    assert gains[3500.0] == pytest.approx(0.5, abs=5e-3)            # -6 dB at the cut-off
    assert gains[7000.0] == pytest.approx(1 / (1 + 2.0 ** 16), abs=2e-5)  # -96 dB one octave up
    # zero phase: the passed 1 kHz tone is not delayed
    x = np.sin(2 * np.pi * 1000.0 * t)[None].astype(np.float32)
    y = B.lowpass_anchor(x, SR)
    assert np.max(np.abs(y[0, SR // 4: 3 * SR // 4] - x[0, SR // 4: 3 * SR // 4])) < 2e-3
    with pytest.raises(MushraError, match="Nyquist"):
        B.lowpass_anchor(x, 6000, 3500.0)


def test_select_items_is_seeded(eval_set):
    a = B.select_items(eval_set, CATEGORIES, 2, seed=7)
    b = B.select_items(eval_set, CATEGORIES, 2, seed=7)
    assert a == b
    for cat in CATEGORIES:
        ids = [r["item_id"] for r in a[cat]]
        assert len(ids) == 2 and len(set(ids)) == 2
        assert all(i.startswith(cat) for i in ids)
        assert ids == sorted(ids)  # manifest order kept
    # the draw depends on the seed: across seeds, more than one subset shows up
    subsets = {tuple(r["item_id"] for r in B.select_items(eval_set, ["music"], 2, s)["music"])
               for s in range(10)}
    assert len(subsets) > 1
    # one category's draw does not depend on which other categories are asked for
    assert B.select_items(eval_set, ["music"], 2, 7)["music"] == a["music"]
    with pytest.raises(MushraError, match="has 3 item"):
        B.select_items(eval_set, CATEGORIES, 4, 0)
    with pytest.raises(MushraError, match="missing manifest"):
        B.select_items(eval_set, ["birdsong"], 1, 0)


# ------------------------------------------------------------------------------------------
# Build
# ------------------------------------------------------------------------------------------
def test_build_writes_blinded_conditions(built, eval_set):
    test = built
    assert test.test_id == "unit-test" and test.sample_rate == SR and test.channels == 1
    assert list(test.systems) == ["hidden-reference", "anchor-3.5kHz", "opus-12kbps"]
    assert [t.category for t in test.trials] == ["clean_speech"] * 2 + ["music"] * 2
    chosen = B.select_items(eval_set, CATEGORIES, 2, seed=3)
    assert [t.item_id for t in test.trials] == [r["item_id"] for c in CATEGORIES for r in chosen[c]]
    ids = [c.id for t in test.trials for c in t.conditions]
    assert len(set(ids)) == len(ids)
    for trial in test.trials:
        ref = _read(test.root / trial.reference)
        assert ref.shape == (1, int(0.8 * SR))
        by_system = {c.system: c for c in trial.conditions}
        for c in trial.conditions:
            # blind: neither the id nor the file name says which system it is
            assert Path(c.file).name == f"{c.id}.wav"
            assert not any(word in c.file for word in ("opus", "anchor", "hidden", "ref"))
            wav = _read(test.root / c.file)
            assert wav.shape == ref.shape
        hidden = _read(test.root / by_system["hidden-reference"].file)
        np.testing.assert_array_equal(hidden, ref)
        anchor = _read(test.root / by_system["anchor-3.5kHz"].file)
        np.testing.assert_allclose(anchor, B.lowpass_anchor(ref, SR), atol=3 / 32768)
        # the 6 kHz component of the items is gone from the anchor, present in the reference
        assert _tone_amplitude(ref[0], 6000.0) > 0.04
        assert _tone_amplitude(anchor[0], 6000.0) < 1e-3
        opus = by_system["opus-12kbps"]
        assert opus.actual_kbps is not None and 5 < opus.actual_kbps < 20
        coded = _read(test.root / opus.file)[0]
        assert np.corrcoef(coded, ref[0])[0, 1] > 0.9  # aligned and close
        assert 0 < np.max(np.abs(coded - ref[0]))       # but not identical
        assert trial.condition("nope") is None
    public = json.dumps(test.public())
    for system in test.systems:
        assert system not in public
    assert "opus" not in public and "anchor" not in public
    # the page gets every trial and condition
    assert sum(len(t["conditions"]) for t in test.public()["trials"]) == 12


def test_build_max_seconds_force_and_no_partial_output(eval_set, tmp_path):
    out = tmp_path / "short"
    test = B.build_test(eval_set, out, categories=["music"], items_per_category=1,
                        max_seconds=0.25, quiet=True)
    assert [list(test.systems.values())] == [["hidden_reference", "anchor"]]  # no codec at all
    assert _read(out / test.trials[0].reference).shape == (1, SR // 4)
    assert test.test_id.startswith("short-")
    with pytest.raises(MushraError, match="exists and is not empty"):
        B.build_test(eval_set, out, categories=["music"], items_per_category=1, quiet=True)
    again = B.build_test(eval_set, out, categories=["music"], items_per_category=1, force=True,
                         quiet=True, test_id="replaced")
    assert again.test_id == "replaced" and load_test(out).test_id == "replaced"
    # an empty ratings database (the server creates one at start) does not block a rebuild ...
    D.connect(out / "ratings.sqlite").close()
    again = B.build_test(eval_set, out, categories=["music"], items_per_category=1, force=True,
                         quiet=True, test_id="replaced")
    # ... but a folder holding ratings is never replaced
    D.store_trial(out / "ratings.sqlite", "replaced", "x", again.trials[0].trial_id,
                  [(c.id, c.system, 50.0) for c in again.trials[0].conditions])
    with pytest.raises(MushraError, match="holds ratings"):
        B.build_test(eval_set, out, categories=["music"], items_per_category=1, force=True, quiet=True)
    # a failure in the middle of a build leaves nothing behind
    bad = tmp_path / "bad_set"
    bad.mkdir()
    rows = [json.loads(line) for line in (eval_set / "eval_music.jsonl").read_text().splitlines()]
    rows[1]["path"] = str(tmp_path / "missing.flac")
    for r in rows:
        r["path"] = str((eval_set / r["path"]).resolve()) if not Path(r["path"]).is_absolute() else r["path"]
    (bad / "eval_music.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(MushraError, match="cannot read item .*missing.flac"):
        B.build_test(bad, tmp_path / "never", items_per_category=3, quiet=True)
    assert not (tmp_path / "never").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]
    with pytest.raises(MushraError, match="unknown baseline"):
        B.build_test(eval_set, tmp_path / "x", baselines=["vorbis9"], quiet=True)
    with pytest.raises(MushraError, match="is not valid"):
        B.build_test(eval_set, tmp_path / "x", test_id="../evil", quiet=True)


def test_build_headroom_gain_keeps_relative_levels(eval_set, tmp_path, monkeypatch):
    real = B.make_conditions

    def loud(ref, *args, **kw):  # an anchor 5x too loud: peaks above full scale
        conds = real(ref, *args, **kw)
        audio, kbps = conds["anchor-3.5kHz"]
        conds["anchor-3.5kHz"] = (audio * 5.0, kbps)
        return conds

    monkeypatch.setattr(B, "make_conditions", loud)
    test = B.build_test(eval_set, tmp_path / "loud", categories=["music"], items_per_category=1,
                        quiet=True)
    trial = test.trials[0]
    gain = test.raw["trials"][0]["gain"]
    anchor = _read(test.root / next(c.file for c in trial.conditions if c.system.startswith("anchor")))
    ref = _read(test.root / trial.reference)
    assert gain < 1.0
    assert np.max(np.abs(anchor)) == pytest.approx(0.99, abs=1e-4)
    # the reference was scaled by the same gain: the anchor is still 5x its low-passed version
    np.testing.assert_allclose(anchor, 5.0 * B.lowpass_anchor(ref, SR), atol=3e-4)


def test_build_with_a_neural_model(eval_set, tmp_path):
    import torch

    from opencodec.model import EncodecConfig, EncodecModel
    from opencodec.pretrained import save_model

    torch.manual_seed(0)
    model = EncodecModel(EncodecConfig(name="tiny", n_filters=4, dimension=16, lstm=0, n_q=4,
                                       target_bandwidths=[1.5, 3.0]))
    path = tmp_path / "tiny.safetensors"
    save_model(model, path)
    test = B.build_test(eval_set, tmp_path / "neural", models=[str(path)], bandwidths=[1.5],
                        categories=["clean_speech"], items_per_category=1, quiet=True)
    assert test.systems == {"hidden-reference": "hidden_reference", "anchor-3.5kHz": "anchor",
                            "tiny@1.5kbps": "neural"}
    cond = next(c for c in test.trials[0].conditions if c.system == "tiny@1.5kbps")
    assert cond.actual_kbps is not None and cond.actual_kbps >= 1.5  # .ecdc header included
    assert _read(test.root / cond.file).shape == (1, int(0.8 * SR))
    with pytest.raises(MushraError, match="does not support 6 kbps"):
        B.build_test(eval_set, tmp_path / "neural2", models=[str(path)], bandwidths=[6.0], quiet=True)


# ------------------------------------------------------------------------------------------
# Submissions
# ------------------------------------------------------------------------------------------
def _good(test, trial_index: int = 0, listener: str = "alice", values=None) -> dict:
    trial = test.trials[trial_index]
    values = values or [100, 20, 65.5][: len(trial.conditions)]
    return {"test_id": test.test_id, "trial_id": trial.trial_id, "listener": listener,
            "ratings": [{"condition": c.id, "rating": v} for c, v in zip(trial.conditions, values)]}


def _bad_submissions(test) -> list[tuple[str, dict | list | str, str]]:
    """(what, payload, expected message fragment) for every rejection rule."""
    good = _good(test)
    c0 = good["ratings"][0]["condition"]

    def with_(**kw):
        return {**good, **kw}

    def rating(i, value):
        ratings = [dict(r) for r in good["ratings"]]
        ratings[i]["rating"] = value
        return with_(ratings=ratings)

    return [
        ("not an object", [1, 2], "must be a JSON object"),
        ("unknown test", with_(test_id="other-test"), "unknown test id 'other-test'"),
        ("unknown trial", with_(trial_id="t99"), "unknown trial id 't99'"),
        ("empty listener", with_(listener="   "), "listener id is missing or empty"),
        ("listener not a string", with_(listener=7), "listener id is missing or empty"),
        ("listener control chars", with_(listener="a\nb"), "printable"),
        ("missing field", {k: v for k, v in good.items() if k != "listener"},
         "missing field(s) ['listener']"),
        ("extra field", with_(extra=1), "unknown field(s) ['extra']"),
        ("ratings not a list", with_(ratings={c0: 50}), "must be a list"),
        ("missing rating", with_(ratings=good["ratings"][:-1]), "missing rating(s)"),
        ("no ratings", with_(ratings=[]), "missing rating(s)"),
        ("duplicate", with_(ratings=good["ratings"] + [good["ratings"][0]]), "rated more than once"),
        ("unknown condition", with_(ratings=good["ratings"] + [{"condition": "ffffffff", "rating": 3}]),
         "unknown condition 'ffffffff'"),
        ("above 100", rating(1, 100.5), "out of range"),
        ("below 0", rating(1, -1), "out of range"),
        ("huge", rating(1, 10 ** 400), "out of range"),
        ("string", rating(1, "50"), "must be a number"),
        ("bool", rating(1, True), "must be a number"),
        ("null", rating(1, None), "must be a number"),
        ("entry fields", with_(ratings=[{"condition": c0}]), "exactly the fields"),
    ]


def test_validate_submission(built):
    test = built
    sub = S.validate_submission(test, _good(test, listener="  alice "))
    trial = test.trials[0]
    assert sub.listener == "alice" and sub.trial_id == trial.trial_id
    assert sub.ratings == tuple((c.id, c.system, v) for c, v in zip(trial.conditions, (100.0, 20.0, 65.5)))
    # order of the ratings in the request does not matter; bounds are inclusive
    shuffled = _good(test, values=[0, 100, 1])
    shuffled["ratings"].reverse()
    assert [r[2] for r in S.validate_submission(test, shuffled).ratings] == [0.0, 100.0, 1.0]
    for what, payload, message in _bad_submissions(test):
        with pytest.raises(S.SubmissionError) as info:
            S.validate_submission(test, payload)
        assert message in str(info.value), what
    for text in (b'{"rating": NaN}', b"[Infinity]", b"{", b"\xff"):
        with pytest.raises(S.SubmissionError):
            S.parse_json(text)


def test_parse_range():
    assert S.parse_range("bytes=0-9", 100) == (0, 9)
    assert S.parse_range("bytes=90-", 100) == (90, 99)
    assert S.parse_range("bytes=-10", 100) == (90, 99)
    assert S.parse_range("bytes=50-500", 100) == (50, 99)
    for bad in ("bytes=100-", "bytes=5-2", "bytes=-", "items=0-1", "bytes=0-1,4-5"):
        assert S.parse_range(bad, 100) is None, bad


# ------------------------------------------------------------------------------------------
# HTTP server
# ------------------------------------------------------------------------------------------
@pytest.fixture()
def server(built, tmp_path):
    srv = S.make_server(built.root, port=0, db_path=tmp_path / "ratings.sqlite")
    S.serve_in_thread(srv)
    yield srv
    srv.shutdown()
    srv.server_close()


def _request(url: str, data: bytes | None = None, headers: dict | None = None):
    req = urllib.request.Request(url, data=data, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as err:
        return err.code, dict(err.headers), err.read()


def _post(url: str, payload, content_type: str = "application/json"):
    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    return _request(url + "api/submit", body, {"Content-Type": content_type})


def _rows(db_path: Path) -> list[tuple]:
    if not db_path.exists():
        return []
    with sqlite3.connect(db_path) as conn:
        return conn.execute("SELECT test_id, listener, trial_id, condition_id, system, rating "
                            "FROM ratings ORDER BY trial_id, condition_id").fetchall()


def test_server_pages_and_audio(server, built):
    url = server.url
    assert url.startswith("http://127.0.0.1:") and not url.endswith(":0/")
    status, headers, body = _request(url)
    assert status == 200 and b"MUSHRA" in body and headers["Content-Type"].startswith("text/html")
    for name in ("mushra.js", "mushra.css"):
        assert _request(url + "static/" + name)[0] == 200
    status, _, body = _request(url + "api/test")
    public = json.loads(body)
    assert status == 200 and public == built.public()
    trial = built.trials[0]
    first = public["trials"][0]["conditions"][0]
    audio_url = first["url"]
    status, headers, body = _request(url + audio_url.lstrip("/"))
    (cond,) = [c for c in trial.conditions if c.id == first["id"]]
    file_bytes = (built.root / cond.file).read_bytes()
    assert status == 200 and body == file_bytes and headers["Content-Type"] == "audio/wav"
    status, headers, body = _request(url + audio_url.lstrip("/"), headers={"Range": "bytes=10-19"})
    assert status == 206 and body == file_bytes[10:20]
    assert headers["Content-Range"] == f"bytes 10-19/{len(file_bytes)}"
    assert _request(url + audio_url.lstrip("/"), headers={"Range": "bytes=999999999-"})[0] == 416
    # only the files named in test.json are served
    for path in ("test.json", "audio/../test.json", "audio/t01/../../test.json", "static/../spec.py",
                 "audio/t01/nothing.wav", "ratings.sqlite"):
        status, _, body = _request(url + path)
        assert status == 404, path
        assert "error" in json.loads(body)
    status, _, body = _request(url + "api/progress?listener=nobody")
    assert status == 200 and json.loads(body)["done"] == []
    assert _request(url + "api/progress")[0] == 400


def test_server_stores_valid_and_rejects_bad_submissions(server, built):
    url, db_path = server.url, server.db_path
    status, _, body = _post(url, _good(built, 0, "alice", [100, 15, 72]))
    answer = json.loads(body)
    assert status == 200 and answer["ok"] and answer["stored"] == 3 and not answer["replaced"]
    trial = built.trials[0]
    expected = sorted((built.test_id, "alice", trial.trial_id, c.id, c.system, v)
                      for c, v in zip(trial.conditions, (100.0, 15.0, 72.0)))
    assert _rows(db_path) == expected
    # a resubmission replaces the listener's ratings of that trial
    status, _, body = _post(url, _good(built, 0, "alice", [95, 10, 70]))
    assert status == 200 and json.loads(body)["replaced"]
    assert sorted(r[5] for r in _rows(db_path)) == [10.0, 70.0, 95.0]
    _, _, body = _request(url + "api/progress?listener=alice")
    assert json.loads(body)["done"] == [trial.trial_id]
    before = _rows(db_path)
    for what, payload, message in _bad_submissions(built):
        status, _, body = _post(url, payload)
        answer = json.loads(body)
        assert status == 400, what
        assert answer["ok"] is False and message in answer["error"], (what, answer)
    for raw in (b'{"test_id": NaN}', b"not json", b"\xff\xfe"):
        status, _, body = _post(url, raw)
        assert status == 400 and json.loads(body)["ok"] is False
    status, _, body = _post(url, _good(built), content_type="text/plain")
    assert status == 400 and "Content-Type" in json.loads(body)["error"]
    status, _, _ = _post(url, b"x" * (S.MAX_BODY_BYTES + 1))
    assert status == 413
    assert _request(url + "api/other", b"{}", {"Content-Type": "application/json"})[0] == 404
    assert _rows(db_path) == before  # nothing of the bad submissions was stored


# ------------------------------------------------------------------------------------------
# Screening and statistics (hand-made ratings, known answers)
# ------------------------------------------------------------------------------------------
def _ratings(listener: str, hidden: list[float], test_id: str = "t") -> list[D.Rating]:
    """One hidden-reference and one codec rating per trial."""
    out = []
    for i, h in enumerate(hidden):
        out.append(D.Rating(test_id, listener, f"t{i:02d}", "c1", "hidden-reference", h))
        out.append(D.Rating(test_id, listener, f"t{i:02d}", "c2", "codec", 40.0))
    return out


def test_screening_known_answers():
    ratings = (_ratings("perfect", [100] * 6)
               + _ratings("one_of_six", [100] * 5 + [89.9])          # 16.7 % > 15 %: excluded
               + _ratings("one_of_seven", [100] * 6 + [50])          # 14.3 %: kept
               + _ratings("three_of_twenty", [100] * 17 + [0] * 3)   # exactly 15 %: kept
               + _ratings("four_of_twenty", [100] * 16 + [0] * 4)    # 20 %: excluded
               + _ratings("at_ninety", [90] * 4))                    # 90 is not below 90: kept
    s = R.screen_listeners(ratings, "hidden-reference")
    assert {k: v.excluded for k, v in s.items()} == {
        "perfect": False, "one_of_six": True, "one_of_seven": False, "three_of_twenty": False,
        "four_of_twenty": True, "at_ninety": False}
    assert (s["one_of_six"].n_trials, s["one_of_six"].n_hidden_reference_below) == (6, 1)
    assert s["one_of_six"].fraction == pytest.approx(1 / 6)
    assert s["three_of_twenty"].fraction == pytest.approx(0.15)
    assert s["at_ninety"].n_hidden_reference_below == 0


#: t(0.975, dof): Student t quantiles for 95 % two-sided intervals (from tables).
T_975 = {2: 4.302652729749464, 4: 2.7764451051977987, 5: 2.570581835636314, 10: 2.2281388519649385}


def _store(db_path: Path, test, listener: str, per_trial: list[list[float]]) -> None:
    for trial, values in zip(test.trials, per_trial):
        D.store_trial(db_path, test.test_id, listener, trial.trial_id,
                      [(c.id, c.system, v) for c, v in zip(trial.conditions, values)])


def test_report_known_means_and_intervals(built, tmp_path):
    test = built  # systems: hidden-reference, anchor-3.5kHz, opus-12kbps; 4 trials
    db_path = tmp_path / "r.sqlite"
    # kept: hidden reference below 90 in 0 of 4 trials
    _store(db_path, test, "ann", [[100, 10, 50], [100, 20, 60], [95, 30, 70], [100, 20, 80]])
    _store(db_path, test, "bob", [[100, 0, 40], [90, 10, 50], [100, 20, 60], [100, 30, 70]])
    # excluded: 1 of 4 trials (25 %) with the hidden reference below 90
    _store(db_path, test, "eve", [[50, 90, 99], [100, 90, 99], [100, 90, 99], [100, 90, 99]])
    # only the first 3 trials: kept (0 of 3 below 90)
    _store(db_path, test, "joe", [[100, 5, 55], [100, 15, 65], [100, 25, 75]])
    summary = R.make_report(test.root, db_path, tmp_path / "rep")
    assert summary["kept"] == ["ann", "bob", "joe"] and summary["excluded"] == ["eve"]
    assert summary["n_ratings"] == 45 and summary["n_ratings_kept"] == 33

    opus = summary["groups"][R.ALL]["opus-12kbps"]
    values = [50, 60, 70, 80, 40, 50, 60, 70, 55, 65, 75]
    n, mean = 11, sum(values) / 11
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    assert opus["n"] == n and opus["n_listeners"] == 3
    assert opus["mean"] == pytest.approx(mean)
    t10 = T_975[10]
    assert opus["ci95"] == pytest.approx(t10 * sd / math.sqrt(n))
    assert opus["ci_low"] == pytest.approx(mean - t10 * sd / math.sqrt(n))
    # the bitrate: total bits over total seconds of the system's clips (duration-weighted)
    secs = {t["trial_id"]: t["duration_s"] for t in test.raw["trials"]}
    pairs = [(c.actual_kbps, secs[t.trial_id]) for t in test.trials for c in t.conditions
             if c.system == "opus-12kbps"]
    assert opus["actual_kbps"] == pytest.approx(sum(k * d for k, d in pairs) / sum(d for _, d in pairs))
    # music = trials 3 and 4: anchor ratings 30, 20, 20, 30, 25 -> mean 25, sd 5
    anchor = summary["groups"]["music"]["anchor-3.5kHz"]
    assert anchor["n"] == 5 and anchor["mean"] == pytest.approx(25.0)
    assert anchor["ci95"] == pytest.approx(T_975[4] * 5.0 / math.sqrt(5))
    # clean speech = trials 1 and 2: hidden reference 100, 100, 100, 90, 100, 100
    hidden = summary["groups"]["clean_speech"]["hidden-reference"]
    hv = [100, 100, 100, 90, 100, 100]
    hm = sum(hv) / 6
    hs = math.sqrt(sum((v - hm) ** 2 for v in hv) / 5)
    assert hidden["mean"] == pytest.approx(hm)
    assert hidden["ci95"] == pytest.approx(T_975[5] * hs / math.sqrt(6))

    # files: CSV and JSON agree with the summary, Markdown lists the exclusion, PNG is a PNG
    out = tmp_path / "rep"
    with open(out / "mushra_summary.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 3 * 3  # (all + 2 categories) x 3 systems
    row = next(r for r in rows if r["category"] == "all" and r["system"] == "opus-12kbps")
    assert float(row["mean"]) == pytest.approx(mean) and int(row["n_ratings"]) == n
    assert json.loads((out / "mushra_summary.json").read_text())["excluded"] == ["eve"]
    md = (out / "mushra_report.md").read_text()
    assert "excluded: 1 (eve)" in md and "| eve | 4 | 1 | 25.0% | no |" in md
    assert (out / "mushra.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(FileExistsError):
        R.make_report(test.root, db_path, out)
    assert R.make_report(test.root, db_path, out, force=True)["kept"] == ["ann", "bob", "joe"]


def test_ci_of_three_ratings():
    mean, ci, n = R.mean_ci95([50.0, 60.0, 70.0])
    assert (mean, n) == (60.0, 3)
    assert ci == pytest.approx(T_975[2] * 10.0 / math.sqrt(3))  # = 24.841...
    assert ci == pytest.approx(24.8413, abs=1e-3)


def test_report_everyone_excluded_and_errors(built, tmp_path):
    db_path = tmp_path / "r.sqlite"
    _store(db_path, built, "eve", [[10, 50, 50]] * 4)
    summary = R.make_report(built.root, db_path, tmp_path / "rep")
    assert summary["kept"] == [] and summary["plot"] is None
    assert all(s["mean"] is None and s["n"] == 0 for s in summary["groups"][R.ALL].values())
    assert not (tmp_path / "rep" / "mushra.png").exists()
    with pytest.raises(MushraError, match="not found"):
        R.make_report(built.root, tmp_path / "none.sqlite", tmp_path / "rep2")
    D.store_trial(tmp_path / "other.sqlite", "other-test", "x", "t01", [("a", "b", 1.0)])
    with pytest.raises(MushraError, match="no ratings for test 'unit-test'"):
        R.make_report(built.root, tmp_path / "other.sqlite", tmp_path / "rep3")


# ------------------------------------------------------------------------------------------
# Command line
# ------------------------------------------------------------------------------------------
def test_build_creates_missing_parent_folders(eval_set, tmp_path, monkeypatch, capsys):
    """--out mushra/x in a fresh folder: the parents are created (as every other command does);
    a non-empty output is still refused without --force, and a file on the way is an error."""
    monkeypatch.chdir(tmp_path)
    args = ["mushra", "build", "--set", str(eval_set), "--out", "mushra/x", "-n", "1", "--categories", "music",
            "--max-seconds", "0.25", "-q"]
    assert cli_main(args) == 0
    assert "built MUSHRA test" in capsys.readouterr().out
    assert load_test(tmp_path / "mushra" / "x").trials and os.listdir(tmp_path / "mushra") == ["x"]
    assert cli_main(args) == 1
    err = capsys.readouterr().err
    assert err.startswith("opencodec mushra build: error: ")  # the prefix names the action
    assert "mushra/x exists and is not empty (use -f/--force" in err
    (tmp_path / "file").write_text("x")
    assert cli_main(args[:4] + ["--out", "file/sub/x"] + args[6:]) == 1
    assert f"cannot create file/sub/x: {tmp_path / 'file'} is not a folder" in capsys.readouterr().err
    assert sorted(os.listdir(tmp_path)) == ["file", "mushra"]


def test_cli(eval_set, tmp_path, capsys):
    assert cli_main(["mushra"]) == 2
    assert "an action is required" in capsys.readouterr().err
    assert cli_main(["mushra", "--help"]) == 0
    assert "build" in capsys.readouterr().out
    assert cli_main(["mushra", "build", "--set", str(eval_set)]) == 2  # --out missing
    capsys.readouterr()
    out = tmp_path / "cli_test"
    assert cli_main(["mushra", "build", "--set", str(eval_set), "--out", str(out), "-n", "1",
                     "--categories", "music", "--baselines", "mp3_64", "--max-seconds", "0.5",
                     "--test-id", "cli", "-q"]) == 0
    assert "built MUSHRA test cli" in capsys.readouterr().out
    test = load_test(out)
    assert list(test.systems) == ["hidden-reference", "anchor-3.5kHz", "mp3-64kbps"]
    assert cli_main(["mushra", "build", "--set", str(eval_set), "--out", str(out), "-q"]) == 1
    assert "exists and is not empty" in capsys.readouterr().err
    assert cli_main(["mushra", "report", str(out)]) == 1
    assert "not found" in capsys.readouterr().err
    _store(out / "ratings.sqlite", test, "ann", [[100, 20, 80]])
    assert cli_main(["mushra", "report", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "listeners kept: 1, excluded: 0" in printed and "mp3-64kbps" in printed
    assert (out / "report" / "mushra_report.md").is_file()
    assert cli_main(["mushra", "serve", str(tmp_path / "missing")]) == 1
    assert "test.json not found" in capsys.readouterr().err
    assert cli_main(["mushra", "serve", str(out), "--port", "70000"]) == 2
