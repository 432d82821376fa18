"""Small fixes of walk 4 (helper f9): ``opencodec eval`` writes its plots atomically, MUSHRA
interval bounds stay on the 0-100 rating scale, and ``opencodec decompress`` (and the API's
``decompress``) names a weights file given where an ``.ecdc`` file goes."""

from __future__ import annotations

import csv
import io
import json
import math
import re
import typing as tp
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
import matplotlib  # noqa: F401  (installed by make test: a missing extra fails, never skips)

from opencodec import cli
from opencodec.compress import decompress, decompress_from_file
from opencodec.errors import BitstreamError
from opencodec.eval.mushra import build as B
from opencodec.eval.mushra import db as D
from opencodec.eval.mushra import report as R
from opencodec.eval.report_writer import make_plots
from opencodec.pretrained import BUNDLED_DIR

SR = 24000
T_975_1 = 12.706204736174707  # Student t, 0.975 quantile, 1 degree of freedom


# 1. plots written atomically ----------------------------------------------------------------

class _Interrupted(KeyboardInterrupt):
    """The Ctrl-C the fake ``savefig`` raises halfway through its file."""


@pytest.fixture()
def interrupted_savefig(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """``Figure.savefig`` writes the first bytes of a PNG to its target, then is interrupted;
    returns the list of the targets it was given."""
    from matplotlib.figure import Figure

    targets: list[str] = []

    def savefig(self, fname, **kwargs) -> None:  # noqa: ANN001
        targets.append(str(fname))
        with open(fname, "wb") as fh:
            fh.write(b"\x89PNG\r\n\x1a\n partial")
        raise _Interrupted

    monkeypatch.setattr(Figure, "savefig", savefig)
    return targets


def _eval_summary() -> dict:
    """A summary as :func:`opencodec.eval.summary.summarize` returns it: one category, two
    systems of one family, one metric."""
    def system(kbps: float, value: float) -> dict:
        return {"family": "opus", "actual_kbps": {"mean": kbps},
                "metrics": {"visqol": {"mean": value, "ci95": 0.1, "n": 2}}}
    return {"speech": {"opus-6kbps": system(6.0, 3.0), "opus-12kbps": system(12.0, 3.8)}}


def test_an_interrupted_eval_plot_leaves_the_old_png_and_no_partial_file(
        tmp_path: Path, interrupted_savefig: list[str]) -> None:
    plots = tmp_path / "plots"
    plots.mkdir()
    old = plots / "speech_visqol.png"
    old.write_bytes(b"old plot")
    with pytest.raises(_Interrupted):
        make_plots(_eval_summary(), tmp_path, ["visqol"])
    assert interrupted_savefig and interrupted_savefig[0] != str(old)  # written elsewhere first
    assert old.read_bytes() == b"old plot"
    assert sorted(p.name for p in plots.iterdir()) == ["speech_visqol.png"]  # no temporary left


def test_an_interrupted_mushra_plot_leaves_no_partial_file(tmp_path: Path,
                                                           interrupted_savefig: list[str]) -> None:
    summary = {"test_id": "t", "kept": ["ann"],
               "groups": {R.ALL: {"hidden-reference": {"mean": 99.0, "ci95": 1.0, "ci_low": 98.0,
                                                       "ci_high": 100.0}}}}
    with pytest.raises(_Interrupted):
        R.plot_png(summary, tmp_path / "mushra.png")
    assert interrupted_savefig and list(tmp_path.iterdir()) == []


def test_eval_plots_are_complete_pngs(tmp_path: Path) -> None:
    made = make_plots(_eval_summary(), tmp_path, ["visqol"])
    assert made == {"speech": ["plots/speech_visqol.png"]}
    assert (tmp_path / "plots" / "speech_visqol.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [p.name for p in (tmp_path / "plots").iterdir()] == ["speech_visqol.png"]


# 2. MUSHRA intervals on the rating scale -----------------------------------------------------

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


# 3. decompress names a weights file -----------------------------------------------------------

CODEC = BUNDLED_DIR / "opencodec_24khz.safetensors"
READS = "not an .ecdc file: {} reads compressed files (.ecdc, written by opencodec compress)"


def test_decompress_command_names_a_weights_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out.wav"
    assert cli.main(["decompress", str(CODEC), str(out)]) == 1
    err = capsys.readouterr().err
    assert err == (f"opencodec: error: {CODEC}: a safetensors weights file (a codec, opencodec_24khz), "
                   f"{READS.format('opencodec decompress')}\n")
    assert not out.exists()
    ckpt = tmp_path / "z.pt"
    torch.save({"a": torch.zeros(2)}, ckpt)
    assert cli.main(["decompress", str(ckpt), str(out)]) == 1
    assert capsys.readouterr().err == (f"opencodec: error: {ckpt}: a torch checkpoint (a zip archive as "
                                       f"torch.save writes: .pt, .th), "
                                       f"{READS.format('opencodec decompress')}\n")
    assert not out.exists()


def test_decompress_api_names_a_weights_file_and_a_packet_stream() -> None:
    data = CODEC.read_bytes()
    said = f"a safetensors weights file (a codec, opencodec_24khz), {READS.format('decompress')}"
    with pytest.raises(BitstreamError, match=f"^{re.escape(said)}$"):
        decompress(data)
    with open(CODEC, "rb") as fo, pytest.raises(BitstreamError, match="^a safetensors weights file"):
        decompress_from_file(fo)
    with pytest.raises(BitstreamError, match=r"got b'OCSP' \(a packet stream: use opencodec stream-decode\)$"):
        decompress(b"OCSPH" + bytes(30))
    with pytest.raises(BitstreamError, match=r"^not an ECDC file: magic expected b'ECDC', got b'RIFF'$"):
        decompress(b"RIFF" + bytes(30))


class _Pipe:
    """A readable file object that cannot seek (as a pipe)."""

    def __init__(self, data: bytes) -> None:
        self._data = io.BytesIO(data)

    def read(self, size: int = -1) -> bytes:
        return self._data.read(size)


def test_decompress_from_a_pipe_keeps_the_magic_error() -> None:
    with pytest.raises(BitstreamError, match=r"^not an ECDC file: magic expected b'ECDC', got b'[^(]*$"):
        decompress_from_file(_Pipe(CODEC.read_bytes()))
