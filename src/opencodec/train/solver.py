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
   optimisers, balancer, EMA, random states, step and the training metrics summed since the
   last log: the run, and its log, continue exactly; config
   keys changed since the checkpoint are named in a warning and in ``history.jsonl``; another
   architecture, or a folder of another trainer, is refused before anything is written);
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

The loop's helpers live beside it: the checks of every config value (made before anything
is built or written) in ``config_checks.py``, the data of part 3 in ``batches.py``, the
validation of part 6 in ``validation.py``, random states, seeds and atomic checkpoint writes
in ``run_state.py``, the run folder (its lock, ``config.json``, ``history.jsonl``, the logs) and
how the loop stops (Ctrl-C, SIGTERM, ``--max-minutes``) in ``run_folder.py`` (both shared with the
entropy model's trainer), the EMA codebook statistics of a fine-tuned inference-only export
in ``codebook_stats.py``.

Distributed training keeps codebooks identical across ranks: k-means and dead-code
replacement use the gathered global batch, EMA statistics are summed over ranks (see
``quantization/vq.py``), and the balancer's gradient norms are averaged over ranks. The
logged training metrics are the global batch's, as one process would log them: the sums
accumulated since the last log are averaged over ranks when they are read (one collective
per log, none per step; ``step.global_batch_metrics``). A config error that every rank finds
is said once, by rank 0.
"""

from __future__ import annotations

import argparse
import copy
import math
import os
import sys
import time
import typing as tp
from pathlib import Path

import torch
from torch import nn

from ..errors import ConfigError, Interrupted, OpenCodecError, one_line, print_traceback_if_asked
from ..model import EncodecConfig, EncodecModel
from ..identity import export_name
from ..pretrained import load_model, save_model
from . import distributed
from .balancer import Balancer
from .batches import (_batches, _device_batches, _device_corpus, _train_dataset, _training_segments, _valid_items,
                      check_manifests)
from .codebook_stats import CODEBOOK_STATISTICS_ITEMS, _has_refilled_codebook_statistics, estimate_codebook_statistics
from .config import config_errors, load_config, parse_run_arguments  # noqa: F401 - load_config: scripts import it here
from .config_checks import (RankConfigError, check_betas, check_codec_bandwidths, check_codec_checkpoint,
                            check_codec_config, codec_field, init_from_config, resolve_device)
from .discriminator import MultiScaleSTFTDiscriminator
from .losses import MultiScaleMelLoss, audiocraft_alphas
from ..signals import Terminated, sigterm_as_interrupt
from .run_folder import (RunFolder, StopRequests, check_run_folder, run_folder_path, saving, set_usual_permissions,
                         stopped_message)
from .run_state import (_atomic_torch_save, _rng_state, _seed_everything, _set_rng_state, _step_rng,
                        disc_size_changes, export_is_behind, load_optimizer_state, load_run_weights,
                        named_fields, read_checkpoint)
from .held_out import warn_shared_audio
from .validation import _spectrogram_image, validate  # noqa: F401 - validate: scripts import it here
from .step import (MetricAccumulator, StepParts, TrainerModule, autocast_for, compile_models, configure_backends,
                   discriminator_step, first_non_finite, frozen_generator_output, generator_step, global_batch_metrics,
                   make_adam, pending_metrics_for, scaled_learning_rate)

CHECKPOINT = "checkpoint.pt"
EXPORT = "model.safetensors"
#: What ``init_from`` says of an entropy model given in place of the codec to fine-tune.
INIT_FROM_LM_ADVICE = ("init_from takes a codec's name or weights file to fine-tune; entropy models are trained "
                       "with opencodec train-lm, whose runs resume from the checkpoint.pt in their --run-dir")


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


# -- 2. + 5. the run ------------------------------------------------------------------------------
def _build_model(cfg: dict) -> EncodecModel:
    """The generator: built from ``model.*``, or with ``init_from`` the model it names, whose
    architecture a fine-tune keeps: a ``model.*`` value the config sets that would change it is
    refused, naming each (``name`` and ``target_bandwidths`` are taken from the config)."""
    init_from = cfg.get("init_from")
    if not init_from:
        return EncodecModel(EncodecConfig.from_dict(cfg["model"]))
    with codec_field("init_from", INIT_FROM_LM_ADVICE):  # an entropy model: a ConfigError
        model = load_model(init_from)
    model.config = init_from_config(cfg.get("model"), model.config, str(init_from))
    return model


def _maybe_data_dependent_init(cfg: dict, model: EncodecModel, device: torch.device, run: Path) -> None:
    """``init: data_dependent`` on a fresh run (not when resuming or fine-tuning). Every rank
    computes the same rescaling from the same batch, so the weights stay identical."""
    if cfg.get("init", "default") not in ("default", "data_dependent"):
        raise ConfigError(f"config field init: expected 'default' or 'data_dependent', got {cfg.get('init')!r}")
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
    can be resumed later). The budget counts from the start of this call (set-up included)
    and is checked before every step (every ``log.every`` steps under torchrun) but the first:
    every invocation trains at least one step, and the step it stops at is validated and
    logged once. Ctrl-C stops at the next step boundary: a checkpoint and an export
    of that step, then :class:`~opencodec.errors.Interrupted` saying how to resume; SIGTERM
    the same (where the SIGTERM handler is the default or :func:`~opencodec.signals.sigterm_as_interrupt`'s),
    then :class:`~opencodec.errors.Terminated`.

    A config, manifest or checkpoint that cannot be used raises :class:`ConfigError` (any
    ``ValueError`` of the set-up becomes one), unreadable training audio ``AudioIOError``;
    a run whose weights became NaN or inf (diverged) a ``ConfigError`` at its next checkpoint,
    which is not written (the last good one stays); an error of the loop itself is left as it is.
    """
    started = time.monotonic()
    with config_errors():  # a ValueError of the set-up is the config's (the loop's is a bug)
        check_codec_config(cfg)  # every value the run reads: nothing is built or written for a bad one
        data_cfg = cfg.get("data") or {}
        check_manifests("data.train", data_cfg.get("train"), required=True)  # the files, once their types are right
        check_manifests("data.valid", data_cfg.get("valid"))
        check_manifests("data.augment.noise_manifests", (data_cfg.get("augment") or {}).get("noise_manifests"))
        if max_minutes is None and cfg.get("max_minutes") is not None:
            max_minutes = float(cfg["max_minutes"])  # the config's wall-clock budget (campaign runs)
        info = distributed.init(resolve_device(cfg.get("device", "auto")).type)
        batch_size = int(cfg.get("optim", {}).get("batch_size", 8))
        if batch_size % info.world_size:  # (every rank finds it: rank 0 says it)
            raise ConfigError(f"optim.batch_size={batch_size} is not divisible by {info.world_size} processes")
        device = resolve_device(cfg.get("device", "auto"), info.local_rank)
        if device.type == "cuda":
            torch.cuda.set_device(device)
        run, run_from = run_folder_path(run_dir, cfg, cfg.get("name", "run"))
        check_run_folder(run, run_from)  # a file there: one line, before anything is built
        if info.is_main:  # held-out audio that is training audio too: a warning (once the config is good)
            warn_shared_audio(data_cfg.get("train"), [("data.valid", data_cfg.get("valid"))])
        seed = int(cfg.get("seed", 0))
        _seed_everything(seed)
        threads = cfg.get("threads")
        if threads:
            torch.set_num_threads(int(threads))

        # 2. models, optimisers, balancer, EMA
        model = _build_model(cfg).to(device)
        model.train()
        if cfg.get("init_from"):  # config.json and the checkpoints record the model trained, not the config's section
            cfg = {**cfg, "model": model.config.to_dict()}
        bandwidths, valid_bws = check_codec_bandwidths(cfg, model)  # the model's (init_from: its own or the config's)
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
            estimate_codebook_statistics(model, wav, batch_size)
            if info.is_main:
                print(f"{cfg['init_from']}: inference-only export; codebook EMA statistics estimated "
                      f"from {wav.shape[0]} training segments", file=sys.stderr)
        adv = cfg.get("adversarial", {})
        use_adv = bool(adv.get("enabled", True))
        disc = MultiScaleSTFTDiscriminator(filters=adv.get("filters", 32), in_channels=model.channels,
                                           negative_slope=adv.get("negative_slope", 0.2)).to(device)
        optim = cfg.get("optim", {})
        betas = check_betas(optim.get("betas", (0.5, 0.9)))
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
            trainer, disc_run = distributed.wrap(trainer, device), distributed.wrap(disc, device)

        # 3. data
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

        # the loop's settings (part 5), read before anything is written
        num_workers = int(cfg["data"].get("num_workers", 0))
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
        log_cfg = cfg.get("log") or {}
        every = int(log_cfg.get("every", 10))
        valid_every = int(log_cfg.get("valid_every", 200))
        ckpt_every = int(log_cfg.get("checkpoint_every", 200))

    # the run folder: made (and locked) once the config has built the models and found the data
    with RunFolder(run, info.is_main) as folder:
        # 4. resume
        step, previous, logged_since = 0, None, None
        ckpt_path, ema_restarted = run / CHECKPOINT, False
        if ckpt_path.exists():
            ckpt = read_checkpoint(ckpt_path, device)  # a file that is not one: one line
            check_codec_checkpoint(ckpt_path, ckpt, model.config)  # another architecture or trainer: refused,
            try:
                load_run_weights(ckpt_path, ckpt, {"model": model, "disc": disc})  # nothing written
            except ConfigError as exc:  # the config fields that made it, where the checkpoint's config says
                changed = disc_size_changes(ckpt.get("config"), cfg)
                if not changed:
                    raise
                raise ConfigError(f"{ckpt_path} was trained with {named_fields(changed, 0)}, not this config's "
                                  f"{named_fields(changed, 1)}: resume with the run's, or use another --run-dir") from exc
            # A compact campaign state (train/campaign.py) may lack the optimisers' moments
            # (resumed fresh) or the EMA copy (restarted from the generator).
            for name, opt in (("opt_g", opt_g), ("opt_d", opt_d)):
                if name in ckpt:
                    load_optimizer_state(opt, ckpt[name])  # the config's betas: a changed one is used
            balancer.load_state_dict(ckpt["balancer"])
            if ema_model is not None:
                ema_model.load_state_dict(ckpt["ema"] if "ema" in ckpt else model.state_dict())
                ema_restarted = "ema" not in ckpt
            step, previous = int(ckpt["step"]), ckpt.get("config")
            logged_since = ckpt.get("metrics")  # the training metrics of steps after the last log
            _set_rng_state(ckpt["rng"])
            if info.is_main:
                fresh = [k for k in ("opt_g", "opt_d") if k not in ckpt] + (
                    ["ema"] if ema_model is not None and "ema" not in ckpt else [])
                print(f"resumed from {ckpt_path} at step {step}" + (f" ({', '.join(fresh)} fresh)" if fresh else ""),
                      file=sys.stderr)
        # config.json on a fresh run; history.jsonl; the logs after `step`
        folder.start(cfg, step, previous, tensorboard=bool(log_cfg.get("tensorboard", True)))

        def run_validation(at: int) -> None:
            if not info.is_main or not valid_items:
                return
            eval_model = ema_model if ema_model is not None else model
            values = validate(eval_model, valid_items, device, valid_bws)
            folder.log({f"valid/{k}": v for k, v in values.items()}, at)
            if folder.writer is not None and log_cfg.get("audio", True):
                with torch.no_grad():
                    x = valid_items[0].to(device)
                    eval_model.set_target_bandwidth(valid_bws[-1])
                    y = eval_model(x)
                folder.writer.add_audio("valid/reference", x[0, 0].cpu(), at, sample_rate=model.sample_rate)
                folder.writer.add_audio("valid/decoded", y[0, 0].clamp(-1, 1).cpu(), at, sample_rate=model.sample_rate)
                folder.writer.add_image("valid/spectrogram_decoded", _spectrogram_image(y[0, 0]), at)
                folder.writer.add_image("valid/spectrogram_reference", _spectrogram_image(x[0, 0]), at)
            model.train()
            print(f"step {at}: " + ", ".join(f"{k} {v:.3f}" for k, v in sorted(values.items())), file=sys.stderr)

        def save_checkpoint(at: int) -> None:
            diverged = first_non_finite({"model": model, "disc": disc})  # (every rank: the same weights)
            if diverged is not None:  # keep the last good checkpoint and export
                kept = f"{ckpt_path} keeps step {saved[0]}" if saved else "nothing saved"
                raise ConfigError(f"training diverged by step {at}: {diverged} holds NaN or inf; {kept}; "
                                  f"lower optim.lr (or optim.lr_disc) and rerun")
            pending = {**metrics.state_dict(parts.reduce_norm if info.enabled else None),  # (every rank)
                       "world_size": info.world_size}
            if not info.is_main:
                return
            state = {"model": model.state_dict(), "disc": disc.state_dict(), "opt_g": opt_g.state_dict(),
                     "opt_d": opt_d.state_dict(), "balancer": balancer.state_dict(), "step": at,
                     "rng": _rng_state(), "config": cfg, "metrics": pending}
            if ema_model is not None:
                state["ema"] = ema_model.state_dict()
            _atomic_torch_save(state, ckpt_path)
            saved[:] = [at]
            export_generator()

        def export_generator() -> None:
            exported = copy.deepcopy(ema_model if ema_model is not None else model).cpu()
            exported.config.name = export_as
            with saving(run / EXPORT):
                save_model(exported, run / EXPORT)
            set_usual_permissions(run / EXPORT)

        saved = [step] if step else []  # the step checkpoint.pt holds
        metrics = MetricAccumulator()  # on the device; read every `every` steps (no sync per step)
        if logged_since is not None:
            metrics.load_state_dict(pending_metrics_for(logged_since, info.world_size), device)
        if step == 0:
            run_validation(0)  # the untrained model, as a baseline for the curves

        # 5. the loop
        start_step, why = step, None
        stop = total_steps if max_steps is None else min(total_steps, step + max_steps)
        if step >= total_steps and info.is_main:
            print(f"{run} is at step {step}, optim.steps is {total_steps}: nothing to train", file=sys.stderr)
            if export_is_behind(run / EXPORT, ckpt_path):  # a run killed before its last export
                if ema_restarted:  # its EMA is the generator's copy: not exported over the run's
                    print(f"warning: {run / EXPORT} is older than {ckpt_path}, whose EMA was left out: "
                          f"kept as it is", file=sys.stderr)
                else:
                    export_generator()
        batches = (_batches(base, shard, local_batch, steps_per_epoch, step, num_workers)
                   if loader == "workers" else _device_batches(corpus, step, local_batch, info))
        bar = None
        if info.is_main and progress:
            from ..progress import progress_bar
            bar = progress_bar(total=stop, initial=step, desc=cfg.get("name", "train"), unit="step",
                               dynamic_ncols=True)
        t_last, steps_since = time.perf_counter(), 0
        with StopRequests(max_minutes, every, info.enabled, started, sigterm=True) as stops:  # Ctrl-C, SIGTERM, time
            while step < stop:
                why = stops.reason(step)  # stop at a step boundary (after one step at least), with a checkpoint of it
                if why is not None:
                    if why == "time" and step % valid_every:  # (a step of valid_every was just validated)
                        run_validation(step)
                    if step > start_step and step % ckpt_every:
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
                    values = global_batch_metrics(metrics.means(parts.reduce_norm if info.enabled else None),
                                                  info.world_size)  # the only host sync of the loop
                    elapsed = time.perf_counter() - t_last
                    values["train/n_q"] = float(n_q)
                    values["train/lr"] = opt_g.param_groups[0]["lr"]
                    values["train/lr_disc"] = opt_d.param_groups[0]["lr"]
                    values["perf/audio_seconds_per_second"] = (
                        steps_since * batch_size * x.shape[-1] / model.sample_rate / max(elapsed, 1e-9))
                    folder.log(values, step)
                    t_last, steps_since = time.perf_counter(), 0
                    if bar is not None:
                        bar.set_postfix({k.split("/")[1]: f"{values[k]:.3f}"
                                         for k in ("train/mel", "train/l1", "train/disc") if k in values})
                if bar is not None:
                    bar.update(1)
                if step % valid_every == 0 or step == stop:
                    run_validation(step)
                if step % ckpt_every == 0 or step == stop:
                    save_checkpoint(step)
        if bar is not None:
            bar.close()
    message = stopped_message(why, step, total_steps, ckpt_path)
    if why in ("interrupted", "terminated"):
        raise (Terminated if why == "terminated" else Interrupted)(message)
    if message and info.is_main:
        print(message, file=sys.stderr)
    return (run, model, disc) if return_models else run


def main(argv: tp.Sequence[str] | None = None) -> int:
    """``opencodec train CONFIG [key=value ...] [--run-dir DIR] [--max-steps N]``. The user's
    errors (config, manifest, data, files) are one line on stderr and exit status 1; Ctrl-C
    saves a checkpoint of the last whole step, says so in one line, and exits with 130, SIGTERM
    the same with ``terminated`` and 143 (as the other commands); any other error (a bug)
    propagates with its traceback."""
    parser = argparse.ArgumentParser(prog="opencodec train", description="Train an EnCodec codec.")
    args, cfg = parse_run_arguments(parser, argv, "YAML config (see configs/)")
    is_main = int(os.environ.get("RANK", "0")) == 0  # under torchrun, rank 0 speaks for the job
    try:
        with sigterm_as_interrupt():  # the loop itself stops at a step boundary (StopRequests)
            run = train(cfg, args.run_dir, args.max_steps, progress=not args.no_progress,
                        max_minutes=args.max_minutes)
    except KeyboardInterrupt as exc:  # Ctrl-C or SIGTERM: after a checkpoint (Interrupted) or during the set-up
        if is_main:
            print(f"opencodec train: error: {str(exc) or 'interrupted'}", file=sys.stderr)
        return 143 if isinstance(exc, Terminated) else 130
    except (OpenCodecError, OSError) as exc:  # the config, data or a file: one line
        if is_main or not isinstance(exc, ConfigError) or isinstance(exc, RankConfigError):
            print_traceback_if_asked()  # (a config error common to every rank is said once, by rank 0)
            print(f"opencodec train: error: {one_line(exc)}", file=sys.stderr)
        return 1
    if is_main:
        export = run / EXPORT
        print(f"run folder: {run}; " + (f"exported generator: {export}" if export.exists() else "nothing exported"),
              file=sys.stderr)
    return 0
