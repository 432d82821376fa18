"""The data pipeline (``opencodec corpus build`` and ``opencodec.data``) on small synthetic
trees and fake sources, no network: preset folders per sample rate, duplicate and grouped
inputs, merged manifest rows, speaker keys, noisy items, the probe script, one-line CLI
errors, the seed check, build help; downmixing, clip padding and source grouping rules."""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.util
import os
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from opencodec.data import corpus
from opencodec.data.corpus import Preset, Source, _rx
from opencodec.data.eval_sets import EVAL_SNRS_DB, noisy_item
from opencodec.data.manifests import entry, merge_rows, preset_dir_name
from opencodec.data.probe import build_probe, has_source_probe
from opencodec.data.source_files import SourceFile, drop_duplicates, list_source_files, output_names
from opencodec.data.sources import SOURCES, ktuberling_speaker
from opencodec.data.split import SpeakerUse, SplitError, check_split, role_of


REPO = Path(__file__).resolve().parents[1]


def _tone(path: Path, seconds: float, freq: float, sr: int = 16000, channels: int = 1) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    t = np.arange(int(round(seconds * sr))) / sr
    x = 0.1 * np.sin(2 * np.pi * freq * t) * (1 + 0.3 * np.sin(2 * np.pi * 3 * t))
    sf.write(str(path), np.repeat(x[:, None], channels, 1).astype(np.float32), sr)
    return path


def _tree(root: Path) -> None:
    """One package ``pkg``: training speech (3 speakers), music, general, noise, eval speech
    and eval noise."""
    for spk in range(3):
        for i in range(3):
            _tone(root / f"speech/s{spk}/c{i}.wav", 1.0 + 0.2 * i, 200 + 40 * spk + 7 * i)
    _tone(root / "music/m0.wav", 4.0, 330)
    _tone(root / "music/m1.wav", 3.0, 440)
    for i in range(3):
        _tone(root / f"general/g{i}.wav", 0.8, 900 + 50 * i)
    _tone(root / "noise/train_rain.wav", 3.0, 1500)
    _tone(root / "evalspeech/e0/c0.wav", 6.0, 260)
    _tone(root / "evalnoise/wind.wav", 20.0, 1700)


def _sources() -> dict[str, Source]:
    return {s.name: s for s in [
        Source("sp", "pkg", "speech", "train", _rx(r"^speech/([^/]+)/", lambda m: m.group(1))),
        Source("mu", "pkg", "music", "train", _rx(r"^music/([^/]+)\.wav$", lambda m: m.group(1))),
        Source("ge", "pkg", "general", "train", _rx(r"^general/([^/]+)\.wav$", lambda m: m.group(1))),
        Source("nz", "pkg", "noise", "train_noise", _rx(r"^noise/([^/]+)\.wav$", lambda m: m.group(1))),
        Source("ev", "pkg", "speech", "eval", _rx(r"^evalspeech/([^/]+)/", lambda m: m.group(1)),
               "clean_speech"),
        Source("en", "pkg", "noise", "eval_noise", _rx(r"^evalnoise/([^/]+)\.wav$", lambda m: m.group(1))),
    ]}


def _preset() -> Preset:
    return Preset({n: None for n in _sources()}, {"clean_speech": None, "noisy_speech": None},
                  valid_fraction=0.3)


def _build(out: Path, root: Path, preset_name: str = "fake", **kw: object) -> dict:
    args = dict(sample_rate=16000, seed=1, workers=1, sources=_sources(),
                presets={preset_name: _preset()}, roots={"pkg": root})
    args.update(kw)
    return corpus.build(preset_name, out, **args)  # type: ignore[arg-type]


def _manifest_texts(work: Path) -> dict[str, str]:
    return {p.name: p.read_text() for p in sorted((work / "manifests").glob("*.jsonl"))}


