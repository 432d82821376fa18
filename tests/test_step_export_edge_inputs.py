"""Edge inputs of the streaming and step APIs and of ONNX export (a demanding user's walk).

* A caller that reuses one buffer for every push (an audio callback's array, a preallocated
  frame) gets the codes and audio of pushing fresh tensors: the streams copy what they keep
  past a push (the fast streaming encoder and decoder, the exact encoder's first samples and
  the multistream warm-up frames used to keep views of the caller's tensors).
"""

from __future__ import annotations

import typing as tp
from pathlib import Path

import pytest
import torch

from opencodec.multistream import MultiStreamDecoder, MultiStreamEncoder
from opencodec.pretrained import load_model
from opencodec.streaming import StreamingDecoder, StreamingEncoder

from stream_models import tiny_stream_model

HOP = 320


@pytest.fixture(scope="module")
def tiny() -> torch.nn.Module:
    return tiny_stream_model("tiny_step_edges", 0)


@pytest.fixture(scope="module")
def bundled() -> torch.nn.Module:
    model = load_model("opencodec_24khz")
    model.set_target_bandwidth(6.0)
    return model


def _signal(frames: int, channels: int = 1, seed: int = 0) -> torch.Tensor:
    """[1, C, frames * HOP + 17] of noise at 0.1 with a loud start (a reused buffer's stale
    first samples then change the codes)."""
    gen = torch.Generator().manual_seed(seed)
    x = 0.1 * torch.randn(1, channels, frames * HOP + 17, generator=gen)
    x[..., :HOP] *= 5
    return x


def _pieces(x: torch.Tensor, size: int) -> tp.Iterator[torch.Tensor]:
    for pos in range(0, x.shape[-1], size):
        yield x[..., pos:pos + size]


def _through_reused_buffer(push: tp.Callable[[torch.Tensor], torch.Tensor], pieces: tp.Iterable[torch.Tensor],
                           junk: float) -> list[torch.Tensor]:
    """``push`` every piece from ONE buffer, overwritten with ``junk`` after each push."""
    outs = []
    buffer: torch.Tensor | None = None
    for piece in pieces:
        if buffer is None:
            buffer = torch.empty_like(piece)
        view = buffer[..., :piece.shape[-1]]
        view.copy_(piece)
        outs.append(push(view))
        buffer.fill_(junk)
    return outs


@pytest.mark.parametrize("exact", [True, False])
@pytest.mark.parametrize("size", [3, HOP, 1000])
def test_streaming_encoder_copies_what_it_keeps_of_a_reused_buffer(bundled: torch.nn.Module, exact: bool,
                                                                   size: int) -> None:
    x = _signal(9)
    fresh = StreamingEncoder(bundled, exact=exact)
    want = torch.cat([fresh.push(p.clone()) for p in _pieces(x, size)] + [fresh.flush()], dim=-1)
    enc = StreamingEncoder(bundled, exact=exact)
    got = torch.cat(_through_reused_buffer(enc.push, _pieces(x, size), 0.5) + [enc.flush()], dim=-1)
    assert want.shape == (1, 8, 10)
    assert torch.equal(got, want)


@pytest.mark.parametrize("exact", [True, False])
def test_streaming_decoder_copies_what_it_keeps_of_a_reused_buffer(tiny: torch.nn.Module, exact: bool) -> None:
    codes = tiny.encode(_signal(10))[0].codes
    fresh = StreamingDecoder(tiny, exact=exact)
    want = torch.cat([fresh.push(codes[..., t:t + 1].clone()) for t in range(11)] + [fresh.flush()], dim=-1)
    dec = StreamingDecoder(tiny, exact=exact)
    pieces = [codes[..., t:t + 1] for t in range(11)]
    got = torch.cat(_through_reused_buffer(dec.push, pieces, 3) + [dec.flush()], dim=-1)
    assert want.shape == (1, 1, 11 * HOP)
    assert torch.equal(got, want)


@pytest.mark.parametrize("exact", [True, False])
def test_multistream_encoder_copies_warmup_frames_of_a_reused_buffer(tiny: torch.nn.Module, exact: bool) -> None:
    x = _signal(10)[0, :, :10 * HOP]
    want = tiny.encode(x[None])[0].codes[0]
    enc = MultiStreamEncoder(tiny, exact=exact)
    sid = enc.open()
    outs = _through_reused_buffer(lambda frame: enc.push({sid: frame})[sid], _pieces(x, HOP), 0.5)
    got = torch.cat(outs + [enc.close(sid)], dim=-1)
    assert got.shape == want.shape == (4, 10)
    assert torch.equal(got, want)


