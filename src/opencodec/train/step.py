"""One training step of the codec trainer, and the throughput levers it runs with.

Shared by the trainer (``solver.py``) and ``benchmarks/train_throughput.py``, so the
benchmark measures exactly the step the trainer takes.

Levers (config keys; each default keeps the plain float32 eager path):

* ``amp: bf16`` -- the generator and the discriminator run under bf16 autocast; the
  waveform/mel losses, the adversarial losses' reductions and the quantiser (nearest
  neighbours, EMA statistics; ``rvq.py``) stay in float32.
* ``compile: true`` (or a backend name) -- ``torch.compile`` of the encoder, the decoder
  and every discriminator scale, in place (``Module.compile``: state-dict keys unchanged).
* ``optim.fused: auto|true|false`` -- fused Adam (one kernel for all parameters) where
  the device supports it (``auto``: on CUDA).
* ``optim.lr_scale: none|sqrt|linear`` with ``optim.lr_reference_batch`` -- large-batch
  rule: the configured rates hold at the reference batch and are multiplied by
  ``(batch / reference) ** 0.5`` (``sqrt``, the usual rule for Adam) or ``** 1``.
* No host synchronisation per step: the balancer keeps its norms on the device, the
  step's losses are accumulated on the device (:class:`MetricAccumulator`) and read
  every ``log.every`` steps.
* The discriminator sees real and decoded audio as one batch (one STFT and one conv
  stack per scale instead of two), and the generator step runs the bare discriminator
  with its parameters frozen (no weight gradients computed, no DDP all-reduce for them).
  The five scales are not merged into one call: their windows differ, and so do their
  frame and bin counts.
* ``cudnn_benchmark: true`` -- cuDNN picks the fastest convolution algorithms for the
  fixed training shapes (CUDA; nondeterministic choice, so off by default);
  ``tf32: true`` -- float32 matrix products as TF32 on CUDA (convolutions already are,
  PyTorch's default).
"""

from __future__ import annotations

import contextlib
import dataclasses
import typing as tp

import torch
from torch import nn

from ..model import EncodecModel
from .balancer import Balancer
from .losses import (MultiScaleMelLoss, discriminator_hinge_loss, generator_hinge_loss,
                     relative_feature_matching_loss, waveform_l1)

__all__ = ["TrainerModule", "StepParts", "generator_step", "discriminator_step", "frozen_generator_output",
           "scaled_learning_rate", "make_adam", "compile_models", "configure_backends", "autocast_for",
           "MetricAccumulator", "global_batch_metrics", "pending_metrics_for"]


class TrainerModule(nn.Module):
    """Wraps ``train_forward`` so DistributedDataParallel sees it as ``forward``."""

    def __init__(self, model: EncodecModel):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor, n_q: int, bypass: bool = False
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        y, q = self.model.train_forward(x, n_q, bypass_quantizer=bypass)
        return y, q.commitment_loss, q.codes


def scaled_learning_rate(lr: float, batch_size: int, rule: str = "none", reference_batch: int | None = None) -> float:
    """``lr`` (set for ``reference_batch``) scaled to ``batch_size`` by ``rule``:
    ``none`` keeps it, ``sqrt`` multiplies by ``sqrt(batch / reference)``, ``linear`` by
    ``batch / reference``."""
    exponents = {"none": 0.0, "sqrt": 0.5, "linear": 1.0}
    if rule not in exponents:
        raise ValueError(f"optim.lr_scale: expected one of {sorted(exponents)}, got {rule!r}")
    if rule == "none":
        return lr
    if not reference_batch or reference_batch <= 0:
        raise ValueError("optim.lr_scale needs optim.lr_reference_batch (a positive batch size)")
    return lr * (batch_size / reference_batch) ** exponents[rule]


def make_adam(params: tp.Iterable[nn.Parameter], lr: float, betas: tuple[float, float], device: torch.device,
              fused: tp.Any = "auto") -> torch.optim.Adam:
    """Adam, fused (one kernel) when ``fused`` is True, or ``auto`` on CUDA."""
    if fused not in ("auto", True, False):
        raise ValueError(f"optim.fused: expected auto, true or false, got {fused!r}")
    use_fused = device.type == "cuda" if fused == "auto" else bool(fused)
    return torch.optim.Adam(params, lr=lr, betas=betas, fused=use_fused or None)


def compile_models(model: EncodecModel, disc: nn.Module, backend: str = "inductor") -> None:
    """``torch.compile`` the encoder, the decoder and each discriminator scale in place
    (``backend``: ``inductor``, or e.g. ``aot_eager`` to check tracing without code
    generation). The quantiser stays eager: its k-means and dead-code replacement branch on data."""
    model.encoder.compile(backend=backend)
    model.decoder.compile(backend=backend)
    for scale in getattr(disc, "discriminators", [disc]):
        scale.compile(backend=backend)


