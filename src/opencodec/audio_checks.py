"""Byte-level checks of audio files, before libsndfile decodes them (no torch, no soundfile).

- :func:`header_declared_frames`: the sample frames a WAV (RIFF, or RF64) or AIFF header
  declares, to compare with what libsndfile finds (:func:`opencodec.audio.find_truncation`);
  a WAV's chunks are walked by their sizes (seeking, not reading the file), so a ``data``
  chunk after a large ``bext``/``iXML``/``LIST`` chunk is found too.
- :func:`has_mpeg_audio`: whether a file holds MPEG audio (two consecutive frame headers that
  agree), for :func:`opencodec.audio.check_mp3_content`.
- :func:`check_not_ecdc`: refuses an ``.ecdc`` file (compressed codes, not audio) by its first
  bytes, which libsndfile would only call "Format not recognised".

``opencodec.audio`` re-exports these names.
"""

from __future__ import annotations

import os
import typing as tp
from pathlib import Path

from .errors import AudioIOError

#: WAV data chunk sizes that writers of streams put in a header they cannot come back to fix:
#: 0, and sizes from here up (``arecord``'s 0x7FFFFF00, 0x7FFFFFFF, 0xFFFFFFFF...).
_WAV_PLACEHOLDER_SIZES = 0x7FFF0000
#: WAV format tags whose frames are ``channels * ceil(bits / 8)`` bytes wide whatever the
#: ``fmt`` chunk's block align says (libsndfile goes by that too): PCM, IEEE float, A-law,
#: mu-law, EXTENSIBLE.
_WAV_PLAIN_FORMATS = (0x0001, 0x0003, 0x0006, 0x0007, 0xFFFE)
#: Chunks of a WAV walked before giving up on finding its ``data`` chunk (a crafted file of
#: millions of empty chunks is not walked to its end).
_WAV_MAX_CHUNKS = 4096
#: Bytes of an AIFF searched for its ``COMM`` chunk.
_AIFF_HEAD_BYTES = 1 << 16


def header_declared_frames(path: str | Path) -> int | None:
    """Sample frames the header of a RIFF/WAVE (or RF64) file declares when its ``data`` chunk
    runs past the end of the file, or an AIFF/AIFC file's ``COMM`` chunk count; None for other
    formats, a WAV whose data chunk is all there, one of unknown length (a stream's placeholder
    size), or no ``data`` chunk found. A WAV's chunks are walked by their sizes (odd sizes padded
    to even), wherever ``data`` starts. libsndfile reports the frames present instead, so
    comparing the two finds a cut file (:func:`opencodec.audio.find_truncation`)."""
    with open(path, "rb") as fi:
        head = fi.read(12)
        file_size = fi.seek(0, os.SEEK_END)
        if len(head) == 12 and head[:4] in (b"RIFF", b"RF64") and head[8:12] == b"WAVE":
            return _wav_data_frames(fi, file_size)
        if len(head) == 12 and head[:4] == b"FORM" and head[8:12] in (b"AIFF", b"AIFC"):
            fi.seek(0)
            return _aiff_frames(fi.read(_AIFF_HEAD_BYTES))
    return None


def _aiff_frames(head: bytes) -> int | None:
    """The frame count of the ``COMM`` chunk in ``head``, the start of an AIFF file."""
    offset = 12
    while offset + 8 <= len(head):  # big-endian chunk sizes
        tag, size = head[offset:offset + 4], int.from_bytes(head[offset + 4:offset + 8], "big")
        if tag == b"COMM" and offset + 14 <= len(head):
            return int.from_bytes(head[offset + 10:offset + 14], "big")
        offset += 8 + size + (size & 1)
    return None


