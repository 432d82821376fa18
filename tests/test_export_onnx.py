"""``opencodec export-onnx``: the exported graphs under onnxruntime against opencodec's streaming.

The bundled model at 6 kbps, on real speech (demo/sample_speech_fr.flac, the first 3 s):
streaming through encoder_start + encoder_step gives the codes of ``StreamingEncoder`` (which
equals ``model.encode``) on >= 99.9% of frames (all of them here; a difference could only come
from a near-tie in the nearest-codebook search, the LSTM and convolutions of onnxruntime rounding
differently at ~1e-7), and decoder_start + decoder_step the audio of ``StreamingDecoder``
within 1e-4 relative L2 (measured ~3e-7). The offline graphs take any whole number of frames.
"""

from __future__ import annotations

import errno
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from opencodec.audio import convert_audio, read_audio
from opencodec.cli import main
import opencodec.export.onnx as onnx_export
from opencodec.export.onnx import GRAPHS, export_onnx
from opencodec import EncodecConfig, EncodecModel
from opencodec.pretrained import load_model, save_model
from opencodec.streaming import StreamingDecoder, StreamingEncoder

import onnxruntime as ort  # installed by make test: a missing extra fails, never skips
REPO = Path(__file__).resolve().parent.parent
HOP = 320


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    model = load_model("opencodec_24khz")
    model.set_target_bandwidth(6.0)
    return model


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("onnx")
    assert main(["-q", "export-onnx", "opencodec_24khz", str(out), "-b", "6"]) == 0
    return out