def configure_backends(cfg: dict, device: torch.device) -> None:
    """Apply the ``cudnn_benchmark`` and ``tf32`` keys (CUDA only; both default off)."""
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = bool(cfg.get("cudnn_benchmark", False))
        torch.backends.cuda.matmul.allow_tf32 = bool(cfg.get("tf32", False))


def autocast_for(amp: str, device: torch.device) -> tp.Callable[[], contextlib.AbstractContextManager]:
    """A factory of autocast contexts for ``amp`` (``none`` or ``bf16``)."""
    if amp not in ("none", "bf16"):
        raise ValueError(f"amp: expected 'none' or 'bf16', got {amp!r}")
    if amp == "bf16":
        return lambda: torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext


@dataclasses.dataclass
class StepParts:
    """What a step needs. ``trainer`` and ``disc_run`` are the (possibly DDP-wrapped)
    modules whose gradients are synchronised; ``disc`` is the bare discriminator."""

    model: EncodecModel
    trainer: nn.Module
    disc: nn.Module
    disc_run: nn.Module
    opt_g: torch.optim.Optimizer
    opt_d: torch.optim.Optimizer
    balancer: Balancer
    mel_loss: MultiScaleMelLoss
    autocast: tp.Callable[[], contextlib.AbstractContextManager]
    commit_weight: float = 1.0
    world_size: int = 1
    reduce_norm: tp.Callable[[torch.Tensor], torch.Tensor] | None = None


def generator_step(p: StepParts, x: torch.Tensor, n_q: int, bypass: bool, adversarial: bool
                   ) -> tuple[torch.Tensor, dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Update the generator on ``x`` [B, C, T]; returns (decoded y [B, C, T] float32,
    losses incl. ``commit`` (0-d tensors), balancer stats (0-d tensors))."""
    with p.autocast():
        y, commit, _ = p.trainer(x, n_q, bypass)
    y = y.float()
    losses = {"l1": waveform_l1(y, x), "mel": p.mel_loss(y, x)}
    if adversarial:
        p.disc.requires_grad_(False)  # gradients reach y only
        with p.autocast():
            logits, feats = p.disc(torch.cat([y, x]))
        batch = x.shape[0]
        losses["adv"] = generator_hinge_loss([z[:batch].float() for z in logits])
        losses["feat"] = relative_feature_matching_loss([[f[batch:].detach().float() for f in fs] for fs in feats],
                                                        [[f[:batch].float() for f in fs] for fs in feats])
    active = {k: v for k, v in losses.items() if p.balancer.weights.get(k, 0) > 0}
    out_grad, stats = p.balancer.balanced_gradient(active, y, reduce_norm=p.reduce_norm)
    if out_grad is not None and p.balancer.balance:
        out_grad = out_grad * p.world_size  # DDP averages: keep the global sum over items
    p.opt_g.zero_grad(set_to_none=True)
    roots = [y] + ([commit * p.commit_weight] if p.commit_weight > 0 and commit.requires_grad else [])
    grads = [out_grad if out_grad is not None else torch.zeros_like(y)] + [None] * (len(roots) - 1)
    torch.autograd.backward(roots, grads)
    if adversarial:
        p.disc.requires_grad_(True)
    p.opt_g.step()
    losses["commit"] = commit
    return y, {k: v.detach() for k, v in losses.items()}, stats


@torch.no_grad()
def frozen_generator_output(p: StepParts, x: torch.Tensor, n_q: int) -> torch.Tensor:
    """The generator's output for ``x`` without changing it (eval mode: no codebook
    update, no gradient): the discriminator's warm-up input."""
    was_training = p.model.training
    p.model.eval()
    try:
        with p.autocast():
            y, _ = p.model.train_forward(x, n_q)
    finally:
        p.model.train(was_training)
    return y.float()


