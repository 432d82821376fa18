"""``opencodec export-onnx``: every graph's input and output shape annotations are the true ones.

The TorchScript exporter used to annotate outputs with made-up symbols for fixed sizes
(``['batch', 1, 'Sliceencoder.0.next_dim_2']`` for a state of 6 samples) and even labelled
``decoder_start``'s audio length ``batch``. The annotations must equal ``meta.json``'s shapes,
and the arrays onnxruntime computes must have those shapes.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest

from opencodec.cli import main
from opencodec.export.onnx import GRAPHS
from opencodec.export.shapes import annotate_shapes, graph_shapes

import onnxruntime as ort  # installed by make test: a missing extra fails, never skips


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("onnx_shapes")
    assert main(["-q", "export-onnx", "opencodec_24khz", str(out), "-b", "6"]) == 0
    return out


@pytest.fixture(scope="module")
def meta(exported: Path) -> dict:
    return json.loads((exported / "meta.json").read_text())


@pytest.mark.parametrize("graph", GRAPHS)
def test_annotations_equal_meta(exported: Path, meta: dict, graph: str) -> None:
    model = onnx.load(str(exported / graph))
    onnx.checker.check_model(model)
    shapes = graph_shapes(model)
    for kind in ("inputs", "outputs"):
        expected = {item["name"]: item["shape"] for item in meta["graphs"][graph][kind]}
        assert shapes[kind] == expected, (graph, kind)
        for shape in expected.values():
            assert shape[0] == "batch" and set(d for d in shape if isinstance(d, str)) <= {"batch", "samples", "frames"}


def test_known_shapes(meta: dict) -> None:
    """The annotated shapes of the bundled model (hop 320, 8 codebooks, W = 7), spelled out:
    fixed sizes as numbers, never made-up symbols."""
    g = meta["graphs"]
    assert g["decoder_start.onnx"]["outputs"][0]["shape"] == ["batch", 1, 7 * 320]
    assert g["encoder_start.onnx"]["outputs"][0]["shape"] == ["batch", 8, 7]
    assert g["encoder_step.onnx"]["outputs"][1] == {"name": "encoder.0.next", "shape": ["batch", 1, 6], "dtype": "float32"}


def _feed(item: dict, batch: int, frames: int, hop: int, rng: np.random.Generator) -> np.ndarray:
    sizes = {"batch": batch, "frames": frames, "samples": frames * hop}
    shape = [sizes[d] if isinstance(d, str) else d for d in item["shape"]]
    if item["dtype"] == "int64":
        return rng.integers(0, 1024, size=shape, dtype=np.int64)
    return (0.1 * rng.standard_normal(shape)).astype(np.float32)


@pytest.mark.parametrize("graph", GRAPHS)
def test_runtime_shapes_match_annotations(exported: Path, meta: dict, graph: str) -> None:
    """With batch 2 and 8 frames, every output onnxruntime computes has its annotated shape,
    and onnxruntime reports the annotated shapes for the graph's inputs and outputs."""
    rng = np.random.default_rng(0)
    options = ort.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    session = ort.InferenceSession(str(exported / graph), options, providers=["CPUExecutionProvider"])
    spec = meta["graphs"][graph]
    assert [(i.name, i.shape) for i in session.get_inputs()] == [(i["name"], i["shape"]) for i in spec["inputs"]]
    assert [(o.name, o.shape) for o in session.get_outputs()] == [(o["name"], o["shape"]) for o in spec["outputs"]]
    hop = meta["hop_length"]
    results = session.run(None, {i["name"]: _feed(i, 2, 8, hop, rng) for i in spec["inputs"]})
    sizes = {"batch": 2, "frames": 8, "samples": 8 * hop}
    for item, array in zip(spec["outputs"], results):
        assert list(array.shape) == [sizes[d] if isinstance(d, str) else d for d in item["shape"]], item["name"]


def _tiny_graph(path: Path) -> None:
    """A one-node graph ``y = Identity(x)`` whose annotations are wrong: x [N, 3], y [N, 'N']."""
    x = onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["N", 3])
    y = onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, ["N", "N"])
    graph = onnx.helper.make_graph([onnx.helper.make_node("Identity", ["x"], ["y"])], "g", [x], [y])
    onnx.save(onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 17)]), str(path))


def test_annotate_shapes_rewrites_and_refuses_other_names(tmp_path: Path) -> None:
    path = tmp_path / "g.onnx"
    _tiny_graph(path)
    annotate_shapes(path, [{"name": "x", "shape": ["batch", 3]}], [{"name": "y", "shape": ["batch", 3]}])
    assert graph_shapes(onnx.load(str(path))) == {"inputs": {"x": ["batch", 3]}, "outputs": {"y": ["batch", 3]}}
    before = path.read_bytes()
    with pytest.raises(ValueError, match=r"g.onnx: graph outputs \['y'\] are not \['z'\]"):
        annotate_shapes(path, [{"name": "x", "shape": ["batch", 3]}], [{"name": "z", "shape": ["batch", 3]}])
    assert path.read_bytes() == before
