"""Are the evaluation's figures right? Each metric against an independent computation of its
definition, known degradations scoring worse, the baselines' time alignment, the report's
row counts, and the committed reports' tables recomputed from their own results.jsonl."""

from __future__ import annotations

import json
import math
import re
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest

from opencodec.eval import metrics as M
from opencodec.eval import report as R
from opencodec.eval.baselines import mp3_roundtrip, opus_roundtrip

from test_eval_metrics import add_noise, speech_like  # tests/ is on sys.path (conftest.py)
from train_helpers import _noise, _write_set

DOCS = Path(__file__).resolve().parents[1] / "docs"


def _si_snr_by_formula(est: np.ndarray, ref: np.ndarray) -> float:
    """SI-SNR (dB) of one channel, straight from its definition."""
    e, r = est - est.mean(), ref - ref.mean()
    target = (e @ r) / (r @ r) * r
    noise = e - target
    return 10 * math.log10((target @ target) / (noise @ noise))


def _log_mel_l1_by_numpy(est: np.ndarray, ref: np.ndarray, sr: int, n_ffts=(512, 1024, 2048),
                         eps: float = 1e-5) -> float:
    """The mel distance as its docstring defines it, with a frame-by-frame numpy STFT
    (periodic Hann, hop n/4, centred with reflect padding)."""
    out = []
    for n in n_ffts:
        fb = M.mel_filterbank(sr, n, 64)
        window = np.hanning(n + 1)[:-1]

        def mel(x: np.ndarray) -> np.ndarray:
            padded = np.pad(x, n // 2, mode="reflect")
            frames = 1 + (len(padded) - n) // (n // 4)
            spec = np.stack([np.abs(np.fft.rfft(padded[i * (n // 4):i * (n // 4) + n] * window))
                             for i in range(frames)], axis=1)
            return fb @ spec

        out.append(np.mean(np.abs(np.log(mel(est) + eps) - np.log(mel(ref) + eps))))
    return float(np.mean(out))


def test_si_snr_matches_its_formula_per_channel_mean():
    ref = speech_like(24000, 1.0, channels=2).astype(np.float64)
    rng = np.random.default_rng(3)
    est = 0.4 * ref + 0.03 * rng.standard_normal(ref.shape) + 0.01  # gain, noise, DC offset
    expected = np.mean([_si_snr_by_formula(est[c], ref[c]) for c in range(2)])
    assert M.si_snr(est, ref) == pytest.approx(expected, abs=1e-9)


def test_mel_distance_matches_a_numpy_stft_of_its_definition():
    ref = speech_like(24000, 0.8)[0].astype(np.float64)
    est = add_noise(ref[None], 15.0)[0].astype(np.float64)
    assert M.mel_distance(est, ref, 24000) == pytest.approx(
        _log_mel_l1_by_numpy(est, ref, 24000), rel=1e-9)


def test_pesq_wb_is_the_pesq_package_on_16khz_audio():
    pesq = pytest.importorskip("pesq").pesq
    from scipy.signal import resample_poly

    ref = speech_like(24000, 2.0)
    est = add_noise(ref, 20.0)
    by_hand = pesq(16000, resample_poly(ref[0].astype(np.float64), 2, 3),
                   resample_poly(est[0].astype(np.float64), 2, 3), "wb")
    assert M.pesq_wb(est, ref, 24000) == pytest.approx(by_hand, abs=0.02)  # resamplers differ


def test_more_noise_scores_worse_on_every_metric():
    from opencodec.eval.visqol import visqol

    ref = speech_like(24000, 2.0)
    scores = []
    for snr in (30.0, 15.0, 5.0):
        est = add_noise(ref, snr)
        scores.append({"si_snr": M.si_snr(est, ref), "mel": -M.mel_distance(est, ref, 24000),
                       "stft": -M.stft_distance(est, ref), "pesq": M.pesq_wb(est, ref, 24000),
                       "stoi": M.stoi(est, ref, 24000), "visqol": visqol(est, ref, 24000, "speech")})
    for name in scores[0]:
        assert scores[0][name] > scores[1][name] > scores[2][name], name


def _best_lag(est: np.ndarray, ref: np.ndarray, reach: int = 4) -> int:
    """The whole-sample shift of ``est`` (within ``reach``) that maximises its SI-SNR."""
    trimmed = slice(reach, ref.shape[-1] - reach)
    return max(range(-reach, reach + 1),
               key=lambda s: M.si_snr(np.roll(est, s, axis=-1)[..., trimmed], ref[..., trimmed]))


@pytest.mark.parametrize("codec, kbps", [(opus_roundtrip, 6), (opus_roundtrip, 12),
                                         (mp3_roundtrip, 64)])
def test_baseline_output_is_aligned_with_the_reference(codec, kbps):
    ref = speech_like(24000, 1.5)
    est, _ = codec(ref, 24000, kbps)
    assert est.shape == ref.shape
    assert _best_lag(est, ref) == 0


def test_header_counts_the_tables_rows_apart_from_the_rows_of_results_jsonl(tmp_path):
    eval_set = _write_set(tmp_path / "set", {"music": [("a", _noise(seed=1)), ("b", _noise(seed=2))]})
    out = tmp_path / "out"
    R.run_eval([], None, ["opus6", "opus12"], eval_set, out, metrics=["si_snr"], quiet=True)
    doc = R.run_eval([], None, ["opus6"], eval_set, out, metrics=["si_snr"], quiet=True)
    in_file = len((out / "results.jsonl").read_text().splitlines())
    assert in_file == 4 and doc["meta"]["n_rows"] == 2
    report = (out / "report.md").read_text()
    claimed = [int(n) for n in re.findall(r"(\d+) rows in results\.jsonl", report)]
    assert claimed == [in_file]  # a count said to be results.jsonl's is results.jsonl's
    assert "2 (item, system) rows in the tables" in report


# ------------------------------------------------------------------------------------------
# The committed reports, recomputed from their own results.jsonl
# ------------------------------------------------------------------------------------------
def _table_cells(report: str) -> dict[tuple[str, str], dict[str, str]]:
    """``{(category, system): {column: cell}}`` of the per-category tables of ``report``."""
    cells: dict[tuple[str, str], dict[str, str]] = {}
    category, header = None, None
    for line in report.splitlines():
        if line.startswith("## "):
            category, header = line[3:].strip(), None
        elif line.startswith("| System |"):
            header = [c.strip() for c in line.strip("|").split("|")]
        elif header and line.startswith("| ") and not line.startswith("|---"):
            row = [c.strip() for c in line.strip("|").split("|")]
            cells[(category, row[0])] = dict(zip(header, row))
        elif not line.strip():
            header = None
    return cells


def _cell(values: list[float]) -> str:
    """Mean ± Student-t 95 % half-width, two decimals, computed here from scratch."""
    from scipy.stats import t

    v = np.asarray(values, dtype=np.float64)
    half = t.ppf(0.975, len(v) - 1) * v.std(ddof=1) / math.sqrt(len(v))
    return f"{v.mean():.2f} ± {half:.2f}"


@pytest.mark.parametrize("name", ["report_opencodec_24khz", "report_speech_unseen",
                                  "report_speech_unseen/probe"])
def test_committed_report_tables_agree_with_their_results(name):
    folder = DOCS / name
    rows = [json.loads(line) for line in (folder / "results.jsonl").read_text().splitlines()]
    groups: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for r in rows:
        groups[(r["category"], r["system"])].append(r)
    cells = _table_cells((folder / "report.md").read_text())
    assert set(cells) == set(groups)
    columns = {"si_snr": "SI-SNR (dB) ↑", "mel": "Mel distance ↓", "visqol": "ViSQOL ↑"}
    for key, rs in groups.items():
        table = cells[key]
        assert table["n"] == str(len(rs)), key
        seconds = sum(r["duration_s"] for r in rs)
        kbps = sum(r["actual_kbps"] * r["duration_s"] for r in rs) / seconds
        assert table["kbps (actual)"].startswith(f"{kbps:.2f} ±"), key
        for metric, column in columns.items():
            values = [r["metrics"][metric] for r in rs if r["metrics"].get(metric) is not None]
            assert table[column].split(" (n=")[0] == _cell(values), (key, metric)


def test_header_states_the_order_in_which_items_are_converted(tmp_path):
    import soundfile as sf

    from opencodec.data.dataset import convert_channels, resample
    from opencodec.eval.scoring import load_reference

    stereo = speech_like(44100, 0.5, channels=2)
    path = tmp_path / "item.wav"
    sf.write(path, stereo.T, 44100, subtype="FLOAT")
    ref = load_reference({"row": {"path": str(path)}, "sample_rate": 24000, "channels": 1})
    resampled_first = convert_channels(resample(stereo, 44100, 24000), 1)
    channels_first = resample(convert_channels(stereo, 1), 44100, 24000)
    assert np.array_equal(ref, resampled_first) and not np.array_equal(ref, channels_first)
    eval_set = _write_set(tmp_path / "set", {"music": [("a", _noise(seed=1)), ("b", _noise(seed=2))]})
    R.run_eval([], None, ["opus6"], eval_set, tmp_path / "out", metrics=["si_snr"], quiet=True)
    assert "(soxr resampling, then the channels)" in (tmp_path / "out" / "report.md").read_text()


def test_visqol_is_level_dependent_as_its_docstring_says():
    from opencodec.eval.visqol import visqol

    ref = speech_like(24000, 2.0)
    rms_db = 20 * np.log10(np.sqrt(np.mean(np.square(ref, dtype=np.float64))))

    def at(level_db: float) -> float:
        scaled = (ref * 10 ** ((level_db - rms_db) / 20)).astype(np.float32)
        return visqol(add_noise(scaled, 30.0), scaled, 24000, "speech")

    assert at(-20.0) == pytest.approx(4.67, abs=0.05)
    assert at(-59.0) == pytest.approx(4.99, abs=0.02)  # near the maximum, 5.0, though degraded


def test_surround_item_is_skipped_not_scored_on_its_front_pair_in_stereo(tmp_path):
    import soundfile as sf

    speech = speech_like(24000, 1.2)[0]
    surround = np.zeros((6, speech.size), dtype=np.float32)
    surround[2] = speech  # the centre channel (5.1 order L R C LFE Ls Rs) holds the speech
    surround[:2] = 0.1 * speech
    eval_set = _write_set(tmp_path / "set", {"music": [("stereo", speech_like(24000, 1.2, channels=2).T)]})
    sf.write(eval_set / "surround.wav", surround.T, 24000, subtype="FLOAT")
    with open(eval_set / "eval_music.jsonl", "a") as manifest:
        manifest.write(json.dumps({"path": str(eval_set / "surround.wav")}) + "\n")
    doc = R.run_eval([], None, ["opus12"], eval_set, tmp_path / "out", metrics=["si_snr"],
                     quiet=True, channels=2)
    assert [s["item_id"] for s in doc["meta"]["skipped"]] == ["surround"]
    assert "6 channels" in doc["meta"]["skipped"][0]["error"]
    assert doc["categories"]["music"]["opus-12kbps"]["n_items"] == 1
    mono = R.run_eval([], None, ["opus12"], eval_set, tmp_path / "mono", metrics=["si_snr"],
                      quiet=True, channels=1)  # a mono down-mix takes every channel: scored
    assert mono["meta"]["skipped"] == [] and mono["categories"]["music"]["opus-12kbps"]["n_items"] == 2
