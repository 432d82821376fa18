"""Corpus presets: which sources (and how many hours of each) and how many evaluation items
each preset (``tiny``, ``small``, ``wide``, ``full``) builds.

The sources themselves: :data:`opencodec.data.sources.SOURCES`.
"""
from __future__ import annotations

import dataclasses
from typing import Optional

from .sources import SOURCES

EVAL_CATEGORIES = ("clean_speech", "noisy_speech", "music", "general")
UNSEEN_CATEGORIES = ("speech_unseen", "noisy_speech_unseen")  # issue 19, presets that have them


@dataclasses.dataclass(frozen=True)
class Preset:
    """Which sources a preset uses.

    Attributes:
        sources: source name -> cap in hours of converted audio (``None`` = everything).
        eval_max_items: evaluation category -> maximum number of items (``None`` = all);
            items are a prefix of one seeded order, so a smaller preset's evaluation items
            are a subset of a larger preset's ones (same seed/rate).
        valid_fraction: fraction of each training source's hours held out (whole groups).
        items_per_speaker: evaluation category (or ``probe``) -> at most this many items
            per speaker group, so one long source does not fill the category.
    """

    sources: dict[str, Optional[float]]
    eval_max_items: dict[str, Optional[int]]
    valid_fraction: float = 0.05
    items_per_speaker: dict[str, int] = dataclasses.field(default_factory=dict)


_EVAL_ALL = {"tuxpaint_fr": None, "ktuberling_eval": None, "asterisk_fr": None,
             "singularity_music": None, "ufoai_general": None, "ufoai_noise": None}

_UNSEEN = {"zeroad_speech": None, "menardi_speech": None, "redeclipse_speech": None,
           "freedroid_speech": None}
_PROBE = {"hedgewars_probe": None}
_PER_SPEAKER = {"speech_unseen": 24, "noisy_speech_unseen": 24, "probe": 8}
_TRAIN_SPEECH = [n for n, s in SOURCES.items() if s.role == "train" and s.category == "speech"
                 and not n.startswith("tiny_")]

PRESETS: dict[str, Preset] = {
    "tiny": Preset(
        {"tiny_alsa_speech": None, "tiny_alsa_noise": None, "tiny_fd_general": None,
         "tiny_fd_speech_eval": None, "tiny_fd_general_eval": None, "tiny_alsa_noise_eval": None},
        {c: None for c in EVAL_CATEGORIES}, valid_fraction=0.2),
    "small": Preset(
        {"ktuberling_speech": 0.3, "fillets_speech": 0.45, "asterisk_en": 0.42,
         "wesnoth_music": 1.1, "megaglest_general": None, "wesnoth_general": 0.15, "megaglest_noise": None, **_EVAL_ALL},
        {"clean_speech": 120, "noisy_speech": 120, "music": 60, "general": None}),
    # issue 19: every released training speech source in full, small's music and general,
    # the public evaluation set, the speech_unseen evaluation and the speech probe
    "wide": Preset(
        {**{n: None for n in _TRAIN_SPEECH}, "wesnoth_music": 1.1, "megaglest_general": None,
         "wesnoth_general": 0.15, "megaglest_noise": None, **_EVAL_ALL, **_UNSEEN, **_PROBE},
        {"clean_speech": 120, "noisy_speech": 120, "music": 60, "general": None,
         "speech_unseen": None, "noisy_speech_unseen": None}, items_per_speaker=_PER_SPEAKER),
    "full": Preset(
        {**{n: None for n, s in SOURCES.items() if s.role in ("train", "train_noise")
            and not n.startswith("tiny_")}, **_EVAL_ALL, **_UNSEEN, **_PROBE},
        {c: None for c in (*EVAL_CATEGORIES, *UNSEEN_CATEGORIES)}, items_per_speaker=_PER_SPEAKER),
}
