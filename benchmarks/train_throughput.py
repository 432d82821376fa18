"""Codec training throughput: the trainer's own step (``opencodec.train.step``), timed.

For each config and each adversary setting, one row:

* audio s/s -- seconds of training audio processed per second (batch x segment / step time);
* TFLOP/s -- FLOPs of one step counted by ``torch.utils.flop_counter.FlopCounterMode``
  (matrix products and convolutions, forward and backward; STFTs and element-wise work
  are not counted, nor, on CUDA, the cuDNN LSTM kernel: about 2 x 8 x D^2 FLOPs per frame
  and layer forward, about 0.1% of a step by that estimate), times steps per second;
* % peak -- that over the chip's dense peak for the precision used (table below; CUDA only);
* peak memory -- ``torch.cuda.max_memory_allocated`` on a GPU, the process's peak RSS on
  the CPU.

A step is the generator update plus, with the adversary, a discriminator update with the
config's probability (``adversarial.disc_prob``): the timed loop runs it on that share of
steps, rounded down (6 of 10 at 0.667), and the FLOPs count the updates it ran. Audio is
synthetic (the step's cost does not depend on it); the first ``--warmup`` steps (k-means,
compilation) are not timed.

    python benchmarks/train_throughput.py                          # bundled + paper size, GPU if any
    python benchmarks/train_throughput.py --amp bf16 --compile --batch 256
    python benchmarks/train_throughput.py --tiny --device cpu      # a dry run in seconds
"""

from __future__ import annotations

import argparse
import copy
import resource
import sys
import time
import typing as tp
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "benchmarks"))  # provenance, also when loaded by a test

from opencodec.errors import OpenCodecError  # noqa: E402
from opencodec.model import EncodecConfig, EncodecModel  # noqa: E402
from opencodec.train.balancer import Balancer  # noqa: E402
from opencodec.train.discriminator import MultiScaleSTFTDiscriminator  # noqa: E402
from opencodec.train.solver import build_mel_loss, load_config  # noqa: E402
from opencodec.train.step import (StepParts, TrainerModule, autocast_for, compile_models,  # noqa: E402
                                  configure_backends, discriminator_step, generator_step, make_adam)
from provenance import provenance_line  # noqa: E402

CONFIGS = {"bundled": ROOT / "configs/opencodec_cpu_24khz.yaml", "paper": ROOT / "configs/opencodec_24khz.yaml"}
# Dense peaks in TFLOP/s (NVIDIA datasheets, SXM parts; the H200 is the H100's chip with more
# memory). fp32 matrix work on these chips runs as TF32 when PyTorch allows it (convolutions
# do by default: torch.backends.cudnn.allow_tf32).
PEAK_TFLOPS = {"H100": {"bf16": 989.4, "tf32": 494.7, "fp32": 66.9},
               "H200": {"bf16": 989.4, "tf32": 494.7, "fp32": 66.9}}
TINY_MODEL = {"n_filters": 4, "dimension": 16, "n_q": 4, "bins": 16, "lstm": 1, "target_bandwidths": [1.5, 3.0]}


def peak_tflops(device: torch.device, amp: str) -> float | None:
    """The chip's dense peak for the precision the step uses, or None (CPU, unknown chip)."""
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    chip = next((k for k in PEAK_TFLOPS if k in name), None)
    if chip is None:
        return None
    if amp == "bf16":
        return PEAK_TFLOPS[chip]["bf16"]
    return PEAK_TFLOPS[chip]["tf32" if torch.backends.cudnn.allow_tf32 else "fp32"]


