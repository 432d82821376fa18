"""Training behaviour pinned by value (each test kills a mutant that the rest of the suite let
live): the generator's weight EMA, the balancer's scaling by the EMA of gradient norms (spec
section 8), the config checks of the decays and loss weights, and k-means' empty clusters."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch

from opencodec.errors import ConfigError
from opencodec.quantization.vq import kmeans
from opencodec.train import Balancer, solver
from opencodec.train.config_checks import check_codec_config
from test_train_errors import TRACE, _error_lines, _train
from test_train_losses import _item_norm, _two_losses
from test_train_solver import _config, _corpus


# --------------------------------------------------------------------------- weight EMA (solver)
def _params(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.named_parameters()}


def test_weight_ema_is_decay_times_ema_plus_one_minus_decay_times_weights(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """After each generator step: ema = decay * ema + (1 - decay) * weights; buffers copied."""
    decay = 0.9  # (0.5 would not tell decay from 1 - decay)
    train_m, valid_m = _corpus(tmp_path / "data")
    cfg = _config(train_m, valid_m, steps=3)
    cfg["ema"] = decay
    cfg["optim"]["lr"] = 1e-2  # large steps: the EMA visibly lags the weights
    cfg["log"]["checkpoint_every"] = 1
    before_first: list[dict[str, torch.Tensor]] = []
    real_step, real_save = solver.generator_step, solver._atomic_torch_save

    def generator_step(parts, *args, **kwargs):  # type: ignore[no-untyped-def]
        if not before_first:
            before_first.append(_params(parts.model))  # the weights the EMA copy starts from
        return real_step(parts, *args, **kwargs)

    saved: list[dict] = []

    def save(state: dict, path: Path) -> None:
        saved.append(copy.deepcopy({k: state[k] for k in ("model", "ema", "step")}))
        real_save(state, path)

    monkeypatch.setattr(solver, "generator_step", generator_step)
    monkeypatch.setattr(solver, "_atomic_torch_save", save)
    solver.train(cfg, tmp_path / "run", progress=False)
    assert [s["step"] for s in saved] == [1, 2, 3]
    names = list(before_first[0])
    previous = before_first[0]  # ema(0) = the generator's weights before the first step
    for state in saved:
        weights, ema = state["model"], state["ema"]
        assert max((weights[k] - previous[k]).abs().max().item() for k in names) > 1e-3  # the test can tell
        for k in names:
            expected = (decay * previous[k].double() + (1 - decay) * weights[k].double()).float()
            torch.testing.assert_close(ema[k], expected, rtol=1e-6, atol=1e-7, msg=f"step {state['step']}: {k}")
        for k in set(weights) - set(names):  # buffers (codebooks, their statistics): the model's own
            assert torch.equal(ema[k], weights[k]), k
        previous = {k: ema[k] for k in names}


# --------------------------------------------------------------------------- balancer
def test_balancer_scales_by_the_ema_of_norms_not_the_current_norm() -> None:
    """Spec section 8: G = sum_i (lambda_i / sum lambda) * R * g_i / ||g_i||_ema, with the
    bias-corrected EMA ema(2) = (beta * n(1) + n(2)) / (beta + 1) of the per-item norms."""
    torch.manual_seed(0)
    beta, total, lam = 0.9, 2.0, {"big": 1.0, "small": 3.0}
    a = torch.randn(3, 1, 32)
    param = torch.randn(3, 1, 64, requires_grad=True)
    bal = Balancer(lam, ema_decay=beta, total_norm=total)
    bal.backward(*_two_losses(param, a))
    param.grad = None
    stats = bal.backward(*_two_losses(param, 10 * a))  # 'big' 10x larger than at step 1: EMA != norm
    # the raw gradients on the output, written out: d big / d out = 1000 a ; d small / d out = out
    g_big, g_small = 1000 * 10 * a, param.detach()[..., 32:]
    g1_big = 1000 * a
    ema_big = (beta * _item_norm(g1_big) + _item_norm(g_big)) / (beta + 1)
    ema_small = _item_norm(g_small)  # the same at both steps
    expected_big = lam["big"] / 4 * total * g_big / ema_big
    expected_small = lam["small"] / 4 * total * g_small / ema_small
    assert stats["ema_norm/big"] == pytest.approx(ema_big, rel=1e-6)
    torch.testing.assert_close(param.grad[..., :32], expected_big, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(param.grad[..., 32:], expected_small, rtol=1e-5, atol=1e-7)
    # the big loss's share is about 2 * (1/4) * 10 / ((0.9 + 10) / 1.9), not 2 * (1/4)
    assert _item_norm(param.grad[..., :32]) == pytest.approx(0.5 * 10 * 1.9 / 10.9, rel=1e-5)


# --------------------------------------------------------------------------- config checks
def _tiny_cfg(tmp_path: Path, corpus: bool = False) -> dict:
    """The tiny trainer config; its manifests exist only with ``corpus`` (the checks alone do not read them)."""
    if corpus:
        return _config(*_corpus(tmp_path / "data"), steps=2)
    return _config(tmp_path / "train.jsonl", tmp_path / "valid.jsonl", steps=2)


@pytest.mark.parametrize("section, key, value, problem", [
    ("balancer", "ema_decay", 1.5, " must be in [0, 1], got 1.5"),
    ("balancer", "ema_decay", -0.1, " must be in [0, 1], got -0.1"),
    ("balancer", "ema_decay", "fast", ": expected a number, got 'fast'"),
    ("quantizer", "decay", 2, " must be in [0, 1], got 2"),
    ("quantizer", "decay", -0.5, " must be in [0, 1], got -0.5"),
    ("quantizer", "decay", "slow", ": expected a number, got 'slow'"),
    ("losses", "l1", -0.1, " must be >= 0, got -0.1"),
    ("losses", "mel", "much", ": expected a number, got 'much'"),
    ("losses", "adv", -3, " must be >= 0, got -3"),
    ("losses", "feat", "x", ": expected a number, got 'x'"),
    ("losses", "commit", -1.0, " must be >= 0, got -1.0"),
    ("losses", "commit", True, ": expected a number, got True"),
])
def test_decay_and_loss_weight_out_of_range_is_a_config_error(section: str, key: str, value: object, problem: str,
                                                              tmp_path: Path) -> None:
    cfg = _tiny_cfg(tmp_path)
    cfg.setdefault(section, {})[key] = value
    with pytest.raises(ConfigError) as info:
        check_codec_config(cfg)
    assert str(info.value) == f"config field {section}.{key}{problem}"


@pytest.mark.parametrize("section, key, value", [("balancer", "ema_decay", 0.0), ("balancer", "ema_decay", 1.0),
                                                 ("quantizer", "decay", 0.0), ("quantizer", "decay", 1.0),
                                                 ("losses", "l1", 0.0), ("losses", "mel", "2.5")])
def test_decay_and_loss_weight_bounds_are_accepted(section: str, key: str, value: object, tmp_path: Path) -> None:
    cfg = _tiny_cfg(tmp_path)
    cfg.setdefault(section, {})[key] = value
    check_codec_config(cfg)
    assert cfg[section][key] == float(value)  # a number written as a string is stored as the number


@pytest.mark.parametrize("section, key, value, problem", [
    ("balancer", "ema_decay", 1.01, "must be in [0, 1], got 1.01"),
    ("quantizer", "decay", -0.01, "must be in [0, 1], got -0.01"),
    ("losses", "mel", -1, "must be >= 0, got -1"),
])
def test_bad_decay_or_weight_is_one_line_before_anything_is_written(section: str, key: str, value: object,
                                                                   problem: str, tmp_path: Path,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    cfg = _tiny_cfg(tmp_path, corpus=True)
    cfg.setdefault(section, {})[key] = value
    status, err = _train(tmp_path, capsys, cfg)
    assert status == 1 and TRACE not in err
    assert err.splitlines() == _error_lines(err)
    assert err.startswith(f"opencodec train: error: config field {section}.{key} {problem}"), err
    assert not (tmp_path / "run").exists()


# --------------------------------------------------------------------------- k-means
def test_kmeans_empty_cluster_keeps_its_mean_and_others_move_to_their_cluster_means() -> None:
    """Two initial centroids on the same (duplicated) point: the first takes all its copies
    (argmin ties go to the lower index), the second is empty and keeps its previous mean."""
    a = torch.tensor([-5.0, 3.0])
    blob = torch.tensor([[10.0, 10.0], [12.0, 10.0], [10.0, 13.0], [11.0, 11.0]])
    samples = torch.cat([a.expand(4, 2), blob])  # [8, 2]: four copies of a, then a blob
    seed = next(s for s in range(100) if _initial_picks(s) in ([0, 0, 1], [0, 1, 0], [1, 0, 0]))
    torch.manual_seed(seed)
    initial = samples[torch.randperm(8)[:3]]  # what kmeans draws first (_sample_vectors)
    is_a = [bool(torch.equal(row, a)) for row in initial]
    first_a, empty = [j for j, x in enumerate(is_a) if x]
    on_blob = is_a.index(False)
    for iters in (1, 3):
        torch.manual_seed(seed)
        means, bins = kmeans(samples, 3, num_iters=iters)
        assert torch.equal(means[empty], a)  # empty: its previous mean (not zero, not moved)
        assert bins[empty].item() == 0
        assert torch.equal(means[first_a], a) and bins[first_a].item() == 4
        torch.testing.assert_close(means[on_blob], torch.tensor([10.75, 11.0]))  # moved to its cluster's mean
        assert not torch.equal(means[on_blob], initial[on_blob])
        assert bins[on_blob].item() == 4


def _initial_picks(seed: int) -> list[int]:
    """For kmeans' first draw of 3 of the 8 samples under ``seed``: 0 = a copy of a, 1 = the blob."""
    torch.manual_seed(seed)
    return [0 if i < 4 else 1 for i in torch.randperm(8)[:3].tolist()]
