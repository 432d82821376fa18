"""Fast mode (``exact=False``) against exact mode, on real speech (demo/sample_speech_fr.flac).

Bounds (issue 17): codes equal to exact mode on >= 99.9% of frames, audio within 1e-4
relative L2. Measured when these tests were written (one thread):

* bundled model (opencodec_24khz), 6 kbps, the whole 6.4 s file (479 frames), streaming
  with 320-sample and 1000-sample pushes: codes equal on 479/479 frames, audio 3.6e-7
  relative; offline (``model.exact = False``): 479/479 frames, audio 4.3e-7;
* official 24 kHz architecture (random weights, codebooks from its own latents), 6 kbps,
  the first 3 s (225 frames): codes equal on 225/225 frames, audio ~1.3e-6.

A difference could only come from a near-tie in the nearest-codebook search: the fast kernels
round differently at ~1e-7 (the distances themselves are computed as in exact mode).
Exact mode is unchanged: its own tests (test_streaming.py, test_multistream.py) still check
it bit for bit.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import official_ref
from opencodec import EncodecModel
from opencodec.audio import convert_audio, read_audio
from opencodec.cli import build_parser
from opencodec.multistream import MultiStreamDecoder, MultiStreamEncoder
from opencodec.pretrained import load_model
from opencodec.step import DecoderStep, EncoderStep
from opencodec.streaming import StreamingDecoder, StreamingEncoder
from stream_models import codebooks_from_latents

REPO = Path(__file__).resolve().parent.parent
HOP = 320


@pytest.fixture(scope="module")
def speech() -> torch.Tensor:
    wav, sr = read_audio(REPO / "demo" / "sample_speech_fr.flac")
    return convert_audio(wav, sr, 24000, 1)[None]  # [1, 1, 153003]


@pytest.fixture(scope="module")
def bundled() -> EncodecModel:
    model = load_model("opencodec_24khz")
    model.set_target_bandwidth(6.0)
    return model


@pytest.fixture(scope="module")
def official_arch() -> EncodecModel:
    model = official_ref.ours_from(official_ref.make_official_model("encodec_24khz", seed=3), "encodec_24khz")
    model.set_target_bandwidth(6.0)
    return codebooks_from_latents(model, seed=3)


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


def _stream(model: EncodecModel, x: torch.Tensor, chunk: int, exact: bool
            ) -> tuple[torch.Tensor, torch.Tensor, list[int], list[int]]:
    """Codes and audio of a stream pushed ``chunk`` samples (and one code frame) at a time, with
    how many frames / samples each push gave."""
    enc, dec = StreamingEncoder(model, exact=exact), StreamingDecoder(model, exact=exact)
    codes = [enc.push(x[..., i:i + chunk]) for i in range(0, x.shape[-1], chunk)] + [enc.flush()]
    allc = torch.cat(codes, -1)
    audio = [dec.push(allc[..., t:t + 1]) for t in range(allc.shape[-1])] + [dec.flush()]
    return allc, torch.cat(audio, -1), [c.shape[-1] for c in codes], [a.shape[-1] for a in audio]


def _frames_equal(a: torch.Tensor, b: torch.Tensor) -> float:
    assert a.shape == b.shape
    return float((a == b).all(dim=1).float().mean())


@pytest.mark.parametrize("chunk", [HOP, 1000])
def test_bundled_streaming_fast_vs_exact(bundled: EncodecModel, speech: torch.Tensor, chunk: int) -> None:
    codes, audio, n_codes, n_audio = _stream(bundled, speech, chunk, exact=True)
    fcodes, faudio, fn_codes, fn_audio = _stream(bundled, speech, chunk, exact=False)
    assert codes.shape == (1, 8, -(-speech.shape[-1] // HOP))
    assert fn_codes == n_codes and fn_audio == n_audio  # same emission times
    assert _frames_equal(fcodes, codes) >= 0.999
    assert _rel(faudio, audio) <= 1e-4
    # A fast-mode receiver of an exact-mode sender, given the codes in bursts as large as the
    # sender's largest push gave (7 frames with 320-sample pushes, 9 with 1000): the decoder's
    # several-frame steps run (``_stream`` pushes one frame at a time). Measured 3.7e-7
    # relative to the exact audio (not bitwise ``faudio``: other products, other rounding).
    burst = max(n_codes)
    dec = StreamingDecoder(bundled, exact=False)
    heard = torch.cat([dec.push(codes[..., t:t + burst]) for t in range(0, codes.shape[-1], burst)]
                      + [dec.flush()], -1)
    assert heard.shape == audio.shape and _rel(heard, audio) <= 1e-4


def test_official_architecture_fast_vs_exact(official_arch: EncodecModel, speech: torch.Tensor) -> None:
    x = speech[..., :3 * 24000]
    codes, audio, _, _ = _stream(official_arch, x, HOP, exact=True)
    fcodes, faudio, _, _ = _stream(official_arch, x, HOP, exact=False)
    assert _frames_equal(fcodes, codes) >= 0.999
    assert _rel(faudio, audio) <= 1e-4
    assert len(torch.unique(codes)) > 100  # codes that follow the audio (all 8 codebooks)


def test_official_architecture_batched_and_several_frames(official_arch: EncodecModel, speech: torch.Tensor) -> None:
    """The products with several rows (3 streams in one batch; 1, then 4 frames per call) go
    through the prepacked weights of the 512-unit LSTM and 512-channel convolutions: still
    within the bounds, against exact streaming of each stream alone."""
    from opencodec.prepacked import PrepackedWeight, prepacking_available
    step = EncoderStep(official_arch, exact=False)
    lstm = next(op for op in step._net.root.ops if hasattr(op, "w_h"))  # the encoder's LSTM
    packed = [w for w in lstm.w_h if isinstance(w, PrepackedWeight)]
    assert packed and all((w.packed is not None) == prepacking_available(w.weight) for w in packed)
    xs = [speech[0, :, i * 24000:i * 24000 + 2 * 24000] for i in range(3)]
    enc = MultiStreamEncoder(official_arch, exact=False)
    dec = MultiStreamDecoder(official_arch, exact=False)
    ids, dids = [enc.open() for _ in xs], [dec.open() for _ in xs]
    codes: dict[int, list[torch.Tensor]] = {i: [] for i in ids}
    audio: dict[int, list[torch.Tensor]] = {i: [] for i in dids}
    # one frame per call (one LSTM product of [x, h]), then four (one product for the four
    # frames' inputs, then one per step)
    starts = list(range(0, 24 * HOP, HOP)) + list(range(24 * HOP, xs[0].shape[-1] - 4 * HOP + 1, 4 * HOP))
    ends = starts[1:] + [starts[-1] + 4 * HOP]
    with torch.inference_mode():
        for t, end in zip(starts, ends):
            out = enc.push({i: x[:, t:end] for i, x in zip(ids, xs)})
            back = dec.push({d: out[i] for i, d in zip(ids, dids) if out[i].shape[-1]})
            for i in ids:
                codes[i].append(out[i])
            for d, a in back.items():
                audio[d].append(a)
    for i, d, x in zip(ids, dids, xs):
        exact_codes, exact_audio, _, _ = _stream(official_arch, x[None], HOP, exact=True)
        mine, heard = torch.cat(codes[i], -1), torch.cat(audio[d], -1)
        assert mine.shape[-1] >= 140
        assert _frames_equal(mine[None], exact_codes[..., :mine.shape[-1]]) >= 0.999
        assert _rel(heard, exact_audio[0, :, :heard.shape[-1]]) <= 1e-4


def test_offline_fast_mode(bundled: EncodecModel, speech: torch.Tensor) -> None:
    with torch.inference_mode():
        codes = bundled.encode(speech)[0].codes
        audio = bundled.decode([(codes, None)])
        bundled.exact = False
        try:
            fcodes = bundled.encode(speech)[0].codes
            faudio = bundled.decode([(codes, None)])
        finally:
            bundled.exact = True
        assert torch.equal(bundled.encode(speech)[0].codes, codes)  # exact again, bit for bit
    assert _frames_equal(fcodes, codes) >= 0.999
    assert _rel(faudio, audio) <= 1e-4
    assert not torch.equal(faudio, audio)  # a different computation indeed


@pytest.mark.parametrize("length", [1, 5 * HOP + 17, 7 * HOP, 9 * HOP + 3])
def test_short_and_partial_streams(bundled: EncodecModel, speech: torch.Tensor, length: int) -> None:
    """Streams shorter than the 7-frame warm-up, exactly the warm-up, and with a partial last
    frame: as many frames and samples as exact mode, the same codes here."""
    x = speech[..., 24000:24000 + length]
    codes, audio, _, _ = _stream(bundled, x, 100, exact=True)
    fcodes, faudio, _, _ = _stream(bundled, x, 100, exact=False)
    assert torch.equal(fcodes, codes)
    assert faudio.shape == audio.shape == (1, 1, codes.shape[-1] * HOP)
    assert _rel(faudio, audio) <= 1e-4


def test_follows_the_model_setting(bundled: EncodecModel) -> None:
    assert StreamingEncoder(bundled).exact and StreamingDecoder(bundled).exact
    bundled.exact = False
    try:
        assert not StreamingEncoder(bundled).exact and not StreamingDecoder(bundled).exact
        assert StreamingEncoder(bundled, exact=True).exact
    finally:
        bundled.exact = True


def test_fast_steps_several_frames_per_call(bundled: EncodecModel, speech: torch.Tensor) -> None:
    """The fast steps take any number of whole frames per call: 1 at a time or 5 at a time
    give the same frames (up to rounding) and the same state shapes as ``state_specs``."""
    x = speech[..., :40 * HOP]
    enc = EncoderStep(bundled, exact=False)
    w = enc.warmup_frames
    with torch.inference_mode():
        first, state = enc.start(x[..., :w * HOP])
        assert [tuple(s.shape[1:]) for s in state] == [spec.shape for spec in enc.state_specs()]
        one, st = [first], state
        for t in range(w, 40):
            c, *st = enc(x[..., t * HOP:(t + 1) * HOP], *st)
            one.append(c)
        five, st = [first], state
        for t in range(w, 40, 5):
            c, *st = enc(x[..., t * HOP:min(40, t + 5) * HOP], *st)
            five.append(c)
        codes_one, codes_five = torch.cat(one, -1), torch.cat(five, -1)
        assert _frames_equal(codes_five, codes_one) >= 0.999
        dec = DecoderStep(bundled, exact=False)
        audio, dstate = dec.start(codes_one[..., :w])
        a, *_ = dec(codes_one[..., w:], *dstate)
        exact = bundled.decode([(codes_one, None)])
    assert _rel(torch.cat([audio, a], -1), exact) <= 1e-4


def test_multistream_fast(bundled: EncodecModel, speech: torch.Tensor) -> None:
    """Three streams batched in fast mode give each one's fast stream (up to rounding)."""
    xs = [speech[0, :, :30 * HOP], speech[0, :, 40 * HOP:70 * HOP], speech[0, :, 80 * HOP:110 * HOP]]
    enc = MultiStreamEncoder(bundled, exact=False)
    dec = MultiStreamDecoder(bundled, exact=False)
    ids = [enc.open() for _ in xs]
    dids = [dec.open() for _ in xs]
    codes: dict[int, list[torch.Tensor]] = {i: [] for i in ids}
    audio: dict[int, list[torch.Tensor]] = {i: [] for i in dids}
    with torch.inference_mode():
        for t in range(30):
            out = enc.push({i: x[:, t * HOP:(t + 1) * HOP] for i, x in zip(ids, xs)})
            for i in ids:
                codes[i].append(out[i])
        full = {i: torch.cat(codes[i], -1) for i in ids}
        for t in range(full[ids[0]].shape[-1]):
            got = dec.push({did: full[i][:, t:t + 1] for i, did in zip(ids, dids)})
            for did, a in got.items():
                audio[did].append(a)
    for i, did, x in zip(ids, dids, xs):
        alone, alone_audio, _, _ = _stream(bundled, x[None], HOP, exact=False)
        mine = full[i]
        assert _frames_equal(mine[None], alone[..., :mine.shape[-1]]) >= 0.999
        heard = torch.cat(audio[did], -1)
        assert _rel(heard, alone_audio[0, :, :heard.shape[-1]]) <= 1e-4


