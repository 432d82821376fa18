"""Shared fixtures: deterministic seeds and the official reference models."""

from __future__ import annotations

import signal
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))

import official_ref  # noqa: E402

# A suite started in the background of a non-interactive shell (`make test &`, nohup, some CI
# runners) has SIGINT ignored, and every process it starts inherits that: the tests that press
# Ctrl-C on a command they start would wait for nothing. Give the suite the SIGINT a terminal
# user has; its subprocesses then start with the default action.
if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


@pytest.fixture(scope="session", autouse=True)
def _one_thread() -> None:
    """One intra-op thread for the whole suite: torch's float results (and so the official
    entropy coder's bytes, official issue #85) depend on the thread count, and on a small
    shared machine more threads only oversubscribe the cores."""
    torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(1234)


@pytest.fixture()
def offline(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """No downloads, an empty model cache and an empty torch hub folder; returns the cache."""
    cache = tmp_path_factory.mktemp("cache")
    monkeypatch.setenv("OPENCODEC_OFFLINE", "1")
    monkeypatch.setenv("OPENCODEC_CACHE", str(cache))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path_factory.mktemp("torch_home")))
    return cache


@pytest.fixture(scope="session")
def official_models() -> dict:
    """Official-architecture models with random weights, keyed by name."""
    return {name: official_ref.make_official_model(name, seed=i)
            for i, name in enumerate(["encodec_24khz", "encodec_48khz"])}


@pytest.fixture(scope="session")
def our_models(official_models: dict) -> dict:
    """Our models carrying the official models' random weights, keyed by name."""
    return {name: official_ref.ours_from(ref, name).eval() for name, ref in official_models.items()}


@pytest.fixture(scope="session")
def official_checkpoints(official_models: dict, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The official models' state dicts saved as `.th` files, keyed by name. They stand in for
    the official checkpoints: each is loaded once by its official name (from a cache holding it
    under its sha256 prefix), so that weights loaded from them keep the official name, as the
    official weights do (a path-loaded model with an official name and other weights is
    renamed `<name>_custom`, see opencodec.pretrained)."""
    folder = tmp_path_factory.mktemp("official_ckpt")
    paths = {name: official_ref.save_official_checkpoint(model, folder / f"{name}-random.th")
             for name, model in official_models.items()}
    _load_as_official(paths, tmp_path_factory.mktemp("official_cache"))
    return paths


def _load_as_official(paths: dict, cache: Path) -> None:
    import hashlib

    from opencodec import pretrained

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("OPENCODEC_OFFLINE", "1")
        patch.setenv("OPENCODEC_CACHE", str(cache))
        for name, path in paths.items():
            data = path.read_bytes()
            filename = f"{name}-{hashlib.sha256(data).hexdigest()[:8]}.th"
            (cache / filename).write_bytes(data)
            patch.setitem(pretrained.OFFICIAL_CHECKPOINTS, name, filename)
            pretrained.load_model(name)
