"""Walkthrough of the corpus builder as a demanding user: the speech split must hold for the
recordings themselves, not only for the speaker names the source table gives them."""
from __future__ import annotations

import dataclasses
import re
import shutil
from pathlib import Path

import pytest
import soundfile as sf

from opencodec.data import corpus
from opencodec.data.corpus import Source, _rx
from opencodec.data.split import SplitError
from corpus_helpers import fake_corpus, tone  # tests/ is on sys.path (conftest.py)


@pytest.mark.parametrize("copy_to", ["un/unseen/u1/extra.wav", "pr/probe/p0/extra.wav"])
def test_training_drops_its_copy_of_an_eval_or_probe_recording(tmp_path: Path, copy_to: str) -> None:
    # The same recording under another package and speaker name: check_split's speaker keys
    # differ, yet the evaluation (or the probe that picks the model) would hold training audio.
    sources, preset, roots = fake_corpus(tmp_path / "src")
    shutil.copyfile(tmp_path / "src/tr/train/s1/c2.wav", tmp_path / "src" / copy_to)
    out = tmp_path / "out"
    summary = corpus.build("fake", out, sample_rate=16000, seed=1, workers=1, sources=sources,
                           presets={"fake": preset}, roots=roots)
    man = out / "fake_16k" / "manifests"
    train = corpus.read_jsonl(man / "train.jsonl") + corpus.read_jsonl(man / "valid.jsonl")
    assert sorted(r["original"] for r in train) == sorted(
        f"train/s{s}/c{i}.wav" for s in range(3) for i in range(4) if (s, i) != (1, 2))
    assert any(n.startswith("tr: 1 inputs dropped, the same recording as a probe or evaluation input "
                            "(train/s1/c2.wav") for n in summary["notes"])
    # the probe / evaluation side keeps the file (its item ids do not change)
    assert (out / "audio_16000" / copy_to.replace(".wav", ".flac")).exists()


def test_build_refuses_one_recording_in_probe_and_eval(tmp_path: Path) -> None:
    sources, preset, roots = fake_corpus(tmp_path / "src")
    shutil.copyfile(tmp_path / "src/pr/probe/p0/c1.wav", tmp_path / "src/un/unseen/u0/extra.wav")
    with pytest.raises(SplitError, match=r"unseen/u0/extra\.wav of un \(eval:speech_unseen\) and "
                                         r"probe/p0/c1\.wav of pr \(probe\) are the same recording"):
        corpus.build("fake", tmp_path / "out", sample_rate=16000, seed=1, workers=1, sources=sources,
                     presets={"fake": preset}, roots=roots)
    assert not list((tmp_path / "out").rglob("*.jsonl"))  # refused before any manifest


def test_build_without_cross_role_copies_still_succeeds(tmp_path: Path) -> None:
    # copies inside one training source stay the within-source duplicate drop (not an error)
    sources, preset, roots = fake_corpus(tmp_path / "src")
    shutil.copyfile(tmp_path / "src/tr/train/s1/c2.wav", tmp_path / "src/tr/train/s2/copy.wav")
    summary = corpus.build("fake", tmp_path / "out", sample_rate=16000, seed=1, workers=1,
                           sources=sources, presets={"fake": preset}, roots=roots)
    assert summary["speakers"] == {"eval:speech_unseen": 2, "probe": 1, "train": 3}
    assert any("1 inputs dropped, byte-identical" in n for n in summary["notes"])


def test_summary_table_keeps_the_unseen_split_and_category_apart() -> None:
    # wide/full print eval_noisy_speech_unseen (24 characters) / noisy_speech_unseen (19)
    summary = {"preset": "wide", "sample_rate": 24000, "seconds_total": 1.0, "skipped_files": 0,
               "table": {"eval_noisy_speech_unseen": {"noisy_speech_unseen": {"files": 68, "hours": 0.14}},
                         "train": {"speech": {"files": 5, "hours": 1.5}}}}
    lines = corpus.format_summary(summary).splitlines()
    assert lines[1].split() == ["split", "category", "files", "hours"]
    assert lines[2].split() == ["eval_noisy_speech_unseen", "noisy_speech_unseen", "68", "0.140"]
    assert lines[3].split() == ["train", "speech", "5", "1.500"]
    # the columns line up under their headers
    col = lines[1].index("category")
    assert lines[2][col:].startswith("noisy_speech_unseen ") and lines[3][col:].startswith("speech ")


