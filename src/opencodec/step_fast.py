"""The fast per-frame streaming path: the layers of :mod:`opencodec.step` rebuilt time-major.

Used by ``EncoderStep(model, exact=False)`` / ``DecoderStep(model, exact=False)`` and through
them by ``StreamingEncoder(model, exact=False)`` / ``StreamingDecoder(model, exact=False)``.
It computes the same function as the exact step (same state, same padding, same warm-up) with
fewer, larger kernels per frame; results differ from the exact path only by float rounding
(~1e-7 relative per layer), measured end to end in tests/test_streaming_fast.py.

What makes it cheaper than the exact step (whose cost per frame is dominated by the number
of small kernels, not by arithmetic):

* activations are time-major ``[B, T, C]`` (channels-last), so every convolution is one
  matrix product: a view of the padded input as ``[B * n, k * C_in]`` windows (im2col) times
  the cached weight ``[k * C_in, C_out]`` (weight norm folded once, when built);
* an ELU before a convolution is applied while the input is written next to the state, as
  ``max(x, 0) + alpha * (exp(min(x, 0)) - 1)`` (PyTorch's CPU ``expm1`` is ~2x slower than
  ``exp``; the two differ by < 1e-7 absolute);
* products with a weight larger than a core's L2 cache (the 512-unit LSTM, the 512-channel
  convolutions) go through a copy of the weight reordered once for oneDNN when they have
  several rows (:mod:`opencodec.prepacked`): 1.2-1.5x faster than ``addmm`` for 4-16 rows
  (``benchmarks/prepacked_products.py``), whose few-row products read such a weight several
  times slower than a one-row product;
* a residual block whose shortcut and last layer are kernel-1 convolutions (EnCodec's) is one
  ``addmm`` plus one ``addmm_`` into the same output (biases summed once);
* the LSTM: one frame per call for one or two streams is one ``torch.lstm_cell`` per layer
  (the whole cell in one C++ call); otherwise cached-weight products: the input projection of
  all T steps in one ``addmm`` (gate order rearranged so the three sigmoid gates are one
  slice), then per step one ``addmm`` of ``h`` and five element-wise kernels (a single step:
  one product of ``[x, h]`` with both weights stacked, instead of two). The cached
  weights are stored transposed and contiguous (``[H_in, 4H]``), which a product of a few
  rows reads about 1.5x faster than ``lstm_cell``'s ``[4H, H_in]`` (measured for 4-24
  streams, 512 units: the step is bound by reading the weights);
* the transposed convolution (kernel ``k <= 2 * stride``) is one product and two adds.

Every state tensor is batch-first, as in :mod:`opencodec.step` (streams stack along dim 0),
but time-major: a conv's state is ``[B, keep, C_in]``, a transposed conv's ``[B, k - s, C_out]``.
Weights are copied when the step is built (on the model's device and dtype): rebuild after
changing the model's weights.
"""

from __future__ import annotations

import typing as tp

import torch
from torch import nn

from .modules.conv import (StreamableConv1d, StreamableConvTranspose1d, pad1d, streamable_conv,
                           streamable_convtr)
from .modules.lstm import StreamableLSTM
from .modules.seanet import SEANetDecoder, SEANetEncoder
from .modules.seanet_blocks import SEANetResnetBlock
from .prepacked import PrepackedWeight

__all__ = ["FastNet", "FastRVQ"]

States = list[torch.Tensor]
Spec = tuple[str, tuple[int, ...]]
_POINTWISE = (nn.ELU, nn.Identity, nn.ReLU, nn.LeakyReLU, nn.GELU, nn.SiLU, nn.Tanh, nn.Sigmoid)


def _pad_time(x: torch.Tensor, left: int, right: int, mode: str) -> torch.Tensor:
    """Pad time-major x [B, T, C] along T exactly as ``pad1d`` pads [B, C, T]."""
    return pad1d(x.transpose(1, 2), (left, right), mode).transpose(1, 2).contiguous()


