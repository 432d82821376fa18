"""The lines that no other test ran in the small modules no other coverage audit took: errors,
model_cache, prepacked, codec_files' preload, lm_pairing, audio_checks, frames, identity,
MUSHRA's test.json format fields and pretrained's naming of official weights loaded under
another registered name (the live modules' are in test_stream_serve_uncovered.py). Each test
asserts the value or the one-line error a user sees."""

from __future__ import annotations

import json
import pickle
import struct
import typing as tp
from pathlib import Path

import numpy as np
import pytest
import torch

from opencodec import EncodecConfig, EncodecModel
from opencodec.errors import (BitstreamError, CodecAsEntropyModelError, InvalidCodesError,
                              ModelLoadError, one_line)
from opencodec.model import EncodedFrame


# ------------------------------------------------------------------------------------------
# errors
# ------------------------------------------------------------------------------------------
def test_codec_as_entropy_model_error_pickles_with_its_parts() -> None:
    """Sent back from a worker process, the error keeps its message, problem and advice."""
    exc = CodecAsEntropyModelError("x.safetensors is a codec", "use -m x.safetensors")
    back = pickle.loads(pickle.dumps(exc))
    assert type(back) is CodecAsEntropyModelError
    assert str(back) == "x.safetensors is a codec; use -m x.safetensors"
    assert (back.problem, back.advice) == ("x.safetensors is a codec", "use -m x.safetensors")


def test_one_line_of_a_worker_error_reraised_under_another_type() -> None:
    """A DataLoader worker's error that comes back as another type (torch re-raises a
    RuntimeError when the original type cannot be rebuilt): its last line, the original's."""
    text = ("Caught KeyError in DataLoader worker process 0.\nOriginal Traceback (most recent call last):\n"
            "  File \"x.py\", line 1, in f\n    d['path']\nKeyError: 'path'\n")
    assert one_line(RuntimeError(text)) == "KeyError: 'path'"


# ------------------------------------------------------------------------------------------
# model_cache, lm_pairing, identity
# ------------------------------------------------------------------------------------------
def test_lm_header_name_of_an_unnamed_lm_is_the_codecs_own_or_custom() -> None:
    """A deterministic file's header names the codec's own entropy model when the one given has
    no name and none was asked for; ``custom`` when the codec has none."""
    from types import SimpleNamespace

    from opencodec.model_cache import lm_header_name
    from opencodec.pretrained import lm_name_for_codec

    unnamed = SimpleNamespace(name=None)
    own = lm_name_for_codec("opencodec_24khz_v5")
    assert own  # the bundled release has its entropy model
    assert lm_header_name(None, SimpleNamespace(name="opencodec_24khz_v5"), unnamed) == own
    assert lm_header_name(None, SimpleNamespace(name="my_codec"), unnamed) == "custom"


def test_read_lm_info_of_a_corrupt_safetensors_file_names_it(tmp_path: Path) -> None:
    from opencodec.lm_pairing import read_lm_info

    bad = tmp_path / "lm.safetensors"
    bad.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all}")
    with pytest.raises(ModelLoadError, match=r"lm\.safetensors: cannot read the entropy model's metadata"):
        read_lm_info(bad)
    gone = tmp_path / "gone.safetensors"
    with pytest.raises(ModelLoadError, match=r"gone\.safetensors: cannot read the entropy model's metadata"):
        read_lm_info(gone)


def test_lm_name_for_file_with_an_unknown_entropy_model_hash() -> None:
    from opencodec.identity import lm_name_for_file

    codec = EncodecModel(EncodecConfig(name="tiny_rest", n_filters=4, dimension=16, lstm=1, n_q=4,
                                       target_bandwidths=[1.5, 3.0]))
    with pytest.raises(ModelLoadError, match=r"^the file was entropy coded by an entropy model with weights "
                                             r"hash 0123456789abcdef, which is not a registered one; pass it "
                                             r"with --lm-model PATH"):
        lm_name_for_file(None, "0123456789abcdef", codec)


@pytest.fixture(scope="module")
def official_shaped() -> EncodecModel:
    """encodec_24khz's architecture with random weights (seed 0): not the official weights."""
    from opencodec.weights_layout import OFFICIAL_CONFIGS

    torch.manual_seed(0)
    return EncodecModel(OFFICIAL_CONFIGS["encodec_24khz"]()).eval()


