"""``opencodec tokenize``/``detokenize``/``TokenDataset`` inputs and outputs: streamed reads and MP3
blocks, duplicate rows and ids, output path collisions, linked folders, unfinished jobs, binary
inputs, manifests, CSV byte order marks, loader workers, clipping, summaries and help."""

from __future__ import annotations

import json
import os
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from opencodec import load_model, read_audio
from opencodec.errors import ModelLoadError
from opencodec.tokens import (
    detokenize,
    InputError,
    list_inputs,
    TokenDataset,
    tokenize,
    TokenizeError,
    TokenizeOptions,
)

import test_tokenize
from test_tokenize import _alone, _write_corpus, FILES


# the fixtures of test_tokenize (module-scoped: built again for this module)
tiny_model_file, corpus, tokens = test_tokenize.tiny_model_file, test_tokenize.corpus, test_tokenize.tokens


def _cli(*args: str) -> int:
    from opencodec.cli import main
    return main(["-q", *args])


def _chirps(seconds: float, rate: int, channels: int) -> np.ndarray:
    """Gated chirps over faint noise, [n, C]: a signal whose MP3 frames use the bit reservoir."""
    rng = np.random.default_rng(1)
    t = np.arange(int(round(seconds * rate))) / rate
    sig = 0.3 * np.sin(2 * np.pi * (200 + 300 * t) * t) * (np.sin(2 * np.pi * 1.5 * t) > 0)
    sig = sig + 0.02 * rng.standard_normal(t.size)
    return np.stack([sig * (1 - 0.5 * c) for c in range(channels)], axis=1).astype(np.float32)


# -- 1: a long file whose length is a whole number of blocks, other channels and rate ----------
def test_streamed_file_of_whole_blocks_with_other_channels_and_rate(tiny_model_file: Path, tmp_path: Path) -> None:
    """10 s of 44.1 kHz stereo = exactly one 10 s read block: the empty read at the end used
    to keep the file's 2 channels and the mono resampler refused it ("Channel num mismatch")."""
    src = tmp_path / "in" / "stereo44k_10s.wav"
    src.parent.mkdir()
    sf.write(src, _chirps(10.0, 44100, 2), 44100)
    out = tmp_path / "out"
    summary = tokenize(TokenizeOptions([str(src.parent)], out, model=str(tiny_model_file), device="cpu",
                                       max_seconds=5.0))
    assert summary.index is not None and (summary.index["rows"], summary.index["errors"]) == (1, 0), \
        (out / "errors.jsonl").read_text()
    model = load_model(tiny_model_file)
    model.set_target_bandwidth(3.0)
    row = TokenDataset(out)[0]
    np.testing.assert_array_equal(row["codes"].numpy(), _alone(model, src))
    assert row["num_samples"] == 240000 and row["channels"] == 2 and row["sample_rate"] == 44100


# -- 3: MP3 read in blocks gives read_audio's samples ------------------------------------------
@pytest.mark.parametrize("channels", [1, 2])
def test_mp3_blocks_equal_a_whole_read(tmp_path: Path, channels: int) -> None:
    """python-soundfile's read seeks after every call, and an MP3 seek restarts libmpg123
    without its bit reservoir: block reads differed from one whole read (by up to 0.1 here).
    The blocks now decode sequentially: the same samples as read_audio, whatever the size."""
    from opencodec.longform.blocks import _ConvertedBlocks

    src = tmp_path / "x.mp3"
    sf.write(src, _chirps(3.0, 24000, channels), 24000, format="MP3")
    whole, rate = read_audio(src)
    assert rate == 24000
    for block_seconds in (0.17, 0.375, 1.0):
        got = np.concatenate(list(_ConvertedBlocks(src, 24000, channels, block_seconds)))
        np.testing.assert_array_equal(got.T, whole.numpy(), err_msg=f"block_seconds={block_seconds}")


def test_streamed_mp3_codes_equal_the_file_alone(tiny_model_file: Path, tmp_path: Path) -> None:
    src = tmp_path / "in" / "long.mp3"
    src.parent.mkdir()
    sf.write(src, _chirps(12.0, 24000, 1), 24000, format="MP3")
    out = tmp_path / "out"
    tokenize(TokenizeOptions([str(src.parent)], out, model=str(tiny_model_file), device="cpu", max_seconds=5.0))
    model = load_model(tiny_model_file)
    model.set_target_bandwidth(3.0)
    np.testing.assert_array_equal(TokenDataset(out)[0]["codes"].numpy(), _alone(model, src))


