"""The one-line messages of ``opencodec compress/decompress/export-onnx`` and the Python API on
inputs a user gets wrong: an ``.ecdc`` file given to compress, an OUT ending in '/' that names
no folder, an input that resamples to no sample, a round trip's entropy-coded size warning, a
folder run whose files are all skipped, an export folder under a file, a device whose backend
torch lacks, and float64 audio beyond float32's range."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from opencodec import compress
from opencodec.argtypes import output_path_arg
from opencodec.audio import read_audio
from opencodec.audio_checks import ECDC_MAGIC, is_ecdc_data
from opencodec.bitstream.header import MAGIC
from opencodec.cli import codec as cli_codec
from opencodec.codec_files import FileResult, OutputOptions, plan_compress, plan_decompress
from opencodec.errors import AudioIOError, InvalidAudioError, UsageError
from opencodec.input_checks import check_device, check_finite
from opencodec.pretrained import load_model

from codec_helpers import _tiny, run, tiny_files_ckpt  # noqa: F401, F811 (a pytest fixture)


@pytest.fixture(autouse=True)
def _always_offline(offline: Path) -> Path:
    return offline


def tone(path: Path, samples: int = 2400, rate: int = 24_000) -> Path:
    t = np.arange(samples) / rate
    sf.write(path, (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32), rate)
    return path


@pytest.fixture()
def ecdc(tmp_path: Path, tiny_files_ckpt: str, capsys: pytest.CaptureFixture[str]) -> Path:
    """An ``.ecdc`` file of the tiny codec."""
    assert run(capsys, "compress", tone(tmp_path / "s.wav"), tmp_path / "x.ecdc", "-m", tiny_files_ckpt, "-q")[0] == 0
    return tmp_path / "x.ecdc"


# -- 1. an .ecdc file given to compress ----------------------------------------------------------
def test_compressing_an_ecdc_file_says_it_is_one(tmp_path: Path, ecdc: Path, tiny_files_ckpt: str,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    """Was "cannot read audio file x.ecdc: Format not recognised." (and, without OUT, "output
    x.ecdc is the input file itself"): the file is named as an .ecdc file, with decompress as the way."""
    said = f"cannot read audio file {ecdc}: it is an .ecdc file (audio compressed by opencodec), not audio: " \
           f"decode it with 'opencodec decompress'"
    for outs in ([tmp_path / "out.ecdc"], []):
        code, out, err = run(capsys, "compress", ecdc, *outs, "-m", tiny_files_ckpt)
        assert (code, out, err) == (1, "", f"opencodec: error: {said}\n")
    assert not (tmp_path / "out.ecdc").exists()
    renamed = tmp_path / "y.wav"  # by its bytes, whatever its name
    renamed.write_bytes(ecdc.read_bytes())
    with pytest.raises(AudioIOError, match=rf"^cannot read audio file {renamed}: it is an \.ecdc file "):
        read_audio(renamed)
    assert ECDC_MAGIC == MAGIC and is_ecdc_data(ecdc) and not is_ecdc_data(tmp_path / "s.wav")
    assert not is_ecdc_data(tmp_path / "missing.ecdc") and not is_ecdc_data(tmp_path)


# -- 2. OUT ending in '/' -------------------------------------------------------------------------
def test_out_ending_in_a_slash_names_a_folder(tmp_path: Path, ecdc: Path, tiny_files_ckpt: str,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    """Was "OUT must end in .ecdc, .wav, .flac", the '/' dropped. As for OUT nodir/name.ecdc, a
    missing folder is not created for a single file: the error says it is a folder and missing."""
    src = tone(tmp_path / "s1.wav")
    code, out, err = run(capsys, "compress", src, f"{tmp_path / 'nodir'}/", "-m", tiny_files_ckpt)
    assert (code, out) == (1, "") and err == (
        f"opencodec: error: output folder {tmp_path / 'nodir'}/ does not exist (OUT ending in '/' names a folder, "
        f"to write s1.ecdc into): create it first\n")
    assert not (tmp_path / "nodir").exists()
    code, _, err = run(capsys, "decompress", ecdc, f"{tmp_path / 'nodir'}/", "-m", tiny_files_ckpt)
    assert code == 1 and "nodir/ does not exist (OUT ending in '/' names a folder, to write x.wav into)" in err
    (tmp_path / "afile").write_bytes(b"")
    code, _, err = run(capsys, "compress", src, f"{tmp_path / 'afile'}/", "-m", tiny_files_ckpt)
    assert (code, err) == (1, f"opencodec: error: output folder {tmp_path / 'afile'}/ is a file, not a folder\n")
    with pytest.raises(FileNotFoundError, match=r"nodir/ does not exist \(OUT ending in '/'"):
        plan_compress(src, f"{tmp_path / 'nodir'}/", OutputOptions())  # the API's str keeps the '/' too
    fifo = tmp_path / "pipe"  # a pipe has no name to write into a folder: said so, as for an existing one
    os.mkfifo(fifo)
    with pytest.raises(UsageError, match=r"^input .*pipe is not a regular file \(a pipe or device\), and OUT is a "
                                         r"folder"):
        plan_decompress(fifo, f"{tmp_path / 'nodir'}/", OutputOptions())
    (tmp_path / "there").mkdir()  # an existing folder, with or without the '/'
    code, _, err = run(capsys, "compress", src, f"{tmp_path / 'there'}/", "-m", tiny_files_ckpt, "-q")
    assert code == 0 and (tmp_path / "there" / "s1.ecdc").read_bytes()[:4] == b"ECDC"
    assert output_path_arg("a/") == "a/" and output_path_arg("a.ecdc") == Path("a.ecdc")


# -- 3. an input that resamples to no sample ------------------------------------------------------
def test_an_input_resampling_to_no_sample_says_so(tmp_path: Path, tiny_files_ckpt: str,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    """10 samples at 768 kHz are 0.3 at 24 kHz: was "cannot compress empty audio (0 samples)"."""
    src = tmp_path / "tiny768.wav"
    sf.write(src, np.full(10, 0.1, np.float32), 768_000)
    for dst in ("t.ecdc", "t.wav"):
        code, out, err = run(capsys, "compress", src, tmp_path / dst, "-m", tiny_files_ckpt)
        assert (code, out) == (1, "") and err == (
            f"opencodec: error: {src}: 10 sample(s) at 768000 Hz resample to 0 samples at 24000 Hz (the model's "
            f"rate): too short to compress (at least 16 samples at 768000 Hz)\n")
        assert not (tmp_path / dst).exists()
    sf.write(src, np.full(16, 0.1, np.float32), 768_000)  # the least it names: one sample at 24 kHz
    assert run(capsys, "compress", src, tmp_path / "t.ecdc", "-m", tiny_files_ckpt, "-q")[0] == 0


# -- 4. a round trip's entropy-coded size ---------------------------------------------------------
def test_larger_entropy_coding_warning_of_a_round_trip_names_no_file_it_did_not_write(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A round trip (OUT .wav) keeps no .ecdc: the warning named the .wav as "the entropy-coded file"."""
    def result(dst: str) -> FileResult:
        return FileResult(tmp_path / "in.wav", tmp_path / dst, 1.0, size_bytes=946, plain_bytes=847,
                          header_extra=60, checksums=True, body_overhead=10)

    hint = "the entropy model predicts these codes poorly; plain coding (no --lm/--lm-model) is smaller"
    cli_codec._warn_larger([result("rt.wav")], 1)
    assert capsys.readouterr().err == (
        f"opencodec: warning: {tmp_path / 'in.wav'}: the round trip's entropy-coded data (946 bytes, written to "
        f"no file) is larger than plain coding (847 bytes): {hint}\n")
    cli_codec._warn_larger([result("a.ecdc")], 1)  # an .ecdc output: as before
    assert capsys.readouterr().err == (
        f"opencodec: warning: {tmp_path / 'a.ecdc'}: the entropy-coded file (946 bytes) is larger than plain "
        f"coding (847 bytes): {hint}\n")


# -- 5. a folder whose files are all skipped ------------------------------------------------------
def test_a_folder_run_skipping_every_file_prints_no_empty_bar(tmp_path: Path, tiny_files_ckpt: str,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "in").mkdir()
    tone(tmp_path / "in" / "a.wav")
    assert run(capsys, "compress", tmp_path / "in", tmp_path / "out", "-m", tiny_files_ckpt, "-j", "1")[0] == 0
    code, out, err = run(capsys, "compress", tmp_path / "in", tmp_path / "out", "-m", tiny_files_ckpt, "-j", "1",
                         "--skip-existing")
    assert (code, out) == (0, "") and err == (
        f"compress: 1 file(s) skipped, their output exists ({tmp_path / 'out' / 'a.ecdc'})\n"
        f"compress: 0 file(s) done, 1 skipped\n")  # was also "compress: 0file [00:00, ?file/s]"


# -- 6. export-onnx into a folder under a file ----------------------------------------------------
def test_export_onnx_under_a_file_names_the_file(tmp_path: Path, tiny_files_ckpt: str,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    """Was "cannot write afile/sub: File exists", after exporting every graph."""
    (tmp_path / "afile").write_bytes(b"")
    code, out, err = run(capsys, "export-onnx", tiny_files_ckpt, tmp_path / "afile" / "sub", "-b", "1.5")
    assert (code, out) == (1, "") and err == (
        f"opencodec: error: cannot create output folder {tmp_path / 'afile' / 'sub'}: {tmp_path / 'afile'} "
        f"is a file\n")
    code, _, err = run(capsys, "export-onnx", tiny_files_ckpt, tmp_path / "afile", "-b", "1.5")
    assert (code, err) == (1, f"opencodec: error: output {tmp_path / 'afile'} exists and is not a folder\n")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile"]  # no staging folder left


# -- 7. a device whose backend torch lacks --------------------------------------------------------
@pytest.mark.parametrize("device", ["hpu", "privateuseone"])
def test_a_device_without_its_torch_backend_is_not_available(device: str) -> None:
    """Was ``ModuleNotFoundError: No module named 'torch.hpu'`` from deep inside torch."""
    if importlib.util.find_spec(f"torch.{device}") is not None:
        pytest.skip(f"this torch has a torch.{device} module")
    said = rf"^load_model: device '{device}' is not available here \(this PyTorch has no {device} backend: "
    with pytest.raises(ValueError, match=said):
        check_device(device)
    with pytest.raises(ValueError, match=said):
        load_model(device=device)


# -- 8. float64 audio beyond float32's range ------------------------------------------------------
def test_float64_audio_beyond_float32_range_is_named_as_such() -> None:
    """Was "audio contains 2400 non-finite sample(s) (NaN or inf)": finite in float64."""
    model = _tiny()
    wav = torch.full((1, 2400), 0.1, dtype=torch.float64)
    wav[0, :3] = torch.tensor([1e300, -1e39, 3e38], dtype=torch.float64)  # 3e38 fits float32
    with pytest.raises(InvalidAudioError, match=r"^audio contains 2 sample\(s\) beyond float32's range \(peak "
                                                r"1e\+300, float32 reaches 3\.4e\+38\): the model computes in "
                                                r"float32, where they become infinite; full scale is 1\.0$"):
        compress(model, wav, 1.5)
    wav[0, 0] = float("inf")  # a real inf stays NaN or inf
    with pytest.raises(InvalidAudioError, match=r"^audio contains 1 non-finite sample\(s\) \(NaN or inf\)$"):
        check_finite(wav)
    check_finite(torch.full((1, 4), 3e38, dtype=torch.float64))  # within range: no error


def test_double_wav_beyond_float32_range_is_named_as_such(tmp_path: Path, tiny_files_ckpt: str,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "big64.wav"
    sf.write(path, np.array([0.1, 1e39, 0.2, -2e39] * 600), 24_000, subtype="DOUBLE")
    said = (f"cannot read audio file {path}: it holds 1200 sample(s) beyond float32's range (peak 2e+39, "
            f"float32 reaches 3.4e+38), in which audio is read and coded; full scale is 1.0")
    with pytest.raises(AudioIOError) as caught:
        read_audio(path)
    assert str(caught.value) == said
    code, _, err = run(capsys, "compress", path, tmp_path / "b.ecdc", "-m", tiny_files_ckpt)
    assert (code, err) == (1, f"opencodec: error: {said}\n")
    sf.write(path, np.array([0.1, np.inf] * 600), 24_000, subtype="DOUBLE")  # a real inf: as before
    with pytest.raises(AudioIOError, match=r": it holds NaN or infinite samples$"):
        read_audio(path)
