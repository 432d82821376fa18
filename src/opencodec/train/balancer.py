"""Loss balancer of EnCodec (paper section 3.4, spec section 8).

The generator losses that depend on the decoder output ``y`` [B, C, T] (waveform L1,
multi-scale mel, adversarial, feature matching) are not summed directly. For each
loss ``l_i`` with weight ``lambda_i`` the balancer takes its gradient with respect
to the output, ``g_i = d l_i / d y``, and tracks a bias-corrected exponential moving
average of its norm::

    n_i(t)   = mean_b ||g_i[b]||_2           (per batch item, then averaged; or the
                                              norm of the whole tensor)
    s_i(t)   = beta * s_i(t-1) + n_i(t)      (s_i(0) = 0)
    w(t)     = beta * w(t-1) + 1             (w(0) = 0)
    ema_i(t) = s_i(t) / w(t)                 (= n_i(1) exactly at the first step)

and back-propagates from ``y`` the gradient::

    G = sum_i (lambda_i / sum_j lambda_j) * R * g_i / (ema_i + eps)

so each loss contributes about ``lambda_i / sum lambda`` of the reference norm ``R``
whatever the scale of its raw gradient. ``balance=False`` back-propagates the
plain weighted sum ``G = sum_i lambda_i g_i`` instead (same as
``(sum_i lambda_i l_i).backward()``).

The norms and their EMA stay on the loss's device as tensors (float64 sums), so a
training step makes no host synchronisation; :meth:`balanced_gradient` returns its stats
as 0-d tensors for the caller to read when it logs (:meth:`backward` returns floats).

Losses that do not flow through ``y`` (e.g. the quantiser's commitment loss) must be
back-propagated separately by the caller; ``backward`` keeps the graph alive
(``retain_graph=True`` on the final call too), so calling ``commit.backward()``
afterwards works.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch

__all__ = ["Balancer"]


class Balancer:
    """Gradient balancer for losses of one output tensor.

    Args:
        weights: ``lambda_i`` per loss name (e.g. ``{"l1": 0.1, "mel": 1, "adv": 3,
            "feat": 3}``). Every loss passed to :meth:`backward` must have a weight.
        ema_decay: ``beta`` of the bias-corrected EMA of the gradient norms.
        total_norm: reference norm ``R`` of the balanced gradient.
        per_batch_item: norm per batch item (over all non-batch axes), then mean
            over the batch; otherwise the norm of the whole gradient tensor.
        balance: ``False`` disables balancing (plain weighted sum of gradients).
        eps: guard added to the EMA norm in the division.
    """

    def __init__(self, weights: Mapping[str, float], ema_decay: float = 0.999, total_norm: float = 1.0,
                 per_batch_item: bool = True, balance: bool = True, eps: float = 1e-12) -> None:
        if not weights:
            raise ValueError("Balancer needs at least one weight")
        self.weights = {k: float(v) for k, v in weights.items()}
        self.ema_decay = ema_decay
        self.total_norm = total_norm
        self.per_batch_item = per_batch_item
        self.balance = balance
        self.eps = eps
        self._ema_sum: dict[str, torch.Tensor | float] = {}  # float64 tensors once updated
        self._ema_count: dict[str, float] = {}  # deterministic: kept on the host

    # ------------------------------------------------------------------ norms and EMA
    def grad_norm(self, grad: torch.Tensor) -> torch.Tensor:
        """L2 norm (0-d tensor) of ``grad`` [B, ...]: per item then batch mean, or of the whole tensor."""
        if self.per_batch_item and grad.dim() > 1:
            return grad.detach().flatten(1).norm(dim=1).mean()
        return grad.detach().norm()

    def _update_ema(self, name: str, value: torch.Tensor) -> torch.Tensor:
        """Bias-corrected EMA update (float64, on ``value``'s device); returns the new average."""
        beta = self.ema_decay
        previous = torch.as_tensor(self._ema_sum.get(name, 0.0), dtype=torch.float64, device=value.device)
        self._ema_sum[name] = beta * previous + value.to(torch.float64)
        self._ema_count[name] = beta * self._ema_count.get(name, 0.0) + 1.0
        return self._ema_sum[name] / self._ema_count[name]

    def ema_norms(self) -> dict[str, float]:
        """Current bias-corrected EMA norm of each loss seen so far."""
        return {k: float(self._ema_sum[k]) / self._ema_count[k] for k in self._ema_sum}

    # ------------------------------------------------------------------ backward
    def _gradients(self, losses: Mapping[str, torch.Tensor], output: torch.Tensor) -> dict[str, torch.Tensor]:
        """``d loss / d output`` for every loss with a non-zero weight (zeros if unused)."""
        grads = {}
        for name, loss in losses.items():
            if name not in self.weights:
                raise KeyError(f"loss {name!r} has no weight in the balancer")
            if self.weights[name] == 0:
                continue
            (grad,) = torch.autograd.grad(loss, [output], retain_graph=True, allow_unused=True)
            grads[name] = torch.zeros_like(output) if grad is None else grad
        return grads

    def balanced_gradient(self, losses: Mapping[str, torch.Tensor], output: torch.Tensor,
                          reduce_norm: Callable[[torch.Tensor], torch.Tensor] | None = None
                          ) -> tuple[torch.Tensor | None, dict[str, torch.Tensor]]:
        """The gradient to back-propagate from ``output`` [B, C, T], and logging stats.

        ``reduce_norm`` maps this process's norm to the value to use (distributed
        training passes the mean over ranks, so every rank keeps the same EMA).
        Stats (0-d tensors) per loss ``name``: ``grad_norm/name`` (this step's raw gradient norm),
        ``ema_norm/name`` (the EMA used), ``share/name`` (norm of this loss's component
        of the final gradient over the sum of those norms, ~``lambda_i / sum lambda``
        when balanced), and ``total_norm`` (norm of the returned gradient).
        Returns ``(None, {})`` when no loss has a non-zero weight.
        """
        grads = self._gradients(losses, output)
        if not grads:
            return None, {}
        weight_sum = sum(self.weights[k] for k in grads)
        stats: dict[str, torch.Tensor] = {}
        components: dict[str, torch.Tensor] = {}
        for name, grad in grads.items():
            norm = self.grad_norm(grad)
            if reduce_norm is not None:
                norm = reduce_norm(norm)
            ema = self._update_ema(name, norm)
            stats[f"grad_norm/{name}"] = norm
            stats[f"ema_norm/{name}"] = ema
            if self.balance:
                scale = self.weights[name] / weight_sum * self.total_norm / (ema + self.eps)
            else:
                scale = self.weights[name]
            components[name] = grad * scale
        comp_norms = {k: self.grad_norm(v) for k, v in components.items()}
        comp_total = torch.stack(list(comp_norms.values())).sum()
        for name, value in comp_norms.items():
            stats[f"share/{name}"] = torch.where(comp_total > 0, value / comp_total, torch.zeros_like(value))
        out_grad = torch.stack(list(components.values())).sum(dim=0)
        stats["total_norm"] = self.grad_norm(out_grad)
        return out_grad, stats

    def backward(self, losses: Mapping[str, torch.Tensor], output: torch.Tensor,
                 retain_graph: bool = True) -> dict[str, float]:
        """Back-propagate the balanced gradient of ``losses`` through ``output`` [B, C, T].

        ``retain_graph`` (default True) keeps the graph for a later ``backward`` of
        losses that share it (e.g. the commitment loss through the encoder).
        Returns the stats of :meth:`balanced_gradient` as floats.
        """
        out_grad, stats = self.balanced_gradient(losses, output)
        if out_grad is not None:
            output.backward(out_grad, retain_graph=retain_graph)
        return {k: float(v) for k, v in stats.items()}

    # ------------------------------------------------------------------ checkpointing
    def state_dict(self) -> dict[str, dict[str, float]]:
        """EMA state (plain floats: the float64 sums round-trip exactly) for exact resume."""
        return {"ema_sum": {k: float(v) for k, v in self._ema_sum.items()}, "ema_count": dict(self._ema_count)}

    def load_state_dict(self, state: Mapping[str, Mapping[str, float]]) -> None:
        """Restore the EMA state saved by :meth:`state_dict`."""
        self._ema_sum = {k: float(v) for k, v in state["ema_sum"].items()}
        self._ema_count = {k: float(v) for k, v in state["ema_count"].items()}
