"""Fast single-stream stepping of :class:`EntropyLM` with the official float32 results, bit for bit.

Arithmetic coding with the entropy model runs the transformer one frame at a time (the
decoder needs frame ``t``'s codes before it can predict frame ``t + 1``).  The official
implementation, which :meth:`EntropyLM.step` mirrors, pays two costs per frame that this
module removes without changing a single bit of the probabilities:

* **Key/value projections recomputed over the whole window.**  At step ``t`` every layer
  projects the keys and values of all ``S = min(t + 2, past_context + 1)`` rows of its window
  (one ``[S, dim] x [dim, 2 dim]`` product; at 75 Hz, from the fourth second on, 263 rows
  for one new one).  A row of a matrix product depends only on that input row, but not
  always on the same arithmetic: BLAS libraries switch to other kernels for a few rows
  (here MKL rounds products of up to 8 rows differently from larger ones).  This stepper
  projects each new row once, as row 0 of a ``pad_rows``-row product, and keeps it; a
  window of ``S >= pad_rows`` rows then holds exactly what the full ``S``-row product
  gives.  That is checked, not assumed: :func:`projection_rows_are_independent` compares,
  on this machine and thread count, rows projected with ``pad_rows`` rows against the same
  rows inside products of every window size that occurs, and if any bit differs the stepper
  recomputes the window like the official code.  Windows smaller than ``pad_rows`` (the
  first frames) are always recomputed exactly as the official code does.
* **Python overhead.**  ``nn.MultiheadAttention`` and ``F.multi_head_attention_forward``
  spend most of a one-frame step on argument checks; the stepper calls the same kernels
  (``addmm`` products, ``scaled_dot_product_attention`` with the same float mask, layer
  norms, GELU) on tensors of the same shapes and strides, directly.

Only batch 1 is handled (one stream, as in ``.ecdc`` coding); :meth:`EntropyLM.forward`
remains the general implementation and the reference the tests compare with.
"""

from __future__ import annotations

import dataclasses
import typing as tp

import torch
import torch.nn.functional as F

from .lm import EntropyLM, sin_embedding

__all__ = ["LMStepper", "projection_rows_are_independent"]

_POSITION_CACHE_ROWS = 4096   # positions whose embedding is kept (the 1 s segments of 48 kHz reuse them)
_INDEPENDENCE_CACHE: dict[tuple[tp.Any, ...], bool] = {}


def _window_sizes(past_context: int, pad_rows: int) -> list[int]:
    """Window sizes to check: every size up to 48, then the BLAS block edges, then the largest."""
    top = past_context + 1
    sizes = set(range(pad_rows, min(top, 48) + 1))
    for edge in (64, 96, 128, 192, 256, 384, 512, 768, 1024):
        sizes.update(s for s in (edge - 1, edge, edge + 1) if pad_rows <= s <= top)
    sizes.update(s for s in (top - 1, top) if s >= pad_rows)
    return sorted(sizes)


def projection_rows_are_independent(weight: torch.Tensor, bias: torch.Tensor,
                                    past_context: int, pad_rows: int) -> bool:
    """Whether a row projected within ``pad_rows`` rows equals it projected within any window.

    Args:
        weight: float32 ``[N, C]`` projection weight (the key/value half of ``in_proj_weight``).
        bias: float32 ``[N]``.
        past_context: the attention window is up to ``past_context + 1`` rows.
        pad_rows: rows of the product a new row is projected in.
    Returns:
        True if, for random rows, ``linear(rows[S, 1, C])`` equals row by row the same rows
        projected in blocks of ``pad_rows`` rows, for every window size ``S`` checked
        (:func:`_window_sizes`), with the current thread count. Cached per shape, thread count
        and weight storage.
    """
    key = (tuple(weight.shape), weight.data_ptr(), weight.stride(), past_context, pad_rows,
           torch.get_num_threads(), str(weight.device))
    if key in _INDEPENDENCE_CACHE:
        return _INDEPENDENCE_CACHE[key]
    gen = torch.Generator().manual_seed(1234)
    top = past_context + 1
    rows = torch.randn(top + pad_rows, weight.shape[1], generator=gen).to(weight.device)
    with torch.inference_mode():
        padded = torch.empty(top, weight.shape[0], device=weight.device)
        block = torch.zeros(pad_rows, weight.shape[1], device=weight.device)
        for i in range(top):
            block[0] = rows[i]
            padded[i] = torch.addmm(bias, block, weight.t())[0]
        ok = True
        for size in _window_sizes(past_context, pad_rows):
            for start in (0, top - size):
                full = F.linear(rows[start:start + size].unsqueeze(1), weight, bias).squeeze(1)
                if not torch.equal(full, padded[start:start + size]):
                    ok = False
                    break
            if not ok:
                break
    _INDEPENDENCE_CACHE[key] = ok
    return ok


