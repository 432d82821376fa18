"""Audio files whose header gives an impossible sample rate are refused by name, before any
decoding or resampling (a 1 Hz header would be resampled into billions of samples)."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from opencodec.audio import read_audio
from opencodec.errors import AudioIOError
from opencodec.longform.blocks import _ConvertedBlocks


def _wav_with_rate(path: Path, rate: int, samples: int = 4800) -> Path:
    """A 16-bit mono WAV whose header says ``rate`` Hz (patched after writing at 24 kHz)."""
    sf.write(path, np.zeros(samples, np.float32), 24000, subtype="PCM_16")
    data = bytearray(path.read_bytes())
    assert data[24:28] == struct.pack("<I", 24000)
    data[24:28] = struct.pack("<I", rate)
    data[28:32] = struct.pack("<I", min(rate * 2, 2**32 - 1))  # byte rate
    path.write_bytes(bytes(data))
    return path


@pytest.mark.parametrize("rate", [1, 999, 768_001, 2_000_000_000])
def test_read_audio_refuses_an_impossible_rate(tmp_path: Path, rate: int) -> None:
    path = _wav_with_rate(tmp_path / "odd.wav", rate)
    with pytest.raises(AudioIOError, match=rf"^cannot read audio file .*odd\.wav: its header gives a sample rate "
                                           rf"of {rate} Hz, outside 1000 to 768000 Hz$"):
        read_audio(path)


@pytest.mark.parametrize("rate", [1000, 8000, 768_000])
def test_rates_in_range_read(tmp_path: Path, rate: int) -> None:
    wav, sr = read_audio(_wav_with_rate(tmp_path / "ok.wav", rate))
    assert sr == rate and wav.shape == (1, 4800) and torch.count_nonzero(wav) == 0


def test_the_long_file_reader_refuses_it_too(tmp_path: Path) -> None:
    path = _wav_with_rate(tmp_path / "odd.wav", 1)
    with pytest.raises(AudioIOError, match="sample rate of 1 Hz"):
        list(_ConvertedBlocks(path, 24000, 1, 1.0))
