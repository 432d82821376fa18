"""Paths of the data pipeline, the audio I/O and the file helpers that no other test runs:
fetching packages (a fake ``apt-get``, a real local ``.deb``), damaged Doom WADs, conversion
failures (NaN, silence, MIDI without fluidsynth) and parallel conversion, the corpus build's
skipped sources and kept probe, source caps and selectors, dataset edge cases (noise
manifests, unreadable files, channel counts), ``audio`` argument checks, ``_files`` helpers and
``file_jobs`` fall-backs. No network: every package is built here."""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import shutil
import struct
import subprocess
import sys
import zipfile
from concurrent.futures import Future
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

import opencodec.data as data_pkg
from opencodec import _files, audio, file_jobs
from opencodec.data import convert, corpus, debian, source_files
from opencodec.data.dataset import AudioDataset, convert_channels
from opencodec.data.presets import Preset
from opencodec.data.source_files import SourceFile, cap_files
from opencodec.data.sources import SOURCES, Source, _rx
from opencodec.errors import AudioIOError, ConfigError, OutputError

MIDI = b"MThd\x00\x00\x00\x06\x00\x00\x00\x01\x00\x60MTrk\x00\x00\x00\x04\x00\xff\x2f\x00"


def _tone(path: Path, seconds: float, freq: float = 440.0, sr: int = 16000) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    t = np.arange(int(round(seconds * sr))) / sr
    sf.write(str(path), (0.1 * np.sin(2 * np.pi * freq * t)).astype(np.float32), sr)
    return path


def _wad(lumps: list[tuple[bytes, bytes]], kind: bytes = b"IWAD") -> bytes:
    """A Doom WAD holding ``lumps`` (name, data), directory at the end."""
    body, directory, pos = b"", b"", 12
    for name, lump in lumps:
        directory += struct.pack("<ii8s", pos, len(lump), name)
        body += lump
        pos += len(lump)
    return kind + struct.pack("<ii", len(lumps), pos) + body + directory


# -- data/__init__: names imported on first use --------------------------------------------------

def test_data_package_names_are_the_modules_objects() -> None:
    from opencodec.data import _jsonl, dataset
    assert data_pkg.AudioDataset is dataset.AudioDataset
    assert data_pkg.load_manifests is dataset.load_manifests
    assert data_pkg.read_jsonl is _jsonl.read_jsonl
    assert data_pkg.build_corpus is corpus.build  # the builder's entry point, under another name
    with pytest.raises(AttributeError, match="has no attribute 'nothing'"):
        data_pkg.nothing  # noqa: B018


# -- data/debian: download and extract without the network ---------------------------------------