def test_rebuild_redoes_damaged_outputs(tmp_path: Path) -> None:
    # A partial copy of the corpus folder, or a file overwritten by something else: the
    # rerun that resumes a build redoes it (as it redoes a deleted one) instead of ending in
    # soundfile's traceback "Format not recognised".
    sources, preset, roots = fake_corpus(tmp_path / "src")
    out = tmp_path / "out"
    kw = dict(sample_rate=16000, seed=1, workers=1, sources=sources, presets={"fake": preset}, roots=roots)
    corpus.build("fake", out, **kw)
    man = out / "fake_16k" / "manifests"
    before = {p: p.read_bytes() for p in sorted(out.rglob("*.flac"))}
    item = man / corpus.read_jsonl(man / "eval_speech_unseen.jsonl")[0]["path"]
    noisy = man / corpus.read_jsonl(man / "eval_noisy_speech_unseen.jsonl")[0]["path"]
    clip = out / "audio_16000/tr/train/s0/c1.flac"
    for p in (item, noisy, clip):
        assert p.resolve() in {q.resolve() for q in before}
        p.write_bytes(b"not a flac file")
    manifests = {p.name: p.read_bytes() for p in man.glob("*.jsonl")}
    corpus.build("fake", out, **kw)
    assert {p: p.read_bytes() for p in sorted(out.rglob("*.flac"))} == before
    assert {p.name: p.read_bytes() for p in man.glob("*.jsonl")} == manifests


def test_second_build_into_one_out_is_refused_while_the_first_runs(tmp_path: Path, capsys) -> None:
    # Two builds in one --out shared debs/.partial/<pkg> and extract/<pkg>.tmp: the second
    # deleted the first's download and one of them ended in a StopIteration traceback.
    import fcntl
    sources, preset, roots = fake_corpus(tmp_path / "src")
    out = tmp_path / "out"
    out.mkdir()
    kw = dict(sample_rate=16000, seed=1, workers=1, sources=sources, presets={"fake": preset}, roots=roots)
    with open(out / ".build.lock", "a") as held:  # what a running build holds
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(corpus.BuildInProgress, match=r"another build is running in --out .*out"):
            corpus.build("fake", out, **kw)
        assert not list(out.rglob("*.flac")) and not list(out.rglob("*.jsonl"))
        assert corpus.main(["build", "--preset", "tiny", "--out", str(out)]) == 1
        err = capsys.readouterr().err.strip().splitlines()
        assert err[-1].startswith("python -m opencodec.data.corpus: error: another build is running in --out")
        assert not any("Traceback" in line for line in err)
    corpus.build("fake", out, **kw)  # the lock goes with the build that held it
    corpus.build("fake", out, **kw)  # ... and a finished build leaves none behind


@pytest.mark.parametrize("kw, message", [
    ({"segment_seconds": 0.0}, "segment_seconds must be finite and at least one sample"),
    ({"segment_seconds": -1.0}, "segment_seconds must be finite and at least one sample"),
    ({"segment_seconds": float("nan")}, "segment_seconds must be finite"),
    ({"segment_seconds": 1e-9}, "at least one sample"),
    ({"sample_rate": 0}, "sample_rate must be a whole number of Hz >= 1, got 0"),
    ({"channels": 0}, "channels must be a whole number >= 1, got 0"),
    ({"epoch_size": -3}, "epoch_size must be a whole number >= 0, got -3"),
])
def test_audio_dataset_names_a_bad_segment_argument(tmp_path: Path, kw: dict, message: str) -> None:
    # Before: segment_seconds=0 or sample_rate=0 marked every (good) file unreadable and ended
    # in "no readable audio file left"; -1 s gave a [1, 5889] example, channels=0 a [0, T] one.
    from opencodec.data import AudioDataset
    wav = tmp_path / "a.wav"
    tone(wav, 1.0, 440.0)
    rows = [{"path": str(wav), "duration": 1.0, "sample_rate": 16000, "channels": 1,
             "category": "speech", "source": "t"}]
    args = dict(segment_seconds=0.25, sample_rate=16000, channels=1, epoch_size=2, augment=False)
    assert AudioDataset(rows, **args)[0].shape == (1, 4000)
    assert AudioDataset(rows, **{**args, "sample_rate": 16000.0})[0].shape == (1, 4000)
    with pytest.raises(ValueError, match=re.escape(message)):
        AudioDataset(rows, **{**args, **kw})


