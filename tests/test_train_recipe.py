"""The training recipe the README lists, each fact checked on its own: k-means
initialisation, dead-code replacement that takes effect, the commitment gradient reaching
every codebook, the number of codebooks drawn per step, and the discriminator updated with
probability 2/3 (the seeded per-step draws, and the trainer following them)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from opencodec import EncodecModel
from opencodec.quantization import EuclideanCodebook, ResidualVectorQuantizer
from opencodec.train.solver import _step_rng, train
from test_train_solver import _config, _corpus


def _clusters(centres: torch.Tensor, per: int, spread: float, seed: int) -> torch.Tensor:
    """``per`` points around each row of ``centres`` [K, D], shuffled: [K * per, D]."""
    gen = torch.Generator().manual_seed(seed)
    points = centres.repeat_interleave(per, dim=0)
    points = points + spread * torch.randn(points.shape, generator=gen)
    return points[torch.randperm(points.shape[0], generator=gen)]


def test_kmeans_initialisation() -> None:
    """The first training batch initialises the codebook by k-means (its entries the means
    of their nearest vectors, their sizes the counts); later batches do not initialise
    again."""
    torch.manual_seed(0)
    centres = torch.tensor([[4.0, 0, 0], [-4.0, 0, 0], [0, 4.0, 0], [0, 0, -4.0]])
    x = _clusters(centres, 50, 0.1, seed=1)
    book = EuclideanCodebook(3, 4, kmeans_iters=10, threshold_ema_dead_code=0.0)
    assert not bool(book.inited)
    book.init_embed_(x)
    assert bool(book.inited)
    # A converged Lloyd solution: each entry is the mean of the vectors nearest to it, its
    # size their count; all within the data's range (not the zero placeholders).
    nearest = ((x[:, None, :] - book.embed[None]) ** 2).sum(-1).argmin(dim=1)
    for k in range(4):
        members = x[nearest == k]
        assert len(members) > 0 and float(book.cluster_size[k]) == len(members)
        torch.testing.assert_close(book.embed[k], members.mean(dim=0), rtol=0, atol=1e-5)
    assert float(book.cluster_size.sum()) == len(x)
    assert float(book.embed.norm(dim=1).min()) > 1.0
    torch.testing.assert_close(book.embed_avg, book.embed * book.cluster_size[:, None])
    before = book.embed.clone()
    book.init_embed_(x + 100)
    assert torch.equal(book.embed, before)


def test_dead_code_replacement_takes_effect() -> None:
    """Entries whose EMA count falls below the threshold are replaced by vectors of the
    batch, their statistics restarted from them, so the next EMA updates keep them there
    (the reference restarts only the embedding, and its next update pulls it back)."""
    book = EuclideanCodebook(2, 8, kmeans_init=False, threshold_ema_dead_code=0.5, decay=0.9)
    far = torch.full((8, 2), 50.0)
    with torch.no_grad():
        book.embed.copy_(far)
        book.embed[0] = torch.tensor([0.0, 0.0])
        book.embed_avg.copy_(book.embed * 4.0)
        book.cluster_size.fill_(4.0)
        book.cluster_size[1:] = 0.1  # entries 1..7: dead
    x = _clusters(torch.tensor([[0.0, 0.0], [3.0, 3.0], [-3.0, 3.0]]), 40, 0.05, seed=2)
    book.update_(x, book.quantize(x))
    replaced = book.embed[1:]
    assert all(bool((x == row).all(dim=1).any()) for row in replaced)  # batch vectors, exactly
    assert torch.equal(book.cluster_size[1:], torch.ones(7))
    torch.testing.assert_close(book.embed_avg[1:], replaced)
    for _ in range(3):  # in use, and they stay near the data
        indices = book.quantize(x)
        book.update_(x, indices)
    assert len(indices.unique()) >= 3
    assert float(torch.cdist(book.embed, x).min(dim=1).values.max()) < 10  # none back at 50


def test_commitment_gradient_reaches_every_codebook() -> None:
    """In training, each layer's commitment loss ``MSE(q_k, r_k)`` flows to the encoder's
    latent x: d(loss)/dx is the mean over layers of ``2 (r_k - q_k) / numel``, with
    ``r_k = x - sum_{j<k} q_j``, every layer included."""
    torch.manual_seed(0)
    rvq = ResidualVectorQuantizer(dimension=6, n_q=4, bins=8, kmeans_iters=3,
                                  threshold_ema_dead_code=0.0).train()
    x = torch.randn(2, 6, 20, requires_grad=True)
    seen: list[tuple[torch.Tensor, torch.Tensor]] = []  # each layer's (input r_k, output q_k)
    hooks = [layer.register_forward_hook(lambda m, args, out: seen.append((args[0].detach(), out[0].detach())))
             for layer in rvq.vq.layers]
    result = rvq(x, frame_rate=75, n_q=4)
    for hook in hooks:
        hook.remove()
    result.commitment_loss.backward()
    assert len(seen) == 4
    residual = x.detach()
    for r, q in seen:  # the residual each layer saw: x minus the quantised values before it
        torch.testing.assert_close(r, residual, rtol=0, atol=1e-6)
        residual = residual - q
    expected = sum(2 * (r - q) / r.numel() / 4 for r, q in seen)
    assert x.grad is not None
    torch.testing.assert_close(x.grad, expected, rtol=1e-5, atol=1e-9)
    # without layers 2..4 the gradient would differ by much more than that: they contribute
    r, q = seen[0]
    assert float((x.grad - 2 * (r - q) / r.numel() / 4).abs().max()) > 1e-4


def test_seeded_draws_have_the_recipe_rates() -> None:
    """The per-step draws: the discriminator is updated with probability 2/3 and the
    bandwidth is uniform over the model's. Over 30000 steps each frequency is within
    5 standard deviations of its probability (a false alarm below 1e-6)."""
    n, seed = 30_000, 0
    updates = sum(_step_rng(seed, step, 2).random() < 2 / 3 for step in range(n))
    p = 2 / 3
    assert abs(updates / n - p) < 5 * math.sqrt(p * (1 - p) / n), updates / n
    bandwidths = [1.5, 3.0, 6.0, 12.0]
    counts = {bw: 0 for bw in bandwidths}
    for step in range(n):
        counts[_step_rng(seed, step, 1).choice(bandwidths)] += 1
    q = 1 / len(bandwidths)
    for bw, c in counts.items():
        assert abs(c / n - q) < 5 * math.sqrt(q * (1 - q) / n), (bw, c / n)


def test_trainer_follows_the_draws(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Through the trainer (default disc_prob, so 2/3): at every step it quantises with the
    number of codebooks of that step's drawn bandwidth (after the warm-up without
    quantisation), logs it, and updates the discriminator exactly at the drawn steps;
    k-means has then initialised every codebook."""
    train_m, valid_m = _corpus(tmp_path / "data")
    steps = 10
    cfg = _config(train_m, valid_m, steps=steps)
    del cfg["adversarial"]["disc_prob"]
    seen: list[tuple[int | None, bool]] = []
    original = EncodecModel.train_forward

    def spy(self, wav, n_q=None, bypass_quantizer=False):
        seen.append((n_q, bypass_quantizer))
        return original(self, wav, n_q, bypass_quantizer)

    monkeypatch.setattr(EncodecModel, "train_forward", spy)
    run, model, _ = train(cfg, tmp_path / "run", progress=False, return_models=True)
    bandwidths = cfg["model"]["target_bandwidths"]
    drawn = [model.num_codebooks(_step_rng(0, k, 1).choice(bandwidths)) for k in range(steps)]
    assert sorted(set(drawn)) == [2, 4]  # both bandwidths occur in these steps
    assert seen == [(n, k < cfg["quantizer"]["warmup_steps"]) for k, n in enumerate(drawn)]
    metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    by_step = {m["step"]: m for m in metrics if "train/n_q" in m}
    assert [by_step[k + 1]["train/n_q"] for k in range(steps)] == drawn
    disc_steps = [k for k in range(steps) if "train/disc" in by_step[k + 1]]
    assert disc_steps == [k for k in range(steps) if _step_rng(0, k, 2).random() < 2 / 3]
    assert 0 < len(disc_steps) < steps
    for layer in model.quantizer.vq.layers:
        assert bool(layer._codebook.inited)
    assert model.quantizer.detach_residual  # the commitment gradient setting above
