"""``opencodec train-lm``: the training forward equals the coder's path, structured codes are
learnt (held-out bits per code far below 10), resume is exact, codes are cached, and the
exported model loads with ``load_lm_model`` and entropy-codes ``.ecdc`` files that decode."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from opencodec import EncodecConfig, EncodecModel, cli, save_model
from opencodec.bitstream import parse_header
from opencodec.compress import compress, decompress
from opencodec.identity import model_hash
from opencodec.pretrained import load_lm_model, load_model
from opencodec.train import lm_codes, lm_solver
from opencodec.train.config import LM_OPTIONAL_KEYS, load_config
from opencodec.train.lm_solver import (
    CodeData,
    CodeSet,
    ConfigError,
    build_lm,
    extract_codes,
    lm_logits,
    parse_settings,
    sample_batch,
    sequence_bits,
    train,
)

SR = 24000
ROOT = Path(__file__).resolve().parent.parent


def _lm_cfg(steps: int, **over: object) -> dict:
    """A tiny LM config (2 layers, width 32) that trains in seconds on one thread."""
    cfg = {"name": "unit_lm", "seed": 0, "device": "cpu", "threads": 1,
           "lm": {"dim": 32, "num_layers": 2, "hidden_scale": 2.0},
           "seq_len": 32,
           "optim": {"name": "adamw", "lr": 3e-3, "batch_size": 8, "steps": steps, "warmup_steps": 5,
                     "schedule": "cosine", "weight_decay": 0.0},
           "valid": {"max_items": 4},
           "report": {"items": 1},
           "log": {"every": 1, "valid_every": 1000, "checkpoint_every": 1000, "tensorboard": False}}
    for key, value in over.items():
        cfg[key] = value
    return cfg


def _structured_codes(num: int, seed: int, card: int = 1024, K: int = 4) -> CodeSet:
    """Sequences where codebook k cycles through a fixed pattern of 4 codes (random phase and
    length per sequence): after the first frame every code follows from the previous one."""
    patterns = np.random.default_rng(123).integers(0, card, size=(K, 4))
    rng = np.random.default_rng(seed)
    seqs = []
    for _ in range(num):
        length, phase = int(rng.integers(20, 60)), int(rng.integers(0, 4))
        t = (np.arange(length) + phase) % 4
        seqs.append(torch.from_numpy(np.stack([patterns[k, t] for k in range(K)])))
    return CodeSet.from_sequences(seqs, [f"seq{i}" for i in range(num)])


def _synthetic_data() -> CodeData:
    return CodeData(_structured_codes(40, seed=0), _structured_codes(4, seed=1), card=1024, frame_rate=75,
                    bandwidths=[1.5, 3.0], codebooks=[2, 4], codec_name="synthetic", codec_hash="0" * 64)


def _metrics(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


# -- the model's training path ------------------------------------------------------------------
def test_training_forward_equals_coder_path() -> None:
    s = parse_settings(_lm_cfg(1))
    lm = build_lm(s, 4, 64, 75)
    assert lm.past_context == 262  # int(3.5 s * 75 Hz), what load_lm_model gives a file
    idx = torch.randint(0, 65, (2, 3, 40))
    train_probs = torch.softmax(lm_logits(lm, idx), dim=-1)
    lm.eval()
    with torch.inference_mode():
        coder_probs, _ = lm(idx)
    torch.testing.assert_close(train_probs.detach(), coder_probs, rtol=0, atol=1e-6)
    # sequence_bits (forward over the sequence) equals stepping frame by frame as the coder does
    codes = torch.randint(0, 64, (3, 25))
    bits = sequence_bits(lm, codes)
    inputs = torch.cat([torch.zeros(3, 1, dtype=torch.long), codes[:, :-1] + 1], dim=1)
    state, stepped = None, []
    for t in range(codes.shape[1]):
        probs, state = lm.step(inputs[:, t], state)
        stepped.append(-torch.log2(probs.gather(-1, codes[:, t:t + 1]).double()).squeeze(-1))
    torch.testing.assert_close(torch.stack(stepped, dim=1), bits, rtol=0, atol=1e-5)


def test_windows_follow_the_coder_inputs() -> None:
    codes = CodeSet.from_sequences([torch.arange(12).view(2, 6), 100 + torch.arange(40).view(2, 20)],
                                   ["a", "b"])
    inputs, targets, offsets = sample_batch(codes, 64, 8, 2, np.random.default_rng(0))
    assert inputs.shape == targets.shape == (64, 2, 8)
    for b in range(64):
        start = int(offsets[b])
        valid = targets[b] != lm_solver.IGNORE
        n = int(valid[0].sum())
        assert n == 6 or n == 8  # the short sequence is padded, the long one is a full window
        t = targets[b, :, :n]
        assert torch.equal(inputs[b, :, 1:n], t[:, :-1] + 1)  # 1 + the previous frame's code
        if start == 0:
            assert torch.equal(inputs[b, :, 0], torch.zeros(2, dtype=torch.long))  # "no code"
        else:
            assert torch.equal(inputs[b, :, 0], t[:, 0])  # previous code + 1 = current here
        assert torch.equal(inputs[b, :, n:], torch.zeros_like(inputs[b, :, n:]))
    assert {int(o) for o in offsets} - {0} and int(offsets.max()) <= 12


# -- learning and resuming ------------------------------------------------------------------------
def test_structured_codes_are_learnt(tmp_path: Path) -> None:
    run = train(_lm_cfg(150), tmp_path / "run", progress=False, data=_synthetic_data())
    rows = _metrics(run)
    first = next(r for r in rows if r["step"] == 0 and "valid/bits_per_code/1.5kbps" in r)
    last = [r for r in rows if "valid/bits_per_code/3kbps" in r][-1]
    assert last["step"] == 150
    for bw in ("1.5", "3"):
        assert first[f"valid/bits_per_code/{bw}kbps"] > 9.5  # untrained: about log2(1024)
        assert last[f"valid/bits_per_code/{bw}kbps"] < 2.0, last  # well below the plain 10 bits
    train_bits = [r["train/bits_per_code"] for r in rows if "train/bits_per_code" in r]
    assert np.mean(train_bits[-10:]) < 0.3 * np.mean(train_bits[:10])
    assert {r["train/n_q"] for r in rows if "train/n_q" in r} == {2.0, 4.0}  # both bandwidths trained


def test_resume_is_exact(tmp_path: Path) -> None:
    data = _synthetic_data()
    cfg = _lm_cfg(6)
    _, straight = train(cfg, tmp_path / "a", progress=False, data=data, return_model=True)
    train(cfg, tmp_path / "b", max_steps=3, progress=False, data=data)
    assert torch.load(tmp_path / "b" / "checkpoint.pt", weights_only=True)["step"] == 3
    _, resumed = train(cfg, tmp_path / "b", progress=False, data=data, return_model=True)
    a, b = straight.state_dict(), resumed.state_dict()
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    lines_a = [r for r in _metrics(tmp_path / "a") if "train/bits_per_code" in r]
    lines_b = [r for r in _metrics(tmp_path / "b") if "train/bits_per_code" in r]
    assert [r["train/bits_per_code"] for r in lines_a] == [r["train/bits_per_code"] for r in lines_b]
    # the export of the last checkpoint loads with the public loader, weights unchanged
    exported = load_lm_model(tmp_path / "b" / "lm.safetensors")
    for key, value in exported.state_dict().items():
        assert torch.equal(value, b[key]), key
    info = lm_solver.read_lm_info(tmp_path / "b" / "lm.safetensors")
    assert info["codec"] == "synthetic" and info["step"] == 6 and info["n_q"] == 4
    # a run folder trained on another codec's codes is refused
    other = dataclasses.replace(data, codec_hash="1" * 64)
    with pytest.raises(ConfigError, match="another codec"):
        train(_lm_cfg(8), tmp_path / "b", progress=False, data=other)


# -- codes from a real codec: cache, export, compress -------------------------------------------------
def _fit_codebooks(codec: EncodecModel, wav: torch.Tensor) -> EncodecModel:
    """Codebook entries drawn from the latent residuals of ``wav`` [1, C, T], layer by layer, so
    that a random codec gives varied codes (a random encoder's latents are nearly constant)."""
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        residual = codec.encoder(wav)[0].t()  # [N, D]
        for layer in codec.quantizer.vq.layers:
            cb = layer._codebook
            pick = torch.randint(0, residual.shape[0], (cb.codebook_size,), generator=gen)
            noise = 1e-3 * residual.std(0) * torch.randn(cb.embed.shape, generator=gen)
            cb.embed.copy_(residual[pick] + noise)
            cb.embed_avg.copy_(cb.embed)
            cb.cluster_size.fill_(1.0)
            cb.inited.fill_(1.0)
            residual = residual - cb.embed[cb.quantize(residual)]
    return codec


@pytest.fixture(scope="module")
def codec_setup(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A tiny random codec (24 kHz, 4 codebooks of 1024, 1.5/3 kbps) saved to a file, a few
    synthetic audio files and train/valid manifests (with one unreadable file)."""
    folder = tmp_path_factory.mktemp("lm_codec")
    torch.manual_seed(0)
    config = EncodecConfig(name="unit_lm_24khz", n_filters=4, dimension=16, ratios=[8, 5, 4, 2], lstm=1,
                           n_q=4, bins=1024, target_bandwidths=[1.5, 3.0])
    codec = EncodecModel(config)
    rng = np.random.default_rng(0)
    rows, waves = [], []
    for i in range(4):
        t = np.arange(int(SR * (0.6 + 0.2 * i))) / SR
        x = 0.3 * np.sin(2 * np.pi * (150 + 60 * i) * t) + 0.02 * rng.standard_normal(t.shape)
        waves.append(torch.from_numpy(x.astype(np.float32)))
        path = folder / f"item{i}.wav"
        sf.write(path, x.astype(np.float32), SR)
        rows.append({"path": path.name, "duration": len(t) / SR, "sample_rate": SR, "channels": 1,
                     "category": "speech"})
    (folder / "broken.wav").write_bytes(b"RIFF not really a wav file")
    rows.append({"path": "broken.wav", "duration": 1.0, "sample_rate": SR, "channels": 1, "category": "speech"})
    codec_path = save_model(_fit_codebooks(codec, torch.cat(waves)[None, None]), folder / "codec.safetensors")
    train_m, valid_m = folder / "train.jsonl", folder / "valid.jsonl"
    train_m.write_text("".join(json.dumps(r) + "\n" for r in rows[:3] + rows[4:]))
    valid_m.write_text(json.dumps(rows[3]) + "\n")
    return {"folder": folder, "codec": codec, "codec_path": codec_path, "train": train_m, "valid": valid_m}


def test_codes_are_extracted_once_and_cached(codec_setup: dict, tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    codec: EncodecModel = codec_setup["codec"]
    codes, from_cache = extract_codes(codec, [str(codec_setup["train"])], tmp_path, progress=False)
    assert not from_cache
    assert len(codes) == 3 and codes.num_codebooks == 4  # the codec's largest bandwidth
    assert [Path(s["path"]).name for s in codes.skipped] == ["broken.wav"]
    # sequence 0 holds exactly what the codec gives for that file at 3 kbps
    wav, _ = sf.read(codec_setup["folder"] / "item0.wav", dtype="float32")
    codec.set_target_bandwidth(3.0)
    with torch.inference_mode():
        expected = codec.encode(torch.from_numpy(wav)[None, None])[0].codes[0]
    codec.bandwidth = None
    assert torch.equal(codes.sequence(0), expected)
    assert all(len(set(row.tolist())) > 5 for row in expected)  # varied codes in every codebook

    def no_encoding(*args: object, **kwargs: object) -> None:
        raise AssertionError("the cache was not used")

    monkeypatch.setattr(lm_codes, "_encode_file", no_encoding)  # where extract_codes looks it up
    again, from_cache = extract_codes(codec, [str(codec_setup["train"])], tmp_path, progress=False)
    assert from_cache
    assert torch.equal(again.codes, codes.codes) and torch.equal(again.offsets, codes.offsets)
    assert again.names == codes.names and again.skipped == codes.skipped
    # another manifest (or codec) is another cache entry: it is encoded
    with pytest.raises(AssertionError, match="the cache was not used"):
        extract_codes(codec, [str(codec_setup["valid"])], tmp_path, progress=False)


def test_train_lm_command_exports_a_model_that_codes_ecdc_files(codec_setup: dict, tmp_path: Path,
                                                                capsys: pytest.CaptureFixture) -> None:
    run = tmp_path / "run"
    args = ["train-lm", str(ROOT / "configs" / "lm_tiny.yaml"), f"codec={codec_setup['codec_path']}",
            f"data.train=[{codec_setup['train']}]", f"data.valid=[{codec_setup['valid']}]",
            f"data.cache_dir={tmp_path / 'cache'}", "optim.steps=4", "optim.batch_size=2", "seq_len=16",
            "threads=1", "report.items=1", "log.tensorboard=false", "--run-dir", str(run), "--no-progress"]
    assert cli.main(args) == 0
    lm_path = run / "lm.safetensors"
    assert (run / "checkpoint.pt").is_file() and lm_path.is_file()
    # the export names its run, and records the codec's weights hash as headers and `info` show it
    info = lm_solver.read_lm_info(lm_path)
    assert info["name"] == "unit_lm_24khz_lm_run"
    assert info["codec_weights_hash"] == model_hash(load_model(codec_setup["codec_path"]))
    # the end-of-run report: both bandwidths, real sizes, a verified round trip
    report = json.loads((run / "report.json").read_text())
    assert report["codec"] == "unit_lm_24khz" and report["items"] == 1
    assert [e["kbps"] for e in report["bandwidths"]] == [1.5, 3.0]
    for entry in report["bandwidths"]:
        assert entry["round_trip"] is True
        assert entry["plain_bytes"] > 0 and entry["lm_bytes"] > 0
        assert 0 < entry["ideal_bits_per_code"] < 30
    assert "| 1.5 kbps | 2 |" in (run / "report.md").read_text()
    # the exported file, as the CLI loads it, entropy-codes a file that decodes to the plain audio
    codec: EncodecModel = codec_setup["codec"]
    lm = load_lm_model(lm_path, codec=codec, num_codebooks=4)
    wav = torch.from_numpy(sf.read(codec_setup["folder"] / "item1.wav", dtype="float32")[0])[None]
    coded = compress(codec, wav, bandwidth=3.0, lm=lm)
    plain = compress(codec, wav, bandwidth=3.0)
    assert coded != plain
    assert torch.equal(decompress(coded, codec, lm=lm)[0], decompress(plain, codec)[0])
    # and through the command line, with --lm-model on both sides
    ecdc, out = tmp_path / "x.ecdc", tmp_path / "x.wav"
    assert cli.main(["-q", "compress", str(codec_setup["folder"] / "item1.wav"), str(ecdc), "-b", "3",
                     "--model", str(codec_setup["codec_path"]), "--lm-model", str(lm_path)]) == 0
    assert cli.main(["-q", "decompress", str(ecdc), str(out), "--model", str(codec_setup["codec_path"]),
                     "--lm-model", str(lm_path)]) == 0
    data = ecdc.read_bytes()
    assert parse_header(data)[0].use_lm and data != plain  # entropy coded with that model
    assert parse_header(data)[0].deterministic.lm_name == "unit_lm_24khz_lm_run"
    expected = decompress(plain, codec)[0]
    assert torch.equal(decompress(data, codec, lm=lm)[0], expected)
    decoded, _ = sf.read(out, dtype="float32", always_2d=True)
    assert decoded.shape == (wav.shape[-1], 1)
    assert np.abs(decoded.T - expected.clamp(-1, 1).numpy()).max() <= 0.5 / 32768 + 1e-6
    # the report command measures the same thing for any LM file; it never overwrites silently
    capsys.readouterr()
    rep_args = ["train-lm", "report", "--lm", str(lm_path), "--codec", str(codec_setup["codec_path"]),
                "--manifest", str(codec_setup["valid"]), "--items", "1", "--out", str(tmp_path / "rep"),
                "--no-progress", "--no-verify"]
    assert cli.main(rep_args) == 0
    again = json.loads((tmp_path / "rep" / "report.json").read_text())
    assert again["bandwidths"][1]["lm_bytes"] == report["bandwidths"][1]["lm_bytes"]
    assert cli.main(rep_args) == 1
    assert "already exists" in capsys.readouterr().err


def test_config_errors_name_the_field(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(ConfigError, match="optim.lr"):
        parse_settings(_lm_cfg(1, optim={"lr": "fast"}))
    with pytest.raises(ConfigError, match="lm.num_heads"):
        parse_settings(_lm_cfg(1, lm={"dim": 32, "num_heads": 4}))
    with pytest.raises(ConfigError, match="optim.schedule"):
        parse_settings(_lm_cfg(1, optim={"schedule": "linear"}))
    with pytest.raises(ConfigError, match="seq_len"):
        parse_settings(_lm_cfg(1, seq_len=0))
    # a bad codec name is one line and exit status 1, before the run folder is made
    manifest = tmp_path / "train.jsonl"
    manifest.write_text("")
    assert cli.main(["train-lm", str(ROOT / "configs" / "lm_tiny.yaml"), "codec=no_such_codec",
                     f"data.train=[{manifest}]", "data.valid=[]", "--run-dir", str(tmp_path / "r"),
                     "--no-progress"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no_such_codec" in err[0]
    assert not (tmp_path / "r").exists()


def test_missing_manifest_is_one_line_before_the_run_folder(tmp_path: Path,
                                                            capsys: pytest.CaptureFixture) -> None:
    """The shipped config without its corpus: one error line naming the manifest and the
    command that builds it, exit status 1, and no run folder (no config.json left behind)."""
    run = tmp_path / "r"
    missing = tmp_path / "data" / "tiny_24k" / "manifests" / "train.jsonl"
    assert cli.main(["train-lm", str(ROOT / "configs" / "lm_tiny.yaml"), f"data.train=[{missing}]",
                     "--run-dir", str(run), "--no-progress"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"opencodec train-lm: error: config field data.train: no manifest file {missing}; "
                   f"build the corpus first: python -m opencodec.data.corpus build --preset tiny "
                   f"--out {tmp_path / 'data'}"]
    assert not run.exists()


def test_override_of_an_unknown_key_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """A typo in an override is a usage error naming the closest key; a key the trainer reads
    although the config leaves it out is accepted."""
    config = tmp_path / "lm.yaml"
    config.write_text("name: x\ncodec: opencodec_24khz\noptim: {steps: 10}\n")
    assert cli.main(["train-lm", str(config), "optim.stpes=3", "--run-dir", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert "error: override optim.stpes=3: no key optim.stpes in the config (did you mean optim.steps?)" in err
    assert not (tmp_path / "r").exists()
    cfg = load_config(config, ["optim.grad_clip=0.5", "lm.dim=64", "report={items: 0}"], LM_OPTIONAL_KEYS)
    s = parse_settings(cfg)
    assert (s.grad_clip, s.dim, s.report_items) == (0.5, 64, 0)
    with pytest.raises(ConfigError, match="no key optim.steps_per_epoch"):  # a codec-trainer key
        load_config(config, ["optim.steps_per_epoch=5"], LM_OPTIONAL_KEYS)


@pytest.mark.parametrize("name", ["lm_tiny", "lm_opencodec_24khz", "lm_opencodec_24khz_cpu"])
def test_shipped_configs_parse(name: str) -> None:
    cfg = load_config(ROOT / "configs" / f"{name}.yaml", ["optim.steps=3"], LM_OPTIONAL_KEYS)
    s = parse_settings(cfg)
    assert s.steps == 3 and s.codec == "opencodec_24khz" and s.train_manifests and s.valid_manifests
    if name == "lm_opencodec_24khz":  # the paper's sizes
        assert (s.dim, s.num_heads, s.num_layers, s.hidden_scale, s.past_context_s) == (200, 8, 5, 4.0, 3.5)
