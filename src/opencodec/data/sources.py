"""What a corpus source is (one subset of one Debian package) and the speech sources that
issue 19 released (``/work/shared/docs/DATA.md``, "More speech, released for use").

A :class:`Source` selects files of an extracted package by path and gives each file a
*group* (the unit the validation split and evaluation items never cut across) and a
*speaker* (the unit :func:`opencodec.data.split.check_split` keeps in one role).

Survey of the released packages (durations read with ``soundfile``; "voiced" is the share of
active 40 ms frames whose normalised autocorrelation peaks above 0.5 at 70-400 Hz; F0 spread
is the median over files of the within-file standard deviation of log-F0, in semitones):

=============================  ======================================  ========  ======  ==========
package / folder               what (from names and folders)           minutes   voiced  F0 spread
=============================  ======================================  ========  ======  ==========
fillets-ng-data-nl             Dutch dialogue: fish ``m`` 35 min,          91      --      3.3
                               ``v`` 38 min, other characters 17 min
0ad-data voice/<lang>/civ      Greek, Latin, Napatan, Persian unit       3.6     0.77    2.3-2.6
                               voices, female + male
0ad-data actor/human/death     death cries (not speech)                  1.9     0.62     --
asterisk-prompt-it-menardi     Italian prompts, 8 kHz, one voice        24.8      --      --
freedroidrpg tux_ingame_...    Tux's spoken comments                     0.3     0.62    2.2
freedroidrpg bot voice_samples robot voices, monotone (left out)         1.9     0.63    1.6
redeclipse announcer, voice    English announcer + taunts                1.2     0.42    5.4-5.9
redeclipse player/*            pain, jumps, footsteps (not speech)       0.2     0.24     --
widelands sound/*              work sounds, animals, horns: no speech     --      --      --
=============================  ======================================  ========  ======  ==========

Speakers (best estimates): 0 A.D.'s credits (``gui/credits/texts/audio.json``) name one
voice for Greek and two (a woman and a man) for Latin, Napatan and Persian, so a speaker is
``<language>_<gender>``; Menardi's copyright names the voice, Paola Dal Zot (folder
``it_IT_f_Menardi``); Red Eclipse has an announcer and one taunt voice (``x`` and ``x2``
takes have the same F0 range); Tux is one voice. Hedgewars' Polish packs (``Default_pl``,
``Russian_pl``) and Russian packs (``Default_ru``, ``Russian``) are each taken as one
speaker; ktuberling's Serbian variants (``sr@latin`` ...) are one speaker. The Asterisk
core-sounds voices are named by their folders: Allison (en and es), June (fr), Carlo (it),
IvrvoiceRU (ru); Menardi's Paola Dal Zot is none of them.
"""
from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Callable, Optional

AUDIO_EXTS = (".ogg", ".oga", ".opus", ".flac", ".wav", ".mp3", ".aiff", ".aif", ".g722", ".mid")

Selector = Callable[[str], Optional[str]]
"""Maps a file path relative to the package extraction root to a group key (speaker /
track / kit ...) or ``None`` when the file is not part of the source."""


def _same(group: str) -> str:
    return group


@dataclasses.dataclass(frozen=True)
class Source:
    """One subset of one Debian package.

    Attributes:
        name: unique id, used as the output folder name and in the manifests' ``source``.
        package: Debian package name.
        category: ``speech``, ``music``, ``general`` or ``noise``.
        role: ``train`` (train/valid), ``eval`` (evaluation set), ``probe`` (the validation
            probe that chooses between runs), ``train_noise`` (noise for on-the-fly noisy
            speech) or ``eval_noise`` (noise for the noisy evaluation categories).
        select: path filter + grouping function (see :data:`Selector`).
        eval_category: for ``role == "eval"``, the evaluation category of the items.
        speaker: group key -> speaker key (within the package); default: the group.
    """

    name: str
    package: str
    category: str
    role: str
    select: Selector
    eval_category: Optional[str] = None
    speaker: Callable[[str], str] = _same


def _rx(pattern: str, group: Callable[[re.Match], Optional[str]]) -> Selector:
    rx = re.compile(pattern)

    def sel(rel: str) -> Optional[str]:
        m = rx.search(rel)
        if m is None or not rel.lower().endswith(AUDIO_EXTS):
            return None
        return group(m)

    return sel


def _stem_group(name: str) -> str:
    """Group key for sound-effect files: stem without trailing digits / -N / _N."""
    stem = Path(name).stem.lower()
    return re.sub(r"[-_ ]*\d+[a-z]?$", "", stem) or stem


# ---- issue 19: the released speech and how it is split ---------------------------------

HEDGEWARS_EXCLUDED = ("British", "Mobster", "Default_uk")  # DATA.md: reserved voice packs
HEDGEWARS_PROBE = ("Default_es", "Default_pl", "Russian_pl", "Default_ru", "Russian")  # not trained on
_HEDGEWARS_SPEAKER = {"Default_pl": "polish", "Russian_pl": "polish",
                      "Default_ru": "russian", "Russian": "russian"}


