"""Show that the trainer learns on a CPU in minutes: train the tiny config on the `small`
corpus and compare held-out SI-SNR and mel distance with the untrained model.

::

    python scripts/it_learns.py --minutes 8 --out docs/training/it_learns.md

Steps:

1. builds the `small` corpus under ``data/`` if its manifests are missing
   (``python -m opencodec.data.corpus build --preset small``; needs Debian's package mirror);
2. scores the untrained model twice on the held-out clips the trainer validates on: with
   PyTorch's default initialisation, and after the data-dependent initialisation the tiny
   config uses (``init: data_dependent``; that second score is the trainer's step-0
   validation);
3. trains ``configs/tiny_24khz.yaml`` for ``--minutes`` of wall-clock time in a fresh run
   folder (``opencodec train ... --max-minutes``), with its periodic validations;
4. prints (and writes as Markdown with ``--out``) the table: SI-SNR (dB) and mel distance
   per bandwidth at each validation, first-codebook usage, steps, wall time and throughput
   (seconds of audio per second).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from opencodec.model import EncodecConfig, EncodecModel  # noqa: E402
from opencodec.train.solver import _seed_everything, _valid_items, load_config, validate  # noqa: E402


def _overrides(preset: str, threads: int) -> list[str]:
    manifests = f"data/{preset}_24k/manifests"
    return [f"data.train=[{manifests}/train.jsonl]", f"data.valid=[{manifests}/valid.jsonl]",
            f"threads={threads}", "log.valid_every=100", "log.checkpoint_every=100",
            "optim.steps=100000"]


def _untrained_scores(cfg: dict) -> tuple[dict[str, float], int]:
    """Validation scores of the untrained model with PyTorch's default initialisation, and
    the number of held-out clips they were computed on."""
    _seed_everything(int(cfg.get("seed", 0)))
    model = EncodecModel(EncodecConfig.from_dict(cfg["model"]))
    items = _valid_items(cfg, model)
    bandwidths = cfg.get("valid", {}).get("bandwidths") or [model.target_bandwidths[0]]
    return validate(model, items, torch.device("cpu"), bandwidths), len(items)


def _table(rows: list[tuple[str, dict[str, float]]], bandwidths: list[float]) -> str:
    head = ["model"] + [f"SI-SNR {b:g} kbps (dB)" for b in bandwidths] + \
           [f"mel dist. {b:g} kbps" for b in bandwidths] + ["codebook 0 used / perplexity"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, v in rows:
        cells = [name] + [f"{v[f'si_snr/{b:g}kbps']:.1f}" for b in bandwidths] + \
                [f"{v[f'mel_distance/{b:g}kbps']:.3f}" for b in bandwidths] + \
                [f"{100 * v['codebook0/used_fraction']:.0f}% / {v['codebook0/perplexity']:.0f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="configs/tiny_24khz.yaml")
    parser.add_argument("--preset", default="small", choices=["tiny", "small", "full"])
    parser.add_argument("--minutes", type=float, default=8.0, help="training wall-clock minutes")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--run-dir", default="runs/it_learns", help="fresh run folder (replaced)")
    parser.add_argument("--out", default=None, help="write the result as Markdown here")
    args = parser.parse_args()

    manifests = ROOT / "data" / f"{args.preset}_24k" / "manifests"
    if not (manifests / "train.jsonl").exists():
        subprocess.run([sys.executable, "-m", "opencodec.data.corpus", "build", "--preset", args.preset,
                        "--out", "data"], cwd=ROOT, check=True)
    overrides = _overrides(args.preset, args.threads)
    cfg = load_config(ROOT / args.config, overrides)
    torch.set_num_threads(args.threads)
    os.chdir(ROOT)  # manifest paths in the config are relative to the repository
    untrained, num_clips = _untrained_scores(cfg)

    run = ROOT / args.run_dir
    if run.exists():
        shutil.rmtree(run)
    started = time.monotonic()
    subprocess.run([sys.executable, "-m", "opencodec.train", args.config, *overrides, "--run-dir", str(run),
                    "--max-minutes", str(args.minutes), "--no-progress"], cwd=ROOT, check=True)
    wall = time.monotonic() - started
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    valids = [r for r in records if any(k.startswith("valid/") for k in r)]
    steps = max(r["step"] for r in records)
    rates = [r["perf/audio_seconds_per_second"] for r in records if "perf/audio_seconds_per_second" in r]
    bandwidths = [float(b) for b in cfg.get("valid", {}).get("bandwidths", [1.5])]
    rows = [("untrained, PyTorch default init", untrained)]
    for r in valids:
        name = "untrained, data-dependent init (step 0)" if r["step"] == 0 else f"step {r['step']}"
        rows.append((name, {k[len("valid/"):]: v for k, v in r.items() if k.startswith("valid/")}))
    table = _table(rows, bandwidths)
    rate = sum(rates) / len(rates) if rates else float("nan")
    summary = (f"`python scripts/it_learns.py --minutes {args.minutes:g} --threads {args.threads}"
               f" --preset {args.preset}`: {steps} steps of batch {cfg['optim']['batch_size']} x "
               f"{cfg['data'].get('segment_seconds', 1.0):g} s in {wall / 60:.1f} min wall "
               f"(including validations), {rate:.1f} s of audio per second of training, "
               f"{num_clips} held-out clips of {cfg.get('valid', {}).get('seconds', 3.0):g} s.")
    print(summary)
    print(table)
    if args.out:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text("# The tiny config learns on a CPU\n\n" + summary + "\n\n" + table + "\n")
        shutil.copy(run / "metrics.jsonl", out.with_suffix(".metrics.jsonl"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
