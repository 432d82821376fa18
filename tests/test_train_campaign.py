"""A training run carried across GPU runs in the compact campaign state (train/campaign.py):
float16 weights and bfloat16 Adam moments resume and continue training close to an exact
resume; parts fit a byte budget; what does not fit resumes fresh."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from opencodec.train.campaign import compact_state, expand_state, main, pack, read_parts, unpack, write_parts
from opencodec.train.solver import train
from test_train_solver import _config, _corpus  # tests/ is on sys.path (conftest.py)

# After 3 steps resumed from the compact form instead of the exact checkpoint, the largest
# difference of any generator weight, relative to that tensor's largest magnitude
# (measured here: 1.6e-3; float16 rounding alone is <= 4.9e-4 of a weight, and Adam
# amplifies the small differences over the next steps).
WEIGHT_TOLERANCE = 1e-2


def _mel(run: Path) -> dict[int, float]:
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return {m["step"]: m["train/mel"] for m in rows if "train/mel" in m}


def test_resume_from_compact_state_continues_training(tmp_path: Path) -> None:
    train_m, valid_m = _corpus(tmp_path / "data")
    cfg = _config(train_m, valid_m, steps=6)
    _, exact, _ = train(cfg, tmp_path / "exact", progress=False, return_models=True)
    train(cfg, tmp_path / "first", max_steps=3, progress=False)
    summary = pack(tmp_path / "first" / "checkpoint.pt", tmp_path / "state")
    assert summary["step"] == 3 and summary["left_out"] == []
    assert {"model", "disc", "opt_g", "opt_d", "ema", "rng", "balancer"} <= set(summary["kept"])
    state = read_parts(tmp_path / "state")
    assert state["model"]["encoder.model.0.conv.conv.weight_v"].dtype == torch.float16
    moments = next(iter(state["opt_g"]["state"].values()))
    assert moments["exp_avg"].dtype == moments["exp_avg_sq"].dtype == torch.bfloat16
    # the codebooks' EMA sums travel as entries and sizes, and come back to fp16 precision
    original = torch.load(tmp_path / "first" / "checkpoint.pt", weights_only=True)["model"]
    assert not any(k.endswith("embed_avg") for k in state["model"])
    rebuilt = expand_state(state)["model"]
    sums = [k for k in original if k.endswith("embed_avg")]
    assert sums
    for key in sums:
        torch.testing.assert_close(rebuilt[key], original[key], rtol=5e-3, atol=1e-3 * float(original[key].abs().max()))
    unpack(tmp_path / "state", tmp_path / "second")
    _, resumed, _ = train(cfg, tmp_path / "second", progress=False, return_models=True)
    # it continued from step 3 (not from scratch) to step 6, close to the exact run
    assert sorted(_mel(tmp_path / "second")) == [4, 5, 6]
    for step, value in _mel(tmp_path / "second").items():
        assert value == pytest.approx(_mel(tmp_path / "exact")[step], rel=1e-2)
    worst = 0.0
    for key, value in exact.state_dict().items():
        if value.is_floating_point() and not key.endswith(("cluster_size", "embed_avg")):
            other = resumed.state_dict()[key]
            worst = max(worst, float((value - other).abs().max() / value.abs().max().clamp_min(1e-8)))
    assert 0 < worst < WEIGHT_TOLERANCE


def test_budget_leaves_out_moments_and_the_run_resumes_fresh(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    train_m, valid_m = _corpus(tmp_path / "data")
    cfg = _config(train_m, valid_m, steps=4)
    train(cfg, tmp_path / "first", max_steps=2, progress=False)
    ckpt = torch.load(tmp_path / "first" / "checkpoint.pt", weights_only=True)
    full, _ = compact_state(ckpt)
    weights_only, left_out = compact_state({k: v for k, v in ckpt.items() if k not in ("opt_g", "opt_d", "ema")})
    budget = len(_saved(weights_only)) + 10  # room for the weights, not for any moment
    assert len(_saved(full)) > budget
    assert main(["pack", str(tmp_path / "first" / "checkpoint.pt"), str(tmp_path / "state"),
                 "--max-mb", str(budget / 1e6)]) == 0
    summary = json.loads((tmp_path / "state" / "state.json").read_text())
    assert summary["left_out"] == ["opt_g", "opt_d", "ema"] and summary["bytes"] <= budget
    assert main(["unpack", str(tmp_path / "state"), str(tmp_path / "second")]) == 0
    train(cfg, tmp_path / "second", progress=False)
    assert "(opt_g, opt_d, ema fresh)" in capsys.readouterr().err
    assert sorted(_mel(tmp_path / "second")) == [3, 4]
    # an existing checkpoint is not replaced without --force
    assert main(["unpack", str(tmp_path / "state"), str(tmp_path / "second")]) == 2
    assert "exists" in capsys.readouterr().err
    # a budget below the weights keeps the weights (and says so) rather than carrying nothing
    small, left_out = compact_state(ckpt, max_bytes=1000)
    assert {"model", "disc"} <= set(small) and left_out == ["opt_g", "opt_d", "ema"]
    assert main(["pack", str(tmp_path / "first" / "checkpoint.pt"), str(tmp_path / "small"), "--max-mb", "0.001"]) == 0
    assert json.loads((tmp_path / "small" / "state.json").read_text())["over_budget"] is True
    assert "warning: the weights alone" in capsys.readouterr().err


def test_parts_round_trip(tmp_path: Path) -> None:
    obj = {"a": torch.arange(5000, dtype=torch.float32), "b": [1, 2]}
    paths = write_parts(obj, tmp_path, part_bytes=4096)
    assert len(paths) > 4 and all(p.stat().st_size <= 4096 for p in paths)
    back = read_parts(tmp_path)
    assert torch.equal(back["a"], obj["a"]) and back["b"] == [1, 2]


def _saved(obj: dict) -> bytes:
    import io

    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()