# -- 2, 17: detokenize output collisions, repeated ids -----------------------------------------
def test_detokenize_refuses_two_rows_for_one_file(tiny_model_file: Path, tmp_path: Path,
                                                  capsys: pytest.CaptureFixture) -> None:
    corpus = _write_corpus(tmp_path / "coll", [("x.wav", 0.5, 24000, 1), ("x.flac", 0.4, 16000, 1),
                                               ("y.wav", 0.3, 24000, 1)])
    (corpus / "broken.wav").unlink()
    tokenize(TokenizeOptions([str(corpus)], tmp_path / "tok", model=str(tiny_model_file), device="cpu"))
    out = tmp_path / "audio"
    with pytest.raises(TokenizeError, match=r"rows 'x\.(flac|wav)' and 'x\.(flac|wav)' would both be written to "):
        detokenize(tmp_path / "tok", out)
    assert not out.exists()  # refused before anything was written
    # an id given twice is decoded once, and the count says what was written
    assert _cli("detokenize", str(tmp_path / "tok"), "--out", str(out), "--ids", "y.wav", "y.wav") == 0
    assert detokenize(tmp_path / "tok", tmp_path / "again", ids=["y.wav", "y.wav"]) == [tmp_path / "again/y.wav"]
    from opencodec.cli import main
    assert main(["detokenize", str(tmp_path / "tok"), "--out", str(tmp_path / "third"), "--ids", "x.wav",
                 "x.wav"]) == 0
    assert "1 file written to" in capsys.readouterr().err


def test_output_paths_collide_through_dot_dot_and_empty_names_are_refused(tmp_path: Path) -> None:
    from opencodec.tokens.dataset import output_path, output_paths

    with pytest.raises(TokenizeError, match=r"rows 'a/\.\./b\.wav' and 'a/b\.flac' would both be written"):
        output_paths(tmp_path, ["a/../b.wav", "a/b.flac"])
    assert output_paths(tmp_path, ["a/b.wav", "b.wav"]) == [tmp_path / "a/b.wav", tmp_path / "b.wav"]
    for bad in ("", ".", "/", ".."):
        with pytest.raises(TokenizeError, match="names no output file"):
            output_path(tmp_path, bad)


# -- 4: linked sub-folders ----------------------------------------------------------------------
def test_linked_folders_are_followed_once(tmp_path: Path) -> None:
    data = _write_corpus(tmp_path / "data", [("m1.wav", 0.1, 24000, 1), ("m2.wav", 0.1, 24000, 1)])
    root = tmp_path / "root"
    root.mkdir()
    sf.write(root / "own.wav", np.zeros(100, np.float32), 24000)
    (root / "music").symlink_to(data)
    (root / "again").symlink_to(data)  # a second link to the same folder
    (root / "loop").symlink_to(root)  # a link loop
    with pytest.warns(UserWarning, match="already listed") as rec:
        ids = [i.id for i in list_inputs([root])]
    assert ids == ["again/broken.wav", "again/m1.wav", "again/m2.wav", "own.wav"]
    assert len([w for w in rec if "already listed" in str(w.message)]) == 1  # music: again's folder
    assert len([w for w in rec if "listed under its own path" in str(w.message)]) == 1  # the loop


def test_a_link_into_the_tree_never_hides_the_real_folder(tmp_path: Path) -> None:
    """A convenience link whose name sorts first (``a_link -> b``) must not take the real
    folder's place: ids stay ``b/...`` whatever the names' order."""
    root = tmp_path / "ds"
    _write_corpus(root / "b", [("x.wav", 0.1, 24000, 1)])
    (root / "a_link").symlink_to(root / "b")
    with pytest.warns(UserWarning, match="a_link is a link to .*listed under its own path"):
        ids = [i.id for i in list_inputs([root])]
    assert ids == ["b/broken.wav", "b/x.wav"]


