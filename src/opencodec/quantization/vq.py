"""One vector-quantisation layer: a Euclidean codebook trained by k-means and EMA.

Inference: each latent vector x [D] maps to the index of the nearest codebook
entry, ``argmin_j ||x - e_j||^2``, computed as ``argmax_j -(|x|^2 - 2 x.e_j + |e_j|^2)``
(the same float operations as the reference, so codes are bit-identical).

Training (``module.train()``):
- the codebook is initialised by k-means (``kmeans_iters`` Lloyd iterations) on
  the first batch it sees;
- per step, cluster sizes n_j and sums s_j are tracked with an exponential moving
  average (``decay``), and ``e_j = s_j / n_j`` with Laplace smoothing ``epsilon``;
- entries whose EMA cluster size falls below ``threshold_ema_dead_code`` are
  replaced by random vectors of the current batch *after* the EMA update, so the
  replacement takes effect (the reference overwrites it in the same step); their
  EMA statistics are reset to the new vector with unit count;
- the output uses the straight-through estimator, ``x + (q - x).detach()``;
- the commitment loss is ``MSE(q.detach(), x)``.
"""

from __future__ import annotations

import typing as tp

import torch
from torch import nn
from torch.nn import functional as F



class CodebookSync(tp.Protocol):
    """Collective operations that keep codebooks identical across distributed ranks."""

    def all_gather(self, x: torch.Tensor) -> torch.Tensor:
        """Concatenate x [N, D] of every rank along dim 0, in rank order."""
        ...

    def all_reduce_sum(self, x: torch.Tensor) -> None:
        """Sum x over ranks, in place."""
        ...


