"""Training parts pinned by value: the loss balancer's shares and refusals, the slaney mel
filters' unit area, the entropy-model trainer's code set (int32 past 32767) and its code
cache key and read-back, the training forward pass's refusal of audio that is not float32."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from opencodec import EncodecConfig, EncodecModel
from opencodec.errors import InvalidAudioError


# --------------------------------------------------------------------------- train: balancer
def test_balancer_shares_are_over_the_losses_given_not_every_weight() -> None:
    """A step that passes only some of the weighted losses (``adv``/``feat`` before the
    discriminator starts) balances them to the full ``total_norm``: ``lambda_i`` over the sum
    of the weights of the losses given."""
    from opencodec.train import Balancer

    out = torch.randn(2, 1, 8, requires_grad=True)
    direction = torch.randn(2, 1, 8)
    losses = {"l1": (out * direction).sum(), "mel": (out * 3 * direction).sum()}
    bal = Balancer({"l1": 1.0, "mel": 3.0, "adv": 4.0}, total_norm=2.0)
    grad, stats = bal.balanced_gradient(losses, out)
    assert grad is not None
    # parallel gradients: the norms add up; first step, so each EMA is its raw norm
    assert float(stats["total_norm"]) == pytest.approx(2.0, rel=1e-6)
    assert float(stats["share/l1"]) == pytest.approx(0.25, rel=1e-6)


# --------------------------------------------------------------------------- train: lm_codes
def test_code_set_keeps_code_32768_exactly() -> None:
    """Codes of a codebook over 32768 bins are stored as int32: 32768 does not wrap in int16."""
    from opencodec.train.lm_codes import CodeSet

    codes = CodeSet.from_sequences([torch.tensor([[5, 32768]]), torch.tensor([[7]])], ["a", "b"])
    assert codes.sequence(0).tolist() == [[5, 32768]]
    assert codes.sequence(1).tolist() == [[7]]
    small = CodeSet.from_sequences([torch.tensor([[32767]])], ["a"])
    assert small.codes.dtype == torch.int16 and small.sequence(0).tolist() == [[32767]]


def test_code_cache_key_follows_file_sizes_and_codebooks(tmp_path: Path) -> None:
    """The cached codes are reused only for the same codec, rows, file sizes and codebooks:
    a file rewritten with another size, or another codebook count, is another key."""
    from opencodec.train.lm_codes import _cache_key

    audio = tmp_path / "a.wav"
    audio.write_bytes(b"\0" * 10)
    rows = [{"path": str(audio)}]
    key = _cache_key("abc", rows, 8)
    assert _cache_key("abc", rows, 8) == key
    assert _cache_key("abd", rows, 8) != key
    assert _cache_key("abc", rows, 4) != key
    audio.write_bytes(b"\0" * 11)
    assert _cache_key("abc", rows, 8) != key


# --------------------------------------------------------------------------- train.losses
def test_slaney_mel_filters_have_unit_area() -> None:
    """``norm="slaney"``: each triangle divided by half its width in Hz, so its area (sum over
    bins times the bin spacing) is 1."""
    from opencodec.train.losses import mel_filterbank

    fb = mel_filterbank(16000, 4096, 8, norm="slaney").double()
    areas = fb.sum(dim=1) * 16000 / 4096
    assert torch.allclose(areas, torch.ones(8, dtype=torch.float64), atol=1e-4), areas


# --------------------------------------------------------------------------- train: balancer (names)
def test_balancer_refuses_a_loss_without_a_weight() -> None:
    from opencodec.train import Balancer

    out = torch.randn(1, 1, 4, requires_grad=True)
    with pytest.raises(KeyError, match="loss 'adv' has no weight in the balancer"):
        Balancer({"l1": 1.0}).balanced_gradient({"l1": out.sum(), "adv": out.sum()}, out)


def test_the_code_cache_is_read_back_only_under_its_key(tmp_path: Path) -> None:
    from opencodec.train.lm_codes import CodeSet, _load_codes, _save_codes

    codes = CodeSet.from_sequences([torch.tensor([[1, 2], [3, 4]])], ["a.wav"])
    path = tmp_path / "codes.safetensors"
    _save_codes(path, codes, {"key": "k1"})
    back = _load_codes(path, "k1")
    assert back is not None and back.sequence(0).tolist() == [[1, 2], [3, 4]] and back.names == ["a.wav"]
    assert _load_codes(path, "k2") is None


# -- 5. train_forward's dtype ------------------------------------------------------------------------------------
def test_train_forward_names_a_wrong_dtype() -> None:
    torch.manual_seed(0)
    model = EncodecModel(EncodecConfig(name="tiny", n_filters=4, dimension=16, n_q=4, ratios=[8, 5, 4, 2], lstm=1,
                                       target_bandwidths=[1.5, 3.0]))
    wav = 0.1 * torch.randn(1, 1, 960, generator=torch.Generator().manual_seed(1))
    with pytest.raises(InvalidAudioError, match=r"^expected audio as a float32 torch\.Tensor \[B, C, T\], got "
                                                r".*float64.*\.float\(\)"):
        model.train_forward(wav.double())
    with pytest.raises(InvalidAudioError, match=r"float32 torch\.Tensor \[B, C, T\], got .*float16"):
        model.train_forward(wav.half())
    out, q = model.train_forward(wav)
    assert out.shape == wav.shape and out.dtype == torch.float32 and q.codes.shape[-1] == 3