def build_parts(cfg: dict, device: torch.device, adversary: bool, amp: str, compile_: bool) -> StepParts:
    """Generator, discriminator, optimisers, balancer and mel loss as the trainer builds them."""
    model = EncodecModel(EncodecConfig.from_dict(cfg["model"])).to(device).train()
    adv = cfg.get("adversarial", {})
    disc = MultiScaleSTFTDiscriminator(filters=adv.get("filters", 32), in_channels=model.channels).to(device)
    optim = cfg.get("optim", {})
    betas = tuple(optim.get("betas", (0.5, 0.9)))
    opt_g = make_adam(model.parameters(), float(optim.get("lr", 3e-4)), betas, device, optim.get("fused", "auto"))
    opt_d = make_adam(disc.parameters(), float(optim.get("lr", 3e-4)), betas, device, optim.get("fused", "auto"))
    weights = {k: float(v) for k, v in cfg.get("losses", {}).items() if k in ("l1", "mel", "adv", "feat")}
    if not adversary:
        weights["adv"] = weights["feat"] = 0.0
    balancer = Balancer({k: v for k, v in weights.items() if v > 0},
                        balance=bool(cfg.get("balancer", {}).get("enabled", True)))
    if compile_:
        compile_models(model, disc)
    return StepParts(model=model, trainer=TrainerModule(model), disc=disc, disc_run=disc, opt_g=opt_g, opt_d=opt_d,
                     balancer=balancer, mel_loss=build_mel_loss(cfg, model.sample_rate).to(device),
                     autocast=autocast_for(amp, device), commit_weight=float(cfg.get("losses", {}).get("commit", 1.0)))


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(cfg: dict, device: torch.device, batch: int, seconds: float, adversary: bool, amp: str,
            compile_: bool, warmup: int, steps: int) -> dict[str, tp.Any]:
    """One table row: audio s/s, FLOPs per step, TFLOP/s, share of peak, peak memory."""
    from torch.utils.flop_counter import FlopCounterMode

    torch.manual_seed(0)
    parts = build_parts(cfg, device, adversary, amp, compile_)
    length = int(seconds * parts.model.sample_rate)
    x = 0.1 * torch.randn(batch, parts.model.channels, length, device=device)
    n_q = parts.model.num_codebooks(max(parts.model.target_bandwidths))
    disc_prob = float(cfg.get("adversarial", {}).get("disc_prob", 2 / 3)) if adversary else 0.0

    def step(i: int, with_disc: bool) -> None:
        y, _, _ = generator_step(parts, x, n_q, False, adversary)
        if with_disc:
            discriminator_step(parts, x, y)

    for i in range(warmup):
        step(i, adversary)
    _sync(device)
    counter = FlopCounterMode(display=False)
    with counter:
        y, _, _ = generator_step(parts, x, n_q, False, adversary)
    g_flops = counter.get_total_flops()
    d_flops = 0
    if adversary:
        counter = FlopCounterMode(display=False)
        with counter:
            discriminator_step(parts, x, y)
        d_flops = counter.get_total_flops()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    _sync(device)
    # the discriminator on the config's share of steps, spread evenly (i * p crosses an integer):
    # int(steps * p) of them, which the FLOPs count (not steps * p: 6 of 10 steps at p = 0.667)
    with_disc = [adversary and int((i + 1) * disc_prob) > int(i * disc_prob) for i in range(steps)]
    start = time.perf_counter()
    for i in range(steps):
        step(i, with_disc[i])
    _sync(device)
    elapsed = time.perf_counter() - start
    flops = g_flops + sum(with_disc) / steps * d_flops
    tflops = flops * steps / elapsed / 1e12
    peak = peak_tflops(device, amp)
    memory = (torch.cuda.max_memory_allocated(device) if device.type == "cuda"
              else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
    return {"audio_s_per_s": steps * batch * seconds / elapsed, "gflop_per_step": flops / 1e9,
            "tflops": tflops, "peak_share": None if peak is None else tflops / peak, "memory_gib": memory / 2**30,
            "step_ms": 1000 * elapsed / steps}


def compile_note() -> str:
    """What ``torch.compile`` made of the models so far (dynamo's counters): graphs, graph breaks
    and whether a code object hit the recompile limit, after which its calls run eager."""
    from torch._dynamo.utils import counters

    breaks = {reason.split("\n")[0]: n for reason, n in counters["graph_break"].items()}
    limit = any("recompile limit" in reason for reason in counters["unimplemented"])
    return (f"compile: {counters['stats']['unique_graphs']} graph(s) compiled; graph breaks: "
            + (", ".join(f"{reason} x{n}" for reason, n in breaks.items()) or "none")
            + ("; RECOMPILE LIMIT HIT: some module calls ran eager (TORCH_LOGS=recompiles says which)"
               if limit else ""))


def main(argv: tp.Sequence[str] | None = None) -> int:
    """Print the throughput table."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--configs", nargs="+", default=list(CONFIGS), help="names (bundled, paper) or YAML paths")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=1.0, help="segment length (s)")
    parser.add_argument("--amp", choices=["none", "bf16"], default="bf16")
    parser.add_argument("--compile", action="store_true", help="torch.compile generator and discriminator")
    parser.add_argument("--adversary", choices=["both", "on", "off"], default="both")
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--cudnn-benchmark", action="store_true", help="the trainer's cudnn_benchmark key")
    parser.add_argument("--tf32", action="store_true", help="the trainer's tf32 key (float32 matmuls as TF32)")
    parser.add_argument("--tiny", action="store_true", help="a tiny model, batch 2, 0.5 s: a dry run of the script")
    args = parser.parse_args(argv)
    for option in ("batch", "steps"):
        if getattr(args, option) < 1:
            parser.error(f"--{option} must be at least 1, got {getattr(args, option)}")
    if args.warmup < 0 or not args.seconds > 0:
        parser.error(f"--warmup must be 0 or more and --seconds above 0, got {args.warmup} and {args.seconds:g}")
    configs = {}
    for config in args.configs:  # all read before the first row's minutes are spent
        try:
            configs[config] = load_config(CONFIGS.get(config, config))
        except (OSError, OpenCodecError) as exc:
            parser.error(f"--configs {config}: {exc} (names: {', '.join(CONFIGS)}, or a YAML path)")
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          ("cpu" if args.device == "auto" else args.device))
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error(f"--device {args.device}: this torch ({torch.__version__}) sees no CUDA device")
    configure_backends({"cudnn_benchmark": args.cudnn_benchmark, "tf32": args.tf32}, device)
    if args.tiny:
        args.batch, args.seconds, args.warmup, args.steps = 2, 0.5, 1, 2
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(f"device: {name}; torch {torch.__version__}; amp {args.amp}; compile {args.compile}; "
          f"cudnn_benchmark {args.cudnn_benchmark}; tf32 {args.tf32}; batch {args.batch} x "
          f"{args.seconds:g} s; {args.steps} timed steps after {args.warmup}" + ("; TINY MODEL (dry run)" if args.tiny else ""))
    print(provenance_line())
    print("| config | adversary | audio s/s | step ms | GFLOP/step | TFLOP/s | % peak | peak memory GiB |")
    print("|---|---|---|---|---|---|---|---|")
    for config in args.configs:
        cfg = configs[config]
        if args.tiny:
            cfg = copy.deepcopy(cfg)
            cfg["model"].update(TINY_MODEL)
            cfg.setdefault("adversarial", {})["filters"] = 4
        for adversary in {"both": (False, True), "on": (True,), "off": (False,)}[args.adversary]:
            row = measure(cfg, device, args.batch, args.seconds, adversary, args.amp, args.compile, args.warmup,
                          args.steps)
            share = "-" if row["peak_share"] is None else f"{100 * row['peak_share']:.1f}"
            print(f"| {config} | {'yes' if adversary else 'no'} | {row['audio_s_per_s']:.1f} | {row['step_ms']:.1f} | "
                  f"{row['gflop_per_step']:.2f} | {row['tflops']:.3f} | {share} | {row['memory_gib']:.2f} |", flush=True)
    if args.compile:  # the rows are only as compiled as this says
        try:
            note = compile_note()
        except Exception as exc:  # noqa: BLE001 - private counters: another torch may lay them out otherwise
            note = f"compile: dynamo's counters not readable here ({type(exc).__name__}: {exc})"
        print("\n" + note)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
