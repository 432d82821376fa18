"""The ``opencodec`` command line: compress, decompress and inspect ``.ecdc`` files.

::

    opencodec compress IN [OUT] [-b KBPS] [--model NAME_OR_PATH] [--lm [--lm-model NAME_OR_PATH]
                       [--lm-format deterministic|official]] [-f] [--rate HZ] [--channels N]
                       (OUT .wav/.flac: a round trip, at the input's rate and channels by default)
    opencodec decompress IN.ecdc [OUT] [--model NAME_OR_PATH] [--lm-model NAME_OR_PATH] [-f]
                         [--rescale] [--float] [--rate HZ] [--channels N]
    opencodec info FILE.ecdc [...] [--json]
    opencodec stream-encode [-m NAME_OR_PATH] [-b KBPS] [--frames-per-packet N] [--header-every N]
                            [--raw --rate HZ --channels C [--format s16le|f32le]]  < in.wav > out.ocs
    opencodec stream-decode [-m NAME_OR_PATH] [--raw] [--float]  < in.ocs > out.wav
                            (packet streams for pipes, see opencodec.stream)
    opencodec eval --models NAME_OR_PATH [...] --set DIR --out DIR [...]  (see opencodec.eval.report)
    opencodec mushra build|serve|report ...  (listening test, see opencodec.eval.mushra)
    opencodec train-lm CONFIG [key=value ...] [--run-dir DIR]  (entropy model, see opencodec.train.lm_solver)
    opencodec tokenize INPUT... --out DIR [...] / detokenize DIR --out AUDIO_DIR  (see opencodec.cli.tokens)
    opencodec export-onnx MODEL OUT_DIR [-b KBPS] [-f]  (ONNX step graphs, see opencodec.export.onnx)
    opencodec serve [--port N] [-m NAME_OR_PATH] [...]  (WebSocket server for live streams, see opencodec.serve)
    opencodec train CONFIG [key=value ...] [--run-dir DIR]  (the codec, see opencodec.train.solver)

IN may be a folder: it is processed recursively and the tree is kept under OUT (default:
next to the inputs). Exit status: 0 success, 1 failure (the message goes to stderr as
``opencodec: error: ...``; in folder mode every failing file is reported and the others
are still processed), 2 usage error. Outputs are never overwritten without ``-f`` and
never left half-written (temporary file + atomic rename).

One module per command group: :mod:`.codec` (compress, decompress), :mod:`.info`,
:mod:`.stream`, :mod:`.tokens`, :mod:`.wrappers` (train, train-lm, eval, mushra); :mod:`.main`
builds the parser. Each command parses, makes one library call and reports; the work is in
the library (:mod:`opencodec.codec_files`, :mod:`opencodec.ecdc_info`, :mod:`opencodec.stream`,
:mod:`opencodec.tokens`, ...), which never imports this package.
"""

from .main import build_parser, main

__all__ = ["build_parser", "main"]
