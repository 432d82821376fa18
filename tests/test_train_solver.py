"""The trainer end to end on a tiny model: resume is exact, export loads, and two
processes (torch.distributed, gloo) stay identical and match one process."""

from __future__ import annotations

import json
import math
import os
import socket
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
import torch.multiprocessing as mp

from opencodec.errors import ModelLoadError
from opencodec.pretrained import load_model
from opencodec.train.solver import learning_rate_at, train

SR = 24000


def _corpus(folder: Path) -> tuple[Path, Path]:
    """A few seconds of synthetic 'speech-like' and noise files, and their manifests."""
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(6):
        t = np.arange(int(SR * (1.5 + 0.3 * i))) / SR
        f0 = 110 + 30 * i
        x = sum(np.sin(2 * np.pi * f0 * k * t) / k for k in range(1, 8)) * (0.5 + 0.5 * np.sin(2 * np.pi * 3 * t))
        x = 0.1 * x / np.abs(x).max() + 0.005 * rng.standard_normal(t.shape)
        path = folder / f"item{i}.wav"
        sf.write(path, x.astype(np.float32), SR)
        rows.append({"path": str(path), "duration": len(t) / SR, "sample_rate": SR, "channels": 1,
                     "category": "speech" if i % 2 else "music"})
    train_manifest, valid_manifest = folder / "train.jsonl", folder / "valid.jsonl"
    train_manifest.write_text("".join(json.dumps(r) + "\n" for r in rows[:5]))
    valid_manifest.write_text(json.dumps(rows[5]) + "\n")
    return train_manifest, valid_manifest


def _config(train_manifest: Path, valid_manifest: Path, steps: int) -> dict:
    return {
        "name": "unit", "seed": 0, "device": "cpu", "threads": 1,
        "model": {"name": "unit_24khz", "n_filters": 4, "dimension": 16, "ratios": [8, 5, 4, 2],
                  "lstm": 1, "n_q": 4, "bins": 16, "target_bandwidths": [0.6, 1.2]},
        "data": {"train": [str(train_manifest)], "valid": [str(valid_manifest)],
                 "segment_seconds": 0.2, "num_workers": 0},
        "valid": {"items": 1, "seconds": 0.6, "bandwidths": [1.2]},
        "optim": {"lr": 3e-4, "batch_size": 4, "steps": steps, "steps_per_epoch": 4},
        "losses": {"l1": 0.1, "mel": 1.0, "adv": 3.0, "feat": 3.0, "commit": 1.0},
        "adversarial": {"enabled": True, "disc_prob": 0.67, "filters": 4},
        "quantizer": {"threshold_ema_dead_code": 0.5, "kmeans_iters": 5, "warmup_steps": 1},
        "ema": 0.9, "amp": "none",
        "log": {"every": 1, "valid_every": 100, "checkpoint_every": 3, "tensorboard": False, "audio": False},
    }


