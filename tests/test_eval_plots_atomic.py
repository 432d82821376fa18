"""The plots of ``opencodec eval`` and ``opencodec mushra report`` are written atomically:
an interrupted ``savefig`` leaves the old PNG (or none) and no partial file."""

from __future__ import annotations

from pathlib import Path

import pytest

from opencodec.eval.mushra import report as R
from opencodec.eval.report_writer import make_plots


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