def discriminator_step(p: StepParts, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Update the discriminator on real ``x`` and decoded ``y`` (detached) [B, C, T]; returns its loss."""
    batch = x.shape[0]
    with p.autocast():
        logits, _ = p.disc_run(torch.cat([x, y.detach()]))
    loss = discriminator_hinge_loss([z[:batch].float() for z in logits], [z[batch:].float() for z in logits])
    p.opt_d.zero_grad(set_to_none=True)
    loss.backward()
    p.opt_d.step()
    return loss.detach()


def first_non_finite(modules: dict[str, nn.Module]) -> str | None:
    """The name (``model.encoder...weight``) of the first parameter or floating-point buffer (a
    codebook) of ``modules`` holding a NaN or an infinity, else None: a diverged run (a learning
    rate far too high), whose checkpoint would replace the last good one and whose export would
    decode to NaN."""
    for prefix, module in modules.items():
        for name, tensor in [*module.named_parameters(), *module.named_buffers()]:
            if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
                return f"{prefix}.{name}"
    return None


class MetricAccumulator:
    """Sums 0-d tensors on their device and reads them to the host once, as means over
    the steps each was added in (so logging every N steps costs one sync, not one per step)."""

    def __init__(self) -> None:
        self._sums: dict[str, torch.Tensor] = {}
        self._counts: dict[str, int] = {}

    def add(self, values: tp.Mapping[str, torch.Tensor]) -> None:
        """Add one step's values."""
        for k, v in values.items():
            v = v.detach().float()
            self._sums[k] = self._sums[k] + v if k in self._sums else v.clone()
            self._counts[k] = self._counts.get(k, 0) + 1

    def means(self, reduce: tp.Callable[[torch.Tensor], torch.Tensor] | None = None) -> dict[str, float]:
        """Means since the last call (one host sync), then reset. ``reduce`` maps the stacked
        sums (a 1-d tensor) before they are read: under torchrun, their mean over ranks (one
        collective per log, every rank adding the same keys in the same order), so that the
        means are those of the global batch."""
        if not self._sums:
            return {}
        keys = list(self._sums)
        stacked = torch.stack([self._sums[k] for k in keys])
        values = (stacked if reduce is None else reduce(stacked)).tolist()
        out = {k: v / self._counts[k] for k, v in zip(keys, values)}
        self._sums, self._counts = {}, {}
        return out

    def state_dict(self, reduce: tp.Callable[[torch.Tensor], torch.Tensor] | None = None) -> dict[str, tp.Any]:
        """The sums and counts since the last :meth:`means`, for a checkpoint between two logs
        (a resumed run then logs the window's means as the uninterrupted run does). ``reduce`` as
        in :meth:`means` (under torchrun every rank calls this; each resumes with the ranks' mean,
        to which its own sums add: the logged mean over ranks is unchanged). No reset."""
        keys = list(self._sums)
        if not keys:
            return {"sums": {}, "counts": {}}
        stacked = torch.stack([self._sums[k] for k in keys])
        stacked = (stacked if reduce is None else reduce(stacked)).cpu()
        return {"sums": dict(zip(keys, stacked.unbind())), "counts": dict(self._counts)}

    def load_state_dict(self, state: tp.Mapping[str, tp.Any], device: torch.device) -> None:
        """Continue from a :meth:`state_dict` (its sums moved to ``device``)."""
        self._sums = {k: v.to(device=device, dtype=torch.float32) for k, v in state["sums"].items()}
        self._counts = {k: int(n) for k, n in state["counts"].items()}


#: The balancer's logged norms of the gradient with respect to the decoded audio: under torchrun
#: each rank's loss is a mean over its B/N items, whose gradient is N times the global batch's.
_PER_RANK_NORMS = ("balancer/grad_norm/", "balancer/ema_norm/")


def pending_metrics_for(state: tp.Mapping[str, tp.Any], world_size: int) -> dict[str, tp.Any]:
    """A checkpoint's pending metrics (:meth:`MetricAccumulator.state_dict` and the
    ``world_size`` of the run that saved it) for a run of ``world_size`` processes: a resume
    under another number of processes scales the sums of the balancer's per-rank norms
    (:data:`_PER_RANK_NORMS`, N times the global batch's under N ranks) by the ratio, so that
    :func:`global_batch_metrics` logs the window as one run would. The same number (or a state
    without ``world_size``): unchanged."""
    saved = int(state.get("world_size", world_size))
    if saved == world_size:
        return dict(state)
    ratio = world_size / saved
    sums = {k: v * ratio if k.startswith(_PER_RANK_NORMS) else v for k, v in state["sums"].items()}
    return {**state, "sums": sums, "world_size": world_size}


def global_batch_metrics(values: dict[str, float], world_size: int) -> dict[str, float]:
    """The logged means of :meth:`MetricAccumulator.means` (already averaged over ranks) as a
    single process with the global batch logs them: the balancer's gradient and EMA norms
    divided by ``world_size`` (the losses, ``total_norm`` and the shares need nothing; a share
    is the mean of the ranks' shares, which agree closely). A single process: unchanged."""
    if world_size == 1:
        return values
    return {k: v / world_size if k.startswith(_PER_RANK_NORMS) else v for k, v in values.items()}
