"""Carry a codec training run across short GPU runs: a compact state, in parts.

A lent GPU machine starts bare, takes at most 64 MiB of inputs (code and corpus included)
and gives back at most 8 files of 16 MiB. A full ``checkpoint.pt`` (float32 weights, Adam
moments, EMA copy) of even the bundled 3.7 M-parameter model is ~75 MB, so between runs the
trainer's state travels compact:

* generator and discriminator weights in float16 (a tensor whose values do not fit float16
  stays float32); the codebooks' EMA sums (``embed_avg``) are left out and rebuilt from
  the entries and their EMA sizes (``embed * smoothed size``, which the EMA update keeps
  equal to ``embed_avg``);
* Adam's moments (``exp_avg``, ``exp_avg_sq``) in bfloat16 (float32's range, 8-bit mantissa);
* the EMA copy of the generator in float16;
* balancer state, random states, step and config as they are.

Parts are added in that order of priority while the total stays under ``max_bytes``; what
does not fit is left out and resumed fresh (missing moments: Adam starts from zero moments
for that network; missing EMA: it restarts as a copy of the generator). The state is one
``torch.save`` file cut into parts of at most ``part_bytes`` (``state.pt.part00`` ...).

    python -m opencodec.train.campaign pack RUN/checkpoint.pt STATE_DIR [--max-mb 24]
    python -m opencodec.train.campaign unpack STATE_DIR RUN        # -> RUN/checkpoint.pt

Resuming from the compact form is not exact: weights are rounded to float16 (relative
error <= 2^-11) and moments to bfloat16 (<= 2^-8); the random states, balancer, step and
schedule continue exactly (tested in ``tests/test_train_campaign.py``).
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import typing as tp
from pathlib import Path

import torch

from ..argtypes import positive_float
from ..errors import ConfigError
from .run_state import _unreadable_reason, load_torch_file

__all__ = ["compact_state", "expand_state", "write_parts", "read_parts", "pack", "unpack", "main"]

PART_NAME = "state.pt.part"
DEFAULT_PART_BYTES = 15 * 2**20  # under the device tool's 16 MiB per returned file
FLOAT16_MAX = 65504.0


def _half_weights(state: tp.Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Floating tensors to float16 where their values fit, else kept float32."""
    out = {}
    for key, value in state.items():
        fits = value.is_floating_point() and value.numel() > 0 and bool(value.abs().max() < FLOAT16_MAX)
        out[key] = value.to(torch.float16) if fits else value
    return out


EMBED_AVG, EMBED, CLUSTER_SIZE = "embed_avg", "embed", "cluster_size"
CODEBOOK_EPSILON = 1e-5  # EuclideanCodebook's default Laplace smoothing


def _without_embed_avg(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v for k, v in state.items() if not k.endswith("." + EMBED_AVG)}