# -- 5, 11: unfinished and damaged token folders -------------------------------------------------
def test_unfinished_job_is_refused_with_n_of_m_shards(tokens: Path, tmp_path: Path) -> None:
    part = tmp_path / "part"
    shutil.copytree(tokens, part)
    (part / "index.json").unlink()
    (part / "errors.jsonl").unlink()
    TokenDataset(part)  # every shard there (killed before the index): complete
    (part / "shard-00001-of-00003.parquet").unlink()
    with pytest.raises(TokenizeError, match=r"job incomplete: 2 of 3 shards written .*rerun the tokenize"):
        TokenDataset(part)
    with pytest.raises(TokenizeError, match="2 of 3 shards"):
        detokenize(part, tmp_path / "audio")
    with pytest.warns(UserWarning, match="2 of 3 shards written"):
        assert len(TokenDataset(part, partial=True)) == 3
    (part / "job.json").unlink()  # the shard names say it too
    with pytest.raises(TokenizeError, match="2 of 3 shards"):
        TokenDataset(part)


def test_missing_shard_listed_in_the_index_is_named(tokens: Path, tmp_path: Path) -> None:
    miss = tmp_path / "miss"
    shutil.copytree(tokens, miss)
    (miss / "shard-00002-of-00003.parquet").unlink()
    with pytest.raises(TokenizeError, match=rf"^token folder {miss} is incomplete: shard-00002-of-00003.parquet, "
                                            "listed in index.json, is missing$"):
        TokenDataset(miss)


# -- 6, 7, 8, 10, 13, 14: inputs -----------------------------------------------------------------
def test_a_binary_input_is_named(tmp_path: Path) -> None:
    binary = tmp_path / "x.m4a"
    binary.write_bytes(bytes([0xcc, 0xff, 0x00, 0x81]) * 50)
    with pytest.raises(InputError, match=rf"^{binary}: not an audio file, manifest or UTF-8 list of paths"):
        list_inputs([binary])
    bad_csv = tmp_path / "m.csv"
    bad_csv.write_bytes(b"path,id\n\xcc\xff,x\n")
    with pytest.raises(InputError, match=rf"^{bad_csv}: not an audio file, manifest or UTF-8"):
        list_inputs([bad_csv])


def test_manifest_ids_empty_null_and_non_strings(tmp_path: Path, corpus: Path) -> None:
    a, d = corpus / "a.wav", corpus / "d.wav"
    manifest = tmp_path / "m.jsonl"
    manifest.write_text(json.dumps({"path": str(a), "id": None}) + "\n" + json.dumps({"path": str(d), "id": 17}) + "\n")
    assert [(i.id, i.path) for i in list_inputs([manifest])] == [(str(a), str(a)), ("17", str(d))]
    manifest.write_text(json.dumps({"path": str(a)}) + "\n\n" + json.dumps({"path": str(d), "id": ""}) + "\n")
    with pytest.raises(InputError, match=rf'^{manifest}:3: empty "id" \(leave it out'):
        list_inputs([manifest])
    for value in ({"a": 1}, 3.0, True, [1]):
        manifest.write_text(json.dumps({"path": str(a), "id": value}) + "\n")
        with pytest.raises(InputError, match=rf'^{manifest}:1: "id" must be a string \(or an integer\), got '):
            list_inputs([manifest])


def test_csv_with_a_byte_order_mark(tmp_path: Path, corpus: Path) -> None:
    manifest = tmp_path / "excel.csv"
    manifest.write_bytes(b"\xef\xbb\xbfpath,id\n" + str(corpus / "a.wav").encode() + b",utt\n")
    assert [i.id for i in list_inputs([manifest])] == ["utt"]
    listing = tmp_path / "list.txt"
    listing.write_bytes(b"\xef\xbb\xbf" + str(corpus / "a.wav").encode() + b"\n")
    assert [i.path for i in list_inputs([listing])] == [str(corpus / "a.wav")]