def test_model_for_file_of_an_official_name_with_a_weights_hash_checks_the_hash(
        official_shaped: EncodecModel) -> None:
    """A header naming encodec_24khz with a hash that no release has: the official model is
    loaded by that name, and its hash is compared with the header's."""
    from opencodec.identity import model_for_file

    asked: list[str] = []

    def load(name: str) -> EncodecModel:
        asked.append(name)
        return official_shaped

    with pytest.raises(BitstreamError, match=r"written by model 'encodec_24khz' with weights hash "
                                             r"0123456789abcdef, but model 'encodec_24khz' \(loaded by the "
                                             r"name the file records\) has weights hash [0-9a-f]{16}"):
        model_for_file("encodec_24khz", "0123456789abcdef", 2, load=load)
    assert asked == ["encodec_24khz"]


# ------------------------------------------------------------------------------------------
# pretrained: official weights under another registered name, folders, save_model's refusals
# ------------------------------------------------------------------------------------------
@pytest.fixture()
def fake_official(monkeypatch: pytest.MonkeyPatch, official_shaped: EncodecModel):
    """Make ``official_shaped``'s weights "the official encodec_24khz checkpoint" for this test:
    returns ``register(path)``, which puts ``path``'s sha256 prefix into the official
    checkpoint's file name (the only proof of official weights the loader has offline)."""
    from opencodec import pretrained
    from opencodec.official_files import file_sha256

    monkeypatch.setattr(pretrained, "_OFFICIAL_WEIGHTS", {})  # nothing loaded by name yet
    monkeypatch.setenv("OPENCODEC_OFFLINE", "1")

    def register(path: Path) -> str:
        name = f"encodec_24khz-{file_sha256(path)[:8]}{path.suffix}"
        monkeypatch.setitem(pretrained.OFFICIAL_CHECKPOINTS, "encodec_24khz", name)
        return name

    return register


def test_official_weights_in_a_file_naming_another_registered_model_load_as_custom(
        tmp_path: Path, official_shaped: EncodecModel, fake_official) -> None:
    """The official checkpoint's bytes, stored with the name ``opencodec_24khz`` (a release's
    alias): the file is the official one, but the name it claims is registered to other weights,
    so the model is ``opencodec_24khz_custom`` (its files then carry its weights hash)."""
    import copy

    from opencodec.pretrained import load_model, save_model

    model = copy.deepcopy(official_shaped)
    model.config.name = "opencodec_24khz"
    path = save_model(model, tmp_path / "renamed.safetensors")
    fake_official(path)
    loaded = load_model(path)
    assert loaded.name == "opencodec_24khz_custom"
    assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), model.state_dict().values()))


def test_official_checkpoint_by_name_with_a_config_naming_another_model_is_custom(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, official_shaped: EncodecModel, fake_official) -> None:
    """load_model("encodec_24khz", config=<the official config named opencodec_24khz>): the
    official weights, named ``opencodec_24khz_custom``; without config= it is encodec_24khz."""
    import dataclasses

    from opencodec import pretrained
    from opencodec.pretrained import load_model

    cache = tmp_path / "cache"
    cache.mkdir()
    staged = cache / "staged.th"
    torch.save(official_shaped.state_dict(), staged)
    staged.rename(cache / fake_official(staged))
    monkeypatch.setenv("OPENCODEC_CACHE", str(cache))
    renamed = dataclasses.replace(official_shaped.config, name="opencodec_24khz")
    assert load_model("encodec_24khz", config=renamed).name == "opencodec_24khz_custom"
    assert pretrained._OFFICIAL_WEIGHTS == {}  # not recorded as official under that name
    assert load_model("encodec_24khz").name == "encodec_24khz"
    assert set(pretrained._OFFICIAL_WEIGHTS) == {"encodec_24khz"}


def test_official_shaped_weights_whose_file_cannot_be_hashed_load_as_custom(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, official_shaped: EncodecModel) -> None:
    """A file of the official architecture named encodec_24khz that cannot be read again to
    check its sha256 (gone or unreadable since it was loaded): not proven official, so
    ``encodec_24khz_custom``, not a traceback."""
    from opencodec import pretrained
    from opencodec.pretrained import load_model, save_model

    monkeypatch.setattr(pretrained, "_OFFICIAL_WEIGHTS", {})
    path = save_model(official_shaped, tmp_path / "copy.safetensors")

    def unreadable(*args: object) -> tuple[bool, str, str]:
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(pretrained, "sha256_prefix_ok", unreadable)
    assert load_model(path).name == "encodec_24khz_custom"