def _with_embed_avg(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rebuild every codebook's ``embed_avg`` [K, D] as ``embed * smoothed(cluster_size)``,
    the relation ``EuclideanCodebook.update_`` maintains (entries replaced by dead-code
    expiry since the last update are off by the smoothing, a factor ~1)."""
    out = dict(state)
    for key in state:
        if key.endswith("." + CLUSTER_SIZE):
            prefix = key[: -len(CLUSTER_SIZE)]
            if prefix + EMBED_AVG in state or prefix + EMBED not in state:
                continue
            size = state[key].float()
            n = size.sum()
            smoothed = (size + CODEBOOK_EPSILON) / (n + len(size) * CODEBOOK_EPSILON) * n
            out[prefix + EMBED_AVG] = state[prefix + EMBED].float() * smoothed[:, None]
    return out


def _bf16_moments(optim_state: dict) -> dict:
    """An optimiser state dict with its float tensors (Adam's moments) in bfloat16; the
    ``step`` counters and ``param_groups`` are kept as they are."""
    state = {i: {k: (v.to(torch.bfloat16) if k != "step" and v.is_floating_point() else v)
                 for k, v in s.items()} for i, s in optim_state["state"].items()}
    return {"state": state, "param_groups": optim_state["param_groups"]}


def _nbytes(obj: tp.Any) -> int:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.tell()


def compact_state(ckpt: dict, max_bytes: int | None = None) -> tuple[dict, list[str]]:
    """The compact form of a trainer checkpoint, and the names of the parts left out for
    ``max_bytes``. ``model``, ``disc`` and the small fields (step, random states, balancer,
    config, the training metrics summed since the last log) are always kept, even over the
    budget: a run that carries its weights loses less than one that carries nothing."""
    compact = {k: ckpt[k] for k in ("step", "rng", "balancer", "config", "metrics") if k in ckpt}
    compact["model"] = _half_weights(_without_embed_avg(ckpt["model"]))
    compact["disc"] = _half_weights(ckpt["disc"])
    compact["format"] = "opencodec-campaign-1"
    optional = [("opt_g", lambda: _bf16_moments(ckpt["opt_g"])), ("opt_d", lambda: _bf16_moments(ckpt["opt_d"])),
                ("ema", lambda: _half_weights(_without_embed_avg(ckpt["ema"])))]
    left_out = []
    for name, make in optional:
        if name not in ckpt:
            continue
        candidate = {**compact, name: make()}
        if max_bytes is not None and _nbytes(candidate) > max_bytes:
            left_out.append(name)
            continue
        compact = candidate
    return compact, left_out


def _float_like(state: tp.Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.float() if v.is_floating_point() else v for k, v in state.items()}


def expand_state(compact: dict) -> dict:
    """A trainer checkpoint (float32 tensors) from :func:`compact_state`'s output; parts
    left out stay absent (the trainer resumes them fresh)."""
    if compact.get("format") != "opencodec-campaign-1":
        raise ConfigError("not a campaign state (format opencodec-campaign-1)")
    ckpt = {k: v for k, v in compact.items() if k != "format"}
    for name in ("model", "disc", "ema"):
        if name in ckpt:
            ckpt[name] = _with_embed_avg(_float_like(ckpt[name]))
    for name in ("opt_g", "opt_d"):
        if name in ckpt:
            ckpt[name] = {"state": {i: {k: v.float() if v.is_floating_point() and k != "step" else v
                                        for k, v in s.items()} for i, s in ckpt[name]["state"].items()},
                          "param_groups": ckpt[name]["param_groups"]}
    return ckpt


def write_parts(obj: tp.Any, folder: Path, part_bytes: int = DEFAULT_PART_BYTES) -> list[Path]:
    """``torch.save(obj)`` cut into ``folder/state.pt.partNN`` files of at most ``part_bytes``
    (earlier parts in the folder are removed first); a ``part_bytes`` under 1 is a ``ValueError``."""
    if part_bytes < 1:
        raise ValueError(f"parts of {part_bytes} bytes: a part holds at least 1 byte (--part-mb >= 1e-06)")
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.glob(PART_NAME + "*"):
        old.unlink()
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    data = buffer.getvalue()
    paths = []
    for i, start in enumerate(range(0, len(data), part_bytes)):
        path = folder / f"{PART_NAME}{i:02d}"
        path.write_bytes(data[start:start + part_bytes])
        paths.append(path)
    return paths


def read_parts(folder: Path) -> tp.Any:
    """The object :func:`write_parts` wrote to ``folder`` (its parts in the order of their numbers:
    ``part100`` after ``part99``, where names sort it between ``part10`` and ``part11``)."""
    numbered = [p for p in folder.glob(PART_NAME + "*") if p.name[len(PART_NAME):].isdigit()]
    parts = sorted(numbered, key=lambda p: int(p.name[len(PART_NAME):]))
    if not parts:
        raise FileNotFoundError(f"no {PART_NAME}NN files in {folder}")
    data = b"".join(p.read_bytes() for p in parts)
    try:
        return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - torch raises many types for bytes that are not its file
        reason = _unreadable_reason(exc)
        raise ValueError(f"{folder}: its {len(parts)} {PART_NAME}NN file(s) do not make a saved state "
                         f"(a part missing or cut short?): {reason}") from exc


def _read_codec_checkpoint(path: Path) -> dict[str, tp.Any]:
    """``opencodec train``'s ``checkpoint.pt`` at ``path``; another file is a ``ValueError``
    naming it (before anything is written)."""
    ckpt = load_torch_file(path)
    if not (isinstance(ckpt, dict) and isinstance(ckpt.get("model"), dict) and isinstance(ckpt.get("disc"), dict)
            and "step" in ckpt):
        raise ValueError(f"{path} is not a codec training checkpoint (opencodec train writes its model, "
                         f"discriminator and step)")
    return ckpt


def pack(checkpoint: Path, folder: Path, max_bytes: int | None = None,
         part_bytes: int = DEFAULT_PART_BYTES) -> dict[str, tp.Any]:
    """Write ``checkpoint``'s compact state to ``folder`` in parts, and ``folder/state.json``
    (step, parts, bytes, what was left out); returns that summary."""
    ckpt = _read_codec_checkpoint(checkpoint)
    compact, left_out = compact_state(ckpt, max_bytes)
    paths = write_parts(compact, folder, part_bytes)
    size = sum(p.stat().st_size for p in paths)
    summary = {"step": int(ckpt["step"]), "parts": [p.name for p in paths], "bytes": size,
               "over_budget": max_bytes is not None and size > max_bytes, "left_out": left_out,
               "kept": sorted(k for k in compact if k != "format")}
    (folder / "state.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def unpack(folder: Path, run_dir: Path, force: bool = False) -> Path:
    """Expand ``folder``'s compact state to ``run_dir/checkpoint.pt`` for the trainer to resume."""
    from .run_state import _atomic_torch_save
    from .solver import CHECKPOINT

    target = run_dir / CHECKPOINT
    if target.exists() and not force:
        raise FileExistsError(f"{target} exists (use --force to replace it)")
    state = expand_state(read_parts(folder))  # before anything is written: nothing left on an error
    run_dir.mkdir(parents=True, exist_ok=True)
    _atomic_torch_save(state, target)
    return target


def main(argv: tp.Sequence[str] | None = None) -> int:
    """``pack CHECKPOINT FOLDER [--max-mb N]`` or ``unpack FOLDER RUN_DIR [--force]``."""
    parser = argparse.ArgumentParser(prog="python -m opencodec.train.campaign", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("pack", help="a trainer checkpoint -> compact state parts")
    p.add_argument("checkpoint", type=Path)
    p.add_argument("folder", type=Path)
    p.add_argument("--max-mb", type=positive_float, default=None, help="budget for the whole state (MB = 10^6 bytes)")
    p.add_argument("--part-mb", type=positive_float, default=DEFAULT_PART_BYTES / 1e6, help="largest part (MB)")
    u = sub.add_parser("unpack", help="compact state parts -> RUN_DIR/checkpoint.pt")
    u.add_argument("folder", type=Path)
    u.add_argument("run_dir", type=Path)
    u.add_argument("--force", action="store_true", help="replace an existing checkpoint")
    args = parser.parse_args(argv)
    try:
        if args.command == "pack":
            if not args.checkpoint.is_file():
                parser.error(f"no checkpoint {args.checkpoint}")
            max_bytes = None if args.max_mb is None else int(args.max_mb * 1e6)
            summary = pack(args.checkpoint, args.folder, max_bytes, int(args.part_mb * 1e6))
            print(json.dumps(summary))
            if summary["over_budget"]:
                print(f"warning: the weights alone take {summary['bytes']} bytes, over --max-mb {args.max_mb}",
                      file=sys.stderr)
        else:
            print(f"resume state: {unpack(args.folder, args.run_dir, args.force)}")
    except (FileNotFoundError, FileExistsError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
