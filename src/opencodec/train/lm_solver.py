"""Train the entropy model on a codec's codes: ``opencodec train-lm CONFIG [key=value ...]``.

Also ``python -m opencodec.train.lm_solver CONFIG [key=value ...]``, and
``python -m opencodec.train.lm_solver report --lm LM.safetensors --manifest M.jsonl`` for the
measured saving of any entropy model on held-out audio.

This file reads top to bottom; the steps it calls live in sibling modules:

1. configuration (:mod:`.lm_config`, :func:`parse_settings`);
2. codes: extracted once per manifest by the codec and cached (:mod:`.lm_codes`,
   :func:`prepare_data`);
3. the model and its differentiable forward (:mod:`.lm_model`);
4. batches: random windows of ``seq_len`` frames (a sequence drawn in proportion to its
   length, a start uniform in it; the first input of a window that starts a sequence is
   0, "no code", as in the coder; positions are absolute, as in the coder). One entropy
   model serves every bandwidth: at ``k`` codebooks the coder feeds the sum of the first
   ``k`` embeddings and reads the first ``k`` heads, so each step draws ``k`` from the
   codec's bandwidths and trains exactly that (the loss is on the first ``k`` heads);
5. the loop: AdamW/Adam with linear warm-up and a cosine or constant schedule, gradient
   clipping, cross-entropy reported in bits per code, checkpoints with exact resume
   (model, optimiser, step, random states), TensorBoard, ``metrics.jsonl``, a tqdm bar,
   periodic validation (held-out bits per code per bandwidth, computed with
   ``EntropyLM.forward`` under inference mode: the coder's own arithmetic) and an export
   to ``<run_dir>/lm.safetensors`` that ``opencodec.pretrained.load_lm_model`` and
   ``opencodec compress --lm-model`` read; the model of the lowest mean held-out bits per
   code so far is also exported, to ``<run_dir>/lm_best.safetensors``;
6. at the end, the saving on held-out audio (:mod:`.lm_eval`, :func:`evaluate_saving`) in
   ``<run_dir>/report.json`` and ``report.md``.
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

from ..errors import Interrupted, OpenCodecError, one_line, print_traceback_if_asked
from ..model_registry import OFFICIAL_CHECKPOINTS
from ..signals import Terminated, sigterm_as_interrupt
from .batches import check_manifests
from .config import LM_OPTIONAL_KEYS, config_errors, parse_run_arguments
from .lm_codes import (CACHE_FORMAT, CodeData, CodeSet, check_manifest_rows, codec_fingerprint, extract_codes,
                       load_codec, prepare_data)
from .lm_config import LOADABLE_HEADS, LOADABLE_PAST_SECONDS, ConfigError, Settings, _device, parse_settings
from .lm_eval import (
    REPORT_JSON,
    REPORT_MD,
    evaluate_saving,
    format_report,
    report_main,
    sequence_bits,
    validate,
    write_report,
)
from .lm_model import IGNORE, LM_METADATA_KEY, _loss, build_lm, export_lm, lm_logits, read_lm_info

from .run_state import (_atomic_torch_save, _rng_state, _seed_everything, _set_rng_state, _step_rng,
                        export_is_behind, load_optimizer_state, named_fields,
                        load_run_weights, read_checkpoint)
from .held_out import warn_shared_audio
from .run_folder import RunFolder, StopRequests, check_run_folder, run_folder_path, saving, stopped_message
from .solver import learning_rate_at  # the codec trainer's schedule
from .step import first_non_finite

CHECKPOINT = "checkpoint.pt"
EXPORT = "lm.safetensors"
BEST_EXPORT = "lm_best.safetensors"  # the model of the lowest held-out bits per code so far

__all__ = [
    "BEST_EXPORT", "CACHE_FORMAT", "CHECKPOINT", "EXPORT", "IGNORE", "LM_METADATA_KEY", "LOADABLE_HEADS",
    "LOADABLE_PAST_SECONDS", "REPORT_JSON", "REPORT_MD", "CodeData", "CodeSet", "ConfigError",
    "Settings", "build_lm", "codec_fingerprint", "evaluate_saving", "export_lm", "extract_codes",
    "format_report", "learning_rate", "lm_logits", "main", "mean_bits_per_code", "parse_settings", "prepare_data",
    "read_lm_info", "report_main", "sample_batch", "sequence_bits", "train", "validate",
    "write_report",
]


# -- 4. batches ----------------------------------------------------------------------------------
def sample_batch(codes: CodeSet, batch_size: int, seq_len: int, num_codebooks: int,
                 rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Random windows of the first ``num_codebooks`` codebooks.

    Each window picks a sequence with probability proportional to its frames and a start
    ``s`` uniform in ``[0, max(0, F - seq_len)]``.
    Returns:
        ``(inputs, targets, offsets)``: inputs long ``[B, K, T]`` (``1 + code`` of the previous
        frame; 0 at a sequence's first frame and in the padding), targets long ``[B, K, T]``
        (the codes; ``IGNORE`` past a sequence's end), offsets long ``[B]`` (the starts ``s``).
    """
    lengths = codes.lengths.numpy()
    picks = rng.choice(len(lengths), size=batch_size, p=lengths / lengths.sum())
    K, T = num_codebooks, seq_len
    inputs = torch.zeros(batch_size, K, T, dtype=torch.long)
    targets = torch.full((batch_size, K, T), IGNORE, dtype=torch.long)
    offsets = torch.zeros(batch_size, dtype=torch.long)
    for b, i in enumerate(picks):
        length = int(lengths[i])
        start = int(rng.integers(0, max(0, length - T) + 1))
        n = min(T, length - start)
        base = int(codes.offsets[i]) + start
        window = codes.codes[:K, base: base + n].long()
        targets[b, :, :n] = window
        inputs[b, :, 1:n] = window[:, :-1] + 1
        if start > 0:
            inputs[b, :, 0] = codes.codes[:K, base - 1].long() + 1
        offsets[b] = start
    return inputs, targets, offsets


