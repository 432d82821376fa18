"""Thread settings for live (real-time) work on a machine that may be busy.

A live command (``stream-encode``, ``stream-decode``, ``serve``) computes one small frame every
13.3 ms and then waits for the next. With several OpenMP threads, every parallel region ends
with the worker threads spin-waiting for the next one (libgomp's default, ``OMP_WAIT_POLICY``
active): they burn a core the rest of the machine needs, and when that core is taken the
region waits for them. Measured on the 2-core development machine with other work running
(200 products [256, 4096] x [4096, 256], each followed by a 2 ms wait, as a live command
waits for its next frame; indicative, one run each):

==========================================  ========  =======
setting                                     wall (s)  CPU (s)
==========================================  ========  =======
1 thread (``torch.set_num_threads(1)``)       1.35     0.58
2 threads, default wait policy                2.26     1.36
2 threads, OMP_WAIT_POLICY=PASSIVE before     1.40     0.78
  torch is imported
2 threads, OMP_WAIT_POLICY=PASSIVE set        2.93     1.55
  after torch is imported (no effect)
==========================================  ========  =======

libgomp reads ``OMP_WAIT_POLICY`` once, when torch loads it, so a command cannot change it
for itself; what it can change is the thread count, and with one thread there is no team to
spin at all. One thread is also what the per-frame costs are measured on (a frame is far
too small to split across cores).
"""

from __future__ import annotations

import os
import typing as tp

import torch

__all__ = ["use_live_threads"]


def use_live_threads(environ: tp.Mapping[str, str] | None = None) -> int:
    """Set torch to one intra-op thread for a live command, unless the user chose a count
    with ``OMP_NUM_THREADS`` (then it is left alone). Returns the thread count now in use."""
    env = os.environ if environ is None else environ
    if not env.get("OMP_NUM_THREADS", "").strip():
        torch.set_num_threads(1)
    return torch.get_num_threads()
