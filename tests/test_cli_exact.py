"""Exact checks of the file-level public API, the CLI layer and the ONNX export, each able
to fail for a plausible one-token bug: str and path-like paths, option
defaults and types, exit statuses, the ``info`` numbers, the sizes and reports of entropy-coded
outputs, the export's names and shapes."""

from __future__ import annotations

import json
import struct
import typing as tp
from pathlib import Path

import pytest

from opencodec import codec_files, ecdc_info

FIXTURES = Path(__file__).parent / "fixtures"
PLAIN = FIXTURES / "stage3_621d886_6kbps.ecdc"  # plain body, 8 codebooks, 19200 samples at 24 kHz


class _PathLike:
    """A path-like object that is not a ``Path`` (as ``os.DirEntry`` or a library's own)."""

    def __init__(self, path: str):
        self._path = path

    def __fspath__(self) -> str:
        return self._path


# ------------------------------------------------------------------------------------------
# str and os.PathLike paths (describe_file crashed with "'str' object has no attribute 'is_file'")
# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", [str, Path, _PathLike])
def test_describe_file_takes_str_and_path_like(kind: tp.Callable[[str], tp.Any]) -> None:
    info = ecdc_info.describe_file(kind(str(PLAIN)))
    assert info["file"] == str(PLAIN)
    assert (info["samples"], info["codebooks"], info["size_bytes"], info["body_bytes"]) == (19200, 8, 668, 600)
    assert info["body_bytes_missing"] == 0


@pytest.mark.parametrize("kind", [str, Path, _PathLike])
def test_is_ecdc_file_takes_str_and_path_like(kind: tp.Callable[[str], tp.Any]) -> None:
    assert ecdc_info.is_ecdc_file(kind("a/b.ECDC")) is True
    assert ecdc_info.is_ecdc_file(kind("a/b.ecdc.wav")) is False


@pytest.mark.parametrize("kind", [str, _PathLike])
def test_plans_take_str_and_path_like(tmp_path: Path, kind: tp.Callable[[str], tp.Any]) -> None:
    wav = tmp_path / "in.wav"
    wav.write_bytes(b"")  # planning looks at names and existence only
    plan = codec_files.plan_compress(kind(str(wav)), None, codec_files.OutputOptions())
    assert [(j.src, j.dst) for j in plan.jobs] == [(wav, tmp_path / "in.ecdc")]
    plan = codec_files.plan_compress(kind(str(wav)), kind(str(tmp_path / "o.flac")), codec_files.OutputOptions())
    assert [(j.src, j.dst) for j in plan.jobs] == [(wav, tmp_path / "o.flac")]
    plan = codec_files.plan_decompress(kind(str(PLAIN)), kind(str(tmp_path / "x.wav")), codec_files.OutputOptions())
    assert [(j.src, j.dst) for j in plan.jobs] == [(PLAIN, tmp_path / "x.wav")]
    assert isinstance(plan.jobs[0].src, Path) and isinstance(plan.jobs[0].dst, Path)
    with pytest.raises(FileExistsError):
        codec_files.plan_compress(kind(str(wav)), kind(str(PLAIN)), codec_files.OutputOptions())


# ------------------------------------------------------------------------------------------
# The body's checks at their bounds
# ------------------------------------------------------------------------------------------
def test_read_body_refuses_one_codebook_more_than_the_model_has() -> None:
    from opencodec.bitstream import EcdcHeader, StreamLayout, packed_size, read_body
    from opencodec.errors import BitstreamError

    layout = StreamLayout(model_name="t", n_q=4, bits=3, hop_length=8, normalize=False)
    ok = EcdcHeader("t", 16, 4, False)
    frames = read_body(bytes(packed_size(4 * 2, 3)), ok, layout)
    assert [tuple(f.codes.shape) for f in frames] == [(1, 4, 2)]
    over = EcdcHeader("t", 16, 5, False)
    with pytest.raises(BitstreamError, match=r"'nc' \(number of codebooks\): model 't' has at most 4, got 5"):
        read_body(bytes(packed_size(5 * 2, 3)), over, layout)


# ------------------------------------------------------------------------------------------
# ecdc_info: weights files, release notes, release layouts
# ------------------------------------------------------------------------------------------
def _safetensors_bytes(header: dict[str, tp.Any]) -> bytes:
    text = json.dumps(header).encode()
    return struct.pack("<Q", len(text)) + text  # the size is little endian (safetensors' format)