def test_preset_folder_is_unique_per_sample_rate(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert preset_dir_name("small", 24000) == "small_24k"  # existing paths stay valid
    assert preset_dir_name("full", 48000) == "full_48k"
    assert preset_dir_name("tiny", 24500) == "tiny_24500"
    assert len({preset_dir_name("x", r) for r in (22000, 22050, 44000, 44100, 24000, 24500)}) == 6
    _tree(tmp_path / "pkg")
    out = tmp_path / "out"
    _build(out, tmp_path / "pkg", preset_name="tiny", sample_rate=16000)
    before = _manifest_texts(out / "tiny_16k")
    _build(out, tmp_path / "pkg", preset_name="tiny", sample_rate=16500)
    assert _manifest_texts(out / "tiny_16k") == before  # not overwritten by the 16500 Hz build
    assert "audio_16500" in (out / "tiny_16500" / "manifests" / "train.jsonl").read_text()
    capsys.readouterr()
    assert corpus.main(["summary", "--preset", "tiny", "--out", str(out), "--sample-rate", "16000"]) == 0
    assert "preset tiny @ 16000 Hz" in capsys.readouterr().out
    with pytest.raises(ValueError, match="1000..768000"):
        _build(tmp_path / "out100", tmp_path / "pkg", sample_rate=100)
    with pytest.raises(SystemExit) as exc:
        corpus.main(["build", "--sample-rate", "100", "--out", str(tmp_path / "cli")])
    assert exc.value.code == 2 and "between 1000 and 768000" in capsys.readouterr().err
    assert not (tmp_path / "cli").exists()


def _fake_file(path: Path, rel: str, group: str) -> SourceFile:
    return SourceFile("s", rel, group, str(path), str(path) + ".flac", 1.0)


def test_byte_identical_inputs_keep_only_the_first(tmp_path: Path) -> None:
    a = tmp_path / "sr" / "apple.ogg"
    b = tmp_path / "sr@latin" / "apple.ogg"
    c = tmp_path / "de" / "apple.ogg"
    for p, data in ((a, b"same bytes"), (b, b"same bytes"), (c, b"same size!")):  # c: same size, other bytes
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
    files = [_fake_file(c, "de/apple.ogg", "de"), _fake_file(a, "sr/apple.ogg", "sr"),
             _fake_file(b, "sr@latin/apple.ogg", "sr")]
    kept, dropped = drop_duplicates(files)
    assert [f.rel for f in kept] == ["de/apple.ogg", "sr/apple.ogg"]
    assert [f.rel for f in dropped] == ["sr@latin/apple.ogg"]


def test_ktuberling_serbian_variants_are_one_group_and_never_split(tmp_path: Path) -> None:
    sel = SOURCES["ktuberling_speech"].select
    k = "usr/share/ktuberling/sounds/{}/apple.ogg"
    assert {sel(k.format(x)) for x in ("sr", "sr@latin", "sr@ijekavian", "sr@ijekavianlatin")} == {"sr"}
    assert sel(k.format("de")) == "de" and sel(k.format("ru")) is None
    # a fake ktuberling tree: the four Serbian folders hold the same files (as in Debian)
    root = tmp_path / "kt"
    base = root / "usr/share/ktuberling/sounds"
    for n, lang in enumerate(("de", "en", "fr", "nl", "sr")):
        for i in range(3):
            _tone(base / lang / f"w{i}.wav", 1.0 + 0.1 * i, 200 + 30 * n + 5 * i)
    for variant in ("sr@latin", "sr@ijekavian", "sr@ijekavianlatin"):
        (base / variant).mkdir()
        for f in (base / "sr").iterdir():
            (base / variant / f.name).write_bytes(f.read_bytes())
    for i in range(3):  # evaluation files keep their copies (item ids must not change)
        _tone(base / "ru" / f"w{i}.wav", 2.5, 500 + 9 * i)
    (base / "ru" / "copy.wav").write_bytes((base / "ru" / "w0.wav").read_bytes())
    preset = Preset({"ktuberling_speech": None, "ktuberling_eval": None}, {"clean_speech": None},
                    valid_fraction=0.5)
    summary = corpus.build("kt", tmp_path / "out", sample_rate=16000, seed=3, workers=1,
                           presets={"kt": preset}, roots={"ktuberling-data": root})
    eval_parts = {Path(p).name for r in corpus.read_jsonl(tmp_path / "out" / "kt_16k" / "manifests" /
                                                          "eval_clean_speech.jsonl") for p, _, _ in r["parts"]}
    assert eval_parts == {"w0.flac", "w1.flac", "w2.flac", "copy.flac"}
    man = tmp_path / "out" / "kt_16k" / "manifests"
    train, valid = corpus.read_jsonl(man / "train.jsonl"), corpus.read_jsonl(man / "valid.jsonl")
    assert valid and train
    digest = {r["original"]: hashlib.sha1((root / r["original"]).read_bytes()).hexdigest()
              for r in train + valid}
    assert not {digest[r["original"]] for r in train} & {digest[r["original"]] for r in valid}
    assert sorted(r["original"].split("/")[-2] for r in train + valid if "/sr" in r["original"]) \
        == ["sr", "sr", "sr"]  # the copies are dropped, one Serbian folder is kept
    assert [n for n in summary["notes"] if "byte-identical" in n] == [
        "ktuberling_speech: 9 inputs dropped, byte-identical to another input"]


def test_inputs_differing_only_by_extension_get_their_own_outputs(tmp_path: Path) -> None:
    assert output_names(["s/mace.ogg", "s/mace.wav", "s/axe.ogg"]) == {
        "s/mace.ogg": "s/mace.ogg.flac", "s/mace.wav": "s/mace.wav.flac", "s/axe.ogg": "s/axe.flac"}
    with pytest.raises(ValueError, match="share one output"):
        output_names(["a.wav", "a.ogg", "a.ogg.wav"])  # a.ogg.flac twice: refused, never merged
    root = tmp_path / "pkg"
    _tone(root / "sounds/mace.wav", 0.44, 300)
    _tone(root / "sounds/mace.flac", 0.63, 500, channels=2)
    _tone(root / "sounds/axe.wav", 0.5, 700)
    src = Source("wg", "pkg", "general", "train", _rx(r"sounds/([^/]+)$", lambda m: "all"))
    files = list_source_files(src, root, tmp_path / "audio")
    assert [Path(f.out_path).name for f in files] == ["axe.flac", "mace.flac.flac", "mace.wav.flac"]
    corpus.build("g", tmp_path / "out", sample_rate=16000, seed=0, workers=1, sources={"wg": src},
                 presets={"g": Preset({"wg": None}, {}, valid_fraction=0.0)}, roots={"pkg": root})
    rows = corpus.read_jsonl(tmp_path / "out" / "g_16k" / "manifests" / "train.jsonl")
    by_original = {r["original"]: r for r in rows}
    assert len({r["path"] for r in rows}) == 3
    assert abs(by_original["sounds/mace.wav"]["duration"] - 0.44) < 0.01
    assert abs(by_original["sounds/mace.flac"]["duration"] - 0.63) < 0.01
    assert by_original["sounds/mace.flac"]["channels"] == 2 and by_original["sounds/mace.wav"]["channels"] == 1


def test_merge_rows_keeps_other_sources_in_preset_order() -> None:
    old = [{"source": "a", "i": 1}, {"source": "b", "i": 2}, {"source": "c", "i": 3}]
    new = [{"source": "b", "i": 9}]
    assert [r["i"] for r in merge_rows(old, new, {"b"}, ["a", "b", "c"])] == [1, 9, 3]
    assert merge_rows(old, [], {"b"}, ["a", "b", "c"]) == [old[0], old[2]]


def test_categories_build_keeps_the_other_categories_rows(tmp_path: Path) -> None:
    _tree(tmp_path / "pkg")
    out = tmp_path / "out"
    full = _build(out, tmp_path / "pkg")
    work = out / "fake_16k"
    whole = _manifest_texts(work)
    assert all(whole[f"{n}.jsonl"] for n in ("train", "valid", "train_noise", "eval_clean_speech",
                                             "eval_noisy_speech"))
    for cats in (["speech"], ["music"], ["noise"], ["general", "music"]):
        summary = _build(out, tmp_path / "pkg", categories=cats)
        assert _manifest_texts(work) == whole, cats  # same as the build of every category
        assert summary["table"] == full["table"] and summary["speakers"] == full["speakers"]
    with pytest.raises(ValueError, match="built with seed 1"):
        _build(out, tmp_path / "pkg", categories=["speech"], seed=2)
    assert _manifest_texts(work) == whole


def _uses(srcs: list[Source], files: list[str]) -> list[SpeakerUse]:
    return [SpeakerUse(s.name, s.package, s.speaker(g), role_of(s.role, s.eval_category))
            for s in srcs for r in files if (g := s.select(r)) is not None]


def test_speaker_key_does_not_depend_on_the_source_object() -> None:
    tux_fr_in_training = Source("tuxpaint_speech", "tuxpaint-stamps-default", "speech", "train",
                                _rx(r"_desc_(ru|fr)\.ogg$", lambda m: m.group(1)))
    tux = [f"usr/share/tuxpaint/stamps/a/cat_desc_{x}.ogg" for x in ("ru", "fr")]
    with pytest.raises(SplitError, match=r"speaker tuxpaint-stamps-default:fr is in"):
        check_split(_uses([tux_fr_in_training, SOURCES["tuxpaint_fr"]], tux))
    kt_eval_latin = dataclasses.replace(
        SOURCES["ktuberling_eval"], select=_rx(r"ktuberling/sounds/(ru|sr@latin)/[^/]+$", lambda m: m.group(1)))
    kt = [f"usr/share/ktuberling/sounds/{x}/apple.ogg" for x in ("sr", "sr@latin", "ru")]
    train_sr = dataclasses.replace(SOURCES["ktuberling_speech"],
                                   select=_rx(r"ktuberling/sounds/(sr)/[^/]+$", lambda m: m.group(1)))
    with pytest.raises(SplitError, match=r"speaker ktuberling-data:sr is in"):
        check_split(_uses([train_sr, kt_eval_latin], kt))
    assert SOURCES["ktuberling_eval"].speaker("sr@latin") == ktuberling_speaker("sr@latin") == "sr"


def _snr(seed: int, item_id: str) -> float:
    h = int(hashlib.sha1(f"{seed}:noisy:{item_id}".encode()).hexdigest(), 16)
    return EVAL_SNRS_DB[h % len(EVAL_SNRS_DB)]


def test_noisy_item_from_another_seed_is_not_reused(tmp_path: Path) -> None:
    audio = tmp_path / "audio_16000"
    man = tmp_path / "preset" / "manifests"
    man.mkdir(parents=True)
    clean = _tone(tmp_path / "eval_16000/clean_speech/abc.flac", 6.0, 300)
    noise = [(str(_tone(audio / "en/wind.flac", 30.0, 1700)), 30.0)]
    e = entry(str(clean), man, "clean_speech", "ev", item_id="abc")
    other = next(s for s in range(2, 500) if _snr(s, "abc") == _snr(1, "abc"))  # same SNR, other offset

    def mix(eval_dir: Path, seed: int) -> tuple[dict, np.ndarray]:
        row = noisy_item(e, noise, "noisy_speech", man, audio, eval_dir, 16000, seed)
        return row, sf.read(os.path.normpath(man / row["path"]))[0]

    mix(tmp_path / "shared", 1)
    row_b, reused = mix(tmp_path / "shared", other)
    row_fresh, fresh = mix(tmp_path / "fresh", other)
    assert row_b["item_id"] == row_fresh["item_id"] == f"abc_snr{int(_snr(1, 'abc'))}"  # ids kept
    assert row_b["noise_offset"] == row_fresh["noise_offset"]
    np.testing.assert_array_equal(reused, fresh)
    assert len(list((tmp_path / "shared" / "noisy_speech").glob("*.flac"))) == 2


def _script() -> object:
    spec = importlib.util.spec_from_file_location("valid_probe_set", REPO / "scripts" / "valid_probe_set.py")
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


def _preset_dir(tmp_path: Path) -> Path:
    preset = tmp_path / "wide_24k"
    audio = tmp_path / "audio"
    rows = [entry(str(_tone(audio / f"v{i}.flac", 4.0, 200 + 20 * i)), preset / "manifests", "speech", "sp",
                  group=f"sp/g{i}", original=f"v{i}.wav") for i in range(3)]
    rows.append(entry(str(_tone(audio / "song.flac", 20.0, 440, channels=2)), preset / "manifests", "music",
                      "mu", group="mu/song", original="song.wav"))
    corpus.write_jsonl(preset / "manifests" / "valid.jsonl", rows)
    return preset


def test_probe_script_refuses_to_replace_a_source_probe(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    preset = _preset_dir(tmp_path)
    built = [{"path": "../../eval/p.flac", "item_id": "0123456789ab", "source": "hedgewars_probe",
              "category": "clean_speech", "duration": 6.0}]
    corpus.write_jsonl(preset / "probe" / "eval_clean_speech.jsonl", built)
    assert has_source_probe(preset)
    script = _script()
    assert script.main([str(preset)]) == 1  # type: ignore[attr-defined]
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "error:" in err and "--force" in err
    assert corpus.read_jsonl(preset / "probe" / "eval_clean_speech.jsonl") == built
    assert script.main([str(preset), "--force"]) == 0  # type: ignore[attr-defined]
    assert {r["source"] for r in corpus.read_jsonl(preset / "probe" / "eval_clean_speech.jsonl")} == {"sp"}
    assert not has_source_probe(preset)
    assert script.main([str(preset)]) == 0  # type: ignore[attr-defined]  # its own probe: rebuilt freely
    assert script.main([str(tmp_path / "nothing")]) == 1  # type: ignore[attr-defined]
    assert "does not exist" in capsys.readouterr().err


def test_probe_audio_is_written_once_and_atomically(tmp_path: Path) -> None:
    preset = _preset_dir(tmp_path)
    build_probe(preset)
    music = preset / "probe_audio" / "music_0.flac"
    first = music.stat().st_mtime_ns
    data, sr = sf.read(str(music), dtype="int16")
    assert sr == 16000 and data.shape == (8 * 16000, 2)
    build_probe(preset)
    assert music.stat().st_mtime_ns == first  # unchanged: not rewritten
    sf.write(str(music), np.zeros((10, 2), np.int16), sr)  # damaged: rewritten
    build_probe(preset)
    np.testing.assert_array_equal(sf.read(str(music), dtype="int16")[0], data)
    assert not list((preset / "probe_audio").glob("*.tmp*"))


def _one_line_error(capsys: pytest.CaptureFixture, *parts: str) -> None:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "Traceback" not in err[0], err
    assert err[0].startswith("python -m opencodec.data.corpus: error: ")
    assert all(p in err[0] for p in parts), err


def test_cli_errors_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture,
                                 monkeypatch: pytest.MonkeyPatch) -> None:
    assert corpus.main(["summary", "--preset", "small", "--out", str(tmp_path / "none")]) == 1
    _one_line_error(capsys, "summary.json does not exist", "build --preset small")
    bin_dir = tmp_path / "bin"  # an apt-get that cannot reach the mirror
    bin_dir.mkdir()
    (bin_dir / "apt-get").write_text("#!/bin/sh\necho 'E: Failed to fetch x' >&2\necho 'E: more' >&2\nexit 100\n")
    (bin_dir / "apt-get").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    assert corpus.main(["build", "--preset", "tiny", "--out", str(tmp_path / "o")]) == 1
    _one_line_error(capsys, "apt-get download alsa-utils failed (100): E: Failed to fetch x E: more")
    (tmp_path / "file").write_text("x")
    assert corpus.main(["build", "--preset", "tiny", "--out", str(tmp_path / "file" / "x")]) == 1
    _one_line_error(capsys)

    def interrupted(*args: object, **kw: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(corpus, "build", interrupted)
    try:
        status = corpus.main(["build", "--out", str(tmp_path / "o")])
    except KeyboardInterrupt:
        pytest.fail("Ctrl-C escaped main() (a traceback, not one line)")
    assert status == 130
    _one_line_error(capsys, "error: interrupted")


def test_seed_is_checked_before_any_download(tmp_path: Path, capsys: pytest.CaptureFixture,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    def no_download(*args: object) -> None:
        raise AssertionError("downloaded before checking the seed")

    monkeypatch.setattr(corpus, "download", no_download)
    with pytest.raises(ValueError, match="seed must be a whole number >= 0"):
        corpus.build("tiny", tmp_path / "o", seed=-1)
    with pytest.raises(SystemExit) as exc:
        corpus.main(["build", "--seed", "-1", "--out", str(tmp_path / "o")])
    assert exc.value.code == 2 and "--seed" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_build_help_gives_defaults(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit):
        corpus.main(["build", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for expected in ("(default tiny)", "(default data)", "(default 24000)", "(default 1234)",
                     f"(default min(4, CPU cores) = {min(4, os.cpu_count() or 1)} here)"):
        assert expected in text, expected


# --------------------------------------------------------------------------- data: dataset and corpus
def test_downmix_is_the_mean_and_short_clips_are_padded_at_the_end() -> None:
    import numpy as np

    from opencodec.data.dataset import convert_channels, fix_length

    stereo = np.array([[1.0, -1.0], [3.0, 1.0]], dtype=np.float32)
    assert convert_channels(stereo, 1).tolist() == [[2.0, 0.0]]
    assert fix_length(np.array([[1.0, 2.0, 3.0]]), 5).tolist() == [[1.0, 2.0, 3.0, 0.0, 0.0]]
    assert fix_length(np.array([[1.0, 2.0, 3.0]]), 2).tolist() == [[1.0, 2.0]]


def test_data_sources_group_stems_and_take_upper_case_extensions() -> None:
    """Sound-effect groups drop a trailing number with its separator (``door-2`` and
    ``door_12b`` are one group, so a valid split never shares a sound); a selector takes
    ``.WAV`` as it takes ``.wav``."""
    from opencodec.data.sources import _rx, _stem_group

    assert [_stem_group(n) for n in ("Door-2.wav", "door_12b.ogg", "door 3.flac", "bang3.wav")] == \
        ["door", "door", "door", "bang"]
    select = _rx(r"^sounds/(\w+)/", lambda m: m.group(1))
    assert select("sounds/doors/a.WAV") == "doors" == select("sounds/doors/a.wav")
    assert select("sounds/doors/a.txt") is None