@pytest.mark.parametrize("exact", [True, False])
def test_multistream_decoder_copies_warmup_frames_of_a_reused_buffer(tiny: torch.nn.Module, exact: bool) -> None:
    codes = tiny.encode(_signal(10))[0].codes[0]
    fresh = MultiStreamDecoder(tiny, exact=exact)
    a = fresh.open()
    want = torch.cat([fresh.push({a: codes[:, t:t + 1].clone()})[a] for t in range(11)] + [fresh.close(a)], -1)
    dec = MultiStreamDecoder(tiny, exact=exact)
    sid = dec.open()
    pieces = [codes[:, t:t + 1] for t in range(11)]
    got = torch.cat(_through_reused_buffer(lambda c: dec.push({sid: c})[sid], pieces, 3) + [dec.close(sid)], -1)
    assert want.shape == (1, 11 * HOP)
    assert torch.equal(got, want)


# -- opencodec.step: inputs checked before the network runs --------------------------------------

@pytest.mark.parametrize("exact", [True, False])
@pytest.mark.parametrize("bad, message", [
    (torch.zeros(1, 2, HOP), r"expected audio \[B, 1, n\], got \(1, 2, 320\)"),
    (torch.zeros(1, HOP), r"expected audio \[B, 1, n\], got \(1, 320\)"),
    (torch.zeros(1, 1, HOP, dtype=torch.float64), "float32 torch.Tensor .* got float64"),
    (torch.ones(1, 1, HOP, dtype=torch.int16), "got int16; integer PCM must be scaled"),
    (torch.full((1, 1, HOP), float("nan")), r"audio contains 320 non-finite sample\(s\)"),
], ids=["two_channels", "no_batch_axis", "float64", "int16", "nan"])
def test_encoder_step_checks_the_audio_of_every_call(tiny: torch.nn.Module, exact: bool, bad: torch.Tensor,
                                                      message: str) -> None:
    """``forward`` and ``finish`` check the audio as ``start`` does (before, a wrong channel
    count failed deep inside torch.cat, integer samples were taken as floats and a NaN frame
    gave codes and a NaN state that spoiled every later frame, all silently)."""
    from opencodec.errors import InvalidAudioError
    from opencodec.step import EncoderStep

    enc = EncoderStep(tiny, exact=exact)
    with torch.inference_mode():
        codes, state = enc.start(_signal(7)[..., :7 * HOP])
        with pytest.raises(InvalidAudioError, match=message):
            enc(bad, *state)
        with pytest.raises(InvalidAudioError, match=message.replace("320", "10")):
            enc.finish(bad[..., :10], state)
        start = bad.repeat(*([1] * (bad.dim() - 1)), 7)
        with pytest.raises(InvalidAudioError, match=message.replace("320", "2240")):
            enc.start(start)
    assert codes.shape == (1, 4, 7)


@pytest.mark.parametrize("exact", [True, False])
def test_steps_name_a_state_of_another_batch_or_shape(tiny: torch.nn.Module, exact: bool) -> None:
    """A state of another batch size, a cut one or one of the other mode (exact and fast lay
    their state out differently) is refused naming the tensor, not by a RuntimeError from
    inside a convolution or the LSTM."""
    from opencodec.step import DecoderStep, EncoderStep

    enc, dec = EncoderStep(tiny, exact=exact), DecoderStep(tiny, exact=exact)
    other = EncoderStep(tiny, exact=not exact)
    x = _signal(8)[..., :8 * HOP]
    with torch.inference_mode():
        codes, state = enc.start(x[..., :7 * HOP])
        _, other_state = other.start(x[..., :7 * HOP])
        _, dstate = dec.start(codes)
        first = enc.state_specs()[0]
        with pytest.raises(ValueError, match=rf"state tensor 0 \({first.name}\): expected shape \(2, "):
            enc(x[..., 7 * HOP:].expand(2, -1, -1), *state)
        with pytest.raises(ValueError, match=rf"state tensor 0 \({first.name}\): expected shape \(2, "):
            enc.finish(x[..., 7 * HOP:7 * HOP + 5].expand(2, -1, -1), state)
        with pytest.raises(ValueError, match=r"state tensor [01] \(encoder\.[0-9a-z.]+\): expected shape \(1, "):
            enc(x[..., 7 * HOP:], *other_state)
        cut = [s[:, :1] for s in dstate]
        with pytest.raises(ValueError, match=r"state tensor 0 \(decoder\.0\): expected shape \(1, "):
            dec(codes[..., :1], *cut)
        with pytest.raises(ValueError, match=r"state tensor 0 \(decoder\.0\): expected shape \(3, "):
            dec(codes[..., :1].expand(3, -1, -1), *dstate)
        out, *_ = enc(x[..., 7 * HOP:], *state)  # the right state still works
    assert out.shape == (1, 4, 1)


# -- export_onnx: the model given ---------------------------------------------------------------