def test_damaged_summary_and_manifest_are_named(tmp_path: Path, capsys) -> None:
    # Before: "error: Expecting property name enclosed in double quotes: line 2 column 1"
    # and "error: Invalid control character at: line 1 column 6", naming no file.
    work = tmp_path / "tiny_24k"
    work.mkdir()
    (work / "summary.json").write_text("{\n")
    assert corpus.main(["summary", "--preset", "tiny", "--out", str(tmp_path)]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"python -m opencodec.data.corpus: error: {work / 'summary.json'} is not a JSON object")
    assert "\n" not in err
    sources, preset, roots = fake_corpus(tmp_path / "src")
    out = tmp_path / "out"
    kw = dict(sample_rate=16000, seed=1, workers=1, sources=sources, presets={"fake": preset}, roots=roots)
    corpus.build("fake", out, **kw)
    train = out / "fake_16k" / "manifests" / "train.jsonl"
    n = len(train.read_text().splitlines())
    with open(train, "a") as fh:
        fh.write('{"path": "cut off\n')
    with pytest.raises(ValueError, match=re.escape(f"{train}:{n + 1}: not a JSON object")):
        corpus.build("fake", out, categories=["speech"], **kw)
    corpus.build("fake", out, **kw)  # a build of every category rewrites it
    assert len(corpus.read_jsonl(train)) == n


def test_huge_worker_count_is_refused_before_anything_runs(tmp_path: Path, capsys) -> None:
    # --workers 100000 forked 100000 conversion processes (a fork pool starts them all).
    with pytest.raises(ValueError, match=r"^workers must be at most 256, got 100000 \(each is a conversion"):
        corpus.check_build_args(24000, 1, 100000)
    corpus.check_build_args(24000, 1, 256)
    assert corpus.main(["build", "--out", str(tmp_path / "d"), "--workers", "100000"]) == 1
    assert capsys.readouterr().err.strip().endswith("CPU cores)")
    assert not (tmp_path / "d").exists()


def test_conversion_pool_has_no_more_processes_than_chunks(tmp_path: Path, monkeypatch) -> None:
    from opencodec.data import convert
    from opencodec.data.source_files import SourceFile
    sizes = []

    class Pool(convert.ProcessPoolExecutor):  # type: ignore[misc, valid-type]
        def __init__(self, n: int, **kw: object) -> None:
            sizes.append(n)
            super().__init__(n, **kw)

    monkeypatch.setattr(convert, "ProcessPoolExecutor", Pool)
    files = []
    for i in range(9):  # 9 pending files: 2 chunks of 8
        tone(tmp_path / f"in/{i}.wav", 0.5, 300.0 + 10 * i)
        files.append(SourceFile("s", f"{i}.wav", "g", str(tmp_path / f"in/{i}.wav"),
                                str(tmp_path / f"out/{i}.flac"), 0.5))
    res = convert.convert_all(files, 16000, workers=200)
    assert sizes == [2] and all(v is None for v in res.values()) and len(res) == 9


@pytest.mark.parametrize("kw, message", [
    ({"channels": 0}, "channels must be a whole number >= 1, got 0"),
    ({"sample_rate": 0}, "sample_rate must be a whole number of Hz >= 1, got 0"),
    ({"sample_rate": -5}, "sample_rate must be a whole number of Hz >= 1, got -5"),
])
def test_eval_dataset_names_a_bad_rate_or_channel_count(tmp_path: Path, kw: dict, message: str) -> None:
    # Before: channels=0 gave items of shape [0, T]; a rate under 1 failed at the first item
    # with soxr's "Sample rate should be over 0".
    from opencodec.data import EvalDataset
    wav = tmp_path / "a.wav"
    tone(wav, 0.5, 440.0)
    rows = [{"path": str(wav), "duration": 0.5, "sample_rate": 16000, "channels": 1,
             "category": "clean_speech", "source": "t"}]
    assert EvalDataset(rows, sample_rate=8000, channels=2)[0]["audio"].shape == (2, 4000)
    with pytest.raises(ValueError, match=re.escape(message)):
        EvalDataset(rows, **kw)


def test_summary_into_a_closed_pipe_exits_quietly(tmp_path: Path) -> None:
    # Before: `summary | head -2` printed "error: [Errno 32] Broken pipe" (status 1).
    import json

    from codec_helpers import first_line_into_a_closed_pipe

    work = tmp_path / "tiny_24k"
    work.mkdir()
    notes = [f"note {i}: " + "x" * 200 for i in range(2000)]  # past a pipe's buffer
    (work / "summary.json").write_text(json.dumps({
        "preset": "tiny", "sample_rate": 24000, "seconds_total": 1.0, "skipped_files": 0,
        "table": {"train": {"speech": {"files": 1, "hours": 0.001}}}, "notes": notes}))
    first, err, status = first_line_into_a_closed_pipe(
        ["-m", "opencodec.data.corpus", "summary", "--preset", "tiny", "--out", str(tmp_path)])
    assert status == 141
    assert first.startswith(b"preset tiny") and err == ""


# -- the review of the walk's fixes ---------------------------------------------------------------

