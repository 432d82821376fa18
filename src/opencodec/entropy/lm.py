"""Entropy model: the causal transformer that predicts the next frame's code distributions.

The architecture is the one of the EnCodec paper (and of the official checkpoints
`encodec_lm_24khz-*.th` / `encodec_lm_48khz-*.th`):

* input at step ``t``: ``sum_k emb[k](i[k, t])`` where ``i[k, 0] = 0`` ("no code") and
  ``i[k, t] = 1 + codes[k, t - 1]`` afterwards, so ``emb[k]`` has ``card + 1`` rows;
* ``LayerNorm`` on that input, plus a sinusoidal position embedding (cosines first, then
  sines, periods up to ``max_period``);
* ``num_layers`` post-norm transformer layers (8 heads, width ``dim``, feed-forward
  ``hidden_scale * dim``, GELU, no dropout) whose self-attention sees the current step and at
  most ``past_context`` earlier steps;
* one linear head per codebook; a softmax over the ``card`` bins gives the probabilities.

Streaming: :meth:`EntropyLM.step` takes :class:`LMState` (per layer the inputs of the last
``past_context`` steps, from which keys and values are projected, plus the time offset) and
returns the updated state.  Like the official implementation, the state starts with one
all-zero "past" vector per layer, which the first ``past_context`` steps attend to.

Bit-exactness: the arithmetic coder turns these probabilities into integer CDFs after
rounding to 1e-8, so a one-ulp difference changes the bytes.  Every operation here is
therefore the same float32 operation, on tensors of the same shape and layout, as in the
official model (the key/value projections are recomputed over the window each step for
that reason: projecting rows one at a time gives different roundings).  Only changes proven
bit-identical are used: the per-codebook heads run as one matrix product over the stacked
head weights, and the embedding sum is one gather plus one ``index_add_`` (which adds the
rows sequentially, as the official Python ``sum`` does).

Caveat (official issue #85): torch's float32 results, hence the official bytes, also depend on
the CPU, the BLAS and the thread count (``torch.set_num_threads``); this model matches the
official one bit for bit under the same settings, not across them.
"""

from __future__ import annotations

import dataclasses
import os
import typing as tp

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ModelLoadError

__all__ = ["EntropyLM", "LMState", "load_lm", "sin_embedding"]


def sin_embedding(positions: torch.Tensor, dim: int, max_period: float = 10000) -> torch.Tensor:
    """Sinusoidal position embedding.

    Args:
        positions: integer positions, shape ``[B, T, 1]``.
        dim: embedding width (even).
        max_period: longest period, in steps.
    Returns:
        float32 tensor ``[B, T, dim]``: ``cos(p / max_period ** (j / (dim/2 - 1)))`` for
        ``j < dim/2``, then the matching sines.
    """
    if dim % 2:
        raise ValueError("dim must be even")
    half = dim // 2
    j = torch.arange(half, device=positions.device).view(1, 1, -1)
    phase = positions / (max_period ** (j / (half - 1)))
    return torch.cat([torch.cos(phase), torch.sin(phase)], dim=-1)


class _Layer(nn.Module):
    """One post-norm transformer layer (parameter names match ``nn.TransformerEncoderLayer``)."""

    def __init__(self, dim: int, num_heads: int, hidden: int) -> None:
        super().__init__()
        self.self_attn = nn.MultiheadAttention(dim, num_heads, dropout=0.0, batch_first=True)
        self.linear1 = nn.Linear(dim, hidden)
        self.linear2 = nn.Linear(hidden, dim)
        self.norm1 = nn.LayerNorm(dim)
        self.norm2 = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor, past: torch.Tensor, past_context: int) -> torch.Tensor:
        """x: ``[B, T, C]`` new steps; past: ``[B, H, C]`` earlier layer inputs. Returns ``[B, T, C]``."""
        T = x.shape[1]
        H = past.shape[1]
        keys = torch.cat([past, x], dim=1)
        delta = (torch.arange(H, T + H, device=x.device).view(-1, 1)
                 - torch.arange(T + H, device=x.device).view(1, -1))
        blocked = ~((delta >= 0) & (delta <= past_context))
        attn = self.self_attn(x, keys, keys, attn_mask=blocked, need_weights=False)[0]
        x = self.norm1(x + attn)
        return self.norm2(x + self.linear2(F.gelu(self.linear1(x))))


class _Transformer(nn.Module):
    """Input LayerNorm + positions + the layers (holds the ``transformer.*`` parameters)."""

    def __init__(self, dim: int, num_heads: int, num_layers: int, hidden: int,
                 past_context: int, max_period: float) -> None:
        super().__init__()
        self.past_context = past_context
        self.max_period = max_period
        self.norm_in = nn.LayerNorm(dim)
        self.layers = nn.ModuleList(_Layer(dim, num_heads, hidden) for _ in range(num_layers))


