"""``opencodec mushra``: ``build`` refuses categories without a name and silent items;
``report`` cuts interval bounds to the 0-100 rating scale (table, CSV, plot) and escapes
listener ids in the Listeners table."""

from __future__ import annotations

import csv
import json
import math
import re
import typing as tp
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from opencodec.eval.items import NO_CATEGORY_NAMED
from opencodec.eval.mushra import build as B, db as D, report as R
from opencodec.eval.mushra.spec import MushraError

from train_helpers import SR, noise_seconds as _noise, write_category_set as _write_set  # noqa: F401


T_975_1 = 12.706204736174707  # Student t, 0.975 quantile, 1 degree of freedom


def test_interval_bounds_are_cut_to_the_rating_scale() -> None:
    high = R._stat([95.0, 100.0])  # mean 97.5, s = 3.536, half-width t(1) * s / sqrt(2) = 31.77
    half = T_975_1 * math.sqrt(12.5) / math.sqrt(2)
    assert high["mean"] == pytest.approx(97.5) and high["ci95"] == pytest.approx(half)
    assert high["ci_low"] == pytest.approx(97.5 - half) and high["ci_high"] == 100.0
    low = R._stat([0.0, 5.0])
    assert low["ci_low"] == 0.0 and low["ci_high"] == pytest.approx(2.5 + half)
    inside = R._stat([40.0, 50.0, 60.0, 50.0])  # far from the ends: mean -/+ half-width, uncut
    assert inside["ci_low"] == pytest.approx(inside["mean"] - inside["ci95"])
    assert inside["ci_high"] == pytest.approx(inside["mean"] + inside["ci95"])
    assert R._stat([70.0])["ci_low"] is None  # one rating: no interval


@pytest.fixture(scope="module")
def small_test(tmp_path_factory: pytest.TempPathFactory):
    """A MUSHRA test of one music item: hidden reference and anchor (no codec)."""
    root = tmp_path_factory.mktemp("f9_mushra")
    t = np.arange(int(0.5 * SR)) / SR
    sf.write(root / "a.wav", (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32), SR)
    (root / "eval_music.jsonl").write_text(json.dumps({"path": "a.wav"}) + "\n")
    return B.build_test(root, root / "test", items_per_category=1, seed=0, test_id="f9", quiet=True)


