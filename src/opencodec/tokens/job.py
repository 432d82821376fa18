"""The tokenisation job: plan, encode each of this process's shards, write, finalise.

``tokenize(options)`` runs the whole job from one command: in this process, or in
``options.workers`` CPU processes, and under ``torchrun`` as one of ``WORLD_SIZE`` ranks (each
rank takes its share of the shards; see ``plan``). Every worker writes only whole shards and
skips those that exist, so a killed run resumes where it stopped and ends with the same files.
Whichever worker finds all shards present writes ``index.json`` and ``errors.jsonl``.
"""

from __future__ import annotations

import contextlib
import math
import multiprocessing as mp
import os
import queue as queue_mod
import signal
import time
import typing as tp
import warnings
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import soundfile as sf
import torch

from .._process import exit_with_parent, usable_cores
from ..audio import Truncation, find_truncation, resampled_length, soundfile_name
from ..batching import encode_batch, encode_each
from ..errors import AudioIOError, OpenCodecError
from ..longform import encode_file_streaming, supports_streaming
from ..model import EncodecModel
from ..model_cache import load_checked_model
from ..pretrained import known_models, load_model
from ..weights_hash import weights_sha256
from .inputs import list_inputs, utf8_text
from .plan import (PlannedItem, WorkerPlace, assign_shards, batches, env_int, most_batches, place_from_env,
                   plan_sha256, probe, shard_ranges, shard_seconds, shards_for)
from .reader import BatchAudio, LoadedBatch, batch_loader, loader_death, loader_workers_warning
from .shards import INDEX_FILE, Row, claim_folder, finalize, remove_stale_temps, shard_name, write_shard

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}

#: Called with (seconds of audio done, files done, errors) increments. A file that fails counts
#: the seconds its header gives (0 when unreadable), so the seconds add up to the plan's.
Report = tp.Callable[[float, int, int], None]


@dataclass
class TokenizeOptions:
    """Settings of a tokenisation job (the ``opencodec tokenize`` options)."""

    inputs: list[str]
    out: Path
    model: str | None = None
    bandwidth: float | None = None  # kbps; None: the model's largest
    device: str = "auto"  # cpu, cuda or auto
    batch_seconds: float = 120.0  # padded audio per batch
    shard_rows: int = 1000
    max_seconds: float = 300.0  # longer files are streamed in bounded memory
    workers: int = 1  # CPU processes (without torchrun)
    loader_workers: int | None = None  # DataLoader processes per worker; None: default_loader_workers
    dtype: str = "fp32"


@dataclass
class WorkerStats:
    """What one worker did: rows written, audio seconds, errors, shards written and skipped."""

    files: int = 0
    seconds: float = 0.0
    errors: int = 0
    shards_written: int = 0
    shards_skipped: int = 0
    bf16_equal: int = 0  # --dtype bf16: codes equal to fp32 on the checked batch
    bf16_checked: int = 0

    def add(self, other: "WorkerStats") -> None:
        """Add ``other``'s counts to these."""
        for name in ("files", "seconds", "errors", "shards_written", "shards_skipped", "bf16_equal",
                     "bf16_checked"):
            setattr(self, name, getattr(self, name) + getattr(other, name))


@dataclass
class Summary:
    """The job's outcome as seen by this process (``index`` once every shard exists);
    ``workers_note``: in the first process, when fewer ``workers`` ran than were asked for
    (see ``workers_note``)."""

    stats: WorkerStats
    elapsed: float
    place: WorkerPlace
    index: dict[str, tp.Any] | None = None
    extra: dict[str, tp.Any] = field(default_factory=dict)
    workers_note: str | None = None
    reports_job: bool = False  # this process reports the finished job (one of the ranks: see tokenize)

    @property
    def all_failed(self) -> bool:
        """True when the job is complete and not one file could be tokenised (every file
        failed; ``errors.jsonl`` says why)."""
        return self.index is not None and self.index["rows"] == 0 and self.index["errors"] > 0

    @property
    def realtime_factor(self) -> float:
        """Seconds of audio tokenised per second of wall time."""
        return self.stats.seconds / self.elapsed if self.elapsed > 0 else float("nan")