def test_download_keeps_a_deb_already_there_and_moves_a_new_one_in(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    debs = tmp_path / "debs"
    calls: list[tuple[list[str], Path]] = []

    def fake_apt(cmd: list[str], cwd: Path | None = None) -> None:
        calls.append((list(cmd), Path(cwd)))
        (Path(cwd) / f"{cmd[-1]}_1.0_all.deb").write_bytes(b"deb " + cmd[-1].encode())

    monkeypatch.setattr(debian, "_run", fake_apt)
    got = debian.download("alsa-utils", debs)
    assert got == debs / "alsa-utils_1.0_all.deb" and got.read_bytes() == b"deb alsa-utils"
    assert calls == [(["apt-get", "download", "alsa-utils"], debs / ".partial" / "alsa-utils")]
    assert not (debs / ".partial" / "alsa-utils").exists()  # the private folder is removed
    (debs / "alsa-utils_1.2_all.deb").write_bytes(b"newer")
    assert debian.download("alsa-utils", debs) == debs / "alsa-utils_1.2_all.deb"  # the last by name
    assert len(calls) == 1  # nothing downloaded again


def test_a_failing_tool_is_one_line_with_its_last_error_lines() -> None:
    script = "import sys; sys.stderr.write('one\\ntwo\\n  three\\nfour\\nfive  \\n'); sys.exit(3)"
    with pytest.raises(debian.ToolError) as exc:
        debian._run([sys.executable, "-c", script])
    assert str(exc.value) == f"{sys.executable} -c {script} failed (3): three four five"
    debian._run([sys.executable, "-c", "pass"])  # success: no error


def _deb(tmp_path: Path, files: dict[str, bytes]) -> Path:
    """A real .deb (``dpkg-deb --build``) holding ``files`` (path -> bytes)."""
    root = tmp_path / "debroot"
    (root / "DEBIAN").mkdir(parents=True)
    (root / "DEBIAN" / "control").write_text("Package: fake-sounds\nVersion: 1.0\nArchitecture: all\n"
                                             "Maintainer: t <t@t>\nDescription: test\n")
    for rel, content in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(content)
    deb = tmp_path / "fake-sounds_1.0_all.deb"
    subprocess.run(["dpkg-deb", "--root-owner-group", "-Zgzip", "--build", str(root), str(deb)],
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return deb


@pytest.mark.skipif(shutil.which("dpkg-deb") is None or shutil.which("dpkg") is None, reason="needs dpkg")
def test_extract_unzips_audio_members_and_unpacks_wad_music_once(tmp_path: Path,
                                                                  caplog: pytest.LogCaptureFixture) -> None:
    zbuf = tmp_path / "a.pk3"
    with zipfile.ZipFile(zbuf, "w") as z:
        z.writestr("sound/rain.ogg", b"OggS-ish")
        z.writestr("maps/level.bsp", b"not audio")
    deb = _deb(tmp_path, {"usr/share/game/base.pk3": zbuf.read_bytes(),
                          "usr/share/game/broken.zip": b"PK but not a zip",
                          "usr/share/game/doom.wad": _wad([(b"D_E1M1", MIDI), (b"PLAYPAL", b"\0" * 8)]),
                          "usr/share/game/copy.wad": _wad([(b"D_E1M1", MIDI)], b"PWAD")})
    out = tmp_path / "extract"
    with caplog.at_level(logging.WARNING, logger="opencodec.data.corpus"):
        root = debian.extract(deb, "fake-sounds", out)
    assert root == out / "fake-sounds" and (out / "fake-sounds.done").read_text() == deb.name + "\n"
    assert (root / "_unzipped/base.pk3/sound/rain.ogg").read_bytes() == b"OggS-ish"
    assert not (root / "_unzipped/base.pk3/maps").exists()  # audio members only
    assert not (root / "usr/share/game/base.pk3").exists()  # the unzipped archive is removed
    assert (root / "usr/share/game/broken.zip").exists() and "cannot unzip" in caplog.text
    # the same music in two WADs is written once (copy.wad sorts first)
    assert sorted(p.relative_to(root).as_posix() for p in (root / "_wadmidi").rglob("*.mid")) == \
        ["_wadmidi/copy/D_E1M1.mid"]
    assert not (out / "fake-sounds.tmp").exists()
    (root / "marker").write_text("kept")
    assert debian.extract(deb, "fake-sounds", out) == root and (root / "marker").exists()  # done: skipped


def test_a_file_that_is_not_a_wad_gives_no_music_quietly(tmp_path: Path,
                                                         caplog: pytest.LogCaptureFixture) -> None:
    (tmp_path / "x.wad").write_bytes(b"PK\x03\x04" + MIDI)
    with caplog.at_level(logging.DEBUG, logger="opencodec.data.corpus"):
        assert debian._unpack_wad_midi(tmp_path / "x.wad", tmp_path / "out", set()) == 0
    assert not (tmp_path / "out").exists() and caplog.text == ""  # not a damaged WAD: no warning


@pytest.mark.parametrize("raw", [
    b"IWAD\x01\x00",  # cut inside the header
    b"IWAD" + struct.pack("<ii", 5, 1000),  # directory past the end
    b"IWAD" + struct.pack("<ii", -1, 12),  # negative lump count
])
def test_a_damaged_wad_is_logged_and_gives_no_music(tmp_path: Path, raw: bytes,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    (tmp_path / "bad.wad").write_bytes(raw)
    with caplog.at_level(logging.WARNING, logger="opencodec.data.corpus"):
        assert debian._unpack_wad_midi(tmp_path / "bad.wad", tmp_path / "out", set()) == 0
    assert f"skip WAD {tmp_path / 'bad.wad'}: damaged" in caplog.text


def test_a_wad_lump_outside_the_file_is_skipped_and_names_stay_in_the_folder(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    good = _wad([(b"D_E1M1", MIDI), (b"D_A/B", MIDI + b"x"), (b"D_BIG", MIDI + b"yy")])
    n, off = struct.unpack("<ii", good[4:12])
    entry = off + 32  # the third lump: grow its size past the end of the file
    pos, size, name = struct.unpack("<ii8s", good[entry:entry + 16])
    bad = good[:entry] + struct.pack("<ii8s", pos, 10 ** 6, name) + good[entry + 16:]
    (tmp_path / "m.wad").write_bytes(bad)
    with caplog.at_level(logging.WARNING, logger="opencodec.data.corpus"):
        assert debian._unpack_wad_midi(tmp_path / "m.wad", tmp_path / "out", set()) == 2
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["D_A_B.mid", "D_E1M1.mid"]
    assert (tmp_path / "out" / "D_A_B.mid").read_bytes() == MIDI + b"x"
    assert "skip lump D_BIG" in caplog.text


# -- data/convert: what a skipped input records, and the parallel path ---------------------------

def test_conversion_records_why_an_input_is_skipped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENCODEC_SF2", raising=False)
    x = np.full((16000, 1), 0.1, np.float32)
    x[5] = np.nan
    sf.write(tmp_path / "nan.wav", x, 16000, subtype="FLOAT")
    sf.write(tmp_path / "zero.wav", np.zeros((16000, 1), np.float32), 16000)
    (tmp_path / "a.mid").write_bytes(MIDI)
    expect = {"nan": "ValueError: non-finite samples", "zero": "ValueError: silent",
              "a": "RuntimeError: MIDI needs fluidsynth and the fluid-soundfont-gm sound font"}
    for stem, reason in expect.items():
        src = next(tmp_path.glob(f"{stem}.*"))
        out = tmp_path / "out" / f"{stem}.flac"
        assert convert.convert_file(str(src), str(out), 16000) == (str(out), reason)
        assert not out.exists() and Path(f"{out}.failed").read_text() == reason + "\n"
        assert convert.convert_file(str(src), str(out), 16000) == (str(out), reason)  # not retried


def _g722(path: Path, seconds: float, freq: float, amp: float) -> Path:
    """A G.722 file (16 kHz mono) of a tone, encoded with PyAV."""
    import av
    n = int(16000 * seconds)
    pcm = (amp * np.sin(2 * np.pi * freq * np.arange(n) / 16000) * 32767).astype(np.int16)
    with av.open(str(path), "w", format="g722") as c:
        stream = c.add_stream("g722", rate=16000, layout="mono")
        frame = av.AudioFrame.from_ndarray(pcm[None, :], format="s16", layout="mono")
        frame.sample_rate = 16000
        for packet in [*stream.encode(frame), *stream.encode(None)]:
            c.mux(packet)
    return path


@pytest.mark.skipif(importlib.util.find_spec("av") is None, reason="needs PyAV")
def test_g722_decodes_in_process_at_full_scale_1(tmp_path: Path) -> None:
    x, rate = convert._decode(str(_g722(tmp_path / "p.g722", 0.5, 440.0, 0.3)))
    assert x.dtype == np.float32 and x.shape == (1, 8000) and rate == 16000
    assert 0.27 < float(np.abs(x).max()) < 0.34  # int16 samples scaled to full scale 1.0
    assert np.argmax(np.abs(np.fft.rfft(x[0]))) * rate / x.shape[1] == 440.0


def _fake_tool(folder: Path, name: str, body: str) -> Path:
    """An executable ``folder/name`` (a Python script) that records its arguments in ``name.args``."""
    folder.mkdir(parents=True, exist_ok=True)
    tool = folder / name
    tool.write_text(f"#!{sys.executable}\nimport json, sys\n"
                    f"open({str(folder / (name + '.args'))!r}, 'w').write(json.dumps(sys.argv[1:]))\n" + body)
    tool.chmod(0o755)
    return tool


def test_g722_without_pyav_goes_through_ffmpeg(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "av", None)  # import av: ImportError
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))
    (tmp_path / "p.g722").write_bytes(b"\0" * 100)
    with pytest.raises(RuntimeError, match=r"^G\.722 needs Debian's ffmpeg \(apt-get install ffmpeg\)$"):
        convert._decode(str(tmp_path / "p.g722"))
    _fake_tool(tmp_path / "bin", "ffmpeg",
               "import numpy as np\nsys.stdout.buffer.write(np.array([0.5, -0.25, 0.125], np.float32).tobytes())\n")
    x, rate = convert._decode(str(tmp_path / "p.g722"))
    assert x.tolist() == [[0.5, -0.25, 0.125]] and rate == 16000 and x.flags.writeable
    assert json.loads((tmp_path / "bin/ffmpeg.args").read_text()) == [
        "-v", "error", "-f", "g722", "-i", str(tmp_path / "p.g722"), "-f", "f32le", "-ac", "1", "-ar", "16000", "-"]
    _fake_tool(tmp_path / "bin", "ffmpeg",
               "sys.stderr.write('x' * 400 + '\\np.g722: Invalid data found\\n')\nsys.exit(1)\n")
    out = tmp_path / "o" / "p.flac"
    path, reason = convert.convert_file(str(tmp_path / "p.g722"), str(out), 16000)
    tail = ("x" * 400 + " p.g722: Invalid data found")[-250:]  # its end: the reason
    assert reason == f"RuntimeError: ffmpeg failed (1): {tail}" and not out.exists()


def test_midi_is_rendered_by_fluidsynth_with_the_sound_font(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_tool(tmp_path / "bin", "fluidsynth",  # writes 0.1 s of stereo at the rate asked (-r)
               "import numpy as np, soundfile as sf\na = sys.argv[1:]\nrate = int(a[a.index('-r') + 1])\n"
               "sf.write(a[a.index('-F') + 1], np.full((rate // 10, 2), 0.25, np.float32), rate, subtype='FLOAT')\n")
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))
    monkeypatch.setenv("OPENCODEC_SF2", str(tmp_path / "font.sf2"))
    (tmp_path / "song.mid").write_bytes(MIDI)
    x, rate = convert._decode(str(tmp_path / "song.mid"), 22050)
    assert rate == 22050 and x.shape == (2, 2205) and x.dtype == np.float32 and float(x.min()) == 0.25
    args = json.loads((tmp_path / "bin/fluidsynth.args").read_text())
    assert args[:8] == ["-ni", "-q", "-g", "0.25", "-r", "22050", "-F", args[7]]
    assert args[8:] == ["-T", "wav", str(tmp_path / "font.sf2"), str(tmp_path / "song.mid")]
    assert not os.path.exists(args[7])  # rendered into a temporary folder, removed


def test_parallel_conversion_gives_the_serial_files(tmp_path: Path) -> None:
    files = [SourceFile("s", f"c{i}.wav", "g", str(_tone(tmp_path / f"in/c{i}.wav", 0.3, 300 + 40 * i)),
                        str(tmp_path / f"par/c{i}.flac"), 0.3) for i in range(9)]
    files.append(SourceFile("s", "bad.wav", "g", str(tmp_path / "in/missing.wav"),
                            str(tmp_path / "par/bad.flac"), -1.0))
    got = convert.convert_all(files, 16000, workers=2)  # 10 pending > 8: a process pool
    assert set(got) == {f.out_path for f in files}
    assert got[str(tmp_path / "par/bad.flac")].startswith("LibsndfileError")
    assert all(got[f.out_path] is None for f in files[:9])
    for f in files[:9]:
        serial = tmp_path / "ser" / Path(f.out_path).name
        assert convert.convert_file(f.src_path, str(serial), 16000) == (str(serial), None)
        assert sf.read(f.out_path)[0].tolist() == sf.read(serial)[0].tolist()


def test_an_interrupted_parallel_conversion_stops_its_workers(tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    import multiprocessing
    real = convert.convert_file

    def convert_or_interrupt(src: str, out: str, *args: object) -> tuple:
        if src.endswith("c5.wav"):
            raise KeyboardInterrupt
        return real(src, out, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(convert, "convert_file", convert_or_interrupt)  # forked workers inherit it
    files = [SourceFile("s", f"c{i}.wav", "g", str(_tone(tmp_path / f"in/c{i}.wav", 0.2, 300 + 40 * i)),
                        str(tmp_path / f"out/c{i}.flac"), 0.2) for i in range(10)]
    with pytest.raises(KeyboardInterrupt):
        convert.convert_all(files, 16000, workers=2)
    assert multiprocessing.active_children() == []  # the pool is shut down, not left running
    assert not (tmp_path / "out/c5.flac").exists()
    assert not list((tmp_path / "out").glob("*.tmp.flac"))  # what was written is complete
    for done in (tmp_path / "out").glob("*.flac"):
        assert sf.info(str(done)).frames == 3200


# -- data/source_files: durations before conversion, the hours cap ------------------------------

def test_duration_estimates_of_midi_and_g722(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "a.MID").write_bytes(MIDI)
    (tmp_path / "b.g722").write_bytes(b"\0" * 12000)  # 64 kbit/s: 8000 bytes a second
    wav = _tone(tmp_path / "c.wav", 0.5)
    assert source_files._estimate_duration(tmp_path / "b.g722") == 1.5
    assert source_files._estimate_duration(wav) == 0.5
    # MIDI has no length before it is rendered, whatever a reader of headers would say
    monkeypatch.setattr(sf, "info", lambda path: type("Info", (), {"duration": 99.0})())
    assert source_files._estimate_duration(tmp_path / "a.MID") == -1.0
    assert source_files._estimate_duration(wav) == 99.0


def _sfile(rel: str, group: str, seconds: float) -> SourceFile:
    return SourceFile("s", rel, group, "/in/" + rel, "/out/" + rel, seconds)


def test_cap_keeps_whole_groups_in_seeded_order_and_cuts_the_last() -> None:
    files = [_sfile(f"{g}/{i}.wav", g, 600.0) for g in ("a", "b", "c") for i in range(3)]
    order = source_files._seeded_order({"a", "b", "c"}, 3)
    assert order == ["c", "b", "a"]  # not by name: the kept files are sorted again
    # 0.75 h = 2700 s: the first group (1800 s), then files of the second until the cap is passed
    kept = cap_files(files, 0.75, seed=3)
    want = [f"{order[0]}/{i}.wav" for i in range(3)] + [f"{order[1]}/{i}.wav" for i in range(2)]
    assert [f.rel for f in kept] == sorted(want)
    assert cap_files(files, None, seed=3) is files
    assert [f.rel for f in cap_files(files, 0.1, seed=3)] == [f"{order[0]}/0.wav"]  # at least one file
    # files of unknown length (MIDI) count 0 s: the cap cannot stop them
    midi = [_sfile(f"m{i}.mid", f"m{i}", -1.0) for i in range(4)]
    assert len(cap_files(midi, 0.0005, seed=3)) == 4


# -- data/sources: the MegaGlest selectors ------------------------------------------------------

def test_megaglest_effects_and_ambience_are_told_apart() -> None:
    general, noise = SOURCES["megaglest_general"].select, SOURCES["megaglest_noise"].select
    base = "usr/share/games/megaglest/"
    unit = base + "techs/megapack/factions/magic/units/archmage/sounds/attack1.wav"
    assert general(unit) == "magic/units/archmage" and noise(unit) is None
    menu = base + "data/core/menu/sound/click.wav"
    assert general(menu) == "data/core/menu/sound" and noise(menu) is None
    for rel, key in ((base + "tilesets/forest/sounds/rain.wav", "tilesets/forest"),
                     (base + "data/core/water_sounds/w1.wav", "water_sounds")):
        assert general(rel) is None and noise(rel) == key
    assert general(base + "x.wav") is None  # no folder under megaglest/
    assert general(base + "data/core/menu/music/theme.ogg") is None  # effects are WAV
    assert noise(base + "tilesets/forest/sounds/rain.ogg") is None


# -- data/corpus: argument checks, fetching, skipped sources, the kept probe ----------------------

@pytest.mark.parametrize("workers", [0, True, 2.0])
def test_build_refuses_a_bad_worker_count(workers: object) -> None:
    with pytest.raises(ValueError, match=rf"^workers must be a whole number >= 1, got {workers!r}$"):
        corpus.check_build_args(24000, 1, workers)  # type: ignore[arg-type]


def test_build_refuses_unknown_categories_before_touching_the_folder(tmp_path: Path) -> None:
    sources = {"sp": Source("sp", "pkg", "speech", "train", _rx(r"x", lambda m: "g"))}
    with pytest.raises(ValueError, match=r"^unknown categories \['voice'\] \(speech, music, general, noise\)$"):
        corpus.build("p", tmp_path / "out", sources=sources, presets={"p": Preset({"sp": None}, {})},
                     categories=["speech", "voice"])
    assert not (tmp_path / "out").exists()


def test_fetch_downloads_and_extracts_what_is_not_given(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple] = []
    monkeypatch.setattr(corpus, "download", lambda pkg, d: calls.append(("dl", pkg, d)) or d / f"{pkg}.deb")
    monkeypatch.setattr(corpus, "extract", lambda deb, pkg, d: calls.append(("x", deb, pkg, d)) or d / pkg)
    sources = {"a": Source("a", "pkg-a", "speech", "train", _rx("x", lambda m: "g")),
               "b": Source("b", "pkg-a", "noise", "train_noise", _rx("y", lambda m: "g")),
               "c": Source("c", "pkg-c", "music", "train", _rx("z", lambda m: "g"))}
    got = corpus._fetch(Preset({"a": None, "b": None, "c": None}, {}), sources, tmp_path,
                        {"pkg-c": tmp_path / "given"})
    assert got == {"pkg-a": tmp_path / "extract" / "pkg-a", "pkg-c": tmp_path / "given"}
    assert calls == [("dl", "pkg-a", tmp_path / "debs"),
                     ("x", tmp_path / "debs" / "pkg-a.deb", "pkg-a", tmp_path / "extract")]


def test_fetch_finds_the_sound_font_for_freedoom_or_warns(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                          caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.delenv("OPENCODEC_SF2", raising=False)
    sources = {"fd": Source("fd", "freedoom", "music", "train", _rx("x", lambda m: "g"))}
    preset = Preset({"fd": None}, {})
    font = tmp_path / "font" / corpus.SOUNDFONT_REL
    font.parent.mkdir(parents=True)
    font.write_bytes(b"sf2")
    corpus._fetch(preset, sources, tmp_path, {"freedoom": tmp_path, corpus.SOUNDFONT_PACKAGE: tmp_path / "font"})
    assert os.environ["OPENCODEC_SF2"] == str(font)
    monkeypatch.delenv("OPENCODEC_SF2")

    def offline(pkg: str, d: Path) -> Path:
        raise debian.ToolError(f"apt-get download {pkg} failed (100): E: offline")

    monkeypatch.setattr(corpus, "download", offline)
    with caplog.at_level(logging.WARNING, logger="opencodec.data.corpus"):
        corpus._fetch(preset, sources, tmp_path, {"freedoom": tmp_path})
    assert "OPENCODEC_SF2" not in os.environ
    assert "no sound font: apt-get download fluid-soundfont-gm failed (100): E: offline" in caplog.text


def _one_source_build(tmp_path: Path, rel: str, content: bytes) -> dict:
    root = tmp_path / "pkg"
    _tone(root / "speech/s0/c0.wav", 1.0)
    (root / rel).parent.mkdir(parents=True, exist_ok=True)
    (root / rel).write_bytes(content)
    sources = {"sp": Source("sp", "pkg", "speech", "train", _rx(r"^speech/([^/]+)/", lambda m: m.group(1))),
               "odd": Source("odd", "pkg", "music", "train", _rx(r"^odd/([^/]+)\.", lambda m: m.group(1)))}
    return corpus.build("p", tmp_path / "out", sample_rate=16000, seed=1, workers=1, sources=sources,
                        presets={"p": Preset({"sp": None, "odd": None}, {})}, roots={"pkg": root})


def test_a_midi_source_without_fluidsynth_is_skipped_with_a_note(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENCODEC_SF2", raising=False)
    summary = _one_source_build(tmp_path, "odd/song.mid", MIDI)
    assert "odd: skipped, MIDI rendering needs fluidsynth (apt-get install fluidsynth) and " \
           "fluid-soundfont-gm" in summary["notes"]
    assert summary["skipped_files"] == 0 and not (tmp_path / "out/audio_16000/odd").exists()
    assert summary["table"]["train"]["speech"]["files"] == 1  # the other source is built


def test_a_g722_source_without_a_decoder_is_skipped_with_a_note(tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(corpus.shutil, "which", lambda name: None)
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "av" else find_spec(name, *a))
    summary = _one_source_build(tmp_path, "odd/prompt.g722", b"\0" * 8000)
    assert "odd: skipped, G.722 needs Debian's ffmpeg (or PyAV)" in summary["notes"]
    assert not (tmp_path / "out/audio_16000/odd").exists()
    assert summary["table"]["train"]["speech"]["files"] == 1


def test_a_categories_build_keeps_the_probe_in_the_summary(tmp_path: Path) -> None:
    root = tmp_path / "pkg"
    for i in range(3):
        _tone(root / f"speech/s{i}/c0.wav", 1.5, 200 + 30 * i)
    _tone(root / "music/m0.wav", 2.0, 330)
    _tone(root / "probespeech/p0/c0.wav", 6.0, 260)
    sources = {s.name: s for s in [
        Source("sp", "pkg", "speech", "train", _rx(r"^speech/([^/]+)/", lambda m: m.group(1))),
        Source("mu", "pkg", "music", "train", _rx(r"^music/([^/]+)\.wav$", lambda m: m.group(1))),
        Source("pr", "pkg", "speech", "probe", _rx(r"^probespeech/([^/]+)/", lambda m: m.group(1)))]}
    kw = dict(sample_rate=16000, seed=1, workers=1, sources=sources,
              presets={"p": Preset({n: None for n in sources}, {}, valid_fraction=0.3)}, roots={"pkg": root})
    whole = corpus.build("p", tmp_path / "out", **kw)  # type: ignore[arg-type]
    assert whole["table"]["probe_speech"] == {"clean_speech": {"files": 1, "hours": 0.0017}}
    music_only = corpus.build("p", tmp_path / "out", categories=["music"], **kw)  # type: ignore[arg-type]
    assert music_only["table"] == whole["table"]


# -- data/dataset: noise manifests, unreadable files, channel counts ----------------------------

def _row(path: Path, category: str = "speech", duration: float = 1.0, **extra: object) -> dict:
    return {"path": str(path), "category": category, "duration": duration, "sample_rate": 16000, **extra}


def test_a_noise_manifest_row_without_duration_names_the_noise_manifest(tmp_path: Path) -> None:
    wav = _tone(tmp_path / "a.wav", 1.0)
    (tmp_path / "train.jsonl").write_text(json.dumps(_row(wav)) + "\n")
    (tmp_path / "noise.jsonl").write_text(json.dumps({"path": str(wav), "category": "noise"}) + "\n")
    with pytest.raises(ConfigError, match=rf"^manifest {tmp_path / 'noise.jsonl'}: the row of {wav} has no "):
        AudioDataset(tmp_path / "train.jsonl", sample_rate=16000, noise_manifests=tmp_path / "noise.jsonl")
    (tmp_path / "noise.jsonl").write_text(json.dumps(_row(wav, "rain")) + "\n")
    ds = AudioDataset(tmp_path / "train.jsonl", sample_rate=16000, noise_manifests=tmp_path / "noise.jsonl")
    assert [r["path"] for r in ds.noise_rows] == [str(wav)]  # every row of it is noise


def test_a_file_shorter_than_its_row_says_is_dropped_naming_why(tmp_path: Path) -> None:
    wav = _tone(tmp_path / "a.wav", 1.0)
    ds = AudioDataset([_row(wav, duration=100.0)], segment_seconds=0.1, sample_rate=16000,
                      augment=False, epoch_size=2)
    with pytest.raises(AudioIOError) as exc:
        ds.sample(0)
    prefix = f"no readable audio file left in the manifests: 1 unreadable, the last {wav} (no audio frames at "
    assert str(exc.value).startswith(prefix)
    start, rest = str(exc.value)[len(prefix):].split(" ", 1)
    assert 1.0 <= float(start) <= 100.0 and rest == "s (the manifest gives the file 100 s))"


def test_twenty_unreadable_files_in_a_row_stop_the_dataset(tmp_path: Path) -> None:
    rows = [_row(tmp_path / f"missing{i:02d}.wav") for i in range(25)]
    ds = AudioDataset(rows, segment_seconds=0.1, sample_rate=16000, augment=False, epoch_size=2)
    with pytest.raises(AudioIOError, match=r"^too many unreadable audio files: 20 in a row, the last "
                                           rf"{tmp_path}/missing\d\d\.wav \("):
        ds.sample(0)
    assert len(ds._bad) == 20 and int((ds._w == 0).sum()) == 20


def test_an_unreadable_noise_file_falls_back_to_generated_noise(tmp_path: Path) -> None:
    wav = _tone(tmp_path / "a.wav", 1.0)
    gone = tmp_path / "gone.wav"
    ds = AudioDataset([_row(wav), _row(gone, "noise")], segment_seconds=0.1, sample_rate=16000,
                      epoch_size=2, noisy_speech_prob=1.0, generated_noise_prob=0.0, reverb_prob=0.0)
    x, info = ds.sample(0)
    assert info["noise"].startswith("generated:") and info["sources"] == [str(wav)]
    assert ds._bad == {str(gone)} and x.shape == (1, 1600) and bool(torch.isfinite(x).all())


def test_three_source_mixtures_of_music_only_use_music(tmp_path: Path) -> None:
    rows = [_row(_tone(tmp_path / f"m{i}.wav", 1.0, 300 + 100 * i), "music") for i in range(2)]
    ds = AudioDataset(rows, segment_seconds=0.1, sample_rate=16000, epoch_size=2, mix_probs=(0, 0, 1),
                      noisy_speech_prob=0.0, reverb_prob=0.0)
    _, info = ds.sample(0)
    assert info["categories"] == ["music"] * 3 and len(info["gains_db"]) == 3


def test_dataset_channel_counts_keep_the_first_or_repeat_the_last() -> None:
    x = np.arange(12, dtype=np.float32).reshape(3, 4)
    assert convert_channels(x, 2).tolist() == x[:2].tolist()
    assert convert_channels(x[:2], 3).tolist() == [x[0].tolist(), x[1].tolist(), x[1].tolist()]


# -- audio: argument checks and unreadable headers ----------------------------------------------

def test_audio_argument_checks_name_the_bad_value(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"^target_channels must be >= 1, got 0$"):
        audio.convert_channels(torch.zeros(2, 4), 0)
    with pytest.raises(ValueError, match=r"^sample rates must be positive, got 0 -> 16000$"):
        audio.resample(torch.zeros(2, 4), 0, 16000)
    with pytest.raises(ValueError, match=r"^sample rates must be positive, got 16000 -> -1$"):
        audio.resample(torch.zeros(2, 4), 16000, -1)
    for shape in ((4,), (1, 2, 4)):
        with pytest.raises(ValueError, match=rf"^expected audio of shape \[C, T\], got {shape}$".replace("(", r"\(")
                           .replace(")", r"\)")):
            audio.write_audio(tmp_path / "o.wav", torch.zeros(shape), 16000)
    assert not (tmp_path / "o.wav").exists()


def test_unreadable_headers(tmp_path: Path) -> None:
    junk = tmp_path / "junk.wav"
    junk.write_bytes(b"\x00\x01garbage" * 50)
    assert audio.stores_float_samples(junk) is False
    assert audio.stores_float_samples(tmp_path / "missing.wav") is False
    with pytest.raises(AudioIOError, match=rf"^cannot read audio file {junk}: Format not recognised\.$"):
        audio.find_truncation(junk)
    folder = tmp_path / "d.mp3"
    folder.mkdir()
    with pytest.raises(AudioIOError, match=rf"^cannot read audio file {folder}: Is a directory$"):
        audio.find_truncation(folder)


def test_libsndfiles_no_such_file_for_a_present_file_is_called_undecodable() -> None:
    exc = sf.LibsndfileError(7)  # "File does not exist or is not a regular file (possibly a pipe?)."
    assert audio.audio_error_reason(exc, "x.mp3") == "not a decodable audio file (unknown format or corrupt data)"


# -- _files --------------------------------------------------------------------------------------

def test_check_output_refuses_a_folder_even_with_force(tmp_path: Path) -> None:
    for force in (False, True):
        with pytest.raises(IsADirectoryError, match=rf"^output {tmp_path} is a folder, expected a file path$"):
            _files.check_output(tmp_path, force)


def test_without_proc_the_pid_namespace_is_0(monkeypatch: pytest.MonkeyPatch) -> None:
    real_stat = os.stat

    def stat(path: object, *a: object, **k: object) -> os.stat_result:
        if path == "/proc/self/ns/pid":
            raise FileNotFoundError(path)
        return real_stat(path, *a, **k)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "stat", stat)
    assert _files._pid_namespace() == 0
    assert _files._owner_tag() == f"{_files._host()}-0-{os.getpid()}"


def test_another_users_running_process_keeps_its_temporary_file(tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    prefix = f"{_files._host()}-{_files._pid_namespace()}"
    tmp = tmp_path / f".out.wav.{prefix}-4242.abc{_files.TEMP_SUFFIX}"
    tmp.write_bytes(b"being written")

    def kill(pid: int, sig: int) -> None:
        raise PermissionError(1, "Operation not permitted")  # EPERM: pid runs, as another user

    monkeypatch.setattr(os, "kill", kill)
    assert _files._process_ended(4242) is False and _files.temporary_in_use(tmp)
    assert _files.remove_dead_temporaries(tmp_path) == [] and tmp.exists()


def test_staged_files_pass_an_output_error_on_unchanged(tmp_path: Path) -> None:
    out = tmp_path / "out"
    with pytest.raises(OutputError) as exc:
        with _files.staged_files(out) as stage:
            (stage / "a.txt").write_text("a")
            raise OutputError("cannot write x: disk full")
    assert str(exc.value) == "cannot write x: disk full"
    assert not out.exists() and os.listdir(tmp_path) == []


# -- file_jobs -----------------------------------------------------------------------------------

def test_is_same_file_is_false_when_the_input_has_gone(tmp_path: Path) -> None:
    (tmp_path / "out.ecdc").write_bytes(b"x")
    assert file_jobs.is_same_file(tmp_path / "gone.wav", tmp_path / "out.ecdc") is False
    plan = file_jobs.Plan([file_jobs.Job(tmp_path / "gone.wav", tmp_path / "out.ecdc")])
    [outcome] = file_jobs.run_jobs(plan, lambda job, folder: "ran")
    assert outcome.result == "ran" and outcome.error is None  # the work itself meets the missing input


def test_the_placement_log_by_path_is_read_back_and_removed(tmp_path: Path) -> None:
    log = file_jobs._PlacementLog(fork=False)  # the spawn start method's log (no fork)
    path = log.target
    assert isinstance(path, str) and os.path.exists(path)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND)  # as a spawned worker opens it
    os.write(fd, b"+5 7\n+5 8\n-5 8\n+9")
    os.close(fd)
    assert log.placed() == {(5, 7)}  # the failed placement and the cut line are left out
    log.close()
    assert not os.path.exists(path)


class _BreakingPool:
    """A stand-in for ``ProcessPoolExecutor`` that runs ``work`` at once, in this process; the
    first pool breaks on its second ``submit`` (as when a worker has just died)."""

    pools: list["_BreakingPool"] = []

    def __init__(self, workers: int, mp_context: object = None, initializer: object = None,
                 initargs: tuple = ()) -> None:
        self.work, self.submitted, self._processes = initargs[0], 0, {}
        _BreakingPool.pools.append(self)

    def submit(self, fn: object, job: file_jobs.Job, folder: bool) -> Future[file_jobs.Outcome]:
        self.submitted += 1
        if len(_BreakingPool.pools) == 1 and self.submitted == 2:
            raise BrokenProcessPool("a worker died")
        future: Future[file_jobs.Outcome] = Future()
        future.set_result(file_jobs.Outcome(job, result=self.work(job, folder)))
        return future

    def shutdown(self, wait: bool = True, cancel_futures: bool = False) -> None:
        pass


def test_a_pool_broken_at_submit_keeps_the_outcomes_that_came_in(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    _BreakingPool.pools = []
    monkeypatch.setattr(file_jobs, "ProcessPoolExecutor", _BreakingPool)
    jobs = [file_jobs.Job(tmp_path / f"{n}.wav", tmp_path / f"{n}.ecdc") for n in "abc"]
    calls: list[str] = []
    outcomes = list(file_jobs.run_jobs(file_jobs.Plan(jobs, folder=True),
                                       lambda job, folder: calls.append(job.src.stem) or job.src.stem.upper(),
                                       processes=2))
    assert [(o.job.src.stem, o.result, o.error) for o in outcomes] == [("a", "A", None), ("b", "B", None),
                                                                       ("c", "C", None)]
    assert calls == ["a", "b", "c"]  # a's outcome, in before the pool broke, is kept: not run again
    assert len(_BreakingPool.pools) == 2  # b (never submitted) and c go on in a fresh pool


def test_a_headerless_au_file_is_not_audio(tmp_path: Path) -> None:
    """libsndfile opens any ``.au`` file without the ``.snd`` header (here a text file) as
    headerless 8 kHz mu-law: ``read_audio`` and the long-file block reader refuse it, while a
    real AU file still reads."""
    from opencodec.longform.blocks import _ConvertedBlocks

    junk = tmp_path / "notes.au"
    junk.write_text("hello, this is text and not audio at all\n" * 5)
    assert sf.info(str(junk)).format == "RAW"  # what libsndfile makes of it
    message = rf"^cannot read audio file {junk}: no audio header \(libsndfile would read its bytes as headerless"
    with pytest.raises(AudioIOError, match=message):
        audio.read_audio(junk)
    with pytest.raises(AudioIOError, match=message):
        list(_ConvertedBlocks(junk, 24000, 1, 1.0))
    real = tmp_path / "real.au"
    sf.write(real, np.full(800, 0.25, dtype=np.float32), 8000, format="AU", subtype="PCM_16")
    wav, rate = audio.read_audio(real)
    assert rate == 8000 and wav.shape == (1, 800) and float(wav[0, 0]) == 0.25
    blocks = list(_ConvertedBlocks(real, 8000, 1, 1.0))
    assert sum(b.shape[0] for b in blocks) == 800


def test_staged_files_sweep_the_staging_folder_a_killed_run_left(tmp_path: Path) -> None:
    import subprocess
    import sys

    ended = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                           text=True, check=True)
    tag = f"{_files._host()}-{_files._pid_namespace()}"
    out = tmp_path / "onnx"
    out.mkdir()
    dead = out / f".onnx.{tag}-{int(ended.stdout)}.abcd1234{_files.TEMP_SUFFIX}"
    (dead / "sub").mkdir(parents=True)
    (dead / "sub" / "encoder.onnx").write_bytes(b"half")
    running = out / f".onnx.{tag}-{os.getpid()}.efgh5678{_files.TEMP_SUFFIX}"
    running.mkdir()
    with _files.staged_files(out) as stage:
        assert _files._temporary_owner(stage.name) == (tag, os.getpid())  # a later run can tell
        (stage / "meta.json").write_text("{}")
    assert sorted(os.listdir(out)) == [running.name, "meta.json"]  # the dead one's folder is gone