def _elu(x: torch.Tensor, alpha: float, out: torch.Tensor | None = None) -> torch.Tensor:
    """ELU as ``max(x, 0) + alpha * (exp(min(x, 0)) - 1)``, into ``out`` when given.

    ``exp(x) - 1`` instead of ``expm1(x)``: PyTorch's CPU ``expm1`` kernel is about 2x slower
    than ``exp``; the result differs from ``F.elu`` by less than 1e-7 absolute (where
    ``exp(x)`` is near 1), a rounding-level difference like the fast path's others."""
    y = torch.clamp_max(x, 0.0) if out is None else torch.clamp_max(x, 0.0, out=out)
    y.exp_().sub_(1.0)
    if alpha != 1.0:
        y.mul_(alpha)
    return y.add_(x.clamp_min(0.0))


class _Op:
    specs: list[Spec] = []

    def run(self, x: torch.Tensor, states: tp.Iterator[torch.Tensor] | None, out: States,
            tail: bool) -> torch.Tensor:
        """x [B, T, C] -> y [B, T', C']; ``states`` None: the first call (left padding as offline)."""
        raise NotImplementedError

    def warmup(self, rate: float) -> tuple[int, float]:
        """(frames before the first final output, output steps per frame) for ``rate`` input steps per frame."""
        return 1, rate


class _ELU(_Op):
    def __init__(self, alpha: float):
        self.alpha, self.specs = alpha, []

    def run(self, x, states, out, tail):  # type: ignore[no-untyped-def]
        return _elu(x, self.alpha)


class _Pointwise(_Op):
    def __init__(self, module: nn.Module):
        self.module, self.specs = module, []

    def run(self, x, states, out, tail):  # type: ignore[no-untyped-def]
        return self.module(x)