@dataclasses.dataclass
class _LayerWeights:
    """One transformer layer's parameters as the views the official code multiplies with."""

    w_q: torch.Tensor
    b_q: torch.Tensor
    w_kv: torch.Tensor
    b_kv: torch.Tensor
    w_out: torch.Tensor
    b_out: torch.Tensor
    w_1: torch.Tensor
    b_1: torch.Tensor
    w_2: torch.Tensor
    b_2: torch.Tensor
    norm1: tuple[torch.Tensor, torch.Tensor, float]
    norm2: tuple[torch.Tensor, torch.Tensor, float]

    @classmethod
    def of(cls, layer: torch.nn.Module, dim: int) -> _LayerWeights:
        attn = layer.self_attn
        w_q, w_kv = attn.in_proj_weight.detach().split([dim, 2 * dim])
        b_q, b_kv = attn.in_proj_bias.detach().split([dim, 2 * dim])
        return cls(w_q, b_q, w_kv, b_kv, attn.out_proj.weight.detach(),
                   attn.out_proj.bias.detach(), layer.linear1.weight.detach(),
                   layer.linear1.bias.detach(), layer.linear2.weight.detach(),
                   layer.linear2.bias.detach(),
                   (layer.norm1.weight.detach(), layer.norm1.bias.detach(), layer.norm1.eps),
                   (layer.norm2.weight.detach(), layer.norm2.bias.detach(), layer.norm2.eps))


class _LayerCache:
    """One layer's window: its input rows and their key/value projections.

    Rows are appended to buffers of ``capacity`` rows; when more room is needed, the last
    ``past_context`` rows move to the front (no ring buffer: the attention must see the rows
    in time order and in one contiguous block, as the official code lays them out).
    """

    def __init__(self, dim: int, capacity: int, device: torch.device) -> None:
        # Uninitialised: a row is always written before it is read.
        self.inputs = torch.empty(capacity, dim, device=device)
        self.keys = torch.empty(capacity, dim, device=device)
        self.values = torch.empty(capacity, dim, device=device)
        self.count = 0

    def make_room(self, rows: int, keep: int) -> None:
        """Ensure ``rows`` free rows, keeping the last ``keep`` rows."""
        if self.count + rows <= self.inputs.shape[0]:
            return
        for buf in (self.inputs, self.keys, self.values):
            buf[:keep] = buf[self.count - keep:self.count].clone()
        self.count = keep