@pytest.fixture(scope="module")
def speech() -> torch.Tensor:
    wav, sr = read_audio(REPO / "demo" / "sample_speech_fr.flac")
    wav = convert_audio(wav, sr, 24000, 1)[:, :3 * 24000]
    return wav[None, :, :(wav.shape[-1] // HOP) * HOP]


def _session(path: Path) -> "ort.InferenceSession":
    options = ort.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _stream(exported: Path, side: str, x: np.ndarray, frame: int, warmup: int, names: list[str]) -> np.ndarray:
    """Run ``<side>_start`` on the first ``warmup`` frames, then ``<side>_step`` frame by frame."""
    start, step = _session(exported / f"{side}_start.onnx"), _session(exported / f"{side}_step.onnx")
    key = "audio" if side == "encoder" else "codes"
    first, *state = start.run(None, {key: x[..., :warmup * frame]})
    outs = [first]
    for t in range(warmup, x.shape[-1] // frame):
        y, *state = step.run(None, {key: x[..., t * frame:(t + 1) * frame], **dict(zip(names, state))})
        outs.append(y)
    return np.concatenate(outs, axis=-1)


def test_files_and_meta(exported: Path, model: torch.nn.Module) -> None:
    meta = json.loads((exported / "meta.json").read_text())
    assert sorted(p.name for p in exported.iterdir()) == sorted([*GRAPHS, "meta.json"])
    assert (meta["sample_rate"], meta["hop_length"], meta["num_codebooks"], meta["warmup_frames"]) == (24000, HOP, 8, 7)
    assert meta["bandwidth_kbps"] == 6.0
    step = _session(exported / "encoder_step.onnx")
    names = [s["name"] for s in meta["state"]["encoder"]]
    assert [i.name for i in step.get_inputs()] == ["audio", *names]
    assert [o.name for o in step.get_outputs()] == ["codes", *[n + ".next" for n in names]]
    start = _session(exported / "encoder_start.onnx")
    assert [o.name for o in start.get_outputs()] == ["codes", *names]
    for spec, inp in zip(meta["state"]["encoder"], step.get_inputs()[1:]):
        assert inp.shape[1:] == spec["shape"][1:]
        assert spec["initial"] == {"from": "encoder_start.onnx", "output": spec["name"]}
    # Existing files are kept without --force.
    with pytest.raises(FileExistsError):
        export_onnx(model, exported)


def test_cli_refusals(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """A non-causal model (named: refused before its weights are looked for; or a file), an
    unsupported bandwidth; nothing is written."""
    assert main(["-q", "export-onnx", "encodec_48khz", str(tmp_path / "a")]) == 1
    assert "cannot be streamed: it is not causal" in capsys.readouterr().err
    path = save_model(EncodecModel(EncodecConfig(name="nc", causal=False, n_filters=4, dimension=8, n_q=2,
                                                 ratios=[2], lstm=0)), tmp_path / "nc.safetensors")
    assert main(["-q", "export-onnx", str(path), str(tmp_path / "b")]) == 1
    assert "not causal" in capsys.readouterr().err
    assert main(["-q", "export-onnx", "opencodec_24khz", str(tmp_path / "c"), "-b", "5"]) == 2
    assert "does not support 5 kbps" in capsys.readouterr().err
    assert not any(tmp_path.glob("[abc]"))


def _full_disk_on_second_graph(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """Make the graph writer write the first graph, then a truncated second one and fail with
    ENOSPC (as on a full disk); returns the paths it was given."""
    paths: list[Path] = []

    def write(module, args, path: Path, inputs, outputs) -> None:
        paths.append(path)
        path.write_bytes(b"new graph"[: 3 if len(paths) == 2 else None])
        if len(paths) == 2:
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
    monkeypatch.setattr(onnx_export, "_export", write)
    return paths


def test_failure_midway_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                       capsys: pytest.CaptureFixture) -> None:
    """A disk that fills up at the second graph: no output folder, no temporary left, and one
    clear error naming the output (not a temporary path, no errno)."""
    paths = _full_disk_on_second_graph(monkeypatch)
    out = tmp_path / "sub" / "onnx"
    assert main(["-q", "export-onnx", "opencodec_24khz", str(out), "-b", "6"]) == 1
    err = capsys.readouterr().err
    assert err.strip() == f"opencodec: error: cannot write {out}: No space left on device"
    assert len(paths) == 2 and paths[0].parent != out and not paths[0].parent.exists()
    assert not out.exists() and list(tmp_path.rglob("*")) == [tmp_path / "sub"]


def test_failure_midway_with_force_keeps_the_old_export(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                        capsys: pytest.CaptureFixture) -> None:
    """-f over an earlier export that fails midway keeps every old file as it was."""
    out = tmp_path / "onnx"
    out.mkdir()
    for name in (*GRAPHS, "meta.json"):
        (out / name).write_text(f"old {name}")
    _full_disk_on_second_graph(monkeypatch)
    assert main(["-q", "export-onnx", "opencodec_24khz", str(out), "-b", "6", "-f"]) == 1
    assert f"cannot write {out}: No space left on device" in capsys.readouterr().err
    assert {p.name: p.read_text() for p in out.iterdir()} == {n: f"old {n}" for n in (*GRAPHS, "meta.json")}
    assert list(tmp_path.iterdir()) == [out]


def test_read_only_output(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    """A folder that cannot be written: one clear error naming it, no errno."""
    def read_only(*args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system", str(tmp_path / ".onnx.x.tmp"))
    monkeypatch.setattr("opencodec._files.tempfile.mkdtemp", read_only)
    assert main(["-q", "export-onnx", "opencodec_24khz", str(tmp_path / "onnx"), "-b", "6"]) == 1
    assert capsys.readouterr().err.strip() == f"opencodec: error: cannot write {tmp_path / 'onnx'}: Read-only file system"
    assert not any(tmp_path.iterdir())


def test_files_appear_together(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, model: torch.nn.Module) -> None:
    """Written into a temporary folder next to the output (inside it when it exists already: it may
    be a mount point), moved into place at the end (an unrelated file in the folder is kept); the
    output folder and its parents are created."""
    seen: list[tuple[bool, list[str]]] = []
    out = tmp_path / "a" / "b"

    def write(module, args, path: Path, inputs, outputs) -> None:
        assert path.parent.parent == (out if out.is_dir() else out.parent)
        seen.append((out.exists(), sorted(p.name for p in path.parent.iterdir())))
        path.write_bytes(b"graph")
    monkeypatch.setattr(onnx_export, "_export", write)
    export_onnx(model, out)
    assert seen[-1] == (False, sorted(GRAPHS[:-1])) and not any(exists for exists, _ in seen)
    assert sorted(p.name for p in out.iterdir()) == sorted([*GRAPHS, "meta.json"])
    assert list(out.parent.iterdir()) == [out]
    (out / "notes.txt").write_text("mine")
    export_onnx(model, out, force=True)
    assert (out / "notes.txt").read_text() == "mine" and list(out.parent.iterdir()) == [out]
    assert sorted(p.name for p in out.iterdir()) == sorted([*GRAPHS, "meta.json", "notes.txt"])  # none left


def test_streaming_codes_and_audio(exported: Path, model: torch.nn.Module, speech: torch.Tensor) -> None:
    meta = json.loads((exported / "meta.json").read_text())
    frames = speech.shape[-1] // HOP
    with torch.inference_mode():
        enc = StreamingEncoder(model)
        ref = torch.cat([enc.push(speech[..., i:i + HOP]) for i in range(0, speech.shape[-1], HOP)]
                        + [enc.flush()], dim=-1)
        dec = StreamingDecoder(model)
        ref_audio = torch.cat([dec.push(ref[..., f:f + 1]) for f in range(frames)] + [dec.flush()], dim=-1)
    codes = torch.from_numpy(_stream(exported, "encoder", speech.numpy(), HOP, 7,
                                     [s["name"] for s in meta["state"]["encoder"]]))
    assert codes.shape == ref.shape == (1, 8, frames)
    assert len(torch.unique(ref[:, 0])) > 50
    same = (codes == ref).all(dim=1).float().mean().item()
    assert same >= 0.999
    audio = torch.from_numpy(_stream(exported, "decoder", ref.numpy(), 1, 7,
                                     [s["name"] for s in meta["state"]["decoder"]]))
    assert audio.shape == ref_audio.shape
    assert ((audio - ref_audio).norm() / ref_audio.norm()).item() < 1e-4


@pytest.mark.parametrize("frames", [7, 30])
def test_offline_graphs_any_whole_length(exported: Path, model: torch.nn.Module, speech: torch.Tensor,
                                         frames: int) -> None:
    x = speech[..., :frames * HOP]
    with torch.inference_mode():
        ref = model.encode(x)[0].codes
        ref_audio = model.decode([(ref, None)])
    codes = torch.from_numpy(_session(exported / "encoder.onnx").run(None, {"audio": x.numpy()})[0])
    assert (codes == ref).all(dim=1).float().mean().item() >= 0.999
    audio = torch.from_numpy(_session(exported / "decoder.onnx").run(None, {"codes": ref.numpy()})[0])
    assert ((audio - ref_audio).norm() / ref_audio.norm()).item() < 1e-4


def test_step_graphs_take_any_batch(exported: Path, speech: torch.Tensor) -> None:
    """Two streams stacked along the batch axis give each stream's codes alone (the batch axis
    is dynamic; onnxruntime may round a batch differently, so near-ties are allowed)."""
    meta = json.loads((exported / "meta.json").read_text())
    names = [s["name"] for s in meta["state"]["encoder"]]
    x = speech[..., :20 * HOP].numpy()
    pair = np.concatenate([x, x[..., ::-1].copy()], axis=0)  # [2, 1, T]: speech and reversed speech
    both = _stream(exported, "encoder", pair, HOP, 7, names)
    alone = np.concatenate([_stream(exported, "encoder", pair[i:i + 1], HOP, 7, names) for i in range(2)])
    assert both.shape == (2, 8, 20)
    assert (both != alone).any(axis=1).mean() <= 0.001  # measured: 0 of 40 differ
    assert not np.array_equal(both[0], both[1])
