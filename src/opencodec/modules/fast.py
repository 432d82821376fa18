"""Inference-only fast paths for the SEANet encoder and decoder (no autograd, CPU float32).

The paths run the same layers as the modules' ``forward`` but skip work that the
module-by-module computation does on the way:

* **Encoder, bit-exact** (``encoder_forward_exact``). Every arithmetic operation is the
  one the modules run, on tensors of the same shape and memory layout, so the latent
  (and hence the codes) is bitwise identical to ``encoder(x)`` under ``no_grad`` /
  ``inference_mode``, for any batch size and thread count. What changes: reflect padding
  is a copy into a preallocated buffer plus two small mirrored copies (PyTorch's
  ``reflection_pad1d`` kernel is several times slower than a copy), kernel-1 convolutions
  are not padded at all (the module pads them by zero samples, which still copies), ELUs
  on intermediate tensors run in place, residual sums are added in place (``a + b`` and
  ``b + a`` are the same IEEE sum), the weight-normed weights are computed once and
  cached until a parameter changes, and on one thread a long input's downsampling stack
  runs in time chunks that stay in cache (see ``ENCODER_CHUNK_FRAMES`` for why that is
  still bitwise the same). Convolutions stay in PyTorch's default (oneDNN,
  channels-first) kernels: the channels-last kernels are faster but sum in another order,
  and the LSTM stays PyTorch's (oneDNN) kernel: it is memory-bound and already at the
  cost of reading its weights once per step.
* **Decoder, bit-exact** (``decoder_forward_exact``, the default): the same savings, and
  the transposed convolutions in oneDNN's channels-last kernels, which give the
  channels-first result bit for bit and are 2-4x faster (33% of the plain decode).
* **Channels-last, approximate** (``encoder_forward_fast``, ``decoder_forward_fast``): see
  :mod:`opencodec.modules.fast_cl`.

The paths are used by ``SEANetEncoder.forward`` / ``SEANetDecoder.forward`` only when
autograd is off and the module is in eval mode, on CPU float32 inputs; training and
every other case run the plain module code. ``set_fast_path(False)`` turns them off.
"""

from __future__ import annotations

import typing as tp

import torch
from torch import nn
from torch.nn import functional as F

from .conv import (
    StreamableConv1d,
    StreamableConvTranspose1d,
    pad1d,
)
from .lstm import StreamableLSTM
from .seanet_blocks import SEANetResnetBlock

__all__ = ["decoder_forward_exact", "encoder_forward_exact", "fast_path_enabled", "set_fast_path"]

_ENABLED = True


def set_fast_path(enabled: bool) -> bool:
    """Switch the inference fast paths on or off globally; returns the previous setting.

    Off, the encoder and decoder always run the plain module code (e.g. to compare).
    """
    global _ENABLED
    previous, _ENABLED = _ENABLED, bool(enabled)
    return previous


def fast_path_enabled(module: nn.Module, x: torch.Tensor) -> bool:
    """True when ``module`` may run its inference fast path on ``x``: fast paths on,
    autograd off, eval mode, a CPU float32 tensor of shape [B, C, T]."""
    return (_ENABLED and not torch.is_grad_enabled() and not module.training
            and x.device.type == "cpu" and x.dtype == torch.float32 and x.dim() == 3)


# -- cached weights -----------------------------------------------------------------------------
def _version_key(tensors: tp.Sequence[torch.Tensor | None]) -> tuple | None:
    """Identity and in-place version of each tensor, or None when one cannot be tracked
    (inference tensors have no version counter): then nothing is cached."""
    key: list[tp.Any] = [torch.get_num_threads()]
    for t in tensors:
        if t is None:
            key.append(None)
            continue
        try:
            version = t._version
        except RuntimeError:
            return None
        key.append((id(t), t.data_ptr(), version))
    return tuple(key)


def _source_tensors(conv: nn.Module) -> list[torch.Tensor | None]:
    """The tensors a conv's effective weight and bias are computed from."""
    tensors = [getattr(conv, name, None) for name in ("weight_g", "weight_v", "_folded", "bias")]
    if getattr(conv, "weight_v", None) is None:
        tensors.append(conv.weight)
    return tensors


def _cached(conv: nn.Module, tag: str, build: tp.Callable[[], tp.Any]) -> tp.Any:
    """``build()`` cached on ``conv`` under ``tag`` until one of its weights changes."""
    key = _version_key(_source_tensors(conv))
    store: dict[str, tuple[tp.Any, tp.Any]] = conv.__dict__.setdefault("_fast_cache", {})
    hit = store.get(tag)
    if key is not None and hit is not None and hit[0] == key:
        return hit[1]
    value = build()
    if key is not None:
        store[tag] = (key, value)
    return value


