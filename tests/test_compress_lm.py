"""Entropy-coded ``.ecdc`` files (``"lm": true``): byte-identical to the official writer, readable
both ways, robust to damage; the entropy model lookup (``load_lm_model``) and the CLI options."""

from __future__ import annotations

import hashlib
import io
import typing as tp
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from encodec.model import LMModel

import official_ref
from opencodec import EncodecConfig, EncodecModel, cli, pretrained
from opencodec.audio import read_audio
from opencodec.bitstream import EcdcHeader, parse_header, read_ecdc, write_header
from opencodec.compress import InvalidAudioError, compress, decompress
from opencodec.entropy import EntropyLM, load_lm
from opencodec.errors import BitstreamError, ModelLoadError
from opencodec.pretrained import lm_name_for_codec, load_lm_model

official = official_ref.official_compress_module
LM_FILES = {"encodec_24khz": "encodec_lm_24khz-1608e3c0.th", "encodec_48khz": "encodec_lm_48khz-7add9fc3.th"}


@pytest.fixture(scope="module")
def official_lms(official_models: dict) -> dict:
    """Official LMModel entropy models with random weights, keyed by codec name."""
    lms = {}
    for seed, (name, ref) in enumerate(official_models.items()):
        torch.manual_seed(100 + seed)
        lms[name] = LMModel(ref.quantizer.n_q, ref.quantizer.bins, num_layers=5, dim=200,
                            past_context=int(3.5 * ref.frame_rate)).eval()
    return lms


@pytest.fixture(scope="module")
def our_lms(official_lms: dict, our_models: dict) -> dict:
    return {name: load_lm(ref.state_dict(), our_models[name].n_q, frame_rate=our_models[name].frame_rate)
            for name, ref in official_lms.items()}


