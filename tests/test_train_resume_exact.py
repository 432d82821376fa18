"""A run resumed in the middle of an epoch continues exactly as the uninterrupted run, also
when dead codebook entries are replaced after the resume point (a replacement draws its
vectors from the global torch generator, which a DataLoader iterator also draws from)."""

from __future__ import annotations

from pathlib import Path

import torch

from opencodec.train.solver import train
from test_train_solver import _config, _corpus, _state  # tests/ is on sys.path (conftest.py)


def test_resume_mid_epoch_with_dead_code_replacement_is_exact(tmp_path: Path) -> None:
    train_m, valid_m = _corpus(tmp_path / "data")
    cfg = _config(train_m, valid_m, steps=6)
    # 64 entries for 4 x 15 latent vectors a step: most entries are dead at every step, and are
    # replaced; 4 steps an epoch, so the checkpoint at step 2 is in the middle of the first.
    cfg["model"].update(bins=64, target_bandwidths=[0.45, 0.9])
    cfg["quantizer"].update(threshold_ema_dead_code=2.0)
    cfg["log"].update(checkpoint_every=2)
    cfg["valid"]["bandwidths"] = [0.9]
    cfg["ema"] = None
    _, straight, straight_disc = train(cfg, tmp_path / "a", progress=False, return_models=True)
    train(cfg, tmp_path / "b", max_steps=2, progress=False)
    _, resumed, resumed_disc = train(cfg, tmp_path / "b", progress=False, return_models=True)
    for a, b in ((straight, resumed), (straight_disc, resumed_disc)):
        sa, sb = _state(a), _state(b)
        differ = [key for key in sa if not torch.equal(sa[key], sb[key])]
        assert not differ, differ