def test_list_of_paths_relative_to_the_wrong_folder_is_refused_before_out(
        tiny_model_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture) -> None:
    """Relative paths in a text list are relative to the list's folder; when none of them
    exists (written relative to the current folder) nothing is claimed: the fixed rerun works."""
    _write_corpus(tmp_path / "data", [("a.wav", 0.3, 24000, 1), ("d.wav", 0.3, 24000, 1)])
    monkeypatch.chdir(tmp_path)
    Path("lists").mkdir()
    Path("lists/cwd.txt").write_text("data/a.wav\ndata/d.wav\n")
    assert _cli("tokenize", "lists/cwd.txt", "--out", "out", "-m", str(tiny_model_file), "--device", "cpu") == 1
    assert capsys.readouterr().err.strip() == (
        "opencodec: error: lists/cwd.txt: none of its 2 files exists (the first: lists/data/a.wav); relative "
        "paths in a manifest or list are relative to its own folder (lists), not to the current folder")
    assert not Path("out").exists()
    Path("lists/cwd.txt").write_text("../data/a.wav\ndata/missing.wav\n")  # one exists: a job, one error row
    assert _cli("tokenize", "lists/cwd.txt", "--out", "out", "-m", str(tiny_model_file), "--device", "cpu") == 0
    assert [i.path for i in list_inputs(["lists/cwd.txt"])] == ["lists/../data/a.wav", "lists/data/missing.wav"]


def test_duplicate_ids_from_an_id_column_say_so(tmp_path: Path, corpus: Path) -> None:
    manifest = tmp_path / "dup.csv"
    manifest.write_text(f"path,id\n{corpus / 'a.wav'},x\n{corpus / 'd.wav'},x\n")
    with pytest.raises(InputError) as err:
        list_inputs([manifest])
    assert f"from the 'id' column of {manifest}" in str(err.value) and "fix the manifest's 'id' values" in str(err.value)
    assert "give a manifest" not in str(err.value)
    other = tmp_path / "other"
    other.mkdir()
    shutil.copy(corpus / "a.wav", other / "a.wav")
    with pytest.raises(InputError, match=r"give a manifest with an 'id' column"):
        list_inputs([corpus, other])


def test_one_file_under_two_ids_warns(corpus: Path) -> None:
    with pytest.warns(UserWarning, match=r"^2 file\(s\) are listed under more than one id and get a row per id "
                                         r"\(e\.g\. .*/sub/b\.flac as 'b\.flac', 'sub/b\.flac'\)"):
        items = list_inputs([corpus, corpus / "sub"])
    assert len(items) == len(FILES) + 1 + 2


# -- 9, 15: warnings about settings ---------------------------------------------------------------
def test_bf16_on_the_cpu_warns_even_when_quiet(tiny_model_file: Path, tmp_path: Path,
                                              capsys: pytest.CaptureFixture) -> None:
    corpus = _write_corpus(tmp_path / "c", [("a.wav", 0.5, 24000, 1)])
    assert _cli("tokenize", str(corpus), "--out", str(tmp_path / "o"), "-m", str(tiny_model_file),
                "--device", "cpu", "--dtype", "bf16", "--workers", "1") == 0
    err = capsys.readouterr().err
    assert "opencodec: warning: --dtype bf16 on the CPU: bfloat16 autocast changes most codes" in err
    assert "opencodec: warning: bf16: " in err and "% of codes equal fp32 encoding (" in err


def test_too_many_loader_workers_warn_once_in_our_words(monkeypatch: pytest.MonkeyPatch) -> None:
    from opencodec.tokens import job
    from opencodec.tokens.reader import BatchAudio, batch_loader

    monkeypatch.setattr(job, "usable_cores", lambda: 2)
    options = TokenizeOptions(["x"], Path("o"), loader_workers=3)
    assert job.loader_warning(options, torch.device("cpu")) == (
        "--loader-workers 3 is more than the 2 usable core(s): the decoding processes will compete for them "
        "(and with the encoding)")
    assert job.dtype_warning(options, torch.device("cpu")) is None
    assert job.loader_warning(TokenizeOptions(["x"], Path("o"), loader_workers=2), torch.device("cpu")) is None
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        assert list(batch_loader(BatchAudio({}, [], 24000, 1), (os.cpu_count() or 1) + 1)) == []
    assert not [w for w in rec if "DataLoader will create" in str(w.message)]


