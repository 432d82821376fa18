"""Released weights keep their own names for ever: files name them (with a weights hash), decode
with them, or fail clearly; never with other weights (opencodec.releases, opencodec.identity)."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import shutil
import subprocess
import warnings
from pathlib import Path

import pytest
import soundfile as sf
import torch

from opencodec import cli
from opencodec.audio import convert_audio, read_audio
from opencodec.bitstream import EcdcHeader, parse_header, write_header
from opencodec.compress import compress, decompress
from opencodec.errors import BitstreamError, ModelLoadError
from opencodec.identity import export_name, model_hash
from opencodec.model import EncodecConfig, EncodecModel
from opencodec.stream import StreamInfo, check_model_for_stream, split_model_label
from opencodec.pretrained import BUNDLED_DIR, load_lm_model, load_model, save_model
from opencodec.releases import (CODEC_ALIAS, CODEC_RELEASES, CURRENT_CODEC, CURRENT_LM, LM_RELEASES,
                                codec_release, codec_releases_by_hash, lm_release)
from opencodec.weights_hash import state_dict_sha256, weights_sha256

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = Path(__file__).parent / "fixtures"
# Written by the stage-3 release's own code and weights (commit 621d886: opencodec_24khz_v4), and
# by 6e5aa39 (same codec, entropy model opencodec_lm_24khz_v4b, deterministic format); see
# fixtures/make_old_release_files.py. Both decode, with those releases, to the float32 audio of
# this sha256 (SNR 10.80 dB against the input; today's v5 weights would give 2.27 dB).
OLD_PLAIN = FIXTURES / "stage3_621d886_6kbps.ecdc"
OLD_LM = FIXTURES / "stage3_6e5aa39_6kbps_lm.ecdc"
OLD_DECODED_SHA256 = "8f95d23c662ff2d9497bd34ca0101be471157d64e0902a866a0a6832029711d9"
OLD_START, OLD_LENGTH = 24000, 19200


def _sha(wav: torch.Tensor) -> str:
    return hashlib.sha256(wav.contiguous().numpy().tobytes()).hexdigest()


def _snr(ref: torch.Tensor, est: torch.Tensor) -> float:
    return float(10 * torch.log10(ref.pow(2).sum() / (ref - est).pow(2).sum()))


@pytest.fixture(scope="module")
def current() -> EncodecModel:
    return load_model()


@pytest.fixture(scope="module")
def v4() -> EncodecModel:
    return load_model("opencodec_24khz_v4")


@pytest.fixture(scope="module")
def speech() -> torch.Tensor:
    wav, rate = read_audio(ROOT / "demo" / "sample_speech_fr.flac")
    return convert_audio(wav, rate, 24000, 1)[:, OLD_START:OLD_START + OLD_LENGTH]


def _tiny(name: str, seed: int) -> EncodecModel:
    torch.manual_seed(seed)
    return EncodecModel(EncodecConfig(name=name, n_filters=4, dimension=16, lstm=0, n_q=4,
                                      target_bandwidths=[1.5, 3.0])).eval()


# -- the registry -------------------------------------------------------------------------------
def test_registry_is_consistent() -> None:
    names = [r.name for r in CODEC_RELEASES] + [r.name for r in LM_RELEASES]
    assert len(set(names)) == len(names)
    assert len({r.sha256 for r in CODEC_RELEASES}) == len(CODEC_RELEASES)
    assert len({r.fixed_hash for r in LM_RELEASES}) == len(LM_RELEASES)
    assert CODEC_RELEASES[-1].name == CURRENT_CODEC and codec_release(CURRENT_CODEC).lm == CURRENT_LM
    for release in CODEC_RELEASES:
        lm = lm_release(release.lm)
        assert lm is not None and lm.codec == release.name
    assert all(codec_release(lm.codec) is not None for lm in LM_RELEASES)


def test_shipped_files_hold_their_releases() -> None:
    """Every shipped file has its release's hash (a retrain copied over a shipped file without a
    new release fails here), and the shipped weights stay modest."""
    shipped = [r for r in CODEC_RELEASES if r.file] + [r for r in LM_RELEASES if r.file]
    assert {r.name for r in shipped} == {"opencodec_24khz_v4", "opencodec_24khz_v5",
                                         "opencodec_lm_24khz_v4b", "opencodec_lm_24khz_v5"}
    for release in CODEC_RELEASES:
        if release.file:
            model = load_model(release.name)  # verifies the hash itself
            assert model.name == release.name and weights_sha256(model) == release.sha256
    for release in LM_RELEASES:
        if release.file:
            lm = load_lm_model(release.name)
            assert lm.name == release.name and state_dict_sha256(lm.state_dict()) == release.sha256
    total = sum(p.stat().st_size for p in BUNDLED_DIR.glob("*.safetensors"))
    assert total < 80e6, total
    assert load_model().name == load_model(CODEC_ALIAS).name == CURRENT_CODEC


@pytest.mark.skipif(shutil.which("git") is None or not (ROOT / ".git").exists(),
                    reason="needs the git repository")
def test_release_commits_hold_the_recorded_files() -> None:
    """Each release's commit has its file, and a shipped old release is that very blob (it costs
    nothing in a clone)."""
    for release in list(CODEC_RELEASES) + list(LM_RELEASES):
        spec = f"{release.commit}:{release.git_path}"
        blob = subprocess.run(["git", "rev-parse", spec], cwd=ROOT, capture_output=True, text=True)
        assert blob.returncode == 0, blob.stderr
        if release.file:
            here = subprocess.run(["git", "hash-object", str(BUNDLED_DIR / release.file)], cwd=ROOT,
                                  capture_output=True, text=True, check=True)
            assert here.stdout == blob.stdout, release.name


@pytest.mark.skipif(shutil.which("git") is None or not (ROOT / ".git").exists(),
                    reason="needs the git repository")
def test_unshipped_release_error_and_extraction(tmp_path: Path, offline: Path) -> None:
    """A release the package does not ship: the error names it, its commit and the command;
    that command's file loads (by path, or by name from the cache) with its hash checked."""
    release = codec_release("opencodec_24khz_v2")
    assert release is not None and release.file is None
    with pytest.raises(ModelLoadError) as err:
        load_model("opencodec_24khz_v2")
    command = ("git show 9bfa8d1:src/opencodec/weights/opencodec_24khz.safetensors"
               " > opencodec_24khz_v2.safetensors")
    assert "'opencodec_24khz_v2'" in str(err.value) and "commit 9bfa8d1" in str(err.value)
    assert command in str(err.value)
    subprocess.run(command.replace("> ", f"> {tmp_path}/"), shell=True, cwd=ROOT, check=True)
    extracted = tmp_path / "opencodec_24khz_v2.safetensors"
    by_path = load_model(extracted)
    assert by_path.name == "opencodec_24khz_v2" and weights_sha256(by_path) == release.sha256
    shutil.copy(extracted, offline / extracted.name)
    assert load_model("opencodec_24khz_v2").name == "opencodec_24khz_v2"
    shutil.copy(BUNDLED_DIR / "opencodec_24khz_v4.safetensors", offline / extracted.name)  # wrong file
    with pytest.raises(ModelLoadError, match=r"does not hold the model release 'opencodec_24khz_v2'"):
        load_model("opencodec_24khz_v2")
    with pytest.raises(ModelLoadError, match=r"git show 1da0d1a:src/opencodec/weights/opencodec_lm_24khz"):
        load_lm_model("opencodec_lm_24khz_v1")