def hedgewars_speaker(pack: str) -> str:
    """Speaker key of a Hedgewars voice pack (packs voiced in one language by one person
    share a key)."""
    return _HEDGEWARS_SPEAKER.get(pack, pack)


def asterisk_speaker(group: str) -> str:
    """Speaker key of an Asterisk core-sounds prompt group ``<lang>_<REGION>_<f|m>_<Voice>/...``:
    the voice's name, package-independent (``asterisk-voice:Allison`` speaks both the
    English and the Spanish pack)."""
    return "asterisk-voice:" + group.split("/", 1)[0].rsplit("_", 1)[-1]


def ktuberling_speaker(language: str) -> str:
    """Speaker key of a ktuberling language folder (``sr@latin`` -> ``sr``)."""
    return language.split("@")[0]


def hedgewars(name: str, role: str, packs: Callable[[str], bool]) -> Source:
    """Hedgewars voice packs ``packs`` (never the reserved ones) as one source."""
    return Source(name, "hedgewars-data", "speech", role,
                  _rx(r"Sounds/voices/([^/]+)/[^/]+$",
                      lambda m: m.group(1) if m.group(1) not in HEDGEWARS_EXCLUDED
                      and packs(m.group(1)) else None),
                  speaker=hedgewars_speaker)


def _fillets_nl_speaker(level: str) -> str:
    # The Dutch cast (two fish plus minor characters) voices every level: one key, so the
    # whole package can only ever have one role.
    return "dutch_cast"


WIDE_SPEECH_SOURCES: list[Source] = [
    # training: Dutch dialogue; groups (levels) only drive the train/valid hold-out
    Source("fillets_nl_speech", "fillets-ng-data-nl", "speech", "train",
           _rx(r"fillets-ng/sound/(.+)/nl/[^/]+\.ogg$", lambda m: m.group(1)),
           speaker=_fillets_nl_speaker),
    # validation probe: speakers that no training or evaluation source has
    hedgewars("hedgewars_probe", "probe", lambda pack: pack in HEDGEWARS_PROBE),
    # speech_unseen evaluation: packages that no training or probe source uses
    Source("zeroad_speech", "0ad-data", "speech", "eval",
           _rx(r"audio/voice/(greek|latin|napatan|persian)/civ/civ_(female|male)_[^/]+\.ogg$",
               lambda m: f"{m.group(1)}_{m.group(2)}"), "speech_unseen"),
    Source("menardi_speech", "asterisk-prompt-it-menardi-wav", "speech", "eval",
           _rx(r"sounds/it_IT_f_Menardi/.+\.wav$", lambda m: "paola_dal_zot"), "speech_unseen"),
    Source("redeclipse_speech", "redeclipse-data", "speech", "eval",
           _rx(r"redeclipse/data/sounds/(announcer|voice)/[^/]+\.ogg$", lambda m: m.group(1)),
           "speech_unseen"),
    Source("freedroid_speech", "freedroidrpg-data", "speech", "eval",
           _rx(r"sound/effects/tux_ingame_comments/[^/]+\.ogg$", lambda m: "tux"), "speech_unseen"),
]


# ---- the table of every source the presets use --------------------------------------

def _asterisk(lang: str, role: str, eval_category: Optional[str] = None,
              name: Optional[str] = None) -> Source:
    # group = speaker folder + sub-folder + first token of the prompt name (file groups:
    # every pack is one speaker, so valid holds out whole prompt families).
    def grp(m: re.Match) -> str:
        rest = m.group(2)
        first = re.split(r"[-_]", Path(rest).name)[0]
        return f"{m.group(1)}/{Path(rest).parent}/{first}"

    return Source(name or f"asterisk_{lang}", f"asterisk-core-sounds-{lang}-g722", "speech", role,
                  _rx(r"sounds/([^/]+)/(.+)\.g722$", grp), eval_category, speaker=asterisk_speaker)


def _megaglest_is_noise(rel: str) -> bool:
    return bool(re.search(r"/tilesets/[^/]+/sounds/|/data/core/water_sounds/", rel))


def _megaglest_general(rel: str) -> Optional[str]:
    if not rel.endswith(".wav") or _megaglest_is_noise(rel):
        return None
    m = re.search(r"megaglest/(.*)/[^/]+$", rel)
    if m is None:
        return None
    parts = m.group(1).split("/")
    # techs/megapack/factions/<faction>/units/<unit>/... -> <faction>/units/<unit>
    if "factions" in parts:
        i = parts.index("factions")
        return "/".join(parts[i + 1:i + 4])
    return "/".join(parts[:4])