def _batch_rng(seed: int, step: int) -> np.random.Generator:
    """The window sampler of ``step``: a function of (seed, step) only, so resume is exact."""
    return np.random.default_rng([seed, step, 0x4C4D])


def mean_bits_per_code(values: dict[str, float]) -> float:
    """The mean of :func:`validate`'s ``bits_per_code/<bw>kbps`` over the bandwidths (each
    bandwidth weighs the same): what chooses ``lm_best.safetensors``."""
    bits = [v for k, v in values.items() if k.startswith("bits_per_code/")]
    if not bits:
        raise ValueError("no bits_per_code/<bw>kbps value to average")
    return sum(bits) / len(bits)


def learning_rate(s: Settings, step: int) -> float:
    """Linear warm-up to ``lr`` over ``warmup_steps``, then constant or cosine down to
    ``min_lr_ratio * lr`` at ``steps`` (the codec trainer's ``learning_rate_at``)."""
    return learning_rate_at(step, s.lr, s.steps, s.schedule, s.min_lr_ratio, s.warmup_steps)


# -- the run folder: checked before any code is extracted or written ---------------------------
def _recorded_weights_hash(path: Path, ckpt: dict[str, tp.Any]) -> str | None:
    """The weights hash (as headers and ``opencodec info`` show it) of the codec whose codes the
    run of ``ckpt`` (read from ``path``) trained on: recorded in the checkpoint, else in the run's
    export beside it, else of the codec its config names if that is still the same codec."""
    from .lm_model import _weights_hash_of_source

    if isinstance(ckpt.get("codec_weights_hash"), str):
        return ckpt["codec_weights_hash"]
    try:
        info = read_lm_info(path.with_name(EXPORT)) if path.with_name(EXPORT).is_file() else {}
    except OpenCodecError:
        info = {}
    if info.get("codec_hash") == ckpt.get("codec_hash") and isinstance(info.get("codec_weights_hash"), str):
        return info["codec_weights_hash"]
    source = (ckpt.get("config") or {}).get("codec") if isinstance(ckpt.get("config"), dict) else None
    if source in OFFICIAL_CHECKPOINTS:  # no download only to word an error
        return None
    if isinstance(source, str) and isinstance(ckpt.get("codec_hash"), str):
        return _weights_hash_of_source(source, ckpt["codec_hash"], os.getcwd())
    return None