# -- files written today ------------------------------------------------------------------------
def test_file_written_today_names_its_release_and_round_trips(current, speech, tmp_path, capsys) -> None:
    data = compress(current, speech, 6.0)
    header, _ = parse_header(data)
    assert header.model_name == "opencodec_24khz_v5" and header.model_hash == model_hash(current)
    assert json.loads(data[9:parse_header(data)[1]]) == {
        "m": "opencodec_24khz_v5", "al": OLD_LENGTH, "nc": 8, "lm": False, "mh": "e701927ffb852e18"}
    wav, _ = decompress(data)  # by name, no model given
    ref, _ = decompress(data, current)
    assert torch.equal(wav, ref) and _snr(speech, wav) > 8
    # the command line: no --model, and `info` names the release and its hash
    (tmp_path / "a.ecdc").write_bytes(data)
    assert cli.main(["decompress", str(tmp_path / "a.ecdc"), str(tmp_path / "a.wav"), "-q"]) == 0
    assert read_audio(tmp_path / "a.wav")[0].shape == (1, OLD_LENGTH)
    assert cli.main(["info", str(tmp_path / "a.ecdc")]) == 0
    out = capsys.readouterr().out
    assert "model:         opencodec_24khz_v5" in out
    assert "weights:       hash e701927ffb852e18, release opencodec_24khz_v5 (shipped)" in out


