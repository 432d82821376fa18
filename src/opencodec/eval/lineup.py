"""The systems of a run: each model at each requested bandwidth it supports (the models are
loaded once, in this process, and two models with one name but other weights are told apart
by their weights hash), then each baseline, checked at the scoring rate and channels.
"""

from __future__ import annotations

import typing as tp

from ..bandwidth import exact_kbps, check_bandwidth, format_kbps
from ..errors import UnsupportedBandwidthError, advice_for_entropy_model
from .console import warn
from .scoring import init_worker, loaded_models
from .systems import EvalReportError, SystemSpec, neural_system_name, parse_baseline

__all__ = ["Lineup", "build_systems", "neural_systems", "baseline_systems", "check_baselines",
           "check_bandwidths_once",
           "model_labels", "supported_bandwidths", "kbps_list"]


class Lineup(tp.NamedTuple):
    """The systems of a run, its scoring rate and channels and the notes on the bandwidths
    a model skips (for ``report.md``)."""

    systems: list[SystemSpec]
    sample_rate: int
    channels: int
    bandwidth_notes: list[str]


def kbps_list(bandwidths: tp.Iterable[float], exact: bool = False) -> str:
    """``[1.5, 3.0]`` -> ``'1.5, 3'``; with ``exact``, each with every digit it needs
    (``6.0000001``, which would read ``6``: a requested bandwidth a model does not support must
    not read as one it does)."""
    return ", ".join((exact_kbps if exact else format_kbps)(float(b)) for b in bandwidths)


def supported_bandwidths() -> str:
    """``'NAME supports 1.5, 3, 6, 12; ...'`` for the models loaded in this process."""
    return "; ".join(f"{m.name} supports {kbps_list(m.target_bandwidths)}"
                     for m in loaded_models().values())


def model_labels(models: tp.Sequence[str], hashes: dict[str, str]) -> dict[str, str]:
    """``{spec: label}``: each loaded model's name, with ``#`` and its weights hash's first 8
    digits when another model of ``models`` has the same name but other weights (two
    checkpoints of one config), so that every system name is unique."""
    loaded = loaded_models()
    by_name: dict[str, set[str]] = {}
    for spec in models:
        by_name.setdefault(loaded[spec].name, set()).add(hashes[spec])
    labels = {}
    for spec in models:
        name = loaded[spec].name
        labels[spec] = name if len(by_name[name]) == 1 else f"{name}#{hashes[spec][:8]}"
    return labels


#: What ``opencodec eval`` advises for an entropy model (weights or a train-lm checkpoint)
#: given to ``--models``, in place of the loader's advice (``--lm-model``, an option eval
#: does not have).
EVAL_LM_ADVICE = "opencodec eval scores codecs only; pass a codec's name or weights to --models"


def _usable_bandwidths(model: tp.Any, bandwidths: tp.Sequence[float] | None
                       ) -> tuple[list[float], list[float]]:
    """``(usable, skipped)``: the requested ``bandwidths`` (the model's own without them)
    the model supports, as it names them, and those it does not support."""
    if not bandwidths:
        return list(model.target_bandwidths), []
    usable, skipped = [], []
    for b in bandwidths:
        try:
            usable.append(check_bandwidth(b, model.target_bandwidths, model.name))
        except UnsupportedBandwidthError:
            skipped.append(b)
    return usable, skipped


def neural_systems(models: tp.Sequence[str], bandwidths: tp.Sequence[float] | None
                   ) -> tuple[list[SystemSpec], tuple[int, int] | None, list[str]]:
    """Load ``models`` (in this process, raising ``ModelLoadError`` for a bad name or missing
    weights) and return their systems, one per requested bandwidth the model supports (each
    model's own bandwidths without ``bandwidths``), the models' common (sample rate,
    channels) (``None`` without models) and a note per model that skips a requested
    bandwidth it does not support (also printed as a warning, even with ``-q``)."""
    from ..identity import model_hash

    if not models:
        return [], None, []
    with advice_for_entropy_model(EVAL_LM_ADVICE):  # an entropy model given to --models
        init_worker(tuple(models), ())
    loaded = loaded_models()
    hashes = {spec: model_hash(loaded[spec]) for spec in models}
    labels = model_labels(models, hashes)
    systems: list[SystemSpec] = []
    notes: list[str] = []
    rates = set()
    for spec in models:
        m = loaded[spec]
        rates.add((m.sample_rate, m.channels))
        bws, skipped = _usable_bandwidths(m, bandwidths)
        if skipped:
            notes.append(f"{labels[spec]} does not support {kbps_list(skipped, exact=True)} kbps "
                         f"(supports {kbps_list(m.target_bandwidths)}); skipped")
            warn(notes[-1])
        for b in bws:
            systems.append(SystemSpec(neural_system_name(labels[spec], b), labels[spec], "neural",
                                      float(b), model=spec, weights=hashes[spec]))
    if len(rates) > 1:
        raise EvalReportError(f"models disagree on sample rate/channels: {sorted(rates)}")
    return systems, rates.pop(), notes


