"""Who may be heard where: the speaker/source split of the speech corpus, checked.

Every speech file of a corpus build has a *role*: ``train`` (training and its validation
hold-out), ``probe`` (the validation probe that chooses between runs) or
``eval:<category>`` (an evaluation category). :func:`check_split` refuses a build where

1. a speaker is heard in two roles (speaker keys are ``<package>:<speaker>``, or the
   speaker itself when it holds a ``:``: a person known across packages, e.g.
   ``asterisk-voice:Allison``);
2. a package feeds both the probe and an evaluation category (the probe must not be drawn
   from the places the evaluation set comes from);
3. a package feeds a *source-disjoint* evaluation category (``speech_unseen``) and also
   training or the probe.

The public evaluation set's ``clean_speech`` shares packages with training by design
(DATA.md: ktuberling ru/uk/el, tuxpaint fr are held-out speakers of training packages), so
rule 3 applies only to the categories named in ``source_disjoint``.

:func:`check_recordings` checks the files themselves, which the speaker keys cannot: one
byte-identical input in training and in the probe or an evaluation category.
"""
from __future__ import annotations

import dataclasses
import os
from collections import defaultdict
from typing import Iterable

from ..official_files import file_sha256

SOURCE_DISJOINT_EVAL = frozenset({"speech_unseen"})
#: Inputs smaller than this are not compared by :func:`check_recordings` (empty or header-only
#: files are alike without being one recording; conversion skips them as too short).
MIN_RECORDING_BYTES = 1024


class SplitError(ValueError):
    """The speech split puts a speaker or a source in two roles."""


@dataclasses.dataclass(frozen=True)
class SpeakerUse:
    """One (source, speaker) of a build and the role its audio has."""

    source: str
    package: str
    speaker: str
    role: str  # "train", "probe" or "eval:<category>"

    @property
    def speaker_key(self) -> str:
        return self.speaker if ":" in self.speaker else f"{self.package}:{self.speaker}"


def role_of(source_role: str, eval_category: str | None) -> str:
    """The split role of a source's files (``eval`` sources get ``eval:<category>``)."""
    if source_role == "eval":
        if not eval_category:
            raise SplitError("an eval source needs an eval_category")
        return f"eval:{eval_category}"
    if source_role in ("train", "probe"):
        return source_role
    raise SplitError(f"role {source_role!r} is not a speech role (train, probe, eval)")


def check_split(uses: Iterable[SpeakerUse],
                source_disjoint: frozenset[str] = SOURCE_DISJOINT_EVAL) -> dict[str, list[str]]:
    """Raise :class:`SplitError` naming every violation of the module's three rules.

    Returns ``{role: sorted speaker keys}`` for the report when the split is clean."""
    uses = list(uses)
    roles_of_speaker: dict[str, set[str]] = defaultdict(set)
    roles_of_package: dict[str, set[str]] = defaultdict(set)
    for u in uses:
        roles_of_speaker[u.speaker_key].add(u.role)
        roles_of_package[u.package].add(u.role)
    problems = [f"speaker {k} is in {sorted(r)}" for k, r in sorted(roles_of_speaker.items()) if len(r) > 1]
    for pkg, roles in sorted(roles_of_package.items()):
        evals = {r for r in roles if r.startswith("eval:")}
        if "probe" in roles and evals:
            problems.append(f"package {pkg} feeds the probe and {sorted(evals)}")
        for r in sorted(evals):
            if r.split(":", 1)[1] in source_disjoint and roles - {r}:
                problems.append(f"package {pkg} feeds {r} (source-disjoint) and {sorted(roles - {r})}")
    if problems:
        raise SplitError("speech split is not disjoint: " + "; ".join(problems))
    out: dict[str, set[str]] = defaultdict(set)
    for u in uses:
        out[u.role].add(u.speaker_key)
    return {r: sorted(v) for r, v in sorted(out.items())}


def check_recordings(files: Iterable[tuple[str, str, str]]) -> set[str]:
    """The training inputs that are the same recording as a probe or evaluation input.

    ``files``: ``(label, role, path)`` of every speech input of a build (label e.g.
    ``"<file> of <source>"``). The speaker keys of :func:`check_split` come from the source
    table; a byte-identical input file in two roles (a copy in another package, folder or
    speaker's name) is the same recording whatever they say. Returns the paths of the
    ``train`` copies (the caller drops them: the probe and evaluation keep their items);
    raises :class:`SplitError` naming them when the probe and an evaluation category (or two
    evaluation categories) share a recording, or when a training source and another select the
    same file (whatever speaker keys they give it). Only
    files whose size another file shares are hashed, and none under
    :data:`MIN_RECORDING_BYTES`."""
    by_size: dict[int, list[tuple[str, str, str]]] = defaultdict(list)
    for f in files:
        size = os.path.getsize(f[2])
        if size >= MIN_RECORDING_BYTES:  # (empty or header-only files: alike, and skipped by conversion)
            by_size[size].append(f)
    drop: set[str] = set()
    problems = []
    for same_size in by_size.values():
        if len({role for _, role, _ in same_size}) < 2:
            continue
        by_digest: dict[str, list[tuple[str, str, str]]] = defaultdict(list)
        for f in same_size:
            by_digest[file_sha256(f[2])].append(f)
        for copies in by_digest.values():
            held = sorted({(role, label) for label, role, _ in copies if role != "train"})
            held_paths = {path for _, role, path in copies if role != "train"}
            if not held:
                continue
            # a path selected by both a training and another source is one file, not a copy: refused
            # (check_split's speaker keys see it only where both sources give it the same key)
            drop.update(path for _, role, path in copies if role == "train" and path not in held_paths)
            problems += [f"{label} (train) is also {other} ({role})" for label, train_role, path in copies
                         if train_role == "train" for other, role, p in copies if p == path and role != "train"]
            problems += [f"{held[0][1]} ({held[0][0]}) and {label} ({role}) are the same recording"
                         for role, label in held[1:] if role != held[0][0]]
    if problems:
        more = f"; and {len(problems) - 3} more" if len(problems) > 3 else ""
        raise SplitError("speech split is not disjoint: " + "; ".join(sorted(problems)[:3]) + more
                         + " (byte-identical inputs)")
    return drop