def _state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_resume_is_exact_and_export_loads(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    train_m, valid_m = _corpus(tmp_path / "data")
    cfg = _config(train_m, valid_m, steps=6)
    cfg["optim"].update(schedule="cosine", min_lr_ratio=0.05)  # the resumed run must continue the curve
    _, straight, straight_disc = train(cfg, tmp_path / "a", progress=False, return_models=True)
    # Stop after 3 steps (a checkpoint), then resume to 6 in a new call.
    train(cfg, tmp_path / "b", max_steps=3, progress=False)
    assert "resumed from" not in capsys.readouterr().err
    _, resumed, resumed_disc = train(cfg, tmp_path / "b", progress=False, return_models=True)
    # Training is deterministic, so equal weights alone would not show that the second call
    # resumed: a run that retrained from step 0 ends with the same weights. It must say it
    # resumed, and the log must hold each step once (a restart would log steps 1-3 again).
    assert f"resumed from {tmp_path / 'b' / 'checkpoint.pt'} at step 3" in capsys.readouterr().err
    for a, b in ((straight, resumed), (straight_disc, resumed_disc)):
        sa, sb = _state(a), _state(b)
        for key in sa:
            assert torch.equal(sa[key], sb[key]), key
    exported = load_model(tmp_path / "b" / "model.safetensors")
    assert exported.name == "unit_24khz"
    with pytest.raises(ModelLoadError, match=r"training checkpoint .* load .*model\.safetensors"):
        load_model(tmp_path / "b" / "checkpoint.pt")  # a user's likely mistake, named
    metrics = [json.loads(line) for line in (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()]
    assert any("valid/si_snr/1.2kbps" in m for m in metrics)
    assert any("balancer/share/mel" in m for m in metrics)
    assert [m["step"] for m in metrics if "train/lr" in m] == [1, 2, 3, 4, 5, 6]
    assert [m["step"] for m in metrics if "valid/si_snr/1.2kbps" in m] == [0, 3, 6]  # no second baseline
    lrs = {m["step"]: m["train/lr"] for m in metrics if "train/lr" in m}
    # logged after step k (1-based) is the rate that step used, step k - 1 of the curve
    assert lrs == pytest.approx({k: learning_rate_at(k - 1, 3e-4, 6, "cosine", 0.05) for k in range(1, 7)})


def test_cosine_learning_rate_schedule() -> None:
    assert learning_rate_at(0, 1e-3, 100, "cosine") == pytest.approx(1e-3)
    assert learning_rate_at(50, 1e-3, 100, "cosine") == pytest.approx(5e-4)
    assert learning_rate_at(50, 1e-3, 100, "cosine", min_lr_ratio=0.1) == pytest.approx(5.5e-4)
    assert learning_rate_at(100, 1e-3, 100, "cosine", min_lr_ratio=0.1) == pytest.approx(1e-4)
    assert learning_rate_at(250, 1e-3, 100, "cosine") == pytest.approx(0.0)  # past the end: stays at the minimum
    assert learning_rate_at(25, 1e-3, 100, "cosine") == pytest.approx(1e-3 * (1 + math.cos(math.pi / 4)) / 2)
    assert learning_rate_at(77, 1e-3, 100) == 1e-3
    # warm-up (the entropy-model trainer's): linear to lr, then the cosine over the remaining steps
    assert learning_rate_at(0, 1e-3, 100, "cosine", warmup_steps=10) == pytest.approx(1e-4)
    assert learning_rate_at(9, 1e-3, 100, "cosine", warmup_steps=10) == pytest.approx(1e-3)
    assert learning_rate_at(55, 1e-3, 100, "cosine", warmup_steps=10) == pytest.approx(5e-4)
    assert learning_rate_at(5, 1e-3, 100, "constant", warmup_steps=10) == pytest.approx(6e-4)
    with pytest.raises(ValueError, match="optim.schedule.*'linear'"):
        learning_rate_at(0, 1e-3, 100, "linear")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world: int, port: int, cfg: dict, out: str) -> None:
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    _, model, disc = train(cfg, Path(out) / "run", progress=False, return_models=True)
    torch.save({"model": _state(model), "disc": _state(disc)}, Path(out) / f"rank{rank}.pt")
    torch.distributed.destroy_process_group()


@pytest.mark.slow
def test_two_processes_match_one(tmp_path: Path) -> None:
    train_m, valid_m = _corpus(tmp_path / "data")
    steps = 5
    cfg = _config(train_m, valid_m, steps=steps)
    _, init, init_disc = train(cfg, tmp_path / "init", max_steps=0, progress=False, return_models=True)
    _, single, single_disc = train(cfg, tmp_path / "single", progress=False, return_models=True)
    mp.start_processes(_worker, args=(2, _free_port(), cfg, str(tmp_path)), nprocs=2, join=True,
                       start_method="spawn")
    r0 = torch.load(tmp_path / "rank0.pt", weights_only=True)
    r1 = torch.load(tmp_path / "rank1.pt", weights_only=True)
    for part in ("model", "disc"):
        for key, value in r0[part].items():
            assert torch.equal(value, r1[part][key]), f"ranks differ: {part} {key}"
    # Against one process with the same global batch, the CHANGE from the initial value (an
    # Adam step moves an element by about lr): per part, the two changes differ by under 5% in
    # norm and, for 99% of the elements, by under lr/10; so does each tensor of 64 elements or
    # more in norm (measured: at most 1.8%, 0.05 lr). A run that made no (or other) updates
    # fails: the one-process run moved nearly every tensor by over one step. Tiny tensors
    # (a 4-element bias) are judged within their part only: an element whose gradient is
    # near 0 can take an Adam step of ~lr either way from last-bit differences. The
    # codebooks and their EMA counts are left out, and are why the rest differs at all:
    # batched float sums differ in the last bits between 2x2 and 1x4 items, which can move a
    # near-tied vector to another entry.
    lr = cfg["optim"]["lr"]
    start = {"model": _state(init), "disc": _state(init_disc)}
    ref = {"model": _state(single), "disc": _state(single_disc)}
    compared = moved_tensors = 0
    for part in ("model", "disc"):
        gaps, moves = [], []
        for key, value in r0[part].items():
            if key.endswith(("cluster_size", "embed_avg", "embed", "inited")):
                continue
            if not value.dtype.is_floating_point:
                assert torch.equal(value, ref[part][key]), key
                continue
            moved = ref[part][key] - start[part][key]
            gap = (value - start[part][key]) - moved
            compared += 1
            if float(moved.abs().max()) == 0:  # no gradient reaches it (a few biases): untouched
                assert torch.equal(value, start[part][key]), f"{part} {key}"
                continue
            moved_tensors += float(moved.abs().max()) > lr
            gaps.append(gap.flatten())
            moves.append(moved.flatten())
            if moved.numel() >= 64:
                assert float(gap.norm()) <= 0.05 * float(moved.norm()), f"{part} {key}"
        gap_all, moved_all = torch.cat(gaps), torch.cat(moves)
        assert float(gap_all.norm()) <= 0.05 * float(moved_all.norm()), part
        assert float(gap_all.abs().quantile(0.99)) <= lr / 10, part
    assert compared > 200 and moved_tensors >= 0.95 * compared, (moved_tensors, compared)


@pytest.mark.parametrize("name", ["tiny_24khz", "opencodec_24khz", "opencodec_cpu_24khz", "encodec_24khz", "encodec_48khz"])
def test_shipped_configs_build(name: str, request: pytest.FixtureRequest) -> None:
    """Every config in configs/ parses and builds its model (the paper ones load official weights)."""
    from opencodec import EncodecConfig, EncodecModel
    from opencodec.train.solver import load_config

    root = Path(__file__).resolve().parent.parent
    cfg = load_config(root / "configs" / f"{name}.yaml", ["optim.steps=7"])
    assert cfg["optim"]["steps"] == 7
    model = EncodecModel(EncodecConfig.from_dict(cfg["model"]))
    if name.startswith("encodec_"):
        # the official architecture's state dict (random weights) loads strictly: same keys and shapes
        official = request.getfixturevalue("official_models")[name].state_dict()
        ours = model.state_dict()
        assert ours.keys() == official.keys()
        assert {k: v.shape for k, v in ours.items()} == {k: v.shape for k, v in official.items()}
        model.load_state_dict(official, strict=True)


def test_bundled_model_is_the_cpu_config() -> None:
    """The bundled default model has exactly the architecture configs/opencodec_cpu_24khz.yaml
    trains (same configuration, same tensors and shapes)."""
    from opencodec import EncodecConfig, EncodecModel
    from opencodec.pretrained import load_model
    from opencodec.train.solver import load_config

    root = Path(__file__).resolve().parent.parent
    cfg = load_config(root / "configs" / "opencodec_cpu_24khz.yaml")
    config = EncodecConfig.from_dict(cfg["model"])
    bundled = load_model()
    # the same configuration, but loaded under its release's name (opencodec.releases)
    assert bundled.name == "opencodec_24khz_v5" and config.name == "opencodec_24khz"
    assert {**bundled.config.to_dict(), "name": config.name} == config.to_dict()
    fresh = EncodecModel(config).state_dict()
    shipped = bundled.state_dict()
    assert fresh.keys() == shipped.keys()
    assert all(fresh[k].shape == shipped[k].shape for k in fresh)


def test_mel_alpha_option() -> None:
    """``mel_alpha`` sets the log-mel weight per scale: default 1 (paper), a number, or
    audiocraft's sqrt(2^i - 1); anything else is an error naming the field."""
    from opencodec.train.solver import build_mel_loss

    assert build_mel_loss({}, SR).alphas == [1.0] * 7
    assert build_mel_loss({"mel_alpha": 0.5, "mel_scales": [6, 8]}, SR).alphas == [0.5, 0.5]
    loss = build_mel_loss({"mel_alpha": "audiocraft"}, SR)
    assert loss.scales == list(range(5, 12))
    assert loss.alphas == pytest.approx([31 ** 0.5, 63 ** 0.5, 127 ** 0.5, 255 ** 0.5, 511 ** 0.5,
                                         1023 ** 0.5, 2047 ** 0.5])
    for bad in ("paper", -1.0, True):
        with pytest.raises(ValueError, match="mel_alpha"):
            build_mel_loss({"mel_alpha": bad}, SR)


def test_fine_tuning_an_inference_only_export_estimates_codebook_statistics(tmp_path: Path) -> None:
    """``init_from`` an inference-only export (no EMA statistics): the trainer estimates
    them (cluster sizes summing to the vectors of one step, ``embed_avg = size * embed``)
    instead of keeping the unit sizes that dead-code expiry would replace at once."""
    from opencodec.pretrained import save_model
    from opencodec.train.codebook_stats import UNSEEN_CLUSTER_SIZE, estimate_codebook_statistics

    train_m, valid_m = _corpus(tmp_path / "data")
    cfg = _config(train_m, valid_m, steps=4)
    run = train(cfg, tmp_path / "base", progress=False)
    slim = save_model(load_model(run / "model.safetensors"), tmp_path / "slim.safetensors", inference_only=True)
    refilled = load_model(slim)
    codebook = refilled.quantizer.vq.layers[0]._codebook
    assert torch.equal(codebook.cluster_size, torch.ones(16))

    frames = 15  # 0.2 s segments, hop 320
    wav = torch.from_numpy(sf.read(str(tmp_path / "data" / "item0.wav"), dtype="float32")[0][: 7 * 4800])
    refilled.train()
    estimate_codebook_statistics(refilled, wav.view(7, 1, 4800), batch_size=4)
    for layer in refilled.quantizer.vq.layers:
        cb = layer._codebook
        unseen = cb.cluster_size == UNSEEN_CLUSTER_SIZE  # entries no segment used: kept, with a tiny size
        seen_total = float(cb.cluster_size[~unseen].sum())
        assert seen_total == pytest.approx(4 * frames) and (cb.cluster_size[~unseen] > 0.5).all()
        torch.testing.assert_close(cb.embed_avg, cb.embed * cb.cluster_size[:, None])
    before = refilled.quantizer.vq.layers[0]._codebook.embed.clone()
    layer0 = refilled.quantizer.vq.layers[0]._codebook
    layer0.threshold_ema_dead_code = 0.0  # expiry off: an unused entry keeps its vector
    layer0.update_(before[:1].repeat(3, 1), torch.zeros(3, dtype=torch.long))
    assert torch.allclose(layer0.embed[1:], before[1:], rtol=0.02, atol=1e-6)
    assert refilled.bandwidth is None and refilled.training  # left as it was

    # Through the trainer, with expiry at 1.0: one step keeps the estimated EMA mass
    # (sum of sizes ~ vectors per step, plus 1 per entry replaced), where unit sizes would
    # have decayed towards 16 * 0.99 plus this step's share.
    cfg = dict(_config(train_m, valid_m, steps=1), init_from=str(slim),
               quantizer={"threshold_ema_dead_code": 1.0, "warmup_steps": 0})
    _, tuned, _ = train(cfg, tmp_path / "tuned", progress=False, return_models=True)
    for layer in tuned.quantizer.vq.layers:
        total = float(layer._codebook.cluster_size.sum())
        assert 4 * frames - 1e-3 <= total <= 4 * frames + 16, total


def test_missing_manifest_is_one_line_before_the_run_folder(tmp_path: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    """A config whose training manifest is missing (the corpus not built): one error line that
    names it and the command building it, exit status 1, and no run folder or config.json."""
    import yaml

    from opencodec import cli
    from opencodec.train.lm_config import ConfigError

    train_m, valid_m = _corpus(tmp_path / "corpus")
    missing = tmp_path / "data" / "tiny_24k" / "manifests" / "train.jsonl"
    config = tmp_path / "unit.yaml"
    config.write_text(yaml.safe_dump(_config(missing, valid_m, steps=1)))
    run = tmp_path / "run"
    assert cli.main(["train", str(config), "--run-dir", str(run), "--no-progress"]) == 1
    assert capsys.readouterr().err.splitlines() == [
        f"opencodec train: error: config field data.train: no manifest file {missing}; build the corpus "
        f"first: python -m opencodec.data.corpus build --preset tiny --out {tmp_path / 'data'}"]
    assert not run.exists()
    # a missing validation manifest too, and a manifest that is not a corpus one (no command)
    with pytest.raises(ConfigError, match=r"^config field data.valid: no manifest file \S*nowhere.jsonl$"):
        train(_config(train_m, tmp_path / "nowhere.jsonl", steps=1), run, progress=False)
    assert not run.exists()


def test_override_of_an_unknown_key_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``optim.step=500`` (for ``optim.steps``) is a usage error naming the key and the close
    match, not a new key that training ignores; keys the trainer reads although a config omits
    them are accepted, and so are the overrides the docs and device scripts use."""
    import yaml

    from opencodec import cli
    from opencodec.train.lm_config import ConfigError
    from opencodec.train.solver import load_config

    root = Path(__file__).resolve().parent.parent
    tiny = root / "configs" / "tiny_24khz.yaml"
    with pytest.raises(ConfigError) as exc:
        load_config(tiny, ["optim.steps=5", "optim.step=500"])
    assert str(exc.value) == "override optim.step=500: no key optim.step in the config (did you mean optim.steps?)"
    for typo, hint in (("steps=500", "did you mean optim.steps?"), ("balancer.enable=false", "balancer.enabled"),
                       ("model.lsmt=2", "model.lstm"), ("data.augment.gain=[1,2]", "data.augment.gain_db"),
                       ("optim.nosuch=3", "keys of optim: batch_size, betas,"),
                       ("optim.warmup_steps=9", r"did you mean quantizer\.warmup_steps")):  # an LM key
        with pytest.raises(ConfigError, match=f"override {typo.split('=')[0]}=.*{hint}"):
            load_config(tiny, [typo])
    run = tmp_path / "run"
    assert cli.main(["train", str(tiny), "optim.nosuch=3", "--run-dir", str(run)]) == 2
    assert "opencodec train: error: override optim.nosuch=3: no key optim.nosuch" in capsys.readouterr().err
    assert not run.exists()

    # optional keys: the unit config has no balancer, init or loader settings
    train_m, valid_m = _corpus(tmp_path / "corpus")
    config = tmp_path / "unit.yaml"
    config.write_text(yaml.safe_dump(_config(train_m, valid_m, steps=1)))
    cfg = load_config(config, ["balancer.enabled=false", "adversarial.disc_warmup_steps=3", "init=data_dependent",
                               "data.augment.gain_db=[-3,3]", "model.causal=true", "optim.lr_disc=1e-4",
                               "balancer={ema_decay: 0.9}", "cudnn_benchmark=true", "data.loader=device"])
    assert cfg["balancer"] == {"ema_decay": 0.9} and cfg["data"]["augment"] == {"gain_db": [-3, 3]}
    assert cfg["adversarial"]["disc_warmup_steps"] == 3 and cfg["model"]["causal"] is True
    # the overrides of docs/training/*.md and scripts/device/*.sh, on every codec config
    used = ["amp=bf16", "optim.batch_size=64", "data.loader=device", "cudnn_benchmark=true", "compile=true",
            "device=cuda", "max_minutes=7", "data.train=[a.jsonl]", "data.valid=[b.jsonl]",
            "data.augment.noise_manifests=[n.jsonl]", "data.num_workers=12", "log.tensorboard=false",
            "optim.steps=3000", "adversarial.enabled=true", "adversarial.start_step=0", "adversarial.filters=32",
            "adversarial.disc_warmup_steps=300", "optim.lr_disc=1e-4", "balancer.enabled=false",
            "losses.l1=0.1", "mel_alpha=audiocraft", "quantizer.warmup_steps=0",
            "quantizer.threshold_ema_dead_code=0", "init_from=x.safetensors", "optim.schedule=cosine",
            "optim.lr_scale=sqrt", "optim.lr_reference_batch=8", "optim.fused=true", "data.segment_seconds=2",
            "data.device_storage=pinned", "log.every=50", "threads=2", "seed=1", "optim.steps_per_epoch=100",
            "losses.adv=1", "losses.feat=1", "losses.mel=1", "log.checkpoint_every=5", "log.valid_every=5",
            "log.audio=false", "valid.items=2", "valid.seconds=1"]
    for name in ("tiny_24khz", "opencodec_24khz", "opencodec_cpu_24khz", "encodec_24khz", "encodec_48khz"):
        assert load_config(root / "configs" / f"{name}.yaml", used)["amp"] == "bf16"


def test_optional_keys_cover_what_the_trainers_read() -> None:
    """The one list of keys an override may add (train/config.py, with load_config) names every key that
    solver.py, batches.py and step.py read with .get / [], and every field of parse_settings."""
    import re

    from opencodec.train import config as train_config
    from opencodec.train import solver
    from opencodec.train.lm_config import parse_settings

    src = Path(solver.__file__).parent
    text = "".join((src / f).read_text() for f in ("solver.py", "batches.py", "step.py"))
    receivers = r"(?:cfg|data|data_cfg|optim|adv|qcfg|log_cfg|valid|losses_cfg|\))"
    read = set(re.findall(receivers + r'\.get\("(\w+)"', text)) | set(re.findall(r'cfg\["(\w+)"\]', text))
    names = {part for k in train_config.codec_optional_keys() for part in k.split(".")}  # sections and leaves
    assert read and read <= names, read - names
    lm_read = set(re.findall(r'(?:_get|_kbps_list)\(cfg, "([\w.]+)"',  # the settings' two readers
                             Path(parse_settings.__code__.co_filename).read_text()))
    assert lm_read | {"run_dir"} == set(train_config.LM_OPTIONAL_KEYS)
