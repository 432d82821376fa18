"""What the README promises a newcomer, end to end: the bundled default model through the
command line (no --model), ``--lm`` with the bundled entropy model, ``scripts/demo.py``, and
the official-weights download with its sha256 check."""

from __future__ import annotations

import hashlib
import io
import os
import subprocess
import sys
import typing as tp
from pathlib import Path

import pytest
import soundfile as sf
import torch

from opencodec import cli, official_files, pretrained
from opencodec.audio import read_audio
from opencodec.bitstream import parse_header
from opencodec.errors import ModelLoadError
from opencodec.eval.metrics import mel_distance, si_snr
from opencodec.pretrained import load_model
from opencodec.weights_hash import weights_sha256

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "demo" / "sample_speech_fr.flac"
# The bundled default codec's weights (weights_sha256). A retrain changes this on purpose:
# then re-measure the floors below and update both.
BUNDLED_WEIGHTS_SHA256 = "e701927ffb852e186dcbf517c024915b06a2b2a8168259744c615c1e8dd39aca"


def run(capsys: pytest.CaptureFixture[str], *argv: tp.Any) -> tuple[int, str, str]:
    code = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_bundled_default_model_through_the_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                               offline: Path) -> None:
    """``opencodec compress demo/sample_speech_fr.flac`` then ``decompress``, no --model,
    offline: the bundled model at its default 6 kbps, with a floor on quality (measured
    with these weights: SI-SNR 7.82 dB, mel distance 0.831)."""
    assert weights_sha256(load_model()) == BUNDLED_WEIGHTS_SHA256
    ecdc, wav_path = tmp_path / "s.ecdc", tmp_path / "s.wav"
    assert run(capsys, "compress", SAMPLE, ecdc, "-q")[0] == 0
    header, _ = parse_header(ecdc.read_bytes())
    model = load_model()
    assert header.num_codebooks == model.num_codebooks(6.0) and not header.use_lm
    assert run(capsys, "decompress", ecdc, wav_path, "--float", "-q")[0] == 0  # model from the header
    decoded, rate = read_audio(wav_path)
    reference, ref_rate = read_audio(SAMPLE)
    assert rate == ref_rate == model.sample_rate and decoded.shape == reference.shape
    assert 8 * ecdc.stat().st_size / (reference.shape[-1] / rate) / 1000 < 6.5  # kbps
    snr = si_snr(decoded.numpy(), reference.numpy())
    mel = mel_distance(decoded.numpy(), reference.numpy(), rate)
    assert snr > 6.5, snr
    assert mel < 0.95, mel


def test_cli_lm_with_the_bundled_entropy_model(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                               offline: Path) -> None:
    """``compress --lm`` (the bundled entropy model, found for the bundled codec) writes a
    smaller file that decodes to exactly the plain file's audio (3 s of the demo speech)."""
    speech, rate = sf.read(SAMPLE, dtype="float32")
    sf.write(tmp_path / "in.wav", speech[: 3 * rate], rate, subtype="FLOAT")
    assert run(capsys, "compress", tmp_path / "in.wav", tmp_path / "plain.ecdc", "-q")[0] == 0
    assert run(capsys, "compress", tmp_path / "in.wav", tmp_path / "lm.ecdc", "--lm", "-q")[0] == 0
    plain, coded = (tmp_path / "plain.ecdc").read_bytes(), (tmp_path / "lm.ecdc").read_bytes()
    assert parse_header(coded)[0].use_lm and not parse_header(plain)[0].use_lm
    assert len(coded) < 0.95 * len(plain), (len(coded), len(plain))  # measured 2059 vs 2318 bytes
    for name in ("plain", "lm"):
        assert run(capsys, "decompress", tmp_path / f"{name}.ecdc", tmp_path / f"{name}.wav", "--float",
                   "-q")[0] == 0
    got, _ = read_audio(tmp_path / "lm.wav")
    expected, _ = read_audio(tmp_path / "plain.wav")
    assert torch.equal(got, expected)