def test_weights_file_kind_reads_the_little_endian_header_size() -> None:
    import io

    codec = _safetensors_bytes({"__metadata__": {"opencodec_config": json.dumps({"name": "my_codec"})},
                                "encoder.model.0.conv.weight": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}})
    assert ecdc_info.weights_file_kind(io.BytesIO(codec)) == "a safetensors weights file (a codec, my_codec)"
    lm = _safetensors_bytes({"emb.0.weight": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}})
    assert ecdc_info.weights_file_kind(io.BytesIO(lm)) == "a safetensors weights file (an entropy model)"


def test_release_note_tells_the_release_from_other_weights() -> None:
    from opencodec.releases import codec_release

    v4 = codec_release("opencodec_24khz_v4")
    v1 = codec_release("opencodec_24khz_v1")
    assert v4 is not None and v1 is not None
    assert ecdc_info.release_note(v4.name, v4.short_hash) == "release opencodec_24khz_v4 (shipped)"
    assert ecdc_info.release_note(v1.name, v1.short_hash) == \
        f"release opencodec_24khz_v1 (not shipped, commit {v1.commit[:7]} has it)"
    assert ecdc_info.release_note(v4.name, "0" * 16) == \
        f"NOT release opencodec_24khz_v4 (its hash is {v4.short_hash}): other weights"
    assert ecdc_info.release_note("someone_else", v4.short_hash) == "the weights of release opencodec_24khz_v4"
    assert ecdc_info.release_note("someone_else", "0" * 16) == \
        "not a registered release: decode with --model PATH to its weights"


def test_release_layout_needs_a_whole_hop_and_a_power_of_two_codebook() -> None:
    import dataclasses

    from opencodec.releases import codec_release

    v1 = codec_release("opencodec_24khz_v1")
    assert v1 is not None
    layout = ecdc_info.release_layout(v1)
    assert layout is not None and (layout.model_name, layout.n_q, layout.bits, layout.hop_length) == \
        (v1.name, 16, 10, 320)
    assert ecdc_info.release_layout(dataclasses.replace(v1, frame_rate=77)) is None  # 24000 / 77: no whole hop
    assert ecdc_info.release_layout(dataclasses.replace(v1, bins=1000)) is None
    assert ecdc_info.release_layout(v1, "other").model_name == "other"  # type: ignore[union-attr]


# ------------------------------------------------------------------------------------------
# codec_files: the sizes reported for entropy-coded outputs
# ------------------------------------------------------------------------------------------
def test_body_extra_leaves_out_the_header_and_the_body_overhead() -> None:
    result = codec_files.FileResult(Path("a"), Path("b"), 1.0, size_bytes=500, plain_bytes=450,
                                    header_extra=30, body_overhead=7)
    assert result.body_extra == 500 - 450 - 30 - 7
    assert codec_files.FileResult(Path("a"), Path("b"), 1.0, size_bytes=500).body_extra is None


def test_entropy_coded_sizes_say_which_format_has_checksums() -> None:
    from opencodec.bitstream import DeterministicCoding, EcdcHeader, StreamLayout
    from opencodec.ecdc_sizes import body_overhead, header_extra, plain_size
    from opencodec.model import EncodecModel
    from opencodec.model_config import config_for_name

    config = config_for_name("opencodec_24khz_v5")
    assert config is not None
    model = EncodecModel(config)  # random weights: the sizes depend on the configuration only
    det = EcdcHeader(config.name, 24000, 8, True, DeterministicCoding("opencodec_lm_24khz", "0" * 16, 1),
                     model_hash="2" * 16)
    official = EcdcHeader(config.name, 24000, 8, True, model_hash="2" * 16, lm_hash="1" * 16)
    for header, checksums in ((det, True), (official, False)):
        result = codec_files.FileResult(Path("a"), Path("b"), 1.0, size_bytes=900)
        codec_files._entropy_coded_sizes(result, header, model)
        assert result.checksums is checksums
        assert (result.plain_bytes, result.header_extra, result.body_overhead) == \
            (plain_size(header, model), header_extra(header), body_overhead(header, StreamLayout.from_model(model)))
    assert plain_size(det, model) == plain_size(official, model)


