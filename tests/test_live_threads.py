"""Live commands take one thread unless the user chose a count (see opencodec.threads)."""

from __future__ import annotations

import torch

from opencodec.threads import use_live_threads


def test_one_thread_unless_the_user_chose() -> None:
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        assert use_live_threads({"OMP_NUM_THREADS": "2"}) == 2  # the user's choice stands
        assert use_live_threads({}) == 1
        torch.set_num_threads(2)
        assert use_live_threads({"OMP_NUM_THREADS": " "}) == 1  # blank is unset
    finally:
        torch.set_num_threads(before)
