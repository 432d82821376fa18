"""Shared helpers of the codec-side tests (API, files, serve, stream, tokenize): tiny models,
short signals and fixtures used by several test files."""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from opencodec import cli, EncodecConfig, EncodecModel
from opencodec.pretrained import save_model

from official_ref import random_codebooks
from stream_models import tiny_stream_model
from test_tokenize import tiny_model_file  # noqa: F401 (the tiny codec's weights file, a pytest fixture)


def _model(**config: object) -> EncodecModel:
    model = tiny_stream_model("tiny_small", 5, **config)
    model.set_target_bandwidth(1.8)
    return model


@pytest.fixture(scope="module")
def no_overlap() -> EncodecModel:
    """A tiny model with segments of 960 samples (3 whole hops) and no overlap."""
    model = tiny_stream_model("tiny_no_overlap", 11, causal=False, segment=0.04, overlap=0.0)
    model.set_target_bandwidth(1.8)
    return model


def _tiny(name: str = "unit_24khz", seed: int = 0, **extra: object) -> EncodecModel:
    torch.manual_seed(seed)
    return EncodecModel(EncodecConfig(name=name, n_filters=4, dimension=16, lstm=0, n_q=4,
                                      target_bandwidths=[1.5, 3.0], **extra)).eval()


#: The name the tiny codec of the file-command tests records in its weights file and its
#: ``.ecdc`` headers (see :func:`tiny_files_ckpt`).
TINY_FILES_MODEL = "tiny_files_model"


@pytest.fixture(scope="module")
def tiny_files_ckpt(tmp_path_factory: pytest.TempPathFactory) -> str:
    """The weights file (path as str) of a tiny causal (streamable) 24 kHz mono codec named
    :data:`TINY_FILES_MODEL`: 4 codebooks, 1.5 or 3 kbps, seed 0 with random codebooks.
    Import it into a test module to use it there."""
    torch.manual_seed(0)
    model = random_codebooks(EncodecModel(EncodecConfig(name=TINY_FILES_MODEL, n_filters=4, dimension=16, lstm=1,
                                                        n_q=4, target_bandwidths=[1.5, 3.0])), 0).eval()
    return str(save_model(model, tmp_path_factory.mktemp("tiny") / "tiny.safetensors"))


WAV24 = torch.randn(1, 2400, generator=torch.Generator().manual_seed(0)) * 0.1


def run(capsys: pytest.CaptureFixture[str], *argv: object) -> tuple[int, str, str]:
    """``opencodec ARGV``: (exit status, stdout, stderr); the tiny codec compresses at 1.5 kbps."""
    args = [str(a) for a in argv]
    if args[0] == "compress" and any(a.endswith("tiny.safetensors") for a in args):
        args[1:1] = ["-b", "1.5"]
    code = cli.main(args)
    out, err = capsys.readouterr()
    return code, out, err


def _small_model(seed: int = 0) -> EncodecModel:
    torch.manual_seed(seed)
    return EncodecModel(EncodecConfig(name="tiny_small", n_filters=4, dimension=16, n_q=4, lstm=1))


LM_FILE = Path(__file__).resolve().parents[1] / "src" / "opencodec" / "weights" / "opencodec_lm_24khz.safetensors"


def _cli(*args: str) -> int:
    from opencodec.cli import main
    return main(list(args))


def _tone(path: Path, samples: int, rate: int, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    t = np.arange(samples) / rate
    wav = 0.3 * np.sin(2 * np.pi * rng.uniform(200, 800) * t) + 0.05 * rng.standard_normal(samples)
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, wav.astype(np.float32), rate)


def _bytes_name(folder: Path, raw: bytes, seed: int) -> Path:
    """A short WAV under ``folder`` whose relative name is the bytes ``raw`` (not UTF-8)."""
    _tone(folder / "tmp.wav", 2400, 24000, seed)
    target = os.fsencode(folder) + b"/" + raw
    try:
        os.makedirs(os.path.dirname(target), exist_ok=True)
        os.rename(os.fsencode(folder / "tmp.wav"), target)
    except OSError as exc:  # a file system that takes UTF-8 names only (macOS)
        pytest.skip(f"this file system refuses a name that is not UTF-8 ({exc})")
    return Path(os.fsdecode(target))


def noise_wav(path: Path, seconds: float = 0.5, rate: int = 24_000) -> Path:
    """A 16-bit WAV of uniform noise at 0.3 of full scale (seed 0) at ``path``; returns it."""
    rng = np.random.default_rng(0)
    sf.write(path, (0.3 * rng.uniform(-1, 1, int(seconds * rate))).astype(np.float32), rate, subtype="PCM_16")
    return path


def with_header_key(src: Path, dst: Path, key: str) -> Path:
    """``src`` (.ecdc) with an extra key in its JSON header: a file "written by another program"."""
    data = src.read_bytes()
    magic, version, size = struct.unpack("!4sBI", data[:9])
    header = json.loads(data[9:9 + size])
    header[key] = 1
    text = json.dumps(header).encode()
    dst.write_bytes(struct.pack("!4sBI", magic, version, len(text)) + text + data[9 + size:])
    return dst


def first_line_into_a_closed_pipe(argv: list[str]) -> tuple[bytes, str, int]:
    """Run ``python argv...``, read the first line of its stdout and close the pipe (as ``head -1``
    does); returns (that line, its stderr, its exit status)."""
    import subprocess
    import sys

    proc = subprocess.Popen([sys.executable, *argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None and proc.stderr is not None
    first = proc.stdout.readline()
    proc.stdout.close()
    err = proc.stderr.read().decode()
    return first, err, proc.wait(timeout=120)
