"""Reading a shard's batches: decoding and resampling in DataLoader worker processes.

``BatchAudio`` is a map-style dataset whose item ``i`` is batch ``i`` of a shard, read,
converted to the model's channels and rate (``read_audio`` + ``convert_audio``, exactly what
``model.encode`` of the file alone is given) and right-padded into one tensor. A file that
cannot be read is reported in the batch instead of raising, so one bad file never stops the
job. A truncated file (fewer samples than its header declares) is such a bad file here
(``read_audio(..., refuse_truncated=True)``): its row would hold part of the audio its
transcript or label describes. Streamed (long) files are not read here: the encoding process
reads them block by block (and checks them, ``job``).
"""

from __future__ import annotations

import os
import signal
import typing as tp
import warnings
from dataclasses import dataclass, field

import torch
from torch.utils.data import DataLoader, Dataset

from ..audio import convert_audio, read_audio
from ..errors import OpenCodecError
from .plan import Batch, PlannedItem


@dataclass
class SourceInfo:
    """What a row records about its source file: rate (Hz), channels, duration (s)."""

    sample_rate: int
    channels: int
    duration: float


@dataclass
class LoadedBatch:
    """Batch ``index`` of the work, of shard ``shard``: ``audio`` [B, C, T] at the model's rate
    (zeros past each item's end) for the ``rows`` (positions in the shard) that could be read,
    their ``lengths`` [B] in samples and ``sources``; ``errors`` maps the other rows to the
    reason. ``streamed``: one long file, not read (``audio`` is None)."""

    index: int
    shard: int
    rows: list[int]
    audio: torch.Tensor | None
    lengths: list[int]
    sources: list[SourceInfo]
    errors: dict[int, str] = field(default_factory=dict)
    streamed: bool = False


class BatchAudio(Dataset):
    """``batches`` [(shard, batch)] of the shards' ``items`` {shard: items}, read and converted
    for a model of ``sample_rate`` Hz and ``channels``."""

    def __init__(self, items: dict[int, list[PlannedItem]], batches: list[tuple[int, Batch]],
                 sample_rate: int, channels: int):
        self.items, self.batches = items, batches
        self.sample_rate, self.channels = sample_rate, channels

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, index: int) -> LoadedBatch:
        shard, batch = self.batches[index]
        if batch.streamed:
            return LoadedBatch(index, shard, list(batch.rows), None, [], [], streamed=True)
        waves, rows, sources, errors = [], [], [], {}
        for row in batch.rows:
            item = self.items[shard][row]
            if item.error:  # skipped unread (a file name that is not UTF-8, a broken link)
                errors[row] = item.error
                continue
            try:
                wav, rate = read_audio(item.path, refuse_truncated=True)
                waves.append(convert_audio(wav, rate, self.sample_rate, self.channels))
                sources.append(SourceInfo(rate, wav.shape[0], wav.shape[-1] / rate))
                rows.append(row)
            except (OpenCodecError, OSError, ValueError, RuntimeError) as exc:
                errors[row] = str(exc) or type(exc).__name__
        lengths = [w.shape[-1] for w in waves]
        audio = None
        if waves:
            audio = torch.zeros(len(waves), self.channels, max(lengths))
            for b, wav in enumerate(waves):
                audio[b, :, : wav.shape[-1]] = wav
        return LoadedBatch(index, shard, rows, audio, lengths, sources, errors)


def _as_is(batch: LoadedBatch) -> LoadedBatch:
    return batch


#: PyTorch's warning when a DataLoader has more workers than cores (given twice, at creation
#: and at iteration); ``tokenize`` says it once, in its own words (``loader_workers_warning``).
_TORCH_WORKERS_WARNING = r"This DataLoader will create \d+ worker processes"


def loader_workers_warning(workers: int, cores: int, running: int | None = None) -> str | None:
    """The warning for ``--loader-workers workers`` on ``cores`` usable cores, of which
    ``running`` (default ``workers``; fewer when a process has fewer batches) will run, or None."""
    running = workers if running is None else min(workers, running)
    if running <= cores:
        return None
    if running == workers:
        return (f"--loader-workers {workers} is more than the {cores} usable core(s): the decoding "
                "processes will compete for them (and with the encoding)")
    return (f"--loader-workers {workers}: the {running} decoding processes that will run (one per batch "
            f"at most) are more than the {cores} usable core(s): they will compete for them (and with the "
            "encoding)")


def _quiet_on_sigterm(worker_id: int) -> None:
    """A DataLoader process ends quietly (status 0) on SIGTERM from anyone, as PyTorch's own
    handler does only for one from its parent: ``timeout``, Slurm's ``scancel`` or ``kill -TERM
    -PGID`` signal the whole process group, and a loader process killed by the signal makes the
    command print PyTorch's traceback ("DataLoader worker ... is killed by signal") before its
    one line (the command stops on its own SIGTERM and shuts the loader down)."""
    signal.signal(signal.SIGTERM, lambda signum, frame: os._exit(0))


def loader_death(exc: BaseException) -> str | None:
    """The one-line error for PyTorch's ``RuntimeError`` about a DataLoader process that ended
    (killed on its own, say by the out-of-memory killer, or exited), None for any other exception.
    PyTorch raises it in the main thread wherever that is, also outside the loader's ``next``."""
    text = str(exc).strip()
    if not isinstance(exc, RuntimeError) or not text.startswith("DataLoader worker (pid"):
        return None
    if text.endswith("killed by signal: Killed."):
        how = "was killed by SIGKILL (out of memory?)"
    elif "killed by signal: " in text:
        how = "was killed by signal " + text.split("killed by signal: ", 1)[1].rstrip(".")
    else:
        how = "ended unexpectedly"
    return (f"a tokenize decoding process (--loader-workers) {how}; the shards finished so far are kept: "
            "run the same command again to finish the job")


def batch_loader(dataset: BatchAudio, workers: int, spawn: bool = False) -> tp.Iterator[LoadedBatch]:
    """Batches in order, read ahead by ``workers`` processes (0: in this process); ``spawn``
    starts them fresh instead of forking (needed once CUDA is initialised). A process reads
    whole batches: never more processes than batches."""
    workers = min(workers, len(dataset))
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=_TORCH_WORKERS_WARNING, category=UserWarning)
        loader = DataLoader(dataset, batch_size=None, shuffle=False, num_workers=workers,
                            collate_fn=_as_is, prefetch_factor=2 if workers else None,
                            worker_init_fn=_quiet_on_sigterm if workers else None,
                            multiprocessing_context=("spawn" if spawn else "fork") if workers else None)
        return iter(loader)
