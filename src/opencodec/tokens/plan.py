"""Which process tokenises which files, in which shards and batches: a pure function of the
file list and the options, so every rank and every rerun computes the same plan.

- Every file's duration is read from its header (``soundfile.info``, no decoding); a file
  whose header cannot be read gets duration -1 and fails again, with its reason, when read;
  a file listed with an ``error`` (``InputItem.error``) gets -1 unread and fails with that.
- Files are sorted by (duration, id) and cut into shards of ``shard_rows`` rows: shard ``s``
  holds rows ``s * shard_rows ..``. The shards do not depend on the number of processes, so
  1, 2 or 64 processes write the same shards. Shards go to workers by their seconds of audio,
  longest first, each to the worker with the least so far (ties: the lower rank): a greedy
  balance that every rank computes alike. (Round robin over duration-sorted shards gave the
  last worker the longest of every round: 11% more than its share for 9 shards on 2 workers.)
- Within a shard, consecutive files (already sorted by length, which keeps padding small)
  form batches of at most ``batch_seconds`` of padded audio; files longer than
  ``max_seconds`` are encoded alone, streamed in bounded memory.
"""

from __future__ import annotations

import hashlib
import heapq
import json
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import soundfile as sf

from ..audio import check_mp3_content, soundfile_name
from .inputs import InputItem


@dataclass(frozen=True)
class PlannedItem:
    """A file with the duration (seconds) its header gives, -1 when it cannot be read;
    ``error``, when not empty: why it is skipped unread (``InputItem.error``)."""

    id: str
    path: str
    duration: float
    error: str = ""


@dataclass(frozen=True)
class Batch:
    """Items (positions in the shard) encoded together; ``streamed``: one long file."""

    rows: tuple[int, ...]
    streamed: bool = False


@dataclass(frozen=True)
class WorkerPlace:
    """This process's place among all: ``rank`` in ``[0, world)``, ``local_rank`` on its node."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0


def header_duration(path: str) -> float:
    """Duration in seconds from the file's header; -1 when the header cannot be read (also
    a ``.mp3`` holding no MPEG audio, refused before libmpg123 prints its notes about it)."""
    try:
        check_mp3_content(path)
        info = sf.info(soundfile_name(path))
    except Exception:  # noqa: BLE001  (any failure is reported when the file is read)
        return -1.0
    return info.frames / info.samplerate if info.samplerate > 0 and info.frames > 0 else -1.0


def probe(items: list[InputItem], threads: int = 16) -> list[PlannedItem]:
    """Durations of ``items`` (headers read in ``threads`` threads; -1 unread for an item with
    an ``error``), sorted by (duration, id)."""
    with ThreadPoolExecutor(max(1, threads)) as pool:
        durations = list(pool.map(lambda item: -1.0 if item.error else header_duration(item.path), items))
    planned = [PlannedItem(item.id, item.path, d, item.error) for item, d in zip(items, durations)]
    return sorted(planned, key=lambda p: (p.duration, p.id))


def plan_sha256(planned: list[PlannedItem]) -> str:
    """Fingerprint of the planned rows (ids and durations, in order)."""
    digest = hashlib.sha256()
    for item in planned:
        digest.update(json.dumps([item.id, item.duration]).encode() + b"\n")
    return digest.hexdigest()


def shard_ranges(num_items: int, shard_rows: int) -> list[range]:
    """Row ranges of the shards: ``ceil(num_items / shard_rows)`` of them."""
    return [range(start, min(start + shard_rows, num_items)) for start in range(0, num_items, shard_rows)]


def shard_seconds(planned: list[PlannedItem], shards: list[range]) -> list[float]:
    """Seconds of audio in each shard (unreadable files count 0)."""
    return [sum(max(0.0, planned[r].duration) for r in rows) for rows in shards]


def assign_shards(seconds: list[float], world: int) -> list[list[int]]:
    """Shards of each of ``world`` workers, balanced by seconds of audio (ascending shard order).

    Greedy longest-first: shards in order of (-seconds, index) go one by one to the worker
    with the fewest seconds so far (ties: the lowest rank). Its makespan is within 4/3 of
    the best possible, and close to ``sum / world`` when shards are many and similar.
    """
    if world < 1:
        raise ValueError(f"world must be at least 1, got {world}")
    least = [(0.0, rank) for rank in range(world)]  # a heap of (seconds so far, rank)
    mine: list[list[int]] = [[] for _ in range(world)]
    for s in sorted(range(len(seconds)), key=lambda i: (-seconds[i], i)):
        load, rank = heapq.heappop(least)
        mine[rank].append(s)
        heapq.heappush(least, (load + seconds[s], rank))
    return [sorted(m) for m in mine]


def shards_for(seconds: list[float], place: WorkerPlace) -> list[int]:
    """The shards worker ``place.rank`` of ``place.world`` writes (``assign_shards``)."""
    return assign_shards(seconds, place.world)[place.rank]


def batches(durations: list[float], batch_seconds: float, max_seconds: float) -> list[Batch]:
    """Batches over consecutive rows of a shard whose ``durations`` are sorted ascending.

    A batch pads every item to its longest, so it holds ``n`` items while
    ``n * longest <= batch_seconds`` (at least one). Items over ``max_seconds`` are alone
    and streamed; unreadable items (duration -1) go alone too (they fail when read).
    """
    out: list[Batch] = []
    current: list[int] = []
    for row, duration in enumerate(durations):
        if duration > max_seconds:
            out.append(Batch((row,), streamed=True))
            continue
        if duration < 0:
            out.append(Batch((row,)))
            continue
        if current and (len(current) + 1) * duration > batch_seconds:
            out.append(Batch(tuple(current)))
            current = []
        current.append(row)
    if current:
        out.append(Batch(tuple(current)))
    return sorted(out, key=lambda b: b.rows[0])


def most_batches(planned: list[PlannedItem], shards: list[range], places: list[WorkerPlace], todo: set[int],
                 batch_seconds: float, max_seconds: float) -> int:
    """The most batches one of ``places`` loads: those of its shards (``shards_for``) that are
    in ``todo`` (not written yet). Its DataLoader starts no more processes than that."""
    seconds = shard_seconds(planned, shards)
    return max((sum(len(batches([planned[r].duration for r in shards[s]], batch_seconds, max_seconds))
                    for s in shards_for(seconds, place) if s in todo) for place in places), default=0)


def env_int(name: str, default: int) -> int:
    """The integer in environment variable ``name`` (``default`` when unset or empty);
    ``ValueError`` naming the variable when it holds something else."""
    value = os.environ.get(name, "").strip()
    if not value:
        return default
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"environment variable {name}={value!r} is not an integer (torchrun sets it; "
                         "unset it to run as one process)") from None


def place_from_env(workers: int = 1, worker: int = 0) -> WorkerPlace:
    """This process's place from torchrun's ``RANK``/``WORLD_SIZE``/``LOCAL_RANK`` (one process
    when unset), subdivided into ``workers`` CPU processes of which this is ``worker``."""
    rank = env_int("RANK", 0)
    world = env_int("WORLD_SIZE", 1)
    local = env_int("LOCAL_RANK", 0)
    if not 0 <= rank < world:
        raise ValueError(f"RANK={rank} is not in [0, WORLD_SIZE={world})")
    return WorkerPlace(rank * workers + worker, world * workers, local)
