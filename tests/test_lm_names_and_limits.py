"""Entropy-model names and limits in words: ``check_interval`` and ``check_bits`` ranges,
long or unprintable names and paths shown shortened, ``opencodec info`` on weights files
and on compressed files of an unregistered or missing model, a codec name given as the
entropy model."""

from __future__ import annotations

import io
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import torch

from opencodec import EncodecConfig, EncodecModel, cli
from opencodec.bitstream import DeterministicCoding
from opencodec.compress import MAX_CHECK_INTERVAL, compress, decompress
from opencodec.ecdc_info import weights_file_kind
from opencodec.entropy import EntropyLM
from opencodec.errors import BitstreamError, CodecAsEntropyModelError, InvalidAudioError, ModelLoadError
from opencodec.model_registry import shown
from opencodec.pretrained import BUNDLED_DIR, load_lm_model, load_model, save_model

from train_helpers import _always_offline, run, tone_noise  # noqa: F401


@pytest.fixture(scope="module")
def pair() -> tuple[EncodecModel, EntropyLM]:
    """A small random codec (4 codebooks of 1024 bins) and an entropy model for it, in eval mode."""
    torch.manual_seed(1)
    codec = EncodecModel(EncodecConfig(name="left4_24khz", n_filters=4, dimension=16, ratios=[8, 5, 4, 2],
                                       lstm=1, n_q=4, bins=1024, target_bandwidths=[1.5, 3.0])).eval()
    torch.manual_seed(0)
    lm = EntropyLM(n_q=4, card=1024, dim=16, num_heads=2, num_layers=1, hidden_scale=2.0).eval()
    return codec, lm


def _wav() -> torch.Tensor:
    return 0.1 * torch.randn(1, 2400, generator=torch.Generator().manual_seed(0))


def _error(pair: tuple[EncodecModel, EntropyLM], **kwargs: object) -> str:
    codec, lm = pair
    with pytest.raises(InvalidAudioError) as info:
        compress(codec, _wav(), 1.5, lm=lm, deterministic=True, **kwargs)
    return str(info.value)


def test_a_check_interval_too_large_names_check_interval_and_its_range(pair) -> None:
    message = _error(pair, check_interval=2 ** 31)
    assert message == ("check_interval must be an integer in [1, 2147483647] (frames between checks), "
                       "got 2147483648")


def test_the_largest_check_interval_is_the_headers_and_is_written(pair) -> None:
    DeterministicCoding(lm_name="x", lm_hash="0" * 16, scheme=1, check_interval=MAX_CHECK_INTERVAL)
    with pytest.raises(BitstreamError, match="'ci'"):
        DeterministicCoding(lm_name="x", lm_hash="0" * 16, scheme=1, check_interval=MAX_CHECK_INTERVAL + 1)
    codec, lm = pair
    data = compress(codec, _wav(), 1.5, lm=lm, deterministic=True, check_interval=MAX_CHECK_INTERVAL)
    wav, rate = decompress(data, codec, lm)
    assert (tuple(wav.shape), rate) == ((1, 2400), 24000)


def test_a_long_lm_name_is_shown_shortened_with_its_length(pair) -> None:
    message = _error(pair, lm_name="x" * 5000)
    assert message == f"lm_name must be at most 200 characters (what the header holds), got '{'x' * 59}... " \
                      f"(5000 characters)"


def test_an_unprintable_lm_name_is_shown_shortened(pair) -> None:
    message = _error(pair, lm_name="y" * 150 + "\n")
    assert message.startswith(f"lm_name '{'y' * 59}... (151 characters): ECDC header field 'lmn'")
    assert "y" * 61 not in message and len(message) < 300


def test_a_huge_check_bits_is_refused_in_words(pair) -> None:
    assert _error(pair, check_bits=10 ** 5000) == "check_bits must be an integer in [0, 32], got an integer " \
                                                  "of 16610 bits"


def test_shown_cuts_long_values_and_keeps_short_ones() -> None:
    assert shown("abc") == "'abc'"
    assert shown("a" * 61) == "'" + "a" * 59 + "... (61 characters)"
    assert shown(b"\x00" * 100) == repr(b"\x00" * 100)[:60] + "... (100 bytes)"
    assert shown(7) == "7" and shown(2 ** 20000) == "an integer of 20001 bits"


@pytest.mark.parametrize("loader", [load_lm_model, load_model])
def test_a_name_too_long_for_a_file_is_a_short_model_load_error(loader) -> None:
    with pytest.raises(ModelLoadError) as info:
        loader("y" * 5000)
    assert "(5000 characters), and too long for a file name" in str(info.value)
    assert len(str(info.value)) < 200


def test_a_long_missing_path_is_shown_shortened_and_a_usual_one_whole(tmp_path: Path) -> None:
    deep = "d/" * 200 + "lm.safetensors"  # 414 characters, each part short enough for a file name
    with pytest.raises(ModelLoadError) as info:
        load_lm_model(deep)
    assert str(info.value).startswith(f"no entropy model named '{deep[:239]}... (414 characters) and no such file")
    with pytest.raises(ModelLoadError, match="^no entropy model named '.*/missing.th' and no such file"):
        load_lm_model(tmp_path / ("x" * 100) / "missing.th")


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """z.pt (torch.save's zip format), l.pt (its legacy format), w.safetensors (no opencodec keys)."""
    from safetensors.torch import save_file

    folder = tmp_path_factory.mktemp("weights")
    torch.save({"a": torch.zeros(2)}, folder / "z.pt")
    torch.save({"a": torch.zeros(2)}, folder / "l.pt", _use_new_zipfile_serialization=False)
    save_file({"x": torch.zeros(2)}, str(folder / "w.safetensors"))
    return folder


