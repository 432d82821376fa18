"""Trust in ``.ecdc`` files and model names: default output names, ``info`` checks of codebooks
and release layouts, names with non-printable characters or over-long, a named model the header
rules out, ``decompress -m``, and the warnings about checksums and packet streams."""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from opencodec.audio import write_audio
from opencodec.bitstream import EcdcHeader, header_bytes, min_lm_body_size, parse_header, StreamLayout
from opencodec.bitstream.header import DeterministicCoding, MAX_MODEL_NAME_CHARS
from opencodec.cli import codec as cli_codec
from opencodec.cli.info import format_info
from opencodec.codec_files import FileResult, OutputOptions, plan_compress, plan_decompress
from opencodec.ecdc_info import describe_file, release_layout
from opencodec.errors import AudioIOError, BitstreamError, ModelLoadError, UsageError
from opencodec.file_jobs import single_output
from opencodec.identity import check_model_for_file, model_hash
from opencodec.model import EncodecModel
from opencodec.model_cache import CodecModels
from opencodec.pretrained import config_for_name, load_model
from opencodec.releases import codec_release, CODEC_RELEASES

from codec_helpers import run


V3 = codec_release("opencodec_24khz_v3")


V5 = codec_release("opencodec_24khz_v5")


LM_HASH = "afe7bbb406b50526"


@pytest.fixture(autouse=True)
def _offline(offline: Path) -> Path:
    return offline


@pytest.fixture(scope="module")
def v5() -> EncodecModel:
    return load_model("opencodec_24khz_v5")


