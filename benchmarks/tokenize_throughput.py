"""Tokenising a dataset: opencodec tokenize against the loops users write today, same device, same run.

Times the whole job (read, resample, encode, save the codes) over a folder of mixed-length
audio (1-30 s), with the official 24 kHz architecture and random weights at 6 kbps, for:

- (a) ``official``: the official ``encodec`` package, file by file (read, convert, encode, save .npy);
- (b) ``transformers``: the loop around ``transformers.EncodecModel``: files read and resampled in
  the main process, batched in the given order (``--hf-batch`` files) with their ``padding_mask``,
  each file's codes cut to its frames and saved (.npy); skipped, with a note, when
  transformers is not installed;
- (c) ``opencodec``: ``python -m opencodec tokenize`` (Parquet shards; its process start-up is
  timed too), 1 and 2 processes (``--workers``) on the CPU.

On CUDA, TF32 is off for every system (fp32 rows are fp32); bf16 rows run each system under
``torch.autocast(dtype=torch.bfloat16)``. Every system's codes are compared with file-by-file encoding by opencodec on the same device in
fp32 (``model.encode`` of each file alone): the table gives the percent of codes equal. All three
carry the same weights (the official model's, mapped to the transformers layout for (b)).
Speed is hours of audio per hour of wall time (= real-time factor); "x best peer" divides
opencodec's by the faster of (a) and (b) on the same device and dtype.

    python benchmarks/tokenize_throughput.py [--audio DIR] [--files 120] [--devices cpu cuda]
        [--dtypes fp32 bf16] [--cpu-files 12] [--cpu-processes 1 2] [--threads 1] [--hf-batch 16]

Without ``--audio`` the set is cut from the real recordings found in ``--sources`` (default: the
repository's demo speech), looped, at random lengths 1-30 s, rates 16/22.05/44.1/48 kHz, mono or
stereo (seeded). ``--audio DIR`` uses the audio files of DIR as they are. The CPU rows use the
first ``--cpu-files`` files (a CPU pass over the GPU set would take too long).

Interrupted (Ctrl-C, or SIGTERM, which ``timeout`` in ``scripts/device/tokenize_bench.sh`` sends
before a device call's own time limit), it prints the table of the rows measured so far, marked
PARTIAL, and exits with status 130: a run cut short still returns its rows.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing as mp
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import typing as tp
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

try:  # before official_ref: its torchaudio stand-in confuses transformers' import checks
    from transformers import EncodecConfig as HFConfig, EncodecModel as HFModel
except ImportError:
    HFConfig = HFModel = None

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "src"))
import official_ref  # noqa: E402  (installs the torchaudio stand-in, imports encodec)

from opencodec.audio import convert_audio, read_audio  # noqa: E402
from opencodec.pretrained import load_model, normalize_keys  # noqa: E402
from opencodec.tokens.inputs import list_inputs  # noqa: E402
from provenance import provenance_line  # noqa: E402

BANDWIDTH = 6.0
RATES = (16_000, 22_050, 44_100, 48_000)
Codes = dict[str, np.ndarray]  # file id -> [K, F]


# -- the audio set --------------------------------------------------------------------------------
_POOL: np.ndarray | None = None  # the mono 48 kHz source pool, shared with forked writers


def _write_piece(job: tuple[Path, float, int, int, int]) -> None:
    path, seconds, rate, channels, start = job
    assert _POOL is not None
    piece = np.take(_POOL, np.arange(start, start + int(seconds * 48_000)), mode="wrap")
    piece = convert_audio(torch.from_numpy(piece)[None], 48_000, rate, 1)[0].numpy()
    data = np.stack([piece * g for g in (1.0, 0.8)[:channels]], axis=1).astype(np.float32)
    sf.write(path, data, rate, subtype="PCM_16")


def make_set(sources: list[Path], out: Path, files: int, seed: int, min_s: float, max_s: float) -> Path:
    """``files`` FLAC pieces of the looped ``sources`` (mono pool at 48 kHz): random length,
    rate and channel count (seeded); written by all cores."""
    global _POOL
    pool = []
    for src in sources:
        wav, rate = read_audio(src)
        pool.append(convert_audio(wav, rate, 48_000, 1)[0].numpy())
    if not pool:
        raise SystemExit("no source audio: pass --audio DIR or --sources FILE ...")
    _POOL = np.concatenate(pool)
    rng = np.random.default_rng(seed)
    out.mkdir(parents=True, exist_ok=True)
    jobs = [(out / f"item{i:04d}.flac", float(rng.uniform(min_s, max_s)), int(rng.choice(RATES)),
             int(rng.integers(1, 3)), int(rng.integers(0, _POOL.size))) for i in range(files)]
    for stale in set(out.glob("item*.flac")) - {job[0] for job in jobs}:  # a reused --work's larger set
        stale.unlink()
    with ProcessPoolExecutor(os.cpu_count() or 1, mp_context=mp.get_context("fork")) as pool_exec:
        list(pool_exec.map(_write_piece, jobs))
    return out


# -- models ---------------------------------------------------------------------------------------
def official_model(device: torch.device) -> tp.Any:
    model = official_ref.make_official_model("encodec_24khz", seed=0)
    model.set_target_bandwidth(BANDWIDTH)
    return model.to(device)


def hf_model(official: tp.Any, device: torch.device) -> tp.Any | None:
    """transformers.EncodecModel carrying the official weights, or None when not installed."""
    if HFModel is None:
        return None
    model = HFModel(HFConfig())  # the 24 kHz configuration
    ours = {k: v.cpu() for k, v in official.state_dict().items()}
    state = model.state_dict()
    for key in state:
        mapped = next(iter(normalize_keys({key: state[key]}, expected=ours)))
        if mapped not in ours or ours[mapped].shape != state[key].shape:
            raise SystemExit(f"cannot map transformers weight {key} (-> {mapped}) to the official model")
        state[key] = ours[mapped]
    model.load_state_dict(state)
    return model.eval().to(device)


# -- the systems ----------------------------------------------------------------------------------
def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _autocast(device: torch.device, dtype: str) -> tp.ContextManager:
    if dtype == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _read(path: str, rate: int = 24_000) -> torch.Tensor:
    wav, sr = read_audio(path)
    return convert_audio(wav, sr, rate, 1)


def run_official(model: tp.Any, items: list, device: torch.device, dtype: str, out: Path) -> Codes:
    codes = {}
    out.mkdir(parents=True, exist_ok=True)
    with torch.inference_mode(), _autocast(device, dtype):
        for n, item in enumerate(items):
            frames = model.encode(_read(item.path)[None].to(device))
            c = torch.cat([f[0] for f in frames], dim=-1)[0].cpu().numpy()
            np.save(out / f"{n}.npy", c)
            codes[item.id] = c
    return codes


def run_transformers(model: tp.Any, items: list, device: torch.device, dtype: str, out: Path,
                     batch: int) -> Codes:
    codes = {}
    out.mkdir(parents=True, exist_ok=True)
    with torch.inference_mode(), _autocast(device, dtype):
        for start in range(0, len(items), batch):
            group = items[start:start + batch]
            waves = [_read(it.path)[0] for it in group]
            longest = max(w.numel() for w in waves)
            x = torch.zeros(len(waves), 1, longest)
            mask = torch.zeros(len(waves), longest, dtype=torch.bool)
            for b, w in enumerate(waves):
                x[b, 0, : w.numel()] = w
                mask[b, : w.numel()] = True
            enc = model.encode(x.to(device), padding_mask=mask.to(device), bandwidth=BANDWIDTH)
            batch_codes = enc.audio_codes[0].cpu().numpy()  # [B, K, F] (one chunk at 24 kHz)
            for b, (it, w) in enumerate(zip(group, waves)):
                c = batch_codes[b, :, : -(-w.numel() // 320)]
                np.save(out / f"{start + b}.npy", c)
                codes[it.id] = c
    return codes


def run_opencodec(ckpt: Path, audio: list[str], device: torch.device, dtype: str, out: Path,
                  processes: int, batch_seconds: float, threads: int, loader_workers: int | None,
                  shard_rows: int = 1000) -> Codes:
    """``python -m opencodec tokenize`` as a user runs it (its start-up is part of the time).
    Work is split between processes by shard, so ``shard_rows`` must give each several."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")]),
           "OMP_NUM_THREADS": str(threads * processes)}
    cmd = [sys.executable, "-m", "opencodec", "-q", "tokenize", *audio, "--out", str(out), "-m", str(ckpt),
           "-b", str(BANDWIDTH), "--device", device.type, "--batch-seconds", str(batch_seconds),
           "--workers", str(processes), "--dtype", dtype, "--shard-rows", str(shard_rows)]
    if loader_workers is not None:
        cmd += ["--loader-workers", str(loader_workers)]
    subprocess.run(cmd, env=env, check=True)
    import pyarrow.parquet as pq
    codes = {}
    for shard in sorted(out.glob("shard-*.parquet")):
        for row in pq.read_table(shard, columns=["id", "codes"]).to_pylist():
            codes[row["id"]] = np.array(row["codes"], dtype=np.int64)
    return codes


