"""Helpers for worker processes (``tokenize --workers``, ``compress --jobs``)."""

from __future__ import annotations

import os
import threading
import time

__all__ = ["exit_with_parent", "usable_cores"]


def exit_with_parent() -> None:
    """End this worker process (within 0.1 s) if its parent dies (``kill -9`` of the command):
    forked workers hold both ends of their queues' pipes, so they would never see it otherwise."""
    parent = os.getppid()

    def watch() -> None:
        while True:
            time.sleep(0.1)
            if os.getppid() != parent:
                os._exit(1)

    threading.Thread(target=watch, daemon=True).start()


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity where the system has one)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, cores or 1)