@dataclasses.dataclass
class LMState:
    """Streaming state of :class:`EntropyLM`.

    Attributes:
        past: per layer, float32 ``[B, H, dim]`` with ``H <= past_context``: the inputs of that
            layer at the previous steps (keys and values are projected from them).
        offset: number of steps already processed (the next step's position).
    """

    past: list[torch.Tensor]
    offset: int = 0


class EntropyLM(nn.Module):
    """Causal transformer giving, for each step, a distribution over each codebook's bins.

    Args:
        n_q: number of codebooks ``K``.
        card: codebook size (bins per codebook).
        dim: transformer width.
        num_heads: attention heads.
        num_layers: transformer layers.
        hidden_scale: feed-forward width is ``int(dim * hidden_scale)``.
        past_context: how many earlier steps the attention sees (official: ``int(3.5 *
            frame_rate)``, i.e. 262 at 75 Hz and 525 at 150 Hz).
        max_period: longest period of the position embedding, in steps.

    The state-dict keys are those of the official ``LMModel`` (``transformer.norm_in.*``,
    ``transformer.layers.{i}.{self_attn.in_proj_weight, ..., norm2.bias}``, ``emb.{k}.weight``,
    ``linears.{k}.{weight,bias}``).
    """

    def __init__(self, n_q: int = 32, card: int = 1024, dim: int = 200, num_heads: int = 8,
                 num_layers: int = 5, hidden_scale: float = 4.0, past_context: int = 262,
                 max_period: float = 10000) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError("dim must be a multiple of num_heads")
        self.n_q = n_q
        self.card = card
        self.dim = dim
        self.transformer = _Transformer(dim, num_heads, num_layers, int(dim * hidden_scale),
                                        past_context, max_period)
        self.emb = nn.ModuleList(nn.Embedding(card + 1, dim) for _ in range(n_q))
        self.linears = nn.ModuleList(nn.Linear(dim, card) for _ in range(n_q))
        self._heads_cache: tuple[tuple[tp.Any, ...], torch.Tensor, torch.Tensor] | None = None
        self._emb_cache: tuple[tuple[tp.Any, ...], torch.Tensor] | None = None
        self.register_buffer("_emb_offsets", torch.arange(n_q) * (card + 1), persistent=False)

    @property
    def past_context(self) -> int:
        """Number of earlier steps the attention can see."""
        return self.transformer.past_context

    def initial_state(self, batch: int = 1, device: torch.device | str | None = None) -> LMState:
        """The state before the first step: one zero vector per layer, offset 0."""
        dev = device if device is not None else self.linears[0].weight.device
        zeros = torch.zeros(batch, 1, self.dim, device=dev)
        return LMState([zeros for _ in self.transformer.layers], 0)

    def _stacked_emb(self, k: int) -> torch.Tensor:
        """The first ``k`` embedding tables stacked as ``[k * (card + 1), dim]``, cached."""
        params = [emb.weight for emb in self.emb[:k]]
        key = tuple((p.data_ptr(), p._version) for p in params)
        if self._emb_cache is None or self._emb_cache[0] != key:
            with torch.no_grad():
                table = torch.cat(params, dim=0)
            self._emb_cache = (key, table)
        return self._emb_cache[1]

    def _stacked_heads(self, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The first ``k`` heads' weights as ``[k * card, dim]`` and biases ``[k * card]``, cached."""
        params = [p for lin in self.linears[:k] for p in (lin.weight, lin.bias)]
        key = tuple((p.data_ptr(), p._version) for p in params)
        if self._heads_cache is None or self._heads_cache[0] != key:
            with torch.no_grad():
                w = torch.cat([lin.weight for lin in self.linears[:k]], dim=0)
                b = torch.cat([lin.bias for lin in self.linears[:k]], dim=0)
            self._heads_cache = (key, w, b)
        return self._heads_cache[1], self._heads_cache[2]

    def forward(self, indices: torch.Tensor, state: LMState | None = None
                ) -> tuple[torch.Tensor, LMState]:
        """Run ``T`` steps.

        Args:
            indices: long ``[B, K, T]``, ``1 + code`` of the previous step (0: none), ``K <= n_q``.
            state: from the previous call, or None to start.
        Returns:
            ``(probs, state)``: probs float32 ``[B, K, T, card]`` (a view of a tensor laid out
            as the official ``[B, card, K, T]`` output; sums to 1 over the last axis) and the
            new state.
        """
        B, K, T = indices.shape
        if K > self.n_q:
            raise ValueError(f"{K} codebooks given, the model has {self.n_q}")
        if state is None:
            state = self.initial_state(B, indices.device)
        # sum_k emb[k](indices[:, k]) with the official float32 order ((0 + e_0) + e_1) + ...:
        # index_add_ adds the source rows one after the other, in k order for each target.
        table = self._stacked_emb(K)
        rows = table.index_select(0, (indices + self._emb_offsets[:K].view(1, K, 1)
                                      ).transpose(0, 1).reshape(-1))      # [K * B * T, C]
        target = torch.arange(B * T, device=indices.device).repeat(K)
        x = rows.new_zeros(B * T, self.dim).index_add_(0, target, rows).view(B, T, self.dim)
        tr = self.transformer
        positions = torch.arange(T, device=x.device).view(1, -1, 1) + state.offset
        x = tr.norm_in(x) + sin_embedding(positions, self.dim, tr.max_period)
        new_past = []
        for past, layer in zip(state.past, tr.layers):
            new_past.append(torch.cat([past, x], dim=1)[:, -tr.past_context:, :])
            x = layer(x, past, tr.past_context)
        w, b = self._stacked_heads(K)
        logits = torch.addmm(b, x.reshape(B * T, self.dim), w.t())
        logits = logits.view(B, T, K, self.card).transpose(1, 2)
        if T > 1:
            logits = logits.contiguous()
        probs = torch.softmax(logits.permute(0, 3, 1, 2), dim=1)  # [B, card, K, T]
        return probs.permute(0, 2, 3, 1), LMState(new_past, state.offset + T)

    def step(self, indices: torch.Tensor, state: LMState | None = None
             ) -> tuple[torch.Tensor, LMState]:
        """One streaming step under ``torch.inference_mode``.

        Args:
            indices: long ``[K]`` or ``[B, K]``: ``1 + code`` of the previous frame (0 at t=0).
            state: previous state or None.
        Returns:
            ``(probs, state)`` with probs ``[K, card]`` (or ``[B, K, card]``), float32.
        """
        with torch.inference_mode():
            squeeze = indices.dim() == 1
            idx = indices.view(1, -1, 1) if squeeze else indices.unsqueeze(-1)
            probs, state = self(idx, state)
            probs = probs[:, :, 0]
            return (probs[0] if squeeze else probs), state


def load_lm(path_or_state_dict: str | os.PathLike[str] | tp.Mapping[str, torch.Tensor],
            n_q: int, card: int = 1024, past_context: int | None = None,
            frame_rate: int | None = None, **kwargs: tp.Any) -> EntropyLM:
    """Build an :class:`EntropyLM` and load official weights strictly.

    Args:
        path_or_state_dict: a ``.th`` file (loaded with ``weights_only=True``) or a state dict.
        n_q: number of codebooks (32 for the 24 kHz LM, 16 for the 48 kHz one).
        card: codebook size.
        past_context: attention window in steps; default ``int(3.5 * frame_rate)`` if
            ``frame_rate`` is given, else 262 (75 Hz).
        frame_rate: frames per second of the codec (75 or 150), used for the default window.
        **kwargs: other :class:`EntropyLM` arguments (dim, num_layers, ...).
    Returns:
        The model in eval mode.
    Raises:
        ModelLoadError: unreadable file, or keys/shapes that do not match (names listed).
    """
    if past_context is None:
        past_context = int(3.5 * frame_rate) if frame_rate is not None else 262
    if isinstance(path_or_state_dict, (str, os.PathLike)):
        try:
            state = torch.load(path_or_state_dict, map_location="cpu", weights_only=True)
        except Exception as exc:  # noqa: BLE001 - any failure is a load failure
            raise ModelLoadError(f"cannot load LM weights from {path_or_state_dict}: {exc}") from exc
    else:
        state = path_or_state_dict
    if not isinstance(state, tp.Mapping):
        raise ModelLoadError("LM checkpoint is not a state dict")
    lm = EntropyLM(n_q=n_q, card=card, past_context=past_context, **kwargs)
    expected = lm.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        raise ModelLoadError(f"LM state dict mismatch: missing keys {missing}, "
                             f"unexpected keys {unexpected}")
    bad = [f"{k}: {tuple(state[k].shape)} != {tuple(v.shape)}"
           for k, v in expected.items() if tuple(state[k].shape) != tuple(v.shape)]
    if bad:
        raise ModelLoadError("LM state dict shape mismatch: " + "; ".join(bad))
    lm.load_state_dict(state, strict=True)
    return lm.eval()