SOURCES: dict[str, Source] = {s.name: s for s in [
    # ---- training: speech
    Source("tuxpaint_speech", "tuxpaint-stamps-default", "speech", "train",
           _rx(r"_desc_(ru|bg|ro|da|lt|nl)\.ogg$", lambda m: m.group(1))),  # speaker: language
    # group = speaker = language, the Serbian variants (sr, sr@latin ...) one group: the
    # train/valid split never separates them (their files are the same recordings)
    Source("ktuberling_speech", "ktuberling-data", "speech", "train",
           _rx(r"ktuberling/sounds/([^/]+)/[^/]+$",
               lambda m: None if m.group(1) in ("ru", "uk", "el") else ktuberling_speaker(m.group(1))),
           speaker=ktuberling_speaker),
    hedgewars("hedgewars_speech", "train", lambda pack: pack not in HEDGEWARS_PROBE),
    Source("fillets_speech", "fillets-ng-data-cs", "speech", "train",
           _rx(r"fillets-ng/sound/(.+)/cs/[^/]+\.ogg$", lambda m: m.group(1)),
           speaker=lambda level: "czech_cast"),  # one cast voices every level
    _asterisk("en", "train"), _asterisk("es", "train"), _asterisk("it", "train"),
    _asterisk("ru", "train"),
    # ---- training: music
    Source("wesnoth_music", "wesnoth-1.16-music", "music", "train",
           _rx(r"/music/(.+)\.ogg$", lambda m: m.group(1))),
    Source("ufoai_music", "ufoai-music", "music", "train",
           _rx(r"_unzipped/.*/([^/]+)\.ogg$", lambda m: m.group(1))),
    Source("freedoom_music", "freedoom", "music", "train",
           _rx(r"_wadmidi/([^/]+/[^/]+)\.mid$", lambda m: m.group(1))),
    # ---- training: general
    Source("megaglest_general", "megaglest-data", "general", "train", _megaglest_general),
    Source("hydrogen_general", "hydrogen-drumkits", "general", "train",
           _rx(r"drumkits/([^/]+)/", lambda m: m.group(1))),
    Source("wesnoth_general", "wesnoth-1.16-data", "general", "train",
           _rx(r"/sounds/(?:.*/)?([^/]+)$", lambda m: _stem_group(m.group(1)))),
    # ---- training: noise for on-the-fly noisy speech
    Source("megaglest_noise", "megaglest-data", "noise", "train_noise",
           lambda rel: (re.search(r"/(tilesets/[^/]+|water_sounds)/", rel).group(1)  # type: ignore[union-attr]
                        if rel.endswith(".wav") and _megaglest_is_noise(rel) else None)),
    # ---- public evaluation set
    # speaker keys as the training sources of the same packages give them (the language),
    # so check_split sees one person as one key whichever source reads the file
    Source("tuxpaint_fr", "tuxpaint-stamps-default", "speech", "eval",
           _rx(r"_desc_(fr)\.ogg$", lambda m: m.group(1)), "clean_speech"),
    Source("ktuberling_eval", "ktuberling-data", "speech", "eval",
           _rx(r"ktuberling/sounds/(ru|uk|el)/[^/]+$", lambda m: m.group(1)), "clean_speech",
           speaker=ktuberling_speaker),
    # ---- issue 19: released speech (training, probe, speech_unseen evaluation)
    *WIDE_SPEECH_SOURCES,
    _asterisk("fr", "eval", "clean_speech"),
    Source("singularity_music", "singularity-music", "music", "eval",
           _rx(r"/([^/]+)\.ogg$", lambda m: m.group(1)), "music"),
    Source("ufoai_general", "ufoai-sound", "general", "eval",
           _rx(r"_unzipped/[^/]+/sound/(?!ambience/)([^/]+)/", lambda m: m.group(1)), "general"),
    Source("ufoai_noise", "ufoai-sound", "noise", "eval_noise",
           _rx(r"_unzipped/[^/]+/sound/ambience/(?!tv_news|radiomessage)([^/]+)$",
               lambda m: _stem_group(m.group(1)))),
    # ---- tiny (CI only): alsa-utils + sound-theme-freedesktop
    Source("tiny_alsa_speech", "alsa-utils", "speech", "train",
           _rx(r"sounds/alsa/(?!Noise)([^/]+)\.wav$", lambda m: m.group(1))),
    Source("tiny_alsa_noise", "alsa-utils", "noise", "train_noise",
           _rx(r"sounds/alsa/(Noise)\.wav$", lambda m: m.group(1))),
    Source("tiny_fd_general", "sound-theme-freedesktop", "general", "train",
           _rx(r"stereo/(?!audio-channel|alarm|phone|service)([^/]+)\.oga$",
               lambda m: _stem_group(m.group(1).split("-")[0]))),
    Source("tiny_fd_speech_eval", "sound-theme-freedesktop", "speech", "eval",
           _rx(r"stereo/(audio-channel)-[^/]+\.oga$", lambda m: m.group(1)), "clean_speech"),
    Source("tiny_fd_general_eval", "sound-theme-freedesktop", "general", "eval",
           _rx(r"stereo/(alarm|phone|service)[^/]*\.oga$", lambda m: "fd_eval"), "general"),
    Source("tiny_alsa_noise_eval", "alsa-utils", "noise", "eval_noise",
           _rx(r"sounds/alsa/(Noise)\.wav$", lambda m: m.group(1))),
]}
