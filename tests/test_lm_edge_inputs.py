"""Entropy coding used as a demanding user would (the lm walkthrough): the figures of the
entropy model's trainer and its saving report for inputs at the edges (a bandwidth listed twice,
validation of no item). Each test checks the values, not only that something ran."""

from __future__ import annotations

import json
import typing as tp
from pathlib import Path

import pytest
import torch

import test_train_lm  # tests/ is on sys.path (conftest.py)
from opencodec.train import lm_codes, lm_eval, lm_solver
from opencodec.train.lm_config import parse_settings

if tp.TYPE_CHECKING:
    from opencodec.entropy import EntropyLM

codec_setup = test_train_lm.codec_setup  # the tiny codec and its manifests (a module fixture)


@pytest.fixture(scope="module")
def tiny_lm(codec_setup: dict) -> torch.nn.Module:
    """An untrained entropy model of the tiny codec (4 codebooks of 1024), in eval mode."""
    s = parse_settings(test_train_lm._lm_cfg(1))
    torch.manual_seed(0)
    return lm_solver.build_lm(s, 4, 1024, 75).eval()


def test_a_bandwidth_listed_twice_is_measured_once(codec_setup: dict, tiny_lm: torch.nn.Module) -> None:
    """``train-lm report --bandwidths 1.5 1.5`` (or ``bandwidths: [1.5, 1.5]``) printed two rows
    whose file sizes were each twice the real ones (3.83 kbps for a 1.9 kbps file)."""
    codec = codec_setup["codec"]
    manifests = [str(codec_setup["valid"])]
    once = lm_eval.evaluate_saving(codec, tiny_lm, manifests, [1.5], progress=False, verify=False)
    twice = lm_eval.evaluate_saving(codec, tiny_lm, manifests, [1.5, 3.0, 1.5], progress=False, verify=False)
    assert [e["kbps"] for e in twice["bandwidths"]] == [1.5, 3.0]
    (one,), (again, _) = once["bandwidths"], twice["bandwidths"]
    assert (again["plain_bytes"], again["lm_bytes"]) == (one["plain_bytes"], one["lm_bytes"])
    assert again["plain_kbps"] == pytest.approx(one["plain_kbps"])
    assert again["ideal_bits_per_code"] == pytest.approx(one["ideal_bits_per_code"])
    # the sizes are those of the one file's .ecdc at 1.5 kbps
    from opencodec.audio import read_audio
    from opencodec.compress import compress

    row = json.loads(Path(codec_setup["valid"]).read_text().splitlines()[0])
    wav, _ = read_audio(Path(codec_setup["folder"]) / row["path"])
    assert one["plain_bytes"] == len(compress(codec, wav, bandwidth=1.5))


def test_validation_of_no_item_is_refused_not_zero_bits(tiny_lm: torch.nn.Module) -> None:
    """``validate(..., max_items=0)`` said 0 bits per code: a figure no model reaches."""
    seq = torch.randint(0, 1024, (4, 12), generator=torch.Generator().manual_seed(0))
    codes = lm_codes.CodeSet.from_sequences([seq], ["seq"])
    with pytest.raises(ValueError, match="no held-out code to score: 0 of the 1 sequences used"):
        lm_eval.validate(tiny_lm, codes, [1.5], [2], 75, max_items=0)
    empty = lm_codes.CodeSet.from_sequences([torch.zeros(4, 0, dtype=torch.long)], ["empty"])
    with pytest.raises(ValueError, match="no held-out code to score: 1 of the 1 sequences used, none with a frame"):
        lm_eval.validate(tiny_lm, empty, [1.5], [2], 75)
    assert tiny_lm.training is False  # refused before it was switched to eval and back to train
    got = lm_eval.validate(tiny_lm, codes, [1.5], [2], 75, max_items=1)
    assert 5 < got["bits_per_code/1.5kbps"] < 15  # about log2(1024) for an untrained model
    tiny_lm.eval()