# ------------------------------------------------------------------------------------------
# Option types: the bounds and the messages
# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("parse, text, message", [
    ("bandwidth_arg", "0", "invalid bandwidth '0': must be a positive number of kbps"),
    ("bandwidth_arg", "-3", "invalid bandwidth '-3': must be a positive number of kbps"),
    ("bandwidth_arg", "inf", "invalid bandwidth 'inf': must be a positive number of kbps"),
    ("bandwidth_arg", "nan", "invalid bandwidth 'nan': must be a positive number of kbps"),
    ("bandwidth_arg", "six", "invalid bandwidth 'six': expected a number of kbps"),
    ("positive_float", "0", "must be a positive number, got 0"),
    ("non_negative_float", "-0.5", "must be a number >= 0, got -0.5"),
    ("non_negative_float", "inf", "must be a number >= 0, got inf"),
    ("positive_int", "0", "must be at least 1, got 0"),
    ("port_arg", "65536", "port 65536 is not in 0..65535 (0 picks a free one)"),
    ("port_arg", "-1", "port -1 is not in 0..65535 (0 picks a free one)"),
    ("port_arg", "80x", "invalid port '80x'"),
    ("channels_arg", "0", "must be between 1 and 64 channels, got 0"),
    ("channels_arg", "65", "must be between 1 and 64 channels, got 65"),
    ("channels_arg", "1.5", "not a whole number: '1.5'"),
    ("sample_rate_arg", "999", "must be between 1000 and 768000, got 999"),
    ("sample_rate_arg", "768001", "must be between 1000 and 768000, got 768001"),
])
def test_option_types_refuse_with_their_message(parse: str, text: str, message: str) -> None:
    import argparse

    from opencodec import argtypes

    with pytest.raises(argparse.ArgumentTypeError) as exc_info:
        getattr(argtypes, parse)(text)
    assert str(exc_info.value) == message


def test_option_types_take_their_bounds() -> None:
    from opencodec import argtypes

    assert argtypes.bandwidth_arg("1.5") == 1.5 and argtypes.non_negative_float("0") == 0.0
    assert argtypes.positive_int("1") == 1 and argtypes.count_arg("0") == 0
    assert (argtypes.port_arg("0"), argtypes.port_arg("65535")) == (0, 65535)
    assert (argtypes.channels_arg("1"), argtypes.channels_arg("64")) == (1, 64)
    assert (argtypes.sample_rate_arg("1000"), argtypes.sample_rate_arg("768000")) == (1000, 768000)


