"""The items of an eval set: the categories to evaluate (their ``eval_<category>.jsonl``
manifests), the items each lists, and each item's id and file hash (part of the resume key
of ``OUT/results.jsonl``); an item whose file cannot be read is skipped with a warning.
"""

from __future__ import annotations

import sys
import typing as tp
from pathlib import Path

from .._files import error_reason
from ..official_files import file_sha256
from .console import warn
from .systems import DEFAULT_CATEGORIES, EvalReportError

__all__ = ["choose_categories", "list_items", "item_id", "item_file_hash", "identify_items",
           "skip_item"]


def choose_categories(eval_set: Path, categories: tp.Sequence[str] | None) -> list[str]:
    """The categories to evaluate (by default those of :data:`DEFAULT_CATEGORIES` with a
    manifest under ``eval_set``, else every ``eval_*.jsonl`` there); ``EvalReportError`` when
    there is none or one of the ``categories`` asked for has no manifest."""
    if categories is None:
        categories = [c for c in DEFAULT_CATEGORIES if (eval_set / f"eval_{c}.jsonl").exists()]
        if not categories:
            categories = sorted(p.stem[len("eval_"):] for p in eval_set.glob("eval_*.jsonl"))
    if not categories:
        raise EvalReportError(f"no eval_<category>.jsonl manifests under {eval_set}")
    missing = [str(eval_set / f"eval_{c}.jsonl") for c in categories
               if not (eval_set / f"eval_{c}.jsonl").exists()]
    if missing:
        raise EvalReportError(f"missing manifest(s) {', '.join(missing)}")
    return list(categories)


def list_items(eval_set: Path, categories: list[str], chosen: bool,
               max_items: int | None) -> dict[str, list[dict]]:
    """``{category: [manifest row, ...]}`` (the first ``max_items`` of each). A category whose
    manifest lists no item is an ``EvalReportError`` when ``chosen`` (named by
    ``--categories``), else skipped with a note; a set whose manifests are all empty is an
    ``EvalReportError`` too."""
    from ..data.dataset import load_manifests

    items: dict[str, list[dict]] = {}
    for cat in categories:
        manifest = eval_set / f"eval_{cat}.jsonl"
        rows = load_manifests(manifest)
        if not rows:
            if chosen:
                raise EvalReportError(f"{manifest} lists no items (category {cat!r})")
            print(f"note: {manifest} is empty; category {cat!r} skipped", file=sys.stderr)
            continue
        items[cat] = rows[:max_items] if max_items is not None else rows
    if not items:
        raise EvalReportError(f"every eval_<category>.jsonl manifest under {eval_set} is empty")
    return items


def item_id(row: dict) -> str:
    """A manifest row's item id (its ``item_id``, else its file's stem)."""
    return str(row.get("item_id") or Path(row["path"]).stem)


def item_file_hash(path: str) -> str:
    """The first 16 hex digits of the sha256 of the file's bytes (``OSError`` if unreadable)."""
    return file_sha256(path)[:16]


def identify_items(items: dict[str, list[dict]]) -> tuple[list[dict], list[dict]]:
    """``(readable, skipped)``: every item as ``{category, item_id, row, sha}`` (its file's
    hash, part of the resume key), and ``{category, item_id, path, error}`` for each whose
    file cannot be opened (warned about now; the run goes on without it)."""
    readable, skipped = [], []
    for cat, rows in items.items():
        for row in rows:
            ident = item_id(row)
            try:
                readable.append({"category": cat, "item_id": ident, "row": row,
                                 "sha": item_file_hash(row["path"])})
            except OSError as exc:
                skipped.append(skip_item(cat, ident, row["path"], error_reason(exc)))
    return readable, skipped


def skip_item(category: str, item_id: str, path: str, reason: str) -> dict:
    """Warn that an item is skipped because its file cannot be read (also with ``-q``) and
    return its record for the report: ``{category, item_id, path, error}``."""
    warn(f"skipping item {item_id!r} of {category}: cannot read {path}: {reason}")
    return {"category": category, "item_id": item_id, "path": path, "error": reason}