def weight_bias(conv: nn.Module) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Effective (weight, bias) of a plain or weight-normed conv, as its forward uses them."""
    def build() -> tuple[torch.Tensor, torch.Tensor | None]:
        bias = conv.bias.detach() if conv.bias is not None else None
        return conv.weight.detach(), bias
    return _cached(conv, "ncw", build)


# -- exact paths --------------------------------------------------------------------------------
def _pads(layer: StreamableConv1d, length: int) -> tuple[int, int]:
    """(left, right) padding of ``layer`` for an input of ``length`` samples (as its forward)."""
    return layer.pads(length)


def _reflect_edges_(buf: torch.Tensor, left: int, length: int, right: int) -> None:
    """Fill buf[..., :left] and buf[..., left + length:] by reflecting the interior
    buf[..., left:left + length] about its end samples (``F.pad`` reflect semantics)."""
    if left:
        buf[..., :left].copy_(buf[..., left + 1: 2 * left + 1].flip(-1))
    if right:
        end = left + length
        buf[..., end:].copy_(buf[..., end - 1 - right: end - 1].flip(-1))


def _pad_ncw(x: torch.Tensor, left: int, right: int, mode: str) -> torch.Tensor:
    """Same values as ``pad1d(x, (left, right), mode)`` for x [B, C, T]; reflect padding of
    an input longer than the pads is a copy into a new buffer."""
    length = x.shape[-1]
    if mode != "reflect" or length <= max(left, right):
        return pad1d(x, (left, right), mode)
    buf = x.new_empty(*x.shape[:-1], left + length + right)
    buf[..., left: left + length].copy_(x)
    _reflect_edges_(buf, left, length, right)
    return buf


def _conv_exact(layer: StreamableConv1d, x: torch.Tensor) -> torch.Tensor:
    """``layer(x)`` with the same convolution call on the same padded values."""
    left, right = _pads(layer, x.shape[-1])
    if left or right:
        x = _pad_ncw(x, left, right, layer.pad_mode)
    conv = layer.conv.conv
    weight, bias = weight_bias(conv)
    y = F.conv1d(x, weight, bias, conv.stride, 0, conv.dilation)
    norm = layer.conv.norm
    return y if isinstance(norm, nn.Identity) else norm(y)


def _convtr_trim(layer: StreamableConvTranspose1d) -> tuple[int, int]:
    """(left, right) samples a streamable transposed conv trims from its output."""
    return layer.trim()


def _to_cl(x: torch.Tensor) -> torch.Tensor:
    """[B, C, T] -> [B, C, 1, T] channels-last (time-major memory)."""
    return x.unsqueeze(2).contiguous(memory_format=torch.channels_last)


def _nwc(x: torch.Tensor) -> torch.Tensor:
    """Channels-last [B, C, 1, T] -> [B, T, C] (a view when x is channels-last contiguous)."""
    return x.permute(0, 2, 3, 1)[:, 0]


def _from_nwc(x: torch.Tensor) -> torch.Tensor:
    """[B, T, C] contiguous -> [B, C, 1, T] channels-last view."""
    return x.permute(0, 2, 1).unsqueeze(2)


def _cl_weight(conv: nn.Module) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(weight [O, I, 1, k] channels-last, bias) of a conv or transposed conv."""
    def build() -> tuple[torch.Tensor, torch.Tensor | None]:
        weight, bias = weight_bias(conv)
        return weight.unsqueeze(2).contiguous(memory_format=torch.channels_last), bias
    return _cached(conv, "cl", build)


def _cl_to_ncw(y: torch.Tensor) -> torch.Tensor:
    """Channels-last [B, C, 1, T] -> contiguous [B, C, T], one 2-d transpose per item:
    PyTorch copies a transposed 2-d matrix in cache-sized blocks (~4x faster than its
    generic strided copy of the 4-d view)."""
    rows = _nwc(y.contiguous(memory_format=torch.channels_last))  # [B, T, C]
    out = y.new_empty(y.shape[0], y.shape[1], y.shape[-1])
    for b in range(y.shape[0]):
        out[b].copy_(rows[b].t())
    return out


def _convtr_exact(layer: StreamableConvTranspose1d, x: torch.Tensor) -> torch.Tensor:
    """``layer(x)`` for x [B, C_in, F], bitwise: oneDNN's channels-last transposed conv gives
    the channels-first result bit for bit (checked for every EnCodec shape, batch sizes 1-3
    and 1-2 threads in tests) and is 2-4x faster; the norm and the trim (a view, as in the
    module) then run on the channels-first output, exactly as in the module."""
    convtr = layer.convtr.convtr
    weight, bias = _cl_weight(convtr)
    y = _cl_to_ncw(F.conv_transpose2d(_to_cl(x), weight, bias, (1, convtr.stride[0])))
    norm = layer.convtr.norm
    if not isinstance(norm, nn.Identity):
        y = norm(y)
    left, right = _convtr_trim(layer)
    return y[..., left: y.shape[-1] - right]


