"""A fingerprint of a model's inference weights, independent of how the file stored them.

``weights_sha256(model)`` hashes every tensor that inference reads, in key order: for each,
the key, its dtype, its shape and its bytes (CPU, contiguous). Codebook training statistics
(``embed_avg``, ``cluster_size``) and the k-means ``inited`` flag are left out, so a full
training checkpoint and its inference-only export hash the same; so do the same weights read
from a ``.th``, ``.safetensors`` or Hugging Face file (the loader maps them to one layout).
"""

from __future__ import annotations

import hashlib
import json
import os
import typing as tp

import torch

# Buffers that only training reads (see opencodec.quantization.vq).
NON_INFERENCE_SUFFIXES = ("._codebook.embed_avg", "._codebook.cluster_size", "._codebook.inited")


def state_dict_sha256(state: dict[str, torch.Tensor]) -> str:
    """Hex sha256 of the inference tensors of a state dict (see the module docstring);
    ``ValueError`` for a tensor on the meta device (no values to hash)."""
    digest = hashlib.sha256()
    for key in sorted(state):
        if key.endswith(NON_INFERENCE_SUFFIXES):
            continue
        if state[key].is_meta:  # a model moved to "meta" computes shapes only
            raise ValueError(f"cannot hash weights on the meta device ({key}): they have a shape "
                             f"but no values; load the model on a device with data (e.g. 'cpu')")
        tensor = state[key].detach().to("cpu").contiguous()
        digest.update(f"{key}\0{tensor.dtype}\0{tuple(tensor.shape)}\0".encode())
        digest.update(tensor.view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    return digest.hexdigest()


def weights_sha256(model: torch.nn.Module) -> str:
    """Hex sha256 of a model's inference weights (``state_dict_sha256`` of its state dict).

    Every file written and read checks it, so the digest is kept on the model with the
    process id and the key, storage address and version counter of each tensor (in-place
    changes bump the counter, ``load_state_dict`` included): it is recomputed only when a
    tensor changed, or in another process (a pickled model's copy has other addresses).
    Inference tensors (made under ``torch.inference_mode``) have no version counter, so a
    model holding one is hashed on every call, without a cache.
    """
    state = model.state_dict()
    if any(t.is_inference() for t in state.values()):
        model.__dict__.pop("_weights_sha256", None)
        return state_dict_sha256(state)
    stamp = (os.getpid(), *((key, t.data_ptr(), t._version) for key, t in state.items()))
    cached = model.__dict__.get("_weights_sha256")
    if cached is not None and cached[0] == stamp:
        return cached[1]
    digest = state_dict_sha256(state)
    model.__dict__["_weights_sha256"] = (stamp, digest)
    return digest


def codec_fingerprint(codec: tp.Any, name: str | None = None) -> str:
    """sha256 (hex) of a codec's configuration (with its ``name`` replaced by ``name`` when
    given) and every tensor of its state dict, training buffers included: what ``train-lm``
    records as ``codec_hash`` and keys its code cache by (:func:`weights_sha256` is the hash
    of the inference weights alone, which headers carry)."""
    config = codec.config.to_dict()
    if name is not None:
        config["name"] = name
    digest = hashlib.sha256(json.dumps(config, sort_keys=True).encode())
    for key, value in sorted(codec.state_dict().items()):
        digest.update(key.encode())
        digest.update(value.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()