def test_entropy_coded_files_record_the_entropy_model(current, v4, speech) -> None:
    lm = load_lm_model(None, codec=current)
    assert lm.name == "opencodec_lm_24khz_v5"
    plain = decompress(compress(current, speech, 6.0), current)[0]
    official_format = compress(current, speech, 6.0, lm=lm)
    header, _ = parse_header(official_format)
    assert header.lm_hash == lm_release("opencodec_lm_24khz_v5").fixed_hash
    assert torch.equal(decompress(official_format)[0], plain)
    other_lm = load_lm_model("opencodec_lm_24khz_v4b")
    with pytest.raises(BitstreamError, match="entropy model with weights hash afe7bbb406b50526"):
        decompress(official_format, current, lm=other_lm)
    det = compress(current, speech, 6.0, lm=lm, deterministic=True)
    header, _ = parse_header(det)
    assert header.deterministic.lm_name == "opencodec_lm_24khz_v5" and header.model_hash is not None
    assert torch.equal(decompress(det)[0], plain)


# -- files from an earlier release --------------------------------------------------------------
def test_old_release_file_decodes_bit_for_bit_with_its_release(v4, current, speech) -> None:
    for path in (OLD_PLAIN, OLD_LM):
        data = path.read_bytes()
        header, _ = parse_header(data)
        assert header.model_name == "opencodec_24khz" and header.model_hash is None
        wav, rate = decompress(data, v4)  # the LM file finds opencodec_lm_24khz_v4b by its hash
        assert rate == 24000 and _sha(wav) == OLD_DECODED_SHA256, path.name
        assert _snr(speech, wav) == pytest.approx(10.80, abs=0.01)
        # today's weights give other audio (the silent failure this prevents): the LM file
        # records the hash of codec v4's entropy model, so decoding it with v5 warns and names
        # v4 (not refused: the model was named); the plain file holds nothing that could tell
        with warnings.catch_warnings(record=True) as said:
            warnings.simplefilter("always")
            assert _snr(speech, decompress(data, load_model("opencodec_24khz_v5"))[0]) < 3
        messages = [str(w.message) for w in said]
        if path == OLD_LM:
            assert len(messages) == 1 and "served codec opencodec_24khz_v4, not the model given " \
                "(opencodec_24khz_v5)" in messages[0] and "decode with -m opencodec_24khz_v4" in messages[0]
        else:
            assert messages == []