@pytest.fixture(scope="module")
def lm_files(official_lms: dict, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The random LMs' state dicts saved as `.th` files (as the official ones are)."""
    folder = tmp_path_factory.mktemp("lm_ckpt")
    paths = {}
    for name, lm in official_lms.items():
        paths[name] = folder / f"{name}-lm-random.th"
        torch.save(lm.state_dict(), paths[name])
    return paths


def _audio(channels: int, length: int, sample_rate: int, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    t = torch.arange(length) / sample_rate
    rows = [0.3 * torch.sin(2 * torch.pi * (220 + 110 * c) * t) + 0.05 * torch.randn(length, generator=gen)
            for c in range(channels)]
    return torch.stack(rows)


class _Official:
    """The official compress/decompress with our random codec and LM swapped in."""

    def __init__(self, ref: tp.Any, ref_lm: LMModel, monkeypatch: pytest.MonkeyPatch):
        self.ref = ref
        monkeypatch.setattr(ref, "get_lm_model", lambda: ref_lm, raising=False)

    def compress(self, wav: torch.Tensor, bandwidth: float) -> bytes:
        previous = self.ref.bandwidth
        self.ref.set_target_bandwidth(bandwidth)
        try:
            return official.compress(self.ref, wav, use_lm=True)
        finally:
            self.ref.bandwidth = previous

    def decompress(self, data: bytes) -> tuple[torch.Tensor, int]:
        with official_ref.patched_official_models({self.ref.name: self.ref}):
            return official.decompress(data)


# -- bytes and audio against the official package -------------------------------------------
@pytest.mark.parametrize("name,bandwidth,seconds,segments", [
    ("encodec_24khz", 1.5, 1.0, 1),
    ("encodec_24khz", 6.0, 0.5, 1),
    ("encodec_48khz", 3.0, 2.5, 3),   # three 1 s segments (stride 0.99 s), each with a scale
    ("encodec_48khz", 6.0, 1.2, 2),
])
def test_lm_files_match_official(official_models: dict, official_lms: dict, our_models: dict,
                                 our_lms: dict, monkeypatch: pytest.MonkeyPatch, name: str,
                                 bandwidth: float, seconds: float, segments: int) -> None:
    model, lm = our_models[name], our_lms[name]
    ref = _Official(official_models[name], official_lms[name], monkeypatch)
    length = int(seconds * model.sample_rate) + 7
    wav = _audio(model.channels, length, model.sample_rate, seed=length)

    ours = compress(model, wav, bandwidth=bandwidth, lm=lm)
    theirs = ref.compress(wav, bandwidth)
    assert ours == theirs
    header, offset = parse_header(ours)
    assert header == EcdcHeader(name, length, model.num_codebooks(bandwidth), True)
    plain = compress(model, wav, bandwidth=bandwidth)
    assert len(ours) != len(plain)  # really entropy coded (random LM: not necessarily smaller)

    # Codes parsed from the file are those the codec produced, segment by segment.
    previous = model.bandwidth
    model.set_target_bandwidth(bandwidth)
    try:
        with torch.no_grad():
            expected = model.encode(wav[None])
    finally:
        model.bandwidth = previous
    _, frames = read_ecdc(ours, model, lm)
    assert len(frames) == segments
    for (codes, scale), (want, want_scale) in zip(frames, expected):
        assert torch.equal(codes, want)
        assert (scale is None) == (want_scale is None)
        if scale is not None:
            assert scale.item() == pytest.approx(want_scale.item(), rel=1e-6)

    # Our reader on the official file == the official reader (and the plain file's audio).
    our_wav, rate = decompress(theirs, model, lm=lm)
    ref_wav, ref_rate = ref.decompress(ours)  # the official reader on our file
    assert rate == ref_rate == model.sample_rate
    assert our_wav.shape == ref_wav.shape == (model.channels, length)
    assert torch.equal(our_wav, ref_wav)
    assert torch.equal(our_wav, decompress(plain, model)[0])


def test_decompress_finds_models_and_lm_in_the_cache(official_checkpoints: dict, lm_files: dict,
                                                     official_models: dict, official_lms: dict,
                                                     our_models: dict, our_lms: dict, offline: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """With no model and no LM given, both are found from the header's model name: the files
    are looked up in the cache and checked against the sha256 prefix in their names."""
    name = "encodec_24khz"
    for table, key, src in ((pretrained.OFFICIAL_CHECKPOINTS, name, official_checkpoints[name]),
                            (pretrained.OFFICIAL_LM_CHECKPOINTS, "encodec_lm_24khz", lm_files[name])):
        data = Path(src).read_bytes()
        filename = f"{key}-{hashlib.sha256(data).hexdigest()[:8]}.th"
        (offline / filename).write_bytes(data)
        monkeypatch.setitem(table, key, filename)
    model = our_models[name]
    wav = _audio(1, 12_000, 24_000, seed=3)
    data = _Official(official_models[name], official_lms[name], monkeypatch).compress(wav, 3.0)
    out, rate = decompress(data)
    assert rate == 24_000 and torch.equal(out, decompress(data, model, lm=our_lms[name])[0])
    lm = load_lm_model(codec=model)
    assert lm.n_q == 32 and lm.card == 1024 and lm.past_context == 262


# -- damage -----------------------------------------------------------------------------------
@pytest.mark.timeout(120, method="thread")  # garbage input must never hang the decoder
def test_truncated_padded_and_corrupt_lm_bodies(our_models: dict, our_lms: dict) -> None:
    model, lm = our_models["encodec_48khz"], our_lms["encodec_48khz"]
    data = compress(model, _audio(2, 50_000, 48_000), bandwidth=3.0, lm=lm)
    _, offset = parse_header(data)
    assert len(decompress(data, model, lm=lm)[0][0]) == 50_000
    for cut in (1, 2, 7, (len(data) - offset) // 2, len(data) - offset - 3, len(data) - offset):
        with pytest.raises(BitstreamError, match="truncated|ended sooner"):
            decompress(data[:-cut], model, lm=lm)
    for pad in (b"\0", b"\xff" * 5):
        with pytest.raises(BitstreamError, match="extra byte"):
            decompress(data + pad, model, lm=lm)
    # A header claiming absurdly long audio is refused before decoding anything.
    fo = io.BytesIO()
    write_header(fo, EcdcHeader("encodec_48khz", 10 ** 12, 2, True))
    with pytest.raises(BitstreamError, match="truncated"):  # pytest-timeout guards a hang
        decompress(fo.getvalue() + data[offset:], model, lm=lm)
    # Garbage after a valid first scale never hangs: it ends in a BitstreamError (corrupt or
    # truncated code, a bad second scale, or extra bytes).
    gen = torch.Generator().manual_seed(0)
    for _ in range(4):
        junk = bytes(torch.randint(0, 256, (len(data) - offset - 4,), generator=gen).tolist())
        with pytest.raises(BitstreamError):
            decompress(data[:offset + 4] + junk, model, lm=lm)
    # A 0 scale is reported like in plain files.
    bad = bytearray(data)
    bad[offset:offset + 4] = bytes(4)
    with pytest.raises(BitstreamError, match=r"segment 0 \(sample 0\): scale must be finite and > 0"):
        decompress(bytes(bad), model, lm=lm)


def test_lm_must_fit_the_file_and_codec(our_models: dict, our_lms: dict) -> None:
    model, lm = our_models["encodec_24khz"], our_lms["encodec_24khz"]
    wav = _audio(1, 4000, 24_000)
    data = compress(model, wav, bandwidth=6.0, lm=lm)  # 8 codebooks
    torch.manual_seed(0)
    small = EntropyLM(n_q=4, card=1024, num_layers=1).eval()
    other_bins = EntropyLM(n_q=8, card=512, num_layers=1).eval()
    with pytest.raises(BitstreamError, match="uses 8 codebooks, but the entropy model covers only 4"):
        decompress(data, model, lm=small)
    with pytest.raises(BitstreamError, match="predicts 512 bins"):
        decompress(data, model, lm=other_bins)
    with pytest.raises(InvalidAudioError, match="covers 4 codebooks.*uses 8 at 6 kbps"):
        compress(model, wav, bandwidth=6.0, lm=small)
    assert parse_header(compress(model, wav, bandwidth=3.0, lm=small))[0].use_lm  # 4 codebooks fit
    with pytest.raises(TypeError, match="EntropyLM"):
        compress(model, wav, bandwidth=6.0, lm=object())  # type: ignore[arg-type]
    # A plain file ignores the LM.
    plain = compress(model, wav, bandwidth=6.0)
    assert torch.equal(decompress(plain, model, lm=small)[0], decompress(plain, model)[0])


# -- finding the entropy model -------------------------------------------------------------------
def test_load_lm_model_names_paths_and_errors(lm_files: dict, official_checkpoints: dict,
                                              official_lms: dict, our_models: dict, offline: Path,
                                              tmp_path: Path) -> None:
    assert lm_name_for_codec("encodec_24khz") == "encodec_lm_24khz"
    assert lm_name_for_codec("encodec_48khz") == "encodec_lm_48khz"
    assert lm_name_for_codec("opencodec_24khz") == "opencodec_lm_24khz"  # bundled
    # A path: sizes read off the tensors, the window from the codec's frame rate.
    lm = load_lm_model(lm_files["encodec_48khz"], codec=our_models["encodec_48khz"])
    assert (lm.n_q, lm.card, lm.past_context) == (16, 1024, 525)
    ref = official_lms["encodec_48khz"].state_dict()
    assert all(torch.equal(a, ref[k]) for k, a in lm.state_dict().items())
    # Missing official file, offline: the message names the file and the folder.
    for name, codec_name in (("encodec_lm_48khz", None), (None, "encodec_24khz")):
        codec = our_models[codec_name] if codec_name else None
        with pytest.raises(ModelLoadError) as info:
            load_lm_model(name, codec=codec)
        filename = LM_FILES[codec_name or "encodec_48khz"]
        assert filename in str(info.value) and str(offline / filename) in str(info.value)
        assert "entropy model" in str(info.value) and "--lm-model" in str(info.value)
    # No entropy model known for a custom codec.
    tiny = EncodecModel(EncodecConfig(name="tiny_16khz", sample_rate=16000, n_filters=4, dimension=16,
                                      n_q=4, ratios=[4, 4], lstm=1, target_bandwidths=[1.0, 2.0]))
    with pytest.raises(ModelLoadError, match=r"no entropy model is known for codec 'tiny_16khz'.*--lm-model PATH"):
        load_lm_model(codec=tiny)
    # Mismatches and wrong files.
    with pytest.raises(ModelLoadError, match="covers 16 codebooks, but 32 are used"):
        load_lm_model(lm_files["encodec_48khz"], codec=our_models["encodec_24khz"], num_codebooks=32)
    torch.manual_seed(0)
    torch.save(EntropyLM(n_q=4, card=512, num_layers=1).state_dict(), tmp_path / "lm512.th")
    with pytest.raises(ModelLoadError, match="predicts 512 bins per codebook, but codec encodec_24khz has 1024"):
        load_lm_model(tmp_path / "lm512.th", codec=our_models["encodec_24khz"])
    with pytest.raises(ModelLoadError, match="not an entropy model state dict"):
        load_lm_model(official_checkpoints["encodec_24khz"])
    with pytest.raises(ModelLoadError, match="no entropy model named 'nope'"):
        load_lm_model("nope")


# -- command line ----------------------------------------------------------------------------------
def _run(capsys: pytest.CaptureFixture[str], *argv: tp.Any) -> tuple[int, str, str]:
    code = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_lm_round_trip_and_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str], offline: Path,
                                      official_checkpoints: dict, lm_files: dict, official_models: dict,
                                      official_lms: dict, our_lms: dict,
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    ckpt, lm_path = official_checkpoints["encodec_24khz"], lm_files["encodec_24khz"]
    rng = np.random.default_rng(0)
    t = np.arange(int(0.8 * 24_000)) / 24_000
    x = (0.3 * np.sin(2 * np.pi * 220 * t) + 0.02 * rng.standard_normal(len(t)))[:, None].astype(np.float32)
    sf.write(tmp_path / "in.wav", x, 24_000, subtype="FLOAT")

    code, out, err = _run(capsys, "compress", tmp_path / "in.wav", tmp_path / "a.ecdc", "--model", ckpt,
                          "-b", "3", "--lm", "--lm-model", lm_path, "--lm-format", "official", "-q")
    data = (tmp_path / "a.ecdc").read_bytes()
    # a random entropy model codes worse than plain packing: one warning line says so, with the
    # size plain coding gives (computed, not encoded: exactly the plain file's)
    plain = len(compress(pretrained.load_model(ckpt), torch.from_numpy(x.T.copy()), 3.0))
    assert len(data) > plain
    assert (code, out) == (0, "") and err == (
        f"opencodec: warning: {tmp_path / 'a.ecdc'}: the entropy-coded file ({len(data)} bytes) is larger "
        f"than plain coding ({plain} bytes): the entropy model predicts these codes poorly; plain coding "
        f"(no --lm/--lm-model) is smaller\n")
    ref = _Official(official_models["encodec_24khz"], official_lms["encodec_24khz"], monkeypatch)
    assert data == ref.compress(torch.from_numpy(x.T.copy()), 3.0)
    code, out, _ = _run(capsys, "info", tmp_path / "a.ecdc")
    assert code == 0 and "entropy model: yes" in out

    code, out, err = _run(capsys, "decompress", tmp_path / "a.ecdc", tmp_path / "b.wav", "--model", ckpt,
                          "--lm-model", lm_path, "-q", "--float")
    assert (code, out, err) == (0, "", "")
    got, rate = read_audio(tmp_path / "b.wav")
    want = ref.decompress(data)[0]
    assert rate == 24_000 and got.shape == want.shape
    torch.testing.assert_close(got, want.clamp(-1, 1), rtol=0, atol=1e-6)

    # --lm-model alone implies --lm; a .wav output is a round trip through the entropy coder.
    code, _, err = _run(capsys, "compress", tmp_path / "in.wav", tmp_path / "rt.wav", "--model", ckpt,
                        "-b", "3", "--lm-model", lm_path, "-q")
    assert code == 0 and err.startswith("opencodec: warning: ") and "larger than plain coding" in err
    assert torch.allclose(read_audio(tmp_path / "rt.wav")[0], got, atol=1e-4)

    # The entropy model belonging to the codec is not in the (empty, offline) cache.
    code, _, err = _run(capsys, "decompress", tmp_path / "a.ecdc", tmp_path / "c.wav", "--model", ckpt)
    assert code == 1 and "Traceback" not in err and "a.ecdc" in err
    assert LM_FILES["encodec_24khz"] in err and str(offline) in err
    code, _, err = _run(capsys, "compress", tmp_path / "in.wav", tmp_path / "d.ecdc", "--model", ckpt, "--lm")
    assert code == 1 and LM_FILES["encodec_24khz"] in err and str(offline) in err
    # An entropy model that does not cover the codebooks used.
    code, _, err = _run(capsys, "compress", tmp_path / "in.wav", tmp_path / "e.ecdc", "--model", ckpt,
                        "-b", "24", "--lm-model", lm_files["encodec_48khz"])
    assert code == 1 and "covers 16 codebooks, but 32 are used" in err
    code, _, err = _run(capsys, "decompress", tmp_path / "a.ecdc", tmp_path / "f.wav", "--model", ckpt,
                        "--lm-model", tmp_path / "missing.th")
    assert code == 1 and "missing.th" in err
    assert not any((tmp_path / n).exists() for n in ("c.wav", "d.ecdc", "e.ecdc", "f.wav"))