READS = "not an .ecdc file: opencodec info reads compressed files (.ecdc, written by opencodec compress)"


def test_info_on_weights_files_says_what_they_are_without_importing_torch(checkpoints: Path) -> None:
    codec, lm = BUNDLED_DIR / "opencodec_24khz.safetensors", BUNDLED_DIR / "opencodec_lm_24khz.safetensors"
    done = subprocess.run([sys.executable, "-X", "importtime", "-m", "opencodec", "info", str(codec), str(lm),
                           "z.pt", "l.pt", "w.safetensors"], cwd=checkpoints, capture_output=True, text=True,
                          timeout=120)
    lines = done.stderr.splitlines()
    imported = [line.rsplit("|", 1)[-1].strip() for line in lines if line.startswith("import time:")]
    errors = [line for line in lines if not line.startswith("import time:")]
    assert "opencodec.ecdc_info" in imported
    assert [name for name in imported if name == "torch" or name.startswith("torch.")] == []
    assert (done.returncode, done.stdout) == (1, "")
    assert errors == [
        f"opencodec: error: {codec}: a safetensors weights file (a codec, opencodec_24khz), {READS}",
        f"opencodec: error: {lm}: a safetensors weights file (an entropy model, for codec opencodec_24khz), "
        f"{READS}",
        f"opencodec: error: z.pt: a torch checkpoint (a zip archive as torch.save writes: .pt, .th), {READS}",
        f"opencodec: error: l.pt: a torch checkpoint (torch.save's legacy format), {READS}",
        f"opencodec: error: w.safetensors: a safetensors weights file, {READS}"]


def test_other_files_are_not_taken_for_weights() -> None:
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("notes.txt", "hello")
    for data in (archive.getvalue(), b"RIFF\x00\x00\x00\x00WAVEfmt ", b"\x05\x00\x00\x00\x00\x00\x00\x00{}}}}",
                 b"\xff" * 16, b"\x02\x00\x00\x00\x00\x00\x00\x00[]", b"PK\x03\x04", b""):
        assert weights_file_kind(io.BytesIO(data)) is None, data


@pytest.mark.parametrize(("codec", "own"), [("opencodec_24khz", "opencodec_lm_24khz"),
                                            ("encodec_48khz", "encodec_lm_48khz"),
                                            ("opencodec_24khz_v3", "opencodec_lm_24khz_v3")])
def test_a_codec_name_as_entropy_model_names_its_entropy_model(codec: str, own: str) -> None:
    with pytest.raises(CodecAsEntropyModelError, match=f"^'{codec}' is a codec, not an entropy model: its "
                                                       f"entropy model is '{own}'; a codec goes to -m/--model"):
        load_lm_model(codec)


def test_the_command_line_names_the_codecs_entropy_model(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    import numpy as np
    import soundfile as sf

    sf.write(tmp_path / "a.wav", np.zeros(2400, dtype=np.float32), 24000)
    assert cli.main(["compress", "-q", "--lm-model", "opencodec_24khz", str(tmp_path / "a.wav"),
                     str(tmp_path / "a.ecdc")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("opencodec: error: 'opencodec_24khz' is a codec, not an entropy model: its entropy "
                          "model is 'opencodec_lm_24khz'")
    assert not (tmp_path / "a.ecdc").exists()


def test_an_unknown_entropy_model_name_still_lists_the_known_ones() -> None:
    with pytest.raises(ModelLoadError, match="^no entropy model named 'nope' and no such file; known names: "
                                             "encodec_lm_24khz, "):
        load_lm_model("nope")


# -- 4a, 4b: info --------------------------------------------------------------------------------------------------
def test_info_on_an_unregistered_model_says_what_it_decodes_to(tmp_path: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    torch.manual_seed(0)
    model = EncodecModel(EncodecConfig(name="tiny_t3", n_filters=4, dimension=16, lstm=0, n_q=4,
                                       target_bandwidths=[1.5, 3.0]))
    weights = save_model(model, tmp_path / "tiny.safetensors")
    src = tone_noise(tmp_path / "a.wav", 0.2, 440.0, 0.01)
    assert run(capsys, "compress", src, tmp_path / "a.ecdc", "-m", weights, "-b", "1.5", "-q")[0] == 0
    code, out, _ = run(capsys, "info", tmp_path / "a.ecdc")
    assert code == 0 and "sample rate:   unknown (model not known)" in out
    assert "the sample rate and channels above" not in out
    assert ("decodes to:    the sample rate and channels of the model that wrote it (not known here: "
            "decompress with --model PATH to its weights)") in out
    code, out, _ = run(capsys, "info", tmp_path / "a.ecdc", "-m", weights)
    assert code == 0 and "sample rate:   24000 Hz" in out
    assert "decodes to:    the sample rate and channels above; decompress --rate HZ" in out


def test_info_on_a_missing_file_says_as_the_other_commands_do(tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "w" / "x.ecdc"
    code, out, err = run(capsys, "info", missing)
    assert (code, out, err) == (1, "", f"opencodec: error: input {missing} does not exist\n")
    assert run(capsys, "decompress", missing, tmp_path / "o.wav")[2] == err
