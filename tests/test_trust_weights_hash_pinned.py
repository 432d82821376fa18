"""The weights hash, the codec fingerprint and configuration differences, pinned by value: training
buffers and dtypes, the name a fingerprint uses, the fields that matter, and the registered aliases."""

from __future__ import annotations

import dataclasses

import torch

from opencodec import EncodecConfig
from opencodec.config_identity import config_differences
from opencodec.weights_hash import codec_fingerprint, state_dict_sha256

from codec_helpers import _small_model


# --------------------------------------------------------------------------- weights_hash
def test_training_buffers_and_the_inited_flag_leave_the_hash_alone() -> None:
    """``embed_avg``, ``cluster_size`` and ``inited`` are training state: changing any of them
    keeps the inference hash (a checkpoint and its inference export hash the same)."""
    state = {k: v.clone() for k, v in _small_model().state_dict().items()}
    before = state_dict_sha256(state)
    for suffix in ("._codebook.embed_avg", "._codebook.cluster_size", "._codebook.inited"):
        key = next(k for k in state if k.endswith(suffix))
        changed = dict(state)
        changed[key] = state[key] + 1
        assert state_dict_sha256(changed) == before, suffix


def test_the_hash_covers_the_dtype_not_only_the_bytes() -> None:
    """Two tensors with the same bytes and shape but another dtype are other weights."""
    value = torch.arange(6, dtype=torch.float32).reshape(2, 3)
    as_int = value.view(torch.int32)
    assert value.view(torch.uint8).equal(as_int.view(torch.uint8))
    assert state_dict_sha256({"w": value}) != state_dict_sha256({"w": as_int})


def test_codec_fingerprint_uses_the_name_it_is_given() -> None:
    """``codec_fingerprint(codec, name)`` hashes the config with ``name`` in place of the
    codec's own: two names give two fingerprints, and the codec's own name its plain one."""
    codec = _small_model()
    plain = codec_fingerprint(codec)
    assert codec_fingerprint(codec, "tiny_small") == plain
    assert codec_fingerprint(codec, "other") != plain


# --------------------------------------------------------------------------- config_identity
def test_overlap_matters_when_either_configuration_segments() -> None:
    """``overlap`` acts only between segments: it is a difference as soon as one of the two
    configurations cuts segments, and none when neither does."""
    plain = EncodecConfig(name="a")
    segmented = dataclasses.replace(plain, segment=1.0, overlap=0.5)
    fields = [d.split()[0] for d in config_differences(segmented, plain, "ref")]
    assert fields == ["segment", "overlap"], fields
    fields = [d.split()[0] for d in config_differences(plain, segmented, "ref")]
    assert fields == ["segment", "overlap"], fields
    unsegmented = dataclasses.replace(plain, overlap=0.5)
    assert config_differences(unsegmented, plain, "ref") == []


def test_a_tuple_and_a_list_of_the_same_values_are_no_difference() -> None:
    """A configuration built in Python with ``ratios=(8, 5, 4, 2)`` computes what the stored
    ``[8, 5, 4, 2]`` does: no difference (else a release would refuse its own settings)."""
    plain = EncodecConfig(name="a")
    as_tuple = dataclasses.replace(plain, ratios=tuple(plain.ratios))
    assert config_differences(as_tuple, plain, "ref") == []
    assert config_differences(plain, as_tuple, "ref") == []


def test_shapes_false_leaves_out_the_fields_the_tensors_set() -> None:
    """``shapes=False`` (``declare_official``'s check: the architecture is compared apart)
    lists only the fields that change the computation, not the sizes."""
    plain = EncodecConfig(name="a")
    other = dataclasses.replace(plain, n_filters=4, causal=not plain.causal)
    assert [d.split()[0] for d in config_differences(other, plain, "ref")] == ["causal", "n_filters"]
    assert [d.split()[0] for d in config_differences(other, plain, "ref", shapes=False)] == ["causal"]


def test_the_entropy_model_alias_is_a_registered_name() -> None:
    """Weights saved under ``opencodec_lm_24khz`` that are not that release's are exported as
    ``opencodec_lm_24khz_custom``, as for the codec alias."""
    from opencodec.releases import CODEC_ALIAS, LM_ALIAS, export_name, is_registered_name

    assert is_registered_name(LM_ALIAS) and is_registered_name(CODEC_ALIAS)
    assert export_name(LM_ALIAS) == LM_ALIAS + "_custom"
    assert export_name("my_model") == "my_model"