def test_load_model_of_a_folder_and_save_model_refusals(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import safetensors.torch

    from opencodec.pretrained import load_model, save_model

    with pytest.raises(ModelLoadError, match=r"is a folder; pass a weights file \(\.th, \.pt, \.safetensors\)$"):
        load_model(tmp_path)
    model = EncodecModel(EncodecConfig(name="tiny_rest", n_filters=4, dimension=16, lstm=1, n_q=4,
                                       target_bandwidths=[1.5, 3.0]))
    with pytest.raises(ValueError, match=r"^save_model writes \.safetensors files, got model\.th$"):
        save_model(model, tmp_path / "model.th")

    def disk_full(*args: object, **kwargs: object) -> None:
        Path(args[1]).write_bytes(b"partial")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(safetensors.torch, "save_file", disk_full)
    out = tmp_path / "out"
    with pytest.raises(OSError, match="No space left on device"):
        save_model(model, out / "model.safetensors")
    assert list(out.iterdir()) == []  # neither the file nor its partial temporary


# ------------------------------------------------------------------------------------------
# eval.mushra.spec: impossible format fields in test.json
# ------------------------------------------------------------------------------------------
def _mushra_dir(root: Path, **fields: object) -> Path:
    """A minimal test folder (hidden reference and anchor, one trial) whose test.json has
    ``fields`` in place of its defaults (the WAV files exist; their content is not read)."""
    (root / "audio" / "t01").mkdir(parents=True)
    for name in ("reference", "c1", "c2"):
        (root / "audio" / "t01" / f"{name}.wav").write_bytes(b"")
    raw = {"format": "opencodec-mushra/1", "test_id": "rest", "sample_rate": 24000, "channels": 1,
           "systems": [{"name": "hidden-reference", "kind": "hidden_reference"},
                       {"name": "anchor-3.5kHz", "kind": "anchor"}],
           "trials": [{"trial_id": "t01", "category": "music", "item_id": "a",
                       "reference": "audio/t01/reference.wav",
                       "conditions": [{"id": "c1", "system": "hidden-reference", "file": "audio/t01/c1.wav"},
                                      {"id": "c2", "system": "anchor-3.5kHz", "file": "audio/t01/c2.wav"}]}]}
    raw.update(fields)
    (root / "test.json").write_text(json.dumps(raw))
    return root


def test_load_test_reads_the_format_fields(tmp_path: Path) -> None:
    from opencodec.eval.mushra.spec import load_test

    test = load_test(_mushra_dir(tmp_path, sample_rate=48000, channels=2))
    assert (test.sample_rate, test.channels) == (48000, 2)


@pytest.mark.parametrize("field,value", [("sample_rate", 0), ("sample_rate", -24000), ("channels", 0),
                                         ("channels", -1)])
def test_load_test_refuses_an_impossible_sample_rate_or_channel_count(tmp_path: Path, field: str,
                                                                      value: int) -> None:
    from opencodec.eval.mushra.spec import MushraError, load_test

    with pytest.raises(MushraError, match=rf"test\.json: field '{field}' must be an integer >= 1, "
                                          rf"got {value}$"):
        load_test(_mushra_dir(tmp_path, **{field: value}))


# ------------------------------------------------------------------------------------------
# audio_checks: chunk walks
# ------------------------------------------------------------------------------------------
def _chunk(tag: bytes, body: bytes, big: bool = False) -> bytes:
    pad = b"\0" if len(body) % 2 else b""
    return tag + len(body).to_bytes(4, "big" if big else "little") + body + pad


def test_aiff_frames_after_a_chunk_before_comm_and_without_comm(tmp_path: Path) -> None:
    from opencodec.audio_checks import header_declared_frames

    comm = _chunk(b"COMM", (1).to_bytes(2, "big") + (48000).to_bytes(4, "big") + (16).to_bytes(2, "big")
                  + b"\x40\x0e\xbb\x80" + b"\0" * 6, big=True)
    fver = _chunk(b"FVER", b"\xa2\x80\x51\x40", big=True)
    odd = _chunk(b"ANNO", b"abc", big=True)  # odd size: padded
    path = tmp_path / "a.aifc"
    path.write_bytes(b"FORM" + b"\0\0\0\0" + b"AIFC" + fver + odd + comm)
    assert header_declared_frames(path) == 48000
    path.write_bytes(b"FORM" + b"\0\0\0\0" + b"AIFF" + fver + odd)
    assert header_declared_frames(path) is None


def test_wav_without_a_data_chunk_or_with_endless_chunks_declares_nothing(tmp_path: Path) -> None:
    from opencodec.audio_checks import _WAV_MAX_CHUNKS, header_declared_frames

    fmt = _chunk(b"fmt ", struct.pack("<HHIIHH", 1, 1, 24000, 48000, 2, 16))
    path = tmp_path / "a.wav"
    path.write_bytes(b"RIFF" + b"\0\0\0\0" + b"WAVE" + fmt + _chunk(b"LIST", b"x" * 10))
    assert header_declared_frames(path) is None  # the chunks end before any data chunk
    # a data chunk cut short after more chunks than are walked: not found, not walked to its end
    cut_data = b"data" + (1000).to_bytes(4, "little") + b"\0" * 10
    path.write_bytes(b"RIFF" + b"\0\0\0\0" + b"WAVE" + fmt + _chunk(b"junk", b"") * _WAV_MAX_CHUNKS + cut_data)
    assert header_declared_frames(path) is None
    path.write_bytes(b"RIFF" + b"\0\0\0\0" + b"WAVE" + fmt + _chunk(b"junk", b"") * 10 + cut_data)
    assert header_declared_frames(path) == 500  # the same file with fewer chunks: found


# ------------------------------------------------------------------------------------------
# frames: decode's argument checks
# ------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny() -> EncodecModel:
    torch.manual_seed(0)
    return EncodecModel(EncodecConfig(name="tiny_rest", n_filters=4, dimension=16, lstm=1, n_q=4,
                                      target_bandwidths=[1.5, 3.0])).eval()


USAGE = r"decode expects a list of EncodedFrame\(codes \[B, K, F\], scale\), as encode returns"


@pytest.mark.parametrize("frames,message", [
    ({"codes": 1}, rf"^{USAGE}, got a dict"),
    ("codes", rf"^{USAGE}, got a str"),
    ([], r"^no encoded frames to decode \(an empty list\)$"),
    ([torch.zeros(1, 4, 2, dtype=torch.long)],  # the codes of a segment, not wrapped (was "got int64")
     rf"^{USAGE}; got a Tensor \(1, 4, 2\); for the codes of one segment pass \[EncodedFrame\(codes, None\)\]$"),
    ([(torch.zeros(1, 4, 2, dtype=torch.long),)], rf"^{USAGE}; got a tuple"),
    ([EncodedFrame(torch.zeros(4, 2, dtype=torch.long), None)],
     r"^expected codes of shape \[B, K, F\], got \(4, 2\)$"),
    ([EncodedFrame(torch.zeros(1, 4, 2, dtype=torch.long), None)] * 2
     + [EncodedFrame(torch.zeros(1, 2, dtype=torch.long), None)],
     r"^segment 2: expected codes of shape \[B, K, F\], got \(1, 2\)$"),
    ([EncodedFrame(torch.zeros(1, 4, 2, dtype=torch.long), torch.ones(1, 1, device="meta"))],
     r"^scale is on the meta device: it has a shape but no values$"),
])
def test_decode_refuses_what_is_not_a_list_of_frames(tiny: EncodecModel, frames: object, message: str) -> None:
    with pytest.raises(InvalidCodesError, match=message):
        tiny.decode(frames)  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------------
# prepacked: a oneDNN that refuses the reorder
# ------------------------------------------------------------------------------------------
def test_prepacked_weight_falls_back_to_plain_products_when_the_reorder_fails(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from opencodec import prepacked

    weight = torch.randn(8, 16, generator=torch.Generator().manual_seed(0))
    rows = torch.randn(4, 8, generator=torch.Generator().manual_seed(1))
    bias = torch.randn(16, generator=torch.Generator().manual_seed(2))

    def refuse(*args: object) -> torch.Tensor:
        raise RuntimeError("oneDNN: unsupported")

    monkeypatch.setattr(prepacked, "prepacking_available", lambda w: True)
    monkeypatch.setattr(prepacked.torch.ops.mkldnn, "_reorder_linear_weight", refuse)
    packed = prepacked.PrepackedWeight(weight, min_elements=1)
    assert packed.packed is None
    with torch.no_grad():
        assert torch.equal(packed.addmm(bias, rows), torch.addmm(bias, rows, weight))
        assert torch.equal(packed.addmm(None, rows), rows @ weight)


# ------------------------------------------------------------------------------------------
# codec_files: preload (before worker processes fork)
# ------------------------------------------------------------------------------------------
def _codec_and_lm() -> tuple[EncodecModel, tp.Any]:
    """A tiny causal codec (4 codebooks, 1.5 and 3 kbps) and an untrained entropy model for it
    (8 heads, as load_lm_model builds), both seeded."""
    from opencodec.entropy import EntropyLM

    torch.manual_seed(1)
    codec = EncodecModel(EncodecConfig(name="rest_lm_24khz", n_filters=4, dimension=16, lstm=1, n_q=4,
                                       target_bandwidths=[1.5, 3.0])).eval()
    torch.manual_seed(0)
    return codec, EntropyLM(n_q=4, card=1024, dim=16, num_heads=8, num_layers=1, hidden_scale=2.0).eval()


def test_preload_loads_an_entropy_coded_files_models_once_and_skips_bad_files(tmp_path: Path) -> None:
    """``decompress`` of a folder with workers preloads the models the headers name: the codec
    and, for an entropy-coded file, its entropy model (once, then reused by the job); a file
    that cannot be read or named a model that fails is left for its own job to report."""
    from opencodec.codec_files import FileDecompressor, OutputOptions
    from opencodec.compress import compress, decompress
    from opencodec.entropy import EntropyLM
    from opencodec.file_jobs import Job
    from opencodec.pretrained import load_lm_model, save_model
    from opencodec.train.lm_model import export_lm

    codec, lm = _codec_and_lm()
    codec_path = save_model(codec, tmp_path / "codec.safetensors")
    lm_path = export_lm(lm, tmp_path / "lm.safetensors", {"codec": codec.name}, codec=codec)
    lm = load_lm_model(lm_path, codec=codec)  # named after its file, as the decompressor loads it
    wav = 0.1 * torch.randn(1, 4800, generator=torch.Generator().manual_seed(0))
    coded = compress(codec, wav, 3.0, lm=lm)
    (tmp_path / "a.ecdc").write_bytes(coded)
    (tmp_path / "bad.ecdc").write_bytes(b"not an ecdc file")
    decompressor = FileDecompressor(str(codec_path), OutputOptions(), lm_model=str(lm_path))
    decompressor.preload([tmp_path / "bad.ecdc", tmp_path / "missing.ecdc", tmp_path / "a.ecdc"])
    cached = list(decompressor.lms._by_codec.values())
    assert len(cached) == 1 and isinstance(cached[0][1], EntropyLM)
    result = decompressor(Job(tmp_path / "a.ecdc", tmp_path / "a.wav"))
    assert list(decompressor.lms._by_codec.values()) == cached  # the preloaded one, not a second load
    import soundfile as sf

    audio, rate = sf.read(tmp_path / "a.wav", dtype="float32")
    expected, _ = decompress(coded, codec, lm=lm)
    assert rate == 24000 and result.sample_rate == 24000
    np.testing.assert_allclose(audio, expected[0].numpy(), atol=1 / 32768 + 1e-6)


def test_preload_of_an_entropy_coded_file_whose_entropy_model_fails(tmp_path: Path) -> None:
    """The entropy model cannot be found: preload goes on (no error); the job reports it."""
    from opencodec.codec_files import FileDecompressor, OutputOptions
    from opencodec.compress import compress
    from opencodec.file_jobs import Job
    from opencodec.pretrained import save_model

    codec, lm = _codec_and_lm()
    codec_path = save_model(codec, tmp_path / "codec.safetensors")
    wav = 0.1 * torch.randn(1, 4800, generator=torch.Generator().manual_seed(0))
    (tmp_path / "a.ecdc").write_bytes(compress(codec, wav, 3.0, lm=lm))
    decompressor = FileDecompressor(str(codec_path), OutputOptions(), lm_model=str(tmp_path / "no_lm.safetensors"))
    decompressor.preload([tmp_path / "a.ecdc"])
    with pytest.raises(ModelLoadError, match=r"no_lm\.safetensors"):
        decompressor(Job(tmp_path / "a.ecdc", tmp_path / "a.wav"))
    assert not (tmp_path / "a.wav").exists()


def test_export_lm_refuses_a_head_count_the_loader_would_not_build(tmp_path: Path) -> None:
    """``load_lm_model`` builds 8 attention heads (the tensors do not record the count), so an
    entropy model with 2 heads would load from its file as another model: ``export_lm`` refuses
    it, writes nothing, and exports the same sizes with 8 heads (loaded back with 8)."""
    from opencodec.entropy.lm import EntropyLM
    from opencodec.pretrained import load_lm_model
    from opencodec.train.lm_model import export_lm

    torch.manual_seed(0)
    two = EntropyLM(n_q=2, card=16, dim=16, num_heads=2, num_layers=1)
    with pytest.raises(ValueError, match=r"^the entropy model has 2 attention heads, but load_lm_model builds 8 "):
        export_lm(two, tmp_path / "two.safetensors", {"codec": "x"})
    assert not (tmp_path / "two.safetensors").exists()
    eight = EntropyLM(n_q=2, card=16, dim=16, num_heads=8, num_layers=1)
    path = export_lm(eight, tmp_path / "eight.safetensors", {"codec": "x"})
    assert load_lm_model(path).transformer.layers[0].self_attn.num_heads == 8