def check_run_dir(run: Path, what: str, codec: tp.Any, codec_hash: str, codec_source: str | None) -> None:
    """Refuse, as a one-line ``ConfigError`` before any code is extracted or anything written, a
    run folder ``run`` (``what``: where its path came from) that this config cannot continue: a
    codec's training run (``opencodec train``), or a ``checkpoint.pt`` that
    :func:`check_checkpoint` refuses."""
    ckpt_path = run / CHECKPOINT
    if ckpt_path.is_file():
        check_checkpoint(ckpt_path, read_checkpoint(ckpt_path, mmap=True), codec, codec_hash, codec_source, what)
        return
    try:  # a codec's run that has not checkpointed yet: its config.json
        previous = json.loads((run / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return
    if isinstance(previous, dict) and "codec" not in previous and "model" in previous:
        raise ConfigError(_codec_run(run, what))


def _codec_run(run: Path, what: str) -> str:
    """Why ``run``, a codec's run folder, is refused, and the codec export to train on where there is one."""
    export = run / "model.safetensors"
    codec = (f"the codec the run trains, {export}, can be its codec=" if export.is_file() else
             f"the codec the run trains can be its codec= once the run has exported {export}")
    return (f"{what} {run} holds a codec's training run (opencodec train), not an entropy model's: give "
            f"train-lm another --run-dir ({codec})")


def check_checkpoint(path: Path, ckpt: dict[str, tp.Any], codec: tp.Any, codec_hash: str,
                     codec_source: str | None, what: str = "run folder") -> None:
    """Refuse, as a one-line ``ConfigError``, a checkpoint ``ckpt`` (read from ``path``) that
    this run cannot resume: a codec's (``opencodec train``), another file that is not a
    train-lm run's, or one trained on the codes of another codec than ``codec`` (whose
    :func:`codec_fingerprint` is ``codec_hash``; ``codec_source``: the config's ``codec``):
    both codecs named, with their weights hashes as headers and ``opencodec info`` show them."""
    if "disc" in ckpt or "opt_g" in ckpt:
        raise ConfigError(_codec_run(path.parent, what))
    if not {"model", "optim", "step", "codec_hash"} <= set(ckpt):
        raise ConfigError(f"{path} is not a train-lm training checkpoint (it writes the model, optimiser, "
                          f"step and codec): use another --run-dir")
    if ckpt["codec_hash"] == codec_hash:
        return
    name = ckpt.get("codec_name")
    from ..identity import model_hash

    config = ckpt.get("config") if isinstance(ckpt.get("config"), dict) else {}
    theirs = _recorded_weights_hash(path, ckpt)
    was = (f"codec {name or 'an unnamed codec'} (weights hash {theirs or 'not recorded'}"
           + (f", codec={config['codec']}" if isinstance(config.get("codec"), str) else "") + ")")
    now = f"codec {codec.name} (weights hash {model_hash(codec)}" + (f", codec={codec_source})" if codec_source else ")")
    raise ConfigError(f"{path} was trained on the codes of {was}, not on this config's {now}: resume with "
                      f"the run's codec, or use another --run-dir")


#: The config fields that shape the entropy model's weights (bandwidths: how many codebooks it models).
LM_SIZES = {"lm.dim": "dim", "lm.num_layers": "num_layers", "lm.hidden_scale": "hidden_scale",
            "bandwidths": "bandwidths"}


def lm_size_changes(previous: tp.Any, s: Settings) -> dict[str, tuple[tp.Any, tp.Any]]:
    """``{field: (the run's, this config's)}`` of the :data:`LM_SIZES` fields whose values differ
    between a checkpoint's config ``previous`` and ``s`` (defaults filled in on both sides):
    ``bandwidths`` only where no size differs (other bandwidths of as many codebooks resume).
    Empty where ``previous`` is not a config this version reads."""
    if not isinstance(previous, dict):
        return {}
    try:
        was = parse_settings(copy.deepcopy(previous))
    except (ConfigError, ValueError, TypeError):
        return {}
    changed = {key: (getattr(was, name), getattr(s, name)) for key, name in LM_SIZES.items()
               if getattr(was, name) != getattr(s, name)}
    return {key: pair for key, pair in changed.items() if key != "bandwidths"} or changed


def make_optimizer(s: Settings, params: tp.Iterable[torch.nn.Parameter]) -> torch.optim.Optimizer:
    """The configured AdamW or Adam over ``params``."""
    optim_cls = torch.optim.AdamW if s.optimizer == "adamw" else torch.optim.Adam
    return optim_cls(params, lr=s.lr, betas=s.betas, weight_decay=s.weight_decay)


# -- 7. the run ----------------------------------------------------------------------------------
def train(cfg: dict, run_dir: str | os.PathLike[str] | None = None, max_steps: int | None = None,
          progress: bool = True, max_minutes: float | None = None, data: CodeData | None = None,
          return_model: bool = False) -> tp.Any:
    """Run (or resume) entropy-model training as configured; returns the run folder (and the
    model with ``return_model``).

    ``data`` gives the codes directly (tests); by default they come from ``prepare_data``.
    ``max_steps`` and ``max_minutes`` stop this invocation early after a validation, a
    checkpoint and an export; the run resumes from ``<run_dir>/checkpoint.pt``. The budget
    counts from the start of this call (code extraction included), and every invocation
    trains at least one step (as the codec trainer). When the run
    reaches ``optim.steps`` and the codec is known, the saving on held-out audio is measured
    (``report.items`` files) into ``report.json``/``report.md``. Manifests that list no file and
    a run folder this config cannot continue (:func:`check_run_dir`) are a ``ConfigError``
    before any code is extracted or anything written.
    """
    with config_errors():  # a ValueError of the set-up is the config's (the loop's is a bug)
        s = parse_settings(cfg)
        make_optimizer(s, [torch.zeros(1, requires_grad=True)])  # a value torch refuses: before any work
    started = time.monotonic()
    run, run_from = run_folder_path(run_dir, cfg, s.name)
    if data is None:  # the manifests, checked before the codec is loaded and anything is written
        check_manifests("data.train", s.train_manifests, required=True)
        check_manifests("data.valid", s.valid_manifests)
        if s.report_items > 0:
            check_manifests("report.manifests", s.report_manifests)
        warn_shared_audio(s.train_manifests, [("data.valid", s.valid_manifests)] + (  # (a warning)
            [("report.manifests", s.report_manifests)] if s.report_items > 0 else []))
    if s.threads:
        torch.set_num_threads(s.threads)
    device = _device(s.device)
    loaded = load_codec(s) if data is None else None  # and the settings that depend on it
    codec_hash = None
    if loaded is not None:  # manifests listing no file, a run folder this config cannot continue: before
        check_manifest_rows(s)  # any code is extracted or anything written
        codec_hash = codec_fingerprint(loaded[0])
        check_run_dir(run, run_from, loaded[0], codec_hash, s.codec)
    check_run_folder(run, run_from)  # a file there, a folder no trainer made: before anything is written

    with RunFolder(run) as folder:  # made and locked once the config is known to be good
        if data is None:
            data = prepare_data(s, run, device, progress, loaded, codec_hash)
        codec_weights = None
        if data.codec is not None:
            from ..identity import model_hash

            codec_weights = model_hash(data.codec)

        # the model and the optimiser
        _seed_everything(s.seed)
        with config_errors():
            lm = build_lm(s, max(data.codebooks), data.card, data.frame_rate).to(device)
            lm.train()
            opt = make_optimizer(s, lm.parameters())

        # resume
        step, previous, best = 0, None, None
        ckpt_path = run / CHECKPOINT
        if ckpt_path.exists():
            ckpt = read_checkpoint(ckpt_path, device)
            if data.codec is not None:  # (checked before the codes, and again under the lock)
                check_checkpoint(ckpt_path, ckpt, data.codec, data.codec_hash, data.codec_source)
            elif ckpt.get("codec_hash") != data.codec_hash:  # codes given directly (tests)
                raise ConfigError(f"{ckpt_path} was trained on the codes of another codec "
                                  f"({ckpt.get('codec_name')}); this run's codes are of {data.codec_name}: "
                                  f"use another --run-dir")
            try:
                load_run_weights(ckpt_path, ckpt, {"model": lm})  # a ConfigError naming the first mismatch
            except ConfigError as exc:  # the fields that made it, where the checkpoint's config says
                changed = lm_size_changes(ckpt.get("config"), s)
                if not changed:
                    raise
                raise ConfigError(f"{ckpt_path} was trained with {named_fields(changed, 0)}, not this config's "
                                  f"{named_fields(changed, 1)}: resume with the run's, or use another --run-dir") from exc
            load_optimizer_state(opt, ckpt["optim"])  # the config's betas: a changed one is used
            step, previous, best = int(ckpt["step"]), ckpt.get("config"), ckpt.get("best")
            _set_rng_state(ckpt["rng"])
            print(f"resumed from {ckpt_path} at step {step}", file=sys.stderr)
        folder.start(cfg, step, previous, s.tensorboard)  # config.json when fresh, history.jsonl, the logs

        def export(path: Path, at: int, **extra: tp.Any) -> None:
            with saving(path):
                export_lm(lm, path, {"codec": data.codec_name, "codec_source": data.codec_source,
                                     "codec_hash": data.codec_hash, "frame_rate": data.frame_rate,
                                     "bandwidths": data.bandwidths, "step": at, **extra}, codec=data.codec)

        def run_validation(at: int) -> None:
            nonlocal best
            if data.valid is None or s.valid_max_items == 0:  # (0 items: nothing to score, no lm_best)
                return
            values = validate(lm, data.valid, data.bandwidths, data.codebooks, data.frame_rate, s.valid_max_items)
            values["mean_bits_per_code"] = mean_bits_per_code(values)
            folder.log({f"valid/{k}": v for k, v in values.items()}, at)
            print(f"step {at}: " + ", ".join(f"{k} {v:.3f}" for k, v in values.items()
                                            if k.startswith("bits")), file=sys.stderr)
            score = values["mean_bits_per_code"]
            if at > 0 and (best is None or score < best["mean_bits_per_code"]):
                best = {"step": at, "mean_bits_per_code": score}
                export(run / BEST_EXPORT, at, selected_by="lowest mean held-out bits per code",
                       valid_mean_bits_per_code=score)

        def save_checkpoint(at: int) -> None:
            diverged = first_non_finite({"lm": lm})  # keep the last good checkpoint and export
            if diverged is not None:
                raise ConfigError(f"training diverged by step {at}: {diverged} holds NaN or inf; not saved (an "
                                  f"earlier checkpoint and export are kept); lower optim.lr and rerun")
            state = {"model": lm.state_dict(), "optim": opt.state_dict(), "step": at, "rng": _rng_state(),
                     "config": cfg, "codec_name": data.codec_name, "codec_hash": data.codec_hash,
                     "best": best}
            if codec_weights is not None:  # the codec's weights hash as headers show it (errors quote it)
                state["codec_weights_hash"] = codec_weights
            _atomic_torch_save(state, ckpt_path)
            export(run / EXPORT, at)

        if step == 0:
            run_validation(0)  # the untrained model (about log2(card) bits per code)

        # the loop
        start_step, why = step, None
        stop = s.steps if max_steps is None else min(s.steps, step + max_steps)
        if step >= s.steps:
            print(f"{run} is at step {step}, optim.steps is {s.steps}: nothing to train", file=sys.stderr)
            if export_is_behind(run / EXPORT, ckpt_path):  # a run killed before its last export
                export(run / EXPORT, step)
        autocast = (torch.autocast(device.type, dtype=torch.bfloat16) if s.amp == "bf16"
                    else torch.autocast(device.type, enabled=False))
        bar = None
        if progress:
            from ..progress import progress_bar
            bar = progress_bar(total=stop, initial=step, desc=s.name, unit="step", dynamic_ncols=True)
        t_last, nats, scored, steps_since = time.perf_counter(), 0.0, 0, 0
        with StopRequests(max_minutes, started=started, sigterm=True) as stops:  # Ctrl-C, SIGTERM, time
            while step < stop:
                why = stops.reason(step)  # stop at a step boundary (after one step at least), with a checkpoint of it
                if why is not None:
                    if why == "time" and step % s.valid_every:  # (a step of valid_every was just validated)
                        run_validation(step)
                    if step > start_step and step % s.checkpoint_every:
                        save_checkpoint(step)
                    break
                k = _step_rng(s.seed, step, 1).choice(data.codebooks)
                inputs, targets, offsets = (t.to(device) for t in
                                            sample_batch(data.train, s.batch_size, s.seq_len, k,
                                                         _batch_rng(s.seed, step)))
                lr = learning_rate(s, step)
                for group in opt.param_groups:
                    group["lr"] = lr
                with autocast:
                    total, count = _loss(lm, inputs, targets, offsets)
                loss = total / max(count, 1)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                grad_norm = (torch.nn.utils.clip_grad_norm_(lm.parameters(), s.grad_clip) if s.grad_clip > 0
                             else None)
                opt.step()
                step += 1
                steps_since += 1
                nats += float(total.detach())
                scored += count

                if step % s.log_every == 0 or step == stop:
                    elapsed = time.perf_counter() - t_last
                    bits = nats / max(scored, 1) / math.log(2)
                    values = {"train/bits_per_code": bits, "train/n_q": float(k), "train/lr": lr,
                              "perf/steps_per_second": steps_since / max(elapsed, 1e-9),
                              "perf/codes_per_second": scored / max(elapsed, 1e-9)}
                    if grad_norm is not None:
                        values["train/grad_norm"] = float(grad_norm)
                    folder.log(values, step)
                    if bar is not None:
                        bar.set_postfix(bits=f"{bits:.3f}", k=int(k))
                    t_last, nats, scored, steps_since = time.perf_counter(), 0.0, 0, 0
                if bar is not None:
                    bar.update(1)
                if step % s.valid_every == 0 or step == stop:
                    run_validation(step)
                if step % s.checkpoint_every == 0 or step == stop:
                    save_checkpoint(step)
        if bar is not None:
            bar.close()
    message = stopped_message(why, step, s.steps, ckpt_path)
    if why in ("interrupted", "terminated"):
        raise (Terminated if why == "terminated" else Interrupted)(message)
    if message:
        print(message, file=sys.stderr)

    # the saving on held-out audio, measured with the exported file as the CLI loads it
    manifests = s.report_manifests or s.valid_manifests
    finished = step >= s.steps and (step > start_step or not (run / REPORT_JSON).exists())
    if finished and data.codec is not None and s.report_items > 0 and manifests:
        from ..pretrained import load_lm_model

        exported = load_lm_model(run / EXPORT, codec=data.codec, num_codebooks=max(data.codebooks))
        report = evaluate_saving(data.codec, exported, manifests, data.bandwidths, s.report_items, progress)
        report.update(lm=str(run / EXPORT), step=step)
        write_report(report, run, force=True)
        print(format_report(report), file=sys.stderr)
    return (run, lm) if return_model else run


def main(argv: tp.Sequence[str] | None = None) -> int:
    """``opencodec train-lm CONFIG [key=value ...] [--run-dir DIR] [--max-steps N]``, or
    ``opencodec train-lm report ...``. The user's errors (config, manifest, data, files) are one
    line on stderr and exit status 1; Ctrl-C saves a checkpoint of the last whole step, says so
    in one line and exits with 130, SIGTERM the same with ``terminated`` and 143 (as ``train``);
    any other error (a bug) propagates with its traceback."""
    argv = list(sys.argv[1:] if argv is None else argv)
    prog = "opencodec train-lm report" if argv[:1] == ["report"] else "opencodec train-lm"
    try:
        if argv[:1] == ["report"]:
            return report_main(argv[1:])
        parser = argparse.ArgumentParser(
            prog=prog,
            description="Train the entropy model on a codec's codes (see configs/lm_*.yaml). "
                        "'opencodec train-lm report --help' measures a trained model's saving.")
        args, cfg = parse_run_arguments(parser, argv, "YAML config (see configs/lm_*.yaml)",
                                        LM_OPTIONAL_KEYS)
        with sigterm_as_interrupt():  # the loop itself stops at a step boundary (StopRequests)
            run = train(cfg, args.run_dir, args.max_steps, progress=not args.no_progress,
                        max_minutes=args.max_minutes)
        print(f"run folder: {run}; entropy model: {run / EXPORT} "
              f"(opencodec compress IN --model {cfg.get('codec')} --lm-model {run / EXPORT})"
              if (run / EXPORT).exists() else f"run folder: {run}; nothing exported", file=sys.stderr)
        return 0
    except KeyboardInterrupt as exc:  # Ctrl-C or SIGTERM: after a checkpoint (Interrupted) or before the loop
        print(f"{prog}: error: {str(exc) or 'interrupted'}", file=sys.stderr)
        return 143 if isinstance(exc, Terminated) else 130
    except (OpenCodecError, OSError) as exc:
        print_traceback_if_asked()
        print(f"{prog}: error: {one_line(exc)}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
