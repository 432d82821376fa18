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

__all__ = ["NO_CATEGORY_NAMED", "check_set_folder", "choose_categories", "read_manifest", "list_items",
           "check_unique_ids", "item_id", "item_file_hash", "identify_items", "skip_item"]


#: The error for ``--categories`` given without a name (``eval`` and ``mushra build``).
NO_CATEGORY_NAMED = ("--categories names no category; name one or more, or leave the option out "
                     "to take every eval_<category>.jsonl manifest")


def check_set_folder(eval_set: Path) -> None:
    """``EvalReportError`` when ``--set`` does not exist or is a file (a manifest given
    instead of its folder)."""
    if not eval_set.exists():
        raise EvalReportError(f"--set {eval_set} does not exist")
    if not eval_set.is_dir():
        raise EvalReportError(f"--set {eval_set} is a file; pass the folder holding the "
                              "eval_<category>.jsonl manifests")


def choose_categories(eval_set: Path, categories: tp.Sequence[str] | None) -> list[str]:
    """The categories to evaluate (by default those of :data:`DEFAULT_CATEGORIES` with a
    manifest under ``eval_set``, else every ``eval_*.jsonl`` there); ``EvalReportError`` when
    ``eval_set`` is not a folder (:func:`check_set_folder`), ``categories`` is an empty list
    (:data:`NO_CATEGORY_NAMED`), there is no manifest or one of the ``categories`` asked for
    has none."""
    check_set_folder(eval_set)
    if categories is not None and not categories:  # ``--categories`` given with no name
        raise EvalReportError(NO_CATEGORY_NAMED)
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
    """``{category: [manifest row, ...]}`` (the first ``max_items`` of each; ids are checked
    unique over the whole manifest first, :func:`check_unique_ids`). A category whose
    manifest lists no item is an ``EvalReportError`` when ``chosen`` (named by
    ``--categories``), else skipped with a note; a set whose manifests are all empty is an
    ``EvalReportError`` too."""
    items: dict[str, list[dict]] = {}
    for cat in categories:
        manifest = eval_set / f"eval_{cat}.jsonl"
        rows = read_manifest(manifest)
        if not rows:
            if chosen:
                raise EvalReportError(f"{manifest} lists no items (category {cat!r})")
            print(f"note: {manifest} is empty; category {cat!r} skipped", file=sys.stderr)
            continue
        check_unique_ids(manifest, rows)  # over the whole manifest, before --max-items cuts it
        items[cat] = rows[:max_items] if max_items is not None else rows
    if not items:
        raise EvalReportError(f"every eval_<category>.jsonl manifest under {eval_set} is empty")
    return items


def read_manifest(manifest: Path) -> list[dict]:
    """The rows of ``manifest`` (:func:`opencodec.data.dataset.load_manifests`); a file that
    is not UTF-8 text is an ``EvalReportError`` naming it and the first bad byte."""
    from ..data.dataset import load_manifests

    try:
        return load_manifests(manifest)
    except UnicodeDecodeError as exc:
        raise EvalReportError(f"{manifest} is not UTF-8 text (byte {exc.object[exc.start]:#04x} "
                              f"at offset {exc.start}); a manifest is JSON lines in UTF-8") from None


def check_unique_ids(manifest: Path, rows: tp.Sequence[dict]) -> None:
    """``EvalReportError`` naming the ids (and their files) that several rows of ``manifest``
    share (an ``item_id`` given twice, or the same file stem in two folders without one):
    results are keyed by id, so the paired comparison would silently lose items."""
    paths: dict[str, list[str]] = {}
    for row in rows:
        paths.setdefault(item_id(row), []).append(str(row["path"]))
    twice = {ident: files for ident, files in paths.items() if len(files) > 1}
    if twice:
        named = "; ".join(f"{ident!r}: {', '.join(files)}" for ident, files in sorted(twice.items())[:5])
        raise EvalReportError(f"{manifest}: {len(twice)} item id(s) are shared by several rows "
                              f"({named}); give each row a unique \"item_id\"")


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