def test_old_entropy_coded_file_of_a_codec_with_two_entropy_models(v4, speech) -> None:
    """Codec v4 had two entropy models: an official-format file that records none (as before
    versioned names) is refused until one is named, then decodes."""
    lm = load_lm_model("opencodec_lm_24khz_v4b")
    data = compress(v4, speech, 6.0, lm=lm)
    header, offset = parse_header(data)
    fo = io.BytesIO()
    write_header(fo, EcdcHeader(CODEC_ALIAS, header.audio_length, header.num_codebooks, True))
    legacy = fo.getvalue() + data[offset:]
    with pytest.raises(ModelLoadError, match=r"served by 2 entropy models: opencodec_lm_24khz_v4 "
                                             r"\(621d886.*opencodec_lm_24khz_v4b \(6e5aa39"):
        decompress(legacy, v4)
    assert torch.equal(decompress(legacy, v4, lm=lm)[0], decompress(data)[0])


def test_entropy_model_of_another_codec_warns(current, v4, speech, tmp_path, capsys) -> None:
    """A released entropy model serving another released codec works (lossless) but makes
    larger files: loading it says so, as one ``opencodec: warning:`` line on the command line;
    each codec with its own entropy model stays silent."""
    with pytest.warns(UserWarning, match="opencodec_lm_24khz_v4b was trained for codec opencodec_24khz_v4, "
                                         f"not {current.name}.*its own entropy model is {CURRENT_LM}"):
        load_lm_model("opencodec_lm_24khz_v4b", current)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load_lm_model("opencodec_lm_24khz_v4b", v4)
        load_lm_model(None, current)
    wav = tmp_path / "in.wav"
    sf.write(wav, speech[0].numpy(), 24000)
    code = cli.main(["compress", str(wav), str(tmp_path / "x.ecdc"), "--lm-model", "opencodec_lm_24khz_v4b", "-q"])
    err = capsys.readouterr().err
    assert code == 0 and err.startswith("opencodec: warning: entropy model opencodec_lm_24khz_v4b was trained")
    assert ".py:" not in err  # not Python's default format (file and line)


def test_old_release_file_without_a_release_fails_clearly(current, tmp_path, capsys) -> None:
    data = OLD_PLAIN.read_bytes()
    with pytest.raises(ModelLoadError) as err:
        decompress(data)
    message = str(err.value)
    assert "without a weights hash" in message and "5 releases" in message
    assert "--model opencodec_24khz_v4" in message
    with pytest.raises(BitstreamError, match="loaded as 'opencodec_24khz'"):
        decompress(data, current)  # the alias is not a choice of release
    out = tmp_path / "x.wav"
    assert cli.main(["decompress", str(OLD_PLAIN), str(out), "-q"]) == 1
    assert "--model opencodec_24khz_v4" in capsys.readouterr().err and not out.exists()
    assert cli.main(["decompress", str(OLD_PLAIN), str(out), "-q", "--model", "opencodec_24khz_v4"]) == 0
    assert out.exists()
    assert cli.main(["info", str(OLD_PLAIN)]) == 0
    assert "ambiguous: written before versioned names" in capsys.readouterr().out


def test_other_weights_are_refused(current, v4, speech) -> None:
    data = compress(current, speech, 6.0)
    with pytest.raises(BitstreamError, match=r"weights hash e701927ffb852e18, but the model given "
                                             r"\('opencodec_24khz_v4'\) has weights hash 1d3a9cac17d9aa5a"):
        decompress(data, v4)
    # a header naming a release with another hash: written by other weights under that name
    header, offset = parse_header(data)
    fo = io.BytesIO()
    write_header(fo, EcdcHeader("opencodec_24khz_v4", header.audio_length, header.num_codebooks,
                                False, model_hash=header.model_hash))
    with pytest.raises(ModelLoadError, match="names release 'opencodec_24khz_v4' but weights hash "
                                             "e701927ffb852e18"):
        decompress(fo.getvalue() + data[offset:])


