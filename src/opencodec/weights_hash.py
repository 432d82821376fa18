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

import numpy as np
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


#: Elements per tensor that :func:`_bit_sums` reads (evenly spaced, the first included).
SAMPLED_ELEMENTS = 1024
_INT_VIEWS = {1: torch.int8, 2: torch.int16, 4: torch.int32, 8: torch.int64}
_NP_INT_VIEWS = {1: np.int8, 2: np.int16, 4: np.int32, 8: np.int64}
#: Dtypes whose CPU tensors :func:`_bit_sums` reads through numpy (the others through torch).
_NUMPY_DTYPES = (torch.float32, torch.float64, torch.float16, torch.int64, torch.int32, torch.int16,
                 torch.int8, torch.uint8)


def _bit_sums(tensors: tp.Sequence[torch.Tensor]) -> list[int]:
    """For each tensor, the sum (int64) of the bit patterns, read as signed integers of the
    element's size, of about :data:`SAMPLED_ELEMENTS` evenly spaced elements (the first one
    included): any change of a whole tensor changes it (an optimiser step or a scaling written
    through ``.data``), a change of a few elements may not. CPU tensors are summed through numpy
    (less overhead per tensor), others on their device with one transfer for all. About 1.5 ms
    for the 188 tensors of the bundled model on one core, against 16 ms to hash them
    (``benchmarks/probes/weights_stamp_cost.py``)."""
    sums: list[tp.Any] = []
    for t in tensors:
        step = max(1, t.numel() // SAMPLED_ELEMENTS)
        if t.device.type == "cpu" and t.dtype in _NUMPY_DTYPES:  # numpy: a fraction of torch's overhead
            array = t.detach().numpy()
            bits = array.view(_NP_INT_VIEWS[array.itemsize])
            # a strided tensor is sampled where it lies (reshape(-1) would copy all of it)
            sample = bits.reshape(-1)[::step] if array.flags.c_contiguous else bits[
                np.unravel_index(np.arange(0, bits.size, step), bits.shape)]
            sums.append(int(sample.sum(dtype=np.int64)))
            continue
        flat = t.detach().reshape(-1)
        if flat.dtype == torch.bool:
            flat = flat.view(torch.uint8)
        viewable = flat.element_size() in _INT_VIEWS and not flat.is_complex()
        sample = flat.view(_INT_VIEWS[flat.element_size()])[::step] if viewable else (
            flat[::step].contiguous().view(torch.uint8))
        sums.append(int(sample.numpy().sum(dtype=np.int64)) if sample.device.type == "cpu"
                    else sample.sum(dtype=torch.int64))
    on_device = [i for i, v in enumerate(sums) if isinstance(v, torch.Tensor)]
    if on_device:  # one synchronisation for all, not one per tensor
        for i, v in zip(on_device, torch.stack([sums[i] for i in on_device]).tolist()):
            sums[i] = v
    return sums


def weights_stamp(owner: torch.nn.Module, state: dict[str, torch.Tensor]) -> tuple | None:
    """What ``state`` (``owner``'s tensors by name) holds now, for caches keyed on it: the process
    id, then each tensor's name, storage address, in-place version counter and bit-pattern sum
    (:func:`_bit_sums`, of a sample of its elements); None when a tensor has no version counter
    (an inference tensor) or no values (the meta device).

    In-place changes move the version counter, but changes made through ``.data`` or a numpy
    view of a tensor do not. The sums see those that change a sampled element (any change of a
    whole tensor; one of a few elements may be missed): a tensor whose sum changed since
    ``owner``'s last stamp at the same address and version gets its counter moved here
    (``torch.autograd.graph.increment_version``), so that every cache keyed on versions
    (:func:`weights_sha256`, folded weight norms, fast mode's packed weights, an entropy
    model's integer twin and tables) refreshes from then on. A tensor stamped for the first
    time gets its counter moved too: a cache filled before (a model built and used before any
    file was written) may hold values from before a ``.data`` change.
    """
    if any(t.is_inference() for t in state.values()):
        owner.__dict__.pop("_weights_stamp", None)
        return None
    if any(t.is_meta for t in state.values()):  # no values: the hash refuses it, nothing to cache
        return None
    sums = _bit_sums(list(state.values()))
    previous: dict[str, tuple[int, int, int]] = owner.__dict__.get("_weights_stamp") or {}
    for (key, t), total in zip(state.items(), sums):
        before = previous.get(key)
        if before is None or (before[:2] == (t.data_ptr(), t._version) and before[2] != total):
            torch.autograd.graph.increment_version(t)  # (possibly) changed behind the counter's back
    current = {key: (t.data_ptr(), t._version, total) for (key, t), total in zip(state.items(), sums)}
    owner.__dict__["_weights_stamp"] = current
    return (os.getpid(), *((key, *current[key]) for key in state))


def weights_sha256(model: torch.nn.Module) -> str:
    """Hex sha256 of a model's inference weights (``state_dict_sha256`` of its state dict).

    Every file written and read checks it, so the digest is kept on the model with its
    :func:`weights_stamp` (process id, and each tensor's storage address, version counter
    and bit-pattern sum): it is recomputed only when a tensor changed (in place, through
    ``.data`` or a numpy view, or by ``load_state_dict``), or in another process (a pickled
    model's copy has other addresses). Inference tensors (made under
    ``torch.inference_mode``) have no version counter, so a model holding one is hashed on
    every call, without a cache.
    """
    state = model.state_dict()
    stamp = weights_stamp(model, state)
    if stamp is None:
        model.__dict__.pop("_weights_sha256", None)
        return state_dict_sha256(state)
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