def _wav_data_frames(fi: tp.BinaryIO, file_size: int) -> int | None:
    """Frames the ``data`` chunk of the RIFF/WAVE file ``fi`` (``file_size`` bytes in all)
    declares, when that chunk runs past the end of the file; else None. An RF64 file's data
    size is its ``ds64`` chunk's when the ``data`` chunk says 0xFFFFFFFF."""
    offset, width, size64 = 12, 0, None
    for _ in range(_WAV_MAX_CHUNKS):
        if offset + 8 > file_size:
            return None
        fi.seek(offset)
        chunk = fi.read(24)
        tag, size = chunk[:4], int.from_bytes(chunk[4:8], "little")
        if tag == b"ds64" and len(chunk) >= 24:
            size64 = int.from_bytes(chunk[16:24], "little")
        if tag == b"fmt " and len(chunk) >= 24:
            fmt = chunk[8:24]
            format_tag, channels = int.from_bytes(fmt[0:2], "little"), int.from_bytes(fmt[2:4], "little")
            block_align, bits = int.from_bytes(fmt[12:14], "little"), int.from_bytes(fmt[14:16], "little")
            plain = format_tag in _WAV_PLAIN_FORMATS and channels > 0 and bits > 0
            width = channels * ((bits + 7) // 8) if plain else block_align
        if tag == b"data":
            if size == 0xFFFFFFFF and size64 is not None:  # RF64: the real size is ds64's
                return _frames_past_end(size64, width, offset + 8, file_size, placeholder=1 << 62)
            return _frames_past_end(size, width, offset + 8, file_size, placeholder=_WAV_PLACEHOLDER_SIZES)
        offset += 8 + size + (size & 1)
    return None


def _frames_past_end(size: int, width: int, start: int, file_size: int, placeholder: int) -> int | None:
    """``size // width`` frames when a data chunk of ``size`` bytes from ``start`` runs past
    ``file_size``; None when it is all there, or its size is 0 or a placeholder (unknown)."""
    if size == 0 or size >= placeholder or width == 0 or start + size <= file_size:
        return None
    return size // width


# -- MPEG audio ------------------------------------------------------------------------------------
#: Bytes of a file (after its ID3v2 tags) searched for MPEG audio frames (:func:`has_mpeg_audio`).
MP3_SNIFF_BYTES = 1 << 16
#: More than the longest MPEG audio frame (free format included): the next frame's header is
#: looked for within this many bytes of the last candidate.
_MAX_FRAME_BYTES = 8192
#: Bit rates (kbit/s) by bitrate index 1-14: (MPEG-1?, layer) -> table; MPEG-2 and 2.5 share one.
_BITRATES = {
    (True, 1): (32, 64, 96, 128, 160, 192, 224, 256, 288, 320, 352, 384, 416, 448),
    (True, 2): (32, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320, 384),
    (True, 3): (32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320),
    (False, 1): (32, 48, 56, 64, 80, 96, 112, 128, 144, 160, 176, 192, 224, 256),
    (False, 2): (8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160),
    (False, 3): (8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160),
}
#: Sample rates (Hz) by version bits (3: MPEG-1, 2: MPEG-2, 0: MPEG-2.5) and rate index.
_RATES = {3: (44100, 48000, 32000), 2: (22050, 24000, 16000), 0: (11025, 12000, 8000)}
#: What may follow the last frame of a file: an ID3v1, APEv2 or Lyrics3 tag.
_TRAILING_TAGS = (b"TAG", b"APETAGEX", b"LYRICSBEGIN")


def _frame_header(buf: bytes, at: int) -> tuple[tuple[int, int, int], int] | None:
    """The MPEG audio frame header at ``buf[at:at + 4]``: ``(key, length)``, where ``key``
    (version and layer bits, sample rate index, bitrate index) must agree between frames of a
    stream and ``length`` is the frame's bytes (0 for free format: bitrate index 0); None
    when those bytes are no header (no 11 sync bits, or a reserved version, layer, bitrate or
    sample rate)."""
    if at + 4 > len(buf) or buf[at] != 0xFF:
        return None
    b1, b2 = buf[at + 1], buf[at + 2]
    version, layer_bits, bitrate, rate = (b1 >> 3) & 3, (b1 >> 1) & 3, b2 >> 4, (b2 >> 2) & 3
    if (b1 & 0xE0) != 0xE0 or version == 1 or layer_bits == 0 or bitrate == 15 or rate == 3:
        return None
    layer, mpeg1, padding = 4 - layer_bits, version == 3, (b2 >> 1) & 1
    key = (b1 & 0xFE, rate, bitrate)
    if bitrate == 0:
        return key, 0
    bps, hz = 1000 * _BITRATES[mpeg1, layer][bitrate - 1], _RATES[version][rate]
    if layer == 1:
        return key, (12 * bps // hz + padding) * 4
    per_frame = 144 if mpeg1 or layer == 2 else 72  # Layer III of MPEG-2/2.5: 576 samples a frame
    return key, per_frame * bps // hz + padding


def _stream_at(buf: bytes, at: int, whole: bool) -> bool:
    """Whether an MPEG audio stream starts at ``buf[at]``: a frame header whose next frame's
    header agrees with it (version, layer, sample rate) where its length says, or, the file's
    one frame, a trailing tag there (``whole``: ``buf`` runs to the end of the file). A
    free-format frame (no length in its header) needs two more headers of its kind (bit rate
    too) at one spacing (give or take a padding slot), within ``_MAX_FRAME_BYTES``."""
    first = _frame_header(buf, at)
    if first is None:
        return False
    key, length = first
    if length == 0:
        return _free_format_at(buf, at, key)
    second = _frame_header(buf, at + length)
    if second is not None:
        return second[0][:2] == key[:2]
    return whole and buf[at + length:].startswith(_TRAILING_TAGS)


def _free_format_at(buf: bytes, at: int, key: tuple[int, int, int]) -> bool:
    """:func:`_stream_at` for a free-format frame header at ``buf[at]`` of kind ``key``."""
    nxt = buf.find(b"\xff", at + 4)
    while 0 <= nxt < at + _MAX_FRAME_BYTES:
        second = _frame_header(buf, nxt)
        if second is not None and second[0] == key:
            spacing = nxt - at
            for third in range(nxt + spacing - 4, nxt + spacing + 5):
                header = _frame_header(buf, third)
                if header is not None and header[0] == key:
                    return True
        nxt = buf.find(b"\xff", nxt + 1)
    return False


def _id3v2_end(fi: tp.BinaryIO) -> int:
    """Offset just past the ID3v2 tag(s) at the start of the file ``fi`` (0 when there is
    none): ``"ID3"``, version and revision below 0xFF, flags, a 28-bit synchsafe size, 10
    more bytes with a footer."""
    offset = 0
    while True:
        fi.seek(offset)
        tag = fi.read(10)
        if (len(tag) < 10 or tag[:3] != b"ID3" or 0xFF in tag[3:5]
                or any(b & 0x80 for b in tag[6:10])):
            return offset
        size = (tag[6] << 21) | (tag[7] << 14) | (tag[8] << 7) | tag[9]
        offset += 10 + size + (10 if tag[5] & 0x10 else 0)


def has_mpeg_audio(fi: tp.BinaryIO) -> bool:
    """Whether the file ``fi`` (binary, seekable) holds MPEG audio (MPEG-1, 2 or 2.5, layer I,
    II or III; an MP3): within :data:`MP3_SNIFF_BYTES` after its ID3v2 tags (of any size, skipped
    by their header), a frame header followed by another that agrees with it at the offset its
    bit rate gives (:func:`_stream_at`). A LAME/Xing or VBRI header frame is such a frame.
    Random bytes rarely pass (a 0xFF byte with plausible header bits does not: libmpg123 would
    print "Note: Illegal Audio-MPEG-Header" to stderr trying to decode them)."""
    size = fi.seek(0, os.SEEK_END)
    starts = [_id3v2_end(fi)]
    if starts[0] > 0:
        starts.append(0)  # a tag size that is wrong: search from the start too
    for start in starts:
        fi.seek(start)
        buf = fi.read(MP3_SNIFF_BYTES + _MAX_FRAME_BYTES)
        whole = start + len(buf) >= size
        at = buf.find(b"\xff")
        while 0 <= at < MP3_SNIFF_BYTES:
            if _stream_at(buf, at, whole):
                return True
            at = buf.find(b"\xff", at + 1)
    return False


def starts_like_mpeg(head: bytes) -> bool:
    """Whether ``head``, a file's first bytes, starts with an ID3v2 tag or an MPEG audio frame
    header (which libsndfile, going by content, hands to libmpg123)."""
    return head[:3] == b"ID3" or _frame_header(head, 0) is not None


#: The first bytes of an ``.ecdc`` file (:data:`opencodec.bitstream.header.MAGIC`).
ECDC_MAGIC = b"ECDC"


def is_ecdc_data(path: str | Path) -> bool:
    """Whether the regular file ``path`` starts with :data:`ECDC_MAGIC` (an ``.ecdc`` file,
    whatever its name); False for anything else (a pipe is not read) or an unreadable file."""
    if not os.path.isfile(path):
        return False
    try:
        with open(path, "rb") as fi:
            return fi.read(len(ECDC_MAGIC)) == ECDC_MAGIC
    except OSError:
        return False


def check_not_ecdc(path: str | Path) -> None:
    """``AudioIOError`` when the file ``path`` is an ``.ecdc`` file, whatever its name
    (:func:`is_ecdc_data`): an audio reader is given compressed codes, not audio."""
    if is_ecdc_data(path):
        raise AudioIOError(f"cannot read audio file {path}: it is an .ecdc file (audio compressed by "
                           f"opencodec), not audio: decode it with 'opencodec decompress'")