def _sample_vectors(samples: torch.Tensor, num: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """``num`` rows of ``samples`` [N, D] picked at random (without replacement when N >= num)."""
    n = samples.shape[0]
    if n >= num:
        idx = torch.randperm(n, device=samples.device, generator=generator)[:num]
    else:
        idx = torch.randint(0, n, (num,), device=samples.device, generator=generator)
    return samples[idx]


def kmeans(samples: torch.Tensor, num_clusters: int, num_iters: int = 50) -> tuple[torch.Tensor, torch.Tensor]:
    """Lloyd's k-means on ``samples`` [N, D]: returns (means [K, D], cluster sizes [K]).

    Empty clusters keep their previous mean.
    """
    means = _sample_vectors(samples, num_clusters)
    bins = torch.zeros(num_clusters, dtype=torch.long, device=samples.device)
    for _ in range(num_iters):
        # argmin_j |x - m_j|^2 = argmax_j (2 x.m_j - |m_j|^2): one matrix product.
        scores = torch.addmm(-means.pow(2).sum(1)[None], samples, means.t(), alpha=2)
        buckets = scores.argmax(dim=-1)
        bins = torch.bincount(buckets, minlength=num_clusters)
        zero = bins == 0
        new_means = torch.zeros_like(means).index_add_(0, buckets, samples)
        new_means = new_means / bins.clamp(min=1)[:, None].to(samples.dtype)
        means = torch.where(zero[:, None], means, new_means)
    return means, bins


class EuclideanCodebook(nn.Module):
    """Codebook of ``codebook_size`` vectors of size ``dim``; buffers ``inited``,
    ``cluster_size`` [K], ``embed`` [K, D], ``embed_avg`` [K, D] (the official key names)."""

    def __init__(self, dim: int, codebook_size: int, kmeans_init: bool = True, kmeans_iters: int = 50,
                 decay: float = 0.99, epsilon: float = 1e-5, threshold_ema_dead_code: float = 2.0):
        super().__init__()
        self.dim = dim
        self.codebook_size = codebook_size
        self.kmeans_iters = kmeans_iters
        self.decay = decay
        self.epsilon = epsilon
        self.threshold_ema_dead_code = threshold_ema_dead_code
        if kmeans_init:
            embed = torch.zeros(codebook_size, dim)
        else:
            embed = nn.init.kaiming_uniform_(torch.empty(codebook_size, dim))
        self.register_buffer("inited", torch.tensor([float(not kmeans_init)]))
        self.register_buffer("cluster_size", torch.zeros(codebook_size))
        self.register_buffer("embed", embed)
        self.register_buffer("embed_avg", embed.clone())
        # Set by distributed training: k-means and dead-code replacement then see the
        # gathered global batch and the EMA the summed statistics, so that every rank
        # (sharing the same random state) makes the same update as one process would.
        self.sync: CodebookSync | None = None
        self._inited_seen = False

    def _load_from_state_dict(self, *args: tp.Any, **kwargs: tp.Any) -> None:
        self._inited_seen = False
        super()._load_from_state_dict(*args, **kwargs)

    def quantize(self, x: torch.Tensor) -> torch.Tensor:
        """Nearest-entry indices [N] for vectors x [N, D]."""
        embed = self.embed.t()
        dist = -(x.pow(2).sum(1, keepdim=True) - 2 * x @ embed + embed.pow(2).sum(0, keepdim=True))
        return dist.max(dim=-1).indices

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """x [..., D] -> indices [...]."""
        shape = x.shape
        return self.quantize(x.reshape(-1, shape[-1])).view(*shape[:-1])

    def decode(self, indices: torch.Tensor) -> torch.Tensor:
        """indices [...] -> vectors [..., D]."""
        return F.embedding(indices, self.embed)

    def _gather(self, x: torch.Tensor) -> torch.Tensor:
        return x if self.sync is None else self.sync.all_gather(x.contiguous())

    @torch.no_grad()
    def init_embed_(self, x: torch.Tensor) -> None:
        """k-means initialisation from vectors x [N, D] (once, on the global batch)."""
        if self._inited_seen:  # no host sync once known (reset by load_state_dict)
            return
        if bool(self.inited.item()):
            self._inited_seen = True
            return
        embed, sizes = kmeans(self._gather(x).float(), self.codebook_size, self.kmeans_iters)
        # Keep the EMA state consistent (embed = embed_avg / cluster_size): the reference
        # stores embed_avg = embed, which shrinks every entry by its cluster size at the
        # first EMA update and sends empty clusters' entries to infinity.
        self.embed.copy_(embed)
        self.embed_avg.copy_(embed * sizes.to(embed.dtype)[:, None])
        self.cluster_size.copy_(sizes)
        self.inited.fill_(1.0)
        self._inited_seen = True

    @torch.no_grad()
    def update_(self, x: torch.Tensor, indices: torch.Tensor) -> None:
        """EMA update from vectors x [N, D] and their indices [N], then dead-code expiry."""
        onehot = F.one_hot(indices, self.codebook_size).to(x.dtype)
        counts = onehot.sum(0)
        sums = x.t() @ onehot  # [D, K]
        if self.sync is not None:  # global statistics: same update on every rank
            self.sync.all_reduce_sum(counts)
            self.sync.all_reduce_sum(sums)
        self.cluster_size.mul_(self.decay).add_(counts, alpha=1 - self.decay)
        self.embed_avg.mul_(self.decay).add_(sums.t(), alpha=1 - self.decay)
        n = self.cluster_size.sum()
        smoothed = (self.cluster_size + self.epsilon) / (n + self.codebook_size * self.epsilon) * n
        self.embed.copy_(self.embed_avg / smoothed.unsqueeze(1))
        self._expire_codes_(x)

    @torch.no_grad()
    def _expire_codes_(self, x: torch.Tensor) -> None:
        if self.threshold_ema_dead_code <= 0:
            return
        dead = self.cluster_size < self.threshold_ema_dead_code
        # Candidates are drawn every step and used only where an entry is dead: no host
        # synchronisation to ask whether any is (a training step stays asynchronous on a GPU).
        new = _sample_vectors(self._gather(x), self.codebook_size)
        self.embed.copy_(torch.where(dead[:, None], new, self.embed))
        # Restart the statistics of replaced entries from the new vector (count 1),
        # so the next EMA step does not pull them back to the dead value.
        self.embed_avg.copy_(torch.where(dead[:, None], new, self.embed_avg))
        self.cluster_size.copy_(torch.where(dead, torch.ones_like(self.cluster_size), self.cluster_size))


class VectorQuantization(nn.Module):
    """One VQ layer on latents [B, D, T]: ``forward`` returns (quantized [B, D, T],
    indices [B, T], commitment loss []) with the straight-through estimator."""

    def __init__(self, dim: int, codebook_size: int, **codebook_kwargs: tp.Any):
        super().__init__()
        self._codebook = EuclideanCodebook(dim, codebook_size, **codebook_kwargs)
        self.codebook_size = codebook_size

    @property
    def codebook(self) -> torch.Tensor:
        """The codebook entries [K, D]."""
        return self._codebook.embed

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """x [B, D, T] -> indices [B, T]."""
        return self._codebook.encode(x.transpose(1, 2))

    def decode(self, indices: torch.Tensor) -> torch.Tensor:
        """indices [B, T] -> vectors [B, D, T]."""
        return self._codebook.decode(indices).transpose(1, 2)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        xt = x.transpose(1, 2)  # [B, T, D]
        flat = xt.reshape(-1, xt.shape[-1])
        if self.training:
            self._codebook.init_embed_(flat.detach())
        indices = self._codebook.quantize(flat)
        quantized = self._codebook.decode(indices).view_as(xt)
        if self.training:
            self._codebook.update_(flat.detach(), indices)
            commit = F.mse_loss(quantized.detach(), xt)
            quantized = xt + (quantized - xt).detach()
        else:
            commit = torch.zeros((), device=x.device)
        return quantized.transpose(1, 2), indices.view(xt.shape[:-1]), commit
