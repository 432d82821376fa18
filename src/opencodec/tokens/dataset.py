"""Reading token shards back: a map-style torch Dataset, a padding collate, and decoding.

The shards are plain Parquet (see ``shards.SCHEMA``); pyarrow, pandas or Hugging Face
``datasets`` read them without opencodec. ``TokenDataset`` adds random access to codes as
tensors and the metadata of the job that wrote them.
"""

from __future__ import annotations

import bisect
import json
import operator
import re
import typing as tp
import warnings
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import torch
from torch.utils.data import Dataset

from .._files import check_output, output_folder
from ..audio import convert_audio, fit_length, resampled_length, write_audio
from ..batching import BatchEncoding, decode_batch
from ..errors import EntropyModelAsCodecError, ModelLoadError, advice_for_entropy_model
from ..model import EncodecModel
from ..pretrained import load_model
from ..weights_hash import weights_sha256
from .shards import ERRORS_FILE, INDEX_FILE, JOB_FILE, TokenizeError, read_metadata

Item = dict[str, tp.Any]

#: The end of the unfinished-job message for Python callers (the command line gives its own).
PARTIAL_ADVICE = "; TokenDataset(folder, partial=True) reads the finished shards only"


def _expected_shards(folder: Path, files: list[Path]) -> int | None:
    """How many shards the job in ``folder`` has: ``job.json``'s ``num_shards``, else the
    ``-of-NNNNN`` part of the shard names; None when neither says."""
    job = folder / JOB_FILE
    try:
        return int(json.loads(job.read_text())["num_shards"])
    except (OSError, ValueError, KeyError, TypeError):
        pass
    totals = {m.group(1) for f in files if (m := re.fullmatch(r"shard-\d+-of-(\d+)\.parquet", f.name))}
    return int(totals.pop()) if len(totals) == 1 else None


