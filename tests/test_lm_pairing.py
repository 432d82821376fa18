"""Trained entropy models and the codec they serve: an entropy model trained on another codec's
codes is refused by ``load_lm_model``, ``compress`` and the command line, as ``train-lm report``
refuses it (one check); a file that was coded with such a pair still decodes; an export records
its codec's weights hash as headers show it and is named after its run; clear messages for a
training checkpoint, a missing file and ``decompress --lm``; a warning when entropy coding makes
a file larger than plain coding."""

from __future__ import annotations

import copy
import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from opencodec import EncodecConfig, EncodecModel, cli, save_model
from opencodec.bitstream import parse_header
from opencodec.codec_files import plain_size
from opencodec.compress import compress, decompress
from opencodec.entropy import EntropyLM
from opencodec.errors import ModelLoadError
from opencodec.identity import model_hash
from opencodec.pretrained import (BUNDLED_DIR, LM_METADATA_KEY, check_lm_for_decoding, lm_codec_mismatch,
                                  load_lm_model, load_model, read_lm_info, trained_lm_name)
from opencodec.train.lm_codes import codec_fingerprint
from opencodec.train.lm_model import export_lm

SR = 24000


def _codec(name: str, seed: int) -> EncodecModel:
    torch.manual_seed(seed)
    return EncodecModel(EncodecConfig(name=name, n_filters=4, dimension=16, ratios=[8, 5, 4, 2], lstm=1,
                                      n_q=4, bins=1024, target_bandwidths=[1.5, 3.0])).eval()


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Codec A and its trained entropy model (exported as train-lm does, to runs/speech1), codec
    B (another codec) and A2 (same config name as A, other weights), saved to files; audio."""
    folder = tmp_path_factory.mktemp("pairing")
    codecs = {"a": _codec("pair_a_24khz", 1), "b": _codec("pair_b_24khz", 2), "a2": _codec("pair_a_24khz", 3)}
    paths = {k: save_model(c, folder / f"{k}.safetensors") for k, c in codecs.items()}
    a = load_model(paths["a"])
    torch.manual_seed(0)
    lm = EntropyLM(n_q=4, card=1024, dim=16, num_heads=8, num_layers=1, hidden_scale=2.0).eval()  # 8: what load_lm_model builds
    (folder / "runs" / "speech1").mkdir(parents=True)
    lm_path = export_lm(lm, folder / "runs" / "speech1" / "lm.safetensors",
                       {"codec": a.name, "codec_source": str(paths["a"]), "codec_hash": codec_fingerprint(a),
                        "frame_rate": 75, "bandwidths": [1.5, 3.0], "step": 5})
    t = np.arange(int(0.5 * SR)) / SR
    x = (0.3 * np.sin(2 * np.pi * 220 * t) + 0.02 * np.random.default_rng(0).standard_normal(len(t)))
    wav_path = folder / "in.wav"
    sf.write(wav_path, x.astype(np.float32), SR, subtype="FLOAT")
    return {"folder": folder, "paths": paths, "lm": lm, "lm_path": lm_path, "wav_path": wav_path,
            "wav": torch.from_numpy(x.astype(np.float32))[None],
            **{k: load_model(p) for k, p in paths.items()}}


def _run(capsys: pytest.CaptureFixture[str], *argv: object) -> tuple[int, str]:
    code = cli.main([str(a) for a in argv])
    return code, capsys.readouterr().err


# -- M1: one check, in load_lm_model, compress, the CLI and train-lm report -------------------------------
def test_an_entropy_model_of_another_codec_is_refused(pair: dict, tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    a, b, a2, lm_path = pair["a"], pair["b"], pair["a2"], pair["lm_path"]
    own = f"trained on the codes of codec pair_a_24khz (weights hash {model_hash(a)})"
    with pytest.raises(ModelLoadError) as err:
        load_lm_model(lm_path, codec=b)
    assert own in str(err.value) and f"not on pair_b_24khz (weights hash {model_hash(b)})" in str(err.value)
    with pytest.raises(ModelLoadError, match=rf"not on pair_a_24khz \(weights hash {model_hash(a2)}\)"):
        load_lm_model(lm_path, codec=a2)  # the same config name is not the same codec
    load_lm_model(lm_path, codec=a)  # its own codec
    # Python: an entropy model loaded without a codec is checked when it codes
    lm = load_lm_model(lm_path)
    for deterministic in (False, True):
        with pytest.raises(ModelLoadError, match="trained on the codes of codec pair_a_24khz"):
            compress(b, pair["wav"], 3.0, lm=lm, deterministic=deterministic)
    data = compress(a, pair["wav"], 3.0, lm=lm, deterministic=True)
    assert torch.equal(decompress(data, a, lm=lm)[0], decompress(compress(a, pair["wav"], 3.0), a)[0])
    # the command line: one line, status 1, no output; train-lm report: the same message
    out = tmp_path / "x.ecdc"
    code, err = _run(capsys, "-q", "compress", pair["wav_path"], out, "-b", "3",
                     "--model", pair["paths"]["b"], "--lm-model", lm_path)
    assert code == 1 and err.count("\n") == 1 and own in err and "not on pair_b_24khz" in err
    assert not out.exists()
    code, report_err = _run(capsys, "train-lm", "report", "--lm", lm_path, "--codec", pair["paths"]["b"],
                            "--manifest", tmp_path / "unused.jsonl", "--no-progress")
    assert code != 0 and report_err.split("error: ", 1)[1] == err.split("error: ", 1)[1]


def test_exports_without_a_weights_hash_are_checked_by_their_config_and_state_hash(
        pair: dict, tmp_path: Path) -> None:
    """Exports written before ``codec_weights_hash`` record only ``codec_hash`` (sha256 of the
    codec's config and state, with the name the codec had then)."""
    from safetensors.torch import save_file

    a = pair["a"]
    old = tmp_path / "old" / "lm.safetensors"
    old.parent.mkdir()
    meta = {"codec": a.name, "codec_hash": codec_fingerprint(a), "step": 5}
    save_file({k: v.contiguous() for k, v in pair["lm"].state_dict().items()}, str(old),
              metadata={LM_METADATA_KEY: json.dumps(meta)})
    with pytest.raises(ModelLoadError, match=r"pair_a_24khz \(config and weights sha256 "
                                             rf"{codec_fingerprint(a)[:16]}\), not on pair_b_24khz"):
        load_lm_model(old, codec=pair["b"])
    load_lm_model(old, codec=a)
    renamed = copy.deepcopy(a)  # as releases were renamed: opencodec_24khz -> opencodec_24khz_v5
    renamed.config.name = "pair_a_24khz_v2"
    assert load_lm_model(old, codec=renamed).name == "pair_a_24khz_lm_old"  # named after its folder
    assert renamed.config.name == "pair_a_24khz_v2"


def test_released_entropy_models_follow_the_release_registry() -> None:
    """The bundled files record the codec under its old name ``opencodec_24khz``: by path too,
    they serve their own release silently; another release of the codec only warns."""
    current = load_model()
    bundled = BUNDLED_DIR / "opencodec_lm_24khz.safetensors"
    assert lm_codec_mismatch(read_lm_info(bundled), current) is None
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert load_lm_model(bundled, codec=current).name == "opencodec_lm_24khz_v5"
    with pytest.warns(UserWarning, match="trained for codec opencodec_24khz_v4, not opencodec_24khz_v5"):
        load_lm_model(BUNDLED_DIR / "opencodec_lm_24khz_v4b.safetensors", codec=current)


def test_a_file_coded_with_another_codecs_entropy_model_still_decodes(
        pair: dict, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Files written before the check existed: their header records the entropy model's hash,
    which proves they were coded with it, so decoding them is exact and allowed."""
    b, lm_path = pair["b"], pair["lm_path"]
    lm = load_lm_model(lm_path)
    del lm.trained_for  # as compress() accepted it before
    plain = decompress(compress(b, pair["wav"], 3.0), b)[0]
    for deterministic in (True, False):
        data = compress(b, pair["wav"], 3.0, lm=lm, deterministic=deterministic)
        assert torch.equal(decompress(data, b, lm=load_lm_model(lm_path))[0], plain)
        src, out = tmp_path / f"old{deterministic}.ecdc", tmp_path / f"old{deterministic}.wav"
        src.write_bytes(data)
        assert _run(capsys, "-q", "decompress", src, out, "--model", pair["paths"]["b"],
                    "--lm-model", lm_path) == (0, "")
    # a file that records no entropy-model hash (official models' files) proves nothing
    with pytest.raises(ModelLoadError, match="trained on the codes of codec pair_a_24khz"):
        check_lm_for_decoding(load_lm_model(lm_path), b, None)


# -- L5, L10: what an export records, and its name ---------------------------------------------------------
def test_an_export_records_the_codec_weights_hash_that_headers_carry(pair: dict, tmp_path: Path) -> None:
    a = pair["a"]
    info = read_lm_info(pair["lm_path"])  # found from codec_source, checked by codec_hash
    header = parse_header(compress(a, pair["wav"], 3.0))[0]
    assert info["codec_weights_hash"] == model_hash(a) == header.model_hash
    assert info["codec_hash"] == codec_fingerprint(a)  # still recorded, for older readers
    (tmp_path / "r").mkdir()
    path = export_lm(pair["lm"], tmp_path / "r" / "lm.safetensors", {"codec": "x"}, codec=pair["b"])
    assert read_lm_info(path)["codec_weights_hash"] == model_hash(pair["b"])
    (tmp_path / "s").mkdir()
    path = export_lm(pair["lm"], tmp_path / "s" / "lm.safetensors",  # a codec_hash that does not fit
                     {"codec": "x", "codec_source": str(pair["paths"]["a"]), "codec_hash": "0" * 64})
    assert "codec_weights_hash" not in read_lm_info(path)


def test_trained_entropy_models_are_named_after_their_run(pair: dict, tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    name = "pair_a_24khz_lm_speech1"
    assert read_lm_info(pair["lm_path"])["name"] == name
    assert load_lm_model(pair["lm_path"], codec=pair["a"]).name == name
    out = tmp_path / "x.ecdc"
    assert _run(capsys, "-q", "compress", pair["wav_path"], out, "-b", "3", "--model", pair["paths"]["a"],
                "--lm-model", pair["lm_path"])[0] == 0
    det = parse_header(out.read_bytes())[0].deterministic
    assert det is not None and det.lm_name == name  # the header names it, not "lm.safetensors"
    code, err = _run(capsys, "-q", "decompress", out, tmp_path / "x.wav", "--model", pair["paths"]["a"])
    assert code == 1 and f"entropy model {name!r}" in err
    assert _run(capsys, "-q", "decompress", out, tmp_path / "x.wav", "--model", pair["paths"]["a"],
                "--lm-model", pair["lm_path"])[0] == 0  # found by path, as before
    # a name that means other weights is not taken
    assert trained_lm_name("encodec", tmp_path / "24khz" / "lm.safetensors") == "encodec_lm_24khz_custom"


# -- L2, L9, L11: messages ------------------------------------------------------------------------------------
def test_clear_messages_for_wrong_files_and_flags(pair: dict, tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    # a train-lm run's checkpoint names the file to use
    run = tmp_path / "run"
    run.mkdir()
    torch.save({"model": pair["lm"].state_dict(), "optim": {}, "step": 7, "codec_hash": "0" * 64},
               run / "checkpoint.pt")
    code, err = _run(capsys, "-q", "compress", pair["wav_path"], tmp_path / "c.ecdc", "-b", "3", "--model",
                     pair["paths"]["a"], "--lm-model", run / "checkpoint.pt")
    assert code == 1 and "is a train-lm training checkpoint" in err and str(run / "lm.safetensors") in err
    torch.save({"model": {}, "optim": {}, "step": 7}, run / "codec.pt")
    with pytest.raises(ModelLoadError, match="is a training checkpoint .*not an entropy model weights file"):
        load_lm_model(run / "codec.pt")
    # train-lm report with a missing file says so (not "does not name its codec")
    code, err = _run(capsys, "train-lm", "report", "--lm", tmp_path / "nope.safetensors", "--manifest",
                     tmp_path / "m.jsonl")
    assert code != 0 and "no entropy model named" in err and "and no such file" in err
    # decompress --lm is accepted: the header says whether a file is entropy coded
    src = tmp_path / "p.ecdc"
    src.write_bytes(compress(pair["a"], pair["wav"], 3.0))
    assert _run(capsys, "-q", "decompress", src, tmp_path / "p.wav", "--lm", "--model",
                pair["paths"]["a"]) == (0, "")


# -- L12: the plain size, computed ----------------------------------------------------------------------------
def test_plain_size_is_the_plain_files_size(pair: dict) -> None:
    a = pair["a"]
    lm = load_lm_model(pair["lm_path"], codec=a)
    for bw in (1.5, 3.0):
        for seconds in (0.5, 0.013):
            wav = pair["wav"][:, :int(seconds * SR)]
            plain = len(compress(a, wav, bw))
            for deterministic in (False, True):
                header = parse_header(compress(a, wav, bw, lm=lm, deterministic=deterministic))[0]
                assert plain_size(header, a) == plain
