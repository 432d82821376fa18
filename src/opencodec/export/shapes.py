"""Shape annotations of exported ONNX graphs: the true shapes, written after ``torch.onnx.export``.

The TorchScript exporter annotates graph outputs with shapes it infers itself: sizes that are
fixed (a state tensor's 6 samples, a start graph's 7 frames) come out as made-up symbols such as
``Sliceencoder.0.next_dim_2``, and a symbol can even be reused for another axis (``decoder_start``'s
audio length came out as ``batch``). onnxruntime ignores the annotations, but tools that trust
them are misled. :func:`annotate_shapes` replaces every graph input's and output's shape with the
one ``meta.json`` states: an int as ``dim_value``, a str (``batch``, ``samples``, ``frames``) as
``dim_param``, the same name for the same axis across inputs and outputs.
"""

from __future__ import annotations

import typing as tp
from pathlib import Path

import onnx

__all__ = ["annotate_shapes", "graph_shapes"]

Shape = tp.Sequence[tp.Union[int, str]]


def _set_shape(value: onnx.ValueInfoProto, shape: Shape) -> None:
    """Overwrite ``value``'s tensor shape with ``shape`` (ints fixed, strs symbolic)."""
    dims = value.type.tensor_type.shape.dim
    del dims[:]
    for d in shape:
        dim = dims.add()
        if isinstance(d, str):
            dim.dim_param = d
        else:
            dim.dim_value = int(d)


def _dim(dim: onnx.TensorShapeProto.Dimension) -> int | str | None:
    if dim.HasField("dim_param"):
        return dim.dim_param
    return dim.dim_value if dim.HasField("dim_value") else None


def graph_shapes(model: onnx.ModelProto) -> dict[str, dict[str, list[int | str | None]]]:
    """``{"inputs": {name: shape}, "outputs": {name: shape}}`` as annotated in ``model``'s graph
    (``None`` for an axis with neither a size nor a name)."""
    return {kind: {v.name: [_dim(d) for d in v.type.tensor_type.shape.dim] for v in values}
            for kind, values in (("inputs", model.graph.input), ("outputs", model.graph.output))}


def annotate_shapes(path: str | Path, inputs: list[dict[str, tp.Any]], outputs: list[dict[str, tp.Any]]) -> None:
    """Rewrite the ONNX file ``path`` so that its graph inputs and outputs have the shapes of
    ``inputs`` / ``outputs`` (``meta.json`` items: ``{"name", "shape", ...}``), then check it
    with ``onnx.checker.check_model``.

    Raises ``ValueError`` if the graph's input or output names are not those of the items (the
    export and its metadata disagree: a bug, never silently mislabelled).
    """
    model = onnx.load(str(path))
    for kind, values, items in (("inputs", model.graph.input, inputs), ("outputs", model.graph.output, outputs)):
        names = [v.name for v in values]
        if names != [i["name"] for i in items]:
            raise ValueError(f"{Path(path).name}: graph {kind} {names} are not {[i['name'] for i in items]}")
        for value, item in zip(values, items):
            _set_shape(value, item["shape"])
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
