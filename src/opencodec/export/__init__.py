"""Exports of a codec to other runtimes: :mod:`.onnx` (``opencodec export-onnx``)."""