def _readme_demo_table() -> tuple[str, dict[str, list[float]]]:
    """The README's ``make demo`` table (system -> kbps, SI-SNR, mel, ViSQOL) and the weights
    hash its provenance line names."""
    text = (ROOT / "README.md").read_text()
    section = text[text.index("`make demo` prints"):]
    rows = {}
    for line in section.splitlines()[2:]:
        if not line.startswith("|"):
            break
        cells = [c.strip() for c in line.strip("|").split("|")]
        if cells[0] not in ("system",) and not cells[0].startswith("---"):
            rows[cells[0]] = [float(c) for c in cells[1:5]]
    weights = section.split("weights `", 1)[1].split("`", 1)[0]
    return weights, rows


def test_demo_script_reproduces_the_readme_table(tmp_path: Path) -> None:
    """``scripts/demo.py`` (what ``make demo`` runs) prints the README's table: the same model
    (weights hash) and, per row, kbps, SI-SNR, mel distance and ViSQOL within one unit of the
    last printed digit (other CPUs may round the last bit differently); it writes the files."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")]),
           "OPENCODEC_OFFLINE": "1", "OPENCODEC_CACHE": str(tmp_path / "cache")}
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "demo.py"), "--out", str(tmp_path / "out")],
                          capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr
    weights, readme = _readme_demo_table()
    assert f"(weights {weights}," in proc.stdout and BUNDLED_WEIGHTS_SHA256.startswith(weights)
    printed = {}
    for line in proc.stdout.splitlines():
        cells = line.split()
        if cells and cells[0] in ("opencodec", "Opus") and len(cells) >= 6 and cells[1].replace(".", "").isdigit():
            name = f"{cells[0]} {cells[1]}"
            values = cells[3:7] if cells[0] == "opencodec" else cells[2:6]  # bytes only for ours
            printed[name] = [float(v) for v in values]
    assert sorted(printed) == sorted(readme) == sorted(
        ["opencodec 1.5", "opencodec 3", "opencodec 6", "opencodec 12", "Opus 6", "Opus 12"])
    for name, values in readme.items():
        for got, want, unit in zip(printed[name], values, (0.01, 0.01, 0.001, 0.01)):
            assert abs(got - want) <= unit * 1.01, (name, printed[name], values)
    assert printed["opencodec 6"][1] > 6.5 and printed["opencodec 6"][3] > 2.5  # and a floor
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted(
        [f"sample_speech_fr_{bw}kbps.{ext}" for bw in ("1.5", "3", "6", "12") for ext in ("ecdc", "wav")]
        + ["sample_speech_fr_opus12.wav", "sample_speech_fr_opus6.wav"])


# -- the official weights: download, sha256 check, cache ------------------------------------
class _Response(io.BytesIO):
    """What ``urlopen`` returns, as a context manager."""

    def __enter__(self) -> "_Response":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@pytest.fixture()
def online_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty cache, downloads allowed (the network is replaced by each test)."""
    cache = tmp_path / "cache"
    monkeypatch.setenv("OPENCODEC_CACHE", str(cache))
    monkeypatch.delenv("OPENCODEC_OFFLINE", raising=False)
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    return cache


def _serve(monkeypatch: pytest.MonkeyPatch, payload: bytes) -> list[str]:
    urls: list[str] = []

    def urlopen(url: str, timeout: float | None = None) -> _Response:
        urls.append(url)
        return _Response(payload)

    monkeypatch.setattr(official_files.urllib.request, "urlopen", urlopen)
    return urls