@dataclass
class JobPlan:
    """The planned rows (sorted by duration, id), the shard ranges and ``job.json``'s content."""

    planned: list[PlannedItem]
    shards: list[range]
    job: dict[str, tp.Any]


def resolve_device(device: str, place: WorkerPlace) -> torch.device:
    """``auto``: CUDA when available; on CUDA each local rank takes its own GPU."""
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda":
        if not torch.cuda.is_available():
            raise OpenCodecError("--device cuda: no CUDA device is available")
        return torch.device("cuda", place.local_rank % torch.cuda.device_count())
    if device != "cpu":
        raise OpenCodecError(f"unknown device {device!r} (cpu, cuda or auto)")
    return torch.device("cpu")


def default_loader_workers(device: torch.device) -> int:
    """DataLoader processes per worker: on CUDA the node's cores shared among its ranks
    (at most 8 each), on the CPU none (the encoding processes use the cores)."""
    if device.type != "cuda":
        return 0
    local_world = env_int("LOCAL_WORLD_SIZE", 1)
    return max(1, min(8, (os.cpu_count() or 1) // max(1, local_world) - 1))


def prepare_model(options: TokenizeOptions, device: torch.device) -> EncodecModel:
    """The model on ``device`` at the job's bandwidth (default: the largest it supports). A
    bandwidth the model does not support is a ``UsageError``, as for ``compress`` (a known
    model's before its weights load)."""
    model = load_checked_model(options.model, options.bandwidth, load=lambda name: load_model(name, device=device))
    bandwidth = max(model.target_bandwidths) if options.bandwidth is None else options.bandwidth
    if model.bins > 32768:
        raise OpenCodecError(f"model {model.name} has {model.bins} codes per codebook: more than int16 holds")
    model.set_target_bandwidth(bandwidth)
    if device.type == "cuda":  # fp32 must be fp32: codes are compared with file-by-file encoding
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
        torch.backends.cudnn.benchmark = False
    return model.eval()


def weights_file(model: str | None) -> str | None:
    """The absolute path of the weights file ``--model`` names, None for a model name (the
    shards record it, so ``detokenize`` finds the weights without ``--model``)."""
    if model is None or model in known_models():
        return None
    path = Path(model).expanduser()
    return str(path.resolve()) if path.is_file() else None


def dtype_warning(options: TokenizeOptions, device: torch.device) -> str | None:
    """The warning for bf16 on the CPU (it works, but is not what it seems), or None."""
    if options.dtype != "bf16" or device.type != "cpu":
        return None
    return ("--dtype bf16 on the CPU: bfloat16 autocast changes most codes (on speech with the "
            "bundled model, 42% equalled fp32, 67% on the first codebook) and is meant for GPUs; "
            "use fp32 on the CPU (the agreement measured on the first batch is reported at the end)")


def loader_warning(options: TokenizeOptions, device: torch.device, most: int | None = None) -> str | None:
    """The warning for more DataLoader processes than usable cores, or None. ``most``: the most
    batches one process loads (``plan.most_batches``; None: unknown), which caps its loader processes."""
    loaders = options.loader_workers if options.loader_workers is not None else default_loader_workers(device)
    return loader_workers_warning(loaders, usable_cores(), most)


def make_plan(options: TokenizeOptions, model: EncodecModel) -> JobPlan:
    """List and probe the inputs, cut the shards, and claim the output folder."""
    if options.shard_rows < 1:
        raise OpenCodecError(f"--shard-rows must be at least 1, got {options.shard_rows}")
    if options.dtype not in DTYPES:
        raise OpenCodecError(f"--dtype must be one of {', '.join(DTYPES)}, got {options.dtype!r}")
    planned = probe(list_inputs(options.inputs))
    shards = shard_ranges(len(planned), options.shard_rows)
    from .. import __version__
    job = {"model": model.name, "weights_sha256": weights_sha256(model), "bandwidth": model.bandwidth,
           "dtype": options.dtype, "shard_rows": options.shard_rows, "num_shards": len(shards),
           "num_files": len(planned), "files_sha256": plan_sha256(planned), "opencodec_version": __version__}
    claim_folder(Path(options.out), job)
    return JobPlan(planned, shards, job)


def _rows_of_batch(model: EncodecModel, loaded: LoadedBatch, items: list[PlannedItem],
                   device: torch.device, autocast: tp.ContextManager) -> dict[int, Row]:
    if loaded.audio is None:
        return {}
    # A batched pass pays off on a GPU; on the CPU item by item is faster (batching.encode_each).
    encode = encode_each if device.type == "cpu" else encode_batch
    with autocast:
        enc = encode(model, loaded.audio.to(device, non_blocking=True), loaded.lengths)
    codes = enc.codes.to("cpu", torch.int16).numpy()
    rows = {}
    for b, row in enumerate(loaded.rows):
        frames = int(enc.frame_lengths[b])
        scales = None
        if enc.scales is not None:
            scales = enc.scales[b, : len(model.segments(loaded.lengths[b]))].float().cpu().numpy()
        src = loaded.sources[b]
        rows[row] = Row(items[row].id, codes[b, :, :frames], src.sample_rate, src.duration,
                        src.channels, loaded.lengths[b], scales)
    return rows


def _streamed_row(model: EncodecModel, item: PlannedItem, autocast: tp.ContextManager) -> Row:
    """A long file's row, encoded block by block. A truncated file fails as ``read_audio(...,
    refuse_truncated=True)`` fails for a short one, and gets no row: a cut WAV or AIFF before
    any encoding (its header against libsndfile's count), another format (an MP3 whose Xing
    header counts more frames than it holds) when it gave fewer samples than libsndfile's count."""
    info = sf.info(soundfile_name(item.path))
    cut = find_truncation(item.path, held=info.frames, claimed=info.frames)
    if cut is None:
        with autocast:
            codes, scales, length = encode_file_streaming(model, item.path)
        if length < resampled_length(info.frames, info.samplerate, model.sample_rate):
            # samples held, from those given at the model's rate (rounded when resampled)
            cut = Truncation(info.frames, round(length * info.samplerate / model.sample_rate),
                             approximate=info.samplerate != model.sample_rate)
    if cut is not None:
        raise AudioIOError(f"cannot read audio file {item.path}: {cut.reason}")
    return Row(item.id, codes.to(torch.int16).numpy(), int(info.samplerate), info.frames / info.samplerate,
               int(info.channels), length, None if scales is None else scales.numpy())


def encode_shards(model: EncodecModel, shards: dict[int, list[PlannedItem]], options: TokenizeOptions,
                  device: torch.device, report: Report, stats: WorkerStats | None = None
                  ) -> tp.Iterator[tuple[int, list[Row], list[dict[str, str]]]]:
    """Encode the ``shards`` (shard index -> its items, in plan order) through one DataLoader,
    yielding ``(shard, rows in plan order, errors)`` as soon as a shard's last batch is done.

    With bf16, the first batch ``stats`` has not checked yet is also encoded in fp32 and the
    codes compared (counts added to ``stats.bf16_equal`` / ``stats.bf16_checked``).
    """
    max_seconds = options.max_seconds if supports_streaming(model) else math.inf
    work = [(s, batch) for s, items in shards.items()
            for batch in batches([i.duration for i in items], options.batch_seconds, max_seconds)]
    remaining = Counter(s for s, _ in work)
    loader_workers = options.loader_workers
    if loader_workers is None:
        loader_workers = default_loader_workers(device)
    dataset = BatchAudio(shards, work, model.sample_rate, model.channels)
    autocast: tp.ContextManager = (torch.autocast(device.type, dtype=torch.bfloat16)
                                   if options.dtype == "bf16" else contextlib.nullcontext())
    rows: dict[int, dict[int, Row]] = defaultdict(dict)
    errors: dict[int, dict[int, str]] = defaultdict(dict)
    for loaded in batch_loader(dataset, loader_workers, spawn=device.type == "cuda"):
        items = shards[loaded.shard]
        found = _rows_of_batch(model, loaded, items, device, autocast)
        if options.dtype != "fp32" and found and stats is not None and not stats.bf16_checked:
            exact = _rows_of_batch(model, loaded, items, device, contextlib.nullcontext())
            for row, got in found.items():
                stats.bf16_equal += int((got.codes == exact[row].codes).sum())
                stats.bf16_checked += got.codes.size
        failed = dict(loaded.errors)
        if loaded.streamed:
            row = loaded.rows[0]
            try:
                found[row] = _streamed_row(model, items[row], autocast)
            except (OpenCodecError, OSError, ValueError, RuntimeError) as exc:
                if loader_death(exc) is not None:  # a loader process ended meanwhile: not this file's fault
                    raise
                failed[row] = str(exc) or type(exc).__name__
        rows[loaded.shard].update(found)
        errors[loaded.shard].update(failed)
        seconds = sum(r.duration for r in found.values()) + sum(max(0.0, items[r].duration) for r in failed)
        report(seconds, len(found), len(failed))
        remaining[loaded.shard] -= 1
        if remaining[loaded.shard] == 0:
            done, failures = rows.pop(loaded.shard), errors.pop(loaded.shard)
            yield (loaded.shard, [done[r] for r in sorted(done)],
                   [{"id": items[r].id, "path": utf8_text(items[r].path), "error": utf8_text(failures[r])}
                    for r in sorted(failures)])


def run_worker(options: TokenizeOptions, plan: JobPlan, model: EncodecModel, place: WorkerPlace,
               device: torch.device, report: Report) -> WorkerStats:
    """Encode and write every shard of worker ``place`` that does not exist yet."""
    out = Path(options.out)
    stats = WorkerStats()
    mine = shards_for(shard_seconds(plan.planned, plan.shards), place)
    names = {s: shard_name(s, len(plan.shards)) for s in mine}
    todo = [s for s in mine if not (out / names[s]).exists()]
    stats.shards_skipped = len(mine) - len(todo)
    remove_stale_temps(out, [names[s] for s in todo])

    def count(seconds: float, files: int, errors: int) -> None:
        stats.files += files
        stats.errors += errors
        report(seconds, files, errors)

    shards = {s: [plan.planned[r] for r in plan.shards[s]] for s in todo}
    common = {k: plan.job[k] for k in ("model", "weights_sha256", "bandwidth", "opencodec_version", "dtype")}
    if weights_file(options.model) is not None:
        common["weights_file"] = weights_file(options.model)
    try:
        for s, rows, errors in encode_shards(model, shards, options, device, count, stats):
            meta = {**common, "model_sample_rate": model.sample_rate, "model_channels": model.channels,
                    "frame_rate": model.frame_rate, "shard": s, "num_shards": len(plan.shards),
                    "errors": errors, "seconds": sum(r.duration for r in rows)}
            write_shard(out / names[s], rows, meta, with_scales=model.normalize)
            stats.seconds += meta["seconds"]  # audio tokenised (the reports also count failed files)
            stats.shards_written += 1
    except RuntimeError as exc:  # PyTorch's, for a --loader-workers process that ended: one line
        message = loader_death(exc)
        if message is None:
            raise
        raise OpenCodecError(message) from None
    return stats


# -- processes -----------------------------------------------------------------------------------
def _worker_main(options: TokenizeOptions, plan: JobPlan, place: WorkerPlace, threads: int,
                 messages: tp.Any, model: EncodecModel | None) -> None:
    exit_with_parent()
    torch.set_num_threads(threads)
    try:
        device = resolve_device(options.device, place)
        if model is None:
            model = prepare_model(options, device)
        stats = run_worker(options, plan, model, place, device,
                           lambda s, f, e: messages.put(("progress", (s, f, e), place.rank)))
        messages.put(("done", stats, place.rank))
    except BaseException as exc:  # noqa: BLE001  (reported by the parent)
        try:
            messages.put(("failed", f"{type(exc).__name__}: {exc}", place.rank))
        except KeyboardInterrupt:  # Ctrl-C, then the parent's SIGTERM as it stops the job: quietly
            pass


def worker_death(exitcode: int) -> str:
    """The error for a worker process that ended without a word: killed by a signal (SIGKILL,
    usually the out-of-memory killer) or exited with ``exitcode``; finished shards are kept."""
    if exitcode < 0:
        try:
            name = signal.Signals(-exitcode).name
        except ValueError:
            name = f"signal {-exitcode}"
        how = f"was killed by {name}" + (" (out of memory?)" if -exitcode == signal.SIGKILL else "")
    else:
        how = f"exited with status {exitcode}"
    return (f"a tokenize worker process {how}; the shards finished so far are kept: run the same "
            "command again to finish the job")


def _run_processes(options: TokenizeOptions, plan: JobPlan, places: list[WorkerPlace],
                   model: EncodecModel, report: Report) -> WorkerStats:
    # Forked workers share the loaded model (copy-on-write) and start at once; where fork is
    # not available they start fresh and load it again. Not daemonic: a daemonic process may not
    # start children, and a worker's --loader-workers are its children; the finally below and
    # exit_with_parent end the workers instead.
    fork = "fork" in mp.get_all_start_methods()
    ctx = mp.get_context("fork" if fork else "spawn")
    messages = ctx.Queue()
    threads = max(1, torch.get_num_threads() // len(places))
    procs = [ctx.Process(target=_worker_main, args=(options, plan, p, threads, messages, model if fork else None))
             for p in places]
    total, failures, ended = WorkerStats(), [], set()
    finished, dead_since = False, math.inf
    try:
        for proc in procs:  # (in the try: one started before an interruption is stopped below)
            proc.start()
        while len(ended) < len(procs):
            # A worker killed without a word (out of memory) is noticed even while others
            # report; after a second's grace, in which its last words, if any, would arrive.
            dead = [p for p, place in zip(procs, places) if place.rank not in ended and p.exitcode not in (None, 0)]
            dead_since = min(dead_since, time.monotonic()) if dead else math.inf
            if dead and time.monotonic() - dead_since > 1.0:
                raise OpenCodecError(worker_death(tp.cast(int, dead[0].exitcode)))
            try:
                kind, value, rank = messages.get(timeout=0.25)
            except queue_mod.Empty:
                continue
            if kind == "progress":
                report(*value)
            elif kind == "done":
                ended.add(rank)
                total.add(value)
            else:
                ended.add(rank)
                failures.append(value)
        finished = True
    finally:
        # Stopped early (a worker died, Ctrl-C, SIGTERM): the others stop too, by themselves
        # (Ctrl-C reached them all) or within half a second (SIGTERM) rather than work on; the
        # shards they finished are kept, a shard being written is not.
        started = [proc for proc in procs if proc.pid is not None]
        if not finished:
            grace = time.monotonic() + 0.5
            for proc in started:
                proc.join(timeout=max(0.0, grace - time.monotonic()))
            for proc in started:
                if proc.is_alive():
                    proc.terminate()
        for proc in started:
            proc.join(timeout=5)
            if proc.is_alive():
                proc.kill()
                proc.join(timeout=5)
    if failures:
        raise OpenCodecError(f"a tokenize worker failed: {failures[0]}")
    return total


def default_workers(device: str) -> int:
    """``--workers`` when not given: one process per usable core on the CPU (encoding runs on
    one thread, see :mod:`opencodec.threads`), one on a GPU or under torchrun (``WORLD_SIZE``)."""
    if env_int("WORLD_SIZE", 1) > 1 or device == "cuda" or (
            device == "auto" and torch.cuda.is_available()):
        return 1
    return usable_cores()


def workers_note(workers: int, num_files: int, num_shards: int, shard_rows: int) -> str | None:
    """The note for ``workers`` CPU processes asked for a job of ``num_shards`` shards of up to
    ``shard_rows`` of its ``num_files`` files, when fewer run (one per shard at most): how many
    do, and the ``--shard-rows`` that would let more work: ``ceil(files / min(workers, files))``,
    whose shards (one per process) are as few and as even as ``workers`` processes allow,
    which finishes as soon as any shard size can. None when every process has a shard. The
    command gives it only for ``--workers`` given (its default, one per core, is no request)."""
    if workers <= 1 or num_shards >= workers:
        return None
    shards = f"{num_shards} shard" + ("s" if num_shards > 1 else "")
    files = f"{num_files} file" + ("s fill" if num_files != 1 else " fills")
    runs = "runs" if num_shards == 1 else "run"
    note = (f"--workers {workers}: the job's {files} {shards} of up to {shard_rows} (--shard-rows), "
            f"one process's work each, so {num_shards} of the {workers} processes {runs}")
    rows = math.ceil(num_files / max(1, min(workers, num_files)))
    more = math.ceil(num_files / rows) if num_files > 0 else 0
    if more > num_shards:
        working = f"each of the {workers} processes" if more == workers else f"{more} processes"
        note += (f"; --shard-rows {rows} would make {more} shards and let {working} work "
                 "(the shard size is part of the job: give it a new --out folder)")
    return note


def tokenize(options: TokenizeOptions, progress: tp.Callable[[float], Report] | None = None) -> Summary:
    """Run the job (see the module docstring); ``progress(total_seconds)`` returns the
    callback that receives (seconds, files, errors) increments. Returns this process's summary.
    More ``workers`` than shards would idle: the job starts one per shard at most, and says so
    in the first process's ``Summary.workers_note``."""
    if options.workers < 1:
        raise OpenCodecError(f"--workers must be at least 1, got {options.workers}")
    start = time.perf_counter()
    rank = place_from_env()
    device = resolve_device(options.device, rank)
    if options.workers > 1 and device.type != "cpu":
        raise OpenCodecError("--workers is for the CPU; on GPUs run one process per GPU with torchrun")
    with warnings.catch_warnings():
        if rank.rank != 0:  # every rank loads and lists the same: rank 0 alone warns of it
            warnings.simplefilter("ignore")
        if (message := dtype_warning(options, device)) is not None:
            warnings.warn(message, stacklevel=2)
        model = prepare_model(options, device)
        plan = make_plan(options, model)
    workers = min(options.workers, max(1, len(plan.shards)))
    places = [place_from_env(workers, w) for w in range(workers)]
    out = Path(options.out)
    # this command's processes, together, write every shard their ranks are assigned
    seconds = shard_seconds(plan.planned, plan.shards)
    assigned = assign_shards(seconds, places[0].world)
    todo = {s for s in range(len(plan.shards)) if not (out / shard_name(s, len(plan.shards))).exists()}
    todo_seconds = sum(seconds[s] for p in places for s in assigned[p.rank] if s in todo)
    max_seconds = options.max_seconds if supports_streaming(model) else math.inf
    loaded = most_batches(plan.planned, plan.shards, places, todo, options.batch_seconds, max_seconds)
    if rank.rank == 0 and (message := loader_warning(options, device, loaded)) is not None:
        warnings.warn(message, stacklevel=2)  # on the loader processes that will run
    done_before = (out / INDEX_FILE).exists() and all(
        (out / shard_name(s, len(plan.shards))).exists() for s in range(len(plan.shards)))
    report: Report = progress(todo_seconds) if progress is not None else (lambda s, f, e: None)
    if workers == 1:
        stats = run_worker(options, plan, model, places[0], device, report)
    else:
        stats = _run_processes(options, plan, places, model, report)
    index, fresh = finalize(out, len(plan.shards))
    # no note on a rerun with every shard done before: no process has work to run then
    note = workers_note(options.workers, len(plan.planned), len(plan.shards), options.shard_rows) if todo else None
    # the job is reported once: by the process whose finalize wrote the index, or by rank 0
    # when it was all there before this run (no rank writes it then); always by a process that
    # is the whole job (no torchrun: its places, one per --workers process, are all of them)
    alone = places[0].world == len(places)
    reports = index is not None and (fresh or alone or (places[0].rank == 0 and done_before))
    return Summary(stats, time.perf_counter() - start, places[0], index,
                   workers_note=note if places[0].rank == 0 else None, reports_job=reports)
