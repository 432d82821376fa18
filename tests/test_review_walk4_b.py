"""Review of the walk-4 eval and entropy-model fixes (/tmp/walk/r6.md): the wrong-model
error of a deterministic file no longer blames "another export of its training run" for an
entropy model that is only rounded (float16/bfloat16) or that carries a release's name,
``summarize(rows, metrics)`` still counts the codec failures among the rows it is given, and
a report scored below 16 kHz says that its audio is narrow-band."""

from __future__ import annotations

import io

import pytest
import torch

from opencodec.errors import BitstreamError


# ------------------------------------------------------------------------------------------
# 1. The wrong-entropy-model error says why a model of the same name has other weights
# ------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def bundled() -> tuple:
    """The bundled codec and entropy model, 0.5 s of noise coded in the deterministic format
    at 1.5 kbps with the entropy model in float32, and the same coded with a float16 copy
    under the release's name (as writers before this review wrote it), and that copy."""
    from opencodec.bitstream import body
    from opencodec.compress import compress
    from opencodec.pretrained import load_lm_model, load_model

    torch.manual_seed(0)
    model = load_model("opencodec_24khz")
    lm = load_lm_model("opencodec_lm_24khz", codec=model)
    wav = 0.1 * torch.randn(1, 12000)
    coded = compress(model, wav, 1.5, lm, deterministic=True)
    half = load_lm_model("opencodec_lm_24khz", codec=model).half()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(body, "_check_release_name", lambda det: None)
        coded_half = compress(model, wav, 1.5, half, deterministic=True)
    return model, lm, coded, coded_half, half, wav


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_a_rounded_entropy_model_is_named_as_such(bundled, dtype) -> None:
    """The release's entropy model in half precision makes another integer model: the error
    says so, not that it is another export of a training run (what the walk-4 wording said
    of every model with the file's name)."""
    from opencodec.compress import decompress
    from opencodec.pretrained import load_lm_model

    model, _, coded, *_ = bundled
    rounded = load_lm_model("opencodec_lm_24khz", codec=model).to(dtype)
    with pytest.raises(BitstreamError) as info:
        decompress(coded, model, rounded)
    message = str(info.value)
    assert f"the entropy model given is in {dtype}: rounded weights make another integer model" in message
    assert "training run" not in message


def test_a_file_coded_with_a_changed_copy_of_a_release(bundled) -> None:
    """A file coded with a float16 copy of the release carries the release's name with
    another hash: decoding it with the release itself says that the file was coded with a
    changed copy, not that the release is another export of a training run."""
    from opencodec.compress import decompress

    model, lm, _, coded_half, *_ = bundled
    with pytest.raises(BitstreamError) as info:
        decompress(coded_half, model, lm)
    message = str(info.value)
    assert "the file was not coded with that release's weights" in message
    assert "training run" not in message


def test_a_changed_model_under_a_release_name(bundled) -> None:
    """A float32 model with other weights named as the release (weights changed in place):
    the error points to the release itself."""
    from opencodec.compress import decompress
    from opencodec.pretrained import load_lm_model

    model, _, coded, *_ = bundled
    changed = load_lm_model("opencodec_lm_24khz", codec=model)
    with torch.no_grad():
        changed.linears[0].weight.mul_(1.5)
    with pytest.raises(BitstreamError) as info:
        decompress(coded, model, changed)
    message = str(info.value)
    assert "load_lm_model('opencodec_lm_24khz_v5')" in message and "training run" not in message


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_a_rounded_release_is_not_written_under_its_name(bundled, dtype) -> None:
    """Coding with the release's entropy model in half precision wrote a file that names the
    release with another integer model: ``decompress`` (which finds the model by that name)
    could not decode it. It is refused, before any byte; under a name of its own
    (``lm_name=``) the rounded model codes, and a file written before is still read with the
    model that wrote it."""
    from opencodec.compress import compress, compress_to_file, decompress
    from opencodec.pretrained import load_lm_model

    model, _, _, coded_half, half, wav = bundled
    rounded = load_lm_model("opencodec_lm_24khz", codec=model).to(dtype)
    out = io.BytesIO()
    with pytest.raises(BitstreamError, match=r"named 'opencodec_lm_24khz_v5', but its weights are "
                                             r"not that release's .* \(lm_name=\.\.\.\)"):
        compress_to_file(model, wav, out, 1.5, rounded, deterministic=True)
    assert out.getvalue() == b""
    own = compress(model, wav, 1.5, rounded, deterministic=True, lm_name="my_rounded_lm")
    assert decompress(own, model, rounded)[0].shape == wav.shape
    assert decompress(coded_half, model, half)[0].shape == wav.shape


