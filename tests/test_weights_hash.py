"""weights_sha256: one fingerprint per set of inference weights, whatever the file kept."""

import re
from pathlib import Path

import torch

from opencodec import EncodecConfig, EncodecModel
from opencodec.pretrained import load_model, save_model
from opencodec.weights_hash import weights_sha256


def _small_model(seed: int) -> EncodecModel:
    torch.manual_seed(seed)
    return EncodecModel(EncodecConfig(name="hash_test", n_filters=4, dimension=16, n_q=4, lstm=1))


def test_storage_does_not_change_the_hash(tmp_path: Path) -> None:
    model = _small_model(0)
    full = load_model(save_model(model, tmp_path / "full.safetensors"))
    lean = load_model(save_model(model, tmp_path / "lean.safetensors", inference_only=True))
    assert weights_sha256(full) == weights_sha256(lean) == weights_sha256(model)


def test_any_weight_change_changes_the_hash() -> None:
    model = _small_model(0)
    before = weights_sha256(model)
    assert before != weights_sha256(_small_model(1))
    with torch.no_grad():
        model.quantizer.vq.layers[0]._codebook.embed[0, 0] += 1e-6
    assert weights_sha256(model) != before
    assert re.fullmatch(r"[0-9a-f]{64}", before), before  # lower-case hex sha256


def test_the_cached_hash_follows_a_reloaded_state() -> None:
    """The digest kept on the model is recomputed after load_state_dict brings other weights
    (an in-place copy: the tensors' version counters move), and equals a fresh computation."""
    from opencodec.weights_hash import state_dict_sha256

    model, other = _small_model(0), _small_model(1)
    first = weights_sha256(model)
    assert weights_sha256(model) == first  # served from the cache
    model.load_state_dict(other.state_dict())
    assert weights_sha256(model) == weights_sha256(other) == state_dict_sha256(model.state_dict())
    assert weights_sha256(model) != first