def shard_files(folder: str | Path, partial: bool = False) -> list[Path]:
    """The shard files of a token folder, in order (from ``index.json``, else by name).

    Without ``index.json`` the job is unfinished (still running, or stopped) unless every
    shard it plans exists: ``TokenizeError`` saying "N of M shards", or with ``partial`` a
    warning and the shards that exist. A shard ``index.json`` lists but that is missing:
    ``TokenizeError``.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise TokenizeError(f"{folder} is not a folder of token shards")
    index = folder / INDEX_FILE
    if index.exists():
        try:
            files = [folder / s["file"] for s in json.loads(index.read_text())["shards"]]
        except (OSError, ValueError, KeyError, TypeError) as exc:  # damaged after it was written
            raise TokenizeError(f"{index} is not a readable index of token shards ({type(exc).__name__}: {exc}): "
                                "run the tokenize command again to write it again") from None
        for path in files:
            if not path.exists():
                raise TokenizeError(f"token folder {folder} is incomplete: {path.name}, listed in "
                                    f"{INDEX_FILE}, is missing")
        return files
    files = sorted(folder.glob("shard-*.parquet"))
    expected = _expected_shards(folder, files)
    if expected is not None and len(files) < expected:
        message = (f"token folder {folder}: job incomplete: {len(files)} of {expected} shards written "
                   f"(no {INDEX_FILE} yet); rerun the tokenize command to finish it")
        if not files:  # nothing finished to read, partial or not
            raise TokenizeError(message)
        if not partial:
            raise TokenizeError(message + PARTIAL_ADVICE)
        warnings.warn(message + "; reading the finished shards only", stacklevel=3)
    if not files:
        raise TokenizeError(f"{folder} holds no token shards (shard-*.parquet)")
    return files


class TokenDataset(Dataset):
    """Rows of a token folder as a map-style dataset.

    ``ds[i]`` is a dict: ``id`` (str), ``codes`` (LongTensor [K, F]), ``sample_rate``,
    ``channels``, ``duration`` (s) of the source file, ``num_samples`` (its length at the
    model's rate) and, for normalising models, ``scales`` (FloatTensor [S]). ``metadata``:
    the job's model, weights sha256, bandwidth, opencodec version, frame rate.
    Row order: shard by shard, as written (by duration, then id). The codes are held in
    memory as int16 (2 bytes per code, ~4 MB per hour of audio at 6 kbps).

    A folder whose job is unfinished (no ``index.json``, fewer shards than planned) is
    refused; ``partial=True`` reads the shards written so far, with a warning.
    """

    def __init__(self, folder: str | Path, partial: bool = False):
        self.files = shard_files(folder, partial)
        self.tables = [pq.read_table(f) for f in self.files]
        self.metadata = {k: v for k, v in read_metadata(self.files[0]).items()
                         if k not in ("errors", "shard", "seconds")}
        self._starts = list(np.cumsum([0] + [t.num_rows for t in self.tables]))
        self._ids: dict[str, int] | None = None

    def __len__(self) -> int:
        return int(self._starts[-1])

    def index_of(self, row_id: str) -> int:
        """Position of the row with ``id`` (KeyError if none)."""
        if self._ids is None:
            self._ids = {rid: i for i, rid in enumerate(
                rid for t in self.tables for rid in t.column("id").to_pylist())}
        return self._ids[row_id]

    def __getitem__(self, index: int) -> Item:
        try:
            if isinstance(index, bool):  # an int to operator.index: ds[True] would be row 1
                raise TypeError
            index = operator.index(index)
        except TypeError:
            hint = " (use ds[ds.index_of(id)] for a row id)" if isinstance(index, str) else ""
            raise TypeError(f"TokenDataset rows are indexed by an integer position, got "
                            f"{type(index).__name__} {index!r}{hint}") from None
        if not -len(self) <= index < len(self):
            raise IndexError(f"row {index} out of range for {len(self)} rows")
        index %= len(self)
        shard = bisect.bisect_right(self._starts, index) - 1
        table, row = self.tables[shard], index - self._starts[shard]
        k = table.column("num_codebooks")[row].as_py()
        f = table.column("num_frames")[row].as_py()
        flat = table.column("codes")[row].values.flatten().to_numpy(zero_copy_only=False)
        item: Item = {"id": table.column("id")[row].as_py(),
                      "codes": torch.from_numpy(flat.astype(np.int64).reshape(k, f))}
        for name in ("sample_rate", "channels", "duration", "num_samples"):
            item[name] = table.column(name)[row].as_py()
        if "scales" in table.column_names:
            item["scales"] = torch.tensor(table.column("scales")[row].as_py(), dtype=torch.float32)
        return item


def collate_tokens(items: list[Item], pad_value: int = -1) -> dict[str, tp.Any]:
    """Batch rows: ``codes`` [B, K, F_max] padded with ``pad_value`` after each row's end,
    ``lengths`` [B] (frames), ``ids``; other fields as lists."""
    if not items:
        raise ValueError("collate_tokens needs at least one item")
    ks = {it["codes"].shape[0] for it in items}
    if len(ks) != 1:
        raise ValueError(f"rows with different numbers of codebooks cannot be batched: {sorted(ks)}")
    lengths = torch.tensor([it["codes"].shape[1] for it in items])
    codes = torch.full((len(items), ks.pop(), int(lengths.max())), pad_value, dtype=torch.long)
    for b, it in enumerate(items):
        codes[b, :, : it["codes"].shape[1]] = it["codes"]
    batch: dict[str, tp.Any] = {"codes": codes, "lengths": lengths, "ids": [it["id"] for it in items]}
    for key in items[0]:
        if key not in ("codes", "id"):
            batch[key] = [it[key] for it in items]
    return batch


def decode_row(model: EncodecModel, item: Item) -> torch.Tensor:
    """Audio [C, T] at the model's rate (``num_samples`` long) from a ``TokenDataset`` row."""
    codes = item["codes"][None]
    scales = item["scales"][None] if "scales" in item else None
    enc = BatchEncoding(codes, torch.tensor([codes.shape[-1]]), torch.tensor([item["num_samples"]]), scales)
    audio, _ = decode_batch(model, enc)
    return audio[0]


def source_length(item: Item) -> int:
    """Samples of the row's source file at its own rate: ``duration * sample_rate`` rounded,
    exact (the row's ``duration`` is that count divided by the rate, in float64)."""
    return round(item["duration"] * item["sample_rate"])


def decoded_audio(model: EncodecModel, item: Item, rate: int | None = None,
                  channels: int | None = None) -> torch.Tensor:
    """Audio [C, T] of a ``TokenDataset`` row at ``rate`` Hz with ``channels`` (default: the
    source file's), exactly as long as the source (``resampled_length`` of it at another
    rate): the round trip through the model's rate can add a sample, which is cut."""
    with torch.inference_mode():
        audio = decode_row(model, item).cpu()
    out_rate = rate or item["sample_rate"]
    audio = convert_audio(audio, model.sample_rate, out_rate, channels or item["channels"])
    return fit_length(audio, resampled_length(source_length(item), item["sample_rate"], out_rate))


def output_path(out_dir: Path, row_id: str) -> Path:
    """``out_dir/<id with its extension replaced by .wav>`` (ids may hold folders; ``..``
    and a leading ``/`` are dropped, so every file stays inside ``out_dir``).
    ``TokenizeError`` when the id leaves no file name (``""``, ``"."``, ``"/"``, ``".."``)."""
    relative = Path(row_id)
    if relative.is_absolute() or ".." in relative.parts:
        relative = Path(*[p for p in relative.parts if p not in (relative.anchor, "/", "..")])
    if not relative.name:
        raise TokenizeError(f"row id {row_id!r} names no output file (an id needs a file name)")
    return out_dir / relative.with_suffix(".wav")


def output_paths(out_dir: Path, ids: list[str]) -> list[Path]:
    """``output_path`` of each id; ``TokenizeError`` naming both ids when two would be
    written to one file (``x.flac`` and ``x.wav``; ``a/../b.wav`` and ``b.wav``)."""
    taken: dict[Path, str] = {}
    paths = []
    for row_id in ids:
        path = output_path(out_dir, row_id)
        if path in taken:
            raise TokenizeError(f"rows {taken[path]!r} and {row_id!r} would both be written to {path}; "
                                "decode them into different --out folders (choose rows with --ids)")
        taken[path] = row_id
        paths.append(path)
    return paths


def _load_codec(meta: dict[str, tp.Any], model: str | None, device: str) -> EncodecModel:
    """The model that wrote the shards: ``model`` if given, else the weights file the shards
    record (when the job was given one) or the model name; its sha256 must be the shards'."""
    recorded = meta.get("weights_file")
    if model is None and recorded is not None and not Path(recorded).is_file():
        raise ModelLoadError(f"the shards were written with the weights file {recorded}, which no longer "
                             f"exists (model {meta['model']!r}, sha256 {meta['weights_sha256'][:12]}...): "
                             "pass it, or a copy, with --model")
    advice = (f"detokenize takes the codec that wrote the shards (model {meta['model']!r}): "
              "pass its name or weights file with --model (model= in Python)")
    with advice_for_entropy_model(advice):  # keeps its type, with advice for detokenize
        try:
            codec = load_model(model or recorded or meta["model"], device=device)
        except EntropyModelAsCodecError:
            raise  # (given the advice above)
        except ModelLoadError as exc:
            raise ModelLoadError(f"{exc}; the shards were written with model {meta['model']!r}: "
                                 "pass its weights file with --model") from exc
    if weights_sha256(codec) != meta["weights_sha256"]:
        raise ModelLoadError(f"the model's weights differ from those that wrote the shards "
                             f"(sha256 {meta['weights_sha256'][:12]}...): pass the right one with --model")
    return codec


def _clip(audio: torch.Tensor, path: Path) -> torch.Tensor:
    """``audio`` clamped to [-1, 1] for 16-bit WAV, with a warning naming the peak."""
    peak = float(audio.abs().max()) if audio.numel() else 0.0
    if peak <= 1.0:
        return audio
    warnings.warn(f"{path}: peak amplitude {peak:.4f} exceeds full scale 1.0; clipped "
                  "(detokenize --rescale, or rescale=True, scales such files down instead)", stacklevel=3)
    return audio.clamp(-1.0, 1.0)


def _tokenize_error(files: list[Path], row_id: str) -> str | None:
    """Why the file with id ``row_id`` failed to tokenise (its ``errors.jsonl`` entry, from the
    metadata of the shards ``files``), or None when it did not fail."""
    for path in files:
        for entry in read_metadata(path).get("errors", []):
            if isinstance(entry, dict) and entry.get("id") == row_id:
                return str(entry.get("error", "no reason recorded"))
    return None


def detokenize(folder: str | Path, out_dir: str | Path, ids: list[str] | None = None,
               model: str | None = None, rate: int | None = None, channels: int | None = None,
               force: bool = False, device: str = "cpu", rescale: bool = False) -> list[Path]:
    """Decode rows of a token folder to WAV files in ``out_dir`` (all rows, or ``ids``; an id
    given twice is decoded once).

    The audio is written at the source file's rate and channel count unless ``rate`` /
    ``channels`` say otherwise, with the source's length at that rate (``decoded_audio``), as
    16-bit WAV: louder audio is clipped with a warning, or
    with ``rescale`` scaled down to a 0.99 peak. The model is ``model``, else the weights file
    or model the shards name, and its weights' sha256 must equal the shards' (``ModelLoadError``
    otherwise). Before anything is written, ``TokenizeError`` when two rows would share an
    output file, ``FileExistsError`` when an output exists (unless ``force``). ``out_dir`` is
    created (``OutputError`` when it is a file or cannot be written to). Returns the paths written.
    """
    dataset = TokenDataset(folder)
    meta = dataset.metadata
    try:
        rows = list(range(len(dataset))) if ids is None else [dataset.index_of(i) for i in dict.fromkeys(ids)]
    except KeyError as exc:
        reason = _tokenize_error(dataset.files, exc.args[0])
        if reason is not None:
            raise TokenizeError(f"no row with id {exc.args[0]!r} in {folder}: that file failed to tokenise "
                                f"(see {ERRORS_FILE}): {reason}") from None
        raise TokenizeError(f"no row with id {exc.args[0]!r} in {folder}") from exc
    out_dir = Path(out_dir)
    items = [dataset[r] for r in rows]
    paths = output_paths(out_dir, [it["id"] for it in items])
    codec = _load_codec(meta, model, device)
    for path in paths:
        check_output(path, force, need_folder=False)
    output_folder(out_dir, "--out")
    for item, path in zip(items, paths):
        audio = decoded_audio(codec, item, rate, channels)
        path.parent.mkdir(parents=True, exist_ok=True)
        write_audio(path, audio if rescale else _clip(audio, path), rate or item["sample_rate"], rescale=rescale)
    return paths
