"""``decompress`` (command and API) given something that is not an ``.ecdc`` file: a weights file,
a packet stream, or a pipe, each named in one line."""

from __future__ import annotations

import io
import re
from pathlib import Path

import pytest
import torch

from opencodec import cli
from opencodec.compress import decompress, decompress_from_file
from opencodec.errors import BitstreamError
from opencodec.pretrained import BUNDLED_DIR


CODEC = BUNDLED_DIR / "opencodec_24khz.safetensors"


READS = "not an .ecdc file: {} reads compressed files (.ecdc, written by opencodec compress)"


def test_decompress_command_names_a_weights_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out.wav"
    assert cli.main(["decompress", str(CODEC), str(out)]) == 1
    err = capsys.readouterr().err
    assert err == (f"opencodec: error: {CODEC}: a safetensors weights file (a codec, opencodec_24khz), "
                   f"{READS.format('opencodec decompress')}\n")
    assert not out.exists()
    ckpt = tmp_path / "z.pt"
    torch.save({"a": torch.zeros(2)}, ckpt)
    assert cli.main(["decompress", str(ckpt), str(out)]) == 1
    assert capsys.readouterr().err == (f"opencodec: error: {ckpt}: a torch checkpoint (a zip archive as "
                                       f"torch.save writes: .pt, .th), "
                                       f"{READS.format('opencodec decompress')}\n")
    assert not out.exists()


def test_decompress_api_names_a_weights_file_and_a_packet_stream() -> None:
    data = CODEC.read_bytes()
    said = f"a safetensors weights file (a codec, opencodec_24khz), {READS.format('decompress')}"
    with pytest.raises(BitstreamError, match=f"^{re.escape(said)}$"):
        decompress(data)
    with open(CODEC, "rb") as fo, pytest.raises(BitstreamError, match="^a safetensors weights file"):
        decompress_from_file(fo)
    with pytest.raises(BitstreamError, match=r"got b'OCSP' \(a packet stream: use opencodec stream-decode\)$"):
        decompress(b"OCSPH" + bytes(30))
    with pytest.raises(BitstreamError, match=r"^not an ECDC file: magic expected b'ECDC', got b'RIFF'$"):
        decompress(b"RIFF" + bytes(30))


class _Pipe:
    """A readable file object that cannot seek (as a pipe)."""

    def __init__(self, data: bytes) -> None:
        self._data = io.BytesIO(data)

    def read(self, size: int = -1) -> bytes:
        return self._data.read(size)


def test_decompress_from_a_pipe_keeps_the_magic_error() -> None:
    with pytest.raises(BitstreamError, match=r"^not an ECDC file: magic expected b'ECDC', got b'[^(]*$"):
        decompress_from_file(_Pipe(CODEC.read_bytes()))
