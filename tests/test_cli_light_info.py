"""``opencodec info`` answers without importing torch (it reads headers and sizes only, no
weights): ``python -m opencodec info FILE`` runs with ``-X importtime``, which lists every module
imported, and none is torch; its output is byte for byte what it was when info loaded torch
(the texts below were printed by that code for these files, the one-sample line aside, now
singular). Only ``info -m PATH`` to a weights file loads the model, and with it torch."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from opencodec.cli import main

CONVERTS = ("decompress --rate HZ --channels N converts (a compress IN OUT.wav round trip keeps "
            "the input's rate and channels)")


def block(file: str, lines: list[str], last: str = f"the sample rate and channels above; {CONVERTS}") -> str:
    return "\n".join([f"file:          {file}", *lines, f"decodes to:    {last}"]) + "\n"


V5 = ["model:         opencodec_24khz_v5",
      "weights:       hash e701927ffb852e18, release opencodec_24khz_v5 (shipped)",
      "sample rate:   24000 Hz", "channels:      1", "codebooks:     8", "bandwidth:     6 kbps (nominal)"]
PLAIN = block("plain.ecdc", [*V5, "duration:      0.500 s (12000 samples)", "size:          477 bytes",
                             "bitrate:       7.63 kbps (actual)", "complete:      yes", "entropy model: no"])
ONE = block("one.ecdc", [*V5, "duration:      0.000 s (1 sample)", "size:          103 bytes",
                         "bitrate:       19776.00 kbps (actual)", "complete:      yes", "entropy model: no"])
DAMAGED = block("damaged.ecdc", [*V5, "duration:      0.500 s (12000 samples)", "size:          300 bytes",
                                 "bitrate:       4.80 kbps (actual)", "complete:      NO, truncated: 177 bytes missing",
                                 "entropy model: no"])
OLD = block("old.ecdc", [
    "model:         opencodec_24khz",
    "weights:       ambiguous: written before versioned names; decode with --model opencodec_24khz_vN, "
    "the release installed when it was written",
    "sample rate:   24000 Hz", "channels:      1", "codebooks:     8", "bandwidth:     6 kbps (nominal)",
    "duration:      0.800 s (19200 samples)", "size:          668 bytes", "bitrate:       6.68 kbps (actual)",
    "complete:      yes", "entropy model: no"])


def lm_block(size: int) -> str:
    """What info printed for lm.ecdc, a deterministic entropy-coded file of ``size`` bytes (the
    size depends on the codes, which the encoder's floats could change on another CPU)."""
    return block("lm.ecdc", [*V5, "duration:      0.500 s (12000 samples)", f"size:          {size} bytes",
                             f"bitrate:       {size * 8 / 0.5 / 1000:.2f} kbps (actual)",
                             "complete:      not checked (entropy coded: only decoding tells)",
                             "entropy model: yes (deterministic format, version 1)",
                             "lm name:       opencodec_lm_24khz_v5",
                             "lm weights:    hash afe7bbb406b50526 (fixed-point scheme 1)",
                             "checks:        8 bits every 75 frames, CRC-32 per segment"])


STREAM_ERROR = ("opencodec: error: s.ocs: not an ECDC file: magic expected b'ECDC', got b'OCSP' (a packet "
                "stream: use opencodec stream-decode)\n")


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Files written by the command line and the stream encoder from 0.5 s of a 440 Hz tone:
    plain.ecdc, lm.ecdc (--lm), one.ecdc (1 sample), damaged.ecdc (plain.ecdc cut to 300 bytes), s.ocs (a
    packet stream) and old.ecdc (a file of the release before versioned names)."""
    from opencodec.pretrained import load_model
    from opencodec.stream import encode_stream

    folder = tmp_path_factory.mktemp("info")
    tone = (0.3 * np.sin(2 * np.pi * 440 * np.arange(12_000) / 24_000)).astype(np.float32)
    sf.write(folder / "a.wav", tone, 24_000)
    sf.write(folder / "one.wav", tone[1:2], 24_000)
    for wav, out in (("a.wav", "plain.ecdc"), ("one.wav", "one.ecdc")):
        assert main(["compress", "-q", str(folder / wav), str(folder / out)]) == 0
    assert main(["compress", "-q", "--lm", str(folder / "a.wav"), str(folder / "lm.ecdc")]) == 0
    (folder / "damaged.ecdc").write_bytes((folder / "plain.ecdc").read_bytes()[:300])
    with open(folder / "a.wav", "rb") as fin, open(folder / "s.ocs", "wb") as fout:
        encode_stream(load_model("opencodec_24khz"), fin, fout)
    fixture = Path(__file__).parent / "fixtures" / "stage3_621d886_6kbps.ecdc"
    (folder / "old.ecdc").write_bytes(fixture.read_bytes())
    return folder


def run_info(folder: Path, *args: str) -> tuple[int, str, str, list[str]]:
    """``python -X importtime -m opencodec info ARGS`` in ``folder``: (status, stdout, stderr
    without the import lines, the modules imported)."""
    done = subprocess.run([sys.executable, "-X", "importtime", "-m", "opencodec", "info", *args],
                          cwd=folder, capture_output=True, text=True, timeout=120)
    imported, errors = [], []
    for line in done.stderr.splitlines(keepends=True):
        if line.startswith("import time:"):
            imported.append(line.rsplit("|", 1)[-1].strip())
        else:
            errors.append(line)
    assert "opencodec.ecdc_info" in imported  # the list is read: info's own module is in it
    return done.returncode, done.stdout, "".join(errors), imported


def torch_modules(imported: list[str]) -> list[str]:
    return [name for name in imported if name == "torch" or name.startswith("torch.")]


@pytest.mark.parametrize(("args", "status", "stdout", "stderr"), [
    (["plain.ecdc"], 0, PLAIN, ""),
    (["s.ocs"], 1, "", STREAM_ERROR),
    (["one.ecdc"], 0, ONE, ""),
    (["old.ecdc"], 0, OLD, ""),
    (["damaged.ecdc"], 1, DAMAGED, "opencodec: error: damaged.ecdc: truncated: 177 bytes missing\n"),
    (["missing.ecdc"], 1, "", "opencodec: error: input missing.ecdc does not exist\n"),
    (["plain.ecdc", "s.ocs", "old.ecdc"], 1, PLAIN + "\n" + OLD, STREAM_ERROR),
    (["-m", "opencodec_24khz_v5", "plain.ecdc"], 0, PLAIN, ""),  # a name: its configuration, no weights
])
def test_info_prints_what_it_printed_without_importing_torch(files: Path, args: list[str], status: int,
                                                             stdout: str, stderr: str) -> None:
    got_status, got_stdout, got_stderr, imported = run_info(files, *args)
    assert (got_status, got_stdout, got_stderr) == (status, stdout, stderr)
    assert torch_modules(imported) == []


def test_info_on_an_entropy_coded_file_without_importing_torch(files: Path) -> None:
    status, stdout, stderr, imported = run_info(files, "lm.ecdc")
    assert (status, stdout, stderr) == (0, lm_block((files / "lm.ecdc").stat().st_size), "")
    assert torch_modules(imported) == []


def test_info_json_without_importing_torch(files: Path) -> None:
    status, stdout, stderr, imported = run_info(files, "--json", "one.ecdc")
    assert (status, stderr, torch_modules(imported)) == (0, "", [])
    assert stdout == (
        '{"file": "one.ecdc", "model": "opencodec_24khz_v5", "model_hash": "e701927ffb852e18", "release": '
        '"release opencodec_24khz_v5 (shipped)", "sample_rate": 24000, "channels": 1, "codebooks": 8, '
        '"bandwidth_kbps": 6.0, "samples": 1, "duration_s": 4.1666666666666665e-05, "size_bytes": 103, '
        '"bitrate_kbps": 19776.0, "entropy_coded": false, "body_bytes": 10, "body_bytes_missing": 0, '
        '"lm_body_min_bytes": null}\n')


def test_the_packet_streams_sync_word_is_the_streams() -> None:
    from opencodec.ecdc_info import PACKET_STREAM_SYNC
    from opencodec.stream.format import SYNC

    assert PACKET_STREAM_SYNC == SYNC


def test_the_entropy_models_metadata_key_is_the_exporters() -> None:
    from opencodec.ecdc_info import LM_METADATA_KEY
    from opencodec.lm_pairing import LM_METADATA_KEY as EXPORTED

    assert LM_METADATA_KEY == EXPORTED


def test_the_configuration_module_is_the_one_every_old_path_gives() -> None:
    """``EncodecConfig`` and ``config_for_name`` moved to the torch-free ``model_config``; the old
    import paths give those objects, and the configurations are the models' own."""
    from opencodec import model, model_config, model_registry, pretrained, weights_layout

    assert model.EncodecConfig is model_config.EncodecConfig
    assert pretrained.config_for_name is model_registry.config_for_name is model_config.config_for_name
    assert pretrained.BUNDLED_MODELS is model_registry.BUNDLED_MODELS is model_config.BUNDLED_MODELS
    assert pretrained.BUNDLED_DIR == model_config.BUNDLED_DIR
    assert weights_layout.OFFICIAL_CONFIGS is model_config.OFFICIAL_CONFIGS
    assert weights_layout.CONFIG_METADATA_KEY is model_config.CONFIG_METADATA_KEY
    current = model_config.config_for_name("opencodec_24khz")
    assert current is not None and current.name == "opencodec_24khz_v5"
    assert current == pretrained.load_model("opencodec_24khz").config
    assert model_config.config_for_name("encodec_48khz") == model.EncodecConfig.encodec_48khz()
    assert model_config.config_for_name("nothing") is None
    assert current.seanet().hop_length == current.hop_length == 320


def test_the_bitstream_package_loads_the_body_on_first_use() -> None:
    code = ("import sys, opencodec.bitstream as b; light = 'torch' not in sys.modules; "
            "h = b.EcdcHeader, b.StreamLayout, b.body_size, b.packed_size; light2 = 'torch' not in sys.modules; "
            "same = b.read_ecdc is b.body.read_ecdc and b.SegmentDecoder is b.coded_body.SegmentDecoder; "
            "missing = not hasattr(b, 'nothing_here'); print(light, light2, same, missing, 'torch' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.stdout.split() == ["True", "True", "True", "True", "True"], done.stderr


def test_the_package_config_class_needs_no_torch() -> None:
    """``opencodec.EncodecConfig`` (a configuration, no weights) loads without torch."""
    code = ("import sys, opencodec; c = opencodec.EncodecConfig.encodec_48khz(); "
            "print(c.sample_rate, 'torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out == "48000 False\n"
