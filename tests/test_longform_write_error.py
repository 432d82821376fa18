"""A long file's decode that cannot create its output says "cannot write PATH: reason" once
(the atomic-output error already carries that prefix; it was repeated)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from opencodec.compress import compress
from opencodec.errors import AudioIOError
from opencodec.longform import decompress_file_streaming
from stream_models import tiny_random_model


def test_unwritable_output_is_named_once(tmp_path: Path) -> None:
    model = tiny_random_model()
    src = tmp_path / "a.ecdc"
    src.write_bytes(compress(model, 0.1 * torch.randn(1, 4800), 1.5))
    out = tmp_path / "missing" / "a.wav"  # its folder does not exist
    with pytest.raises(AudioIOError) as info:
        decompress_file_streaming(src, out, model)
    message = str(info.value)
    assert message.startswith(f"cannot write {out}: ")
    assert message.count("cannot write") == 1
    assert not out.parent.exists()
