"""EMA codebook statistics for fine-tuning an inference-only export: such a file carries no
EMA state, and ``load_model``'s refilled unit sizes would make dead-code expiry replace most
entries at the first step, so the trainer estimates the steady state from training audio."""

from __future__ import annotations

import torch

from ..model import EncodecModel


CODEBOOK_STATISTICS_ITEMS = 64  # training segments coded to estimate an inference-only export's EMA state
UNSEEN_CLUSTER_SIZE = 0.01  # estimated EMA size of a codebook entry no estimation segment uses


def _has_refilled_codebook_statistics(model: EncodecModel) -> bool:
    """True when every codebook holds the unit cluster sizes and ``embed_avg == embed`` that
    ``load_model`` refills for an inference-only export (no real EMA statistics)."""
    codebooks = [layer._codebook for layer in model.quantizer.vq.layers]
    return all(bool((cb.cluster_size == 1).all()) and torch.equal(cb.embed_avg, cb.embed) for cb in codebooks)


@torch.no_grad()
def estimate_codebook_statistics(model: EncodecModel, wav: torch.Tensor, batch_size: int) -> None:
    """Set each codebook's EMA statistics to their steady state for ``batch_size`` items a
    step, from the codes of ``wav`` [N, C, T] (training segments) at the full bandwidth.

    At a constant code distribution the EMA ``cluster_size`` tends to the expected count per
    step, ``batch_size * frames * p_k``, and ``embed_avg`` to ``cluster_size * embed``. An
    inference-only export carries neither; ``load_model``'s unit sizes would make dead-code
    expiry (``cluster_size < threshold``) replace most entries at the first step. Entries
    unseen in ``wav`` get ``UNSEEN_CLUSTER_SIZE``, far below any expiry threshold: with
    expiry on they are replaced at the first step, as a real EMA state would have them;
    with it off they keep their vectors, which a size of 0 would send to 0 at the first
    update (``embed = embed_avg / size``).
    """
    was_training, bandwidth = model.training, model.bandwidth
    model.eval()
    model.set_target_bandwidth(max(model.target_bandwidths))
    try:
        codes = torch.cat([frame.codes for frame in model.encode(wav)], dim=-1)  # [N, K, F]
    finally:
        model.bandwidth = bandwidth
        model.train(was_training)
    per_step = batch_size / wav.shape[0]
    for k, layer in enumerate(model.quantizer.vq.layers[: codes.shape[1]]):
        codebook = layer._codebook
        counts = torch.bincount(codes[:, k].reshape(-1), minlength=codebook.codebook_size)
        sizes = (counts.to(codebook.cluster_size.dtype) * per_step).clamp_min(UNSEEN_CLUSTER_SIZE)
        codebook.cluster_size.copy_(sizes)
        codebook.embed_avg.copy_(codebook.embed * sizes[:, None])