def test_report_shows_cut_bounds_in_table_csv_and_plot(small_test, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    from matplotlib.axes import Axes

    trial = small_test.trials[0]
    db_path = tmp_path / "r.sqlite"
    for listener, hidden, anchor in (("ann", 95.0, 5.0), ("bob", 100.0, 0.0)):
        values = {"hidden-reference": hidden, "anchor-3.5kHz": anchor}
        D.store_trial(db_path, small_test.test_id, listener, trial.trial_id,
                      [(c.id, c.system, values[c.system]) for c in trial.conditions])
    bars: list[tuple[list[float], tp.Any]] = []  # (means, yerr) of each errorbar call
    real_errorbar = Axes.errorbar

    def errorbar(self, x, y, yerr=None, **kwargs):  # noqa: ANN001, ANN202
        bars.append((list(y), yerr))
        return real_errorbar(self, x, y, yerr=yerr, **kwargs)

    monkeypatch.setattr(Axes, "errorbar", errorbar)
    summary = R.make_report(small_test.root, db_path, tmp_path / "rep")
    half = T_975_1 * math.sqrt(12.5) / math.sqrt(2)  # both systems: two ratings 5 apart
    hidden = summary["groups"][R.ALL]["hidden-reference"]
    assert (hidden["ci_low"], hidden["ci_high"]) == (pytest.approx(97.5 - half), 100.0)
    anchor = summary["groups"][R.ALL]["anchor-3.5kHz"]
    assert (anchor["ci_low"], anchor["ci_high"]) == (0.0, pytest.approx(2.5 + half))

    text = (tmp_path / "rep" / "mushra_report.md").read_text()
    assert "| hidden-reference | – | 97.5 | ± 31.8 [65.7, 100.0] | 2 | 2 |" in text
    assert "| anchor-3.5kHz | – | 2.5 | ± 31.8 [0.0, 34.3] | 2 | 2 |" in text
    assert "cut to the 0–100 rating scale" in text
    with open(tmp_path / "rep" / "mushra_summary.csv", newline="") as fh:
        rows = {(r["category"], r["system"]): r for r in csv.DictReader(fh)}
    assert float(rows[("all", "hidden-reference")]["ci_high"]) == 100.0
    assert float(rows[("all", "anchor-3.5kHz")]["ci_low"]) == 0.0
    assert float(rows[("all", "hidden-reference")]["ci95"]) == pytest.approx(half)  # uncut
    # the plot's error bars reach exactly the table's bounds (asymmetric where cut)
    by_mean = {round(y[0], 6): yerr for y, yerr in bars}
    lows, highs = by_mean[97.5]
    assert (lows[0], highs[0]) == (pytest.approx(half), pytest.approx(2.5))
    lows, highs = by_mean[2.5]
    assert (lows[0], highs[0]) == (pytest.approx(2.5), pytest.approx(half))


def test_mushra_build_refuses_categories_without_a_name(tmp_path):
    eval_set = _write_set(tmp_path / "set", "music", {"a": _noise(1.0)})
    with pytest.raises(MushraError, match=re.escape(NO_CATEGORY_NAMED)):
        B.build_test(eval_set, tmp_path / "test", categories=[], items_per_category=1, quiet=True)
    assert not (tmp_path / "test").exists()
    B.build_test(eval_set, tmp_path / "test", categories=None, items_per_category=1, quiet=True)
    assert (tmp_path / "test" / "test.json").is_file()


# ------------------------------------------------------------------------------------------
# 3. mushra build refuses a silent item
# ------------------------------------------------------------------------------------------
def test_mushra_build_refuses_a_silent_item(tmp_path):
    silent = {"loud": _noise(1.0, seed=3), "silence": np.zeros(SR, np.float32)}
    eval_set = _write_set(tmp_path / "set", "music", silent)
    with pytest.raises(MushraError, match=r"item 'silence' of music .* silent or nearly so "
                                          r"\(-inf dBFS RMS, below -60 dBFS\)"):
        B.build_test(eval_set, tmp_path / "test", items_per_category=2, quiet=True)
    assert not (tmp_path / "test").exists()
    assert not list(tmp_path.glob(".test.building-*"))
    # -80 dBFS noise is refused too; a quiet but audible item (-50 dBFS) is kept
    quiet = {"faint": _noise(1.0, level=1e-4, seed=4)}
    with pytest.raises(MushraError, match=r"'faint' .* \(-(79\.9|80\.0) dBFS RMS"):
        B.build_test(_write_set(tmp_path / "q", "music", quiet), tmp_path / "t2",
                     items_per_category=1, quiet=True)
    audible = {"soft": _noise(1.0, level=10 ** (-50 / 20), seed=5)}
    test = B.build_test(_write_set(tmp_path / "s", "music", audible), tmp_path / "t3",
                        items_per_category=1, quiet=True)
    assert (tmp_path / "t3" / "test.json").is_file() and test is not None


def test_mushra_report_escapes_a_listener_id(tmp_path):
    """A listener id is typed on the rating page (any printable text, ``|`` included); the
    Listeners table of mushra_report.md keeps one row of five cells per listener."""
    from opencodec.eval.mushra import db
    from opencodec.eval.mushra.report import make_report

    eval_set = _write_set(tmp_path / "set", "music", {"a": _noise(1.0, seed=6)})
    test = B.build_test(eval_set, tmp_path / "test", items_per_category=1, quiet=True)
    raw = json.loads((tmp_path / "test" / "test.json").read_text())
    trial = raw["trials"][0]
    for listener in ("alice|bob", "carol"):
        db.store_trial(tmp_path / "test" / "ratings.sqlite", test.test_id, listener,
                       trial["trial_id"], [(c["id"], c["system"], 100.0 if c["system"] ==
                                            "hidden-reference" else 40.0)
                                           for c in trial["conditions"]])
    make_report(tmp_path / "test")
    text = (tmp_path / "test" / "report" / "mushra_report.md").read_text()
    rows = [line for line in text.splitlines() if line.startswith("| alice")]
    assert rows == ["| alice\\|bob | 1 | 0 | 0.0% | yes |"]
