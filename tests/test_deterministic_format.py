"""The deterministic entropy-coded ``.ecdc`` format (version 1): exact round trips for both
layouts, identical bytes under other thread counts, batchings and processes, damage and a
wrong entropy model reported as errors, the API/CLI around it."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import textwrap
import typing as tp
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

import official_ref
from opencodec import EncodedFrame, cli, pretrained
from opencodec.bitstream import (HEADER_STRUCT, DeterministicCoding, EcdcHeader, StreamLayout,
                                 encode_ecdc, parse_header, read_ecdc)
from opencodec.compress import InvalidAudioError, compress, decompress
from opencodec.entropy import EntropyLM, FixedLM, fixed_lm_for
from opencodec.entropy.deterministic import decode_segment_fixed, encode_segment_fixed
from opencodec.entropy.fixed import SCHEME
from opencodec.errors import BitstreamError, ModelLoadError
from opencodec.pretrained import load_lm_model

LAYOUTS = {
    "24k": StreamLayout(model_name="encodec_24khz", n_q=32, bits=10, hop_length=320, normalize=False),
    "48k": StreamLayout(model_name="encodec_48khz", n_q=16, bits=10, hop_length=320, normalize=True,
                        segment_length=48000, segment_stride=47520),
}
PAST = {"24k": 262, "48k": 525}


def _lm(key: str, seed: int = 0) -> EntropyLM:
    """A small random entropy model for a layout (peaked heads, like a trained model)."""
    torch.manual_seed(seed)
    layout = LAYOUTS[key]
    lm = EntropyLM(n_q=layout.n_q, card=1 << layout.bits, dim=32, num_layers=2,
                   past_context=PAST[key]).eval()
    with torch.no_grad():
        for lin in lm.linears:
            lin.weight.mul_(4.0)
    return lm


@pytest.fixture(scope="module")
def lms() -> dict[str, EntropyLM]:
    return {key: _lm(key, seed) for seed, key in enumerate(LAYOUTS)}


def _frames(layout: StreamLayout, audio_length: int, nc: int, seed: int) -> list[EncodedFrame]:
    gen = torch.Generator().manual_seed(seed)
    frames = []
    for _, length in layout.segments(audio_length):
        codes = torch.randint(0, 1 << layout.bits, (1, nc, layout.num_frames(length)), generator=gen)
        scale = torch.rand(1, 1, generator=gen) + 0.01 if layout.normalize else None
        frames.append(EncodedFrame(codes, scale))
    return frames


def _header(key: str, lm: EntropyLM | FixedLM, audio_length: int, nc: int, check_bits: int = 8,
            check_interval: int = 75) -> EcdcHeader:
    det = DeterministicCoding(lm_name=f"test_{key}", lm_hash=fixed_lm_for(lm).weights_hash, scheme=SCHEME,
                              check_bits=check_bits, check_interval=check_interval)
    return EcdcHeader(LAYOUTS[key].model_name or "x", audio_length, nc, True, det)


def _same(frames: list[EncodedFrame], want: list[EncodedFrame]) -> bool:
    return len(frames) == len(want) and all(
        torch.equal(a.codes, b.codes) and (a.scale is None) == (b.scale is None)
        and (a.scale is None or torch.equal(a.scale, b.scale)) for a, b in zip(frames, want))


# -- round trips ------------------------------------------------------------------------------
@pytest.mark.parametrize("key,audio_length,nc,check_bits,check_interval", [
    ("24k", 16_000, 2, 8, 75),      # 1.5 kbps, 50 frames: only the final CRC-32
    ("24k", 9_601, 8, 8, 7),        # 6 kbps, 31 frames, a check every 7 frames
    ("24k", 3_200, 32, 0, 1),       # 24 kbps, 10 frames, CRC only
    ("24k", 1, 4, 32, 1),           # one frame
    ("48k", 60_000, 2, 8, 150),     # 3 kbps, two segments (150 + 39 frames), scales
    ("48k", 48_000, 16, 3, 10),     # 24 kbps, one full segment, 3-bit checks
])
def test_round_trip_codes_exact(lms: dict, key: str, audio_length: int, nc: int, check_bits: int,
                                check_interval: int) -> None:
    layout, lm = LAYOUTS[key], lms[key]
    header = _header(key, lm, audio_length, nc, check_bits, check_interval)
    frames = _frames(layout, audio_length, nc, seed=audio_length + nc)
    data = encode_ecdc(header, frames, layout, lm)
    assert data[:5] == b"ECDC\x01"
    parsed, frames_back = read_ecdc(data, layout, lm)
    assert parsed == header and parsed.version == 1
    assert _same(frames_back, frames)
    # the integer model itself decodes it too; the float one is converted (cached)
    assert _same(read_ecdc(data, layout, fixed_lm_for(lm))[1], frames)


def test_codec_round_trip_24_and_48khz(our_models: dict) -> None:
    """compress/decompress through the real codec layouts: the audio equals that of the plain
    file (same codes), and the file is what compress(deterministic=True) promised."""
    for key, name, bandwidth, seconds in (("24k", "encodec_24khz", 1.5, 0.4), ("48k", "encodec_48khz", 6.0, 1.1)):
        model = our_models[name]
        lm = _lm(key, seed=7)
        gen = torch.Generator().manual_seed(1)
        wav = 0.1 * torch.randn(model.channels, int(seconds * model.sample_rate), generator=gen)
        data = compress(model, wav, bandwidth=bandwidth, lm=lm, deterministic=True, lm_name="mine")
        header, _ = parse_header(data)
        assert header.deterministic == DeterministicCoding("mine", fixed_lm_for(lm).weights_hash, SCHEME,
                                                           8, model.frame_rate)
        assert header.num_codebooks == model.num_codebooks(bandwidth)
        out, rate = decompress(data, model, lm=lm)
        plain = compress(model, wav, bandwidth=bandwidth)
        assert rate == model.sample_rate and torch.equal(out, decompress(plain, model)[0])
        # without deterministic=True, the official format is still there: version 0, entropy
        # coded with the float model, the plain file's audio back (its bytes against the
        # official writer: tests/test_compress_lm.py)
        official = compress(model, wav, bandwidth=bandwidth, lm=lm)
        assert (official[4], data[4]) == (0, 1)  # version bytes
        official_header, _ = parse_header(official)
        assert official_header.use_lm and official_header.deterministic is None
        assert official != plain and torch.equal(decompress(official, model, lm=lm)[0], out)


# -- same bytes everywhere ----------------------------------------------------------------------
def test_same_bytes_under_threads_and_block_sizes(lms: dict) -> None:
    lm = fixed_lm_for(lms["24k"])
    codes = torch.randint(0, 1024, (8, 40))
    previous = torch.get_num_threads()
    results = []
    try:
        for threads, block in ((1, 40), (2, 40), (2, 1), (3, 7)):  # matrix and single-row kernels
            torch.set_num_threads(threads)
            results.append(encode_segment_fixed(lm, codes, check_bits=8, check_interval=16,
                                                crc_seed=9, block=block))
        torch.set_num_threads(2)  # step-by-step decoding (single-row kernels) with 2 threads
        back = decode_segment_fixed(lm, results[0], 8, 40, check_bits=8, check_interval=16, crc_seed=9)
    finally:
        torch.set_num_threads(previous)
    assert all(r == results[0] for r in results)
    assert torch.equal(back, codes)


_SCRIPT = textwrap.dedent("""
    import sys, torch
    from opencodec.bitstream import StreamLayout, encode_ecdc, read_ecdc
    from opencodec.entropy import EntropyLM
    folder, threads = sys.argv[1], int(sys.argv[2])
    torch.set_num_threads(threads)
    job = torch.load(folder + "/job.pt", weights_only=False)
    lm = EntropyLM(**job["lm_sizes"]).eval()
    lm.load_state_dict(job["lm"])
    layout = StreamLayout(**job["layout"])
    header, frames = read_ecdc(open(folder + "/here.ecdc", "rb").read(), layout, lm)
    torch.save([(f.codes, f.scale) for f in frames], folder + "/there.pt")
    open(folder + "/there.ecdc", "wb").write(encode_ecdc(job["header"], job["frames"], layout, lm))
    print(torch.get_num_threads())
