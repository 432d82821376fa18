"""ONNX export of a causal codec with its streaming state explicit (``opencodec export-onnx``).

``export_onnx(model, out_dir)`` writes, with ``torch.onnx.export`` (the TorchScript-based
exporter, ``dynamo=False``; the dynamo exporter fails on the LSTM with a dynamic time axis):

* ``encoder_step.onnx``: ``audio`` [B, C, hop] + every encoder state tensor ->
  ``codes`` [B, K, 1] (int64) + every state tensor's next value (named ``<name>.next``);
* ``decoder_step.onnx``: ``codes`` [B, K, 1] + every decoder state tensor ->
  ``audio`` [B, C, hop] + next state;
* ``encoder_start.onnx`` / ``decoder_start.onnx``: the first ``warmup_frames`` frames
  (audio [B, C, W * hop] / codes [B, K, W]) -> their output and the state after them. With
  reflect padding a stream's first output needs W frames (7 at 24 kHz), and no constant
  initial state gives it (the padding reflects the signal itself, see :mod:`opencodec.step`):
  the initial value of every state tensor is the output of the start graph;
* ``encoder.onnx`` / ``decoder.onnx``: offline, audio [B, C, n * hop] -> codes [B, K, n] and
  codes [B, K, n] -> audio [B, C, n * hop], n >= W and free (a dynamic axis). The exporter
  traces Python arithmetic on the length as constants, so the end-of-signal padding of a length
  that is not a whole number of frames cannot be exported shape-generically: pad or trim the
  input to whole frames (the last frame's codes then differ from ``model.encode``'s, which
  reflect the end of the signal);
* ``meta.json``: model, sample rate, channels, hop, frame rate, bandwidth and codebooks,
  ``warmup_frames``, every graph's inputs and outputs (name, shape, dtype; ``batch`` and
  ``frames`` mark dynamic axes), and every state tensor's name, shape and initial value
  (``"from": "encoder_start.onnx"``) in the order the step graphs take them.

Every graph input's and output's shape annotation is the one ``meta.json`` gives (fixed sizes
as ``dim_value``, ``batch`` / ``samples`` / ``frames`` as ``dim_param``; see
:mod:`opencodec.export.shapes`), not the exporter's own guesses.

The batch axis is dynamic in every graph: streams are batched by stacking their states.
"""

from __future__ import annotations

import importlib.util
import json
import typing as tp
import warnings
from pathlib import Path

import torch
from torch import nn

from .._files import check_output, file_in_the_way, staged_files
from ..errors import OpenCodecError
from ..input_checks import check_model, parameter_dtype_device
from ..model import EncodecModel
from ..step import DecoderStep, EncoderStep, StateSpec

__all__ = ["GRAPHS", "export_onnx"]

GRAPHS = ("encoder_step.onnx", "decoder_step.onnx", "encoder_start.onnx", "decoder_start.onnx",
          "encoder.onnx", "decoder.onnx")
OPSET = 17


class _Start(nn.Module):
    """``step.start`` (and the offline graphs: the same computation on n >= W frames)."""

    def __init__(self, step: EncoderStep | DecoderStep):
        super().__init__()
        self.step = step

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        if isinstance(self.step, EncoderStep):
            emb, state = self.step._run(x, None)
            return (self.step._codes(emb), *state)
        y, state = self.step._run(self.step.quantizer.decode(x), None)
        return (y, *state)