def check_baselines(baselines: tp.Sequence[str], sample_rate: int, channels: int) -> None:
    """Code 0.1 s of silence with each baseline at the scoring rate and channels, so that a
    baseline its encoder cannot run there fails now with one line, not on every item: the
    round trip refuses, naming the allowed values, a bitrate the encoder would not code
    there (:func:`opencodec.eval.baselines.check_bitrate_for`: Opus at most 256 kbit/s per
    channel, MP3 LAME's bitrates of the coding rate's MPEG version)."""
    import numpy as np

    from .baselines import BaselineError

    silence = np.zeros((channels, max(1, sample_rate // 10)), dtype=np.float32)
    for spec in baselines:
        try:
            parse_baseline(spec).roundtrip(silence, sample_rate)
        except BaselineError as exc:
            raise EvalReportError(f"baseline {spec!r} cannot code {sample_rate} Hz, {channels} "
                                  f"channel(s): {exc}") from None
        except Exception as exc:  # noqa: BLE001 - the encoder's own refusal (PyAV errors)
            raise EvalReportError(f"baseline {spec!r} cannot code {sample_rate} Hz, {channels} "
                                  f"channel(s): {type(exc).__name__}: {exc}") from None


def check_bandwidths_once(bandwidths: tp.Sequence[float] | None) -> None:
    """``EvalReportError`` naming a bandwidth given twice (``--bandwidths 6.0 6``)."""
    given = [format_kbps(float(b)) for b in bandwidths or []]
    twice = sorted({b for b in given if given.count(b) > 1}, key=float)
    if twice:
        raise EvalReportError(f"bandwidth(s) {', '.join(twice)} kbps given more than once "
                              "(--bandwidths)")


def baseline_systems(baselines: tp.Sequence[str]) -> list[SystemSpec]:
    """One system per baseline spec (``opus12`` -> ``opus-12kbps`` of family ``opus``)."""
    systems = []
    for b in baselines:
        c = parse_baseline(b)
        systems.append(SystemSpec(c.name, c.name.split("-")[0], "baseline", float(c.nominal_kbps),
                                  baseline=b))
    return systems


def build_systems(models: tp.Sequence[str], bandwidths: tp.Sequence[float] | None,
                  baselines: tp.Sequence[str], sample_rate: int, channels: int) -> Lineup:
    """The systems of a run: :func:`neural_systems` (loading the models now, so that a bad
    name fails before any output), then the baselines, checked at the scoring rate and
    channels: the models' when there are models, else ``sample_rate`` and ``channels``.
    ``EvalReportError`` when there is nothing to evaluate or two systems share a name."""
    check_bandwidths_once(bandwidths)
    systems, rate, notes = neural_systems(models, bandwidths)
    if rate is not None:
        sample_rate, channels = rate
    if models and not systems and not baselines:
        raise EvalReportError(f"nothing to evaluate: no model supports the requested bandwidths "
                              f"{kbps_list(bandwidths or [], exact=True)}; {supported_bandwidths()}")
    check_baselines(baselines, sample_rate, channels)
    systems += baseline_systems(baselines)
    names = [s.name for s in systems]
    if len(set(names)) != len(names):
        twice = sorted({n for n in names if names.count(n) > 1})
        raise EvalReportError(f"duplicate systems {twice}: the same model or baseline is given twice")
    if not systems:
        raise EvalReportError("nothing to evaluate: give --models and/or --baselines")
    return Lineup(systems, sample_rate, channels, notes)