def run_exact(layers: tp.Iterable[nn.Module], x: torch.Tensor, owned: bool) -> tuple[torch.Tensor, bool]:
    """Apply ``layers`` in order; ``owned``: x is an intermediate that may be overwritten.
    Returns the output and whether it is owned."""
    for layer in layers:
        if isinstance(layer, StreamableConv1d):
            x, owned = _conv_exact(layer, x), True
        elif isinstance(layer, StreamableConvTranspose1d):
            x, owned = _convtr_exact(layer, x), True
        elif isinstance(layer, nn.ELU):
            x, owned = F.elu(x, layer.alpha, inplace=owned), True
        elif isinstance(layer, SEANetResnetBlock):
            x, owned = _resblock_exact(layer, x), True
        elif isinstance(layer, nn.Sequential):
            x, owned = run_exact(layer, x, owned)
        elif isinstance(layer, StreamableLSTM):
            x, owned = layer(x), True
        else:  # unknown layer: plain call, and its output may alias its input
            x, owned = layer(x), False
    return x, owned


def _resblock_exact(block: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``block.shortcut(x) + block.block(x)`` with the sum done in place."""
    short, short_owned = run_exact([block.shortcut], x, False)
    branch, branch_owned = run_exact(block.block, x, False)
    if short_owned:
        return short.add_(branch)
    if branch_owned:
        return branch.add_(short)  # IEEE addition is commutative: same bits as short + branch
    return short + branch


# Time chunks for the encoder's downsampling stack (one thread only). A chunk is computed
# with ``context`` extra frames on each side, which are cropped away, so every kept output
# sees exactly the input window it sees in one pass. On one thread the convolutions give
# bitwise the same output for the same window wherever the time axis is cut (oneDNN, and
# MKL's single-threaded GEMM for the kernel-1 convs, reduce in a fixed order; MKL takes
# another path for a single time step, which chunks never have). With two threads MKL's
# GEMM is not cut-invariant, so chunking is off there. The other operation whose result
# depends on the tensor it runs on is the ELU: PyTorch evaluates blocks of 32 elements
# (2 AVX-512 vectors) with a vectorised expm1 and a tensor's last ``n % 32`` elements with
# the scalar formula, which can differ by one ulp. ``_encoder_chunk_plan`` only allows
# chunking when every chunk boundary falls on a multiple of 32 elements of each ELU's
# input, so that the same elements get the same formula. Then the latent is bitwise that
# of one pass (tests/test_speed_paths.py checks it for many lengths).

#: Latent frames per chunk of the encoder's downsampling stack (~2.7 s at 24 kHz).
ENCODER_CHUNK_FRAMES = 200


class ChunkPlan(tp.NamedTuple):
    stop: int  # layers[:stop] are chunked (the downsampling stack, up to the LSTM)
    hop: int  # input samples per output frame of those layers
    context: int  # frames of context per side that covers every output's input window


def _encoder_chunk_plan(layers: tp.Sequence[nn.Module]) -> ChunkPlan | None:
    """How the encoder's layers before its LSTM can be chunked, or None when they cannot
    (a normalisation over time, an unknown layer, or an ELU whose chunk boundaries would not
    fall on multiples of 32 elements)."""
    reach = 0  # input samples an output can depend on, either side (an upper bound)
    elus: list[tuple[int, int]] = []
    state = {"down": 1, "channels": 0}

    def walk(mods: tp.Iterable[nn.Module]) -> bool:
        nonlocal reach
        for layer in mods:
            if isinstance(layer, nn.ELU):
                elus.append((state["channels"], state["down"]))
            elif isinstance(layer, StreamableConv1d):
                if not isinstance(layer.conv.norm, nn.Identity):
                    return False
                reach += (layer.kernel_size - 1) * state["down"]
                state["down"] *= layer.stride
                state["channels"] = int(layer.conv.conv.out_channels)
            elif isinstance(layer, SEANetResnetBlock):
                down, channels = state["down"], state["channels"]
                if not walk([layer.shortcut]):
                    return False
                state["down"], state["channels"] = down, channels
                if not walk(layer.block) or state["down"] != down:
                    return False
                state["channels"] = channels
            elif isinstance(layer, nn.Identity):
                continue
            else:
                return False
        return True

    stop = next((i for i, layer in enumerate(layers) if isinstance(layer, StreamableLSTM)), len(layers))
    first = layers[0] if layers else None
    if not isinstance(first, StreamableConv1d):
        return None
    state["channels"] = int(first.conv.conv.in_channels)
    if stop == 0 or not walk(layers[:stop]):
        return None
    hop = state["down"]
    # Each ELU's input in a chunk is [1, C, n] with n a multiple of hop / d (the last chunk:
    # n differs from the whole signal's by such a multiple): whole blocks of 32 elements.
    if any(c * (hop // d) % 32 for c, d in elus):
        return None
    return ChunkPlan(stop, hop, -(-reach // hop))


def chunked_bounds(frames: int, chunk: int) -> list[tuple[int, int]]:
    """[f0, f1) frame ranges of ``chunk`` frames; a last range shorter than half a chunk is
    merged into the one before, so every chunk is long."""
    bounds = [(f0, min(frames, f0 + chunk)) for f0 in range(0, frames, chunk)]
    if len(bounds) > 1 and bounds[-1][1] - bounds[-1][0] < chunk // 2:
        bounds[-2:] = [(bounds[-2][0], frames)]
    return bounds


def _can_chunk(plan: ChunkPlan | None, x: torch.Tensor) -> bool:
    """Chunk this input? One item, one thread, at least three chunks long."""
    return (plan is not None and x.shape[0] == 1 and torch.get_num_threads() == 1
            and x.shape[-1] >= 3 * ENCODER_CHUNK_FRAMES * plan.hop)


def encoder_forward_exact(encoder: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """SEANet encoder x [B, C, T] -> latent [B, D, F], bitwise equal to ``encoder(x)`` run
    without autograd (the caller's x is never modified). On one thread, long single inputs
    run the downsampling stack in time chunks (see above): ~25% faster, as a chunk's
    activations stay in cache."""
    layers = list(encoder.model)
    plan = encoder_chunk_plan(encoder, x)
    if plan is None:
        y, _ = run_exact(layers, x, False)
        return y
    y, _ = run_exact(layers[plan.stop:], _chunked_stack(layers, plan, x), True)
    return y


def encoder_chunk_plan(encoder: nn.Module, x: torch.Tensor) -> ChunkPlan | None:
    """How :func:`encoder_forward_exact` runs ``encoder``'s downsampling stack on ``x`` [B, C, T]:
    in the time chunks of the returned plan, or in one pass (None). Whether chunking is exact
    for a model is decided once, on the first input long enough to chunk (its first samples,
    see :func:`_chunking_is_exact`), and cached on the encoder; the long-file encoder
    (:mod:`opencodec.longform.exact_encoder`) asks the same question on the same samples."""
    plan = encoder.__dict__.get("_chunk_plan", False)
    if plan is False:  # not yet decided for this model
        plan = _encoder_chunk_plan(list(encoder.model))
        if plan is None:
            encoder.__dict__["_chunk_plan"] = None
        elif _can_chunk(plan, x):  # decided once, on the first input long enough to chunk
            plan = plan if _chunking_is_exact(list(encoder.model), plan, x) else None
            encoder.__dict__["_chunk_plan"] = plan
    return plan if plan is not None and _can_chunk(plan, x) else None


def _chunked_stack(layers: list[nn.Module], plan: ChunkPlan, x: torch.Tensor) -> torch.Tensor:
    """The downsampling stack (``layers[:plan.stop]``) of x [1, C, T], run in time chunks."""
    length, frames = x.shape[-1], -(-x.shape[-1] // plan.hop)
    pieces = []
    for f0, f1 in chunked_bounds(frames, ENCODER_CHUNK_FRAMES):
        a, b = max(0, f0 - plan.context), min(frames, f1 + plan.context)
        y, _ = run_exact(layers[: plan.stop], x[..., a * plan.hop: min(length, b * plan.hop)], False)
        pieces.append(y[..., f0 - a: f1 - a])
    return torch.cat(pieces, dim=-1)


def _chunking_is_exact(layers: list[nn.Module], plan: ChunkPlan, x: torch.Tensor) -> bool:
    """Whether chunking gives bitwise the one-pass stack on this model and machine, checked
    once on the first input long enough to chunk. The cut-invariance the plan relies on is a
    property of the convolution kernels oneDNN picks for the layer shapes, and it does not
    hold for every architecture (a small test model with 8-16 channels differed by ~1e-7);
    where it fails, the model runs in one pass."""
    probe = x[..., : (3 * ENCODER_CHUNK_FRAMES + ENCODER_CHUNK_FRAMES // 2) * plan.hop + plan.hop // 2]
    whole, _ = run_exact(layers[: plan.stop], probe, False)
    return torch.equal(whole, _chunked_stack(layers, plan, probe))


def decoder_forward_exact(decoder: nn.Module, z: torch.Tensor) -> torch.Tensor:
    """SEANet decoder z [B, D, F] -> audio [B, C, F * hop], bitwise equal to ``decoder(z)``
    run without autograd: the exact encoder's savings plus channels-last transposed convs
    (see ``_convtr_exact``)."""
    y, _ = run_exact(decoder.model, z, False)
    return y
