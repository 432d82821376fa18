"""Data: corpus builder (Debian packages -> manifests) and training/eval datasets.

Names are imported lazily so ``python -m opencodec.data.corpus`` runs cleanly.
"""
from __future__ import annotations

import importlib
from typing import Any

__all__ = ["AudioDataset", "EvalDataset", "iter_eval_items", "build_corpus", "read_jsonl",
           "load_manifests"]

_WHERE = {"AudioDataset": "dataset", "EvalDataset": "dataset", "iter_eval_items": "dataset",
          "load_manifests": "dataset", "build_corpus": "corpus", "read_jsonl": "_jsonl"}


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module 'opencodec.data' has no attribute {name!r}")
    mod = importlib.import_module(f".{_WHERE[name]}", __name__)
    return getattr(mod, "build" if name == "build_corpus" else name)