def test_a_training_selector_overlapping_an_eval_source_is_still_refused(tmp_path: Path) -> None:
    # One file selected by a training and an evaluation source is not a "copy": dropping it
    # from both hid the overlap from check_split and emptied the evaluation of speaker u0.
    sources, preset, roots = fake_corpus(tmp_path / "src")
    sources["tr2"] = Source("tr2", "un", "speech", "train", _rx(r"unseen/(u0)/", lambda m: m.group(1)))
    preset = dataclasses.replace(preset, sources={**preset.sources, "tr2": None})
    with pytest.raises(SplitError, match=r"unseen/u0/c\d\.wav of tr2 \(train\) is also unseen/u0/c\d\.wav of un "
                                         r"\(eval:speech_unseen\)"):
        corpus.build("fake", tmp_path / "out", sample_rate=16000, seed=1, workers=1, sources=sources,
                     presets={"fake": preset}, roots=roots)


def test_empty_inputs_in_two_roles_are_not_one_recording(tmp_path: Path) -> None:
    from opencodec.data.split import check_recordings

    for name in ("t.wav", "p.wav", "e.wav"):
        (tmp_path / name).write_bytes(b"")
    files = [("t", "train", str(tmp_path / "t.wav")), ("p", "probe", str(tmp_path / "p.wav")),
             ("e", "eval:clean_speech", str(tmp_path / "e.wav"))]
    assert check_recordings(files) == set()


def test_rebuild_redoes_a_converted_file_cut_short(tmp_path: Path) -> None:
    # A partial copy keeps a good header: the header alone passed for a whole file.
    from opencodec.data.convert import readable

    sources, preset, roots = fake_corpus(tmp_path / "src")
    out = tmp_path / "out"
    kw = dict(sample_rate=16000, seed=1, workers=1, sources=sources, presets={"fake": preset}, roots=roots)
    corpus.build("fake", out, **kw)
    clip = out / "audio_16000/tr/train/s0/c1.flac"
    whole = clip.read_bytes()
    clip.write_bytes(whole[: len(whole) // 3])
    assert sf.info(str(clip)).frames > 0 and not readable(str(clip))
    corpus.build("fake", out, **kw)
    assert clip.read_bytes() == whole


def test_a_file_system_without_locks_builds_unlocked_with_a_warning(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                   caplog: pytest.LogCaptureFixture) -> None:
    import errno
    import fcntl

    def no_locks(fd: object, op: int) -> None:
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(fcntl, "flock", no_locks)
    sources, preset, roots = fake_corpus(tmp_path / "src")
    with caplog.at_level("WARNING", logger="opencodec.data.corpus"):
        corpus.build("fake", tmp_path / "out", sample_rate=16000, seed=1, workers=1, sources=sources,
                     presets={"fake": preset}, roots=roots)
    assert any("cannot lock" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("content", [b"[]", b"3", b"null", b"\xff\xfe{}"])
def test_a_summary_that_is_no_json_object_is_one_line(tmp_path: Path, capsys, content: bytes) -> None:
    work = tmp_path / "tiny_24k"
    work.mkdir()
    (work / "summary.json").write_bytes(content)
    assert corpus.main(["summary", "--preset", "tiny", "--out", str(tmp_path)]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"python -m opencodec.data.corpus: error: {work / 'summary.json'} is not a JSON object")
    assert "\n" not in err


@pytest.mark.parametrize("content, message", [
    (b'{"path": "a"}\n3\n', ":2: not a JSON object (a int)"),
    (b'{"path": "a"}\n{"path": "\xff"}\n', " is not UTF-8 text (a byte 0xff)"),
])
def test_read_jsonl_names_the_file_of_a_row_that_is_no_object(tmp_path: Path, content: bytes, message: str) -> None:
    manifest = tmp_path / "train.jsonl"
    manifest.write_bytes(content)
    with pytest.raises(ValueError, match=re.escape(f"{manifest}{message}")):
        corpus.read_jsonl(manifest)


def test_one_file_selected_for_training_and_held_out_is_refused_whatever_its_speaker_keys(tmp_path: Path) -> None:
    # clean_speech shares packages with training by design (DATA.md), so check_split refuses an
    # overlap there only when both sources give the file the same speaker key
    from opencodec.data.split import check_recordings

    tone(tmp_path / "pkg" / "fr" / "a.wav", 1.0, 440.0)
    path = str(tmp_path / "pkg" / "fr" / "a.wav")
    with pytest.raises(SplitError, match=r"fr/a\.wav of fr_train \(train\) is also fr/a\.wav of fr_voice1 "
                                         r"\(eval:clean_speech\)"):
        check_recordings([("fr/a.wav of fr_train", "train", path), ("fr/a.wav of fr_voice1", "eval:clean_speech", path)])
