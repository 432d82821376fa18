"""Lines of tokens/, stream/, serve/, longform/ (decode, encode) and the CLI that no other test
ran (the coverage audit): each test runs one such path as a user reaches it (bad input, an
error, an option) and checks the value or the exact error a user sees."""

from __future__ import annotations

import io
import signal
import struct
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from opencodec import cli
from opencodec.errors import OpenCodecError

from codec_helpers import tiny_model_file  # noqa: F401, F811 (pytest fixtures)


def _cli(capsys: pytest.CaptureFixture[str], *argv: object) -> tuple[int, str]:
    """``opencodec ARGV``: (exit status, stderr)."""
    code = cli.main([str(a) for a in argv])
    return code, capsys.readouterr().err


@pytest.fixture()
def two_wavs(tmp_path: Path) -> Path:
    data = tmp_path / "data"
    data.mkdir()
    for i in range(2):
        sf.write(data / f"{i}.wav", (0.1 * np.random.default_rng(i).standard_normal(7200)).astype(np.float32), 24000)
    return data


# -- tokens: options and inputs ------------------------------------------------------------------------
@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only machine's refusal")
def test_tokenize_device_cuda_without_cuda_is_one_line(tiny_model_file: Path, two_wavs: Path, tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    code, err = _cli(capsys, "tokenize", two_wavs, "--out", tmp_path / "out", "-m", tiny_model_file,
                     "--device", "cuda")
    assert (code, err) == (1, "opencodec: error: --device cuda: no CUDA device is available\n")
    assert not (tmp_path / "out").exists()


def test_tokenize_bandwidth_the_model_lacks(tiny_model_file: Path, two_wavs: Path, tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    code, err = _cli(capsys, "tokenize", two_wavs, "--out", tmp_path / "out", "-m", tiny_model_file,
                     "--device", "cpu", "-b", "6")
    assert code == 2  # a usage error, as for compress (its wording too)
    assert err.splitlines()[-1] == "opencodec tokenize: error: model tiny does not support 6 kbps; choose one of: 1.5, 3 kbps"
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("field, value, message", [
    ("workers", 0, "--workers must be at least 1, got 0"),
    ("shard_rows", 0, "--shard-rows must be at least 1, got 0"),
    ("dtype", "fp16", "--dtype must be one of fp32, bf16, got 'fp16'"),
    ("device", "tpu", "unknown device 'tpu' (cpu, cuda or auto)"),
])
def test_tokenize_options_out_of_range_in_python(tiny_model_file: Path, two_wavs: Path, tmp_path: Path,
                                                  field: str, value: object, message: str) -> None:
    """The Python API checks what the command's option types check."""
    from opencodec.tokens import TokenizeOptions, tokenize
    options = TokenizeOptions(inputs=[str(two_wavs)], out=tmp_path / "out", model=str(tiny_model_file),
                              **{"device": "cpu", field: value})
    with pytest.raises(OpenCodecError) as info:
        tokenize(options)
    assert str(info.value) == message
    assert not (tmp_path / "out").exists()


def test_tokenize_folder_without_audio(tiny_model_file: Path, tmp_path: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("no audio here\n")
    code, err = _cli(capsys, "tokenize", tmp_path / "empty", "--out", tmp_path / "out", "-m", tiny_model_file,
                     "--device", "cpu")
    assert (code, err) == (1, f"opencodec: error: input {tmp_path / 'empty'} names no audio file\n")


@pytest.mark.parametrize("text, columns", [("file,id\na.wav,x\n", "file, id"), ("", "none")])
def test_csv_manifest_without_path_column(tmp_path: Path, text: str, columns: str) -> None:
    from opencodec.tokens.inputs import InputError, list_inputs
    (tmp_path / "m.csv").write_text(text)
    with pytest.raises(InputError) as info:
        list_inputs([tmp_path / "m.csv"])
    assert str(info.value) == f"{tmp_path / 'm.csv'}: a CSV manifest needs a 'path' column (columns: {columns})"


@pytest.mark.parametrize("text, reason", [
    ("path\n" + "x" * 140000 + "\n", "field larger than field limit (131072)"),
    ('path\n"a.wav\n', "unexpected end of data"),  # a quote never closed: not a path "a.wav\n"
    ('path\n"a.wav"b\n', "',' expected after '\"'"),
])
def test_csv_manifest_that_csv_cannot_read(tmp_path: Path, text: str, reason: str) -> None:
    from opencodec.tokens.inputs import InputError, list_inputs
    sf.write(tmp_path / "a.wav", np.zeros(240, np.float32), 24000)
    (tmp_path / "m.csv").write_text(text)
    with pytest.raises(InputError) as info:
        list_inputs([tmp_path / "m.csv"])
    assert str(info.value) == f"{tmp_path / 'm.csv'}: not a readable CSV file ({reason})"


def test_jsonl_manifest_not_utf8(tmp_path: Path) -> None:
    from opencodec.tokens.inputs import InputError, list_inputs
    (tmp_path / "m.jsonl").write_bytes(b'{"path": "\xff.wav"}\n')
    with pytest.raises(InputError) as info:
        list_inputs([tmp_path / "m.jsonl"])
    assert str(info.value).startswith(f"{tmp_path / 'm.jsonl'}: not an audio file, manifest or UTF-8 list of "
                                      "paths (byte 10 is not UTF-8 text); audio files need one of the extensions ")


def test_assign_shards_needs_a_worker() -> None:
    from opencodec.tokens.plan import assign_shards
    with pytest.raises(ValueError, match=r"^world must be at least 1, got 0$"):
        assign_shards([1.0, 2.0], 0)
    assert assign_shards([1.0, 3.0, 2.0], 2) == [[1], [0, 2]]


def test_worker_death_of_a_signal_python_has_no_name_for() -> None:
    from opencodec.tokens.job import worker_death
    assert worker_death(-200) == ("a tokenize worker process was killed by signal 200; the shards finished so "
                                  "far are kept: run the same command again to finish the job")
    assert worker_death(-signal.SIGKILL).startswith(
        "a tokenize worker process was killed by SIGKILL (out of memory?); ")


def test_a_worker_that_fails_fails_the_job(tiny_model_file: Path, two_wavs: Path, tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """--workers 2: a worker whose run raises sends its error; the parent raises it, naming it."""
    import multiprocessing as mp
    from opencodec.tokens import TokenizeOptions, job, tokenize
    if "fork" not in mp.get_all_start_methods():
        pytest.skip("the failing run_worker reaches the workers by fork")

    def failing(*args: object, **kwargs: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(job, "run_worker", failing)
    options = TokenizeOptions(inputs=[str(two_wavs)], out=tmp_path / "out", model=str(tiny_model_file),
                              device="cpu", workers=2, shard_rows=1)
    with pytest.raises(OpenCodecError) as info:
        tokenize(options)
    assert str(info.value) == "a tokenize worker failed: OSError: [Errno 28] No space left on device"
    assert not list((tmp_path / "out").glob("shard-*"))


# -- tokens: shards and the dataset ------------------------------------------------------------------------
def test_place_index_where_it_cannot_be_written(tmp_path: Path) -> None:
    from opencodec.errors import OutputError
    from opencodec.tokens.shards import _place_index
    with pytest.raises(OutputError, match=r"^cannot write "):
        _place_index(tmp_path / "gone" / "index.json", {"rows": 1})
    assert not (tmp_path / "gone").exists()


def test_place_index_replaces_an_unreadable_index(tmp_path: Path) -> None:
    """An index.json that is not text (damaged) is replaced, and the call says it wrote it."""
    from opencodec.tokens.shards import _json_text, _place_index
    path = tmp_path / "index.json"
    path.write_bytes(b"\xff\xfe garbage")
    assert _place_index(path, {"rows": 1}) is True
    assert path.read_text() == _json_text({"rows": 1})


def test_job_differences_in_num_shards_only() -> None:
    from opencodec.tokens.shards import job_differences
    job = {"model": "m", "files_sha256": "a", "num_files": 3, "num_shards": 2}
    assert job_differences({**job, "num_shards": 3}, job) == ["its job.json differs in num_shards"]


def test_token_dataset_of_no_folder_or_no_shards(tmp_path: Path) -> None:
    from opencodec.tokens import TokenDataset, TokenizeError
    with pytest.raises(TokenizeError, match=r"^\S+/missing is not a folder of token shards$"):
        TokenDataset(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(TokenizeError) as info:
        TokenDataset(tmp_path / "empty")
    assert str(info.value) == f"{tmp_path / 'empty'} holds no token shards (shard-*.parquet)"


def test_collate_tokens_of_nothing() -> None:
    from opencodec.tokens import collate_tokens
    with pytest.raises(ValueError, match=r"^collate_tokens needs at least one item$"):
        collate_tokens([])


@pytest.fixture()
def token_folder(tiny_model_file: Path, two_wavs: Path, tmp_path: Path) -> Path:
    from opencodec.tokens import TokenizeOptions, tokenize
    tokenize(TokenizeOptions(inputs=[str(two_wavs)], out=tmp_path / "tokens", model=str(tiny_model_file),
                             device="cpu"))
    return tmp_path / "tokens"


def test_detokenize_unknown_id_and_missing_model(token_folder: Path, tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    code, err = _cli(capsys, "detokenize", token_folder, "--out", tmp_path / "a", "--ids", "0.wav", "nope")
    assert (code, err) == (1, f"opencodec: error: no row with id 'nope' in {token_folder}\n")
    assert not (tmp_path / "a").exists()
    code, err = _cli(capsys, "detokenize", token_folder, "--out", tmp_path / "a", "-m", tmp_path / "no.safetensors")
    assert code == 1 and err.startswith(f"opencodec: error: no model named '{tmp_path / 'no.safetensors'}' ")
    assert err.endswith("; the shards were written with model 'tiny': pass its weights file with --model\n")
    assert err.count("\n") == 1 and not (tmp_path / "a").exists()


# -- stream: WAV and PCM input ------------------------------------------------------------------------
def _wav(chunks: list[tuple[bytes, bytes]]) -> io.BytesIO:
    """A RIFF/WAVE stream of ``chunks`` (id, body) in order (sizes as given, bodies padded)."""
    body = b"".join(cid + struct.pack("<I", len(data)) + data + b"\0" * (len(data) & 1) for cid, data in chunks)
    return io.BytesIO(b"RIFF" + struct.pack("<I", 4 + len(body)) + b"WAVE" + body)


def _fmt(tag: int = 1, channels: int = 1, rate: int = 24000, bits: int = 16) -> bytes:
    align = channels * bits // 8
    return struct.pack("<HHIIHH", tag, channels, rate, rate * align, align, bits)


@pytest.mark.parametrize("stream, message", [
    (_wav([(b"fmt ", _fmt())]), "WAV stream ends before its 'data' chunk"),
    (io.BytesIO(b"RIFF\x24\x00\x00\x00WAVEfmt \x10\x00"), "WAV stream ends before its 'data' chunk"),
    (_wav([(b"data", b"\0\0"), (b"fmt ", _fmt())]), "WAV 'data' chunk comes before the 'fmt ' chunk"),
    (io.BytesIO(b"RIFF\x00\x00\x00\x00WAVELIST" + struct.pack("<I", (1 << 20) + 1)),
     "WAV chunk b'LIST' of 1048577 bytes before the audio data is too large"),
    (io.BytesIO(b"RIFF\x00\x00\x00\x00WAVELIST\x10\x00\x00\x00abc"), "WAV stream ends inside its b'LIST' chunk"),
    (_wav([(b"fmt ", _fmt()[:14]), (b"data", b"")]), "WAV 'fmt ' chunk is 14 bytes, expected at least 16"),
    (_wav([(b"fmt ", _fmt(channels=0)), (b"data", b"")]), "WAV 'fmt ' chunk says 0 channel(s) at 24000 Hz"),
])
def test_wav_stream_header_errors(stream: io.BytesIO, message: str) -> None:
    from opencodec.errors import AudioIOError
    from opencodec.stream import PcmStreamReader
    with pytest.raises(AudioIOError) as info:
        PcmStreamReader(stream, name="in.wav")
    assert str(info.value) == f"in.wav: {message}"


def test_wav_stream_of_float_samples_with_nan() -> None:
    from opencodec.errors import AudioIOError
    from opencodec.stream import PcmStreamReader
    samples = np.array([0.5, -0.25, np.nan, 0.0], "<f4").tobytes()
    reader = PcmStreamReader(_wav([(b"fmt ", _fmt(tag=3, bits=32)), (b"data", samples)]))
    with pytest.raises(AudioIOError, match=r"^stdin: the audio holds NaN or infinite samples$"):
        reader.read()
    good = PcmStreamReader(_wav([(b"fmt ", _fmt(tag=3, bits=32)), (b"data", samples[:8])]))
    np.testing.assert_array_equal(good.read(), [[0.5], [-0.25]])
    assert good.read() is None


def test_pcm_format_checks_its_fields() -> None:
    from opencodec.errors import AudioIOError
    from opencodec.stream import PcmFormat
    with pytest.raises(ValueError, match=r"^unknown PCM encoding 's8'$"):
        PcmFormat(24000, 1, "s8")
    with pytest.raises(AudioIOError, match=r"^PCM format: sample rate and channels must be >= 1, got 0 Hz, "
                                           r"1 channel\(s\)$"):
        PcmFormat(0, 1, "s16")
    with pytest.raises(AudioIOError, match=r"channels must be >= 1, got 24000 Hz, 0 channel\(s\)$"):
        PcmFormat(24000, 0, "s16")


# -- stream: the receiver and the audio decoder ------------------------------------------------------------
def _info():
    from opencodec.stream import StreamInfo
    return StreamInfo("m", 24000, 1, 2, 4, 320, 2)


def _events(data: bytes, max_gap_seconds: float = 10.0) -> tuple[list, object]:
    from opencodec.stream import PacketParser, StreamReceiver
    parser, receiver = PacketParser(), StreamReceiver(max_gap_seconds=max_gap_seconds)
    events = []
    for packet in parser.feed(data) + parser.finish():
        events += receiver.handle(packet)
    return events + receiver.finish(), receiver


def test_receiver_active_inside_a_stream_only() -> None:
    from opencodec.stream import PacketParser, StreamReceiver, data_packet, end_packet, header_packet
    info = _info()
    receiver, parser = StreamReceiver(), PacketParser()
    seen = [receiver.active]
    for data in (header_packet(info, 0), data_packet(info, 0, np.zeros((2, 2), np.int64)), end_packet(1, 640)):
        for packet in parser.feed(data):
            receiver.handle(packet)
        seen.append(receiver.active)
    assert seen == [False, True, True, False]


def test_receiver_bytes_after_the_last_stream_are_reported() -> None:
    from opencodec.stream import Notice, StreamEnd, data_packet, end_packet, header_packet
    info = _info()
    stream = header_packet(info, 0) + data_packet(info, 0, np.zeros((2, 2), np.int64)) + end_packet(1, 640)
    events, receiver = _events(stream + b"junk after the stream")
    assert isinstance(events[-2], StreamEnd) and events[-2].length == 640
    assert events[-1] == Notice("no stream header after the last stream: 21 byte(s) (0 packet(s)) skipped")
    assert receiver.stats.skipped_bytes == 21


def test_receiver_end_packet_after_too_long_a_loss_ends_the_stream_untrimmed() -> None:
    """The last data packets lost for longer than max_gap_seconds: the stream ends there (not
    concealed), and the end packet's length is not applied to it."""
    from opencodec.stream import Notice, StreamEnd, data_packet, end_packet, header_packet
    info = _info()
    stream = header_packet(info, 0) + data_packet(info, 0, np.zeros((2, 2), np.int64)) + end_packet(40, 80 * 320)
    events, receiver = _events(stream, max_gap_seconds=0.5)
    assert [type(e).__name__ for e in events] == ["StreamStart", "CodeFrames", "Notice", "StreamEnd"]
    assert events[2] == Notice("the last 39 data packet(s) lost: a jump of 1.0 s, more than 0.5 s; not "
                               "concealed, decoding restarts")
    assert events[3] == StreamEnd(None)
    assert receiver.stats.missing_frames == 0 and not receiver.active


def test_packet_audio_decoder_ignores_notices() -> None:
    from opencodec.stream import Notice, PacketAudioDecoder

    def load(info: object) -> None:
        raise AssertionError("a notice loads no model")

    decoder = PacketAudioDecoder(load)
    assert decoder.handle(Notice("corrupt data at bytes 0-9")) == []
    assert decoder.samples == 0


def test_loss_reason_of_missing_frames_alone() -> None:
    from opencodec.serve.protocol import loss_reason
    from opencodec.stream import MissingFrames
    assert loss_reason(MissingFrames(4, 3)) == ("decode mode takes one loss-free stream: frames lost "
                                                "(3 frame(s) missing)")


@pytest.mark.parametrize("message, error", [
    ("[1, 2]", "the first message must be a JSON object"),
    ('{"mode": "relay", "bandwith": 6, "fpp": 2}', "unknown hello field(s): bandwith, fpp"),
])
def test_hello_that_is_not_an_object_or_has_unknown_fields(message: str, error: str) -> None:
    from opencodec.serve.protocol import ProtocolError, parse_hello
    with pytest.raises(ProtocolError) as info:
        parse_hello(message, [1.5, 3.0], "m")
    assert str(info.value) == error


def test_multistream_close_of_an_unknown_or_closed_stream() -> None:
    from opencodec.multistream import MultiStreamDecoder, MultiStreamEncoder
    from stream_models import tiny_stream_model
    model = tiny_stream_model("tiny_checks", 5)
    model.set_target_bandwidth(1.8)
    for ms in (MultiStreamEncoder(model), MultiStreamDecoder(model)):
        sid = ms.open()
        ms.close(sid)
        for bad in (sid, 99):
            with pytest.raises(KeyError) as info:
                ms.close(bad)
            assert info.value.args == (f"no open stream {bad}",)
        assert ms.streams == []


# -- the command line ------------------------------------------------------------------------------------
def test_compress_warns_once_for_several_larger_files(capsys: pytest.CaptureFixture[str]) -> None:
    """Two of three entropy-coded files larger than plain coding, one for its header alone and
    one for its body: one warning with the total and both reasons."""
    from opencodec.cli import codec as cli_codec
    from opencodec.codec_files import FileResult

    def result(name: str, body_overhead: int) -> FileResult:
        return FileResult(Path(f"{name}.wav"), Path(f"{name}.ecdc"), 1.43, size_bytes=1365, plain_bytes=1219,
                          header_extra=92, checksums=True, body_overhead=body_overhead)

    header_bound, poor = result("a", 60), result("b", 8)
    assert cli_codec._header_bound(header_bound) and not cli_codec._header_bound(poor)
    cli_codec._warn_larger([header_bound, poor], 3)
    assert capsys.readouterr().err == (
        "opencodec: warning: 2 of 3 entropy-coded file(s) are larger than plain coding (292 bytes more in all, "
        "e.g. a.ecdc): the entropy-coded format's larger header and checksums (short inputs), or codes the "
        "entropy model predicts poorly; plain coding (no --lm/--lm-model) is smaller\n")


def test_ctrl_c_while_the_command_loads_is_one_line(monkeypatch: pytest.MonkeyPatch,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    import importlib
    cli_main = importlib.import_module("opencodec.cli.main")

    def interrupted(**kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(cli_main, "build_parser", interrupted)
    assert cli_main.main(["compress", "a.wav", "a.ecdc"]) == 130
    assert capsys.readouterr().err == "opencodec: error: interrupted\n"


@pytest.mark.parametrize("command, stream, message", [
    ("stream-encode", "stdin", "stdin is a terminal: pipe or redirect WAV or raw PCM into it"),
    ("stream-decode", "stdin", "stdin is a terminal: pipe or redirect a packet stream into it"),
    ("stream-encode", "stdout", "refusing to write binary data to a terminal: redirect stdout to a file or "
                                "pipe it into another command"),
])
def test_stream_commands_refuse_a_terminal(command: str, stream: str, message: str, monkeypatch: pytest.MonkeyPatch,
                                           capsys: pytest.CaptureFixture[str], tiny_model_file: Path) -> None:
    import sys
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"")))
    monkeypatch.setattr(getattr(sys, stream), "isatty", lambda: True)
    code, err = _cli(capsys, command, "-m", tiny_model_file)
    assert code == 2 and err.startswith(f"usage: opencodec {command} ")  # argparse's usage error
    assert err.endswith(f"\nopencodec {command}: error: {message}\n")


def test_tokenize_progress_grows_past_the_headers_total(capsys: pytest.CaptureFixture[str]) -> None:
    """Files decoded longer than their headers said: the bar's total grows with them (never
    more done than its total)."""
    from opencodec.cli.tokens import _Progress
    progress = _Progress(False, "tokenize")
    update = progress.start(1.0)
    update(0.75, 1, 0)
    assert (progress.bar.n, progress.bar.total) == (0.75, 1.0)
    update(0.5, 1, 0)
    assert (progress.bar.n, progress.bar.total) == (1.25, 1.25)
    progress.close()


def test_serve_names_the_missing_extra(tmp_path: Path) -> None:
    """serve without websockets: one usage line naming the extra to install (a fresh
    interpreter that cannot import websockets)."""
    import subprocess
    import sys
    script = (
        "import sys, importlib.abc\n"
        "class Hide(importlib.abc.MetaPathFinder):\n"
        "    def find_spec(self, name, path, target=None):\n"
        "        if name.split('.')[0] == 'websockets':\n"
        "            raise ModuleNotFoundError(f'No module named {name!r}', name=name)\n"
        "sys.meta_path.insert(0, Hide())\n"
        "from opencodec.cli import main\n"
        "sys.exit(main(['serve']))\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert done.returncode == 2 and done.stderr.startswith("usage: opencodec serve ")
    assert done.stderr.endswith("\nopencodec serve: error: opencodec serve needs the 'serve' extra (websockets is "
                                "missing): pip install 'opencodec[serve]'\n")


@pytest.mark.parametrize("command", ["tokenize", "detokenize"])
def test_token_commands_name_the_missing_extra(command: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    import importlib
    real = importlib.import_module

    def without_pyarrow(name: str, *args: object) -> object:
        if name.split(".")[0] == "pyarrow":
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return real(name, *args)

    monkeypatch.setattr(importlib, "import_module", without_pyarrow)
    code, err = _cli(capsys, command, tmp_path / "x", "--out", tmp_path / "y")
    assert (code, err) == (1, "opencodec: error: token shards are Parquet files and need pyarrow: pip install "
                              "'opencodec[tokens]' (or pip install pyarrow)\n")
    assert not (tmp_path / "y").exists()


def test_export_onnx_without_onnx(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import importlib.util
    from opencodec.export import onnx as export_onnx
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "onnx" else real(name, *a))
    with pytest.raises(OpenCodecError) as info:
        export_onnx.export_onnx(None, tmp_path / "out")
    assert str(info.value) == "export-onnx needs the onnx package: pip install 'opencodec[onnx]'"
    assert not (tmp_path / "out").exists()


# -- longform -----------------------------------------------------------------------------------------------
def test_longform_block_sizes_must_be_positive(tmp_path: Path) -> None:
    from opencodec.longform import compress_file_streaming, decompress_file_streaming
    from stream_models import tiny_stream_model
    for bad in (0, 1.5, True):
        with pytest.raises(ValueError, match=rf"^block_frames must be an integer >= 1, got {bad!r}$"):
            decompress_file_streaming(tmp_path / "in.ecdc", tmp_path / "out.wav", block_frames=bad)
    for bad in (0.0, -1.0, float("nan")):
        with pytest.raises(ValueError, match=rf"^block_seconds must be > 0, got {bad!r}$"):
            compress_file_streaming(tiny_stream_model("bs", 5), tmp_path / "in.wav", tmp_path / "o.ecdc",
                                    block_seconds=bad)
    assert not list(tmp_path.iterdir())


def test_segmented_decode_reports_progress(tmp_path: Path) -> None:
    """A segmenting model's file decodes segment by segment; progress counts code frames up to all."""
    from opencodec.longform import compress_file_streaming, decompress_file_streaming
    from stream_models import tiny_stream_model
    model = tiny_stream_model("tiny_no_overlap", 11, causal=False, segment=0.04, overlap=0.0)
    model.set_target_bandwidth(1.8)
    sf.write(tmp_path / "in.wav", (0.1 * np.random.default_rng(3).standard_normal(3000)).astype(np.float32), 24000)
    compress_file_streaming(model, tmp_path / "in.wav", tmp_path / "a.ecdc")
    calls: list[tuple[int, int]] = []
    decompress_file_streaming(tmp_path / "a.ecdc", tmp_path / "out.wav", model,
                              progress=lambda done, total: calls.append((done, total)))
    assert calls == [(3, 10), (6, 10), (9, 10), (10, 10)]  # 960-sample segments of 3 frames
    assert sf.info(tmp_path / "out.wav").frames == 3000


def test_exact_encoder_falls_back_for_a_constant_padded_last_conv() -> None:
    """A model whose convs pad with zeros (pad_mode="constant") has no exact chunked plan for its
    last conv: the encoder says why and streams, and its codes are still model.encode's."""
    from opencodec import EncodecConfig, EncodecModel
    from opencodec.longform.exact_encoder import ChunkedExactEncoder
    torch.manual_seed(0)
    model = EncodecModel(EncodecConfig(name="t", n_filters=4, dimension=16, lstm=1, n_q=4, pad_mode="constant",
                                       target_bandwidths=[1.5, 3.0])).eval()
    encoder = ChunkedExactEncoder(model)
    x = torch.randn(1, 240000, generator=torch.Generator().manual_seed(1)) * 0.1  # 10 s: past the 9.3 s probe
    with torch.inference_mode():
        codes = torch.cat([encoder.push(x[:, :130000]), encoder.push(x[:, 130000:]), encoder.finish()], -1)
        want = model.encode(x[None])[0].codes[0]
    assert encoder.fallback_reason == ("unsupported LSTM or last conv (needs time-first LSTM, causal stride-1 "
                                       "reflect conv)")
    assert torch.equal(codes, want) and codes.shape == (4, 750)


def _nan_decoder_file(tmp_path: Path):
    """A tiny model whose decoder outputs NaN (a damaged weights file), and a file it encoded."""
    from opencodec.longform import compress_file_streaming
    from stream_models import tiny_stream_model
    model = tiny_stream_model("nan_decoder", 5)
    model.set_target_bandwidth(1.8)
    with torch.no_grad():
        list(model.decoder.parameters())[-1].fill_(float("nan"))  # encoding never runs the decoder
    sf.write(tmp_path / "in.wav", (0.1 * np.random.default_rng(4).standard_normal(4800)).astype(np.float32), 24000)
    compress_file_streaming(model, tmp_path / "in.wav", tmp_path / "a.ecdc")
    return model


def test_streaming_decode_refuses_nan_audio(tmp_path: Path) -> None:
    from opencodec.errors import AudioIOError
    from opencodec.longform import decompress_file_streaming
    model = _nan_decoder_file(tmp_path)
    with pytest.raises(AudioIOError) as info:
        decompress_file_streaming(tmp_path / "a.ecdc", tmp_path / "out.wav", model)
    assert str(info.value) == f"cannot write {tmp_path / 'out.wav'}: the audio holds NaN or infinite samples"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.ecdc", "in.wav"]  # no partial output


def test_streaming_decode_write_error_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A write that fails (a full disk): AudioIOError naming the file and the reason, nothing left."""
    from opencodec.errors import AudioIOError
    from opencodec.longform import compress_file_streaming, decompress_file_streaming
    from stream_models import tiny_stream_model
    model = tiny_stream_model("full_disk", 5)
    model.set_target_bandwidth(1.8)
    sf.write(tmp_path / "in.wav", (0.1 * np.random.default_rng(4).standard_normal(4800)).astype(np.float32), 24000)
    compress_file_streaming(model, tmp_path / "in.wav", tmp_path / "a.ecdc")

    def full(self: object, data: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(sf.SoundFile, "write", full)
    with pytest.raises(AudioIOError) as info:
        decompress_file_streaming(tmp_path / "a.ecdc", tmp_path / "out.wav", model)
    assert str(info.value) == f"cannot write {tmp_path / 'out.wav'}: No space left on device"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.ecdc", "in.wav"]


def test_engine_failure_also_ends_sessions_still_joining() -> None:
    """A step that raises while a client is joining (added on the loop during the tick): that
    session is told too, not left in the fresh engine's queue with no stream open for it."""
    from opencodec.serve.engine import Engine
    from opencodec.serve.protocol import Hello
    from opencodec.serve.session import Session
    from stream_models import tiny_stream_model
    model = tiny_stream_model("tiny_serve", 3)
    engine = Engine(model)
    try:
        live = Session(Hello("relay", 1.8), model.num_codebooks(1.8), deliver=lambda o: None)
        joining = Session(Hello("encode", 1.8), model.num_codebooks(1.8), deliver=lambda o: None)
        engine.sessions.append(live)
        engine.add(joining)
        failed = engine._fail(RuntimeError("boom"))
        assert [(s, o.error) for s, o in failed] == [(live, "server error: RuntimeError: boom"),
                                                      (joining, "server error: RuntimeError: boom")]
        assert engine.sessions == [] and not engine._joining
    finally:
        engine._pool.shutdown()


def test_decode_input_parsed_yields_a_messages_packets_a_slice_at_a_time() -> None:
    """``parsed`` (the server's parsing of one decode-mode message, kept for
    benchmarks/probes/serve_message_memory.py): the packets of a message of more than one
    slice, in order, as a parser given it whole returns them; bytes of no packet: ProtocolError."""
    from opencodec.serve.decode_input import PARSE_SLICE, parsed
    from opencodec.serve.protocol import ProtocolError
    from opencodec.stream import PacketParser, data_packet, header_packet
    info = _info()
    codes = np.arange(4, dtype=np.int64).reshape(2, 2) % 16
    message = header_packet(info, 0) + b"".join(data_packet(info, i, codes) for i in range(3000))
    assert len(message) > 2 * PARSE_SLICE
    got = list(parsed(PacketParser(), message))
    assert [(p.offset, p.seq) for p in got] == [(p.offset, p.seq) for p in PacketParser().feed(message)]
    assert len(got) == 3001
    with pytest.raises(ProtocolError, match=r"^damaged packet data: \d+ bytes without a whole packet"):
        list(parsed(PacketParser(), bytes(PARSE_SLICE)))


def test_broken_link_that_vanishes_while_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A dangling link removed between the check and reading its target: still named a broken link."""
    import os
    from opencodec.tokens.inputs import broken_link
    (tmp_path / "a.wav").symlink_to(tmp_path / "gone.wav")
    assert broken_link(tmp_path / "a.wav") == f"broken symbolic link (points to {tmp_path / 'gone.wav'})"

    def vanished(path: object) -> str:
        raise FileNotFoundError(2, "No such file or directory")

    monkeypatch.setattr(os, "readlink", vanished)
    assert broken_link(tmp_path / "a.wav") == "broken symbolic link"


def test_tokenize_refuses_an_empty_input_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``Path("")`` is the current folder: ``tokenize "$UNSET"`` tokenised every file under it.
    An empty input is refused, naming the problem."""
    from opencodec.tokens.inputs import InputError, list_inputs

    monkeypatch.chdir(tmp_path)
    sf.write(tmp_path / "a.wav", np.zeros(2400, dtype=np.float32), 24000)
    with pytest.raises(InputError, match=r"^an input path is empty \(''\): it names no file; an unset shell"):
        list_inputs([""])
    assert [item.id for item in list_inputs(["."])] == ["a.wav"]
