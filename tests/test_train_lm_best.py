"""``train-lm`` keeps the model of the lowest held-out bits per code in ``lm_best.safetensors``:
the step the metrics name, weights that score what was logged, and the same file after a resume."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from opencodec.pretrained import load_lm_model
from opencodec.train import lm_solver
from opencodec.train.lm_solver import BEST_EXPORT, mean_bits_per_code, train, validate

from test_train_lm import _lm_cfg, _metrics, _synthetic_data


def _cfg() -> dict:
    """30 steps at a high learning rate, validated every step: the held-out bits wobble near
    the end, so the best step (26 with seed 0) is not the last."""
    cfg = _lm_cfg(30, log={"every": 1, "valid_every": 1, "checkpoint_every": 1000, "tensorboard": False})
    cfg["optim"]["lr"] = 3e-2
    return cfg


def test_best_export_is_the_lowest_validation_and_survives_resume(tmp_path: Path) -> None:
    data = _synthetic_data()
    run = train(_cfg(), tmp_path / "straight", progress=False, data=data)
    scores = {r["step"]: r["valid/mean_bits_per_code"] for r in _metrics(run) if "valid/mean_bits_per_code" in r}
    assert sorted(scores) == list(range(31))
    best_step = min((s for s in scores if s > 0), key=scores.__getitem__)
    assert best_step != 30 and scores[best_step] < scores[30]  # the case the file exists for

    info = lm_solver.read_lm_info(run / BEST_EXPORT)
    assert info["step"] == best_step
    assert info["valid_mean_bits_per_code"] == pytest.approx(scores[best_step], rel=1e-12)
    best = load_lm_model(run / BEST_EXPORT)
    values = validate(best, data.valid, data.bandwidths, data.codebooks, data.frame_rate, 4)
    assert mean_bits_per_code(values) == pytest.approx(scores[best_step], rel=1e-6)
    last = load_lm_model(run / "lm.safetensors")
    assert lm_solver.read_lm_info(run / "lm.safetensors")["step"] == 30
    assert any(not torch.equal(a, b) for a, b in zip(best.state_dict().values(), last.state_dict().values()))

    # stopped after the best step and resumed: the resumed run remembers the best score, so
    # the later, worse steps do not replace the file
    resumed = tmp_path / "resumed"
    train(_cfg(), resumed, max_steps=best_step + 2, progress=False, data=data)
    assert lm_solver.read_lm_info(resumed / BEST_EXPORT)["step"] == best_step
    train(_cfg(), resumed, progress=False, data=data)
    assert lm_solver.read_lm_info(resumed / BEST_EXPORT)["step"] == best_step
    again = load_lm_model(resumed / BEST_EXPORT).state_dict()
    for key, value in best.state_dict().items():
        assert torch.equal(value, again[key]), key


def test_mean_bits_per_code_weighs_each_bandwidth_once() -> None:
    values = {"bits_per_code/1.5kbps": 2.0, "bits_per_code/6kbps": 5.0, "ideal_kbps/1.5kbps": 0.3}
    assert mean_bits_per_code(values) == 3.5
    with pytest.raises(ValueError, match="bits_per_code"):
        mean_bits_per_code({"ideal_kbps/1.5kbps": 0.3})


@pytest.mark.parametrize("dim, width", [(56, 61), (32, 64), (40, 37), (200, 800)])
def test_any_feed_forward_width_reloads(tmp_path: Path, dim: int, width: int) -> None:
    """``load_lm_model`` rebuilds the exported width exactly, also where ``width / dim`` rounds
    under it in floating point (61 / 56 * 56 = 60.99...)."""
    from opencodec.entropy.lm import EntropyLM
    from opencodec.train.lm_model import export_lm

    torch.manual_seed(0)
    lm = EntropyLM(n_q=2, card=16, dim=dim, num_heads=8, num_layers=1,
                   hidden_scale=(width + 0.5) / dim)
    assert lm.transformer.layers[0].linear1.out_features == width
    path = export_lm(lm, tmp_path / "lm.safetensors", {"codec": "unit", "frame_rate": 75})
    loaded = load_lm_model(path)
    for key, value in lm.state_dict().items():
        assert torch.equal(value, loaded.state_dict()[key]), key