def test_custom_model_with_a_bundled_name(tmp_path: Path, speech) -> None:
    """An export named opencodec_24khz (configs/opencodec_24khz.yaml) with its own weights: its
    files carry its hash, decode only with it, and say how when it is not given."""
    custom = _tiny("opencodec_24khz", seed=3)
    path = save_model(custom, tmp_path / "custom.safetensors")
    loaded = load_model(path)
    assert loaded.name == "opencodec_24khz_custom"  # not a release's weights: not its name
    data = compress(loaded, speech, 3.0)
    header, _ = parse_header(data)
    assert header.model_name == "opencodec_24khz_custom" and header.model_hash == model_hash(custom)
    with pytest.raises(ModelLoadError, match=r"not a registered release .*--model PATH"):
        decompress(data)
    assert torch.equal(decompress(data, loaded)[0], decompress(data, custom)[0])
    with pytest.raises(BitstreamError, match="weights hash"):
        decompress(data, _tiny("opencodec_24khz", seed=4))
    assert cli.main(["decompress", str(tmp_path / "x.ecdc"), "-q"]) == 1  # missing file: clean error
    (tmp_path / "x.ecdc").write_bytes(data)
    assert cli.main(["decompress", str(tmp_path / "x.ecdc"), "-q", "--model", str(path)]) == 0


def test_architecture_that_does_not_fit_the_header(current, speech, our_models) -> None:
    data = compress(current, speech, 6.0)
    with pytest.raises(BitstreamError, match=r"another architecture: n_q 32 \(expected 16\)"):
        decompress(data, our_models["encodec_24khz"])
    with pytest.raises(BitstreamError, match=r"sample_rate 48000 \(expected 24000\), channels 2 "
                                             r"\(expected 1\)"):
        decompress(data, our_models["encodec_48khz"])
    small = _tiny("opencodec_24khz_v5", seed=0)  # a release's name, 4 codebooks of 1024
    with pytest.raises(BitstreamError, match="uses 8 codebooks, but model 'opencodec_24khz_v5' has at most 4"):
        decompress(data, small)
    odd = EncodecModel(EncodecConfig(name="mine", n_filters=4, dimension=16, lstm=0, n_q=16,
                                     bins=256, target_bandwidths=[1.5])).eval()
    with pytest.raises(BitstreamError, match=r"model 'opencodec_24khz_v5', but the model given "
                                             r"\('mine'\) has another architecture: bins 256 \(expected 1024\)"):
        decompress(data, odd)
    # a legacy header says only "opencodec_24khz", which custom exports of another architecture
    # also used: the body's size still tells a wrong codebook size
    odd.config.name = "opencodec_24khz"
    with pytest.raises(BitstreamError, match="extra byte"):
        decompress(OLD_PLAIN.read_bytes(), odd)


def test_header_without_hash_naming_another_model_is_refused() -> None:
    """Without a weights hash only the name ties a file to its model: a header naming another
    model is refused, with both names; the same header naming the model decodes as before."""
    model = _tiny("tiny", seed=0)
    wav = 0.1 * torch.randn(1, 4000, generator=torch.Generator().manual_seed(5))
    data = compress(model, wav, 3.0)
    header, offset = parse_header(data)
    assert header.model_name == "tiny" and header.model_hash == model_hash(model)

    def rewritten(name: str) -> bytes:
        fo = io.BytesIO()
        write_header(fo, EcdcHeader(name, header.audio_length, header.num_codebooks, header.use_lm))
        return fo.getvalue() + data[offset:]

    with pytest.raises(BitstreamError, match=r"^the ECDC file was written by model 'some_other_model', "
                                             r"but the model given is 'tiny'$"):
        decompress(rewritten("some_other_model"), model)
    assert torch.equal(decompress(rewritten("tiny"), model)[0], decompress(data, model)[0])


def test_releases_by_hash_prefix() -> None:
    assert codec_releases_by_hash("") == []  # an empty prefix names no release
    assert codec_releases_by_hash("g" * 16) == []
    for release in CODEC_RELEASES:
        assert codec_releases_by_hash(release.sha256) == [release]
        assert codec_releases_by_hash(release.sha256[:16]) == [release]