class _Conv(_Op):
    """Causal conv, with the ELU before it (``alpha``) fused; state: the last ``keep`` input steps."""

    def __init__(self, layer: StreamableConv1d, name: str, alpha: float | None):
        conv = streamable_conv(layer)
        weight = conv.weight.detach()  # [C_out, C_in, k] (weight norm already applied)
        self.c_in, self.c_out, taps = int(weight.shape[1]), int(weight.shape[0]), int(weight.shape[2])
        # [k * C_in, C_out]: row j * C_in + c is W[:, c, j], matching the im2col windows.
        self.weight = weight.permute(2, 1, 0).reshape(taps * self.c_in, self.c_out).contiguous()
        self.product = PrepackedWeight(self.weight)
        self.bias = None if conv.bias is None else conv.bias.detach().clone()
        self.taps, self.dilation = taps, int(conv.dilation[0])
        self.k, self.s, self.P, self.mode = layer.kernel_size, layer.stride, layer.padding_total, layer.pad_mode
        self.alpha = alpha
        # Fewer output than input channels (EnCodec's residual blocks, C -> C / 2, and its last
        # decoder conv, 32 -> 1): multiply every input step by all taps' weights at once,
        # [C_in, k * C_out], then add the k shifted products, instead of copying k shifted
        # windows of the input (im2col): the copy cost more than the product (same products,
        # summed in another order: ~1e-7 relative). Measured with 6 and 24 batched streams.
        self.taps_side = None
        if self.s == 1 and taps > 1 and 2 * self.c_out <= self.c_in:
            self.taps_side = weight.permute(1, 2, 0).reshape(self.c_in, taps * self.c_out).contiguous()
        self.keep = max(self.P, self.s - 1)
        self.pointwise = self.k == 1 and self.s == 1
        # keep == P > 0: after ``start`` every call is "state ++ input", then the conv (whole
        # frames give whole strides, so there is always at least one window).
        self.steady = self.keep == self.P > 0
        self.specs = [(name, (self.keep, self.c_in))] if self.keep else []

    def warmup(self, rate: float) -> tuple[int, float]:
        need = -(-(self.P + 1) // rate) if self.mode == "reflect" and self.P else 1
        return int(need), rate / self.s

    def matmul(self, buf: torch.Tensor) -> torch.Tensor:
        """The convolution of the padded time-major buf [B, L, C_in] -> [B, n, C_out]."""
        batch, length = buf.shape[0], buf.shape[1]
        n = (length - self.k) // self.s + 1
        if self.taps_side is not None and n > 1:
            z = torch.mm(buf.reshape(-1, self.c_in), self.taps_side).view(batch, length, self.taps, self.c_out)
            y = z[:, :n, 0] + self.bias if self.bias is not None else z[:, :n, 0].clone()
            for j in range(1, self.taps):
                y += z[:, j * self.dilation:j * self.dilation + n, j]
            return y
        if self.pointwise:
            rows = buf.reshape(-1, self.c_in)
        elif n == 1 and length == self.taps and buf.is_contiguous():  # one window: a view
            rows = buf.reshape(batch, self.taps * self.c_in)  # sizes given: a batch of 0 too
        else:
            sb, st, sc = buf.stride()
            windows = buf.as_strided((batch, n, self.taps, self.c_in),
                                     (sb, self.s * st, self.dilation * st, sc), buf.storage_offset())
            rows = windows.reshape(batch * n, self.taps * self.c_in)
        return self.product.addmm(self.bias, rows).view(batch, n, self.c_out)

    def joined(self, state: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """[B, keep + T, C_in]: the kept input steps, then x (through the ELU, written in place)."""
        if self.alpha is None:
            return torch.cat([state, x], dim=1)
        buf = x.new_empty(x.shape[0], state.shape[1] + x.shape[1], x.shape[2])
        buf[:, :state.shape[1]] = state
        _elu(x, self.alpha, out=buf[:, state.shape[1]:])
        return buf

    def prepare(self, x: torch.Tensor, states: tp.Iterator[torch.Tensor] | None, out: States,
                tail: bool) -> torch.Tensor | None:
        """The padded input of this call (ELU applied), or None when it gives no output."""
        if states is None:
            if self.alpha is not None:
                x = _elu(x, self.alpha)
            buf = _pad_time(x, self.P, 0, self.mode) if self.P else x
        elif self.keep:
            buf = self.joined(next(states), x)
        else:
            buf = _elu(x, self.alpha) if self.alpha is not None else x
        if self.keep:
            out.append(buf[:, buf.shape[1] - self.keep:])
        if tail:
            extra = (-x.shape[1]) % self.s
            if extra:
                buf = _pad_time(buf, 0, extra, self.mode)
        if self.keep > self.P and states is not None:
            buf = buf[:, self.keep - self.P:]
        if buf.shape[1] < self.k:
            return None
        return buf

    def run(self, x, states, out, tail):  # type: ignore[no-untyped-def]
        if self.steady and states is not None and not tail:  # the per-frame case, in few steps
            buf = self.joined(next(states), x)
            out.append(buf[:, buf.shape[1] - self.keep:])
            return self.matmul(buf)
        if self.pointwise and states is not None and not tail:
            return self.matmul(_elu(x, self.alpha) if self.alpha is not None else x)
        buf = self.prepare(x, states, out, tail)
        if buf is None:
            return x.new_zeros(x.shape[0], 0, self.c_out)
        return self.matmul(buf)


class _ConvTr(_Op):
    """Causal transposed conv (k = s or k = 2s): state = the partial sums [B, k - s, C_out] (no bias)."""

    def __init__(self, layer: StreamableConvTranspose1d, name: str):
        conv = streamable_convtr(layer)
        self.k, self.s = layer.kernel_size, layer.stride
        if self.k not in (self.s, 2 * self.s) or getattr(conv, "groups", 1) != 1:
            raise ValueError("the fast path needs transposed convolutions with kernel = stride or 2 x stride")
        weight = conv.weight.detach()  # [C_in, C_out, k]
        self.c_out = int(weight.shape[1])
        # [C_in, k * C_out]: column j * C_out + o is W[:, o, j].
        self.weight = weight.permute(0, 2, 1).reshape(weight.shape[0], -1).contiguous()
        self.product = PrepackedWeight(self.weight)
        self.bias = None if conv.bias is None else conv.bias.detach().clone()
        self.m = self.k - self.s
        self.specs = [(name, (self.m, self.c_out))] if self.m else []

    def warmup(self, rate: float) -> tuple[int, float]:
        return 1, rate * self.s

    def run(self, x, states, out, tail):  # type: ignore[no-untyped-def]
        batch, n = x.shape[0], x.shape[1]
        g = self.product.addmm(None, x.reshape(batch * n, x.shape[2]))
        g = g.view(batch, n, self.k // self.s, self.s, self.c_out)
        y = g[:, :, 0] + self.bias if self.bias is not None else g[:, :, 0].clone()  # [B, n, s, C_out]
        if self.m:
            if n > 1:
                y[:, 1:] += g[:, :-1, 1]
            if states is not None:
                y[:, 0] += next(states)
            out.append(g[:, -1, 1])
        return y.view(batch, n * self.s, self.c_out)


class _LSTM(_Op):
    """LSTM (+ skip) as cached-weight products; state ``h``, ``c`` as [B, layers, H]."""

    def __init__(self, layer: StreamableLSTM, name: str):
        lstm = layer.lstm
        if lstm.bidirectional or lstm.batch_first or getattr(lstm, "proj_size", 0):
            raise ValueError("streaming needs a unidirectional, time-first LSTM without projection")
        self.skip, self.layers, self.hidden = layer.skip, lstm.num_layers, lstm.hidden_size
        hid = self.hidden
        order = torch.cat([torch.arange(0, 2 * hid), torch.arange(3 * hid, 4 * hid), torch.arange(2 * hid, 3 * hid)])
        self.w_x: list[PrepackedWeight] = []
        self.w_h: list[PrepackedWeight] = []
        self.w_xh: list[PrepackedWeight] = []  # [H_in + H, 4H]: both, for one step of many streams
        self.b: list[torch.Tensor] = []
        for i in range(self.layers):  # gates reordered (i, f, g, o) -> (i, f, o, g)
            w_ih, w_hh = getattr(lstm, f"weight_ih_l{i}").detach(), getattr(lstm, f"weight_hh_l{i}").detach()
            bias = torch.zeros(4 * hid, dtype=w_ih.dtype, device=w_ih.device)
            if lstm.bias:
                bias = getattr(lstm, f"bias_ih_l{i}").detach() + getattr(lstm, f"bias_hh_l{i}").detach()
            # one plain copy, [H_in + H, 4H]; W_x and W_h are its two row blocks (contiguous views)
            both = torch.cat([w_ih, w_hh], 1)[order].t().contiguous()
            self.w_x.append(PrepackedWeight(both[:w_ih.shape[1]]))
            self.w_h.append(PrepackedWeight(both[w_ih.shape[1]:]))
            self.w_xh.append(PrepackedWeight(both))
            self.b.append(bias[order].contiguous())
        # (w_ih, w_hh, b_ih, b_hh) in PyTorch's layout, for ``torch.lstm_cell``
        self.cell = [tuple(getattr(lstm, f"{kind}_l{i}").detach() if lstm.bias or kind.startswith("weight")
                           else None for kind in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"))
                     for i in range(self.layers)]
        self.specs = [(f"{name}.h", (self.layers, hid)), (f"{name}.c", (self.layers, hid))]

    def run(self, x, states, out, tail):  # type: ignore[no-untyped-def]
        batch, steps, hid = x.shape[0], x.shape[1], self.hidden
        if states is None:
            h0 = c0 = x.new_zeros(batch, self.layers, hid)
        else:
            h0, c0 = next(states), next(states)
        if steps == 1 and batch <= 2:  # one live stream: one fused cell per layer (lstm_cell, in C++)
            seq, hs, cs = x[:, 0], [], []
            for i in range(self.layers):
                h, c = torch.lstm_cell(seq, (h0[:, i], c0[:, i]), *self.cell[i])
                hs.append(h)
                cs.append(c)
                seq = h
            out += [torch.stack(hs, 1), torch.stack(cs, 1)]
            y = seq.unsqueeze(1)
            return y + x if self.skip else y
        h_new = x.new_empty(batch, self.layers, hid)
        c_new = x.new_empty(batch, self.layers, hid)
        seq = x
        for i in range(self.layers):
            if steps > 1:
                xw = self.w_x[i].addmm(self.b[i], seq.reshape(batch * steps, seq.shape[2])).view(batch, steps, 4 * hid)
            # One step (the live case): h and c go straight into the new state, no copies.
            ys = h_new[:, i:i + 1] if steps == 1 else x.new_empty(batch, steps, hid)
            h, c = h0[:, i], c0[:, i]
            for t in range(steps):
                if steps == 1:  # one product [x, h] @ [W_x; W_h]: one pass instead of two
                    gates = self.w_xh[i].addmm(self.b[i], torch.cat([seq[:, 0], h], 1))
                else:
                    gates = self.w_h[i].addmm_matrix(xw[:, t], h)
                sig = torch.sigmoid(gates[:, :3 * hid])
                c_out = c_new[:, i] if t == steps - 1 else None
                c = torch.addcmul(sig[:, hid:2 * hid] * c, sig[:, :hid], torch.tanh(gates[:, 3 * hid:]), out=c_out)
                h = torch.mul(sig[:, 2 * hid:], torch.tanh(c), out=ys[:, t])
            if steps > 1:
                h_new[:, i] = h
            seq = ys
        out += [h_new, c_new]
        return seq + x if self.skip else seq


class _Seq(_Op):
    def __init__(self, ops: list[_Op]):
        self.ops = ops
        self.specs = [spec for op in ops for spec in op.specs]

    def warmup(self, rate: float) -> tuple[int, float]:
        need = 1
        for op in self.ops:
            n, rate = op.warmup(rate)
            need = max(need, n)
        return need, rate

    def run(self, x, states, out, tail):  # type: ignore[no-untyped-def]
        for op in self.ops:
            x = op.run(x, states, out, tail)
        return x


class _Res(_Op):
    """``shortcut(x) + block(x)``; with kernel-1 convs ending both branches, one fused product."""

    def __init__(self, short: _Op, block: _Seq):
        self.short, self.block = short, block
        self.specs = short.specs + block.specs
        last = block.ops[-1] if block.ops else None
        self.fused = (isinstance(short, _Conv) and short.pointwise and short.alpha is None
                      and isinstance(last, _Conv) and last.pointwise)
        if self.fused:
            assert isinstance(short, _Conv) and isinstance(last, _Conv)
            self.last, self.body = last, _Seq(block.ops[:-1])
            biases = [b for b in (short.bias, last.bias) if b is not None]
            self.bias = None if not biases else biases[0] if len(biases) == 1 else biases[0] + biases[1]

    def warmup(self, rate: float) -> tuple[int, float]:
        a, rate_a = self.short.warmup(rate)
        b, _ = self.block.warmup(rate)
        return max(a, b), rate_a

    def run(self, x, states, out, tail):  # type: ignore[no-untyped-def]
        if not self.fused:
            return self.short.run(x, states, out, tail) + self.block.run(x, states, out, tail)
        assert isinstance(self.short, _Conv)
        rows = x.reshape(-1, x.shape[2])
        acc = torch.mm(rows, self.short.weight) if self.bias is None else torch.addmm(self.bias, rows, self.short.weight)
        h = self.body.run(x, states, out, tail)
        if self.last.alpha is not None:
            h = _elu(h, self.last.alpha)
        acc.addmm_(h.reshape(-1, h.shape[2]), self.last.weight)
        return acc.view(x.shape[0], x.shape[1], acc.shape[1])


def _build(module: nn.Module, name: str) -> _Op:
    if isinstance(module, (SEANetEncoder, SEANetDecoder)):
        return _build(module.model, name)
    if isinstance(module, nn.Sequential):
        ops: list[_Op] = []
        alpha: float | None = None  # an ELU waiting to be fused into the next conv
        for i, sub in enumerate(module):
            if isinstance(sub, nn.ELU) and alpha is None:
                alpha = float(sub.alpha)
                continue
            if isinstance(sub, StreamableConv1d):
                ops.append(_Conv(sub, f"{name}.{i}", alpha))
                alpha = None
                continue
            if alpha is not None:
                ops.append(_ELU(alpha))
                alpha = None
            if isinstance(sub, nn.ELU):
                alpha = float(sub.alpha)
            else:
                ops.append(_build(sub, f"{name}.{i}"))
        if alpha is not None:
            ops.append(_ELU(alpha))
        return _Seq(ops)
    if isinstance(module, StreamableConv1d):
        return _Conv(module, name, None)
    if isinstance(module, StreamableConvTranspose1d):
        return _ConvTr(module, name)
    if isinstance(module, StreamableLSTM):
        return _LSTM(module, name)
    if isinstance(module, SEANetResnetBlock):
        block = _build(module.block, f"{name}.block")
        block = block if isinstance(block, _Seq) else _Seq([block])
        return _Res(_build(module.shortcut, f"{name}.shortcut"), block)
    if isinstance(module, _POINTWISE):
        return _Pointwise(module)
    raise ValueError(f"cannot stream layer {type(module).__name__}")


class FastRVQ:
    """Residual vector quantisation of time-major latents with cached tables.

    The distances are those of the plain quantiser, ``|x|^2 - 2 x.e + |e|^2``, in the same
    order of operations (so near-ties resolve as there), with the product and the ``|x|^2``
    term in one ``addmm`` and ``|e|^2`` cached; decoding is one gather over all codebooks
    stacked and one sum."""

    def __init__(self, quantizer: nn.Module, num_codebooks: int | None = None):
        layers = list(quantizer.vq.layers)[: num_codebooks or len(quantizer.vq.layers)]
        with torch.no_grad():
            embeds = [layer.codebook.detach().clone() for layer in layers]  # [bins, D] each
            self.embed = embeds
            self.norm = [e.t().pow(2).sum(0, keepdim=True) for e in embeds]  # [1, bins]
            # [K * bins + 1, D]: every codebook, then a zero row for code -1 (no codebook)
            self.table = torch.cat(embeds + [embeds[0].new_zeros(1, embeds[0].shape[1])]) if embeds else None
        self.bins = int(embeds[0].shape[0]) if embeds else 0
        self.offsets = torch.arange(len(embeds)) * self.bins

    def encode(self, latent: torch.Tensor) -> torch.Tensor:
        """Time-major latent [B, T, D] -> codes [B, K, T]."""
        batch, steps = latent.shape[0], latent.shape[1]
        residual = latent.reshape(batch * steps, latent.shape[2])  # sizes given: a batch of 0 too
        codes = []
        for k, (embed, norm) in enumerate(zip(self.embed, self.norm)):
            dist = torch.addmm(residual.pow(2).sum(1, keepdim=True), residual, embed.t(), alpha=-2)
            idx = dist.add_(norm).argmin(1)
            codes.append(idx)
            if k + 1 < len(self.embed):
                residual = residual - embed.index_select(0, idx)
        return torch.stack(codes, 1).view(batch, steps, len(codes)).transpose(1, 2)

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """Codes [B, K, T] (K at most the codebooks cached) -> time-major latent [B, T, D].
        A code -1 stands for no codebook (it adds nothing): streams at different bandwidths
        decode in one batch, their codes padded with -1 to the largest K."""
        batch, count, steps = codes.shape
        if count > len(self.embed):
            raise ValueError(f"got {count} codebooks, {len(self.embed)} available")
        codes = codes.transpose(1, 2)
        idx = codes + self.offsets[:count].to(codes.device)
        if bool((codes < 0).any()):  # padding: code -1 adds nothing (the zero row)
            idx = torch.where(codes < 0, self.offsets.new_tensor(len(self.embed) * self.bins), idx)
        return self.table.index_select(0, idx.reshape(-1)).view(batch, steps, count, self.table.shape[1]).sum(2)


class FastNet:
    """A SEANet encoder or decoder as fast time-major ops, taking and giving [B, C, T]
    (``time_major_in`` / ``time_major_out``: [B, T, C] instead)."""

    def __init__(self, net: nn.Module, prefix: str):
        with torch.no_grad():
            self.root = _build(net, prefix)
        self.specs = self.root.specs
        self.time_major_in = False
        self.time_major_out = False

    def warmup(self, rate: float) -> int:
        """Frames needed before the first output, for ``rate`` input steps per frame."""
        return self.root.warmup(rate)[0]

    def run(self, x: torch.Tensor, states: tp.Iterator[torch.Tensor] | None, out: States,
            tail: bool) -> torch.Tensor:
        y = self.root.run(x if self.time_major_in else x.transpose(1, 2).contiguous(), states, out, tail)
        return y if self.time_major_out else y.transpose(1, 2).contiguous()
