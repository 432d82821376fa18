"""Thread settings: one thread for encoding on the CPU, and for live work on a busy machine.

**Encoding runs on one thread** (:func:`one_thread`, used by ``EncodecModel.encode``,
``batching.encode_batch``, ``StreamingEncoder`` and ``MultiStreamEncoder`` on CPU tensors).
PyTorch's CPU kernels sum in another order on several threads than on one: a kernel-1
convolution is a matrix product on one thread but oneDNN's convolution on more, and oneDNN
splits the sums of short inputs' convolutions among threads. The encoder's latent therefore
depended on ``torch.get_num_threads()``, and with it the codes wherever two code vectors are
nearly tied: 7 of 43 real files (47 of 2.4 million codes) tokenised by worker processes
of one thread each got other codes than ``model.encode`` of the file in a process of two
threads. On one thread the codes are the same whatever the caller's thread count, and they are
the official package's codes run on one thread. The cost is small where it was measured: on
the 2-core development machine one thread encodes as fast or faster than two
(``benchmarks/probes/encode_threads.py``, table in ``docs/BENCHMARKS.md``); on a machine with
many cores a single long file encodes more slowly than it could, so encode files in parallel
processes there (``opencodec tokenize --workers``, or several ``compress`` jobs). Decoding is
left on the caller's threads: its audio differs between thread counts in its last bits (2.4e-7
at most in a 3 s check).

**Live work.**

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

import contextlib
import os
import typing as tp

import torch

__all__ = ["one_thread", "use_live_threads"]


@contextlib.contextmanager
def one_thread(tensor: torch.Tensor | None = None) -> tp.Iterator[None]:
    """Run the block on one intra-op thread when ``tensor`` is on the CPU (or is None), then
    give the calling thread back its count (even on an error). Threads already running keep
    their counts, but one that first uses torch while the block runs starts with one thread
    (torch takes a new thread's count from the last ``set_num_threads``). Nested uses are free."""
    previous = torch.get_num_threads()
    if previous == 1 or (tensor is not None and tensor.device.type != "cpu"):
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def use_live_threads(environ: tp.Mapping[str, str] | None = None) -> int:
    """Set torch to one intra-op thread for a live command, unless the user chose a count
    with ``OMP_NUM_THREADS`` (then it is left alone). Returns the thread count now in use."""
    env = os.environ if environ is None else environ
    if not env.get("OMP_NUM_THREADS", "").strip():
        torch.set_num_threads(1)
    return torch.get_num_threads()