def reference_codes(ckpt: Path, items: list, device: torch.device) -> Codes:
    model = load_model(ckpt, device=device)
    model.set_target_bandwidth(BANDWIDTH)
    codes = {}
    with torch.inference_mode():
        for item in items:
            frames = model.encode(_read(item.path)[None].to(device))
            codes[item.id] = torch.cat([f.codes for f in frames], dim=-1)[0].cpu().numpy()
    return codes


def agreement(codes: Codes, ref: Codes) -> float:
    """Percent of the reference's codes that ``codes`` equals (missing frames count as different)."""
    equal = total = 0
    for key, r in ref.items():
        c = codes.get(key)
        total += r.size
        if c is not None and c.shape[0] == r.shape[0]:
            f = min(c.shape[1], r.shape[1])
            equal += int((c[:, :f] == r[:, :f]).sum())
    return 100.0 * equal / total


# -- the table ------------------------------------------------------------------------------------
def timed(fn: tp.Callable[[], Codes], device: torch.device) -> tuple[Codes, float]:
    _sync(device)
    start = time.perf_counter()
    result = fn()
    _sync(device)
    return result, time.perf_counter() - start


def bench_device(args: argparse.Namespace, device: torch.device, items: list, ckpt: Path, work: Path,
                 hours: float, rows: list[dict[str, tp.Any]]) -> None:
    """Time every system on ``device``, appending each row to ``rows`` as soon as it is measured
    (so that an interrupted run keeps the rows it has)."""
    official = official_model(device)
    hf = hf_model(official, device) if "transformers" in args.peers else None
    if "transformers" in args.peers and hf is None:
        print("note: transformers is not installed: system (b) skipped", file=sys.stderr)
    ref = reference_codes(ckpt, items, device)
    # the opencodec rows read the same files: a manifest of their paths with the same ids
    listing = work / f"list-{device.type}.jsonl"
    listing.write_text("".join(json.dumps({"path": it.path, "id": it.id}) + "\n" for it in items))
    for dtype in args.dtypes:
        systems: list[tuple[str, int, tp.Callable[[], Codes]]] = []
        if "official" in args.peers:
            systems.append(("(a) official, file by file", 1, lambda: run_official(
                official, items, device, dtype, work / f"a-{device.type}-{dtype}")))
        if hf is not None:
            systems.append((f"(b) transformers, batches of {args.hf_batch}", 1, lambda: run_transformers(
                hf, items, device, dtype, work / f"b-{device.type}-{dtype}", args.hf_batch)))
        for procs in (args.cpu_processes if device.type == "cpu" else [1]):
            systems.append(("(c) opencodec tokenize", procs, lambda p=procs: run_opencodec(
                ckpt, [str(listing)], device, dtype, work / f"c-{device.type}-{dtype}-{p}", p, args.batch_seconds,
                torch.get_num_threads(), args.loader_workers if device.type == "cuda" else None,
                max(1, len(items) // (4 * p)))))
        if args.one_file_batches and dtype == "fp32":  # batch-size effects on the GPU's kernels, ruled out
            systems.append(("(c) opencodec tokenize, one file per batch", 1, lambda: run_opencodec(
                ckpt, [str(listing)], device, dtype, work / f"c-{device.type}-{dtype}-single", 1, 1e-3,
                torch.get_num_threads(), args.loader_workers if device.type == "cuda" else None,
                max(1, len(items) // 4))))
        for name, procs, fn in systems:
            for leftover in [*work.glob(f"c-{device.type}-{dtype}-{procs}"), *work.glob(f"c-{device.type}-{dtype}-single")]:
                shutil.rmtree(leftover)
            codes, seconds = timed(fn, device)
            rows.append({"device": device_name(device), "dtype": dtype, "system": name, "processes": procs,
                         "threads": torch.get_num_threads(), "files": len(items), "audio_h": hours,
                         "wall_s": seconds, "speed": hours * 3600 / seconds, "equal_pct": agreement(codes, ref)})
            print(f"  {rows[-1]['device']} {dtype} {name} x{procs}: {seconds:.2f} s", file=sys.stderr)


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU ({platform.processor() or platform.machine()}, {os.cpu_count()} cores)"


def print_table(rows: list[dict[str, tp.Any]]) -> None:
    print("| device | dtype | system | processes x threads | files | audio (h) | wall (s) | "
          "h audio / h | x best peer | codes equal to file alone |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for row in rows:
        peers = [r["speed"] for r in rows if r["device"] == row["device"] and r["dtype"] == row["dtype"]
                 and not r["system"].startswith("(c)")]
        ratio = f"{row['speed'] / max(peers):.2f}" if row["system"].startswith("(c)") and peers else ""
        print(f"| {row['device']} | {row['dtype']} | {row['system']} | {row['processes']} x {row['threads']} | "
              f"{row['files']} | {row['audio_h']:.4f} | {row['wall_s']:.2f} | {row['speed']:,.0f} | {ratio} | "
              f"{row['equal_pct']:.3f}% |")


def _interrupt(signum: int, frame: tp.Any) -> None:
    """SIGTERM as Ctrl-C: stop measuring, print the rows so far."""
    raise KeyboardInterrupt


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--audio", type=Path, help="folder of audio files (default: a set cut from --sources)")
    parser.add_argument("--sources", type=Path, nargs="+", default=[ROOT / "demo" / "sample_speech_fr.flac"])
    parser.add_argument("--files", type=int, default=120, help="files in the generated set (default 120)")
    parser.add_argument("--min-seconds", type=float, default=1.0)
    parser.add_argument("--max-seconds", type=float, default=30.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--devices", nargs="+", default=["cpu"] + (["cuda"] if torch.cuda.is_available() else []))
    parser.add_argument("--dtypes", nargs="+", default=["fp32", "bf16"], choices=["fp32", "bf16"])
    parser.add_argument("--cpu-dtypes", nargs="+", default=["fp32"], choices=["fp32", "bf16"])
    parser.add_argument("--cpu-files", type=int, default=12, help="files of the set used on the CPU")
    parser.add_argument("--cpu-processes", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--threads", type=int, default=1, help="torch threads per process on the CPU")
    parser.add_argument("--hf-batch", type=int, default=16)
    parser.add_argument("--batch-seconds", type=float, default=600.0, help="opencodec --batch-seconds on the GPU")
    parser.add_argument("--loader-workers", type=int, help="opencodec --loader-workers on the GPU (default: its own)")
    parser.add_argument("--one-file-batches", action="store_true",
                        help="also time opencodec tokenize with one file per batch (fp32): its codes cannot "
                             "differ from file-by-file encoding through batch-size-dependent GPU kernels")
    parser.add_argument("--peers", nargs="+", default=["official", "transformers"],
                        choices=["official", "transformers"])
    parser.add_argument("--work", type=Path, help="scratch folder (default: a temporary one, removed)")
    args = parser.parse_args()
    for option in ("files", "cpu_files", "threads", "hf_batch"):
        if getattr(args, option) < 1:
            parser.error(f"--{option.replace('_', '-')} must be at least 1, got {getattr(args, option)}")
    if min(args.cpu_processes) < 1:
        parser.error(f"--cpu-processes must each be at least 1, got {args.cpu_processes}")
    for option in ("min_seconds", "max_seconds", "batch_seconds"):
        if not 0 < getattr(args, option) < float("inf"):
            parser.error(f"--{option.replace('_', '-')} must be above 0 and finite, got {getattr(args, option):g}")
    previous = signal.signal(signal.SIGTERM, _interrupt)  # timeout's SIGTERM: the partial table, as Ctrl-C
    try:
        return _run(args)
    finally:
        signal.signal(signal.SIGTERM, previous)  # restored for a caller that goes on (a test)


def _run(args: argparse.Namespace) -> int:
    """:func:`main` once its options are parsed and SIGTERM is an interrupt."""
    torch.manual_seed(0)
    # fp32 means fp32 for every system (opencodec tokenize sets the same in its own process);
    # PyTorch's default lets cuDNN convolutions use TF32.
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    with contextlib.ExitStack() as stack:
        work = args.work or Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="tokbench-")))
        work.mkdir(parents=True, exist_ok=True)
        folder = args.audio or make_set(args.sources, work / "set", args.files, args.seed,
                                        args.min_seconds, args.max_seconds)
        items = [it for it in list_inputs([str(folder)])]
        ckpt = official_ref.save_official_checkpoint(official_model(torch.device("cpu")), work / "encodec_24khz-random.th")
        rows: list[dict[str, tp.Any]] = []
        interrupted = False
        try:
            for name in args.devices:
                device = torch.device(name)
                chosen = items[: args.cpu_files] if device.type == "cpu" else items
                hours = sum(sf.info(it.path).frames / sf.info(it.path).samplerate for it in chosen) / 3600
                print(f"{name}: {len(chosen)} files, {hours * 60:.2f} min of audio", file=sys.stderr)
                if device.type == "cpu":
                    torch.set_num_threads(args.threads)
                    saved, args.dtypes = args.dtypes, args.cpu_dtypes
                    try:
                        bench_device(args, device, chosen, ckpt, work, hours, rows)
                    finally:
                        args.dtypes = saved
                else:
                    bench_device(args, device, chosen, ckpt, work, hours, rows)
        except (KeyboardInterrupt, subprocess.CalledProcessError) as exc:
            # timeout's signal reaches the tokenize subprocess too, which then fails (130/143)
            if not isinstance(exc, KeyboardInterrupt) and exc.returncode not in (130, 143, -2, -15):
                raise
            interrupted = True
        print("\n" + provenance_line())
        print(f"opencodec tokenize throughput, official 24 kHz architecture (random weights), {BANDWIDTH:g} kbps; "
              f"torch {torch.__version__}; set: {folder if args.audio else 'cut from ' + ', '.join(s.name for s in args.sources)}\n")
        if interrupted:
            print(f"PARTIAL: interrupted after {len(rows)} row(s); the rows below are complete, the others "
                  f"were not measured\n")
        print_table(rows)
    return 130 if interrupted else 0


if __name__ == "__main__":
    sys.exit(main())