def test_valid_max_items_zero_trains_without_validation(tmp_path: Path) -> None:
    """``valid.max_items: 0`` logged ``valid/bits_per_code`` 0.0 at every validation and exported
    the first one after step 0 as ``lm_best.safetensors`` (score 0.0, never beaten)."""
    cfg = test_train_lm._lm_cfg(4, valid={"max_items": 0})
    cfg["log"].update(valid_every=2, checkpoint_every=2)
    run = lm_solver.train(cfg, tmp_path / "run", progress=False, data=test_train_lm._synthetic_data())
    lines = test_train_lm._metrics(run)
    assert not [r for r in lines if any(k.startswith("valid/") for k in r)]
    assert [r["step"] for r in lines if "train/bits_per_code" in r] == [1, 2, 3, 4]
    assert (run / lm_solver.EXPORT).is_file() and not (run / lm_solver.BEST_EXPORT).exists()
    assert torch.load(run / "checkpoint.pt", weights_only=True)["best"] is None


# -- entropy models with NaN, infinite or huge weights -------------------------------------------
def _small_lm(**changes: float) -> "EntropyLM":
    """A small random entropy model (2 codebooks of 16) with ``changes`` (``"linears.1.bias"``:
    value) written into element 3 of those tensors."""
    from opencodec.entropy import EntropyLM

    torch.manual_seed(0)
    lm = EntropyLM(n_q=2, card=16, dim=16, num_layers=1, hidden_scale=1.0).eval()
    params = dict(lm.named_parameters())
    with torch.no_grad():
        for key, value in changes.items():
            params[key].view(-1)[3] = value
    return lm


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_an_entropy_model_file_with_a_non_finite_weight_is_refused_when_loaded(tmp_path: Path,
                                                                              value: float) -> None:
    """A NaN bias passed the loader: compressing then failed in the official format with
    "Invalid format specifier '0-39b' for object of type 'int'" (deep in the coder)."""
    from safetensors.torch import save_file

    from opencodec.errors import ModelLoadError
    from opencodec.lm_loading import load_lm_model

    path = tmp_path / "lm.safetensors"
    save_file({k: v.contiguous() for k, v in _small_lm(**{"linears.0.bias": value}).state_dict().items()}, path)
    with pytest.raises(ModelLoadError) as exc:
        load_lm_model(path)
    assert str(exc.value) == (f"{path}: entropy model tensor linears.0.bias has non-finite values (NaN or "
                              f"infinity): the file is damaged, or its training diverged")
    save_file({k: v.contiguous() for k, v in _small_lm().state_dict().items()}, path)
    assert load_lm_model(path).card == 16  # the same file with finite weights loads


@pytest.mark.parametrize("key", ["linears.1.bias", "emb.0.weight", "transformer.norm_in.bias"])
@pytest.mark.parametrize("value, expected", [
    (float("nan"), "entropy model tensor {name} has non-finite values"),
    (float("-inf"), "entropy model tensor {name} has non-finite values"),
    (1e30, "entropy model tensor {name}: values beyond +-256 do not fit the fixed-point range"),
])
def test_the_integer_model_refuses_non_finite_and_huge_activation_tensors(key: str, value: float,
                                                                        expected: str) -> None:
    """Biases, embeddings and LayerNorm betas with NaN or 1e30 were converted to int64 as an
    arbitrary value (-2**63 here; machine dependent) that passed the range check: the
    deterministic format then coded with a model another machine could compute otherwise."""
    from opencodec.entropy.fixed import FixedLM
    from opencodec.errors import ModelLoadError

    name = {"linears.1.bias": "linears.bias", "emb.0.weight": "emb"}.get(key, key)  # as FixedLM names them
    with pytest.raises(ModelLoadError) as exc:
        FixedLM.from_float(_small_lm(**{key: value}))
    assert str(exc.value) == expected.format(name=name)
    with pytest.raises(ModelLoadError, match="values beyond"):
        FixedLM.from_float(_small_lm(**{key: 300.0}))  # as before: just out of range
    FixedLM.from_float(_small_lm(**{key: 255.0}))  # within the range: converts


def test_the_official_coder_names_non_finite_probabilities() -> None:
    from opencodec.entropy.arithmetic import encode_segment_with_lm

    lm = _small_lm(**{"linears.1.bias": float("nan")})
    with pytest.raises(ValueError) as exc:
        encode_segment_with_lm(lm, torch.zeros(2, 5, dtype=torch.long))
    assert str(exc.value) == ("the entropy model gives non-finite probabilities at frame 0, codebook 1 "
                              "(NaN or infinite weights?)")
    assert encode_segment_with_lm(_small_lm(), torch.zeros(2, 5, dtype=torch.long))  # finite: codes