# ------------------------------------------------------------------------------------------
# 2. summarize(rows, metrics) counts the codec failures among its rows
# ------------------------------------------------------------------------------------------
def _row(item: str, system: str = "opus-6kbps", codec_error: str | None = None) -> dict:
    row = {"category": "music", "item_id": item, "system": system, "family": "opus",
           "kind": "baseline", "nominal_kbps": 6.0, "actual_kbps": 6.1, "rtf": 0.01,
           "metrics": {"si_snr": None if codec_error else 5.0}, "errors": {}}
    if codec_error:
        row["errors"]["codec"] = codec_error
    return row


def test_summarize_counts_the_codec_failures_among_its_rows() -> None:
    """Called as before walk 4, with every row of results.jsonl (a failed row among them),
    ``n_codec_failures`` counts that row (walk 4 counted only the ``failures`` argument, so
    it said 0); a pair listed in ``failures`` and present as a row counts once."""
    from opencodec.eval.summary import summarize

    rows = [_row("a"), _row("b", codec_error="boom")]
    entry = summarize(rows, ["si_snr"])["music"]["opus-6kbps"]
    assert (entry["n_items"], entry["n_codec_failures"]) == (2, 1)
    listed = [{"category": "music", "item_id": "b", "system": "opus-6kbps", "error": "boom"}]
    assert summarize(rows, ["si_snr"], listed)["music"]["opus-6kbps"]["n_codec_failures"] == 1
    entry = summarize(rows[:1], ["si_snr"], listed)["music"]["opus-6kbps"]
    assert (entry["n_items"], entry["n_codec_failures"]) == (1, 1)


# ------------------------------------------------------------------------------------------
# 3. A report scored below 16 kHz says that its audio is narrow-band
# ------------------------------------------------------------------------------------------
def _meta(sample_rate: int) -> dict:
    return {"models": [], "bandwidths": [], "baselines": ["opus6"], "set": "set", "max_items": None,
            "metrics": ["visqol"], "sample_rate": sample_rate, "channels": 1, "n_rows": 1,
            "wall_s": 1.0, "workers": 1}


def test_report_header_says_when_scoring_is_narrow_band() -> None:
    """At ``--sample-rate 8000`` ViSQOL's speech mode (a wide-band model) scores upsampled
    narrow-band audio, and PESQ-WB is left out: the header says both; at 16 kHz or more it
    says nothing of the kind."""
    from opencodec.eval.report_writer import _header_lines

    narrow = [line for line in _header_lines(_meta(8000)) if "Narrow-band" in line]
    assert len(narrow) == 1 and "0-4000 Hz" in narrow[0] and "not comparable" in narrow[0]
    assert "PESQ-WB is not given" in narrow[0]
    for rate in (16000, 24000):
        assert not any("Narrow-band" in line for line in _header_lines(_meta(rate)))


# ------------------------------------------------------------------------------------------
# 4. The pairing warning for a codec that has an entropy model of its own names it
# ------------------------------------------------------------------------------------------
def test_pairing_warning_names_an_official_codecs_own_entropy_model() -> None:
    """The bundled entropy model given for a codec named ``encodec_24khz`` (the official
    architecture; weights made here, so nothing is downloaded): the warning points to that
    codec's own entropy model, ``encodec_lm_24khz``, not to training one, and does not call
    an official name "not a release"."""
    import warnings

    from opencodec.model import EncodecModel
    from opencodec.model_config import OFFICIAL_CONFIGS
    from opencodec.pretrained import load_lm_model

    torch.manual_seed(0)
    codec = EncodecModel(OFFICIAL_CONFIGS["encodec_24khz"]())
    assert codec.name == "encodec_24khz"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        load_lm_model("opencodec_lm_24khz", codec=codec, num_codebooks=8)
    messages = [str(w.message) for w in caught]
    assert len(messages) == 1, messages
    assert "not encodec_24khz (weights hash " in messages[0]
    assert messages[0].endswith("its own entropy model is encodec_lm_24khz")
    assert "train-lm" not in messages[0] and "not a release" not in messages[0]
