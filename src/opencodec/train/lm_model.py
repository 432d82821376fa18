"""The entropy model a ``train-lm`` run trains: :class:`~opencodec.entropy.EntropyLM` with the
config's sizes (paper sizes by default), its differentiable forward (:func:`lm_logits`),
identical in arithmetic to the streaming path the coder uses, the training loss, and the
export to the weights file that ``opencodec.pretrained.load_lm_model`` and
``opencodec compress --lm-model`` read.
"""

from __future__ import annotations

import functools
import json
import os
import typing as tp
from pathlib import Path

import torch
import torch.nn.functional as F

from .._files import atomic_output
from ..lm_pairing import LM_METADATA_KEY, read_lm_info
from ..pretrained import trained_lm_name
from .lm_config import LOADABLE_HEADS, Settings

if tp.TYPE_CHECKING:
    from ..entropy import EntropyLM
    from ..model import EncodecModel

__all__ = ["LM_METADATA_KEY", "IGNORE", "build_lm", "lm_logits", "export_lm", "read_lm_info"]

IGNORE = -100  # target of padded positions (not scored)


# -- 3. the model ------------------------------------------------------------------------------
def build_lm(s: Settings, num_codebooks: int, card: int, frame_rate: int) -> EntropyLM:
    """An :class:`EntropyLM` with the config's sizes and the window ``load_lm_model`` uses."""
    from ..entropy import EntropyLM

    return EntropyLM(n_q=num_codebooks, card=card, dim=s.dim, num_heads=s.num_heads,
                     num_layers=s.num_layers, hidden_scale=s.hidden_scale,
                     past_context=int(s.past_context_s * frame_rate))


