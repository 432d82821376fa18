"""``opencodec train-lm`` refuses a codec whose codes the fixed-point entropy coder cannot code
(``n_q``, ``card`` or ``past_context`` beyond ``FixedLM.from_float``'s limits) before anything
is written, in one line naming the field, its value and the limit; it used to train and fail
at the end of the run, when its export was converted."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
import yaml

from opencodec import EncodecConfig, EncodecModel, save_model
from opencodec.entropy import EntropyLM
from opencodec.entropy.fixed import FixedLM
from opencodec.entropy.fixed_scheme import MAX_CARD, MAX_N_Q, MAX_PAST_CONTEXT
from opencodec.errors import ConfigError, ModelLoadError
from opencodec.train.lm_config import Settings, check_coder_limits, parse_settings
from opencodec.train import lm_solver
from opencodec.train.lm_solver import main as train_lm_main

ROOT = Path(__file__).resolve().parents[1]
SR = 24000


def _settings(**overrides: object) -> Settings:
    cfg = yaml.safe_load((ROOT / "configs" / "lm_tiny.yaml").read_text())
    cfg.update(overrides)
    cfg["device"] = "cpu"
    return parse_settings(cfg)


# -- the check, at and over each limit ---------------------------------------------------------------
def test_sizes_at_the_limits_pass() -> None:
    s = _settings()
    frame_rate = int(MAX_PAST_CONTEXT / s.past_context_s)  # past_context just within the limit
    check_coder_limits(s, "c", {1.5: 2, 24.0: MAX_N_Q}, MAX_CARD, frame_rate)
    # a 1 s window (train-lm fixes 3.5 s today) at MAX_PAST_CONTEXT Hz: exactly the limit
    check_coder_limits(dataclasses.replace(s, past_context_s=1.0), "c", {6.0: 8}, 1024, MAX_PAST_CONTEXT)


def test_too_many_codebooks_names_n_q_the_bandwidth_and_the_limit() -> None:
    with pytest.raises(ConfigError) as caught:
        check_coder_limits(_settings(), "big", {3.0: 4, 6.0: MAX_N_Q + 1}, 1024, 75)
    assert str(caught.value) == (f"config field codec: codec big uses n_q={MAX_N_Q + 1} codebooks at 6 kbps, "
                                 f"over the entropy coder's fixed-point limit of {MAX_N_Q} (bandwidths up to "
                                 f"3 kbps are within it)")
    with pytest.raises(ConfigError, match=rf"^config field bandwidths: codec big uses n_q={MAX_N_Q + 1} "
                                          rf"codebooks at 6 kbps, over .* limit of {MAX_N_Q}$"):
        check_coder_limits(_settings(bandwidths=[6.0]), "big", {6.0: MAX_N_Q + 1}, 1024, 75)


def test_too_many_entries_per_codebook_names_card_and_the_limit() -> None:
    with pytest.raises(ConfigError) as caught:
        check_coder_limits(_settings(), "wide", {6.0: 8}, 2 * MAX_CARD, 75)
    assert str(caught.value) == (f"config field codec: codec wide has card={2 * MAX_CARD} entries per "
                                 f"codebook, over the entropy coder's fixed-point limit of {MAX_CARD}")


def test_too_long_a_window_names_past_context_and_the_limit() -> None:
    s = _settings()
    frame_rate = int(MAX_PAST_CONTEXT / s.past_context_s) + 1
    past_context = int(s.past_context_s * frame_rate)
    assert past_context > MAX_PAST_CONTEXT
    with pytest.raises(ConfigError) as caught:
        check_coder_limits(s, "fast", {6.0: 8}, 1024, frame_rate)
    assert str(caught.value) == (f"config field lm.past_context_s is 3.5: at codec fast's {frame_rate} Hz frame "
                                 f"rate that is past_context={past_context} frames, over the entropy coder's "
                                 f"fixed-point limit of {MAX_PAST_CONTEXT}")


@pytest.mark.parametrize("field", ["n_q", "card", "past_context"])
def test_the_limits_are_those_the_fixed_point_conversion_enforces(field: str) -> None:
    """One over each limit is what ``FixedLM.from_float`` refuses (and the limit itself it takes,
    for n_q), so the early check and the end of the run agree."""
    sizes = {"n_q": 2, "card": 4, "past_context": 10}
    limit = {"n_q": MAX_N_Q, "card": MAX_CARD, "past_context": MAX_PAST_CONTEXT}[field]
    torch.manual_seed(0)
    if field != "card":  # an LM of 2**20 + 1 bins is too big to build for a test
        sizes[field] = limit
        FixedLM.from_float(EntropyLM(dim=8, num_heads=2, num_layers=1, hidden_scale=1.0, max_period=1e4,
                                     **sizes))
    sizes[field] = limit + 1
    if field == "card":
        with pytest.raises(ConfigError, match=rf"card={limit + 1} .* limit of {limit}$"):
            check_coder_limits(_settings(), "c", {6.0: 2}, limit + 1, 75)
        return
    with pytest.raises(ModelLoadError, match=rf"{field}={limit + 1} \(at most {limit}\)"):
        FixedLM.from_float(EntropyLM(dim=8, num_heads=2, num_layers=1, hidden_scale=1.0, max_period=1e4,
                                     **sizes))


# -- the command: one line, before the run folder ------------------------------------------------------
def _codec_file(folder: Path, kind: str) -> tuple[Path, str]:
    """A small random codec over one of the coder's limits, saved to a file, and the error
    line ``train-lm`` must give for it."""
    torch.manual_seed(0)
    if kind == "n_q":  # 65 codebooks of 2 entries: 75 Hz x 65 bits
        config = EncodecConfig(name="many_q", n_filters=2, dimension=4, lstm=0, n_q=MAX_N_Q + 1, bins=2,
                               target_bandwidths=[(MAX_N_Q + 1) * 75 / 1000])
        line = (f"config field codec: codec many_q uses n_q={MAX_N_Q + 1} codebooks at 4.875 kbps, over the "
                f"entropy coder's fixed-point limit of {MAX_N_Q}")
    elif kind == "card":  # one codebook of 2**21 one-dimensional entries
        config = EncodecConfig(name="many_bins", n_filters=2, dimension=1, lstm=0, n_q=1, bins=2 * MAX_CARD,
                               target_bandwidths=[1.575])
        line = (f"config field codec: codec many_bins has card={2 * MAX_CARD} entries per codebook, over the "
                f"entropy coder's fixed-point limit of {MAX_CARD}")
    else:  # no downsampling: 24000 frames a second, a 3.5 s window of 84000 frames
        config = EncodecConfig(name="no_hop", n_filters=2, dimension=2, lstm=0, ratios=[1], n_q=1, bins=2,
                               target_bandwidths=[24.0])
        line = (f"config field lm.past_context_s is 3.5: at codec no_hop's 24000 Hz frame rate that is "
                f"past_context=84000 frames, over the entropy coder's fixed-point limit of {MAX_PAST_CONTEXT}")
    path = save_model(EncodecModel(config), folder / f"{kind}.safetensors", inference_only=True)
    return path, line


@pytest.mark.parametrize("kind", ["n_q", "card", "past_context"])
def test_train_lm_refuses_before_the_run_folder(kind: str, tmp_path: Path, capsys: pytest.CaptureFixture,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    codec, line = _codec_file(tmp_path, kind)

    def no_codes(*args: object, **kwargs: object) -> None:  # without the check: fail now, not train
        raise AssertionError("train-lm went on to extract codes")

    monkeypatch.setattr(lm_solver, "prepare_data", no_codes)
    sf.write(tmp_path / "a.wav", (0.1 * np.random.default_rng(0).standard_normal(SR // 2)).astype(np.float32), SR)
    manifest = tmp_path / "train.jsonl"
    manifest.write_text(json.dumps({"path": "a.wav"}) + "\n")
    run = tmp_path / "run"
    code = train_lm_main([str(ROOT / "configs" / "lm_tiny.yaml"), f"codec={codec}", f"data.train=[{manifest}]",
                          "data.valid=[]", "device=cpu", "--run-dir", str(run), "--no-progress"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1
    assert err == [f"opencodec train-lm: error: {line}"]  # no codes extracted, no step trained
    assert not run.exists()
