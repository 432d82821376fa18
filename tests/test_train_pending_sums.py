"""The metric sums pending since the last log, kept in the checkpoint: they follow a
change of the number of processes, a window resumed under another count is logged as one
run, a checkpoint without them still resumes, and they take a few bytes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from opencodec.train.solver import train
from opencodec.train.step import MetricAccumulator, pending_metrics_for

from test_train_solver import _config, _corpus


def _rows(run: Path) -> dict[int, dict[str, float]]:
    """metrics.jsonl's training rows by step, without the throughput (a wall-clock figure)."""
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: {k: v for k, v in r.items() if k != "step" and not k.startswith("perf/")}
            for r in rows if "train/l1" in r}


def test_pending_sums_follow_a_change_of_the_number_of_processes() -> None:
    # Two ranks each hold N=2 times the global batch's balancer norm; one rank resuming the
    # window must log the global one (the losses are already global batch means).
    state = {"sums": {"balancer/grad_norm/mel": torch.tensor(4.0), "train/mel": torch.tensor(3.0)},
             "counts": {"balancer/grad_norm/mel": 2, "train/mel": 2}, "world_size": 2}
    one = pending_metrics_for(state, 1)
    assert one["sums"]["balancer/grad_norm/mel"].item() == 2.0 and one["sums"]["train/mel"].item() == 3.0
    assert pending_metrics_for(state, 2)["sums"] == state["sums"]
    older = {"sums": state["sums"], "counts": state["counts"]}  # (saved before world_size was recorded)
    assert pending_metrics_for(older, 1)["sums"] == state["sums"]


def test_a_window_resumed_under_another_number_of_processes_is_logged_as_one_run(tmp_path: Path) -> None:
    train_m, valid_m = _corpus(tmp_path / "data")
    cfg = _config(train_m, valid_m, steps=3)
    cfg["valid"]["items"] = 0
    cfg["log"].update(every=3, checkpoint_every=100)
    train(cfg, tmp_path / "a", progress=False)
    train(cfg, tmp_path / "b", progress=False, max_minutes=1e-9)  # a checkpoint of step 1, before a log
    ckpt_path = tmp_path / "b" / "checkpoint.pt"
    ckpt = torch.load(ckpt_path, weights_only=True)
    pending = ckpt["metrics"]
    assert pending["world_size"] == 1 and pending["counts"]["train/mel"] == 1
    assert all(v.device.type == "cpu" and v.dtype == torch.float32 for v in pending["sums"].values())
    # The same window as two ranks of the same global batch save it: the per-rank norms doubled.
    pending["sums"] = {k: v * 2 if k.startswith(("balancer/grad_norm/", "balancer/ema_norm/")) else v
                       for k, v in pending["sums"].items()}
    pending["world_size"] = 2
    torch.save(ckpt, ckpt_path)
    train(cfg, tmp_path / "b", progress=False)
    straight, resumed = _rows(tmp_path / "a"), _rows(tmp_path / "b")
    assert sorted(resumed) == [3]
    for key, value in straight[3].items():
        assert resumed[3][key] == pytest.approx(value, rel=1e-6, abs=1e-9), key


@pytest.mark.parametrize("through_campaign", [False, True])
def test_a_checkpoint_without_pending_sums_still_resumes(through_campaign: bool, tmp_path: Path) -> None:
    # A checkpoint saved before the pending sums were kept in it (and a campaign state packed
    # from one) has no "metrics".
    from opencodec.train.campaign import pack, unpack

    train_m, valid_m = _corpus(tmp_path / "data")
    cfg = _config(train_m, valid_m, steps=4)
    cfg["valid"]["items"] = 0
    cfg["log"].update(every=2, checkpoint_every=100)
    train(cfg, tmp_path / "b", progress=False, max_minutes=1e-9)
    ckpt_path = tmp_path / "b" / "checkpoint.pt"
    ckpt = torch.load(ckpt_path, weights_only=True)
    del ckpt["metrics"]
    torch.save(ckpt, ckpt_path)
    if through_campaign:
        pack(ckpt_path, tmp_path / "state")
        ckpt_path.unlink()
        unpack(tmp_path / "state", tmp_path / "b")
    train(cfg, tmp_path / "b", progress=False)
    assert sorted(_rows(tmp_path / "b")) == [2, 4]  # (step 2's row: step 2 alone, step 1's sums were not saved)
    assert torch.load(ckpt_path, weights_only=True)["metrics"]["counts"] == {}  # logged at the end


def test_the_pending_sums_are_a_few_bytes() -> None:
    metrics = MetricAccumulator()
    for _ in range(3):
        metrics.add({f"train/k{i}": torch.tensor(float(i)) for i in range(30)})
    import io

    buffer = io.BytesIO()
    torch.save(metrics.state_dict(), buffer)
    assert buffer.tell() < 8000