# -- held-out bits of a long file in bounded memory ----------------------------------------------
def test_sequence_bits_of_a_long_sequence_runs_in_bounded_passes(monkeypatch: pytest.MonkeyPatch) -> None:
    """``sequence_bits`` ran a whole file in one forward pass, whose attention grows with the
    square of its frames (the bundled model: +0.65 GB at 80 s, +2 GB at 160 s; a 10-minute file
    in ``train-lm report`` or validation about 20 GB). It now runs passes of at most
    ``SEQUENCE_CHUNK`` frames, carrying the state, with the same bits as the coder's steps."""
    lm = _small_lm()
    F = 1024 * 2 + 300  # SEQUENCE_CHUNK is 1024
    codes = torch.randint(0, 16, (2, F), generator=torch.Generator().manual_seed(1))
    lengths: list[int] = []
    forward = type(lm).forward

    def recording(self: torch.nn.Module, indices: torch.Tensor, state: object = None) -> object:
        lengths.append(indices.shape[-1])
        return forward(self, indices, state)

    monkeypatch.setattr(type(lm), "forward", recording)
    got = lm_eval.sequence_bits(lm, codes)
    monkeypatch.undo()
    assert lengths == [1024, 1024, 300]
    assert got.shape == (2, F) and got.dtype == torch.float64
    # the coder's own steps (frame by frame, fresh state) give the same bits
    want, state, inp = [], None, torch.zeros(2, dtype=torch.long)
    for t in range(F):
        probs, state = lm.step(inp, state)
        want.append(-torch.log2(probs[torch.arange(2), codes[:, t]].double()))
        inp = codes[:, t] + 1
    assert torch.allclose(got, torch.stack(want, dim=1), rtol=1e-5, atol=1e-6)
    assert lm_eval.sequence_bits(lm, codes[:, :0]).shape == (2, 0)
    assert lm_eval.SEQUENCE_CHUNK == 1024


@pytest.mark.parametrize("deterministic", [False, True], ids=["official-format", "deterministic"])
def test_the_long_file_path_keeps_codes_of_65536_entry_codebooks(tmp_path: Path, deterministic: bool) -> None:
    """The long-file path kept entropy-coded codes as int16, so codes above 32767 of a 16-bit
    codebook wrapped negative: such a file over a minute could be neither written ("codes must
    be in [0, 65536)") nor read back. The streamed file equals the whole-file one byte for byte,
    and decodes to the same audio."""
    import numpy as np
    import soundfile as sf

    from opencodec import EncodecConfig, EncodecModel
    from opencodec.compress import compress, decompress
    from opencodec.entropy import EntropyLM
    from opencodec.longform import compress_file_streaming, decompress_file_streaming

    torch.manual_seed(0)
    model = EncodecModel(EncodecConfig(name="bins64k", n_filters=2, dimension=8, ratios=[8, 5, 4, 2], lstm=1,
                                       n_q=2, bins=65536, target_bandwidths=[2.4])).eval()
    for layer in model.quantizer.vq.layers:  # only entries past 40000 are near any latent
        embed = 0.1 * torch.randn_like(layer._codebook.embed)
        embed[:40000] = 1e3
        layer._codebook.embed.data = embed
    lm = EntropyLM(n_q=2, card=65536, dim=8, num_layers=1, hidden_scale=1.0, past_context=50).eval()
    x = (0.3 * np.random.default_rng(0).standard_normal(4800)).astype(np.float32)
    sf.write(tmp_path / "in.wav", x, 24000)
    wav = torch.from_numpy(x)[None]
    with torch.no_grad():
        assert int(model.encode(wav[None])[0].codes.min()) >= 40000
    whole = compress(model, wav, lm=lm, deterministic=deterministic)
    compress_file_streaming(model, tmp_path / "in.wav", tmp_path / "long.ecdc", lm=lm, deterministic=deterministic)
    assert (tmp_path / "long.ecdc").read_bytes() == whole
    decompress_file_streaming(tmp_path / "long.ecdc", tmp_path / "out.wav", model, lm=lm)
    expected = decompress(whole, model, lm=lm)[0].clamp(-1, 1).numpy()[0]
    np.testing.assert_allclose(sf.read(tmp_path / "out.wav", dtype="float32")[0], expected, atol=1e-4)