class _Offline(_Start):
    def forward(self, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return super().forward(x)[0]


def _io(name: str, shape: tp.Sequence[int | str], dtype: str) -> dict[str, tp.Any]:
    return {"name": name, "shape": list(shape), "dtype": dtype}


def _export(module: nn.Module, args: tuple[torch.Tensor, ...], path: Path, inputs: list[dict],
            outputs: list[dict]) -> None:
    dynamic: dict[str, dict[int, str]] = {}
    for item in inputs + outputs:
        axes = {i: d for i, d in enumerate(item["shape"]) if isinstance(d, str)}
        if axes:
            dynamic[item["name"]] = axes
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer warnings about Python values of shapes
        torch.onnx.export(module, args, str(path), input_names=[i["name"] for i in inputs],
                          output_names=[o["name"] for o in outputs], dynamic_axes=dynamic,
                          opset_version=OPSET, dynamo=False)
    from .shapes import annotate_shapes  # needs onnx, checked by export_onnx

    annotate_shapes(path, inputs, outputs)  # the exporter's own output shapes are partly made up


def _states(specs: list[StateSpec], suffix: str = "") -> list[dict]:
    return [_io(s.name + suffix, ["batch", *s.shape], "float32") for s in specs]


def export_onnx(model: EncodecModel, out_dir: str | Path, force: bool = False) -> dict[str, tp.Any]:
    """Write the six graphs and ``meta.json`` to ``out_dir`` (created); returns the metadata.

    The bandwidth is the model's current one (``model.set_target_bandwidth``). Existing files
    are only replaced with ``force``. All or nothing: the files are written into a temporary
    folder next to ``out_dir`` and moved into place only once all of them are complete; on
    any error nothing of this export is left (``OutputError`` "cannot write OUT_DIR: ..." for
    a file system error such as a full disk; ``ValueError`` for ``out_dir`` ""; ``NotADirectoryError``,
    before any work, when ``out_dir`` or a folder above it is a file, naming it; ``TypeError`` for
    a ``model`` that is not a model and ``ValueError`` for one that is not float32: the graphs
    take float32 audio). ``model`` is left in the mode it was in (training or eval; the graphs are
    those of eval mode). Needs the ``onnx`` package (``pip install opencodec[onnx]``).
    """
    if importlib.util.find_spec("onnx") is None:  # torch.onnx.export needs it
        raise OpenCodecError("export-onnx needs the onnx package: pip install 'opencodec[onnx]'")
    check_model(model, "export_onnx")
    dtype = parameter_dtype_device(model)[0]
    if dtype != torch.float32:
        raise ValueError(f"export_onnx: the model's weights are {str(dtype).replace('torch.', '')}; the ONNX "
                         "graphs take float32 audio: export model.float()")
    if isinstance(out_dir, str) and not out_dir:  # Path("") is the current folder
        raise ValueError("empty output path (''): it names no folder; an unset shell variable?")
    out = Path(out_dir)
    blocker = file_in_the_way(out)  # OUT_DIR, or a folder above it, that is a file: before any work
    if blocker == out:
        raise NotADirectoryError(f"output {out} exists and is not a folder")
    if blocker is not None:
        raise NotADirectoryError(f"cannot create output folder {out}: {blocker} is a file")
    for name in (*GRAPHS, "meta.json"):
        check_output(out / name, force, need_folder=False)
    training = model.training
    try:
        model.eval()
        return _export_all(model, out)
    finally:
        model.train(training)  # a training loop that exports goes on training (quantiser updates)


def _export_all(model: EncodecModel, out: Path) -> dict[str, tp.Any]:
    """The work of :func:`export_onnx` once its arguments are checked (``model`` in eval mode)."""
    enc, dec = EncoderStep(model), DecoderStep(model)
    hop, ch, k, w = model.hop_length, model.channels, enc.num_codebooks, enc.warmup_frames
    if dec.warmup_frames != w:  # pragma: no cover - SEANet decoders mirror their encoders
        raise ValueError(f"encoder and decoder warm-ups differ ({w} and {dec.warmup_frames} frames)")
    es, ds = enc.state_specs(), dec.state_specs()
    audio = lambda n: _io("audio", ["batch", ch, n], "float32")  # noqa: E731
    codes = lambda n: _io("codes", ["batch", k, n], "int64")  # noqa: E731
    graphs = {
        "encoder_step.onnx": ([audio(hop)] + _states(es), [codes(1)] + _states(es, ".next")),
        "decoder_step.onnx": ([codes(1)] + _states(ds), [audio(hop)] + _states(ds, ".next")),
        "encoder_start.onnx": ([audio(w * hop)], [codes(w)] + _states(es)),
        "decoder_start.onnx": ([codes(w)], [audio(w * hop)] + _states(ds)),
        "encoder.onnx": ([_io("audio", ["batch", ch, "samples"], "float32")], [codes("frames")]),
        "decoder.onnx": ([codes("frames")], [_io("audio", ["batch", ch, "samples"], "float32")]),
    }
    gen = torch.Generator().manual_seed(0)
    x = 0.1 * torch.randn(2, ch, (w + 1) * hop, generator=gen)
    with torch.no_grad():
        c, state = enc.start(x[..., :w * hop])
        a, dstate = dec.start(c)
        c_all = torch.cat([c, enc(x[..., w * hop:], *state)[0]], dim=-1)
    modules: dict[str, tuple[nn.Module, tuple[torch.Tensor, ...]]] = {
        "encoder_step.onnx": (enc, (x[..., w * hop:], *state)),
        "decoder_step.onnx": (dec, (c[..., :1], *dstate)),
        "encoder_start.onnx": (_Start(enc), (x[..., :w * hop],)),
        "decoder_start.onnx": (_Start(dec), (c,)),
        "encoder.onnx": (_Offline(enc), (x,)),
        "decoder.onnx": (_Offline(dec), (c_all,)),
    }
    initial = [{"name": s.name, "shape": ["batch", *s.shape], "dtype": "float32"} for s in es]
    meta = {
        "model": model.name, "sample_rate": model.sample_rate, "channels": ch, "hop_length": hop,
        "frame_rate": model.frame_rate, "bandwidth_kbps": model.bandwidth_for_codebooks(k),
        "num_codebooks": k, "codebook_size": model.bins, "warmup_frames": w, "opset": OPSET,
        "graphs": {name: {"inputs": i, "outputs": o} for name, (i, o) in graphs.items()},
        "state": {
            "encoder": [{**d, "initial": {"from": "encoder_start.onnx", "output": d["name"]}} for d in initial],
            "decoder": [{"name": s.name, "shape": ["batch", *s.shape], "dtype": "float32",
                         "initial": {"from": "decoder_start.onnx", "output": s.name}} for s in ds],
        },
        "protocol": (f"Buffer a stream's first {w} frames and run the *_start graph on them (its first "
                     f"{w} outputs and the initial state); then feed one frame at a time to the *_step "
                     "graph with the state, replacing each state input by its '.next' output. "
                     "Offline graphs take whole frames, at least warmup_frames of them."),
    }
    with staged_files(out) as tmp, torch.no_grad():
        for name, (inputs, outputs) in graphs.items():
            module, args = modules[name]
            _export(module, args, tmp / name, inputs, outputs)
        (tmp / "meta.json").write_text(json.dumps(meta, indent=1) + "\n")
    return meta