def _hidden(lm: EntropyLM, indices: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
    """Transformer output ``[B, T, dim]`` of a fresh state for ``indices`` ``[B, K, T]``."""
    from ..entropy import sin_embedding

    B, K, T = indices.shape
    x = lm.emb[0](indices[:, 0])
    for k in range(1, K):  # the coder's order: ((e_0 + e_1) + e_2) + ...
        x = x + lm.emb[k](indices[:, k])
    tr = lm.transformer
    positions = torch.arange(T, device=indices.device).view(1, -1, 1) + offsets.view(-1, 1, 1)
    x = tr.norm_in(x) + sin_embedding(positions, lm.dim, tr.max_period)
    past = x.new_zeros(B, 1, lm.dim)  # the streaming state's initial zero vector
    for layer in tr.layers:
        x = layer(x, past, tr.past_context)
    return x


def lm_logits(lm: EntropyLM, indices: torch.Tensor, offsets: torch.Tensor | None = None) -> torch.Tensor:
    """Differentiable logits of ``lm`` from a fresh state (``EntropyLM.forward`` caches its
    embedding and head tables without gradients, so training needs this path).

    Args:
        indices: long ``[B, K, T]``, ``1 + code`` of the previous frame (0: none), ``K <= n_q``.
        offsets: long ``[B]``, position of each window's first step (default 0).
    Returns:
        float ``[B, K, T, card]``; ``softmax`` over the last axis equals ``lm(indices)[0]`` for
        zero offsets (same operations, up to float rounding).
    """
    if offsets is None:
        offsets = torch.zeros(indices.shape[0], dtype=torch.long, device=indices.device)
    x = _hidden(lm, indices, offsets)
    return torch.stack([lm.linears[k](x) for k in range(indices.shape[1])], dim=1)


def _loss(lm: EntropyLM, inputs: torch.Tensor, targets: torch.Tensor, offsets: torch.Tensor
          ) -> tuple[torch.Tensor, int]:
    """Summed cross-entropy (nats) of the first ``K`` heads and the number of scored codes.

    inputs, targets: long ``[B, K, T]`` (targets ``IGNORE`` where padded); offsets ``[B]``.
    """
    x = _hidden(lm, inputs, offsets)
    valid = targets[:, 0] != IGNORE              # [B, T]: padding is the same in every codebook
    x = x[valid]                                 # [N, dim]: the heads only see scored steps
    total = x.new_zeros((), dtype=torch.float32)
    for k in range(inputs.shape[1]):  # one head at a time: [N, card] logits, not [N, K, card]
        logits = lm.linears[k](x).float()
        total = total + F.cross_entropy(logits, targets[:, k][valid], reduction="sum")
    return total, int(valid.sum()) * inputs.shape[1]


# -- 6. export -----------------------------------------------------------------------------------
def export_lm(lm: EntropyLM, path: str | os.PathLike[str], info: dict[str, tp.Any], *,
              codec: EncodecModel | None = None) -> Path:
    """Write the LM's state dict (official ``LMModel`` keys) to a ``.safetensors`` file.

    ``info`` (codec name and hash, bandwidths, training step, ...) goes into the file's
    metadata under ``opencodec_lm_config`` together with the model sizes, the model's name
    (``name``: :func:`~opencodec.pretrained.trained_lm_name`, ``<codec>_lm_<run folder>``, which
    ``.ecdc`` headers record) and the codec's weights hash as headers and ``opencodec info`` show
    it (``codec_weights_hash``, :func:`opencodec.identity.model_hash` of ``codec``, else of the
    codec ``info["codec_source"]`` names when its ``codec_hash`` is ``info["codec_hash"]``);
    ``load_lm_model`` refuses the file for any other codec. The tensors alone are what
    ``opencodec.pretrained.load_lm_model`` needs, which builds the official 8 attention heads
    (the tensors do not show the head count): an ``lm`` with another head count is a
    ``ValueError`` (it would load as another model).
    """
    from safetensors.torch import save_file

    heads = lm.transformer.layers[0].self_attn.num_heads
    if heads != LOADABLE_HEADS:
        raise ValueError(f"the entropy model has {heads} attention heads, but load_lm_model builds "
                         f"{LOADABLE_HEADS} (the file's tensors do not record the head count), so the "
                         f"exported file would load as another model; use {LOADABLE_HEADS} heads")
    path = Path(path)
    sizes = {"n_q": lm.n_q, "card": lm.card, "dim": lm.dim, "num_layers": len(lm.transformer.layers),
             "num_heads": heads,
             "hidden": lm.transformer.layers[0].linear1.out_features,
             "past_context": lm.past_context, "max_period": lm.transformer.max_period}
    info = dict(info)
    if "codec_weights_hash" not in info:
        weights = _codec_weights_hash(codec, info)
        if weights is not None:
            info["codec_weights_hash"] = weights
    info.setdefault("name", trained_lm_name(info.get("codec"), path))
    state = {k: v.detach().cpu().contiguous().clone() for k, v in lm.state_dict().items()}
    with atomic_output(path) as tmp:
        save_file(state, str(tmp), metadata={LM_METADATA_KEY: json.dumps({**sizes, **info})})
    return path


def _codec_weights_hash(codec: EncodecModel | None, info: dict[str, tp.Any]) -> str | None:
    """The weights hash (as headers carry it) of the codec an export was trained on: of
    ``codec``, or of the codec ``info["codec_source"]`` names, loaded once per process and used
    only when its config-and-state sha256 is ``info["codec_hash"]`` (None otherwise)."""
    from ..identity import model_hash

    if codec is not None:
        return model_hash(codec)
    source, fingerprint = info.get("codec_source"), info.get("codec_hash")
    if not isinstance(source, str) or not isinstance(fingerprint, str):
        return None
    return _weights_hash_of_source(source, fingerprint, os.getcwd())


@functools.lru_cache(maxsize=8)
def _weights_hash_of_source(source: str, fingerprint: str, cwd: str) -> str | None:
    from ..errors import OpenCodecError
    from ..identity import model_hash
    from ..pretrained import load_model
    from .lm_codes import codec_fingerprint

    try:
        codec = load_model(source)
    except (OpenCodecError, OSError):
        return None
    return model_hash(codec) if codec_fingerprint(codec) == fingerprint else None
