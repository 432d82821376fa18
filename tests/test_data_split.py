"""The speech split of issue 19: speaker/source-disjoint roles, the released sources'
filters, and a build of a fake tree with a probe and a speech_unseen category."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from opencodec.data import corpus
from opencodec.data.corpus import Source, _rx
from opencodec.data.sources import _asterisk, hedgewars
from opencodec.data.split import SpeakerUse, SplitError, check_split, role_of
from corpus_helpers import fake_corpus, tone  # tests/ is on sys.path (conftest.py)


def _use(source: str, package: str, speaker: str, role: str) -> SpeakerUse:
    return SpeakerUse(source, package, speaker, role)


def test_check_split_accepts_a_disjoint_split() -> None:
    uses = [_use("a", "pa", "s1", "train"), _use("a", "pa", "s2", "train"),
            _use("b", "pb", "s3", "probe"), _use("c", "pc", "s4", "eval:speech_unseen"),
            _use("d", "pa", "s5", "eval:clean_speech")]  # public set: same package, other speaker
    assert check_split(uses) == {"eval:clean_speech": ["pa:s5"], "eval:speech_unseen": ["pc:s4"],
                                 "probe": ["pb:s3"], "train": ["pa:s1", "pa:s2"]}


@pytest.mark.parametrize("bad, message", [
    (_use("x", "pa", "s1", "probe"), "speaker pa:s1 is in ['probe', 'train']"),
    (_use("x", "pb", "s9", "eval:clean_speech"), "package pb feeds the probe"),
    (_use("x", "pc", "s9", "train"), "package pc feeds eval:speech_unseen (source-disjoint)"),
    (_use("x", "pa", "s9", "eval:speech_unseen"), "package pa feeds eval:speech_unseen"),
])
def test_check_split_names_each_violation(bad: SpeakerUse, message: str) -> None:
    uses = [_use("a", "pa", "s1", "train"), _use("b", "pb", "s3", "probe"),
            _use("c", "pc", "s4", "eval:speech_unseen"), bad]
    with pytest.raises(SplitError, match=re.escape(message)):
        check_split(uses)


def test_role_of() -> None:
    assert role_of("eval", "speech_unseen") == "eval:speech_unseen"
    assert role_of("probe", None) == "probe"
    with pytest.raises(SplitError):
        role_of("train_noise", None)


# A synthetic file list of every speech package the built-in presets use, shaped like the
# real packages' paths (no Debian data needed).
_FILES = {
    "tuxpaint-stamps-default": [f"usr/share/tuxpaint/stamps/a/cat_desc_{x}.ogg"
                                for x in ("ru", "bg", "ro", "da", "lt", "nl", "fr", "de")],
    "ktuberling-data": [f"usr/share/ktuberling/sounds/{x}/apple.ogg"
                        for x in ("de", "en", "ru", "uk", "el", "sr", "sr@latin", "sr@ijekavian")],
    "hedgewars-data": [f"usr/share/games/hedgewars/Data/Sounds/voices/{x}/Hello.ogg"
                       for x in ("British", "Classic", "Default", "Default_es", "Default_pl", "Default_ru",
                                 "Default_uk", "Mobster", "Pirate", "Russian", "Russian_pl", "Surfer")],
    "fillets-ng-data-cs": ["usr/share/games/fillets-ng/sound/airplane/cs/let-m-oko.ogg"],
    "fillets-ng-data-nl": [f"usr/share/games/fillets-ng/sound/{lvl}/nl/x-{c}-y.ogg"
                           for lvl in ("airplane", "alibaba") for c in ("m", "v")],
    "0ad-data": ["_unzipped/public.zip/audio/voice/greek/civ/civ_female_attack_1.ogg",
                 "_unzipped/public.zip/audio/voice/latin/civ/civ_male_build_1.ogg",
                 "_unzipped/public.zip/audio/voice/global/civ_dog_bark.ogg",
                 "_unzipped/public.zip/audio/actor/human/death/death_1.ogg"],
    "asterisk-prompt-it-menardi-wav": ["usr/share/asterisk/sounds/it_IT_f_Menardi/vm-intro.wav",
                                       "usr/share/asterisk/sounds/it_IT_f_Menardi/digits/1.wav"],
    "redeclipse-data": [f"usr/share/games/redeclipse/data/sounds/{x}.ogg"
                        for x in ("announcer/fight", "voice/yes", "voice/yes2", "player/pain", "theme")],
    "freedroidrpg-data": ["usr/share/freedroidrpg/data/sound/effects/tux_ingame_comments/CantRepairThat.ogg",
                          "usr/share/freedroidrpg/data/sound/effects/bot_sounds/voice_samples/1.ogg"],
    **{f"asterisk-core-sounds-{x[:2]}-g722": [f"usr/share/asterisk/sounds/{x}/vm-intro.g722"]
       for x in ("en_US_f_Allison", "es_MX_f_Allison", "it_IT_m_Carlo", "ru_RU_f_IvrvoiceRU", "fr_CA_f_June")},
}


def _uses(source_names, extra: tuple[Source, ...] = ()) -> list[SpeakerUse]:
    out = []
    for src in [corpus.SOURCES[n] for n in source_names] + list(extra):
        name = src.name
        if src.category != "speech":
            continue
        for rel in _FILES[src.package]:
            g = src.select(rel)
            if g is not None:
                out.append(SpeakerUse(name, src.package, src.speaker(g), role_of(src.role, src.eval_category)))
    return out


@pytest.mark.parametrize("preset", ["small", "wide", "full"])
def test_builtin_presets_split_cleanly(preset: str) -> None:
    roles = check_split(_uses(corpus.PRESETS[preset].sources))
    if preset != "small":
        assert roles["probe"] == ["hedgewars-data:Default_es", "hedgewars-data:polish",
                                  "hedgewars-data:russian"]
        assert roles["eval:speech_unseen"] == [
            "0ad-data:greek_female", "0ad-data:latin_male", "asterisk-prompt-it-menardi-wav:paola_dal_zot",
            "freedroidrpg-data:tux", "redeclipse-data:announcer", "redeclipse-data:voice"]
        assert "fillets-ng-data-nl:dutch_cast" in roles["train"]
        assert "asterisk-voice:Allison" in roles["train"] and "hedgewars-data:Pirate" in roles["train"]


def test_one_voice_across_packages_is_one_speaker() -> None:
    # Allison speaks the English and the Spanish Asterisk packs: the Spanish one cannot be
    # the probe while the English one trains
    assert corpus.SOURCES["asterisk_es"].speaker("es_MX_f_Allison/./vm") == "asterisk-voice:Allison"
    probe_es = _asterisk("es", "probe", name="asterisk_es_probe")
    names = [n for n in corpus.PRESETS["wide"].sources if n != "asterisk_es"]
    with pytest.raises(SplitError, match="speaker asterisk-voice:Allison is in"):
        check_split(_uses(names, (probe_es,)))
    # a hedgewars probe pack put back in training is refused too
    with pytest.raises(SplitError, match="speaker hedgewars-data:polish"):
        check_split(_uses(corpus.PRESETS["wide"].sources, (hedgewars("x", "train", lambda p: True),)))


def test_released_source_filters() -> None:
    s = corpus.SOURCES
    zero = [s["zeroad_speech"].select(r) for r in _FILES["0ad-data"]]
    assert zero == ["greek_female", "latin_male", None, None]  # no dog, no death cries
    red = [s["redeclipse_speech"].select(r) for r in _FILES["redeclipse-data"]]
    assert red == ["announcer", "voice", "voice", None, None]
    assert [s["freedroid_speech"].select(r) for r in _FILES["freedroidrpg-data"]] == ["tux", None]
    hw = _FILES["hedgewars-data"]
    train = {s["hedgewars_speech"].select(r) for r in hw} - {None}
    probe = {s["hedgewars_probe"].select(r) for r in hw} - {None}
    assert probe == {"Default_es", "Default_pl", "Russian_pl", "Default_ru", "Russian"}
    assert train.isdisjoint(probe) and train.isdisjoint({"British", "Mobster", "Default_uk"})
    assert {s["ktuberling_speech"].speaker(g) for g in ("sr", "sr@latin")} == {"sr"}


def test_build_writes_unseen_eval_and_probe(tmp_path: Path) -> None:
    # unseen speakers, 40 s each: the per-speaker cap of 2 items applies
    sources, preset, roots = fake_corpus(tmp_path / "src", unseen_items=8, unseen_seconds=5.0, probe_items=4)
    out = tmp_path / "out"
    summary = corpus.build("fake", out, sample_rate=16000, seed=1, workers=1, sources=sources,
                           presets={"fake": preset}, roots=roots)
    man = out / "fake_16k" / "manifests"
    unseen = corpus.read_jsonl(man / "eval_speech_unseen.jsonl")
    noisy = corpus.read_jsonl(man / "eval_noisy_speech_unseen.jsonl")
    assert sorted(r["speaker"] for r in unseen) == ["un/u0", "un/u0", "un/u1", "un/u1"]
    assert [r["item_id"].split("_snr")[0] for r in noisy] == [r["item_id"] for r in unseen]
    assert all(r["category"] == "noisy_speech_unseen" and r["snr_db"] in (0, 5, 10, 15) for r in noisy)
    probe = corpus.read_jsonl(out / "fake_16k" / "probe" / "eval_clean_speech.jsonl")
    assert probe and {r["source"] for r in probe} == {"pr"}
    assert all((out / "fake_16k" / "probe" / r["path"]).exists() for r in probe)
    assert all(5.0 - 0.01 <= r["duration"] <= 10.0 + 0.01 for r in probe + unseen)
    train = corpus.read_jsonl(man / "train.jsonl") + corpus.read_jsonl(man / "valid.jsonl")
    assert {r["source"] for r in train} == {"tr"}
    assert summary["speakers"] == {"eval:speech_unseen": 2, "probe": 1, "train": 3}
    # the same package in training and in the unseen evaluation is refused before any manifest
    bad = dict(sources, un=Source("un", "tr", "speech", "eval",
                                  _rx(r"unseen/([^/]+)/", lambda m: m.group(1)), "speech_unseen"))
    tone(roots["tr"] / "unseen/u9/c0.wav", 6.0, 700.0)
    with pytest.raises(SplitError, match="package tr feeds eval:speech_unseen"):
        corpus.build("fake", tmp_path / "out2", sample_rate=16000, seed=1, workers=1, sources=bad,
                     presets={"fake": preset}, roots={**roots, "un": roots["tr"]})
    assert not list((tmp_path / "out2").rglob("*.jsonl"))
