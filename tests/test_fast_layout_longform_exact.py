"""Gaps found by the mutation audit of ``streaming_fast``, ``weights_layout`` and
``longform.common`` / ``longform.blocks``: each test here fails on a plausible bug
that the other tests let through (the mutant is named in each docstring).
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from official_ref import random_codebooks
from opencodec import EncodecConfig, EncodecModel, ModelLoadError
from opencodec.audio import convert_audio, read_audio
from opencodec.compress import compress, decompress
from opencodec.errors import AudioIOError
from opencodec.longform import compress_file_streaming, decompress_file_streaming, supports_streaming
from opencodec.longform.blocks import _ConvertedBlocks, _read_block
from opencodec.pretrained import load_model, save_model
from opencodec.streaming import StreamingDecoder, StreamingEncoder
from opencodec.streaming_fast import FastStreamEncoder
from opencodec.weights_layout import model_from_state_dict, read_weights
from signals import tones_and_noise
from stream_models import tiny_random_model

REPO = Path(__file__).resolve().parent.parent
HOP = 320


# -- streaming_fast ------------------------------------------------------------------------
@pytest.fixture(scope="module")
def bundled() -> EncodecModel:
    model = load_model("opencodec_24khz")
    model.set_target_bandwidth(6.0)
    return model


@pytest.fixture(scope="module")
def speech() -> torch.Tensor:
    wav, sr = read_audio(REPO / "demo" / "sample_speech_fr.flac")
    return convert_audio(wav, sr, 24000, 1)[None, :, 24000:24000 + 40 * HOP]  # [1, 1, 12800]


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


def _encode(model: EncodecModel, x: torch.Tensor, exact: bool, **kw: int) -> torch.Tensor:
    enc = StreamingEncoder(model, exact=exact, **kw)
    return torch.cat([enc.push(x[..., i:i + HOP]) for i in range(0, x.shape[-1], HOP)] + [enc.flush()], -1)


def test_fast_decoder_codebook_count_changing_during_the_warm_up(bundled: EncodecModel,
                                                                  speech: torch.Tensor) -> None:
    """Pushes of 8, 4, 2 then 8 codebooks, the first three inside the 7-frame warm-up: the
    frames gathered for ``start`` get the missing codebooks' rows as -1 (nothing), so the audio
    is exact mode's (which decodes each push with its own codebooks). Kills ``_cat_codes``
    with ``min`` for ``max``, a 0 fill for -1, and the fill put before the codes."""
    codes = _encode(bundled, speech, exact=True)
    assert codes.shape == (1, 8, 40)
    pushes = [codes[:, :, 0:3], codes[:, :4, 3:5], codes[:, :2, 5:9], codes[:, :, 9:20]]
    heard = {}
    for exact in (True, False):
        dec = StreamingDecoder(bundled, exact=exact)
        heard[exact] = torch.cat([dec.push(c) for c in pushes] + [dec.flush()], -1)
    assert heard[True].shape == heard[False].shape == (1, 1, 20 * HOP)
    assert _rel(heard[False], heard[True]) <= 1e-4
    # the fewer codebooks really changed the audio (else the test could not see a wrong fill)
    full = StreamingDecoder(bundled, exact=True)
    plain = torch.cat([full.push(codes[..., :20]), full.flush()], -1)
    assert _rel(plain[..., 3 * HOP:9 * HOP], heard[True][..., 3 * HOP:9 * HOP]) > 1e-2


def test_fast_short_stream_keeps_the_codebook_count_it_was_built_with(bundled: EncodecModel,
                                                                      speech: torch.Tensor) -> None:
    """A stream shorter than the warm-up is encoded at ``flush`` with the codebook count fixed
    when the encoder was built, as exact mode and the docs say, even when the model's bandwidth
    changed since. Kills ``flush`` using ``model.num_codebooks()`` at flush time."""
    x = speech[..., :5 * HOP + 17]
    encs = {exact: StreamingEncoder(bundled, exact=exact) for exact in (True, False)}
    bundled.set_target_bandwidth(12.0)
    try:
        got = {exact: torch.cat([e.push(x), e.flush()], -1) for exact, e in encs.items()}
    finally:
        bundled.set_target_bandwidth(6.0)
    assert got[False].shape == got[True].shape == (1, 8, 6)
    assert torch.equal(got[False], got[True])


def test_fast_flush_of_frames_held_back_on_a_frame_boundary(bundled: EncodecModel,
                                                            speech: torch.Tensor) -> None:
    """``frames_per_call=4`` and a stream of exactly 30 frames: 7 + 20 frames come out of the
    pushes, ``flush`` gives the 3 held back (whole frames, no partial tail). Kills ``flush``
    calling ``finish`` on an empty tail (``>=`` for ``>``), which raised ValueError."""
    x = speech[..., :30 * HOP]
    held, plain = _encode(bundled, x, exact=False, frames_per_call=4), _encode(bundled, x, exact=False)
    assert held.shape == plain.shape == (1, 8, 30)
    assert torch.equal(held, plain)


def test_fast_encoder_flush_starts_a_new_stream(bundled: EncodecModel, speech: torch.Tensor) -> None:
    """``FastStreamEncoder`` (public in ``streaming_fast``) used alone: after ``flush`` the same
    object encodes a new stream from its start. Kills ``flush`` without its ``reset``."""
    x = speech[..., :12 * HOP + 50]
    enc = FastStreamEncoder(bundled)
    with torch.inference_mode():
        runs = [torch.cat([enc.push(x[..., :10 * HOP]), enc.push(x[..., 10 * HOP:]), enc.flush()], -1)
                for _ in range(2)]
    assert runs[0].shape == (1, 8, 13)
    assert torch.equal(runs[0], runs[1])


# -- weights_layout ------------------------------------------------------------------------

_SIZE_FIELDS = ("channels", "norm", "n_filters", "kernel_size", "ratios", "n_residual_layers", "lstm",
                "dimension", "last_kernel_size", "n_q", "bins", "residual_kernel_size", "compress",
                "true_skip")


@pytest.fixture(scope="module")
def tiny() -> EncodecModel:
    """A small random-weight causal 24 kHz model (4 codebooks of 1024, 1 LSTM layer)."""
    return tiny_random_model()


def _same_weights(a: EncodecModel, b: EncodecModel) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.mark.parametrize("cfg, causal, bandwidths", [
    # the tiny model: 4 codebooks of 10 bits at 75 Hz -> [2, 4] codebooks
    (dict(n_filters=4, dimension=16, lstm=1, n_q=4, target_bandwidths=[1.5, 3.0]), True, [1.5, 3.0]),
    # every size off its default; time_group_norm -> read as non-causal; 6 codebooks of 8 bits
    # at 24000 / 8 = 3000 Hz -> [2, 4, 6] codebooks
    (dict(channels=2, norm="time_group_norm", causal=False, n_filters=4, dimension=16, ratios=[4, 2],
          n_residual_layers=2, lstm=2, kernel_size=5, last_kernel_size=3, residual_kernel_size=5,
          compress=4, true_skip=True, n_q=6, bins=256), False, [48.0, 96.0, 144.0]),
])
def test_config_read_off_tensor_shapes(cfg: dict, causal: bool, bandwidths: list[float]) -> None:
    """A state dict without a configuration: every architecture size is read off the shapes,
    causality off the norm, default bandwidths off the codebook count; the rebuilt model
    computes what the original does. Kills mutants of ``infer_config`` (the ``// 2`` of the
    ratios, ``convs[1:-1]``, compress, true_skip, LSTM layers, residual layers, the causal
    rule, bits per codebook, ``_default_codebook_counts``, ``any`` for ``all`` in the
    official-config match) that the official-layout tests cannot see."""
    torch.manual_seed(0)
    model = EncodecModel(EncodecConfig(**cfg)).eval()
    loaded = model_from_state_dict(model.state_dict())
    assert loaded.config.name == "unset"
    for k in _SIZE_FIELDS:
        assert getattr(loaded.config, k) == getattr(model.config, k), k
    assert loaded.config.causal is causal
    assert loaded.config.target_bandwidths == bandwidths
    assert _same_weights(loaded, model)
    x = torch.randn(1, model.channels, 4000, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        torch.testing.assert_close(loaded.encoder(x), model.encoder(x), rtol=0, atol=0)


def test_weight_file_suffix_is_case_insensitive(tiny: EncodecModel, tmp_path: Path) -> None:
    """``W.PT`` is a PyTorch file as ``w.pt`` is. Kills dropping ``.lower()``."""
    torch.save(tiny.state_dict(), tmp_path / "W.PT")
    state, config = read_weights(tmp_path / "W.PT")
    assert config is None and state.keys() == tiny.state_dict().keys()


def test_state_dict_and_config_wrapper(tiny: EncodecModel, tmp_path: Path) -> None:
    """``{"state_dict": ..., "config": {...}}`` gives the tensors and the config; a config that
    is not a dict is refused by name. Kills dropping the unwrapping or the config check."""
    torch.save({"state_dict": tiny.state_dict(), "config": tiny.config.to_dict()}, tmp_path / "w.pt")
    state, config = read_weights(tmp_path / "w.pt")
    assert config == tiny.config.to_dict()
    assert all(torch.equal(state[k], v) for k, v in tiny.state_dict().items())
    assert load_model(tmp_path / "w.pt").config == tiny.config
    torch.save({"state_dict": tiny.state_dict(), "config": [1]}, tmp_path / "bad.pt")
    with pytest.raises(ModelLoadError, match=r"'config' must be a dict, got list"):
        read_weights(tmp_path / "bad.pt")


def test_codec_training_checkpoint_and_non_tensor_values(tmp_path: Path) -> None:
    """A codec training checkpoint (``opt_g``, no ``optim``) names the export to load; a dict
    holding a non-tensor is not a state dict. Kills ``{"optim"}`` for ``{"optim", "opt_g"}``
    and ``any`` for ``all`` in the tensor check."""
    torch.save({"model": {}, "disc": {}, "opt_g": {}, "opt_d": {}, "step": 20}, tmp_path / "checkpoint.pt")
    with pytest.raises(ModelLoadError, match=r"is a training checkpoint \(model, optimiser and step 20\), "
                       r"not model weights: load .*model\.safetensors"):
        read_weights(tmp_path / "checkpoint.pt")
    torch.save({"a": torch.zeros(1), "b": [1, 2]}, tmp_path / "mixed.pt")
    with pytest.raises(ModelLoadError, match=r"expected a dict of tensors"):
        read_weights(tmp_path / "mixed.pt")


def test_non_name_keys_are_a_one_line_error(tiny: EncodecModel, tmp_path: Path) -> None:
    """A dict of tensors with a non-str key is no state dict: ``ModelLoadError`` naming the key
    from the file reader, ``load_model`` and ``model_from_state_dict`` (it was a ``TypeError``
    from deep inside ``normalize_keys``: "expected string or bytes-like object, got 'int'")."""
    state = dict(tiny.state_dict())
    state[0] = torch.zeros(1)  # type: ignore[index]
    torch.save(state, tmp_path / "w.pt")
    for call in (lambda: read_weights(tmp_path / "w.pt"), lambda: load_model(tmp_path / "w.pt")):
        with pytest.raises(ModelLoadError, match=r"w\.pt: expected a dict of tensors \(a state dict\) "
                           r"keyed by names, got key 0 \(int\)$"):
            call()
    with pytest.raises(ModelLoadError, match=r"^my weights: expected a dict of tensors .*got key 0 \(int\)$"):
        model_from_state_dict(state, source="my weights")
    with pytest.raises(ModelLoadError, match=r"^state dict: expected a dict of tensors \(a state dict\)$"):
        model_from_state_dict([1, 2])  # type: ignore[arg-type]


class _Evil:
    def __reduce__(self):  # pragma: no cover - must never run
        return (exec, ("raise SystemExit('unpickled!')",))


def test_torch_load_refusal_reasons(tmp_path: Path) -> None:
    """The one-line reasons: an empty file, a file that is no PyTorch file, a pickle of other
    objects (protocol 2+ pickles start with 0x80). Kills dropping the empty-file branch or
    the pickle magic byte."""
    (tmp_path / "empty.pt").write_bytes(b"")
    with pytest.raises(ModelLoadError, match=r"empty\.pt: cannot load as a PyTorch state dict \(the file is empty\)$"):
        read_weights(tmp_path / "empty.pt")
    (tmp_path / "text.pt").write_text("hello")
    with pytest.raises(ModelLoadError, match=r"not a PyTorch file: neither a torch\.save zip archive nor a pickle"):
        read_weights(tmp_path / "text.pt")
    with open(tmp_path / "evil.pt", "wb") as f:
        pickle.dump({"x": _Evil()}, f, protocol=2)
    with pytest.raises(ModelLoadError, match=r"holds Python objects other than tensors \(.*\), which are not loaded"):
        read_weights(tmp_path / "evil.pt")


def test_inference_only_export_refills_training_buffers(tiny: EncodecModel, tmp_path: Path) -> None:
    """An inference-only ``.safetensors`` export comes back with ``embed_avg = embed`` and unit
    cluster sizes; an ordinary export keeps its own statistics. Kills a wrong metadata test
    and wrong refill values."""
    path = save_model(tiny, tmp_path / "slim.safetensors", inference_only=True)
    state, _ = read_weights(path)
    embeds = [k for k in state if k.endswith("._codebook.embed")]
    assert len(embeds) == 4
    for key in embeds:
        prefix = key[: -len(".embed")]
        assert torch.equal(state[prefix + ".embed_avg"], state[key])
        assert torch.equal(state[prefix + ".cluster_size"], torch.ones(state[key].shape[0]))
    full = tiny.state_dict()
    k0 = embeds[0][: -len(".embed")] + ".cluster_size"
    full[k0] = torch.full_like(full[k0], 3.0)
    with torch.no_grad():
        mine = tiny_random_model()
        mine.load_state_dict(full)
    state, _ = read_weights(save_model(mine, tmp_path / "full.safetensors"))
    assert torch.equal(state[k0], full[k0])


def test_missing_keys_hint_and_long_lists(tiny: EncodecModel) -> None:
    """Only training statistics missing: the re-save hint; something else missing too: no
    hint; more than six keys: the first six and a count. Kills ``any`` for ``all`` in the
    hint rule and a ``_short_list`` without its count."""
    state = tiny.state_dict()
    stats = {k: v for k, v in state.items() if not k.endswith(("._codebook.embed_avg", "._codebook.cluster_size"))}
    with pytest.raises(ModelLoadError, match=r"only codebook training statistics are missing"):
        model_from_state_dict(stats, tiny.config)
    other = dict(stats)
    del other["decoder.model.0.conv.conv.bias"]
    with pytest.raises(ModelLoadError) as info:
        model_from_state_dict(other, tiny.config)
    msg = str(info.value)
    assert "training statistics" not in msg
    # 4 codebooks x 2 statistics + 1 bias = 9 missing keys (sorted): six named, then "(+3 more)"
    assert ("missing keys: decoder.model.0.conv.conv.bias, quantizer.vq.layers.0._codebook.cluster_size, "
            "quantizer.vq.layers.0._codebook.embed_avg, quantizer.vq.layers.1._codebook.cluster_size, "
            "quantizer.vq.layers.1._codebook.embed_avg, quantizer.vq.layers.2._codebook.cluster_size "
            "(+3 more)") in msg


# -- longform.common / longform.blocks -----------------------------------------------------


def _wav(path: Path, seconds: float, rate: int, channels: int = 1, seed: int = 0) -> Path:
    sf.write(str(path), tones_and_noise(seconds, rate, channels=channels, seed=seed), rate, subtype="FLOAT")
    return path


def test_a_causal_renormalising_model_cannot_be_streamed(tmp_path: Path) -> None:
    """Causal but renormalising (no segments): its scale needs the whole signal, so no
    bounded-memory path. Kills ``supports_streaming`` ignoring ``normalize``."""
    model = EncodecModel(EncodecConfig(name="cn", n_filters=4, dimension=16, lstm=1, n_q=4,
                                       normalize=True, target_bandwidths=[1.5]))
    assert model.config.causal and model.segment_length is None
    assert not supports_streaming(model)
    src = _wav(tmp_path / "in.wav", 0.3, 24000)
    with pytest.raises(ValueError, match=r"model 'cn' cannot be streamed"):
        compress_file_streaming(model, src, tmp_path / "o.ecdc", 1.5)
    assert not (tmp_path / "o.ecdc").exists()


@pytest.fixture(scope="module")
def three_bit() -> EncodecModel:
    """A tiny causal model with 8-entry codebooks (3 bits): 1 codebook x 4 frames is 12 bits,
    not whole bytes; 8 frames (the packing unit) always are."""
    torch.manual_seed(2)
    cfg = EncodecConfig(name="b8", n_filters=4, dimension=16, lstm=1, n_q=3, bins=8,
                        target_bandwidths=[0.225, 0.675])
    return random_codebooks(EncodecModel(cfg), 2).eval()


@pytest.mark.parametrize("bandwidth", [0.225, 0.675])
def test_odd_bit_widths_pack_like_the_whole_file(three_bit: EncodecModel, tmp_path: Path, bandwidth: float) -> None:
    """3-bit codes, 1 or 3 codebooks, blocks of ~0.13 s: the streamed file is byte for byte
    ``compress`` of the whole signal, and streamed decoding (blocks of 1 frame rounded up to
    the packing unit) gives ``decompress``'s audio (to float rounding). Kills a packing unit that is not 8 frames."""
    src = _wav(tmp_path / "in.wav", 1.37, 24000, seed=4)
    out = tmp_path / "o.ecdc"
    compress_file_streaming(three_bit, src, out, bandwidth, block_seconds=0.13)
    wav, rate = read_audio(src)
    data = out.read_bytes()
    assert data == compress(three_bit, wav, bandwidth)
    ref, _ = decompress(data, three_bit)
    decompress_file_streaming(out, tmp_path / "o.wav", three_bit, block_frames=1, bits=32)
    got, _ = sf.read(str(tmp_path / "o.wav"), dtype="float32", always_2d=True)
    assert got.shape == (ref.shape[-1], 1)
    # streamed decoding is the whole-signal decoder up to float rounding (as test_longform.py)
    np.testing.assert_allclose(got.T, ref.numpy(), atol=1e-5, rtol=0)


