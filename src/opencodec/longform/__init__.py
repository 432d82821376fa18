"""Compress and decompress very long audio files in bounded memory.

::

    compress_file_streaming(model, "talk.flac", "talk.ecdc", bandwidth=6.0)
    decompress_file_streaming("talk.ecdc", "talk.wav")

For causal models that do not segment (``opencodec_24khz``, ``encodec_24khz``) the file
is read in blocks, converted and resampled block by block, encoded with
:class:`~opencodec.longform.exact_encoder.ChunkedExactEncoder` (offline's own chunks of the
downsampling stack, then the LSTM, the last layers and the quantiser in long chunks) and
packed as it goes; decoding reads the
body a block of frames at a time, runs :class:`~opencodec.streaming.StreamingDecoder`
and writes the audio incrementally.

Segmenting models (``encodec_48khz``: 1 s segments every 0.99 s, each encoded on its own
with its own scale) are handled one segment at a time: a segment is encoded as soon as
the audio read so far covers it, and written as one record; decoding reads one record at a
time, decodes it and overlap-adds it into a running buffer, writing out every sample that
no later segment overlaps. The arithmetic is that of
:func:`opencodec.model.linear_overlap_add` in the same order, so the result is identical.

Either way memory depends on the block sizes, not on the duration (a 1-hour file needs no
more than a 1-minute one).

Entropy-coded files (an entropy model given): the audio is processed the same way, but a
segment's arithmetic-coded body can only be written once all its codes are known (the
24 kHz models have a single segment), so the codes are spooled to a temporary file, 2 bytes
each (about 4 MB per hour at 6 kbps, 16 MB at 24 kbps), and coded at the end with the same
functions as :func:`opencodec.compress.compress` (same bytes), which then hold them in
memory (8 bytes each). Decoding decodes all codes first (kept as 2 bytes each), then the
audio block by block. Memory then grows with the duration, by those amounts only.

Exactness
---------
* ``compress_file_streaming`` writes the same bytes as
  ``compress(model, convert_audio(read_audio(path)), bandwidth)``: channel conversion is
  per sample, the codes of :class:`ChunkedExactEncoder` equal ``model.encode`` bit for bit
  (it computes what ``model.encode`` computes, chunk for chunk; :class:`StreamingEncoder`,
  used before, could differ at rare near-ties: see its notes),
  and the packing is the same. Resampling uses ``soxr.ResampleStream`` (same "HQ"
  recipe as :func:`opencodec.audio.resample`); in our checks (python-soxr 1.1) its output
  was sample-identical to the one-shot ``soxr.resample`` whatever the block size, and it
  is trimmed/zero-padded to the same length, :func:`opencodec.audio.resampled_length`
  (``T * target / source`` rounded half up, as ``soxr.resample`` counts). Exact
  equality is *guaranteed* (and tested) only when no resampling is needed.
* For segmenting models the bytes are identical too (each segment is encoded alone, on
  the same samples, by the same ``model.encode``).
* ``decompress_file_streaming`` decodes with ``StreamingDecoder(fast_lstm=False)``,
  equal to :func:`opencodec.compress.decompress` to ~1e-7 (segmenting models: the same
  operations as ``decompress``), then quantises like
  :func:`opencodec.audio.write_audio` (same rounding and clipping, the clipping warning
  is issued once with the overall peak).
"""

from .common import supports_streaming
from .decode import decompress_file_streaming
from .encode import compress_file_streaming, encode_file_streaming

__all__ = ["supports_streaming", "compress_file_streaming", "decompress_file_streaming",
           "encode_file_streaming"]