""")


def test_round_trip_through_another_process(lms: dict, tmp_path: Path) -> None:
    """This process (1 thread) encodes, a fresh process with 2 threads decodes that file and
    encodes the same codes, and this process decodes its file: the same bytes both ways."""
    key = "48k"
    layout, lm = LAYOUTS[key], lms[key]
    header = _header(key, lm, 50_000, 4, 8, 20)
    frames = _frames(layout, 50_000, 4, seed=11)
    assert torch.get_num_threads() == 1
    here = encode_ecdc(header, frames, layout, lm)
    (tmp_path / "here.ecdc").write_bytes(here)
    torch.save({"lm": lm.state_dict(), "lm_sizes": dict(n_q=16, card=1024, dim=32, num_layers=2, past_context=525),
                "layout": dict(model_name="encodec_48khz", n_q=16, bits=10, hop_length=320, normalize=True,
                               segment_length=48000, segment_stride=47520),
                "header": header, "frames": frames}, tmp_path / "job.pt")
    env = {"PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "2"}
    done = subprocess.run([sys.executable, "-c", _SCRIPT, str(tmp_path), "2"], env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "2"
    there = (tmp_path / "there.ecdc").read_bytes()
    assert there == here
    back = torch.load(tmp_path / "there.pt", weights_only=False)
    assert _same([EncodedFrame(c, s) for c, s in back], frames)
    assert _same(read_ecdc(there, layout, lm)[1], frames)


# -- damage and mismatches --------------------------------------------------------------------------
def _outcome(data: bytes, layout: StreamLayout, lm: EntropyLM, header: EcdcHeader,
             frames: list[EncodedFrame]) -> str:
    try:
        got_header, got = read_ecdc(data, layout, lm)
    except BitstreamError as exc:
        text = str(exc)
        if "check" in text or "CRC" in text:
            return "check"
        if "segment" in text or "extra byte" in text or "truncated" in text:
            return "coder"
        return "header"
    return "identical" if got_header == header and _same(got, frames) else "silent"


def test_corrupted_bytes_are_errors(lms: dict) -> None:
    """Every single-byte change either raises BitstreamError or decodes to exactly the
    original codes (a change the format cannot see, such as padding bits); never garbage."""
    rng = np.random.default_rng(0)
    counts: dict[str, int] = {}
    for key, audio_length, nc, check_interval, positions in (("24k", 9_600, 4, 8, 100), ("48k", 9_600, 2, 8, 60)):
        layout, lm = LAYOUTS[key], lms[key]
        header = _header(key, lm, audio_length, nc, 8, check_interval)
        frames = _frames(layout, audio_length, nc, seed=5)
        data = encode_ecdc(header, frames, layout, lm)
        _, offset = parse_header(data)
        chosen = list(range(offset)) + sorted(rng.choice(np.arange(offset, len(data)),
                                                         size=min(positions, len(data) - offset),
                                                         replace=False).tolist())
        for pos in chosen:
            damaged = bytearray(data)
            damaged[pos] = (damaged[pos] + int(rng.integers(1, 256))) % 256
            result = _outcome(bytes(damaged), layout, lm, header, frames)
            counts[result] = counts.get(result, 0) + 1
            assert result != "silent", f"{key}: byte {pos} changed, decoded to other codes without an error"
    total = sum(counts.values())
    print(f"\nsingle-byte corruptions: {total}, outcomes {counts}, detected "
          f"{100 * (total - counts.get('identical', 0)) / total:.1f}%")
    assert counts.get("check", 0) > 50 and counts.get("header", 0) > 50


def test_check_failure_names_the_frame(lms: dict) -> None:
    lm = fixed_lm_for(lms["24k"])
    codes = torch.randint(0, 1024, (4, 40))
    data = encode_segment_fixed(lm, codes, check_bits=16, check_interval=5, crc_seed=1)
    with pytest.raises(BitstreamError, match=r"frame 4: the 16-bit check does not match the codes of frames 0\.\.4"):
        decode_segment_fixed(lm, data, 4, 40, check_bits=16, check_interval=5, crc_seed=2)
    with pytest.raises(BitstreamError, match=r"frame 39: the CRC-32 at the end of the segment"):
        decode_segment_fixed(lm, data, 4, 40, check_bits=0, check_interval=5, crc_seed=1)
    with pytest.raises(BitstreamError, match="ended sooner"):
        decode_segment_fixed(lm, data[:len(data) // 2], 4, 40, check_bits=16, check_interval=5, crc_seed=1)


def test_check_bits_cost_what_they_say(lms: dict) -> None:
    """n check bits cost n bits: 9 one-byte checks in 100 frames add 9 bytes (+-1)."""
    lm = fixed_lm_for(lms["24k"])
    codes = torch.randint(0, 1024, (2, 100))
    base = encode_segment_fixed(lm, codes, check_bits=0, check_interval=10)
    checked = encode_segment_fixed(lm, codes, check_bits=8, check_interval=10)
    assert abs(len(checked) - len(base) - 9) <= 1


def test_wrong_or_missing_entropy_model(lms: dict, our_models: dict) -> None:
    key = "24k"
    layout, lm = LAYOUTS[key], lms[key]
    header = _header(key, lm, 6_400, 2)
    data = encode_ecdc(header, _frames(layout, 6_400, 2, 3), layout, lm)
    other = _lm(key, seed=99)
    with pytest.raises(BitstreamError, match=r"wrong entropy model: the file was coded with 'test_24k' \(weights "
                                             rf"hash {header.deterministic.lm_hash}\).*hash {fixed_lm_for(other).weights_hash}"):
        read_ecdc(data, layout, other)
    with pytest.raises(BitstreamError, match=r"entropy model 'test_24k' \(weights hash [0-9a-f]{16}\).*pass lm="):
        read_ecdc(data, layout)
    small = EntropyLM(n_q=1, card=1024, dim=32, num_layers=1).eval()
    with pytest.raises(BitstreamError, match="covers only 1"):
        read_ecdc(data, layout, small)
    # a header from a later fixed-point scheme
    meta = header.to_dict()
    meta["fx"] = SCHEME + 1
    raw = json.dumps(meta).encode()
    later = HEADER_STRUCT.pack(b"ECDC", 1, len(raw)) + raw + data[parse_header(data)[1]:]
    with pytest.raises(BitstreamError, match=f"scheme {SCHEME + 1}, this reader implements scheme {SCHEME}"):
        read_ecdc(later, layout, lm)
    # decompress: an unknown name cannot be looked up
    model = our_models["encodec_24khz"]
    wav = 0.1 * torch.randn(1, 3_000)
    file = compress(model, wav, bandwidth=1.5, lm=lm, deterministic=True, lm_name="my_lm.th")
    with pytest.raises(ModelLoadError, match=r"'my_lm\.th' \(weights hash [0-9a-f]{16}\), which is not a known name"):
        decompress(file, model)
    with pytest.raises(BitstreamError, match="wrong entropy model"):
        decompress(file, model, lm=other)
    # argument errors
    with pytest.raises(InvalidAudioError, match="needs an entropy model"):
        compress(model, wav, bandwidth=1.5, deterministic=True)
    with pytest.raises(TypeError, match="deterministic=True"):
        compress(model, wav, bandwidth=1.5, lm=fixed_lm_for(lm))
    with pytest.raises(InvalidAudioError, match="check_bits"):
        compress(model, wav, bandwidth=1.5, lm=lm, deterministic=True, check_bits=33)
    # a version-1 header missing its fields, or not entropy coded
    for bad in ({k: v for k, v in header.to_dict().items() if k != "lmh"}, {**header.to_dict(), "lm": False},
                {**header.to_dict(), "lmh": "XYZ"}, {**header.to_dict(), "cb": 40}):
        raw = json.dumps(bad).encode()
        with pytest.raises(BitstreamError, match="version 1|'lmh'|'cb'"):
            parse_header(HEADER_STRUCT.pack(b"ECDC", 1, len(raw)) + raw)


def test_check_bits_bounds_are_0_to_32() -> None:
    """The version 1 header documents 'cb' (check bits) as 0..32: both ends are written and
    read back; -1 and 33 are refused by the constructor and by the reader."""
    def raw_header(bits: int) -> bytes:
        meta = {"m": "x", "al": 10, "nc": 1, "lm": True, "lmn": "lm", "lmh": "0" * 16, "fx": 1,
                "cb": bits, "ci": 75}
        raw = json.dumps(meta).encode()
        return HEADER_STRUCT.pack(b"ECDC", 1, len(raw)) + raw

    for bits in (0, 1, 31, 32):
        header = EcdcHeader("x", 10, 1, True, DeterministicCoding("lm", "0" * 16, 1, check_bits=bits))
        data = raw_header(bits)
        assert parse_header(data) == (header, len(data))
        assert header.to_json() == data[HEADER_STRUCT.size:]
    for bits in (-1, 33, 64):
        pattern = rf"'cb' \(check bits\): expected an integer in \[0, 32\], got {bits}"
        with pytest.raises(BitstreamError, match=pattern):
            DeterministicCoding("lm", "0" * 16, 1, check_bits=bits)
        with pytest.raises(BitstreamError, match=pattern):
            parse_header(raw_header(bits))


def test_official_reader_rejects_version_1(lms: dict) -> None:
    layout, lm = LAYOUTS["24k"], lms["24k"]
    data = encode_ecdc(_header("24k", lm, 640, 1), _frames(layout, 640, 1, 0), layout, lm)
    with pytest.raises(ValueError, match="Version not supported"):
        official_ref.official_compress_module.decompress(data)


def test_decompress_finds_entropy_model_by_name(official_checkpoints: dict, our_models: dict,
                                                offline: Path, monkeypatch: pytest.MonkeyPatch,
                                                tmp_path: Path) -> None:
    """With no model and no entropy model given, both come from the header's names (official
    names resolved in the cache); the weights hash is checked."""
    name, lm_name = "encodec_24khz", "encodec_lm_24khz"
    lm = _lm("24k", seed=21)
    torch.save(lm.state_dict(), tmp_path / "lm.th")
    for table, key, src in ((pretrained.OFFICIAL_CHECKPOINTS, name, official_checkpoints[name]),
                            (pretrained.OFFICIAL_LM_CHECKPOINTS, lm_name, tmp_path / "lm.th")):
        raw = Path(src).read_bytes()
        filename = f"{key}-{hashlib.sha256(raw).hexdigest()[:8]}.th"
        (offline / filename).write_bytes(raw)
        monkeypatch.setitem(table, key, filename)
    model = our_models[name]
    wav = 0.1 * torch.randn(1, 4_000)
    data = compress(model, wav, bandwidth=3.0, lm=lm, deterministic=True, lm_name=lm_name)
    out, rate = decompress(data)
    assert rate == 24_000 and torch.equal(out, decompress(compress(model, wav, bandwidth=3.0), model)[0])
    # the same name with other weights in the cache: refused by hash, not decoded to garbage
    wrong = _lm("24k", seed=22)
    torch.save(wrong.state_dict(), tmp_path / "lm.th")
    raw = (tmp_path / "lm.th").read_bytes()
    filename = f"{lm_name}-{hashlib.sha256(raw).hexdigest()[:8]}.th"
    (offline / filename).write_bytes(raw)
    monkeypatch.setitem(pretrained.OFFICIAL_LM_CHECKPOINTS, lm_name, filename)
    with pytest.raises(BitstreamError, match="wrong entropy model"):
        decompress(data)


# -- command line ---------------------------------------------------------------------------------
def _cli(capsys: pytest.CaptureFixture[str], *argv: tp.Any) -> tuple[int, str, str]:
    code = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_deterministic_by_default(tmp_path: Path, capsys: pytest.CaptureFixture[str], offline: Path,
                                      official_checkpoints: dict, our_models: dict) -> None:
    ckpt = official_checkpoints["encodec_24khz"]
    torch.save(_lm("24k", seed=31).state_dict(), tmp_path / "my_lm.th")
    rng = np.random.default_rng(0)
    x = (0.1 * rng.standard_normal(int(0.3 * 24_000)))[:, None].astype(np.float32)
    sf.write(tmp_path / "in.wav", x, 24_000, subtype="FLOAT")

    code, out, err = _cli(capsys, "compress", tmp_path / "in.wav", tmp_path / "a.ecdc", "--model", ckpt,
                          "-b", "3", "--lm-model", tmp_path / "my_lm.th", "-q")
    # a random entropy model codes worse than plain 10 bits: the one warning -q keeps says so
    assert (code, out) == (0, "") and err.count("\n") == 1
    assert "warning:" in err and "is larger than plain coding" in err
    data = (tmp_path / "a.ecdc").read_bytes()
    header, _ = parse_header(data)
    model = our_models["encodec_24khz"]
    lm = load_lm_model(tmp_path / "my_lm.th", codec=model)
    assert data[4] == 1 and header.deterministic is not None
    assert header.deterministic.lm_name == "my_lm.th"
    assert header.deterministic.lm_hash == fixed_lm_for(lm).weights_hash
    wav = torch.from_numpy(x.T.copy())
    assert data == compress(model, wav, bandwidth=3.0, lm=lm, deterministic=True, lm_name="my_lm.th")

    code, out, _ = _cli(capsys, "info", tmp_path / "a.ecdc")
    assert code == 0 and "entropy model: yes (deterministic format, version 1)" in out
    assert f"lm weights:    hash {header.deterministic.lm_hash} (fixed-point scheme {SCHEME})" in out
    assert "checks:        8 bits every 75 frames, CRC-32 per segment" in out and "lm name:       my_lm.th" in out
    code, out, _ = _cli(capsys, "info", tmp_path / "a.ecdc", "--json")
    info = json.loads(out)
    assert info["format_version"] == 1 and info["lm_name"] == "my_lm.th" and info["check_interval"] == 75

    code, _, err = _cli(capsys, "decompress", tmp_path / "a.ecdc", tmp_path / "b.wav", "--model", ckpt,
                        "--lm-model", tmp_path / "my_lm.th", "-q", "--float")
    assert (code, err) == (0, "")
    got, rate = sf.read(tmp_path / "b.wav", dtype="float32")
    want = decompress(data, model, lm=lm)[0]
    assert rate == 24_000 and np.allclose(got, want[0].clamp(-1, 1).numpy(), atol=1e-6)
    # without --lm-model: the header's name is not a known one
    code, _, err = _cli(capsys, "decompress", tmp_path / "a.ecdc", tmp_path / "c.wav", "--model", ckpt)
    assert code == 1 and "my_lm.th" in err and "--lm-model" in err and "Traceback" not in err
    # another entropy model: refused by its hash
    torch.save(_lm("24k", seed=32).state_dict(), tmp_path / "other.th")
    code, _, err = _cli(capsys, "decompress", tmp_path / "a.ecdc", tmp_path / "d.wav", "--model", ckpt,
                        "--lm-model", tmp_path / "other.th")
    assert code == 1 and "wrong entropy model" in err
    assert not (tmp_path / "c.wav").exists() and not (tmp_path / "d.wav").exists()
    # --lm-format official: the official (version 0) bytes
    code, _, err = _cli(capsys, "compress", tmp_path / "in.wav", tmp_path / "o.ecdc", "--model", ckpt,
                        "-b", "3", "--lm-model", tmp_path / "my_lm.th", "--lm-format", "official", "-q")
    assert code == 0 and err.count("\n") == 1 and "is larger than plain coding" in err
    assert (tmp_path / "o.ecdc").read_bytes() == compress(model, wav, bandwidth=3.0, lm=lm)
