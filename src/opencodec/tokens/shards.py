"""The output folder: Parquet shards written atomically, the job's settings, the index.

Layout of ``DIR``::

    job.json                            settings and plan fingerprint (a rerun must match)
    shard-00000-of-00012.parquet        one row per file (see ``SCHEMA``)
    ...
    index.json                          shards, their rows and errors (written when all exist)
    errors.jsonl                        {"id", "path", "error"} per file that could not be read
                                        (also a truncated file: fewer samples than its header says)

A shard appears only complete (temporary file + rename), so a shard file that exists is
finished and a rerun skips it. Its Parquet key-value metadata ``opencodec`` holds (JSON)
the model, its weights' sha256, the bandwidth, the opencodec version, and the shard's errors.
"""

from __future__ import annotations

import json
import typing as tp
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from .._files import TEMP_SUFFIX, atomic_output, output_folder
from ..errors import OpenCodecError, OutputError

METADATA_KEY = b"opencodec"
JOB_FILE = "job.json"
INDEX_FILE = "index.json"
ERRORS_FILE = "errors.jsonl"

#: One row per file. ``codes``: K lists of F codes; ``sample_rate``/``channels``/``duration``
#: describe the source file; ``num_samples``: its length at the model's rate (what decoding
#: trims to); ``scales``: one per segment, only for models that normalise (48 kHz).
SCHEMA = pa.schema([
    ("id", pa.string()),
    ("codes", pa.list_(pa.list_(pa.int16()))),
    ("num_codebooks", pa.int32()),
    ("num_frames", pa.int32()),
    ("sample_rate", pa.int32()),
    ("duration", pa.float64()),
    ("channels", pa.int32()),
    ("num_samples", pa.int64()),
])
SCALES_FIELD = pa.field("scales", pa.list_(pa.float32()))


class TokenizeError(OpenCodecError):
    """The output folder cannot be used for this job (different settings, not a token folder)."""


def shard_name(shard: int, num_shards: int) -> str:
    return f"shard-{shard:05d}-of-{num_shards:05d}.parquet"


@dataclass
class Row:
    """One file's tokens: ``codes`` [K, F] int16 and what the row records of its source."""

    id: str
    codes: np.ndarray
    sample_rate: int
    duration: float
    channels: int
    num_samples: int
    scales: np.ndarray | None = None


def _nested_codes(codes: list[np.ndarray]) -> pa.Array:
    """list<list<int16>> from [K, F] arrays, built from offsets (no Python lists)."""
    values = pa.array(np.concatenate([c.reshape(-1) for c in codes]) if codes else
                      np.zeros(0, np.int16), pa.int16())
    frames = np.concatenate([np.full(c.shape[0], c.shape[1]) for c in codes]) if codes else np.zeros(0)
    inner = pa.ListArray.from_arrays(pa.array(np.concatenate([[0], np.cumsum(frames)]), pa.int32()), values)
    outer_offsets = np.concatenate([[0], np.cumsum([c.shape[0] for c in codes])])
    return pa.ListArray.from_arrays(pa.array(outer_offsets, pa.int32()), inner)


def shard_table(rows: list[Row], metadata: dict[str, tp.Any], with_scales: bool) -> pa.Table:
    """The Parquet table of ``rows`` with the job's ``metadata`` (``SCHEMA``, plus ``scales``)."""
    columns = [
        pa.array([r.id for r in rows], pa.string()),
        _nested_codes([np.ascontiguousarray(r.codes, dtype=np.int16) for r in rows]),
        pa.array([r.codes.shape[0] for r in rows], pa.int32()),
        pa.array([r.codes.shape[1] for r in rows], pa.int32()),
        pa.array([r.sample_rate for r in rows], pa.int32()),
        pa.array([r.duration for r in rows], pa.float64()),
        pa.array([r.channels for r in rows], pa.int32()),
        pa.array([r.num_samples for r in rows], pa.int64()),
    ]
    schema = SCHEMA
    if with_scales:
        schema = schema.append(SCALES_FIELD)
        columns.append(pa.array([[float(v) for v in (r.scales if r.scales is not None else [])]
                                 for r in rows], pa.list_(pa.float32())))
    schema = schema.with_metadata({METADATA_KEY: json.dumps(metadata, sort_keys=True).encode()})
    return pa.Table.from_arrays(columns, schema=schema)


def write_shard(path: Path, rows: list[Row], metadata: dict[str, tp.Any], with_scales: bool) -> None:
    """Write ``rows`` as one Parquet file (zstd), atomically: it appears complete or not at all.

    A shard without rows (every file of it failed) has the schema and metadata and no row
    group: Hugging Face ``datasets`` refuses a row group of 0 rows ("BatchSize must be greater
    than 0"), while pyarrow and pandas read either as an empty table."""
    table = shard_table(rows, metadata, with_scales)
    with atomic_output(path) as tmp:
        if rows:
            pq.write_table(table, tmp, compression="zstd")
        else:
            pq.ParquetWriter(tmp, table.schema, compression="zstd").close()


def read_metadata(path: Path) -> dict[str, tp.Any]:
    """The ``opencodec`` metadata of a shard (model, weights sha256, bandwidth, errors ...)."""
    try:
        meta = pq.read_schema(path).metadata or {}
    except (pa.ArrowException, OSError) as exc:  # damaged after it was written: a rerun skips it
        raise TokenizeError(f"{path} is not a readable Parquet file ({exc}): delete it and run the tokenize "
                            "command again to write it again") from None
    if METADATA_KEY not in meta:
        raise TokenizeError(f"{path} is not an opencodec token shard (no '{METADATA_KEY.decode()}' metadata)")
    return json.loads(meta[METADATA_KEY])


