"""``opencodec mushra build``: prepare a MUSHRA test folder from the evaluation manifests.

Protocol
--------
* Items: ``SET/eval_<category>.jsonl`` (the corpus builder's evaluation manifests, as used
  by ``opencodec eval``); ``N`` items per category are drawn without replacement with
  ``numpy.random.default_rng([seed, crc32(category)])``, so the choice depends only on the
  seed, the category and the manifest (not on the other categories). Each item is read and
  converted to the test's rate and channels exactly as ``opencodec eval`` does
  (:class:`opencodec.data.dataset.EvalDataset`: soxr resampling, channel mix) and cut to its
  first ``--max-seconds`` seconds (default 10 s; MUSHRA excerpts should be short).
* Rate and channels: those of the first model (all models must agree); without models
  ``--sample-rate`` / ``--channels`` (default 24 kHz mono). Every WAV of the test is at that
  rate (16-bit PCM).
* Conditions of every trial: the **hidden reference** (the converted excerpt itself), the
  **low-pass anchor** (the excerpt through an 8th-order Butterworth low-pass at 3.5 kHz,
  second-order sections, run forward and backward with ``scipy.signal.sosfiltfilt``: zero
  phase, so aligned with the reference; the magnitude response is the Butterworth response
  squared, -6 dB at the cut-off and -96 dB per octave above it), each neural model at each
  chosen bandwidth (a real ``compress`` -> ``.ecdc`` -> ``decompress`` round trip,
  :func:`opencodec.eval.scoring._neural_roundtrip`) and each baseline (``opusN``, ``mp3_N``,
  parsed and run by :func:`opencodec.eval.systems.parse_baseline` / the codecs of
  :mod:`opencodec.eval.baselines`; a bitrate the encoder would not code at the test's rate
  and channels is refused before any work, as by ``opencodec eval``). System names are
  those of ``opencodec eval`` (``opencodec_24khz@6kbps``, ``opus-6kbps``, ``mp3-64kbps``).
* Bad input, refused with one line before any output: a ``--set`` that is missing or a file,
  a manifest that is not UTF-8, ``--categories`` without a name; an item that cannot be
  read, is empty or holds NaN/inf samples (named with its file and the reason), or whose
  excerpt is silent (every channel below -60 dBFS RMS, :func:`check_audible`).
* Levels: **not loudness-matched**; every condition keeps the level its system outputs
  (codecs preserve level closely). Only when some condition of a trial peaks above full
  scale is the whole trial (reference and every condition) scaled by one gain so that the
  loudest peak is 0.99; relative levels are therefore always kept. The gain is stored per
  trial in ``test.json``.
* Output: ``OUT/test.json`` (see :mod:`.spec`), ``OUT/audio/<trial>/reference.wav`` and one
  ``OUT/audio/<trial>/<condition id>.wav`` per condition, the ids random (blind test). The
  folder is built under a temporary name and renamed at the end: an interrupted build leaves
  nothing behind. Missing parent folders of ``OUT`` are created. An existing ``OUT`` is only
  replaced with ``--force``, and only when it is an earlier test (it holds ``test.json``),
  never when it holds a ratings database or the eval set.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import os
import re
import secrets
import shutil
import sys
import typing as tp
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..._files import error_reason
from ...bandwidth import check_bandwidth
from ...errors import UnsupportedBandwidthError, advice_for_entropy_model
from ..items import NO_CATEGORY_NAMED, check_set_folder, check_unique_ids, item_id, read_manifest
from ..systems import DEFAULT_CATEGORIES, EvalReportError, neural_system_name, parse_baseline
from .spec import (ANCHOR_KIND, DB_FILE, FORMAT, HIDDEN_REFERENCE_KIND, TEST_FILE, MushraError,
                   MushraTest, load_test)

DEFAULT_ANCHOR_HZ = 3500.0
ANCHOR_ORDER = 8
DEFAULT_MAX_SECONDS = 10.0
HEADROOM_PEAK = 0.99
#: An excerpt whose every channel is below this RMS level (dB re full scale 1.0) is refused:
#: silence, which no listener can rate (``opencodec eval``'s ViSQOL uses the same bound).
SILENCE_DBFS = -60.0
#: What ``opencodec mushra build`` advises for an entropy model (its weights or name, or a
#: train-lm checkpoint) given to ``--models``, in place of the loader's advice
#: (``--lm-model``, an option mushra does not have).
MUSHRA_LM_ADVICE = "opencodec mushra build tests codecs only; pass a codec's name or weights to --models"


@dataclass(frozen=True)
class System:
    """One condition source: ``name`` (as ``opencodec eval`` names it), ``kind`` (one of
    :data:`.spec.SYSTEM_KINDS`), nominal kbit/s for codecs, and what runs it."""

    name: str
    kind: str
    nominal_kbps: float | None = None
    model: str = ""      # name or path given to load_model (neural)
    baseline: str = ""   # baseline spec such as "opus12" (baseline)


def load_codec(spec: str) -> tp.Any:
    """The codec ``spec`` names (a name or weights file; ``EncodecModel`` in eval mode). An
    entropy model gets :data:`MUSHRA_LM_ADVICE` (:class:`~opencodec.errors.EntropyModelAsCodecError`)."""
    from ...pretrained import load_model

    with advice_for_entropy_model(MUSHRA_LM_ADVICE):
        return load_model(spec).eval()


def anchor_name(cutoff_hz: float) -> str:
    """``anchor-3.5kHz`` for a 3500 Hz cut-off."""
    return f"anchor-{cutoff_hz / 1000:g}kHz"


def lowpass_anchor(wav: np.ndarray, sample_rate: int, cutoff_hz: float = DEFAULT_ANCHOR_HZ,
                   order: int = ANCHOR_ORDER) -> np.ndarray:
    """The MUSHRA low-pass anchor: ``wav`` float32 ``[C, T]`` through an ``order``-th order
    Butterworth low-pass at ``cutoff_hz`` (Hz), applied forward and backward
    (``sosfiltfilt``: zero phase, magnitude = Butterworth response squared, -6 dB at the
    cut-off). Returns float32 ``[C, T]``, same length and alignment as ``wav``."""
    from scipy.signal import butter, sosfiltfilt

    if not 0 < cutoff_hz < sample_rate / 2:
        raise MushraError(f"anchor cut-off {cutoff_hz:g} Hz must lie between 0 and the Nyquist "
                          f"frequency ({sample_rate / 2:g} Hz at {sample_rate} Hz)")
    x = np.asarray(wav, dtype=np.float64)
    if x.ndim != 2:
        raise MushraError(f"anchor input must be shaped [C, T], got {tuple(x.shape)}")
    sos = butter(order, cutoff_hz, btype="lowpass", fs=sample_rate, output="sos")
    # sosfiltfilt pads by reflection; very short signals get a shorter pad.
    padlen = min(3 * (2 * len(sos) + 1), int(x.shape[-1]) - 1)
    if padlen < 0:
        return np.zeros_like(x, dtype=np.float32)
    return np.ascontiguousarray(sosfiltfilt(sos, x, axis=-1, padlen=padlen), dtype=np.float32)


def select_items(eval_set: Path, categories: tp.Sequence[str], per_category: int,
                 seed: int) -> dict[str, list[dict]]:
    """``per_category`` manifest rows of each category, drawn with a fixed seed.

    Rows keep their manifest order. Raises :class:`MushraError` if a manifest is missing or
    holds fewer items than asked for."""
    if per_category < 1:
        raise MushraError(f"--items-per-category must be at least 1, got {per_category}")
    _check_seed(seed)
    chosen: dict[str, list[dict]] = {}
    for cat in categories:
        manifest = eval_set / f"eval_{cat}.jsonl"
        if not manifest.is_file():
            raise MushraError(f"missing manifest {manifest} (category {cat!r})")
        rows = _eval_checked(read_manifest, manifest)
        _eval_checked(check_unique_ids, manifest, rows)  # one file listed twice: two trials of it
        if len(rows) < per_category:
            raise MushraError(f"{manifest} has {len(rows)} item(s), but {per_category} per "
                              "category were asked for (--items-per-category)")
        rng = np.random.default_rng([seed, zlib.crc32(cat.encode())])
        picks = sorted(rng.choice(len(rows), size=per_category, replace=False).tolist())
        chosen[cat] = [rows[i] for i in picks]
    return chosen


def _check_seed(seed: int) -> None:
    """:class:`MushraError` unless ``seed`` is a whole number >= 0 (what numpy's
    ``default_rng`` takes)."""
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise MushraError(f"--seed must be a whole number >= 0, got {seed!r}")


def _eval_checked(check: tp.Callable[..., tp.Any], *args: tp.Any) -> tp.Any:
    """``check(*args)`` (a check shared with ``opencodec eval``), its ``EvalReportError``
    raised as :class:`MushraError`."""
    try:
        return check(*args)
    except EvalReportError as exc:
        raise MushraError(str(exc)) from None


def read_item(row: dict, category: str, sample_rate: int, channels: int) -> np.ndarray:
    """The item of manifest ``row`` as float32 ``[C, T]`` at ``sample_rate`` and ``channels``,
    read as ``opencodec eval`` reads it (:func:`opencodec.eval.scoring.load_reference`); a
    file that cannot be read, is empty or holds NaN/inf samples is a :class:`MushraError`
    naming the item, its file and the reason."""
    from ..scoring import ItemReadError, load_reference

    try:
        return load_reference({"row": row, "sample_rate": sample_rate, "channels": channels})
    except ItemReadError as exc:
        raise MushraError(f"cannot read item {item_id(row)!r} of {category}: {exc.path}: "
                          f"{exc.reason}") from None


def check_audible(ref: np.ndarray, row: dict, category: str) -> None:
    """:class:`MushraError` naming the item when every channel of its excerpt ``ref``
    (float32 ``[C, T]``, full scale 1.0) has an RMS level below :data:`SILENCE_DBFS`: a trial
    of silence cannot be rated (every condition sounds the same)."""
    rms = float(np.sqrt(np.max(np.mean(np.square(ref, dtype=np.float64), axis=-1))))
    dbfs = 20.0 * math.log10(rms) if rms > 0 else -math.inf
    if dbfs < SILENCE_DBFS:
        raise MushraError(f"item {item_id(row)!r} of {category} ({row['path']}) is silent or nearly "
                          f"so ({dbfs:.1f} dBFS RMS, below {SILENCE_DBFS:g} dBFS): a listener "
                          "cannot rate it; take it out of the manifest")


def find_categories(eval_set: Path) -> list[str]:
    """The categories with a non-empty manifest under ``eval_set``: the standard four first
    (those present), else every ``eval_*.jsonl``; as ``opencodec eval`` finds them. An empty
    manifest (the `tiny` preset has no music) is skipped with a note on stderr."""
    cats = [c for c in DEFAULT_CATEGORIES if (eval_set / f"eval_{c}.jsonl").is_file()]
    if not cats:
        cats = sorted(p.stem[len("eval_"):] for p in eval_set.glob("eval_*.jsonl"))
    if not cats:
        raise MushraError(f"no eval_<category>.jsonl manifests under {eval_set}")
    empty = [c for c in cats if not _eval_checked(read_manifest, eval_set / f"eval_{c}.jsonl")]
    for cat in empty:
        print(f"note: {eval_set / f'eval_{cat}.jsonl'} is empty; category {cat!r} skipped",
              file=sys.stderr)
    cats = [c for c in cats if c not in empty]
    if not cats:
        raise MushraError(f"every eval_<category>.jsonl manifest under {eval_set} is empty")
    return cats


def plan_systems(models: tp.Sequence[str], bandwidths: tp.Sequence[float] | None,
                 baselines: tp.Sequence[str], anchor_hz: float,
                 loaded: dict[str, tp.Any]) -> list[System]:
    """Hidden reference, anchor, every (model, bandwidth) and every baseline, in that order.

    ``loaded`` maps each entry of ``models`` to its loaded model. A bandwidth a model does
    not support is an error (a listening test should not silently lose a condition)."""
    systems = [System("hidden-reference", HIDDEN_REFERENCE_KIND),
               System(anchor_name(anchor_hz), ANCHOR_KIND)]
    for spec in models:
        model = loaded[spec]
        for bw in (bandwidths or model.target_bandwidths):
            try:
                check_bandwidth(bw, model.target_bandwidths, model.name)
            except UnsupportedBandwidthError as error:
                raise MushraError(str(error)) from None
            systems.append(System(neural_system_name(model.name, bw), "neural", float(bw), model=spec))
    for spec in baselines:
        try:
            codec = parse_baseline(spec)
        except EvalReportError as exc:
            raise MushraError(str(exc)) from exc
        systems.append(System(codec.name, "baseline", float(codec.nominal_kbps), baseline=spec))
    names = [s.name for s in systems]
    if len(set(names)) != len(names):
        twice = sorted({n for n in names if names.count(n) > 1})
        raise MushraError(f"duplicate systems {twice}: the same model or baseline is given twice")
    return systems


def _fit(x: np.ndarray, length: int) -> np.ndarray:
    """Trim or zero-pad float32 ``[C, T]`` at the end to ``length`` samples."""
    if x.shape[-1] >= length:
        return np.ascontiguousarray(x[..., :length], dtype=np.float32)
    return np.pad(x, ((0, 0), (0, length - x.shape[-1]))).astype(np.float32)


def make_conditions(ref: np.ndarray, sample_rate: int, systems: tp.Sequence[System],
                    anchor_hz: float, models: dict[str, tp.Any],
                    codecs: dict[str, tp.Any]) -> dict[str, tuple[np.ndarray, float | None]]:
    """Every system's version of ``ref`` (float32 ``[C, T]`` at ``sample_rate`` Hz):
    ``{system name: (audio [C, T] as long as ref, actual kbit/s or None)}``."""
    from ..scoring import _neural_roundtrip

    out: dict[str, tuple[np.ndarray, float | None]] = {}
    length = ref.shape[-1]
    for s in systems:
        if s.kind == HIDDEN_REFERENCE_KIND:
            out[s.name] = (ref.copy(), None)
        elif s.kind == ANCHOR_KIND:
            out[s.name] = (lowpass_anchor(ref, sample_rate, anchor_hz), None)
        elif s.kind == "neural":
            assert s.nominal_kbps is not None
            est, kbps, _elapsed = _neural_roundtrip(models[s.model], ref, s.nominal_kbps)
            out[s.name] = (_fit(est, length), float(kbps))
        else:
            est, kbps = codecs[s.baseline].roundtrip(ref, sample_rate)
            out[s.name] = (_fit(np.asarray(est, dtype=np.float32), length), float(kbps))
    return out


def _default_test_id(out: Path) -> str:
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "-", out.resolve().name).strip("-.") or "mushra"
    return f"{slug[:48]}-{secrets.token_hex(4)}"


def _write_wav(path: Path, wav: np.ndarray, sample_rate: int) -> None:
    import torch

    from ...audio import write_audio

    write_audio(path, torch.from_numpy(np.ascontiguousarray(wav, dtype=np.float32)), sample_rate, bits=16)


def _holds_ratings(db_path: Path) -> bool:
    """True if ``db_path`` exists and holds at least one rating (or cannot be read as a
    ratings database: then it is kept, to be safe)."""
    import sqlite3

    if not db_path.exists():
        return False
    try:
        conn = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
        try:
            return conn.execute("SELECT COUNT(*) FROM ratings").fetchone()[0] > 0
        finally:
            conn.close()
    except sqlite3.Error:
        return True


def _check_out(out: Path, force: bool, eval_set: Path | None = None) -> None:
    """Refuse an ``out`` that is a file, or a non-empty folder unless ``force``; even with
    ``force``, one holding ratings, one that is not an earlier test (no ``test.json``: ``-f``
    replaces a test folder, never another folder) or one that is, or holds, ``eval_set``."""
    if out.exists() and not out.is_dir():
        raise MushraError(f"output {out} exists and is not a folder")
    if out.is_dir() and any(out.iterdir()):
        if _holds_ratings(out / DB_FILE):
            raise MushraError(f"{out} holds ratings ({out / DB_FILE}); refusing to replace it even "
                              "with --force: move the folder or the database away first")
        if not force:
            raise MushraError(f"output folder {out} exists and is not empty (use -f/--force to replace it)")
        if eval_set is not None and out.resolve() in (eval_set.resolve(), *eval_set.resolve().parents):
            raise MushraError(f"output folder {out} holds the eval set {eval_set}; refusing to replace it "
                              "even with --force: choose an --out outside the set")
        if not (out / TEST_FILE).is_file():
            raise MushraError(f"output folder {out} is not a MUSHRA test folder (no {TEST_FILE}); refusing "
                              "to replace it even with --force: choose a new or empty folder")
    parent = out.resolve().parent
    nearest = next(p for p in (parent, *parent.parents) if p.exists())  # missing ones are created
    if not nearest.is_dir():
        raise MushraError(f"cannot create {out}: {nearest} is not a folder")


def build_test(eval_set: str | os.PathLike[str], out: str | os.PathLike[str], *,
               models: tp.Sequence[str] = (), bandwidths: tp.Sequence[float] | None = None,
               baselines: tp.Sequence[str] = (), categories: tp.Sequence[str] | None = None,
               items_per_category: int = 3, seed: int = 0,
               max_seconds: float | None = DEFAULT_MAX_SECONDS,
               sample_rate: int = 24000, channels: int = 1, anchor_hz: float = DEFAULT_ANCHOR_HZ,
               test_id: str | None = None, title: str | None = None, force: bool = False,
               quiet: bool = False) -> MushraTest:
    """Build a MUSHRA test folder (see the module notes); returns it as read back by
    :func:`.spec.load_test`. Works without any model (baselines only, or no codec at all:
    hidden reference and anchor)."""
    from ..lineup import check_baselines
    from ...progress import progress_bar
    from .spec import ID_PATTERN

    eval_set, out = Path(eval_set), Path(out)
    _eval_checked(check_set_folder, eval_set)
    _check_out(out, force, eval_set)
    if test_id is not None and not ID_PATTERN.match(test_id):
        raise MushraError(f"test id {test_id!r} is not valid (letters, digits, '_', '.', '-'; "
                          "at most 64 characters)")
    if max_seconds is not None and not (math.isfinite(max_seconds) and max_seconds > 0):
        raise MushraError(f"--max-seconds must be a positive number, got {max_seconds}")
    if categories is not None and not categories:  # ``--categories`` with no name
        raise MushraError(NO_CATEGORY_NAMED)
    twice = sorted({c for c in categories or () if list(categories).count(c) > 1})
    if twice:  # each would draw the same items again: the same excerpts as several trials
        raise MushraError(f"--categories names {', '.join(map(repr, twice))} more than once")
    _check_seed(seed)
    loaded = {spec: load_codec(spec) for spec in models}
    if loaded:
        formats = {(m.sample_rate, m.channels) for m in loaded.values()}
        if len(formats) > 1:
            raise MushraError(f"models disagree on sample rate/channels: {sorted(formats)}")
        sample_rate, channels = formats.pop()
    if max_seconds is not None and round(max_seconds * sample_rate) < 1:
        raise MushraError(f"--max-seconds {max_seconds:g} is shorter than one sample at "
                          f"{sample_rate} Hz: every excerpt would be empty")
    systems = plan_systems(models, bandwidths, baselines, anchor_hz, loaded)
    _eval_checked(check_baselines, baselines, sample_rate, channels)
    lowpass_anchor(np.zeros((1, 16), np.float32), sample_rate, anchor_hz)  # checks the cut-off now
    codecs = {s.baseline: parse_baseline(s.baseline) for s in systems if s.kind == "baseline"}
    cats = list(categories) if categories else find_categories(eval_set)
    chosen = select_items(eval_set, cats, items_per_category, seed)

    test_id = test_id or _default_test_id(out)
    tmp = out.resolve().parent / f".{out.resolve().name}.building-{secrets.token_hex(4)}"
    try:
        tmp.parent.mkdir(parents=True, exist_ok=True)  # missing parent folders are created
        tmp.mkdir()
    except OSError as exc:
        raise MushraError(f"cannot write {out}: {error_reason(exc)}") from exc
    try:
        trials = []
        todo = [(cat, row) for cat in cats for row in chosen[cat]]
        for index, (cat, row) in enumerate(progress_bar(todo, desc="mushra items", unit="item",
                                                        disable=quiet, file=sys.stderr)):
            trial_id = f"t{index + 1:02d}"
            ref = read_item(row, cat, sample_rate, channels)
            if max_seconds is not None:
                ref = ref[:, : round(max_seconds * sample_rate)]
            check_audible(ref, row, cat)
            conds = make_conditions(ref, sample_rate, systems, anchor_hz, loaded, codecs)
            peak = max([float(np.max(np.abs(ref)))] + [float(np.max(np.abs(a))) for a, _ in conds.values()])
            gain = HEADROOM_PEAK / peak if peak > 1.0 else 1.0
            folder = tmp / "audio" / trial_id
            folder.mkdir(parents=True)
            _write_wav(folder / "reference.wav", ref * gain, sample_rate)
            ids: set[str] = set()
            entries = []
            for s in systems:
                cid = secrets.token_hex(4)
                while cid in ids:  # pragma: no cover - 1 in 4 billion
                    cid = secrets.token_hex(4)
                ids.add(cid)
                audio, kbps = conds[s.name]
                _write_wav(folder / f"{cid}.wav", audio * gain, sample_rate)
                entries.append({"id": cid, "system": s.name, "file": f"audio/{trial_id}/{cid}.wav",
                                "actual_kbps": kbps})
            trials.append({"trial_id": trial_id, "category": cat,
                           "item_id": item_id(row),
                           "source": str(row["path"]), "duration_s": ref.shape[-1] / sample_rate,
                           "gain": gain, "reference": f"audio/{trial_id}/reference.wav",
                           "conditions": entries})
        doc = {
            "format": FORMAT, "test_id": test_id,
            "title": title or f"MUSHRA test {test_id}",
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "sample_rate": sample_rate, "channels": channels, "seed": seed,
            "eval_set": str(eval_set), "categories": cats, "items_per_category": items_per_category,
            "max_seconds": max_seconds,
            "anchor": {"cutoff_hz": float(anchor_hz),
                       "filter": f"Butterworth low-pass, order {ANCHOR_ORDER}, second-order sections, "
                                 "zero phase (scipy.signal.sosfiltfilt: -6 dB at the cut-off)"},
            "loudness": "not matched; a trial whose loudest signal peaks above full scale is "
                        f"scaled as a whole to a {HEADROOM_PEAK} peak ('gain' per trial)",
            "systems": [{"name": s.name, "kind": s.kind, "nominal_kbps": s.nominal_kbps,
                         **({"model": s.model} if s.model else {}),
                         **({"baseline": s.baseline} if s.baseline else {})} for s in systems],
            "trials": trials,
        }
        (tmp / TEST_FILE).write_text(json.dumps(doc, indent=2) + "\n")
        load_test(tmp)  # what serve and report will read must be valid
        _install(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return load_test(out)


def _install(tmp: Path, out: Path) -> None:
    """Move the finished folder ``tmp`` onto ``out`` (replacing an old build, if any)."""
    if not out.exists():
        os.replace(tmp, out)
        return
    old = out.resolve().parent / f".{out.resolve().name}.old-{secrets.token_hex(4)}"
    os.replace(out, old)
    try:
        os.replace(tmp, out)
    except BaseException:
        os.replace(old, out)
        raise
    shutil.rmtree(old, ignore_errors=True)