@pytest.mark.parametrize("command, io", [("compress", ["a.wav"]), ("decompress", ["a.ecdc"])])
def test_codec_commands_parse_their_defaults_and_refuse_zero_jobs(
        command: str, io: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    from opencodec.cli import build_parser

    args = build_parser([command]).parse_args([command, *io])
    assert (args.force, args.skip_existing, args.rescale, args.float32, args.jobs, args.rate, args.channels,
            args.fast, args.model, args.lm_model, args.lm) == \
        (False, False, False, False, None, None, None, False, None, None, False)
    if command == "compress":
        assert args.bandwidth == 6.0 and args.lm_format is None
    args = build_parser([command]).parse_args([command, *io, "-f", "-j", "3", "--fast", "-q"])
    assert (args.force, args.jobs, args.fast, args.quiet) == (True, 3, True, True)
    for bad in (["-j", "0"], ["--channels", "0"], ["--rate", "999"]):
        with pytest.raises(SystemExit) as exit_info:
            build_parser([command]).parse_args([command, *io, *bad])
        assert exit_info.value.code == 2
        assert f"argument {bad[0]}" in capsys.readouterr().err


def test_export_onnx_parses_its_defaults() -> None:
    from opencodec.cli import build_parser

    args = build_parser(["export-onnx"]).parse_args(["export-onnx", "m", "out"])
    assert (args.model, args.out_dir, args.bandwidth, args.force) == ("m", "out", 6.0, False)
    assert build_parser(["export-onnx"]).parse_args(["export-onnx", "m", "out", "-f", "-b", "12"]).force is True


# ------------------------------------------------------------------------------------------
# CLI pieces: messages and the size warning's reasons
# ------------------------------------------------------------------------------------------
def test_describe_prefixes_the_path_once() -> None:
    from opencodec.cli.common import describe

    assert describe(ValueError("bad"), Path("x.ecdc")) == "x.ecdc: bad"
    assert describe(ValueError("x.ecdc is bad"), Path("x.ecdc")) == "x.ecdc is bad"
    assert describe(FileNotFoundError(2, "No such file or directory", "y.wav"), Path("y.wav")) == \
        "y.wav: No such file or directory"
    assert describe(PermissionError(13, "Permission denied", "/o/y.wav"), Path("y.wav")) == \
        "/o/y.wav: Permission denied"
    assert describe(RuntimeError(), Path("z")) == "z: RuntimeError"


def test_header_bound_needs_a_body_smaller_than_plain() -> None:
    from opencodec.cli.codec import _header_bound

    def result(extra: int) -> codec_files.FileResult:
        return codec_files.FileResult(Path("a"), Path("b"), 1.0, size_bytes=100 + extra, plain_bytes=90,
                                      header_extra=10, body_overhead=0)

    assert [_header_bound(result(e)) for e in (-1, 0, 1)] == [True, False, False]


# ------------------------------------------------------------------------------------------
# export-onnx: meta.json says what the graphs take and give; -f decides over existing files
# ------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def onnx_export(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from opencodec.cli import main

    out = tmp_path_factory.mktemp("onnx") / "export"
    assert main(["-q", "export-onnx", "opencodec_24khz", str(out), "-b", "6"]) == 0
    return out


def _graph_io(values: tp.Any) -> list[dict[str, tp.Any]]:
    import onnx

    dtypes = {onnx.TensorProto.FLOAT: "float32", onnx.TensorProto.INT64: "int64"}
    return [{"name": v.name,
             "shape": [d.dim_param if d.HasField("dim_param") else d.dim_value for d in v.type.tensor_type.shape.dim],
             "dtype": dtypes.get(v.type.tensor_type.elem_type, v.type.tensor_type.elem_type)} for v in values]


def test_onnx_meta_describes_every_graph_exactly(onnx_export: Path) -> None:
    import onnx

    from opencodec.export.onnx import GRAPHS

    meta = json.loads((onnx_export / "meta.json").read_text())
    assert sorted(meta["graphs"]) == sorted(GRAPHS)
    for name in GRAPHS:
        graph = onnx.load(str(onnx_export / name), load_external_data=False).graph
        assert _graph_io(graph.input) == meta["graphs"][name]["inputs"], name
        outputs = _graph_io(graph.output)
        for out, said in zip(outputs, meta["graphs"][name]["outputs"]):  # the exporter's shape inference
            out["shape"] = [s if isinstance(d, str) and isinstance(s, int) else d  # leaves some fixed lengths
                            for d, s in zip(out["shape"], said["shape"])]  # symbolic ("Slice..._dim_2", even "batch")
        assert outputs == meta["graphs"][name]["outputs"], name
    hop, k, w = meta["hop_length"], meta["num_codebooks"], meta["warmup_frames"]
    assert (hop, k, w, meta["codebook_size"], meta["frame_rate"]) == (320, 8, 7, 1024, 75)
    assert meta["graphs"]["encoder_start.onnx"]["outputs"][0] == \
        {"name": "codes", "shape": ["batch", k, w], "dtype": "int64"}
    assert meta["graphs"]["decoder_step.onnx"]["outputs"][0] == \
        {"name": "audio", "shape": ["batch", 1, hop], "dtype": "float32"}
    for side in ("encoder", "decoder"):
        states = meta["state"][side]
        assert states and all(s["initial"] == {"from": f"{side}_start.onnx", "output": s["name"]} for s in states)
        assert [o["name"] for o in meta["graphs"][f"{side}_step.onnx"]["outputs"][1:]] == \
            [s["name"] + ".next" for s in states]


def test_onnx_export_refuses_existing_files_without_force(onnx_export: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    from opencodec.cli import main

    before = {p.name: p.stat().st_mtime_ns for p in onnx_export.iterdir()}
    assert main(["-q", "export-onnx", "opencodec_24khz", str(onnx_export), "-b", "6"]) == 1
    err = capsys.readouterr().err
    assert "already exists" in err and "-f" in err
    assert {p.name: p.stat().st_mtime_ns for p in onnx_export.iterdir()} == before
    in_the_way = onnx_export.parent / "a_file"
    in_the_way.write_text("mine")
    assert main(["-q", "export-onnx", "opencodec_24khz", str(in_the_way), "-b", "6"]) == 1
    assert f"output {in_the_way} exists and is not a folder" in capsys.readouterr().err
    assert in_the_way.read_text() == "mine"


def test_min_lm_body_size_counts_every_frame() -> None:
    """With 2**22 bins a code costs at least -log2((2**24 - 2**23 + 2) / 2**24), just under 1 bit,
    so the bound is (frames x codebooks - 1) / 16 bytes, rounded down, plus the scales: a
    frame count off by one (a partial frame, a partial last segment) changes it."""
    from opencodec.bitstream import EcdcHeader, StreamLayout, min_lm_body_size

    plain = StreamLayout(model_name="t", n_q=16, bits=22, hop_length=8, normalize=False)
    # 129 samples: 17 frames (the last one partial), 17 x 16 codes -> int(16.99999) = 16 bytes
    assert min_lm_body_size(EcdcHeader("t", 8 * 16 + 1, 16, True), plain, 1 << 22) == 16
    assert min_lm_body_size(EcdcHeader("t", 8 * 16, 16, True), plain, 1 << 22) == 15
    segmented = StreamLayout(model_name="t", n_q=16, bits=22, hop_length=8, normalize=True,
                             segment_length=64, segment_stride=60)
    # 130 samples: segments of 64, 64 and 10 samples, 8 + 8 + 2 frames; 3 scales of 4 bytes
    assert segmented.total_frames(130) == 18
    assert min_lm_body_size(EcdcHeader("t", 130, 16, True), segmented, 1 << 22) == 3 * 4 + 17


# ------------------------------------------------------------------------------------------
# The commands end to end: quiet mode, the report line, the default format, exit statuses
# ------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def short_wav(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import numpy as np
    import soundfile as sf

    path = tmp_path_factory.mktemp("wav") / "tone.wav"
    t = np.arange(12000) / 24000  # 0.5 s at 24 kHz, mono
    rng = np.random.default_rng(0)
    sf.write(path, (0.3 * np.sin(2 * np.pi * 440 * t) + 0.01 * rng.standard_normal(t.size)).astype("float32"),
             24000, subtype="PCM_16")
    return path


def test_quiet_compress_prints_nothing(short_wav: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from opencodec.cli import main

    out = tmp_path / "q.ecdc"
    assert main(["-q", "compress", str(short_wav), str(out)]) == 0
    assert capsys.readouterr() == ("", "")
    assert out.stat().st_size > 0
    assert main(["decompress", str(out), str(tmp_path / "q.wav"), "-q"]) == 0
    assert capsys.readouterr() == ("", "")


def test_compress_reports_its_size_and_bitrate(short_wav: Path, tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    from opencodec.cli import main

    out = tmp_path / "r.ecdc"
    assert main(["compress", str(short_wav), str(out)]) == 0
    size = out.stat().st_size
    lines = [line for line in capsys.readouterr().err.splitlines() if " -> " in line]
    assert len(lines) == 1
    assert lines[0].startswith(f"{short_wav} -> {out}: 0.50 s at 6 kbps (")
    assert lines[0].endswith(f"), {size} bytes, {size * 8 / 0.5 / 1000:.2f} kbps")


def test_compress_lm_writes_the_deterministic_format_by_default(short_wav: Path, tmp_path: Path) -> None:
    from opencodec.cli import main

    out = tmp_path / "lm.ecdc"
    assert main(["-q", "compress", str(short_wav), str(out), "--lm"]) == 0
    info = ecdc_info.describe_file(out)
    assert info["entropy_coded"] is True and info["format_version"] == 1
    official = tmp_path / "lm0.ecdc"
    assert main(["-q", "compress", str(short_wav), str(official), "--lm-format", "official"]) == 0
    info = ecdc_info.describe_file(official)
    assert info["entropy_coded"] is True and "format_version" not in info  # --lm-format implies --lm


def test_exit_statuses(short_wav: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from opencodec.cli import main

    assert main([]) == 2
    assert "a command is required" in capsys.readouterr().err
    assert main(["compress", str(short_wav), "--force", "--skip-existing"]) == 2  # a usage error
    assert "--force and --skip-existing contradict each other" in capsys.readouterr().err
    bad = tmp_path / "bad.ecdc"
    bad.write_bytes(b"not an ecdc file at all")
    assert main(["-q", "decompress", str(bad), str(tmp_path / "bad.wav")]) == 1  # an expected error
    assert capsys.readouterr().err.startswith("opencodec: error: ")
    assert not (tmp_path / "bad.wav").exists()


def test_info_into_a_closed_pipe_exits_as_sigpipe(tmp_path: Path) -> None:
    import shutil
    import subprocess
    import sys

    for i in range(200):  # ~150 kB of output: more than the pipe and stdout's buffer hold
        shutil.copy(PLAIN, tmp_path / f"f{i:03d}.ecdc")
    proc = subprocess.Popen([sys.executable, "-m", "opencodec", "info", str(tmp_path)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.read(100)
    proc.stdout.close()
    err = proc.stderr.read()
    assert proc.wait(timeout=60) == 141, err
    assert err == b""


def test_quiet_turns_off_the_library_progress_bars(capsys: pytest.CaptureFixture[str]) -> None:
    """-q gives the library no progress factory (the bars of long or segmented inputs)."""
    import argparse

    from opencodec.cli.common import progress_bars

    assert progress_bars(argparse.Namespace(quiet=True)) is None
    factory = progress_bars(argparse.Namespace(quiet=False))
    assert factory is not None
    with factory("decoding", "frame") as update:
        update(3, 3)
    assert "decoding" in capsys.readouterr().err


def test_checkpoint_hash_prefix_is_after_the_last_dash(tmp_path: Path) -> None:
    """``name-<sha256 prefix>.ext``: a name with dashes of its own still takes the last part."""
    import hashlib

    from opencodec.official_files import sha256_prefix_ok

    path = tmp_path / "weights.th"
    path.write_bytes(b"some weights")
    prefix = hashlib.sha256(b"some weights").hexdigest()[:8]
    assert sha256_prefix_ok(path, f"my-own-model-{prefix}.th") == (True, prefix, prefix)
    assert sha256_prefix_ok(path, "my-own-model-00000000.th") == (False, "00000000", prefix)


def test_jobs_option_sets_the_processes() -> None:
    import argparse

    from opencodec._process import usable_cores
    from opencodec.cli.codec import _processes

    assert _processes(argparse.Namespace(jobs=3)) == 3
    assert _processes(argparse.Namespace(jobs=1)) == 1
    assert _processes(argparse.Namespace(jobs=None)) == usable_cores()


def test_folder_failures_say_how_many_had_their_output(short_wav: Path, tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    import shutil

    from opencodec.cli import main

    src, out = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    out.mkdir()
    shutil.copy(short_wav, src / "a.wav")
    shutil.copy(short_wav, src / "b.wav")
    (out / "a.ecdc").write_bytes(b"mine")
    # the folder plan leaves the existing output to the job, which then fails (as a race would)
    assert main(["-q", "compress", str(src), str(out), "-j", "1"]) == 1
    err = capsys.readouterr().err
    assert "1 of 2 file(s) failed (all because their output exists: --skip-existing leaves those out, " \
           "-f overwrites)" in err
    assert (out / "a.ecdc").read_bytes() == b"mine" and (out / "b.ecdc").stat().st_size > 100


def test_double_dash_ends_the_options() -> None:
    from opencodec.cli import build_parser

    args = build_parser(["compress"]).parse_args(["compress", "-b", "12", "--", "-lead.wav", "-out.ecdc"])
    assert (args.input, args.output, args.bandwidth) == (Path("-lead.wav"), Path("-out.ecdc"), 12.0)
    args = build_parser(["compress"]).parse_args(["compress", "in.wav", "-f", "--", "-out.ecdc"])
    assert (args.input, args.output, args.force) == (Path("in.wav"), Path("-out.ecdc"), True)


def test_info_without_ecdc_files_fails(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from opencodec.cli import main

    (tmp_path / "a.wav").write_bytes(b"")
    assert main(["info", str(tmp_path)]) == 1
    assert capsys.readouterr().err == f"opencodec: error: no .ecdc files found in {tmp_path}\n"