def ecdc(path: Path, name: str = "opencodec_24khz_v5", digest: str | None = V5.short_hash, nc: int = 8,
         al: int = 72000, lm: str | None = None, body: bytes | None = None) -> Path:
    """A crafted ``.ecdc`` file: a header (``lm``: None plain, "official" version 0 entropy coded,
    "det" version 1) and ``body`` (default: zero bytes of a complete plain body of a 16 x 1024
    codebook, 75 Hz, 24 kHz model: 8 codebooks x 225 frames x 10 bits = 2250 bytes)."""
    det = DeterministicCoding("opencodec_lm_24khz_v5", LM_HASH, 1) if lm == "det" else None
    header = EcdcHeader(name, al, nc, lm is not None, deterministic=det, model_hash=digest,
                        lm_hash=LM_HASH if lm == "official" else None)
    if body is None:
        body = bytes(-(-nc * -(-al // 320) * 10 // 8))
    path.write_bytes(header_bytes(header) + body)
    return path


# -- 1: no default output name for a pipe or device --------------------------------------------------------
def test_an_input_that_is_not_a_file_needs_out(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    fifo = tmp_path / "fifo.ecdc"
    os.mkfifo(fifo)
    for src in (fifo, Path("/dev/stdin"), Path("/dev/null")):
        with pytest.raises(UsageError, match=r"is not a regular file \(a pipe or device\), and no OUT is given: "
                                             r"there is no file name to derive the output's from; give OUT"):
            plan_decompress(src, None, OutputOptions())
    with pytest.raises(UsageError, match="and OUT is a folder"):
        single_output(fifo, tmp_path, ".wav", (".wav",))
    assert plan_decompress(fifo, tmp_path / "o.wav", OutputOptions()).jobs[0].dst == tmp_path / "o.wav"
    # compress reads no pipe at all: its refusal says so, before any model loads
    with pytest.raises(UsageError, match="input .*fifo.ecdc is not a regular file .*stream-encode"):
        plan_compress(fifo, tmp_path / "o.ecdc", OutputOptions())
    # the command line: a usage error (2), not a file in /dev
    code, out, err = run(capsys, "decompress", "-q", "/dev/null")
    assert (code, out) == (2, "") and err.strip().endswith(
        "error: input /dev/null is not a regular file (a pipe or device), and no OUT is given: there is no "
        "file name to derive the output's from; give OUT, the output file (e.g. out.wav)")
    assert not Path("/dev/null.wav").exists()


def test_cannot_write_is_said_once(tmp_path: Path) -> None:
    target = tmp_path / "missing" / "x.wav"
    with pytest.raises(AudioIOError) as caught:
        write_audio(target, torch.zeros(1, 10), 8000)
    assert str(caught.value) == f"cannot write {target}: No such file or directory"


# -- 2: codebooks beyond the model's ---------------------------------------------------------------------------
@pytest.mark.parametrize("lm", [None, "official", "det"])
def test_info_refuses_more_codebooks_than_the_model_has_as_decompress_does(
        lm: str | None, tmp_path: Path, v5: EncodecModel, capsys: pytest.CaptureFixture[str]) -> None:
    path = ecdc(tmp_path / "nc17.ecdc", nc=17, lm=lm, body=bytes(2000))
    with pytest.raises(BitstreamError) as decompress_says:
        check_model_for_file(v5, "opencodec_24khz_v5", V5.short_hash, 17)
    reason = str(decompress_says.value)
    assert reason == ("the file uses 17 codebooks, but model 'opencodec_24khz_v5' has at most 16: it is not "
                      "the model that wrote it")
    with pytest.raises(BitstreamError) as info_says:
        describe_file(path)
    assert str(info_says.value) == reason
    code, out, err = run(capsys, "info", path)
    assert (code, out, err) == (1, "", f"opencodec: error: {path}: {reason}\n")
    code, _, err = run(capsys, "decompress", path, tmp_path / "o.wav", "-q")
    assert code == 1 and reason in err
    assert describe_file(ecdc(tmp_path / "nc16.ecdc", nc=16, lm=lm, body=bytes(4000)))["codebooks"] == 16


def test_info_refuses_more_codebooks_than_a_release_that_is_not_shipped_has(tmp_path: Path) -> None:
    with pytest.raises(BitstreamError, match="the file uses 17 codebooks, but model 'opencodec_24khz_v3' "
                                             "has at most 16"):
        describe_file(ecdc(tmp_path / "v3.ecdc", "opencodec_24khz_v3", V3.short_hash, nc=17))


# -- 3: completeness of every release's files, and of unknown models' --------------------------------------------
def test_release_layout_is_the_shipped_releases_layout() -> None:
    checked = []
    for release in CODEC_RELEASES:
        config = config_for_name(release.name)
        if config is not None:
            assert release_layout(release) == StreamLayout.from_config(config), release.name
            checked.append(release.name)
    # every shipped release was compared (the loop must not pass by comparing none)
    assert checked == [r.name for r in CODEC_RELEASES if r.file is not None] != []


def test_info_checks_files_of_a_release_that_is_not_shipped(tmp_path: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    whole = ecdc(tmp_path / "v3.ecdc", "opencodec_24khz_v3", V3.short_hash)
    assert whole.stat().st_size == 2347
    assert describe_file(whole)["body_bytes_missing"] == 0
    cut = tmp_path / "v3cut.ecdc"
    cut.write_bytes(whole.read_bytes()[:1500])
    assert describe_file(cut)["body_bytes_missing"] == 847
    code, out, err = run(capsys, "info", cut)
    assert code == 1 and "\ncomplete:      NO, truncated: 847 bytes missing\n" in out
    assert err == f"opencodec: error: {cut}: truncated: 847 bytes missing\n"
    coded = ecdc(tmp_path / "v3lm.ecdc", "opencodec_24khz_v3", V3.short_hash, lm="det", body=b"x")
    header = parse_header(coded.read_bytes())[0]
    minimum = min_lm_body_size(header, release_layout(V3), 1024)
    assert minimum > 1 and describe_file(coded)["lm_body_min_bytes"] == minimum
    assert run(capsys, "info", coded)[0] == 1


def test_info_says_completeness_is_unknown_for_an_unknown_model(tmp_path: Path) -> None:
    info = describe_file(ecdc(tmp_path / "c.ecdc", "my_model", "0123456789abcdef"))
    assert info["body_bytes_missing"] is None
    assert ("complete:      unknown (model not known: pass -m/--model PATH, the weights that wrote it)"
            in format_info(info).splitlines())


# -- 4: model names that could fake lines ----------------------------------------------------------------------------
FAKE = "opencodec_24khz_v5\nweights:       hash e701927ffb852e18, release opencodec_24khz_v5 (shipped)"


@pytest.mark.parametrize("key,name,bad", [
    ("m", FAKE, r"'\\n' \(U\+000A\)"), ("m", "x\x1b[31mred", r"'\\x1b' \(U\+001B\)"),
    ("m", "abc\u202edef", r"'\\u202e' \(U\+202E\)"), ("m", "tab\there", r"'\\t' \(U\+0009\)"),
    ("lmn", "lm\nfake", r"'\\n' \(U\+000A\)")])
def test_a_name_with_a_non_printable_character_is_refused(key: str, name: str, bad: str, tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    path = ecdc(tmp_path / "n.ecdc", lm="det")
    data = path.read_bytes()
    size = struct.unpack(">I", data[5:9])[0]
    old = '"opencodec_lm_24khz_v5"' if key == "lmn" else '"opencodec_24khz_v5"'
    text = data[9:9 + size].decode().replace(old, json.dumps(name), 1).encode()
    path.write_bytes(data[:5] + struct.pack(">I", len(text)) + text + data[9 + size:])
    what = "entropy model name" if key == "lmn" else "model name"
    with pytest.raises(BitstreamError, match=rf"^ECDC header field '{key}' \({what}\): expected printable "
                                             rf"characters only \(readers print the name\), got {bad} in str "):
        parse_header(path.read_bytes())
    code, out, err = run(capsys, "info", path)
    assert (code, out) == (1, "") and err.count("\n") == 1 and "\x1b" not in err and "\u202e" not in err
    with pytest.raises(BitstreamError, match="expected printable characters only"):  # nor can a writer make one
        if key == "m":
            EcdcHeader(name, 1, 1, False)
        else:
            DeterministicCoding(name, LM_HASH, 1)


def test_model_name_length_and_legitimate_names(tmp_path: Path) -> None:
    longest = "n" * MAX_MODEL_NAME_CHARS
    assert parse_header(header_bytes(EcdcHeader(longest, 1, 1, False)))[0].model_name == longest
    with pytest.raises(BitstreamError, match=rf"'m' \(model name\): expected at most {MAX_MODEL_NAME_CHARS} "
                                             rf"characters, got {MAX_MODEL_NAME_CHARS + 1}"):
        EcdcHeader(longest + "n", 1, 1, False)
    for name, digest in (("encodec_24khz", None), ("encodec_48khz", None), ("opencodec_24khz_v5", V5.short_hash),
                         ("encodec_24khz_custom", "0123456789abcdef"), ("modèle de test (v2)", None)):
        header = EcdcHeader(name, 1, 1, False, model_hash=digest)
        assert parse_header(header_bytes(header))[0] == header


# -- 5: decompress -m NAME is checked against the header before it loads -----------------------------------------------
def test_a_named_model_the_header_rules_out_is_never_loaded(v5: EncodecModel) -> None:
    calls: list[str] = []

    def load(name: str) -> EncodecModel:
        calls.append(name)
        if name == "opencodec_24khz_v3":
            raise ModelLoadError("v3 is not shipped")
        return v5

    digest = model_hash(v5)
    for given in ("encodec_24khz", "opencodec_24khz_v3", "opencodec_24khz_v4"):
        models = CodecModels(given, load)
        with pytest.raises(BitstreamError, match=rf"^the file was written by model 'opencodec_24khz_v5' with "
                                                 rf"weights hash {digest}, but the model given is '{given}', "
                                                 rf"whose weights are others"):
            models.get("opencodec_24khz_v5", digest, 8)
    with pytest.raises(BitstreamError, match="the file uses 17 codebooks, but model 'opencodec_24khz_v4' has at most 16"):
        CodecModels("opencodec_24khz_v4", load).get("opencodec_24khz_v5", digest, 17)
    with pytest.raises(BitstreamError, match="written by model 'encodec_48khz', but the model given is 'encodec_24khz'"):
        CodecModels("encodec_24khz", load).get("encodec_48khz", None, 2)
    assert calls == []
    models = CodecModels("opencodec_24khz_v5", load)
    assert calls == [] and models.get("opencodec_24khz_v5", digest, 8) is v5
    assert models.get("opencodec_24khz_v5", digest, 4) is v5 and calls == ["opencodec_24khz_v5"]
    v3 = CodecModels("opencodec_24khz_v3", load)  # a file of v3: loads, and a failure is remembered
    for _ in range(2):
        with pytest.raises(ModelLoadError, match="v3 is not shipped"):
            v3.get("opencodec_24khz_v3", V3.short_hash, 8)
    assert calls == ["opencodec_24khz_v5", "opencodec_24khz_v3"]
    CodecModels("/some/weights.safetensors", load)  # a path loads at once
    assert calls[-1] == "/some/weights.safetensors"


def test_decompress_dash_m_official_on_a_release_file_asks_for_no_weights(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = ecdc(tmp_path / "p.ecdc")
    code, _, err = run(capsys, "decompress", path, tmp_path / "o.wav", "-m", "encodec_24khz", "-q")
    assert code == 1 and err == (
        f"opencodec: error: {path}: the file was written by model 'opencodec_24khz_v5' with weights hash "
        f"{V5.short_hash}, but the model given is 'encodec_24khz', whose weights are others: pass the model "
        "that wrote it (or no -m: the header's model)\n")
    assert not (tmp_path / "o.wav").exists()


# -- 6: wordings ------------------------------------------------------------------------------------------------------
def test_larger_than_plain_warning_mentions_checksums_only_for_the_deterministic_format(
        capsys: pytest.CaptureFixture[str]) -> None:
    for checksums, said in ((False, "(26 bytes more: the entropy model's hash) outweighs what"),
                            (True, "(26 bytes more: the entropy model's name and hash) and checksums outweigh")):
        result = FileResult(Path("a.wav"), Path("a.ecdc"), 0.1, size_bytes=205, plain_bytes=176,
                            header_extra=26, checksums=checksums, body_overhead=7)
        cli_codec._warn_larger([result], 1)
        err = capsys.readouterr().err
        assert said in err and ("checksums" in err) == checksums, err


@pytest.mark.parametrize("fmt,said", [
    ("official", "bytes more: the entropy model's hash) outweighs what the entropy model saves"),
    ("deterministic", "bytes more: the entropy model's name and hash) and checksums outweigh what")])
def test_compress_warning_names_checksums_only_for_the_deterministic_format(
        fmt: str, said: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rng = np.random.default_rng(0)  # half a second the bundled entropy model codes into fewer bytes than plain
    x = 0.3 * np.sin(2 * np.pi * 440 * np.arange(12_000) / 24_000) + 0.05 * rng.standard_normal(12_000)
    src = tmp_path / "short.wav"
    sf.write(src, x.astype(np.float32), 24_000, subtype="FLOAT")
    code, _, err = run(capsys, "compress", src, tmp_path / "o.ecdc", "-b", "1.5", "--lm-format", fmt, "-q")
    assert code == 0 and err.count("warning:") == 1 and said in err
    assert ("checksums" in err) == (fmt == "deterministic")


def test_info_names_a_packet_stream(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "s.ocs"
    path.write_bytes(b"OCSPH" + bytes(30))
    code, _, err = run(capsys, "info", path)
    assert (code, err) == (1, f"opencodec: error: {path}: not an ECDC file: magic expected b'ECDC', got "
                              f"b'OCSP' (a packet stream: use opencodec stream-decode)\n")
    other = tmp_path / "r.ecdc"
    other.write_bytes(b"RIFF" + bytes(30))
    assert run(capsys, "info", other)[2].endswith("got b'RIFF'\n")


def test_info_model_that_no_header_names_is_warned_about_once(tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    a, b = ecdc(tmp_path / "a.ecdc"), ecdc(tmp_path / "b.ecdc")
    code, _, err = run(capsys, "info", a, b, "-m", "opencodec_24khz_v4")
    assert code == 0 and err == (
        f"opencodec: warning: -m/--model 'opencodec_24khz_v4' was not used for 2 of 2 files, whose headers "
        f"name another model (e.g. {a}: 'opencodec_24khz_v5'): it describes only files that name it\n")
    code, _, err = run(capsys, "info", a, "-m", "opencodec_24khz_v5")
    assert (code, err) == (0, "")
