"""Integer-only inference of the entropy model: CDFs that every machine computes bit for bit.

:class:`FixedLM` runs the transformer of :class:`~opencodec.entropy.EntropyLM` with int64
tensors only. Integer additions and products are exact, so no result depends on the
summation order, the thread count, the BLAS, the CPU or the math library; every
non-linear function is an integer algorithm or an integer table that is itself computed
with exact arithmetic (Python integers and the correctly rounded :mod:`decimal`
functions). No float operation touches a value after the weights are converted, and the
conversion only multiplies float32 weights by powers of two and rounds (both exact in
IEEE arithmetic). The output is an integer CDF per codebook whose total is exactly
``2**CDF_BITS`` with every bin at least ``MIN_FREQ``, ready for the arithmetic coder of
:mod:`opencodec.entropy.arithmetic` (``total_range_bits = CDF_BITS = 24``; ``MIN_FREQ = 2``
keeps every symbol interval non-empty for that coder).
The fixed-point scheme (scales, operations, overflow bounds) is described and versioned in
:mod:`opencodec.entropy.fixed_scheme`, its integer kernels are in :mod:`opencodec.entropy.fixed_ops`
and the conversion of float weights in :mod:`opencodec.entropy.fixed_params`; this module holds
the model that runs them, and re-exports the names callers import from it.

Because every operation is exact integer arithmetic, the CDFs do not depend on how the
rows are batched: running a whole segment at once (:meth:`FixedLM.forward` with ``T > 1``)
gives exactly the CDFs of :meth:`FixedLM.step` frame by frame, which is why the keys and
values of earlier steps can be cached (the float model has to recompute them).

The weights hash (:attr:`FixedLM.weights_hash`, 16 hex digits of a SHA-256 over the scheme,
the sizes and every integer tensor with its shift) identifies exactly what drives the CDFs;
the deterministic ``.ecdc`` format stores it so that a file is never decoded with another
entropy model.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import numbers
import typing as tp
import weakref

import torch

from ..errors import ModelLoadError
# The integer model's results do not depend on the thread count, and its many small operations
# only gain synchronisation from a second thread (on the 2-core development machine, decoding
# took 1.7x as long with 2 threads as with 1): it runs under one_thread.
from ..threads import one_thread
from .fixed_ops import (_clamp, _exact_f64_matmul, _isqrt_rows, _round_div, _round_shift, cdf_to_probs,
                        int_exp, int_gelu, logits_to_cdf)
from .fixed_params import (_act_tensor, _LayerParams, _linear_params, _LinearParams, _norm_params,
                           _NormParams)
from .fixed_scheme import (_MAX_DIM, ACT_FRAC, ACT_LIMIT, ATTN_FRAC, CDF_BITS, EXP_FRAC, LN_EXTRA, MAX_CARD,
                           MAX_N_Q, MAX_PAST_CONTEXT, MAX_POSITION_BITS, MIN_FREQ, ROT_FRAC, SCHEME,
                           WEIGHT_BITS, _exp2_table, _phi_table, _rotation_tables)

if tp.TYPE_CHECKING:
    from .lm import EntropyLM

__all__ = [
    "SCHEME", "ACT_FRAC", "ACT_LIMIT", "CDF_BITS", "MIN_FREQ", "FixedLM", "FixedLMState",
    "fixed_lm_for", "logits_to_cdf", "cdf_to_probs", "int_exp", "int_gelu", "one_thread",
]
# Also importable from here, as before the scheme and kernels had modules of their own.
__all__ += ["EXP_FRAC", "_exp2_table", "_phi_table"]


# ------------------------------------------------------------------------------------------
# Layers on converted parameters
# ------------------------------------------------------------------------------------------
def _layer_norm(x: torch.Tensor, p: "_NormParams") -> torch.Tensor:
    """LayerNorm over the last axis (``C``) of int64 activations (see
    :mod:`opencodec.entropy.fixed_scheme`)."""
    C = x.shape[-1]
    mean = torch.div(2 * x.sum(-1, keepdim=True) + C, 2 * C, rounding_mode="floor")
    d = x - mean
    var = torch.div((d * d).sum(-1, keepdim=True), C, rounding_mode="floor")
    std = _isqrt_rows((var + p.eps) << (2 * LN_EXTRA))
    y = _round_div(d << (ACT_FRAC + LN_EXTRA), std)
    return _clamp(_round_shift(y * p.weight, p.shift) + p.bias)


_F64_TERMS = 1 << (53 - ACT_LIMIT.bit_length() + 1 - WEIGHT_BITS)
"""Most terms of a dot product of activations by weights that float64 sums exactly (1024)."""

_SPLIT_BITS = 12
"""Longer products split the activations as ``hi * 2**12 + lo`` (each part exact in float64)."""


def _matmul_t(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """``x @ w.T`` for int64 ``x [N, in]`` (``|x| <= ACT_LIMIT``) and integer ``w [out, in]``
    (``|w| <= 2**WEIGHT_BITS``; float64, as converted models hold it, or int64), exact.

    Computed in float64: with at most :data:`_F64_TERMS` terms every partial sum stays below
    ``2**53``; longer rows are split into ``hi * 2**12 + lo`` (``0 <= lo < 2**12``,
    ``|hi| <= 2**12``), two exact products.
    """
    wt = w.to(torch.float64).t()
    if x.shape[-1] <= _F64_TERMS:
        return _exact_f64_matmul(x.double(), wt)
    hi = x >> _SPLIT_BITS
    lo = x - (hi << _SPLIT_BITS)
    return (_exact_f64_matmul(hi.double(), wt) << _SPLIT_BITS) + _exact_f64_matmul(lo.double(), wt)


def _linear(x: torch.Tensor, p: "_LinearParams") -> torch.Tensor:
    """``x [..., in] -> [..., out]``: exact product, rounded rescale, bias, clamp."""
    shape = x.shape
    acc = _matmul_t(x.reshape(-1, shape[-1]), p.weight)
    acc += 1 << (p.shift - 1)   # shift >= 1 (checked at conversion): round half up
    acc >>= p.shift
    acc += p.bias
    return _clamp(acc).view(*shape[:-1], -1)


# ------------------------------------------------------------------------------------------
# The model
# ------------------------------------------------------------------------------------------
@dataclasses.dataclass
class FixedLMState:
    """Streaming state of :class:`FixedLM`.

    Attributes:
        keys, values: per layer, ``[B, heads, L, head_dim]``: the keys and values of the
            last ``L <= past_context`` steps (initially the one zero "past" input, as in
            :class:`~opencodec.entropy.EntropyLM`); integers held as float64 (exact: at most
            ``ACT_LIMIT``), the type the attention's products take.
        offset: steps already processed (the next step's position).
    """

    keys: list[torch.Tensor]
    values: list[torch.Tensor]
    offset: int = 0


class FixedLM:
    """Integer-only twin of an :class:`~opencodec.entropy.EntropyLM` (build it with
    :meth:`from_float` or :func:`fixed_lm_for`).

    Attributes:
        n_q, card, dim, num_heads, num_layers, hidden, past_context, max_period: the sizes.
        weights_hash: 16 hex digits identifying the integer weights and the scheme.
        name: optional name of the entropy model (stored in file headers; not hashed).
    """

    def __init__(self, *, n_q: int, card: int, dim: int, num_heads: int, past_context: int,
                 max_period: float, embeddings: torch.Tensor, norm_in: _NormParams,
                 layers: list[_LayerParams], heads: _LinearParams, name: str | None = None) -> None:
        self.n_q, self.card, self.dim, self.num_heads = n_q, card, dim, num_heads
        self.head_dim = dim // num_heads
        self.num_layers = len(layers)
        self.hidden = int(layers[0].linear1.weight.shape[0]) if layers else 0
        self.past_context = past_context
        self.max_period = max_period
        self.name = name
        self._emb = embeddings            # [n_q * (card + 1), dim]
        self._emb_offsets = torch.arange(n_q) * (card + 1)
        self._norm_in = norm_in
        self._layers = layers
        self._heads = heads               # weight [n_q * card, dim]
        self._q_scale = math.isqrt((1 << 60) // self.head_dim)   # 2**30 / sqrt(head_dim)
        self._rot_cos, self._rot_sin = _rotation_tables(dim, max_period)
        self._pos_cache: dict[int, torch.Tensor] = {}
        self.weights_hash = self._hash()

    # -- construction ------------------------------------------------------------------------
    @classmethod
    def from_float(cls, lm: "EntropyLM", name: str | None = None) -> "FixedLM":
        """Convert a float :class:`~opencodec.entropy.EntropyLM` (exact, deterministic).

        Raises:
            ModelLoadError: sizes or weight values outside the fixed-point ranges.
        """
        meta = next((name for name, p in lm.named_parameters() if p.is_meta), None)
        if meta is not None:
            raise ModelLoadError(f"the entropy model is on the meta device ({meta}): it has shapes but "
                                 f"no weights; load it on a device with data (e.g. 'cpu')")
        tr = lm.transformer
        layers = list(tr.layers)
        num_heads = layers[0].self_attn.num_heads if layers else 1
        hidden = layers[0].linear1.out_features if layers else 0
        sizes = dict(n_q=lm.n_q, card=lm.card, dim=lm.dim, hidden=hidden, heads=num_heads,
                     past_context=tr.past_context)
        limits = dict(n_q=MAX_N_Q, card=MAX_CARD, dim=_MAX_DIM, hidden=_MAX_DIM, heads=lm.dim,
                      past_context=MAX_PAST_CONTEXT)
        bad = [f"{k}={v} (at most {limits[k]})" for k, v in sizes.items() if not 1 <= v <= limits[k]]
        if lm.dim % 2 or lm.dim < 4:
            bad.append(f"dim={lm.dim} (must be even and >= 4)")
        if bad:
            raise ModelLoadError("entropy model sizes outside the fixed-point limits: " + ", ".join(bad))
        float_period = float(tr.max_period)
        if not math.isfinite(float_period) or float_period <= 0:
            raise ModelLoadError(f"entropy model max_period must be finite and > 0, got {float_period}")
        with torch.no_grad():
            emb = torch.cat([e.weight for e in lm.emb], dim=0)
            embeddings = _act_tensor(emb, "emb")
            head_w = torch.cat([lin.weight for lin in lm.linears], dim=0)
            head_b = torch.cat([lin.bias for lin in lm.linears], dim=0)
            heads = _linear_params(head_w, head_b, "linears")
            norm_in = _norm_params(tr.norm_in, "transformer.norm_in")
            converted = []
            for i, layer in enumerate(layers):
                pre = f"transformer.layers.{i}"
                attn = layer.self_attn
                converted.append(_LayerParams(
                    in_proj=_linear_params(attn.in_proj_weight, attn.in_proj_bias, pre + ".self_attn.in_proj"),
                    out_proj=_linear_params(attn.out_proj.weight, attn.out_proj.bias,
                                            pre + ".self_attn.out_proj"),
                    linear1=_linear_params(layer.linear1.weight, layer.linear1.bias, pre + ".linear1"),
                    linear2=_linear_params(layer.linear2.weight, layer.linear2.bias, pre + ".linear2"),
                    norm1=_norm_params(layer.norm1, pre + ".norm1"),
                    norm2=_norm_params(layer.norm2, pre + ".norm2")))
        return cls(n_q=lm.n_q, card=lm.card, dim=lm.dim, num_heads=num_heads,
                   past_context=tr.past_context, max_period=float_period, embeddings=embeddings,
                   norm_in=norm_in, layers=converted, heads=heads, name=name)

    def _named_tensors(self) -> tp.Iterator[tuple[str, int, torch.Tensor]]:
        yield "emb", ACT_FRAC, self._emb
        yield f"norm_in.weight.eps={self._norm_in.eps}", self._norm_in.shift, self._norm_in.weight
        yield "norm_in.bias", ACT_FRAC, self._norm_in.bias
        for i, layer in enumerate(self._layers):
            for label in ("in_proj", "out_proj", "linear1", "linear2"):
                lin: _LinearParams = getattr(layer, label)
                yield f"{i}.{label}.weight", lin.shift, lin.weight
                yield f"{i}.{label}.bias", ACT_FRAC, lin.bias
            for label in ("norm1", "norm2"):
                norm: _NormParams = getattr(layer, label)
                yield f"{i}.{label}.weight.eps={norm.eps}", norm.shift, norm.weight
                yield f"{i}.{label}.bias", ACT_FRAC, norm.bias
        yield "heads.weight", self._heads.shift, self._heads.weight
        yield "heads.bias", ACT_FRAC, self._heads.bias

    def _hash(self) -> str:
        """SHA-256 of the scheme, the sizes and the integer tensors (int32 little-endian)."""
        digest = hashlib.sha256()
        meta = dict(scheme=SCHEME, n_q=self.n_q, card=self.card, dim=self.dim, heads=self.num_heads,
                    layers=self.num_layers, hidden=self.hidden, past_context=self.past_context,
                    max_period=repr(self.max_period))
        digest.update(b"opencodec-fixed-lm\0" + json.dumps(meta, sort_keys=True).encode())
        for name, shift, tensor in self._named_tensors():
            digest.update(f"\0{name}:{list(tensor.shape)}:{shift}\0".encode())
            digest.update(tensor.to(torch.int32).numpy().astype("<i4").tobytes())
        return digest.hexdigest()[:16]

    # -- inference ---------------------------------------------------------------------------
    def initial_state(self, batch: int = 1) -> FixedLMState:
        """State before the first step: per layer the keys/values of one zero input."""
        keys, values = [], []
        for layer in self._layers:
            kv = _clamp(layer.in_proj.bias[self.dim:].clone()).view(2, self.num_heads, 1, self.head_dim)
            keys.append(kv[0].expand(batch, -1, -1, -1).double())
            values.append(kv[1].expand(batch, -1, -1, -1).double())
        return FixedLMState(keys, values, 0)

    def positions(self, positions: torch.Tensor) -> torch.Tensor:
        """Integer sinusoidal embedding: int64 positions ``[T]`` -> int64 ``[T, dim]`` at
        scale ``2**ACT_FRAC`` (cosines then sines, as :func:`~opencodec.entropy.sin_embedding`)."""
        if positions.numel() and (int(positions.min()) < 0 or int(positions.max()) >> MAX_POSITION_BITS):
            raise ValueError(f"positions must be in [0, 2**{MAX_POSITION_BITS})")
        T, half = positions.shape[0], self.dim // 2
        c = torch.full((T, half), 1 << ROT_FRAC, dtype=torch.long)
        s = torch.zeros(T, half, dtype=torch.long)
        top = int(positions.max()).bit_length() if T else 0
        for b in range(top):
            mask = ((positions >> b) & 1).bool().view(-1, 1)
            if not bool(mask.any()):
                continue
            cb, sb = self._rot_cos[b], self._rot_sin[b]
            nc = _round_shift(c * cb - s * sb, ROT_FRAC)
            ns = _round_shift(c * sb + s * cb, ROT_FRAC)
            c = torch.where(mask, nc, c)
            s = torch.where(mask, ns, s)
        return _round_shift(torch.cat([c, s], dim=1), ROT_FRAC - ACT_FRAC)

    def _positions_from(self, offset: int, count: int) -> torch.Tensor:
        """:meth:`positions` of ``offset .. offset + count - 1``, from a cache of blocks of
        256 positions (a pure function of the position, so caching changes nothing)."""
        if offset < 0 or (offset + count) >> MAX_POSITION_BITS:
            raise ValueError(f"positions must be in [0, 2**{MAX_POSITION_BITS})")
        if count == 0:
            return torch.zeros(0, self.dim, dtype=torch.long)
        parts = []
        pos = offset
        while pos < offset + count:
            block = pos >> 8
            table = self._pos_cache.get(block)
            if table is None:
                table = self.positions(torch.arange(block << 8, (block + 1) << 8))
                if len(self._pos_cache) >= 8:
                    self._pos_cache.pop(next(iter(self._pos_cache)))
                self._pos_cache[block] = table
            stop = min(offset + count, (block + 1) << 8)
            parts.append(table[pos - (block << 8):stop - (block << 8)])
            pos = stop
        return parts[0] if len(parts) == 1 else torch.cat(parts)

    def _attention(self, x: torch.Tensor, layer: _LayerParams, keys: torch.Tensor,
                   values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Self-attention of ``x [B, T, C]`` over the cached ``[B, H, L, hd]`` and itself.
        Returns the output ``[B, T, C]`` and the new (trimmed) keys and values."""
        B, T, C = x.shape
        H, hd = self.num_heads, self.head_dim
        qkv = _linear(x, layer.in_proj).view(B, T, 3, H, hd).permute(2, 0, 3, 1, 4)  # [3, B, H, T, hd]
        q = _round_shift(qkv[0] * self._q_scale, 30)
        all_k = torch.cat([keys, qkv[1].double()], dim=2)   # exact integers, as float64
        all_v = torch.cat([values, qkv[2].double()], dim=2)
        L = keys.shape[2]
        # Exact in float64 (see _exact_f64_matmul): |q| <= 2**24 / sqrt(hd), |k| <= 2**24, so
        # every partial sum of hd terms is below sqrt(hd) * 2**48 <= 2**53 (hd <= 1024).
        scores = _round_shift(_exact_f64_matmul(q.double(), all_k.transpose(-1, -2)),
                              ACT_FRAC)                                        # [B, H, T, L + T]
        blocked = None
        if T > 1:  # one new step (L <= past_context) sees every cached key: no mask needed
            delta = (torch.arange(L, L + T).view(-1, 1) - torch.arange(L + T).view(1, -1))
            blocked = (delta < 0) | (delta > self.past_context)
            scores = scores.masked_fill(blocked, -(1 << 62))
        z = scores - scores.amax(-1, keepdim=True)
        e = int_exp(z)
        if blocked is not None:
            e = e.masked_fill(blocked, 0)
        p = torch.div(e << ATTN_FRAC, e.sum(-1, keepdim=True), rounding_mode="floor")
        # Exact in float64: p >= 0 with sum(p) <= 2**20 and |v| <= 2**24 bound every partial
        # sum by 2**44.
        out = _round_shift(_exact_f64_matmul(p.double(), all_v), ATTN_FRAC)  # [B, H, T, hd]
        out = out.transpose(1, 2).reshape(B, T, C)
        keep = self.past_context
        return _linear(out, layer.out_proj), all_k[:, :, -keep:], all_v[:, :, -keep:]

    def forward(self, indices: torch.Tensor, state: FixedLMState | None = None
                ) -> tuple[torch.Tensor, FixedLMState]:
        """Run ``T`` steps at once.

        Args:
            indices: long ``[B, K, T]``: ``1 + code`` of the previous frame (0 at t = 0),
                ``K <= n_q``.
            state: from the previous call, or None to start.
        Returns:
            ``(logits, state)``: int64 logits ``[B, K, T, card]`` at scale ``2**ACT_FRAC``
            (:func:`logits_to_cdf` turns them into CDFs) and the new state.
        """
        B, K, T = indices.shape
        if K > self.n_q:
            raise ValueError(f"{K} codebooks given, the entropy model has {self.n_q}")
        indices = indices.to("cpu", torch.long)
        if T and (int(indices.min()) < 0 or int(indices.max()) > self.card):
            raise ValueError(f"indices must be in [0, {self.card}]")
        if state is None:
            state = self.initial_state(B)
        rows = self._emb.index_select(0, (indices + self._emb_offsets[:K].view(1, K, 1)).reshape(-1))
        x = _clamp(rows.view(B, K, T, self.dim).sum(1))                       # [B, T, C]
        pos = self._positions_from(state.offset, T)
        x = _clamp(_layer_norm(x, self._norm_in) + pos)
        new_keys, new_values = [], []
        for layer, keys, values in zip(self._layers, state.keys, state.values):
            attn, k, v = self._attention(x, layer, keys, values)
            new_keys.append(k)
            new_values.append(v)
            x = _layer_norm(_clamp(x + attn), layer.norm1)
            ff = _linear(int_gelu(_linear(x, layer.linear1)), layer.linear2)
            x = _layer_norm(_clamp(x + ff), layer.norm2)
        heads = self._heads
        sub = _LinearParams(heads.weight[:K * self.card], heads.shift, heads.bias[:K * self.card])
        logits = _linear(x, sub).view(B, T, K, self.card).transpose(1, 2)
        return logits, FixedLMState(new_keys, new_values, state.offset + T)

    def __call__(self, indices: torch.Tensor, state: FixedLMState | None = None
                 ) -> tuple[torch.Tensor, FixedLMState]:
        return self.forward(indices, state)

    def step(self, indices: torch.Tensor, state: FixedLMState | None = None
             ) -> tuple[torch.Tensor, FixedLMState]:
        """One step, returning CDFs.

        Args:
            indices: long ``[K]`` or ``[B, K]``: ``1 + code`` of the previous frame (0 at t=0).
            state: previous state or None.
        Returns:
            ``(cdf, state)``: int64 ``[K, card]`` (or ``[B, K, card]``) CDFs ending at
            ``2**CDF_BITS``, and the new state.
        """
        squeeze = indices.dim() == 1
        idx = indices.view(1, -1, 1) if squeeze else indices.unsqueeze(-1)
        logits, state = self.forward(idx, state)
        cdf = logits_to_cdf(logits[:, :, 0])
        return (cdf[0] if squeeze else cdf), state

    def iter_cdfs(self, codes: torch.Tensor, block: int = 32) -> tp.Iterator[tuple[int, torch.Tensor]]:
        """CDFs of every frame of a known segment, ``block`` frames per forward pass.

        Args:
            codes: long ``[K, F]``.
            block: frames per pass, an int >= 1 (any value gives the same CDFs; else
                ``ValueError``: a block < 1 would give no CDFs, and code nothing).
        Yields:
            ``(start, cdfs)`` with int64 ``cdfs [T, K, card]``: the CDFs that frames
            ``start .. start + T - 1`` are coded with (identical to :meth:`step`).
        """
        if isinstance(block, bool) or not isinstance(block, numbers.Integral) or block < 1:
            raise ValueError(f"block must be an int >= 1 (frames per pass), got {block!r}")
        K, F = codes.shape
        inputs = torch.cat([torch.zeros(K, 1, dtype=torch.long), codes.to("cpu", torch.long) + 1], dim=1)
        state = None
        for start in range(0, F, block):
            stop = min(F, start + block)
            logits, state = self.forward(inputs[None, :, start:stop], state)
            yield start, logits_to_cdf(logits[0]).transpose(0, 1)

    def cdfs(self, codes: torch.Tensor, block: int = 32) -> torch.Tensor:
        """All CDFs of a known segment at once: int64 ``[F, K, card]`` for codes ``[K, F]``
        (see :meth:`iter_cdfs`; memory grows with ``F``)."""
        parts = [cdf for _, cdf in self.iter_cdfs(codes, block)]
        if not parts:
            return torch.zeros(0, codes.shape[0], self.card, dtype=torch.long)
        return torch.cat(parts, dim=0)


_CACHE: "weakref.WeakKeyDictionary[EntropyLM, tuple[tuple[tp.Any, ...], FixedLM]]" = weakref.WeakKeyDictionary()


def fixed_lm_for(lm: "EntropyLM | FixedLM", name: str | None = None) -> FixedLM:
    """The :class:`FixedLM` of ``lm`` (converted once per float model and kept while its
    weights are unchanged: :func:`opencodec.weights_hash.weights_stamp`, which also sees a
    change made through ``.data``); a ``FixedLM`` is returned as is. ``name`` is set when given."""
    if isinstance(lm, FixedLM):
        if name is not None:
            lm.name = name
        return lm
    from .lm import EntropyLM

    if not isinstance(lm, EntropyLM):
        raise TypeError(f"expected an EntropyLM or FixedLM, got {type(lm).__name__}")
    from ..weights_hash import weights_stamp

    key = weights_stamp(lm, dict(lm.named_parameters()))  # also sees changes made through .data
    hit = _CACHE.get(lm)
    if hit is None or key is None or hit[0] != key:
        hit = (key, FixedLM.from_float(lm))
        _CACHE[lm] = hit
    if name is not None:
        hit[1].name = name
    return hit[1]
