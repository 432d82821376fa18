"""Scoring a run's tasks: one task per item with the systems it still lacks, scored in this
process or in a pool of worker processes (one torch thread each), each item's rows appended
to ``OUT/results.jsonl`` as soon as they are ready.
"""

from __future__ import annotations

import sys
import typing as tp
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

from .console import warn
from .items import skip_item
from .results_file import ResultsFile, codec_failed
from .scoring import ItemReadError, evaluate_item, init_pool_worker, score_in_this_process
from .systems import EvalReportError, SystemSpec

__all__ = ["pending_tasks", "run_tasks", "stop_pool", "warn_codec_failures"]

#: Scores one task: its result rows, or ``ItemReadError`` (:func:`evaluate_item`).
Evaluate = tp.Callable[[dict], list[dict]]
#: Takes one finished task and a call that returns its rows (or raises ``ItemReadError``).
Done = tp.Callable[[dict, tp.Callable[[], list[dict]]], None]


def pending_tasks(items: tp.Sequence[dict], systems: tp.Sequence[SystemSpec], done: tp.Container[tuple],
                  metrics: tp.Sequence[str], sample_rate: int, channels: int) -> list[dict]:
    """One task per item (as :func:`opencodec.eval.items.identify_items` gives them) with
    the systems whose row key is not in ``done``; an item with every row done has none."""
    tasks = []
    for it in items:
        todo = [s for s in systems if (it["category"], it["item_id"], it["sha"], s.name, s.weights,
                                       sample_rate, channels) not in done]
        if todo:
            tasks.append({"row": it["row"], "category": it["category"], "item_id": it["item_id"],
                          "item_sha256": it["sha"], "sample_rate": sample_rate, "channels": channels,
                          "metrics": list(metrics), "systems": [s.__dict__ for s in todo]})
    return tasks


def run_tasks(tasks: list[dict], results: ResultsFile, models: tuple[str, ...],
              baselines: tuple[str, ...], workers: int, quiet: bool,
              evaluate: Evaluate = evaluate_item) -> list[dict]:
    """Score ``tasks`` with ``evaluate`` (in this process, or ``workers`` processes),
    appending each item's rows as soon as they are ready; returns the items skipped because
    their audio cannot be read. On Ctrl-C (or any error) the worker processes are stopped."""
    from ..progress import progress_bar

    skipped: list[dict] = []
    bar = progress_bar(total=len(tasks), desc="eval items", unit="item", disable=quiet, file=sys.stderr)

    def done(task: dict, get_rows: tp.Callable[[], list[dict]]) -> None:
        try:
            rows = get_rows()
            results.write(rows)
            warn_codec_failures(rows)
        except ItemReadError as exc:
            skipped.append(skip_item(task["category"], task["item_id"], exc.path, exc.reason))
        bar.update(1)

    try:
        if workers <= 1 or len(tasks) <= 1:
            _score_here(tasks, models, baselines, evaluate, done)
        elif tasks:
            _score_in_pool(tasks, models, baselines, workers, evaluate, done, results.path)
    finally:
        bar.close()
        results.close()
    return skipped


def warn_codec_failures(rows: tp.Iterable[dict]) -> None:
    """Warn (also with ``-q``) about each row whose system's codec failed on its item."""
    for row in rows:
        if codec_failed(row):
            warn(f"{row['system']} failed on item {row['item_id']!r} of {row['category']}: "
                 f"{row['errors']['codec']} (left out of the tables; a rerun tries it again)")


def _score_here(tasks: list[dict], models: tuple[str, ...], baselines: tuple[str, ...],
                evaluate: Evaluate, done: Done) -> None:
    """Score ``tasks`` one after the other in this process."""
    score_in_this_process(models, baselines)
    for task in tasks:
        done(task, lambda task=task: evaluate(task))


def _score_in_pool(tasks: list[dict], models: tuple[str, ...], baselines: tuple[str, ...],
                   workers: int, evaluate: Evaluate, done: Done, results_path: Path) -> None:
    """Score ``tasks`` in ``workers`` spawned processes, handing each to ``done`` as it
    finishes; on any error (Ctrl-C included) the pool is stopped with :func:`stop_pool`. A
    worker process that dies (killed, out of memory) is an ``EvalReportError`` naming the
    item it was scoring and ``results_path``, which keeps the rows scored so far."""
    import multiprocessing as mp

    pool = ProcessPoolExecutor(max_workers=workers, mp_context=mp.get_context("spawn"),
                               initializer=init_pool_worker, initargs=(models, baselines))
    try:
        futures = {pool.submit(evaluate, t): t for t in tasks}
        for fut in as_completed(futures):
            try:
                done(futures[fut], fut.result)
            except BrokenProcessPool:
                task = futures[fut]
                raise EvalReportError(
                    f"a worker process stopped abruptly (killed, or out of memory?) while item "
                    f"{task['item_id']!r} of {task['category']} was pending; the rows scored so "
                    f"far are kept in {results_path}: rerun the same command to resume (with "
                    "fewer --workers if memory is short)") from None
    except BaseException:
        stop_pool(pool)
        raise
    pool.shutdown()


def stop_pool(pool: ProcessPoolExecutor) -> None:
    """Shut ``pool`` down without waiting, cancelling the tasks not started, and terminate
    its worker processes (Ctrl-C must not wait for the items in progress).

    ``ProcessPoolExecutor`` has no public way to reach its processes before Python 3.14
    (``terminate_workers``), so this reads its private ``_processes``, here only, and before
    ``shutdown``, which empties it."""
    processes = list((getattr(pool, "_processes", None) or {}).values())
    pool.shutdown(wait=False, cancel_futures=True)
    for process in processes:
        process.terminate()