class LMStepper:
    """Runs one :class:`EntropyLM` stream frame by frame, bit-exactly, with cached keys/values.

    Args:
        lm: the entropy model (eval mode, float32). Its weights are read, not copied: do not
            change them while stepping.
        pad_rows: rows of the products that project new key/value rows (see the module
            docstring); windows smaller than this are recomputed like the official code.
        chunk: most frames :meth:`run` processes layer by layer at once.
        spare_rows: rows of each layer's buffer beyond the window (at least ``chunk``); the
            window is moved to the front when they are used up.

    :meth:`step` (one frame, for decoding) and :meth:`run` (many frames whose inputs are all
    known, for encoding) return exactly what ``lm.step`` returns for the same inputs, on the
    same machine and thread count (the tests compare them and the official package).
    """

    def __init__(self, lm: EntropyLM, pad_rows: int = 16, chunk: int = 256,
                 spare_rows: int = 1024) -> None:
        if lm.training:
            raise ValueError("the entropy model is in training mode (as a new EntropyLM is): call "
                             "lm.eval() before coding with it")
        if lm.linears[0].weight.is_meta:
            raise ValueError("the entropy model is on the meta device: it has shapes but no weights; "
                             "load it on a device with data (e.g. 'cpu')")
        dtype = lm.linears[0].weight.dtype
        if dtype != torch.float32:
            raise ValueError(f"the entropy model's weights are {dtype}, but the official coder "
                             f"computes in torch.float32: call lm.float() before coding with it")
        if pad_rows < 1 or chunk < 1 or spare_rows < chunk:
            raise ValueError(f"need pad_rows >= 1, chunk >= 1 and spare_rows >= chunk, got "
                             f"{pad_rows}, {chunk}, {spare_rows}")
        self.lm = lm
        tr = lm.transformer
        self.dim = lm.dim
        self.past_context = tr.past_context
        self.pad_rows = pad_rows
        self.chunk = chunk
        self.device = lm.linears[0].weight.device
        self.num_heads = tr.layers[0].self_attn.num_heads
        self.head_dim = self.dim // self.num_heads
        self._weights = [_LayerWeights.of(layer, self.dim) for layer in tr.layers]
        norm = tr.norm_in
        self._norm_in = (norm.weight.detach(), norm.bias.detach(), norm.eps)
        self.cache_projections = projection_rows_are_independent(
            self._weights[0].w_kv, self._weights[0].b_kv, self.past_context, pad_rows)
        self._capacity = self.past_context + 1 + spare_rows
        self._pad = torch.zeros(pad_rows, self.dim, device=self.device)
        self._masks: dict[int, torch.Tensor] = {}
        self._by_codebooks: dict[int, tuple[torch.Tensor, ...]] = {}
        self.reset()

    def reset(self) -> None:
        """Start a new stream (position 0, the official all-zero first "past" row per layer)."""
        self.offset = 0
        self._layers = [_LayerCache(self.dim, self._capacity, self.device) for _ in self._weights]
        for cache, lw in zip(self._layers, self._weights):
            self._append(cache, lw, torch.zeros(1, self.dim, device=self.device))

    def _append(self, cache: _LayerCache, lw: _LayerWeights, rows: torch.Tensor) -> None:
        """Add layer input rows ``[R, C]`` and (when caching) their key/value projections.

        The projections are made ``pad_rows`` rows at a time (the last block zero-padded), the
        product size :func:`projection_rows_are_independent` verified.
        """
        R = rows.shape[0]
        cache.make_room(R, self.past_context)
        n = cache.count
        cache.inputs[n:n + R] = rows
        if self.cache_projections:
            C, P = self.dim, self.pad_rows
            for i in range(0, R, P):
                m = min(P, R - i)
                if m == P:
                    block = rows[i:i + P]
                else:
                    self._pad.zero_()
                    self._pad[:m] = rows[i:i + m]
                    block = self._pad
                proj = torch.addmm(lw.b_kv, block, lw.w_kv.t())
                cache.keys[n + i:n + i + m] = proj[:m, :C]
                cache.values[n + i:n + i + m] = proj[:m, C:]
        cache.count = n + R

    def _zero_mask(self, size: int) -> torch.Tensor:
        """The float mask the official attention gets when nothing is masked: ``[1, 1, 1, S]`` zeros."""
        mask = self._masks.get(size)
        if mask is None:
            mask = torch.zeros(1, 1, 1, size, device=self.device)
            self._masks[size] = mask
        return mask

    def _layer_row(self, lw: _LayerWeights, cache: _LayerCache, x: torch.Tensor,
                   row: int) -> torch.Tensor:
        """The layer's output ``[1, 1, C]`` for its input ``x`` (``[1, 1, C]``), stored at buffer ``row``.

        The attention sees buffer rows ``row - S + 1 .. row`` with ``S = min(row + 1,
        past_context + 1)`` (the official window), then the post-norm residual blocks follow.
        """
        C, H, D = self.dim, self.num_heads, self.head_dim
        size = min(row + 1, self.past_context + 1)
        start = row + 1 - size
        q = F.linear(x, lw.w_q, lw.b_q)                              # [1, 1, C], one row
        if self.cache_projections and size >= self.pad_rows:
            k = cache.keys[start:row + 1]
            v = cache.values[start:row + 1]
        else:   # the official product over the whole window, split the official way
            window = cache.inputs[start:row + 1].unsqueeze(1)        # [S, 1, C]
            kv = F.linear(window, lw.w_kv, lw.b_kv).view(size, 2, C)
            k = kv[:, 0].contiguous()
            v = kv[:, 1].contiguous()
        q = q.view(1, H, D).transpose(0, 1).view(1, H, 1, D)
        k = k.view(size, H, D).transpose(0, 1).view(1, H, size, D)
        v = v.view(size, H, D).transpose(0, 1).view(1, H, size, D)
        out = F.scaled_dot_product_attention(q, k, v, self._zero_mask(size), 0.0, False)
        out = F.linear(out.permute(2, 0, 1, 3).reshape(1, C), lw.w_out, lw.b_out).view(1, 1, C)
        x = torch.layer_norm(x + out, (C,), *lw.norm1)
        ff = F.linear(F.gelu(F.linear(x, lw.w_1, lw.b_1)), lw.w_2, lw.b_2)
        return torch.layer_norm(x + ff, (C,), *lw.norm2)

    def _inputs(self, indices: torch.Tensor) -> torch.Tensor:
        """First layer inputs ``[T, 1, 1, C]`` for ``indices`` ``[K, T]`` (frames from ``offset``)."""
        K, T = indices.shape
        C = self.dim
        table, offsets, _, _ = self._tables(K)
        # Per frame as in EntropyLM.forward: index_add_ sums a frame's K rows in codebook order.
        rows = table.index_select(0, (indices.to(self.device) + offsets).reshape(-1))
        target = torch.arange(T, device=self.device).repeat(K)
        x = rows.new_zeros(T, C).index_add_(0, target, rows)
        out = []
        for t in range(T):
            xt = torch.layer_norm(x[t].view(1, 1, C), (C,), *self._norm_in)
            out.append(xt + self._position(self.offset + t))
        return torch.stack(out)

    def _probs(self, x: torch.Tensor, K: int) -> torch.Tensor:
        """Probabilities ``[K, card]`` from the last layer's output ``x`` (``[1, 1, C]``)."""
        _, _, w, b = self._tables(K)
        return self._softmax(torch.addmm(b, x.reshape(1, self.dim), w.t()).view(K, self.lm.card))

    def _softmax(self, logits: torch.Tensor) -> torch.Tensor:
        """One frame's softmax ``[K, card] -> [K, card]``, over the official ``[1, card, K, 1]``
        layout of the logits (the layout decides how the kernel sums)."""
        K, card = logits.shape
        probs = torch.softmax(logits.view(1, K, 1, card).permute(0, 3, 1, 2), dim=1)
        return probs.permute(0, 2, 3, 1)[0, :, 0]

    def _tables(self, K: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """For ``K`` codebooks: the stacked embedding tables, their row offsets ``[K, 1]``, and
        the stacked head weights and biases (looked up once per stepper)."""
        found = self._by_codebooks.get(K)
        if found is None:
            lm = self.lm
            w, b = lm._stacked_heads(K)
            found = (lm._stacked_emb(K), lm._emb_offsets[:K].view(K, 1), w, b)
            self._by_codebooks[K] = found
        return found

    def _check_codebooks(self, K: int) -> None:
        if K > self.lm.n_q:
            raise ValueError(f"{K} codebooks given, the model has {self.lm.n_q}")

    def step(self, indices: torch.Tensor) -> torch.Tensor:
        """One frame.

        Args:
            indices: long ``[K]``, ``1 + code`` of the previous frame for each codebook (0 at
                the first frame), ``K <= lm.n_q``.
        Returns:
            float32 ``[K, card]`` probabilities, bitwise what ``lm.step`` gives.
        """
        K = indices.shape[0]
        self._check_codebooks(K)
        with torch.inference_mode():
            x = self._inputs(indices.view(K, 1))[0]
            for cache, lw in zip(self._layers, self._weights):
                self._append(cache, lw, x.view(1, self.dim))
                x = self._layer_row(lw, cache, x, cache.count - 1)
            self.offset += 1
            return self._probs(x, K)

    def run(self, indices: torch.Tensor) -> torch.Tensor:
        """Many frames whose inputs are all known (encoding), layer by layer.

        Each layer processes up to ``chunk`` frames before the next layer starts, so its
        weights stay in cache; every frame still goes through the same one-row operations as
        :meth:`step`, so the result is bitwise the same as ``T`` calls of :meth:`step`.

        Args:
            indices: long ``[K, T]``, ``1 + code`` of the previous frame (0 at the first frame).
        Returns:
            float32 ``[T, K, card]`` probabilities.
        """
        K, T = indices.shape
        self._check_codebooks(K)
        out = []
        with torch.inference_mode():
            for begin in range(0, T, self.chunk):
                xs = self._inputs(indices[:, begin:begin + self.chunk])        # [T, 1, 1, C]
                for cache, lw in zip(self._layers, self._weights):
                    self._append(cache, lw, xs.view(len(xs), self.dim))
                    first = cache.count - len(xs)
                    xs = torch.stack([self._layer_row(lw, cache, x, first + i)
                                      for i, x in enumerate(xs)])
                out.append(self._heads_probs(xs, K))
                self.offset += len(xs)
        return torch.cat(out) if out else torch.empty(0, K, self.lm.card, device=self.device)

    def _heads_probs(self, xs: torch.Tensor, K: int) -> torch.Tensor:
        """Probabilities ``[T, K, card]`` for last-layer outputs ``xs`` (``[T, 1, 1, C]``).

        The same one-row products as :meth:`_probs`, codebook by codebook (one head's weights,
        800 KB, stay in cache over all frames; all heads, 26 MB at 32 codebooks, do not),
        then the official softmax of each frame.
        """
        lm = self.lm
        T, card = xs.shape[0], lm.card
        rows = xs.view(T, self.dim)
        logits = torch.empty(T, K, card, device=self.device)
        for k, (w, b) in enumerate(self._head_weights(K)):
            wt = w.t()
            for t in range(T):
                torch.addmm(b, rows[t:t + 1], wt, out=logits[t, k:k + 1])
        return torch.stack([self._softmax(logits[t]) for t in range(T)])

    def _head_weights(self, K: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Each codebook's head weight ``[card, C]`` and bias, as views of the stacked heads."""
        _, _, w, b = self._tables(K)
        card = self.lm.card
        return [(w[k * card:(k + 1) * card], b[k * card:(k + 1) * card]) for k in range(K)]

    def _position(self, position: int) -> torch.Tensor:
        """Position embedding ``[1, 1, C]`` of one step, computed with the official shapes."""
        cache = getattr(self.lm, "_position_rows", None)
        if cache is None or cache[0] != (self.dim, self.lm.transformer.max_period, self.device):
            cache = ((self.dim, self.lm.transformer.max_period, self.device), [])
            self.lm._position_rows = cache  # type: ignore[attr-defined]
        rows = cache[1]
        if position >= _POSITION_CACHE_ROWS:
            pos = torch.tensor([[[position]]], device=self.device)
            return sin_embedding(pos, self.dim, self.lm.transformer.max_period)
        while len(rows) <= position:
            pos = torch.tensor([[[len(rows)]]], device=self.device)
            rows.append(sin_embedding(pos, self.dim, self.lm.transformer.max_period))
        return rows[position]