def test_bad_hash_fields_are_rejected() -> None:
    for meta in ({"m": "x", "al": 1, "nc": 1, "lm": False, "mh": "E701927FFB852E18"},
                 {"m": "x", "al": 1, "nc": 1, "lm": False, "mh": 7},
                 {"m": "x", "al": 1, "nc": 1, "lm": False, "lmh": "0" * 16}):
        with pytest.raises(BitstreamError, match="'mh'|'lmh'"):
            EcdcHeader.from_dict(meta)


# -- packet streams -----------------------------------------------------------------------------
def test_stream_header_carries_the_weights_hash(current, v4) -> None:
    info = StreamInfo.from_model(current, 8)
    assert info.model_name == "opencodec_24khz_v5#e701927ffb852e18"
    assert split_model_label(info.model_name) == ("opencodec_24khz_v5", "e701927ffb852e18")
    check_model_for_stream(current, info)
    with pytest.raises(BitstreamError, match="weights hash"):
        check_model_for_stream(v4, info)
    legacy = StreamInfo("opencodec_24khz", 24000, 1, 8, 10, 320, 4)  # written before the hash
    check_model_for_stream(v4, legacy)  # a release named explicitly
    with pytest.raises(BitstreamError, match="without a weights hash"):
        check_model_for_stream(current, legacy)  # loaded by the alias: not a choice
    # an official name on weights not proven official: <name>_custom and the hash
    official = StreamInfo.from_model(_tiny("encodec_24khz", 0), 2)
    assert split_model_label(official.model_name) == ("encodec_24khz_custom",
                                                      model_hash(_tiny("encodec_24khz", 0)))


# -- the trainer --------------------------------------------------------------------------------
def test_export_names_never_take_registered_ones() -> None:
    for name in ("opencodec_24khz", "opencodec_24khz_v4", "opencodec_24khz_v5", "encodec_24khz",
                 "opencodec_lm_24khz_v5"):
        assert export_name(name) == f"{name}_custom"
    assert export_name("unit_24khz") == "unit_24khz"


def test_trainer_renames_an_export_with_a_registered_name(tmp_path: Path, capsys) -> None:
    from test_train_solver import _config, _corpus

    from opencodec.train.solver import train

    train_m, valid_m = _corpus(tmp_path / "data")
    cfg = _config(train_m, valid_m, steps=1)
    cfg["model"]["name"] = "opencodec_24khz"
    run = train(cfg, tmp_path / "run", progress=False)
    exported = load_model(Path(run) / "model.safetensors")
    assert exported.name == "opencodec_24khz_custom"
    assert "belongs to released weights" in capsys.readouterr().err


def test_a_header_never_chooses_a_file_on_this_disk(current, speech, tmp_path: Path) -> None:
    """A name without a hash comes from the input: only official names and releases load."""
    weights = tmp_path / "weights.safetensors"
    save_model(current, weights)  # a loadable file: the header must still not reach it
    loaded: list[str] = []

    def spy(name: str) -> EncodecModel:
        loaded.append(name)
        return load_model(name)

    from opencodec.identity import model_for_file
    from opencodec.model_cache import CodecModels

    with pytest.raises(ModelLoadError, match="not a known model"):
        model_for_file(str(weights), None, 8, "the stream", spy)
    with pytest.raises(ModelLoadError, match="not a known model"):
        CodecModels(None, spy).get(str(weights), None, 8, "the stream")
    assert loaded == []
    # the same through a whole .ecdc file whose header names the path
    data = compress(current, speech, 6.0)
    header, offset = parse_header(data)
    forged = io.BytesIO()
    write_header(forged, dataclasses.replace(header, model_name=str(weights), model_hash=None))
    with pytest.raises(ModelLoadError, match="not a known model"):
        decompress(forged.getvalue() + data[offset:])
    # official names and releases still load by name (here through the spy)
    assert model_for_file(CURRENT_CODEC, header.model_hash, 8, "the file", spy).name == CURRENT_CODEC
