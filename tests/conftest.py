"""Shared fixtures: deterministic seeds and the official reference models."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))

import official_ref  # noqa: E402


@pytest.fixture(autouse=True)
def _seed_and_threads() -> None:
    # One thread: results do not depend on the machine's core count, and tests do not
    # fight each other (or a busy CI machine) for cores.
    torch.set_num_threads(1)
    torch.manual_seed(1234)


@pytest.fixture(scope="session")
def official_models() -> dict:
    """Official-architecture models with random weights, keyed by name."""
    return {name: official_ref.make_official_model(name, seed=i)
            for i, name in enumerate(["encodec_24khz", "encodec_48khz"])}


@pytest.fixture(scope="session")
def official_checkpoints(official_models: dict, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The official models' state dicts saved as `.th` files, keyed by name."""
    folder = tmp_path_factory.mktemp("official_ckpt")
    return {name: official_ref.save_official_checkpoint(model, folder / f"{name}-random.th")
            for name, model in official_models.items()}