def test_download_is_checked_and_cached(official_checkpoints: dict, online_cache: Path,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    data = Path(official_checkpoints["encodec_24khz"]).read_bytes()
    filename = f"encodec_24khz-{hashlib.sha256(data).hexdigest()[:8]}.th"
    monkeypatch.setitem(pretrained.OFFICIAL_CHECKPOINTS, "encodec_24khz", filename)
    urls = _serve(monkeypatch, data)
    model = load_model("encodec_24khz")
    assert urls == [pretrained.ROOT_URL + filename]
    assert sorted(p.name for p in online_cache.iterdir()) == [filename]
    assert (online_cache / filename).read_bytes() == data
    assert weights_sha256(model) == weights_sha256(load_model(official_checkpoints["encodec_24khz"]))
    # the second time it comes from the cache: no download
    load_model("encodec_24khz")
    assert len(urls) == 1


def test_corrupt_download_is_refused_and_not_cached(official_checkpoints: dict, online_cache: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    data = Path(official_checkpoints["encodec_24khz"]).read_bytes()
    prefix = hashlib.sha256(data).hexdigest()[:8]
    monkeypatch.setitem(pretrained.OFFICIAL_CHECKPOINTS, "encodec_24khz", f"encodec_24khz-{prefix}.th")
    damaged = bytearray(data)
    damaged[len(damaged) // 2] ^= 0x01  # one bit
    _serve(monkeypatch, bytes(damaged))
    actual = hashlib.sha256(bytes(damaged)).hexdigest()[:8]
    with pytest.raises(ModelLoadError, match=f"sha256 prefix {actual}, expected {prefix}"):
        load_model("encodec_24khz")
    assert not online_cache.exists() or list(online_cache.iterdir()) == []  # no file, no temp file
    # the network's own failure is a clear error too, naming where to put the file
    def unreachable(url: str, timeout: float | None = None) -> _Response:
        raise OSError("network is unreachable")

    monkeypatch.setattr(official_files.urllib.request, "urlopen", unreachable)
    with pytest.raises(ModelLoadError, match="network is unreachable.*put it at") as info:
        load_model("encodec_24khz")
    assert not online_cache.exists() or list(online_cache.iterdir()) == []
    # both folders it looked in are named (the README says torch hub's is searched too)
    assert str(official_files.cache_dir()) in str(info.value) and "hub" in str(info.value)


def test_stream_size_table_in_the_readme() -> None:
    """The README's table of packet-stream bitrates (bundled model, the 6.4 s demo sample, 1 / 4
    / 10 frames per packet at 1.5 and 6 kbps, headers repeated as by default) is what
    ``opencodec stream-encode`` writes today, to the printed 0.1 kbps."""
    from opencodec.stream import encode_stream

    text = (ROOT / "README.md").read_text()
    section = text[text.index("| frames per packet | packet | latency | 1.5 kbps codes | 6 kbps codes |"):]
    table = {}
    for line in section.splitlines()[2:5]:
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        frames = int(cells[0].split()[0])
        table[frames] = (float(cells[3].split()[0]), float(cells[4].split()[0]))
    assert sorted(table) == [1, 4, 10]
    wav, rate = read_audio(SAMPLE)
    source = io.BytesIO()
    sf.write(source, wav.T.numpy(), rate, format="WAV", subtype="PCM_16")
    seconds = wav.shape[-1] / rate
    model = load_model(None)
    for frames, expected in table.items():
        for bandwidth, kbps in zip((1.5, 6.0), expected):
            out = io.BytesIO()
            encode_stream(model, io.BytesIO(source.getvalue()), out, bandwidth=bandwidth,
                          frames_per_packet=frames)
            measured = 8 * len(out.getvalue()) / seconds / 1000
            assert abs(measured - kbps) <= 0.051, (frames, bandwidth, measured, kbps)


def test_layout_names_every_module() -> None:
    """The README's Layout names every top-level module and package of ``src/opencodec`` (and
    names nothing that does not exist), so a reader can find where each job lives."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    layout = text[text.index("## Layout\n"):]
    layout = layout[:layout.index("\n## ", 1)] if "\n## " in layout[1:] else layout
    src = ROOT / "src" / "opencodec"
    modules = {p.name for p in src.glob("*.py") if p.name not in ("__init__.py", "__main__.py")}
    packages = {p.name + "/" for p in src.iterdir() if (p / "__init__.py").is_file()}
    missing = sorted(name for name in modules | packages if f"`{name}`" not in layout)
    assert missing == [], f"README Layout does not name {missing}"
    import re

    named = set(re.findall(r"`([a-z_]+\.py)`", layout))
    nowhere = sorted(n for n in named if not list(src.rglob(n)))
    assert nowhere == [], f"README Layout names modules that do not exist: {nowhere}"
