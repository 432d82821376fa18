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
import hashlib
import io
import json
import os
import shutil
import sys
import tempfile
import typing as tp
from pathlib import Path

import torch

from .._files import TEMP_SUFFIX, _owner_tag, error_reason, remove_dead_temporaries, temporary_name_stem
from ..argtypes import positive_float
from ..errors import ConfigError, OutputError
from .run_state import _unreadable_reason, load_torch_file

__all__ = ["compact_state", "expand_state", "write_parts", "read_parts", "pack", "unpack", "main"]

PART_NAME = "state.pt.part"
READY_NAME = ".state.ready"  # a complete new state being moved into place (see _swap_in)
MANIFEST_NAME = ".files"
DIGEST_NAME = "state.pt.sha256"  # of the parts joined: a read that met parts of two packs says so
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


def write_parts(obj: tp.Any, folder: Path, part_bytes: int = DEFAULT_PART_BYTES,
                extra: tp.Mapping[str, bytes] | None = None) -> list[Path]:
    """``torch.save(obj)`` cut into ``folder/state.pt.partNN`` files of at most ``part_bytes``
    (with the files of ``extra``, ``{name: bytes}``), replacing the folder's earlier state all or
    nothing: see :func:`_swap_in`. A ``part_bytes`` under 1 is a ``ValueError``."""
    files = _cut(obj, part_bytes)
    _swap_in(folder, {**files, **(extra or {})})
    return [folder / name for name in files]


def _cut(obj: tp.Any, part_bytes: int) -> dict[str, bytes]:
    """``{state.pt.partNN: bytes}``: ``torch.save(obj)`` in parts of at most ``part_bytes``."""
    if part_bytes < 1:
        raise ValueError(f"parts of {part_bytes} bytes: a part holds at least 1 byte (--part-mb >= 1e-06)")
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    data = buffer.getvalue()
    return {f"{PART_NAME}{i:02d}": data[start:start + part_bytes]
            for i, start in enumerate(range(0, len(data), part_bytes))}


def _swap_in(folder: Path, files: tp.Mapping[str, bytes]) -> None:
    """Replace ``folder``'s state (its parts and ``state.json``) by ``files`` ({name: bytes}), all or
    nothing: the files are written into a hidden temporary folder inside ``folder`` (the same file
    system), which one rename makes ``folder/.state.ready`` (with the list of its files); from then
    on :func:`read_parts` reads the new state, and :func:`_finish_swap` moves it into place. A write
    killed (``kill -9``) or failed (a full disk) before that rename leaves the old state whole; one
    killed after it is finished by the next write."""
    parts = sorted((n for n in files if n.startswith(PART_NAME)), key=lambda n: int(n[len(PART_NAME):]))
    files = {**files, DIGEST_NAME: hashlib.sha256(b"".join(files[n] for n in parts)).hexdigest().encode()}
    try:
        folder.mkdir(parents=True, exist_ok=True)
        _finish_swap(folder)  # an earlier write killed while moving its files: finish it first
        remove_dead_temporaries(folder)
        tmp = Path(tempfile.mkdtemp(prefix=f".{temporary_name_stem(READY_NAME[1:])}.{_owner_tag()}.",
                                    suffix=TEMP_SUFFIX, dir=folder))  # as _files' temporaries: swept when left
    except OSError as exc:
        raise OutputError(f"cannot write {folder}: {error_reason(exc)}") from exc
    try:
        names = sorted(files)
        for name in [*names, MANIFEST_NAME]:
            (tmp / name).write_bytes(files[name] if name != MANIFEST_NAME else ("\n".join(names) + "\n").encode())
            fd = os.open(tmp / name, os.O_RDONLY)  # on disk before the commit (a power cut after it)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        os.replace(tmp, folder / READY_NAME)  # the commit: from here on the new state is the folder's
    except BaseException as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(exc, OSError):
            raise OutputError(f"cannot write {folder}: {error_reason(exc)}; its earlier state is kept") from exc
        raise
    _finish_swap(folder)


def _ready_names(folder: Path) -> list[str] | None:
    """The files of the complete state waiting in ``folder/.state.ready``, or None where none waits."""
    manifest = folder / READY_NAME / MANIFEST_NAME
    names = manifest.read_text().split() if manifest.is_file() else []
    return names if any(n.startswith(PART_NAME) for n in names) else None  # (no part: nothing committed)


def _finish_swap(folder: Path) -> None:
    """Move the state waiting in ``folder/.state.ready`` into ``folder`` (the earlier parts and
    ``state.json`` it does not have removed first); it may be half moved already (a killed write)."""
    names = _ready_names(folder)
    if names is None:
        shutil.rmtree(folder / READY_NAME, ignore_errors=True)  # (an empty one: nothing was committed)
        return
    ready = folder / READY_NAME
    for old in [*folder.glob(PART_NAME + "*"), folder / "state.json", folder / DIGEST_NAME]:
        if old.name not in names and old.is_file():
            old.unlink()
    for name in names:
        if (ready / name).exists():
            os.replace(ready / name, folder / name)
    (ready / MANIFEST_NAME).unlink()
    ready.rmdir()


def read_parts(folder: Path) -> tp.Any:
    """The object :func:`write_parts` wrote to ``folder`` (its parts in the order of their numbers:
    ``part100`` after ``part99``, where names sort it between ``part10`` and ``part11``); where a
    write was killed while moving its complete state into place, that new state."""
    waiting = _ready_names(folder)
    if waiting is not None:  # each file still waiting, else already moved
        numbered = [(folder / READY_NAME / n) if (folder / READY_NAME / n).exists() else folder / n
                    for n in waiting if n.startswith(PART_NAME)]
    else:
        numbered = list(folder.glob(PART_NAME + "*"))
    numbered = [p for p in numbered if p.name[len(PART_NAME):].isdigit()]
    parts = sorted(numbered, key=lambda p: int(p.name[len(PART_NAME):]))
    if not parts:
        raise FileNotFoundError(f"no {PART_NAME}NN files in {folder}")
    data = b"".join(p.read_bytes() for p in parts)
    digest = [p for p in ((folder / READY_NAME / DIGEST_NAME) if waiting is not None else None, folder / DIGEST_NAME)
              if p is not None and p.is_file()]
    if digest and digest[0].read_text().strip() != hashlib.sha256(data).hexdigest():
        raise ValueError(f"{folder}: its {len(parts)} {PART_NAME}NN file(s) do not make a saved state (a part "
                         f"missing or cut short?): their digest is not {DIGEST_NAME}'s (or parts of two packs: "
                         f"read while a pack was writing there? read it again once it has ended)")
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
    parts = _cut(compact, part_bytes)
    size = sum(len(data) for data in parts.values())
    summary = {"step": int(ckpt["step"]), "parts": list(parts), "bytes": size,
               "over_budget": max_bytes is not None and size > max_bytes, "left_out": left_out,
               "kept": sorted(k for k in compact if k != "format")}
    # state.json with its parts, in one swap: never the summary of another pack beside them
    _swap_in(folder, {**parts, "state.json": (json.dumps(summary, indent=2) + "\n").encode()})
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
    except (FileNotFoundError, FileExistsError, ValueError, OutputError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