def test_cli_mode_options() -> None:
    parser = build_parser()
    assert parser.parse_args(["stream-encode"]).fast  # live commands: fast by default
    assert parser.parse_args(["stream-decode"]).fast
    assert not parser.parse_args(["stream-decode", "--exact"]).fast
    assert not parser.parse_args(["compress", "a.wav"]).fast  # files: exact by default
    assert parser.parse_args(["compress", "a.wav", "--fast"]).fast
    assert not parser.parse_args(["decompress", "a.ecdc"]).fast
    with pytest.raises(SystemExit):
        parser.parse_args(["compress", "a.wav", "--fast", "--exact"])


def test_cli_commands_set_the_mode(monkeypatch: pytest.MonkeyPatch, speech: torch.Tensor, tmp_path: Path) -> None:
    """stream-encode / stream-decode run fast mode unless --exact; compress exact unless --fast."""
    import io
    import sys

    import soundfile as sf

    from opencodec import cli, codec_files, model_cache

    seen: list[EncodecModel] = []
    real = model_cache.load_model

    def spy(*args: object, **kwargs: object) -> EncodecModel:
        seen.append(real(*args, **kwargs))  # type: ignore[arg-type]
        return seen[-1]

    monkeypatch.setattr(model_cache, "load_model", spy)  # stream-encode, stream-decode
    monkeypatch.setattr(codec_files, "load_model", spy)  # compress
    wav = io.BytesIO()
    sf.write(wav, speech[0, 0, :12000].numpy(), 24000, format="WAV", subtype="PCM_16")

    def run(args: list[str], data: bytes) -> bytes:
        out = io.BytesIO()
        monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(data)))
        monkeypatch.setattr(sys, "stdout", io.TextIOWrapper(out))
        assert cli.main(["-q", *args]) == 0
        sys.stdout.flush()
        return out.getvalue()

    for flags, exact in (([], False), (["--exact"], True)):
        packets = run(["stream-encode", "-b", "6", *flags], wav.getvalue())
        assert seen[-1].exact is exact
        assert len(run(["stream-decode", *flags], packets)) > 2 * 12000
        assert seen[-1].exact is exact
    src = tmp_path / "in.wav"
    src.write_bytes(wav.getvalue())
    for flags, exact in (([], True), (["--fast"], False)):
        assert cli.main(["-q", "compress", str(src), str(tmp_path / f"out{len(flags)}.ecdc"), *flags]) == 0
        assert seen[-1].exact is exact


@pytest.mark.parametrize("align", [4, 10])
def test_frames_per_call_keeps_packet_times(bundled: EncodecModel, speech: torch.Tensor, align: int) -> None:
    """With ``frames_per_call`` N, frames come out in whole groups of N (after the warm-up's
    first ones), no later than the packets of N frames they fill, with the same codes."""
    x = speech[..., :30 * HOP + 123]
    plain = StreamingEncoder(bundled, exact=False)
    held = StreamingEncoder(bundled, exact=False, frames_per_call=align)
    total_plain = total_held = 0
    codes_plain, codes_held = [], []
    for i in range(0, x.shape[-1], HOP):
        a, b = plain.push(x[..., i:i + HOP]), held.push(x[..., i:i + HOP])
        codes_plain.append(a)
        codes_held.append(b)
        total_plain += a.shape[-1]
        total_held += b.shape[-1]
        assert total_held % align == 0 or total_held == 7  # whole packets (or the warm-up's 7)
        assert total_held // align == total_plain // align  # each packet as early as before
    codes_plain.append(plain.flush())
    codes_held.append(held.flush())
    assert torch.equal(torch.cat(codes_held, -1), torch.cat(codes_plain, -1))