def test_export_onnx_leaves_a_training_model_training(tmp_path: Path) -> None:
    """A training loop that exports a checkpoint goes on training: before, ``export_onnx``
    left the model in eval mode (its quantiser no longer updating its codebooks), silently."""
    from opencodec.export.onnx import export_onnx

    model = tiny_stream_model("tiny_step_edges", 0).train()
    meta = export_onnx(model, tmp_path / "onnx")
    assert model.training and all(m.training for m in model.modules())
    assert meta["num_codebooks"] == 4 and (tmp_path / "onnx" / "encoder_step.onnx").is_file()
    model.eval()
    export_onnx(model, tmp_path / "onnx2")
    assert not model.training


@pytest.mark.parametrize("dtype", [torch.float64, torch.float16])
def test_export_onnx_refuses_a_model_that_is_not_float32(tmp_path: Path, dtype: torch.dtype) -> None:
    """One line naming the dtype, before any work (before, a RuntimeError from inside the
    first convolution: "Input type (float) and bias type (double) should be the same")."""
    from opencodec.export.onnx import export_onnx

    model = tiny_stream_model("tiny_step_edges", 0).to(dtype)
    name = str(dtype).replace("torch.", "")
    with pytest.raises(ValueError, match=rf"^export_onnx: the model's weights are {name}; .* model\.float\(\)$"):
        export_onnx(model, tmp_path / "onnx")
    assert not (tmp_path / "onnx").exists() and list(tmp_path.iterdir()) == []


def test_export_onnx_names_a_model_that_is_not_one(tmp_path: Path) -> None:
    from opencodec.export.onnx import export_onnx

    with pytest.raises(TypeError, match="^export_onnx: model must be an EncodecModel, got str 'opencodec_24khz'"):
        export_onnx("opencodec_24khz", tmp_path / "onnx")  # type: ignore[arg-type]
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("exact", [True, False])
def test_a_batch_of_no_streams_streams_in_both_modes(tiny: torch.nn.Module, exact: bool) -> None:
    """A batch of 0 (an empty stack of streams) gives empty outputs of the right shapes in
    fast mode as in exact mode (before, fast mode raised "cannot reshape tensor of 0
    elements" from inside its matrix products)."""
    enc, dec = StreamingEncoder(tiny, exact=exact), StreamingDecoder(tiny, exact=exact)
    shapes = [tuple(enc.push(torch.zeros(0, 1, n)).shape) for n in (8 * HOP, HOP, 2 * HOP + 5)]
    shapes.append(tuple(enc.flush().shape))
    assert shapes == [(0, 4, 8), (0, 4, 1), (0, 4, 2), (0, 4, 1)]
    codes = torch.zeros(0, 4, 1, dtype=torch.long)
    audio = [tuple(dec.push(codes.expand(0, 4, n)).shape) for n in (7, 1, 3)] + [tuple(dec.flush().shape)]
    assert audio == [(0, 1, 7 * HOP), (0, 1, HOP), (0, 1, 3 * HOP), (0, 1, 0)]


# -- opencodec export-onnx: the command ---------------------------------------------------------

def test_export_onnx_cleans_up_after_sigterm(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                             capsys: pytest.CaptureFixture) -> None:
    """``kill`` (SIGTERM) during an export removes its temporary folder as Ctrl-C does, and the
    command says "terminated" (exit 143). Before, SIGTERM ended the process at once and left a
    hidden ``.OUT.xxxx.tmp`` folder of finished graphs next to OUT_DIR (four graphs of the
    bundled model, about 40 MB, killed 4 s in)."""
    import signal

    import opencodec.export.onnx as onnx_export
    from opencodec.cli import main
    from opencodec.pretrained import save_model
    from opencodec.signals import is_interrupting_handler

    weights = tmp_path / "tiny.safetensors"
    save_model(tiny_stream_model("tiny_step_edges", 0), weights)
    real, written = onnx_export._export, []

    def export_then_kill(module, args, path, inputs, outputs):  # type: ignore[no-untyped-def]
        real(module, args, path, inputs, outputs)
        written.append(path)
        if len(written) == 2:
            # without a handler, SIGTERM would end pytest itself: say so instead
            assert is_interrupting_handler(signal.getsignal(signal.SIGTERM)), "SIGTERM would kill the export"
            signal.raise_signal(signal.SIGTERM)

    monkeypatch.setattr(onnx_export, "_export", export_then_kill)
    out = tmp_path / "onnx"
    assert main(["-q", "export-onnx", str(weights), str(out), "-b", "1.8"]) == 143
    assert capsys.readouterr().err.strip() == "opencodec: error: terminated"
    assert len(written) == 2 and written[0].is_relative_to(tmp_path) and not written[0].parent.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tiny.safetensors"]