# -- 12: clipping in detokenize ---------------------------------------------------------------------
def test_detokenize_clipping_message_and_rescale(tokens: Path, tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    from opencodec.tokens import dataset

    decode = dataset.decode_row
    monkeypatch.setattr(dataset, "decode_row", lambda model, item: 40 * decode(model, item))
    with pytest.warns(UserWarning, match=r"exceeds full scale 1\.0; clipped \(detokenize --rescale, or "
                                         r"rescale=True, scales such files down instead\)") as rec:
        detokenize(tokens, tmp_path / "clip", ids=["a.wav"])
    assert not [w for w in rec if "rescale to avoid clipping" in str(w.message)]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        path, = detokenize(tokens, tmp_path / "scaled", ids=["a.wav"], rescale=True)
    peak = np.abs(sf.read(path)[0]).max()
    assert 0.98 < peak <= 0.99


# -- 16, 19: summary and help -------------------------------------------------------------------
def test_summary_in_readable_units(tiny_model_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from opencodec.cli import main

    corpus = _write_corpus(tmp_path / "c", [("a.wav", 0.5, 24000, 1)])
    (corpus / "broken.wav").unlink()
    args = ["tokenize", str(corpus), "--out", str(tmp_path / "o"), "-m", str(tiny_model_file), "--device", "cpu"]
    assert main(args) == 0
    err = capsys.readouterr().err
    assert "1 file, 0.5 s of audio, 0 errors, " in err and "x real time" in err and "0.0000 h" not in err
    assert f"{tmp_path / 'o'}: 1 shard, 1 row, 0.5 s of audio, 0 errors" in err
    assert main(args) == 0  # nothing left to do: no speed to report
    err = capsys.readouterr().err
    assert "0 files, 0 s of audio" in err and "real time" not in err


def test_tokenize_help_names_every_column_and_audio_file_inputs(capsys: pytest.CaptureFixture) -> None:
    from opencodec.cli import main

    assert main(["tokenize", "--help"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    for text in ("num_samples", "scales", "single audio files (id: the file name)",
                 "relative to their own folder", "linked sub-folders followed"):
        assert text in out, text


# -- 18: environment variables ------------------------------------------------------------------
def test_non_integer_world_size_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    from opencodec.tokens.job import default_workers
    from opencodec.tokens.plan import place_from_env

    monkeypatch.setenv("WORLD_SIZE", "abc")
    with pytest.raises(ValueError, match=r"^environment variable WORLD_SIZE='abc' is not an integer"):
        place_from_env()
    with pytest.raises(ValueError, match="WORLD_SIZE='abc'"):
        default_workers("cpu")
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", " 1 ")
    assert place_from_env().rank == 1


# -- 20: the weights file is recorded ------------------------------------------------------------
def test_detokenize_finds_the_weights_file_the_job_used(tiny_model_file: Path, tmp_path: Path) -> None:
    weights = tmp_path / "w" / "tiny.safetensors"
    weights.parent.mkdir()
    shutil.copy(tiny_model_file, weights)
    corpus = _write_corpus(tmp_path / "c", [("a.wav", 0.5, 24000, 1)])
    tokenize(TokenizeOptions([str(corpus)], tmp_path / "o", model=str(weights), device="cpu"))
    assert TokenDataset(tmp_path / "o").metadata["weights_file"] == str(weights.resolve())
    assert detokenize(tmp_path / "o", tmp_path / "audio", ids=["a.wav"]) == [tmp_path / "audio/a.wav"]
    weights.unlink()
    with pytest.raises(ModelLoadError, match=rf"written with the weights file {weights.resolve()}, which no longer "
                                             r"exists .*pass it, or a copy, with --model"):
        detokenize(tmp_path / "o", tmp_path / "audio2", ids=["a.wav"])
    assert detokenize(tmp_path / "o", tmp_path / "audio3", ids=["a.wav"], model=str(tiny_model_file))


# -- 21: indexing a TokenDataset ------------------------------------------------------------------
def test_token_dataset_index_types(tokens: Path) -> None:
    ds = TokenDataset(tokens)
    with pytest.raises(TypeError, match=r"indexed by an integer position, got str 'a\.wav' \(use "
                                        r"ds\[ds\.index_of\(id\)\] for a row id\)"):
        ds["a.wav"]
    for bad in (slice(0, 2), 1.5):
        with pytest.raises(TypeError, match="indexed by an integer position"):
            ds[bad]
    assert ds[np.int64(1)]["id"] == ds[torch.tensor(1)]["id"] == ds[1]["id"] == ds[-5]["id"]
