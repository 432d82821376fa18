"""Access to the official `encodec` package (the reference), with random weights.

The package imports torchaudio only for file I/O and resampling; torchaudio does not
import here, so a stand-in module is registered first. Its decompress rebuilds models
from the internet, so `patched_official_models` swaps in our random-weight models.
"""

from __future__ import annotations

import contextlib
import math
import sys
import types
import typing as tp
from pathlib import Path

import torch


def _install_torchaudio_stub() -> None:
    if "torchaudio" in sys.modules:
        return
    stub = types.ModuleType("torchaudio")

    def _unavailable(*args: tp.Any, **kwargs: tp.Any) -> tp.NoReturn:
        raise RuntimeError("torchaudio is not available in the test environment")

    stub.load = _unavailable  # type: ignore[attr-defined]
    stub.save = _unavailable  # type: ignore[attr-defined]
    transforms = types.ModuleType("torchaudio.transforms")
    transforms.Resample = _unavailable  # type: ignore[attr-defined]
    stub.transforms = transforms  # type: ignore[attr-defined]
    sys.modules["torchaudio"] = stub
    sys.modules["torchaudio.transforms"] = transforms


_install_torchaudio_stub()

import encodec  # noqa: E402  (needs the stub)
import encodec.compress  # noqa: E402,F401

official_compress_module = sys.modules["encodec.compress"]
EncodecModelRef = encodec.EncodecModel


def random_codebooks(model: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Give every codebook of ``model`` (official or ours: same attribute names) entries
    that make codes follow the input, marked initialised; returns the model. The entries
    are drawn near the model's own encoder outputs (:func:`fitted_codebooks`): N(0, 0.5^2)
    entries, as this once was, gave every input the same codes with a random encoder."""
    return fitted_codebooks(model, seed)


def fitted_codebooks(model: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Give every codebook of ``model`` (official or ours) entries drawn from its own
    encoder's outputs, layer after layer from the residuals (k-means' initialisation,
    plus noise), marked initialised; returns the model.

    A random encoder's output is almost a constant vector per channel (its variation over
    time is ~1/20 of that), so N(0, 0.5^2) entries (:func:`random_codebooks`) give the same
    code for every input; entries drawn near its outputs make codes follow the input."""
    gen = torch.Generator().manual_seed(seed)
    rate, channels = int(model.sample_rate), int(model.channels)
    n = rate // 4
    t = torch.arange(n) / rate
    clips = []
    for i, level in enumerate((0.02, 0.05, 0.1, 0.2, 0.4, 0.8)):
        tone = torch.sin(2 * math.pi * 110 * (i + 1) * t)
        clips.append(level * (0.7 * tone + 0.3 * torch.randn(channels, n, generator=gen)))
    x = torch.stack(clips)  # [6, C, n]
    if model.normalize:  # what the encoder sees: unit-RMS segments
        x = x / x.mean(dim=1, keepdim=True).pow(2).mean(dim=2, keepdim=True).sqrt()
    with torch.no_grad():
        emb = model.encoder(x)  # [6, D, F]
        residual = emb.transpose(1, 2).reshape(-1, emb.shape[1])
        for layer in model.quantizer.vq.layers:
            cb = layer._codebook
            bins = cb.embed.shape[0]
            picks = torch.randint(0, residual.shape[0], (bins,), generator=gen)
            spread = residual.std(dim=0, keepdim=True)
            embed = residual[picks] + spread * torch.randn(bins, residual.shape[1], generator=gen)
            cb.embed.copy_(embed)
            cb.embed_avg.copy_(cb.embed)
            cb.cluster_size.fill_(1.0)
            cb.inited.fill_(1.0)
            residual = residual - embed[torch.cdist(residual, embed).argmin(dim=1)]
    return model


def make_official_model(name: str, seed: int = 0) -> "encodec.EncodecModel":
    """The official architecture `name` with random weights and codebooks drawn from its
    encoder's outputs (:func:`fitted_codebooks`: codes that depend on the input)."""
    torch.manual_seed(seed)
    if name == "encodec_24khz":
        model = EncodecModelRef.encodec_model_24khz(pretrained=False)
    elif name == "encodec_48khz":
        model = EncodecModelRef.encodec_model_48khz(pretrained=False)
    else:
        raise ValueError(name)
    fitted_codebooks(model, seed + 1)
    model.name = name
    model.eval()
    return model


def ours_from(ref: "encodec.EncodecModel", name: str) -> tp.Any:
    """An opencodec ``EncodecModel`` of the official architecture ``name`` carrying ``ref``'s weights
    (in eval mode, as ``EncodecModel`` builds it: call ``.train()`` to compare training mode), declared
    official (:func:`opencodec.identity.declare_official`) so that its files carry the
    official package's headers, as the byte comparisons with the reference need."""
    from opencodec import EncodecConfig, EncodecModel
    from opencodec.identity import declare_official

    model = EncodecModel(getattr(EncodecConfig, name)())
    model.load_state_dict(ref.state_dict())
    return declare_official(model)


def benchmark_pair(name: str, bandwidth: float, seconds: float) -> tuple:
    """(official model, opencodec model with the same weights, input [1, C, T]) for the
    benchmarks: the official architecture ``name`` with random weights, both set to
    ``bandwidth`` kbps, and ``seconds`` of seeded noise at 0.1 amplitude."""
    ref = make_official_model(name)
    ours = ours_from(ref, name)
    config = ours.config
    ref.set_target_bandwidth(bandwidth)
    ours.set_target_bandwidth(bandwidth)
    x = torch.randn(1, config.channels, int(seconds * config.sample_rate),
                    generator=torch.Generator().manual_seed(0)) * 0.1
    return ref, ours, x


def save_official_checkpoint(model: "encodec.EncodecModel", path: Path) -> Path:
    """Save the state dict as the official `.th` files are saved (plain torch.save)."""
    torch.save(model.state_dict(), path)
    return path


@contextlib.contextmanager
def patched_official_models(models: dict[str, "encodec.EncodecModel"]) -> tp.Iterator[None]:
    """Make the official `decompress` use `models` instead of downloading weights."""
    saved = dict(official_compress_module.MODELS)
    for name, model in models.items():
        official_compress_module.MODELS[name] = (lambda m=model: m)
    try:
        yield
    finally:
        official_compress_module.MODELS.clear()
        official_compress_module.MODELS.update(saved)


def official_lm_segment_bytes(lm: "encodec.model.LMModel", codes: torch.Tensor) -> bytes:
    """What the official writer (``compress_to_file(..., use_lm=True)``) codes for one
    segment's codes ``[K, F]`` with the official entropy model ``lm``: its loop, verbatim in
    behaviour (frame by frame, one ``build_stable_quantized_cdf`` per codebook)."""
    import io

    from encodec.quantization.ac import ArithmeticCoder, build_stable_quantized_cdf

    fo = io.BytesIO()
    coder = ArithmeticCoder(fo)
    states, offset = None, 0
    input_ = torch.zeros(1, codes.shape[0], 1, dtype=torch.long)
    with torch.no_grad():
        for t in range(codes.shape[1]):
            probas, states, offset = lm(input_, states, offset)
            input_ = 1 + codes[None, :, t:t + 1]
            for k, value in enumerate(codes[:, t].tolist()):
                coder.push(value, build_stable_quantized_cdf(probas[0, :, k, 0], 24, check=False))
    coder.flush()
    return fo.getvalue()
