"""The description of a built MUSHRA test (``TEST_DIR/test.json``) and its reader.

``test.json`` (format ``opencodec-mushra/1``)::

    {"format": "opencodec-mushra/1", "test_id": "...", "created": "2024-...Z",
     "sample_rate": 24000, "channels": 1, "seed": 0, "items_per_category": 3,
     "anchor": {"cutoff_hz": 3500.0, "filter": "..."}, "loudness": "...",
     "systems": [{"name": "hidden-reference", "kind": "hidden_reference", "nominal_kbps": null},
                 {"name": "anchor-3.5kHz", "kind": "anchor", ...},
                 {"name": "opus-6kbps", "kind": "baseline", "nominal_kbps": 6.0}, ...],
     "trials": [{"trial_id": "t01", "category": "music", "item_id": "...", "source": "...",
                 "duration_s": 4.0, "gain": 1.0, "reference": "audio/t01/reference.wav",
                 "conditions": [{"id": "c5e0a9f1", "system": "opus-6kbps",
                                 "file": "audio/t01/c5e0a9f1.wav", "actual_kbps": 6.1}, ...]}]}

Condition ids and file names are random and say nothing about the system: the page only
ever sees them (blind test); the mapping to systems stays on the server.
"""

from __future__ import annotations

import json
import math
import re
import typing as tp
from dataclasses import dataclass
from pathlib import Path

from ...errors import OpenCodecError

FORMAT = "opencodec-mushra/1"
TEST_FILE = "test.json"
DB_FILE = "ratings.sqlite"
HIDDEN_REFERENCE_KIND = "hidden_reference"
ANCHOR_KIND = "anchor"
SYSTEM_KINDS = (HIDDEN_REFERENCE_KIND, ANCHOR_KIND, "neural", "baseline")
#: Ids (test, trial, condition) are short, URL- and file-name-safe tokens.
ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


class MushraError(OpenCodecError, ValueError):
    """A MUSHRA test, its inputs, a submission or the ratings database is not valid."""


@dataclass(frozen=True)
class Condition:
    """One blinded condition of a trial: opaque ``id``, the ``system`` it comes from, its
    WAV file (relative to the test folder) and, for codecs, the measured bitrate (kbit/s)."""

    id: str
    system: str
    file: str
    actual_kbps: float | None = None


@dataclass(frozen=True)
class Trial:
    """One page of the test: an item (``category``/``item_id``), its open reference WAV
    and the conditions to rate (the hidden reference and the anchor among them)."""

    trial_id: str
    category: str
    item_id: str
    reference: str
    conditions: tuple[Condition, ...]

    def condition(self, condition_id: str) -> Condition | None:
        """The condition with this id, or None."""
        return next((c for c in self.conditions if c.id == condition_id), None)


@dataclass(frozen=True)
class MushraTest:
    """A built test: ``root`` folder, ``test_id``, audio format, systems and trials.

    ``systems`` maps each system name to its kind (one of :data:`SYSTEM_KINDS`), in the
    order of ``test.json``; ``raw`` is the whole parsed ``test.json``."""

    root: Path
    test_id: str
    sample_rate: int
    channels: int
    systems: dict[str, str]
    trials: tuple[Trial, ...]
    raw: dict

    def trial(self, trial_id: str) -> Trial | None:
        """The trial with this id, or None."""
        return next((t for t in self.trials if t.trial_id == trial_id), None)

    def foreign_ratings(self, rated: tp.Iterable[tuple[str, str]]) -> list[str]:
        """``trial/condition`` of each (trial id, condition id) in ``rated`` that this test
        does not have (ratings stored under this test id by an earlier build of it), sorted."""
        return sorted(f"{t}/{c}" for t, c in rated
                      if (trial := self.trial(t)) is None or trial.condition(c) is None)

    def check_ratings_belong(self, rated: tp.Iterable[tuple[str, str]], source: str | Path) -> None:
        """:class:`MushraError` if ``rated`` (trial id, condition id) pairs stored under this
        test id in ``source`` (a ratings database) name a trial or condition this test does
        not have: they were given to another build with the same test id (``--test-id``
        reused with a shared ``--db``), whose trials hold other items, so they can be
        neither counted nor resumed here."""
        foreign = self.foreign_ratings(rated)
        if foreign:
            shown = ", ".join(foreign[:3]) + (f" and {len(foreign) - 3} more" if len(foreign) > 3 else "")
            raise MushraError(f"{source} holds ratings of test {self.test_id!r} for trial/condition "
                              f"ids this build of it does not have ({shown}): they come from an "
                              "earlier build with the same test id; use another --db or --test-id")

    def systems_of_kind(self, kind: str) -> list[str]:
        """Names of the systems of one kind (e.g. :data:`HIDDEN_REFERENCE_KIND`)."""
        return [name for name, k in self.systems.items() if k == kind]

    def public(self) -> dict:
        """What the rating page may see: ids and audio URLs, no system names, and the
        conditions in an order (by random id) unrelated to the systems."""
        return {
            "test_id": self.test_id,
            "title": self.raw.get("title") or f"MUSHRA test {self.test_id}",
            "trials": [{"trial_id": t.trial_id,
                        "reference": f"/audio/{t.reference.split('/', 1)[1]}",
                        # sorted by their random ids: the order tells nothing about the system
                        "conditions": [{"id": c.id, "url": f"/audio/{c.file.split('/', 1)[1]}"}
                                       for c in sorted(t.conditions, key=lambda c: c.id)]}
                       for t in self.trials],
        }


