"""The codec trainer's throughput levers and adversarial-schedule keys (train/step.py):
bf16 tracks float32, learning-rate scaling and the discriminator's own rate, the
discriminator warm-up on a frozen generator, on-device metric accumulation."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch

from opencodec.train.solver import learning_rate_at, train
from opencodec.train.step import MetricAccumulator, scaled_learning_rate
from test_train_solver import _config, _corpus  # tests/ is on sys.path (conftest.py)

# Largest relative difference allowed between a bf16 run's per-step mel loss and the float32
# run's, over 6 steps of the unit model (measured here: 0.002 to 0.031).
BF16_MEL_TOLERANCE = 0.05


def _metrics(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def _losses(run: Path, key: str) -> dict[int, float]:
    return {m["step"]: m[key] for m in _metrics(run) if key in m}


def test_bf16_losses_track_float32(tmp_path: Path) -> None:
    train_m, valid_m = _corpus(tmp_path / "data")
    cfg = _config(train_m, valid_m, steps=6)
    cfg["adversarial"]["start_step"] = 2  # both halves: without and with the adversary
    train(cfg, tmp_path / "fp32", progress=False)
    bf16 = copy.deepcopy(cfg)
    bf16["amp"] = "bf16"
    train(bf16, tmp_path / "bf16", progress=False)
    ref, low = _losses(tmp_path / "fp32", "train/mel"), _losses(tmp_path / "bf16", "train/mel")
    assert sorted(ref) == sorted(low) == list(range(1, 7))
    for step in ref:
        assert low[step] == pytest.approx(ref[step], rel=BF16_MEL_TOLERANCE), step
    assert low != ref  # bf16 did run: the losses are not bit-identical
    adv = _losses(tmp_path / "bf16", "train/adv")
    assert sorted(adv) == [3, 4, 5, 6] and all(torch.isfinite(torch.tensor(v)) for v in adv.values())


def test_learning_rate_scaling_and_discriminator_rate(tmp_path: Path) -> None:
    assert scaled_learning_rate(1e-3, 64, "none") == 1e-3
    assert scaled_learning_rate(1e-3, 64, "sqrt", 16) == pytest.approx(2e-3)
    assert scaled_learning_rate(1e-3, 64, "linear", 16) == pytest.approx(4e-3)
    with pytest.raises(ValueError, match="lr_reference_batch"):
        scaled_learning_rate(1e-3, 64, "sqrt")
    with pytest.raises(ValueError, match="lr_scale.*'cubic'"):
        scaled_learning_rate(1e-3, 64, "cubic", 16)
    train_m, valid_m = _corpus(tmp_path / "data")
    cfg = _config(train_m, valid_m, steps=3)
    cfg["optim"].update(lr=3e-4, lr_disc=1e-4, lr_scale="sqrt", lr_reference_batch=1, schedule="cosine")
    train(cfg, tmp_path / "run", progress=False)
    metrics = [m for m in _metrics(tmp_path / "run") if "train/lr" in m]
    # batch 4 against reference 1: both rates doubled, each following the cosine on its own base
    assert [m["train/lr"] for m in metrics] == pytest.approx([learning_rate_at(k, 6e-4, 3, "cosine") for k in range(3)])
    assert [m["train/lr_disc"] for m in metrics] == pytest.approx(
        [learning_rate_at(k, 2e-4, 3, "cosine") for k in range(3)])


def test_discriminator_warmup_keeps_the_generator_frozen(tmp_path: Path) -> None:
    train_m, valid_m = _corpus(tmp_path / "data")
    cfg = _config(train_m, valid_m, steps=3)
    cfg["adversarial"].update(start_step=0, disc_warmup_steps=3)
    cfg["quantizer"]["warmup_steps"] = 0
    cfg["ema"] = None
    _, g0, d0 = train(cfg, tmp_path / "start", max_steps=0, progress=False, return_models=True)
    _, g3, d3 = train(cfg, tmp_path / "warm", progress=False, return_models=True)
    for key, value in g0.state_dict().items():
        assert torch.equal(value, g3.state_dict()[key]), f"generator changed during the warm-up: {key}"
    changed = [k for k, v in d0.state_dict().items() if not torch.equal(v, d3.state_dict()[k])]
    assert changed, "the discriminator did not train during the warm-up"
    steps = [m for m in _metrics(tmp_path / "warm") if "step" in m and m["step"] > 0 and "train/lr" in m]
    assert [("train/disc" in m, "train/mel" in m) for m in steps] == [(True, False)] * 3
    # after the warm-up the generator trains with the adversarial losses
    cfg["optim"]["steps"] = 4
    train(cfg, tmp_path / "warm", progress=False)
    last = [m for m in _metrics(tmp_path / "warm") if m.get("step") == 4 and "train/lr" in m][0]
    assert {"train/mel", "train/adv", "train/feat"} <= set(last)


def test_metric_accumulator_means() -> None:
    acc = MetricAccumulator()
    acc.add({"a": torch.tensor(1.0), "b": torch.tensor(4.0)})
    acc.add({"a": torch.tensor(3.0)})
    assert acc.means() == {"a": 2.0, "b": 4.0}
    assert acc.means() == {}


@pytest.mark.slow
def test_compiled_models_train_like_eager(tmp_path: Path) -> None:
    """``compile`` traces encoder, decoder and discriminator scales (aot_eager: dynamo and
    autograd tracing without inductor's code generation, ~20 s here) and trains as eager does."""
    train_m, valid_m = _corpus(tmp_path / "data")
    cfg = _config(train_m, valid_m, steps=3)
    cfg["adversarial"]["start_step"] = 1
    train(cfg, tmp_path / "eager", progress=False)
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    _, model, disc = train({**cfg, "compile": "aot_eager"}, tmp_path / "compiled", progress=False,
                           return_models=True)
    # aot_eager computes what eager does, so the losses alone cannot tell whether anything was
    # compiled: the modules must carry their compiled forward, and dynamo must have traced graphs.
    compiled_parts = [model.encoder, model.decoder, *disc.discriminators]
    assert len(compiled_parts) >= 3
    assert all(m._compiled_call_impl is not None for m in compiled_parts)
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] > 0
    eager, compiled = _losses(tmp_path / "eager", "train/mel"), _losses(tmp_path / "compiled", "train/mel")
    assert sorted(compiled) == [1, 2, 3]
    assert [compiled[k] for k in sorted(compiled)] == pytest.approx([eager[k] for k in sorted(eager)], rel=1e-4)
