"""Data-dependent initialisation (``opencodec.train.init``): every convolution's output is
standardised on the batch it was computed on, and the decoder reproduces the input's level."""

from __future__ import annotations

import pytest
import torch

from opencodec import EncodecConfig, EncodecModel
from opencodec.modules.conv import NormConv1d, NormConvTranspose1d
from opencodec.train.init import data_dependent_init


def _batch(seed: int = 0, channels: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    t = torch.arange(4800) / 24000
    tone = torch.sin(2 * torch.pi * 300 * t) * 0.2
    return (tone + 0.05 * torch.randn(4, channels, 4800, generator=g)).float()


@pytest.mark.parametrize("norm,causal", [("weight_norm", True), ("time_group_norm", False)])
def test_every_conv_standardised(norm, causal):
    torch.manual_seed(0)
    channels = 1 if causal else 2
    model = EncodecModel(EncodecConfig(name="t", channels=channels, n_filters=4, dimension=16,
                                       lstm=1, n_q=4, norm=norm, causal=causal,
                                       target_bandwidths=[1.5]))
    wav = _batch(channels=channels)
    before = model.decoder.model(model.encoder.model(wav)).std().item()
    data_dependent_init(model, wav)
    convs = [m for part in (model.encoder, model.decoder) for m in part.modules()
             if isinstance(m, (NormConv1d, NormConvTranspose1d))]
    outputs: list[torch.Tensor] = []
    handles = [c.register_forward_hook(lambda _m, _i, y: outputs.append(y.detach())) for c in convs]
    with torch.no_grad():
        y = model.decoder.model(model.encoder.model(wav))
    for h in handles:
        h.remove()
    assert len(outputs) == len(convs)
    for i, out in enumerate(outputs[:-1]):
        per_channel = out.transpose(0, 1).reshape(out.shape[1], -1)
        assert per_channel.mean(dim=1).abs().max() < 1e-3, i
        if isinstance(convs[i], NormConv1d) or norm == "time_group_norm":  # per-channel scale
            torch.testing.assert_close(per_channel.std(dim=1), torch.ones(out.shape[1]), atol=1e-3, rtol=0)
        else:  # one common factor for the transposed convs
            assert abs(out.std().item() - 1) < 0.05, i
    # the output has the input's level (the default init is far off: too quiet with weight
    # norm, unit variance, i.e. ~6x too loud here, with group norm)
    assert abs(y.std().item() / wav.std().item() - 1) < 1e-2
    assert abs(before / wav.std().item() - 1) > 0.3


def test_solver_option(tmp_path, monkeypatch):
    """``init: data_dependent`` changes a fresh run's weights; a resumed run keeps its own."""
    from opencodec.train import solver

    calls = []
    monkeypatch.setattr(solver, "_data_dependent_init", lambda cfg, model, device: calls.append(model))
    cfg = {"model": {"name": "t", "n_filters": 4, "dimension": 16, "lstm": 1, "n_q": 2,
                     "target_bandwidths": [1.5]}, "init": "data_dependent"}
    solver._maybe_data_dependent_init(cfg, EncodecModel(EncodecConfig.from_dict(cfg["model"])),
                                      torch.device("cpu"), tmp_path)
    assert len(calls) == 1
    (tmp_path / solver.CHECKPOINT).write_bytes(b"")  # a run to resume: no re-initialisation
    solver._maybe_data_dependent_init(cfg, EncodecModel(EncodecConfig.from_dict(cfg["model"])),
                                      torch.device("cpu"), tmp_path)
    assert len(calls) == 1


def test_solver_data_dependent_init_on_the_corpus(tmp_path):
    """Un-mocked, through ``train`` (no steps): ``init: data_dependent`` rescales a fresh
    model's convolutions on the corpus's training segments, so that the (unquantised)
    reconstruction of those segments has their level; the default init leaves the same seed's
    weights as built; with ``init_from`` the checkpoint's weights are kept as they are."""
    from opencodec.pretrained import save_model
    from opencodec.train.batches import _training_segments
    from opencodec.train.solver import train
    from test_train_solver import _config, _corpus  # tests/ is on sys.path (conftest.py)

    train_m, valid_m = _corpus(tmp_path / "data")
    cfg = _config(train_m, valid_m, steps=1)
    cfg["init_items"] = 4
    _, plain, _ = train(cfg, tmp_path / "default", max_steps=0, progress=False, return_models=True)
    _, ddi, _ = train({**cfg, "init": "data_dependent"}, tmp_path / "ddi", max_steps=0, progress=False,
                      return_models=True)
    a, b = plain.state_dict(), ddi.state_dict()
    changed = {k for k in a if not torch.equal(a[k], b[k])}
    assert changed and all(k.startswith(("encoder.", "decoder.")) for k in changed), changed
    assert any(k.startswith("encoder.") for k in changed) and any(k.startswith("decoder.") for k in changed)
    wav = _training_segments(cfg, ddi, 4)
    with torch.no_grad():
        levels = [m.decoder.model(m.encoder.model(wav)).std().item() / wav.std().item() for m in (plain, ddi)]
    # measured: 1.000 after the data-dependent init, 2.73 with the default init
    assert abs(levels[1] - 1) < 1e-2 and abs(levels[0] - 1) > 0.3, levels

    export = save_model(plain, tmp_path / "plain.safetensors")
    _, tuned, _ = train({**cfg, "init": "data_dependent", "init_from": str(export)}, tmp_path / "tuned",
                        max_steps=0, progress=False, return_models=True)
    for key, value in tuned.state_dict().items():
        assert torch.equal(value, a[key]), f"init_from: {key} re-initialised"
