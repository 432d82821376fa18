"""Train an EnCodec codec: ``opencodec train CONFIG [key=value ...]``.

Distributed: ``torchrun --nproc_per_node N -m opencodec.train CONFIG [key=value ...]``.

This file reads top to bottom, like nanoGPT's ``train.py``:

1. configuration (a YAML file from ``configs/`` plus ``key=value`` overrides, ``config.py``);
2. the generator (``EncodecModel``), the MS-STFT discriminator, Adam optimisers (learning
   rate constant, or with ``optim.schedule=cosine`` annealed to ``optim.min_lr_ratio`` times
   itself, default 0, over ``optim.steps``), the loss balancer and an EMA copy of the generator;
3. data: random 1 s segments with augmentation (``opencodec.data.AudioDataset``),
   sharded so that N processes see exactly the global batch one process would;
4. resume from ``<run_dir>/checkpoint.pt`` when it exists (model, discriminator,
   optimisers, balancer, EMA, random states and step: the run continues exactly);
5. the loop: per step the number of codebooks is drawn uniformly from the model's
   bandwidths (same on every rank), the generator is updated with the balanced
   time/mel/adversarial/feature losses plus the commitment loss (outside the balancer),
   and the discriminator with probability ``adversarial.disc_prob`` (``step.py`` holds the
   step and its throughput levers: bf16, compile, fused Adam, no host sync per step). The
   adversary starts at ``adversarial.start_step``; its first ``adversarial.disc_warmup_steps``
   train the discriminator alone on the frozen generator. ``optim.lr_disc`` sets the
   discriminator's own rate, ``balancer.enabled: false`` sums the weighted losses instead;
6. periodic validation on held-out audio (SI-SNR, mel distance, codebook usage, at each
   of a few bandwidths), TensorBoard logs, a ``metrics.jsonl`` log, checkpoints and an
   export of the generator to ``<run_dir>/model.safetensors`` that ``load_model`` reads.

The loop's helpers live beside it: the data of part 3 in ``batches.py``, random states,
seeds and atomic checkpoint writes in ``run_state.py`` (shared with the entropy model's
trainer), the EMA codebook statistics of a fine-tuned inference-only export in
``codebook_stats.py``.

Distributed training keeps codebooks identical across ranks: k-means and dead-code
replacement use the gathered global batch, EMA statistics are summed over ranks (see
``quantization/vq.py``), and the balancer's gradient norms are averaged over ranks.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import sys
import time
import typing as tp
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..argtypes import count_arg, positive_float
from ..errors import ConfigError, OpenCodecError, one_line, print_traceback_if_asked
from ..model import EncodecConfig, EncodecModel
from ..identity import export_name
from ..pretrained import load_model, save_model
from . import distributed
from .balancer import Balancer
from .batches import (_batches, _device_batches, _device_corpus, _train_dataset, _training_segments, _valid_items,
                      check_manifests)
from .codebook_stats import CODEBOOK_STATISTICS_ITEMS, _has_refilled_codebook_statistics, estimate_codebook_statistics
from .config import config_errors, load_config
from .discriminator import MultiScaleSTFTDiscriminator
from .losses import MultiScaleMelLoss, audiocraft_alphas, mel_distance, si_snr
from .run_state import (_atomic_torch_save, _rng_state, _seed_everything, _set_rng_state, _step_rng,
                        load_run_weights)
from .step import (MetricAccumulator, StepParts, TrainerModule, autocast_for, compile_models, configure_backends,
                   discriminator_step, frozen_generator_output, generator_step, make_adam, scaled_learning_rate)

CHECKPOINT = "checkpoint.pt"
EXPORT = "model.safetensors"


# -- 1. configuration ------------------------------------------------------------------------
def build_mel_loss(cfg: dict[str, tp.Any], sample_rate: int) -> MultiScaleMelLoss:
    """The multi-scale mel loss a config asks for.

    ``mel_scales: [lo, hi]`` gives window sizes ``2^lo .. 2^(hi-1)`` samples (default the
    paper's 2^5..2^11); ``mel_alpha`` weighs the log-mel L2 term against the linear L1 term
    at every scale: a number (default 1, the paper), or ``audiocraft`` for audiocraft's
    ``sqrt(2^i - 1)``, which puts most of the loss on log energies (quiet parts, high bands).
    """
    scales = range(*cfg.get("mel_scales", [5, 12]))
    alpha = cfg.get("mel_alpha", 1.0)
    if alpha == "audiocraft":
        alpha = audiocraft_alphas(scales)
    elif isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or alpha < 0:
        raise ConfigError(f"mel_alpha: expected a number >= 0 or 'audiocraft', got {alpha!r}")
    return MultiScaleMelLoss(sample_rate, scales=scales, alpha=alpha)


def _device(cfg: dict, info: distributed.DistInfo) -> torch.device:
    want = cfg.get("device", "auto")
    if want == "auto":
        want = "cuda" if torch.cuda.is_available() else "cpu"
    if want == "cuda":
        torch.cuda.set_device(info.local_rank)
        return torch.device("cuda", info.local_rank)
    return torch.device(want)


# -- 6. validation -------------------------------------------------------------------------------
@torch.no_grad()
def validate(model: EncodecModel, items: list[torch.Tensor], device: torch.device,
             bandwidths: tp.Sequence[float]) -> dict[str, float]:
    """Mean SI-SNR (dB) and mel distance per bandwidth, and first-codebook usage.

    Usage is the fraction of the first codebook's entries used over all items at the
    lowest bandwidth, and the perplexity ``exp(entropy)`` of their distribution
    (1 = collapsed to a single code).
    """
    model.eval()
    out: dict[str, float] = {}
    first_codes = []
    for i, bw in enumerate(bandwidths):
        model.set_target_bandwidth(bw)
        snrs, mels = [], []
        for x in items:
            x = x.to(device)
            frames = model.encode(x)
            if i == 0:
                first_codes += [f.codes[0, 0].cpu() for f in frames]
            y = model.decode(frames)[:, :, : x.shape[-1]]
            snrs.append(si_snr(y, x).mean().item())
            mels.append(float(mel_distance(y, x, model.sample_rate)))
        out[f"si_snr/{bw:g}kbps"] = float(np.mean(snrs))
        out[f"mel_distance/{bw:g}kbps"] = float(np.mean(mels))
    counts = torch.bincount(torch.cat(first_codes), minlength=model.bins).double()
    p = counts[counts > 0] / counts.sum()
    out["codebook0/used_fraction"] = float((counts > 0).double().mean())
    out["codebook0/perplexity"] = math.exp(-(p * p.log()).sum().item())
    return out


def _spectrogram_image(x: torch.Tensor) -> torch.Tensor:
    """Log-power spectrogram of x [T] as an image [1, F, N] in [0, 1] (low frequencies at the bottom)."""
    spec = torch.stft(x.float().cpu(), 1024, 256, window=torch.hann_window(1024), return_complex=True).abs()
    db = 20 * torch.log10(spec.clamp_min(1e-5))
    db = (db - db.max() + 80).clamp_min(0) / 80
    return db.flip(0)[None]


# -- 2. + 5. the run ------------------------------------------------------------------------------
def _build_model(cfg: dict) -> EncodecModel:
    init_from = cfg.get("init_from")
    if init_from:
        return load_model(init_from)  # fine-tuning: the checkpoint's own configuration
    return EncodecModel(EncodecConfig.from_dict(cfg["model"]))


def _maybe_data_dependent_init(cfg: dict, model: EncodecModel, device: torch.device, run: Path) -> None:
    """``init: data_dependent`` on a fresh run (not when resuming or fine-tuning). Every rank
    computes the same rescaling from the same batch, so the weights stay identical."""
    if cfg.get("init", "default") not in ("default", "data_dependent"):
        raise ConfigError(f"init must be 'default' or 'data_dependent', got {cfg.get('init')!r}")
    if cfg.get("init") == "data_dependent" and not cfg.get("init_from") and not (run / CHECKPOINT).exists():
        _data_dependent_init(cfg, model, device)


def _data_dependent_init(cfg: dict, model: EncodecModel, device: torch.device) -> None:
    """Rescale a fresh model's convolutions on a batch of training audio (``train/init.py``)."""
    from .init import data_dependent_init

    wav = _training_segments(cfg, model, int(cfg.get("init_items", 16))).to(device)
    data_dependent_init(model, wav)


def learning_rate_at(step: int, lr: float, total_steps: int, schedule: str = "constant",
                     min_lr_ratio: float = 0.0, warmup_steps: int = 0) -> float:
    """The learning rate for training step ``step`` (0-based) of ``total_steps``; shared by
    the codec and entropy-model trainers.

    A linear warm-up to ``lr`` over the first ``warmup_steps``, then ``constant`` keeps
    ``lr`` and ``cosine`` anneals it to ``min_lr_ratio * lr`` at step ``total_steps``:
    lr * (r + (1 - r) * (1 + cos(pi * progress)) / 2), progress going from 0 after the
    warm-up to 1 at the end (and staying there). A function of the step alone, so a resumed
    run continues the same curve.
    """
    if schedule not in ("constant", "cosine"):
        raise ConfigError(f"optim.schedule: expected 'constant' or 'cosine', got {schedule!r}")
    if warmup_steps and step < warmup_steps:
        return lr * (step + 1) / warmup_steps
    if schedule == "constant":
        return lr
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    return lr * (min_lr_ratio + (1 - min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))


def train(cfg: dict, run_dir: str | os.PathLike[str] | None = None, max_steps: int | None = None,
          progress: bool = True, max_minutes: float | None = None,
          return_models: bool = False) -> tp.Any:
    """Run (or resume) training as configured; returns the run folder (and, with
    ``return_models``, also this process's generator and discriminator).

    ``max_steps`` and ``max_minutes`` (wall clock; default the config's ``max_minutes``)
    stop this invocation early, after a validation, a checkpoint and an export (the run
    can be resumed later). The budget is checked every ``log.every`` steps.

    A config, manifest or checkpoint that cannot be used raises :class:`ConfigError` (any
    ``ValueError`` of the set-up becomes one), unreadable training audio ``AudioIOError``;
    an error of the loop itself is left as it is.
    """
    started = time.monotonic()
    data_cfg = cfg.get("data") or {}
    check_manifests("data.train", data_cfg.get("train"), required=True)  # before any work or output
    check_manifests("data.valid", data_cfg.get("valid"))
    with config_errors():  # a ValueError of the set-up is the config's (the loop's is a bug)
        if max_minutes is None and cfg.get("max_minutes") is not None:
            max_minutes = float(cfg["max_minutes"])  # the config's wall-clock budget (campaign runs)
        info = distributed.init("cuda" if cfg.get("device", "auto") in ("auto", "cuda") and torch.cuda.is_available()
                                else "cpu")
        device = _device(cfg, info)
        run = Path(run_dir or cfg.get("run_dir") or f"runs/{cfg.get('name', 'run')}")
        seed = int(cfg.get("seed", 0))
        _seed_everything(seed)
        threads = cfg.get("threads")
        if threads:
            torch.set_num_threads(int(threads))

        # 2. models, optimisers, balancer, EMA
        model = _build_model(cfg).to(device)
        model.train()
        qcfg = cfg.get("quantizer", {})
        model.quantizer.detach_residual = bool(qcfg.get("detach_residual", True))
        for layer in model.quantizer.vq.layers:  # codebook training settings (not part of the model)
            codebook = layer._codebook
            codebook.decay = float(qcfg.get("decay", codebook.decay))
            codebook.kmeans_iters = int(qcfg.get("kmeans_iters", codebook.kmeans_iters))
            codebook.threshold_ema_dead_code = float(qcfg.get("threshold_ema_dead_code",
                                                              codebook.threshold_ema_dead_code))
        _maybe_data_dependent_init(cfg, model, device, run)
        export_as = export_name(model.name)  # never the name of released (other) weights
        if export_as != model.name and info.is_main:
            print(f"model name {model.name!r} belongs to released weights; the export is named "
                  f"{export_as!r}", file=sys.stderr)
        if cfg.get("init_from") and not (run / CHECKPOINT).exists() and _has_refilled_codebook_statistics(model):
            wav = _training_segments(cfg, model, CODEBOOK_STATISTICS_ITEMS).to(device)
            estimate_codebook_statistics(model, wav, int(cfg.get("optim", {}).get("batch_size", 8)))
            if info.is_main:
                print(f"{cfg['init_from']}: inference-only export; codebook EMA statistics estimated "
                      f"from {wav.shape[0]} training segments", file=sys.stderr)
        adv = cfg.get("adversarial", {})
        use_adv = bool(adv.get("enabled", True))
        disc = MultiScaleSTFTDiscriminator(filters=adv.get("filters", 32), in_channels=model.channels,
                                           negative_slope=adv.get("negative_slope", 0.2)).to(device)
        optim = cfg.get("optim", {})
        betas = tuple(optim.get("betas", (0.5, 0.9)))
        batch_size = int(optim.get("batch_size", 8))
        # Rates hold at optim.lr_reference_batch and scale with the batch by optim.lr_scale (step.py).
        lr_rule, lr_ref = str(optim.get("lr_scale", "none")), optim.get("lr_reference_batch")
        lr_g = scaled_learning_rate(float(optim.get("lr", 3e-4)), batch_size, lr_rule, lr_ref)
        lr_d = scaled_learning_rate(float(optim.get("lr_disc", optim.get("lr", 3e-4))), batch_size, lr_rule, lr_ref)
        schedule, min_lr_ratio = str(optim.get("schedule", "constant")), float(optim.get("min_lr_ratio", 0.0))
        learning_rate_at(0, lr_g, 1, schedule)  # a bad schedule name fails here, before any work
        fused = optim.get("fused", "auto")
        opt_g = make_adam(model.parameters(), lr_g, betas, device, fused)  # type: ignore[arg-type]
        opt_d = make_adam(disc.parameters(), lr_d, betas, device, fused)  # type: ignore[arg-type]
        losses_cfg = cfg.get("losses", {"l1": 0.1, "mel": 1.0, "adv": 3.0, "feat": 3.0, "commit": 1.0})
        weights = {k: float(losses_cfg.get(k, 0.0)) for k in ("l1", "mel", "adv", "feat")}
        if not use_adv:
            weights["adv"] = weights["feat"] = 0.0
        balancer = Balancer({k: v for k, v in weights.items() if v > 0},
                            ema_decay=float(cfg.get("balancer", {}).get("ema_decay", 0.999)),
                            balance=bool(cfg.get("balancer", {}).get("enabled", True)))
        mel_loss = build_mel_loss(cfg, model.sample_rate).to(device)
        ema_decay = cfg.get("ema")
        ema_model = copy.deepcopy(model).eval() if ema_decay else None
        if ema_model is not None:
            ema_model.requires_grad_(False)

        configure_backends(cfg, device)
        if cfg.get("compile", False):
            compile_models(model, disc, cfg["compile"] if isinstance(cfg["compile"], str) else "inductor")
        trainer: nn.Module = TrainerModule(model)
        disc_run: nn.Module = disc
        if info.enabled:
            distributed.attach_codebook_sync(model)
            ddp_kwargs = dict(broadcast_buffers=False, device_ids=[device.index] if device.type == "cuda" else None)
            trainer = torch.nn.parallel.DistributedDataParallel(trainer, **ddp_kwargs)
            disc_run = torch.nn.parallel.DistributedDataParallel(disc, **ddp_kwargs)

        # 3. data
        if batch_size % info.world_size:
            raise ConfigError(f"optim.batch_size={batch_size} is not divisible by {info.world_size} processes")
        local_batch = batch_size // info.world_size
        total_steps = int(optim.get("steps", 1000))
        steps_per_epoch = int(optim.get("steps_per_epoch", 1000))
        loader = cfg["data"].get("loader", "workers")
        if loader not in ("workers", "device"):
            raise ConfigError(f"data.loader: expected 'workers' or 'device', got {loader!r}")
        if loader == "workers":
            base, shard = _train_dataset(cfg, model, info, local_batch, steps_per_epoch)
        else:
            corpus = _device_corpus(cfg, model, device)
        valid_items = _valid_items(cfg, model) if info.is_main else []
        valid_bws = cfg.get("valid", {}).get("bandwidths") or sorted({model.target_bandwidths[0],
                                                                      model.target_bandwidths[-1]})

        # the loop's settings (part 5), read before anything is written
        num_workers = int(cfg["data"].get("num_workers", 0))
        bandwidths = [float(b) for b in cfg.get("bandwidths", model.target_bandwidths)]
        disc_prob = float(adv.get("disc_prob", 2 / 3))
        # Steps without quantisation at the start; k-means then initialises the codebooks on
        # the encoder's trained latents instead of the near-constant latents of a fresh encoder
        # (whose first codebook otherwise collapses to one code on small batches).
        quantizer_warmup = int(qcfg.get("warmup_steps", 0))
        # The adversary starts at adversarial.start_step; for its first disc_warmup_steps steps only
        # the discriminator trains, every step, on the frozen generator's output.
        adv_start = int(adv.get("start_step", 0))
        disc_warmup = int(adv.get("disc_warmup_steps", 0))
        parts = StepParts(model=model, trainer=trainer, disc=disc, disc_run=disc_run, opt_g=opt_g, opt_d=opt_d,
                          balancer=balancer, mel_loss=mel_loss, autocast=autocast_for(cfg.get("amp", "none"), device),
                          commit_weight=float(losses_cfg.get("commit", 1.0)), world_size=info.world_size,
                          reduce_norm=lambda v: distributed.mean_over_ranks(v, device))
        log_cfg = cfg.get("log", {})
        every = int(log_cfg.get("every", 10))
        valid_every = int(log_cfg.get("valid_every", 200))
        ckpt_every = int(log_cfg.get("checkpoint_every", 200))

    # the run folder: made once the config has built the models and found the data
    if info.is_main:
        run.mkdir(parents=True, exist_ok=True)
        (run / "config.json").write_text(json.dumps(cfg, indent=2))

    # 4. resume
    step = 0
    ckpt_path = run / CHECKPOINT
    if ckpt_path.exists():
        ckpt = torch.load(ckpt_path, map_location=device, weights_only=True)
        load_run_weights(ckpt_path, ckpt, {"model": model, "disc": disc})
        # A compact campaign state (train/campaign.py) may lack the optimisers' moments
        # (resumed fresh) or the EMA copy (restarted from the generator).
        for name, opt in (("opt_g", opt_g), ("opt_d", opt_d)):
            if name in ckpt:
                opt.load_state_dict(ckpt[name])
        balancer.load_state_dict(ckpt["balancer"])
        if ema_model is not None:
            ema_model.load_state_dict(ckpt["ema"] if "ema" in ckpt else model.state_dict())
        step = int(ckpt["step"])
        _set_rng_state(ckpt["rng"])
        if info.is_main:
            fresh = [k for k in ("opt_g", "opt_d") if k not in ckpt] + (
                ["ema"] if ema_model is not None and "ema" not in ckpt else [])
            print(f"resumed from {ckpt_path} at step {step}" + (f" ({', '.join(fresh)} fresh)" if fresh else ""),
                  file=sys.stderr)

    writer = None
    if info.is_main and log_cfg.get("tensorboard", True):
        from torch.utils.tensorboard import SummaryWriter
        writer = SummaryWriter(str(run / "tensorboard"))
    metrics_file = open(run / "metrics.jsonl", "a") if info.is_main else None

    def log(values: dict[str, float], at: int) -> None:
        if not info.is_main:
            return
        if writer is not None:
            for k, v in values.items():
                writer.add_scalar(k, v, at)
        assert metrics_file is not None
        metrics_file.write(json.dumps({"step": at, **values}) + "\n")
        metrics_file.flush()

    def run_validation(at: int) -> None:
        if not info.is_main or not valid_items:
            return
        eval_model = ema_model if ema_model is not None else model
        values = validate(eval_model, valid_items, device, valid_bws)
        log({f"valid/{k}": v for k, v in values.items()}, at)
        if writer is not None and log_cfg.get("audio", True):
            with torch.no_grad():
                x = valid_items[0].to(device)
                eval_model.set_target_bandwidth(valid_bws[-1])
                y = eval_model(x)
            writer.add_audio("valid/reference", x[0, 0].cpu(), at, sample_rate=model.sample_rate)
            writer.add_audio("valid/decoded", y[0, 0].clamp(-1, 1).cpu(), at, sample_rate=model.sample_rate)
            writer.add_image("valid/spectrogram_decoded", _spectrogram_image(y[0, 0]), at)
            writer.add_image("valid/spectrogram_reference", _spectrogram_image(x[0, 0]), at)
        model.train()
        print(f"step {at}: " + ", ".join(f"{k} {v:.3f}" for k, v in sorted(values.items())), file=sys.stderr)

    def save_checkpoint(at: int) -> None:
        if not info.is_main:
            return
        state = {"model": model.state_dict(), "disc": disc.state_dict(), "opt_g": opt_g.state_dict(),
                 "opt_d": opt_d.state_dict(), "balancer": balancer.state_dict(), "step": at,
                 "rng": _rng_state(), "config": cfg}
        if ema_model is not None:
            state["ema"] = ema_model.state_dict()
        _atomic_torch_save(state, ckpt_path)
        exported = copy.deepcopy(ema_model if ema_model is not None else model).cpu()
        exported.config.name = export_as
        save_model(exported, run / EXPORT)

    if step == 0:
        run_validation(0)  # the untrained model, as a baseline for the curves

    # 5. the loop
    stop = total_steps if max_steps is None else min(total_steps, step + max_steps)
    batches = (_batches(base, shard, local_batch, steps_per_epoch, step, num_workers)
               if loader == "workers" else _device_batches(corpus, step, local_batch, info))
    bar = None
    if info.is_main and progress:
        from ..progress import progress_bar
        bar = progress_bar(total=stop, initial=step, desc=cfg.get("name", "train"), unit="step", dynamic_ncols=True)
    metrics = MetricAccumulator()  # on the device; read every `every` steps (no sync per step)
    t_last, steps_since = time.perf_counter(), 0
    while step < stop:
        if max_minutes is not None and step % every == 0:
            # Out of time? Rank 0's clock decides, so every rank stops at the same step.
            if distributed.broadcast_object(time.monotonic() - started > 60 * max_minutes):
                run_validation(step)
                save_checkpoint(step)
                break
        x = next(batches).to(device, non_blocking=True)
        for opt, base_lr in ((opt_g, lr_g), (opt_d, lr_d)):
            for group in opt.param_groups:
                group["lr"] = learning_rate_at(step, base_lr, total_steps, schedule, min_lr_ratio)
        n_q = model.num_codebooks(_step_rng(seed, step, 1).choice(bandwidths))
        adv_on = use_adv and step >= adv_start
        if adv_on and step < adv_start + disc_warmup:  # discriminator warm-up, generator frozen
            metrics.add({"train/disc": discriminator_step(parts, x, frozen_generator_output(parts, x, n_q))})
        else:
            y, losses, stats = generator_step(parts, x, n_q, step < quantizer_warmup, adv_on)
            metrics.add({f"train/{k}": v for k, v in losses.items()})
            metrics.add({f"balancer/{k}": v for k, v in stats.items()})
            if adv_on and _step_rng(seed, step, 2).random() < disc_prob:
                metrics.add({"train/disc": discriminator_step(parts, x, y)})
            if ema_model is not None:
                with torch.no_grad():
                    ema_params, params = list(ema_model.parameters()), list(model.parameters())
                    torch._foreach_lerp_(ema_params, params, 1 - float(ema_decay))
                    for be, b in zip(ema_model.buffers(), model.buffers()):
                        be.copy_(b)
        step += 1
        steps_since += 1

        if step % every == 0 or step == stop:
            values = metrics.means()  # the only host sync of the loop
            elapsed = time.perf_counter() - t_last
            values["train/n_q"] = float(n_q)
            values["train/lr"] = opt_g.param_groups[0]["lr"]
            values["train/lr_disc"] = opt_d.param_groups[0]["lr"]
            values["perf/audio_seconds_per_second"] = (
                steps_since * batch_size * x.shape[-1] / model.sample_rate / max(elapsed, 1e-9))
            log(values, step)
            t_last, steps_since = time.perf_counter(), 0
            if bar is not None:
                bar.set_postfix({k.split("/")[1]: f"{values[k]:.3f}" for k in ("train/mel", "train/l1", "train/disc")
                                 if k in values})
        if bar is not None:
            bar.update(1)
        if step % valid_every == 0 or step == stop:
            run_validation(step)
        if step % ckpt_every == 0 or step == stop:
            save_checkpoint(step)
    if bar is not None:
        bar.close()
    if writer is not None:
        writer.close()
    if metrics_file is not None:
        metrics_file.close()
    return (run, model, disc) if return_models else run


def parse_run_arguments(parser: argparse.ArgumentParser, argv: tp.Sequence[str] | None,
                        config_help: str, optional_keys: tp.Collection[str] | None = None
                        ) -> tuple[argparse.Namespace, dict[str, tp.Any]]:
    """Add and parse the arguments every trainer takes (CONFIG, overrides, --run-dir,
    --max-steps, --max-minutes, --no-progress); returns them and the loaded config (a bad
    config or override is a usage error). ``optional_keys``: as :func:`load_config`'s
    ``optional`` (the keys this trainer reads that a config may omit)."""
    parser.add_argument("config", help=config_help)
    parser.add_argument("overrides", nargs="*", help="dotted key=value overrides, e.g. optim.steps=500")
    parser.add_argument("--run-dir", default=None, help="output folder (default: run_dir in the config)")
    parser.add_argument("--max-steps", type=count_arg, default=None, help="stop after this many steps (resumable)")
    parser.add_argument("--max-minutes", type=positive_float, default=None,
                        help="stop (validate, checkpoint, export) after this many minutes")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    try:
        cfg = load_config(args.config, args.overrides, optional_keys)
    except (FileNotFoundError, ValueError) as exc:
        parser.error(str(exc))
    return args, cfg


def main(argv: tp.Sequence[str] | None = None) -> int:
    """``opencodec train CONFIG [key=value ...] [--run-dir DIR] [--max-steps N]``. The user's
    errors (config, manifest, data, files) are one line on stderr and exit status 1; any other
    error (a bug) propagates with its traceback."""
    parser = argparse.ArgumentParser(prog="opencodec train", description="Train an EnCodec codec.")
    args, cfg = parse_run_arguments(parser, argv, "YAML config (see configs/)")
    try:
        run = train(cfg, args.run_dir, args.max_steps, progress=not args.no_progress, max_minutes=args.max_minutes)
    except (OpenCodecError, OSError) as exc:  # the config, data or a file: one line
        print_traceback_if_asked()
        print(f"opencodec train: error: {one_line(exc)}", file=sys.stderr)
        return 1
    if int(os.environ.get("RANK", "0")) == 0:
        print(f"run folder: {run}; exported generator: {run / EXPORT}", file=sys.stderr)
    return 0