def remove_stale_temps(folder: Path, names: list[str]) -> None:
    """Delete temporary files a killed run left for the shards ``names``."""
    for name in names:
        for tmp in folder.glob(f".{name}.*{TEMP_SUFFIX}"):
            tmp.unlink(missing_ok=True)


def _json_text(data: tp.Any) -> str:
    """``data`` as the folder's JSON files hold it (indented, sorted keys, a final newline)."""
    return json.dumps(data, indent=2, sort_keys=True) + "\n"


def _write_json(path: Path, data: tp.Any) -> None:
    with atomic_output(path) as tmp:
        tmp.write_text(_json_text(data))


def _place_index(path: Path, index: dict[str, tp.Any]) -> bool:
    """Write ``index`` to ``path`` (atomically); True when this call made it appear (no file was
    there: a hard link that fails if one is) or changed its content, False when the same index
    was already there (another rank that finished at the same moment wrote it)."""
    text = _json_text(index)
    try:
        with atomic_output(path, overwrite=False) as tmp:
            tmp.write_text(text)
        return True
    except OutputError:
        if not path.exists():  # not "already exists": the write itself failed
            raise
    try:
        if path.read_text() == text:
            return False
    except (OSError, UnicodeDecodeError):
        pass
    _write_json(path, index)
    return True


def claim_folder(folder: Path, job: dict[str, tp.Any]) -> None:
    """Create ``folder`` with ``job.json``, or check that the job already there is this one.

    Raises ``TokenizeError`` when the folder holds another job's tokens (other inputs,
    model, weights, bandwidth, dtype or shard size), or files that are not tokens, and
    ``OutputError`` when it is a file or cannot be written to.
    """
    output_folder(folder, "--out")
    path = folder / JOB_FILE
    if not path.exists():
        # Other ranks may claim the folder at the same moment, with the same content; another
        # command may too, with other settings: the first job.json stays (never replaced), and
        # the others compare theirs with it below.
        if any(p for p in folder.iterdir() if not p.name.startswith(".") and p.name != JOB_FILE):
            raise TokenizeError(f"{folder} is not empty and holds no {JOB_FILE}: not an opencodec token "
                                "folder; use a new --out folder")
        try:
            with atomic_output(path, overwrite=False) as tmp:
                tmp.write_text(_json_text(job))
        except OutputError:
            if not path.exists():  # not "already exists": the write itself failed
                raise
    found = json.loads(path.read_text())
    if found != job:
        raise TokenizeError(f"{folder} holds the tokens of another job: {'; '.join(job_differences(found, job))}; "
                            "its shards cannot be reused for this one: give a new --out folder, or delete "
                            f"{folder} to start again")


#: ``job.json`` keys a user changes with an option, and the words for them.
_JOB_SETTINGS = {"model": "the model", "weights_sha256": "the model's weights", "bandwidth": "--bandwidth",
                 "dtype": "--dtype", "shard_rows": "--shard-rows", "opencodec_version": "the opencodec version"}


def job_differences(found: dict[str, tp.Any], job: dict[str, tp.Any]) -> list[str]:
    """What differs between the job a folder holds (``found``) and this ``job``, in words:
    a setting with its two values, or that the input files (or their durations) changed."""
    words = []
    for key in sorted(set(job) | set(found)):
        if key in ("files_sha256", "num_files", "num_shards") or found.get(key) == job.get(key):
            continue
        then, now = found.get(key), job.get(key)
        if key == "weights_sha256":
            then, now = str(then)[:12] + "...", str(now)[:12] + "..."
        words.append(f"{_JOB_SETTINGS.get(key, key)}: {then} then, {now} now")
    if found.get("files_sha256") != job.get("files_sha256") or found.get("num_files") != job.get("num_files"):
        words.append(f"the input files, or their durations, changed since that job ({found.get('num_files')} "
                     f"files then, {job.get('num_files')} now)")
    if not words:  # only num_shards, which follows from the files and --shard-rows: an edited job.json
        words.append(f"its {JOB_FILE} differs in num_shards")
    return words


def finalize(folder: Path, num_shards: int) -> tuple[dict[str, tp.Any] | None, bool]:
    """When every shard exists, write ``index.json`` and ``errors.jsonl`` (atomically; the
    content depends only on the shards, so concurrent writers agree) and return ``(index,
    fresh)``, ``fresh`` True for the one call that made ``index.json`` appear (or changed it):
    of ranks that find every shard at the same moment, that one reports the job. Else
    ``(None, False)``."""
    names = [shard_name(s, num_shards) for s in range(num_shards)]
    if not all((folder / name).exists() for name in names):
        return None, False
    shards, errors, seconds = [], [], 0.0
    for name in names:
        meta = read_metadata(folder / name)
        rows = pq.read_metadata(folder / name).num_rows
        shards.append({"file": name, "rows": rows, "errors": len(meta["errors"]),
                       "seconds": meta["seconds"]})
        errors.extend(meta["errors"])
        seconds += meta["seconds"]
    index = {"shards": shards, "rows": sum(s["rows"] for s in shards), "errors": len(errors),
             "hours": seconds / 3600, **{k: meta[k] for k in ("model", "weights_sha256", "bandwidth",
                                                                "opencodec_version", "dtype")}}
    with atomic_output(folder / ERRORS_FILE) as tmp:
        tmp.write_text("".join(json.dumps(e, sort_keys=True) + "\n" for e in errors))
    return index, _place_index(folder / INDEX_FILE, index)