def _field(obj: dict, key: str, kind: type | tuple[type, ...], where: str) -> tp.Any:
    """``obj[key]`` checked to be of ``kind``, else a MushraError naming ``where`` and ``key``."""
    if not isinstance(obj, dict):
        raise MushraError(f"{where}: expected an object with field {key!r}, got {type(obj).__name__}")
    if key not in obj:
        raise MushraError(f"{where}: missing field {key!r}")
    value = obj[key]
    if not isinstance(value, kind) or isinstance(value, bool):  # bool is an int in Python
        expected = " or ".join(k.__name__ for k in (kind if isinstance(kind, tuple) else (kind,)))
        raise MushraError(f"{where}: field {key!r} has the wrong type "
                          f"(expected {expected}, got {type(value).__name__})")
    return value


def _kbps(obj: dict, where: str) -> float | None:
    """``obj["actual_kbps"]``: absent/null, or a finite non-negative number (kbit/s)."""
    value = obj.get("actual_kbps")
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) \
            or not math.isfinite(value) or value < 0:
        raise MushraError(f"{where}: field 'actual_kbps' must be null or a finite number >= 0 "
                          f"(kbit/s), got {value!r}")
    return float(value)


def _positive(obj: dict, key: str, where: str) -> int:
    """``obj[key]``: an integer >= 1 (a sample rate in Hz, a channel count), else a MushraError
    naming ``where`` and ``key``."""
    value = _field(obj, key, int, where)
    if value < 1:
        raise MushraError(f"{where}: field {key!r} must be an integer >= 1, got {value!r}")
    return value


def _check_id(value: str, where: str) -> str:
    if not ID_PATTERN.match(value):
        raise MushraError(f"{where}: {value!r} is not a valid id (letters, digits, '_', '.', '-'; "
                          "at most 64 characters)")
    return value


def _check_audio(root: Path, rel: str, trial_id: str, where: str) -> str:
    """A WAV path relative to ``root`` of the form ``audio/<trial_id>/<name>.wav`` that exists."""
    parts = rel.split("/")
    if len(parts) != 3 or parts[0] != "audio" or parts[1] != trial_id or not parts[2].endswith(".wav") \
            or not ID_PATTERN.match(parts[2]):
        raise MushraError(f"{where}: audio path {rel!r} is not of the form audio/{trial_id}/NAME.wav")
    if not (root / rel).is_file():
        raise MushraError(f"{where}: audio file {root / rel} is missing")
    return rel


def load_test(test_dir: str | Path) -> MushraTest:
    """Read and check ``TEST_DIR/test.json`` (every referenced WAV file must exist).

    Raises :class:`MushraError` naming the file and the field that is wrong."""
    root = Path(test_dir)
    path = root / TEST_FILE
    if not path.is_file():
        raise MushraError(f"{path} not found: build a test first with 'opencodec mushra build'")
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise MushraError(f"{path} is not valid JSON: {exc}") from exc
    if not isinstance(raw, dict) or raw.get("format") != FORMAT:
        got = raw.get("format") if isinstance(raw, dict) else type(raw).__name__
        raise MushraError(f"{path}: expected format {FORMAT!r}, got {got!r}")
    test_id = _check_id(_field(raw, "test_id", str, str(path)), f"{path}: test_id")
    sample_rate = _positive(raw, "sample_rate", str(path))
    channels = _positive(raw, "channels", str(path))
    systems: dict[str, str] = {}
    for i, s in enumerate(_field(raw, "systems", list, str(path))):
        where = f"{path}: systems[{i}]"
        name, kind = _field(s, "name", str, where), _field(s, "kind", str, where)
        if kind not in SYSTEM_KINDS:
            raise MushraError(f"{where}: kind {kind!r} is not one of {list(SYSTEM_KINDS)}")
        if name in systems:
            raise MushraError(f"{where}: duplicate system name {name!r}")
        systems[name] = kind
    if list(systems.values()).count(HIDDEN_REFERENCE_KIND) != 1:
        raise MushraError(f"{path}: expected exactly one system of kind {HIDDEN_REFERENCE_KIND!r}")
    trials: list[Trial] = []
    for i, t in enumerate(_field(raw, "trials", list, str(path))):
        where = f"{path}: trials[{i}]"
        trial_id = _check_id(_field(t, "trial_id", str, where), f"{where}: trial_id")
        if any(x.trial_id == trial_id for x in trials):
            raise MushraError(f"{where}: duplicate trial id {trial_id!r}")
        conditions: list[Condition] = []
        for j, c in enumerate(_field(t, "conditions", list, where)):
            cw = f"{where}.conditions[{j}]"
            cid = _check_id(_field(c, "id", str, cw), f"{cw}: id")
            system = _field(c, "system", str, cw)
            if system not in systems:
                raise MushraError(f"{cw}: system {system!r} is not listed under 'systems'")
            if any(x.id == cid for x in conditions):
                raise MushraError(f"{cw}: duplicate condition id {cid!r}")
            if any(x.system == system for x in conditions):
                raise MushraError(f"{cw}: system {system!r} appears twice in the trial")
            kbps = _kbps(c, cw)
            file = _check_audio(root, _field(c, "file", str, cw), trial_id, cw)
            conditions.append(Condition(cid, system, file, kbps))
        if len(conditions) < 2:
            raise MushraError(f"{where}: a trial needs at least 2 conditions, got {len(conditions)}")
        reference = _check_audio(root, _field(t, "reference", str, where), trial_id, where)
        trials.append(Trial(trial_id, _field(t, "category", str, where), _field(t, "item_id", str, where),
                            reference, tuple(conditions)))
    if not trials:
        raise MushraError(f"{path}: the test has no trials")
    return MushraTest(root, test_id, sample_rate, channels, systems, tuple(trials), raw)
