"""The kernel recorder of benchmarks/codec_floor.py: it must see the pinned kernels of the
bit-exact path, and replaying them must recompute the same values (else its timing would
be of some other work)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import torch

from opencodec import EncodecConfig, EncodecModel

_PATH = Path(__file__).resolve().parents[1] / "benchmarks" / "codec_floor.py"


def _load_floor():
    spec = importlib.util.spec_from_file_location("codec_floor", _PATH)
    module = importlib.util.module_from_spec(spec)
    sys.modules["codec_floor"] = module
    spec.loader.exec_module(module)
    return module


def test_recorder_keeps_the_pinned_kernels_and_replays_them():
    floor = _load_floor()
    torch.manual_seed(0)
    model = EncodecModel(EncodecConfig.encodec_24khz()).eval()
    model.set_target_bandwidth(6.0)
    x = torch.randn(1, 1, 24000, generator=torch.Generator().manual_seed(1)) * 0.1
    with torch.inference_mode():
        frames = model.encode(x)
        enc_calls = floor.record(lambda: model.encode(x))
        dec_calls = floor.record(lambda: model.decode(frames))
        names = floor.kernel_summary(enc_calls)
        assert "lstm x1" in names and "conv1d" in names and "matmul x8" in names
        dec_names = floor.kernel_summary(dec_calls)
        assert "lstm x1" in dec_names and "conv_transpose2d x4" in dec_names
        # Recorded inputs are snapshots: running a recorded call again gives its output then.
        func, args, kwargs = next(c for c in dec_calls if c[0].overloadpacket.__name__ == "conv_transpose2d")
        first = func(*args, **kwargs)
        floor.replay(dec_calls)
        assert torch.equal(func(*args, **kwargs), first)
        assert first.abs().sum() > 0
