"""``opencodec tokenize``/``detokenize``: file names and manifests that are not UTF-8, shards whose
files all failed, CSV rows without a path, the source length, the workers note, a changed corpus and
an entropy model given as ``--model``."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import soundfile as sf
import torch

from opencodec import load_model
from opencodec.audio import convert_audio, read_audio, resampled_length
from opencodec.errors import EntropyModelAsCodecError
from opencodec.tokens import (
    detokenize,
    InputError,
    list_inputs,
    TokenDataset,
    tokenize,
    TokenizeError,
    TokenizeOptions,
)
from opencodec.tokens.inputs import utf8_text
from opencodec.tokens.job import workers_note
from opencodec.tokens.plan import probe
from opencodec.tokens.shards import claim_folder

import test_tokenize
from codec_helpers import _bytes_name, _cli, _tone, LM_FILE
from test_tokenize import _write_corpus


# the fixtures of test_tokenize (module-scoped: built again for this module)
tiny_model_file, corpus, tokens = test_tokenize.tiny_model_file, test_tokenize.corpus, test_tokenize.tokens


# -- 1: a file name that is not UTF-8 ----------------------------------------------------------------
def test_utf8_text_escapes_the_bytes_that_are_not_utf8() -> None:
    assert utf8_text("sub/é.wav") == "sub/é.wav"
    assert utf8_text(os.fsdecode(b"bad\xffname/latin1_\xe9.wav")) == "bad\\xffname/latin1_\\xe9.wav"
    assert utf8_text("x\ud800") == "x\\ud800"  # a JSON "\ud800" escape stands for no byte


def test_a_file_name_that_is_not_utf8_is_reported_and_skipped(tiny_model_file: Path, tmp_path: Path,
                                                              capsys: pytest.CaptureFixture) -> None:
    """Before: the shard was encoded, then pyarrow refused the id ("surrogates not allowed"),
    exit 1 with only job.json, and every rerun failed alike."""
    edge = tmp_path / "edge"
    _tone(edge / "good.wav", 4800, 24000)
    bad = _bytes_name(edge, b"bad\xffname/latin1_\xe9.wav", seed=1)
    out = tmp_path / "out"
    for _ in range(2):  # the first run, and a rerun of the finished job
        assert _cli("-q", "tokenize", str(edge), "--out", str(out), "-m", str(tiny_model_file), "--device", "cpu",
                    "--workers", "1") == 0
        assert capsys.readouterr().err.strip() == (f"opencodec: warning: 1 of 2 files could not be tokenised "
                                                   f"(reasons in {out / 'errors.jsonl'})")
    text = (out / "errors.jsonl").read_bytes().decode("utf-8")  # valid UTF-8, no surrogate escapes
    assert "\\udc" not in text
    [row] = [json.loads(line) for line in text.splitlines()]
    escaped = f"{edge}/bad\\xffname/latin1_\\xe9.wav"
    assert row == {"id": "bad\\xffname/latin1_\\xe9.wav", "path": escaped,
                   "error": f"{escaped}: the file name is not valid UTF-8 (its other bytes are shown as \\xNN), "
                            "and a row's id must be UTF-8 text: rename the file to tokenise it"}
    assert TokenDataset(out)[0]["id"] == "good.wav" and len(TokenDataset(out)) == 1
    assert bad.is_file()  # never written to


def test_a_folder_whose_own_name_is_not_utf8_is_tokenised(tmp_path: Path) -> None:
    """Only the id must be UTF-8: a file under a folder given with a non-UTF-8 name is read
    (its header too, for the plan: soundfile takes such a name as bytes only)."""
    path = _bytes_name(tmp_path, b"dir\xff/a.wav", seed=2)
    [item] = list_inputs([path.parent])
    assert (item.id, item.error) == ("a.wav", "")
    [planned] = probe([item])
    assert planned.duration == pytest.approx(0.1) and planned.error == ""


def test_manifests_with_text_that_is_not_utf8(tmp_path: Path, corpus: Path) -> None:
    """JSON lines can hold lone surrogates (``\\udcff`` escapes): as an id they are refused with the
    line; as a path without an id, the file is skipped as one with such a name. A CSV manifest
    or a list with such bytes is not UTF-8 text: refused, naming the byte."""
    manifest = tmp_path / "m.jsonl"
    manifest.write_text(json.dumps({"path": str(corpus / "a.wav"), "id": "x\udcff"}) + "\n")
    with pytest.raises(InputError, match=rf"^{manifest}:1: \"id\" 'x\\\\xff' is not valid Unicode text"):
        list_inputs([manifest])
    manifest.write_text(json.dumps({"path": str(corpus / "a.wav")}) + "\n" +
                        json.dumps({"path": str(tmp_path / "b\udcff.wav")}) + "\n")
    items = {i.id: i for i in list_inputs([manifest])}
    assert items[str(corpus / "a.wav")].error == ""
    assert "not valid UTF-8" in items[f"{tmp_path}/b\\xff.wav"].error
    for name in ("m.csv", "list.txt"):
        (tmp_path / name).write_bytes(b"path\n" + os.fsencode(str(corpus)) + b"/a\xff.wav\n")
        with pytest.raises(InputError, match=r"byte \d+ is not UTF-8 text"):
            list_inputs([tmp_path / name])


# -- 2: a shard whose files all failed ------------------------------------------------------------------
def test_a_shard_whose_files_all_failed_has_no_row_group(tiny_model_file: Path, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """Unreadable files sort first: with 2 rows a shard, shard 0 holds the 2 broken files only.
    Before: it held one row group of 0 rows, and ``datasets.load_dataset`` failed with
    "ArrowInvalid: BatchSize must be greater than 0, got 0"."""
    root = _write_corpus(tmp_path / "c", [("g0.wav", 0.3, 24000, 1), ("g1.wav", 0.5, 16000, 1)])
    (root / "broken2.wav").write_bytes(b"RIFF\x10\x00\x00\x00WAVEnot audio either")
    out = tmp_path / "out"
    tokenize(TokenizeOptions([str(root)], out, model=str(tiny_model_file), device="cpu", shard_rows=2))
    empty, full = sorted(out.glob("shard-*.parquet"))
    assert pq.ParquetFile(empty).metadata.num_row_groups == 0 and pq.read_table(empty).num_rows == 0
    assert pq.read_schema(empty).equals(pq.read_schema(full), check_metadata=False)
    meta = json.loads(pq.read_schema(empty).metadata[b"opencodec"])
    assert (meta["shard"], meta["model"], [e["id"] for e in meta["errors"]]) == (0, "tiny", ["broken.wav", "broken2.wav"])
    assert [s["rows"] for s in json.loads((out / "index.json").read_text())["shards"]] == [0, 2]
    assert len(pd.read_parquet([str(empty), str(full)])) == 2 and len(TokenDataset(out)) == 2

    import datasets  # installed by make test (the "test" extra): a missing one fails, never skips
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    ds = datasets.load_dataset("parquet", data_files=[str(empty), str(full)], split="train",
                               cache_dir=str(tmp_path / "cache"))
    assert sorted(ds["id"]) == ["g0.wav", "g1.wav"]


# -- 3: a CSV row without a path ---------------------------------------------------------------------------
@pytest.mark.parametrize("text, line", [("path,id\n,x\n../a.wav,y\n", 2),        # empty
                                        ("id,path\nx,a.wav\ny\n", 3),            # missing: a short row
                                        ("path\na.wav\n\n  \n", 4)])              # blank (line 3 is skipped)
def test_a_csv_row_without_a_path_is_refused_with_its_line(tmp_path: Path, text: str, line: int) -> None:
    """Before: dropped silently (exit 0, one row fewer), where JSON lines refused the same row."""
    manifest = tmp_path / "m.csv"
    manifest.write_text(text)
    with pytest.raises(InputError, match=f'^{manifest}:{line}: a manifest row needs a "path" '
                                         r"\(this one's is empty or missing\)$"):
        list_inputs([manifest])


# -- 4: detokenize gives the source's length -------------------------------------------------------------
def test_detokenize_gives_the_source_length(tiny_model_file: Path, tmp_path: Path) -> None:
    """4801 samples at 48 kHz are 2401 at the model's 24 kHz, which come back as 4802 (soxr
    rounds half up): the output is cut to 4801, and at --rate 44100 to resampled_length(4801)
    = 4411 (not 4412, the length from 2401 samples at 24 kHz)."""
    root = tmp_path / "c"
    _tone(root / "odd.wav", 4801, 48000)
    _tone(root / "even.wav", 2205, 22050, seed=1)
    out = tmp_path / "tok"
    tokenize(TokenizeOptions([str(root)], out, model=str(tiny_model_file), device="cpu"))
    model = load_model(tiny_model_file)
    ds = TokenDataset(out)
    for rate, lengths in ((None, {"odd": 4801, "even": 2205}),
                          (44100, {"odd": 4411, "even": 4410})):
        folder = tmp_path / f"audio{rate}"
        paths = detokenize(out, folder, model=str(tiny_model_file), rate=rate)
        assert {p.stem: sf.info(p).frames for p in paths} == lengths
        # the samples are the model's decoding, converted: only the length changed
        item = ds[ds.index_of("odd.wav")]
        with torch.inference_mode():
            ref = model.decode([(item["codes"][None], None)])[0, :, : item["num_samples"]]
        ref = convert_audio(ref, 24000, rate or 48000, 1)
        assert ref.shape[-1] == resampled_length(2401, 24000, rate or 48000) == lengths["odd"] + 1
        got, _ = read_audio(folder / "odd.wav")
        assert (got - ref[:, : lengths["odd"]]).abs().max() < 2 / 32768


def test_the_source_length_from_the_stored_duration_is_exact() -> None:
    """A row stores ``duration`` = samples / rate in float64: rounding it times the rate gives
    the samples back, for any count up to 2**31 at the usual rates (detokenize relies on it)."""
    from opencodec.tokens.dataset import source_length

    rng = np.random.default_rng(0)
    for rate in (8000, 11025, 16000, 22050, 44100, 48000, 96000, 192000):
        for n in [1, 2, 4801, 2**31 - 1, *rng.integers(1, 2**31, 2000).tolist()]:
            assert source_length({"duration": n / rate, "sample_rate": rate}) == n, (rate, n)


# -- 5: more --workers than shards ---------------------------------------------------------------------------
def test_workers_note() -> None:
    assert workers_note(2, 4, 1, 1000) == (
        "--workers 2: the job's 4 files fill 1 shard of up to 1000 (--shard-rows), one process's work each, "
        "so 1 of the 2 processes runs; --shard-rows 2 would make 2 shards and let each of the 2 processes work "
        "(the shard size is part of the job: give it a new --out folder)")
    assert workers_note(8, 2500, 3, 1000).endswith("so 3 of the 8 processes run; --shard-rows 313 would make "
                                                   "8 shards and let each of the 8 processes work (the shard "
                                                   "size is part of the job: give it a new --out folder)")
    assert workers_note(4, 3, 3, 1) == ("--workers 4: the job's 3 files fill 3 shards of up to 1 (--shard-rows), "
                                        "one process's work each, so 3 of the 4 processes run")
    assert workers_note(1, 4, 1, 1000) is None and workers_note(2, 4, 2, 2) is None and workers_note(2, 5, 3, 2) is None


def test_the_command_says_when_workers_idle(tiny_model_file: Path, tmp_path: Path,
                                           capsys: pytest.CaptureFixture) -> None:
    """Before: --workers 2 on a job of one shard ran one process without a word."""
    root = _write_corpus(tmp_path / "c", [("a.wav", 0.2, 24000, 1), ("b.wav", 0.3, 24000, 1)])
    (root / "broken.wav").unlink()
    args = ["tokenize", str(root), "-m", str(tiny_model_file), "--device", "cpu", "--workers", "2"]
    assert _cli(*args, "--out", str(tmp_path / "o1")) == 0
    err = capsys.readouterr().err
    assert err.count("--workers 2: the job's 2 files fill 1 shard of up to 1000") == 1
    assert "--shard-rows 1 would make 2 shards" in err
    assert _cli("-q", *args, "--out", str(tmp_path / "o2")) == 0
    assert capsys.readouterr().err == ""


# -- 6: a changed corpus -------------------------------------------------------------------------------------
def test_a_changed_corpus_is_said_in_words(tmp_path: Path) -> None:
    """Before: "holds tokens of another job (differs in: files_sha256, num_files, num_shards)"."""
    job = {"model": "tiny", "weights_sha256": "a" * 64, "bandwidth": 3.0, "dtype": "fp32", "shard_rows": 1000,
           "num_shards": 1, "num_files": 7, "files_sha256": "1" * 64, "opencodec_version": "0.1.0"}
    folder = tmp_path / "tok"
    claim_folder(folder, job)
    claim_folder(folder, dict(job))  # the same job: accepted (a rerun resumes)
    changed = {**job, "num_files": 8, "files_sha256": "2" * 64}
    advice = (f"; its shards cannot be reused for this one: give a new --out folder, or delete {folder} "
              "to start again")
    with pytest.raises(TokenizeError) as caught:
        claim_folder(folder, changed)
    assert str(caught.value) == (f"{folder} holds the tokens of another job: the input files, or their durations, "
                                 f"changed since that job (7 files then, 8 now){advice}")
    with pytest.raises(TokenizeError) as caught:  # same count, other durations; other settings
        claim_folder(folder, {**job, "files_sha256": "3" * 64, "bandwidth": 1.5, "weights_sha256": "b" * 64,
                              "shard_rows": 2, "num_shards": 4})
    assert str(caught.value) == (f"{folder} holds the tokens of another job: --bandwidth: 3.0 then, 1.5 now; "
                                 "--shard-rows: 1000 then, 2 now; the model's weights: aaaaaaaaaaaa... then, "
                                 "bbbbbbbbbbbb... now; the input files, or their durations, changed since that "
                                 f"job (7 files then, 7 now){advice}")
    assert json.loads((folder / "job.json").read_text()) == job


# -- 7: an entropy model given as --model --------------------------------------------------------------------
def test_an_entropy_model_as_model(tokens: Path, corpus: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """Before: tokenize advised "use --lm-model", an option it does not have, and detokenize
    re-wrapped the error as a plain ModelLoadError."""
    out = tmp_path / "out"
    assert _cli("-q", "tokenize", str(corpus), "--out", str(out), "-m", str(LM_FILE), "--device", "cpu") == 1
    assert capsys.readouterr().err.splitlines() == [
        f"opencodec: error: {LM_FILE}: this is an entropy model, not a codec: opencodec tokenize takes a codec: pass a "
        "codec's name or weights file to --model"]
    assert not out.exists()
    with pytest.raises(EntropyModelAsCodecError) as caught:
        detokenize(tokens, tmp_path / "audio", model=str(LM_FILE))
    assert str(caught.value) == (f"{LM_FILE}: this is an entropy model, not a codec: detokenize takes the codec "
                                 "that wrote the shards (model 'tiny'): pass its name or weights file with "
                                 "--model (model= in Python)")
    assert _cli("-q", "detokenize", str(tokens), "--out", str(tmp_path / "audio"), "-m", str(LM_FILE)) == 1
    assert capsys.readouterr().err.strip() == f"opencodec: error: {caught.value}"
    assert not (tmp_path / "audio").exists()