def test_streamed_decoding_pushes_at_most_one_second(tiny: EncodecModel, tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """The decoder network sees at most 1 s of codes (75 frames) per push whatever
    ``block_frames`` is (bounded activations). Kills a wrong ``_PUSH_SECONDS`` unit."""
    from opencodec.longform import decode

    src = _wav(tmp_path / "in.wav", 3.1, 24000)
    compress_file_streaming(tiny, src, tmp_path / "o.ecdc", 3.0)
    sizes: list[int] = []
    real = decode.StreamingDecoder

    class Spy(real):  # type: ignore[misc, valid-type]
        def push(self, codes: torch.Tensor) -> torch.Tensor:
            sizes.append(codes.shape[-1])
            return super().push(codes)

    monkeypatch.setattr(decode, "StreamingDecoder", Spy)
    decompress_file_streaming(tmp_path / "o.ecdc", tmp_path / "o.wav", tiny, block_frames=10_000)
    assert sum(sizes) == -(-74400 // 320) == 233
    assert max(sizes) == 75


def test_read_block_returns_only_the_frames_read(tmp_path: Path) -> None:
    """Asked for more frames than are left, ``_read_block`` returns just those (never the
    uninitialised rest of its buffer), then an empty block. Kills ``out`` for ``out[:got]``."""
    data = tones_and_noise(0.0125, 24000, channels=2)  # 300 frames
    src = tmp_path / "s.wav"
    sf.write(str(src), data, 24000, subtype="FLOAT")
    with sf.SoundFile(str(src)) as f:
        first = _read_block(f, 200)
        rest = _read_block(f, 1000)
        end = _read_block(f, 1000)
    assert first.dtype == np.float32 and first.shape == (200, 2) and rest.shape == (100, 2)
    assert end.shape == (0, 2)
    np.testing.assert_array_equal(np.concatenate([first, rest]), data)


def test_blocks_of_a_file_of_unknown_length(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A file whose header gives no frame count (``frames`` 0, as a stream's) is read to its end;
    ``progress(read, total)`` never reports a total below what was read and ends at (n, n).
    Kills ``progress(read, total)`` for ``progress(read, max(total, read))``."""
    data = tones_and_noise(0.7, 24000)
    src = tmp_path / "s.wav"
    sf.write(str(src), data, 24000, subtype="FLOAT")

    class NoLength(sf.SoundFile):
        @property
        def frames(self) -> int:
            return 0

    monkeypatch.setattr(sf, "SoundFile", NoLength)
    seen: list[tuple[int, int]] = []
    blocks = _ConvertedBlocks(src, 24000, 1, 0.25, progress=lambda done, total: seen.append((done, total)))
    got = np.concatenate(list(blocks))
    assert blocks.length == got.shape[0] == 16800
    np.testing.assert_array_equal(got[:, 0], data[:, 0])
    assert seen == [(6000, 6000), (12000, 12000), (16800, 16800)]


@pytest.mark.parametrize("rate", [24000, 44100])
def test_blocks_of_an_empty_file_are_refused(tmp_path: Path, rate: int) -> None:
    """A file with no samples is a one-line ``AudioIOError`` (no empty output), with or
    without resampling. Kills dropping the ``read == 0`` check."""
    src = tmp_path / "empty.wav"
    sf.write(str(src), np.zeros((0, 1), np.float32), rate, subtype="FLOAT")
    with pytest.raises(AudioIOError, match=r"empty\.wav: it holds no audio samples$"):
        list(_ConvertedBlocks(src, 24000, 1, 0.5))


@pytest.mark.parametrize("extra", [3, -3])
def test_blocks_length_whatever_the_resampler_gives(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                    extra: int) -> None:
    """A resampler that ends 3 samples long or short (another soxr version could round
    otherwise; this one gives exactly ``resampled_length``): the blocks still hold
    ``resampled_length`` samples, the first ones the resampler's, zeros after its short end.
    Kills dropping the final trim or the zero padding."""
    import soxr

    real = soxr.ResampleStream

    class Off:
        def __init__(self, *args: object, **kwargs: object) -> None:
            self.inner = real(*args, **kwargs)

        def resample_chunk(self, x: np.ndarray, last: bool = False) -> np.ndarray:
            y = self.inner.resample_chunk(x, last=last)
            if not last:
                return y
            return np.concatenate([y, np.ones((extra, y.shape[1]), y.dtype)]) if extra > 0 else y[:extra]

    src = _wav(tmp_path / "in.wav", 0.5, 44100)  # 22050 samples -> 12000 at 24 kHz
    ref = np.concatenate(list(_ConvertedBlocks(src, 24000, 1, 0.2)))
    assert ref.shape == (12000, 1)
    monkeypatch.setattr(soxr, "ResampleStream", Off)
    blocks = _ConvertedBlocks(src, 24000, 1, 0.2)
    got = np.concatenate(list(blocks))
    assert blocks.length == got.shape[0] == 12000
    if extra > 0:
        np.testing.assert_array_equal(got, ref)
    else:
        np.testing.assert_array_equal(got[:extra], ref[:extra])
        assert not got[extra:].any()


def test_blocks_of_a_folder_or_a_missing_file(tmp_path: Path) -> None:
    """The reader's one-line errors, worded as ``read_audio``'s. Kills dropping the folder check
    (libsndfile's own words for a folder are not these)."""
    with pytest.raises(AudioIOError, match=r"^cannot read audio file .*: not a regular file$"):
        list(_ConvertedBlocks(tmp_path, 24000, 1, 0.5))
    with pytest.raises(AudioIOError, match=r"^cannot read audio file .*nope\.wav: no such file$"):
        list(_ConvertedBlocks(tmp_path / "nope.wav", 24000, 1, 0.5))


def test_weights_files_with_a_broken_config_or_no_quantizer_are_named(tmp_path: Path, tiny: EncodecModel) -> None:
    """Error paths of reading weights that no other test ran: a ``.safetensors`` whose stored
    config is not JSON, a state dict with no codebook, a config dict that is not a config, and a
    state dict read off its shapes when it has no norm (``norm="none"``): each is one
    ``ModelLoadError`` naming the file or source, and the last loads with the same codes."""
    from safetensors.torch import save_file

    state = {k: v.contiguous() for k, v in tiny.state_dict().items()}
    bad_json = tmp_path / "bad_json.safetensors"
    save_file(state, str(bad_json), metadata={"opencodec_config": "{not json"})
    with pytest.raises(ModelLoadError, match=rf"^{bad_json}: metadata 'opencodec_config' is not valid JSON \("):
        read_weights(bad_json)
    no_codebook = {k: v for k, v in state.items() if not k.startswith("quantizer.")}
    with pytest.raises(ModelLoadError, match=r"^src: not an EnCodec state dict: no quantizer\.vq\.layers\.0\._codebook\.embed$"):
        model_from_state_dict(no_codebook, None, "src")
    with pytest.raises(ModelLoadError, match=r"^src: invalid model configuration \("):
        model_from_state_dict(state, {"no_such_field": 1}, "src")
    torch.manual_seed(3)
    plain = random_codebooks(EncodecModel(EncodecConfig(name="plain", norm="none", n_filters=4, dimension=16,
                                                        lstm=1, n_q=4, target_bandwidths=[1.5, 3.0])), 0).eval()
    loaded = model_from_state_dict(dict(plain.state_dict()), None, "plain")
    assert loaded.config.norm == "none" and _same_weights(loaded, plain)
    x = torch.randn(1, 1, 4800, generator=torch.Generator().manual_seed(0)) * 0.1
    assert torch.equal(loaded.encode(x)[0].codes, plain.encode(x)[0].codes)


def test_blocks_of_an_undecodable_or_cut_file_are_one_line(tmp_path: Path) -> None:
    """The long-file block reader's open and read errors: bytes that are no audio format and a
    FLAC file cut in its body each give an ``AudioIOError`` naming the file, never a traceback
    from soundfile."""
    garbage = tmp_path / "garbage.wav"
    garbage.write_bytes(b"RIFF" + bytes(range(256)) * 4)
    with pytest.raises(AudioIOError, match=rf"^cannot read audio file {garbage}: "):
        list(_ConvertedBlocks(garbage, 24000, 1, 0.1))
    flac = tmp_path / "cut.flac"
    sf.write(str(flac), tones_and_noise(3.0, 24000, seed=1), 24000, subtype="PCM_16")
    data = flac.read_bytes()
    flac.write_bytes(data[: len(data) // 2] + bytes(4096) + data[len(data) // 2 + 4096:])  # damaged mid-body
    with pytest.raises(AudioIOError, match=rf"^cannot read audio file {flac}: corrupt or truncated FLAC data "
                                           r"\(Error : flac decoder lost sync\)$"):  # as read_audio words it
        list(_ConvertedBlocks(flac, 24000, 1, 0.1))
    with pytest.raises(AudioIOError, match=r"corrupt or truncated FLAC data"):
        read_audio(flac)
