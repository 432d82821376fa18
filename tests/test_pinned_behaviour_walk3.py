"""Behaviour pinned by value, third mutation audit (each test kills a mutant that the rest of
the suite let live): the weights hash and the codec fingerprint, the configuration fields
that matter, and the other modules the audit sampled (see each section)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch

from opencodec import EncodecConfig, EncodecModel
from opencodec.config_identity import config_differences
from opencodec.weights_hash import codec_fingerprint, state_dict_sha256


def _small_model(seed: int = 0) -> EncodecModel:
    torch.manual_seed(seed)
    return EncodecModel(EncodecConfig(name="walk3", n_filters=4, dimension=16, n_q=4, lstm=1))


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
    assert codec_fingerprint(codec, "walk3") == plain
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


# --------------------------------------------------------------------------- train: balancer
def test_balancer_shares_are_over_the_losses_given_not_every_weight() -> None:
    """A step that passes only some of the weighted losses (``adv``/``feat`` before the
    discriminator starts) balances them to the full ``total_norm``: ``lambda_i`` over the sum
    of the weights of the losses given."""
    from opencodec.train import Balancer

    out = torch.randn(2, 1, 8, requires_grad=True)
    direction = torch.randn(2, 1, 8)
    losses = {"l1": (out * direction).sum(), "mel": (out * 3 * direction).sum()}
    bal = Balancer({"l1": 1.0, "mel": 3.0, "adv": 4.0}, total_norm=2.0)
    grad, stats = bal.balanced_gradient(losses, out)
    assert grad is not None
    # parallel gradients: the norms add up; first step, so each EMA is its raw norm
    assert float(stats["total_norm"]) == pytest.approx(2.0, rel=1e-6)
    assert float(stats["share/l1"]) == pytest.approx(0.25, rel=1e-6)


# --------------------------------------------------------------------------- train: lm_codes
def test_code_set_keeps_code_32768_exactly() -> None:
    """Codes of a codebook over 32768 bins are stored as int32: 32768 does not wrap in int16."""
    from opencodec.train.lm_codes import CodeSet

    codes = CodeSet.from_sequences([torch.tensor([[5, 32768]]), torch.tensor([[7]])], ["a", "b"])
    assert codes.sequence(0).tolist() == [[5, 32768]]
    assert codes.sequence(1).tolist() == [[7]]
    small = CodeSet.from_sequences([torch.tensor([[32767]])], ["a"])
    assert small.codes.dtype == torch.int16 and small.sequence(0).tolist() == [[32767]]


def test_code_cache_key_follows_file_sizes_and_codebooks(tmp_path: Path) -> None:
    """The cached codes are reused only for the same codec, rows, file sizes and codebooks:
    a file rewritten with another size, or another codebook count, is another key."""
    from opencodec.train.lm_codes import _cache_key

    audio = tmp_path / "a.wav"
    audio.write_bytes(b"\0" * 10)
    rows = [{"path": str(audio)}]
    key = _cache_key("abc", rows, 8)
    assert _cache_key("abc", rows, 8) == key
    assert _cache_key("abd", rows, 8) != key
    assert _cache_key("abc", rows, 4) != key
    audio.write_bytes(b"\0" * 11)
    assert _cache_key("abc", rows, 8) != key


# --------------------------------------------------------------------------- modules.conv padding
def _delay_conv(kernel: int, stride: int, causal: bool):  # type: ignore[no-untyped-def]
    """A streamable conv whose output frame t is the padded input's sample t * stride."""
    from opencodec.modules.conv import StreamableConv1d

    layer = StreamableConv1d(1, 1, kernel, stride, causal=causal, pad_mode="constant")
    with torch.no_grad():
        layer.conv.conv.weight.zero_()
        layer.conv.conv.weight[0, 0, 0] = 1.0
        layer.conv.conv.bias.zero_()
    return layer


def test_an_odd_centred_padding_puts_the_extra_sample_on_the_left() -> None:
    """Non-causal: padding ``k_eff - stride`` split with the odd sample on the left (the
    official layout); causal: all of it on the left. Kernel 2, stride 1: one sample of padding."""
    x = torch.arange(1.0, 6.0)[None, None]
    centred = _delay_conv(2, 1, causal=False)(x)
    assert centred.tolist() == [[[0.0, 1.0, 2.0, 3.0, 4.0]]]
    # kernel 10, stride 5 (the 5x downsampling of the released models): 5 samples, 3 left 2 right
    x = torch.arange(1.0, 11.0)[None, None]
    assert _delay_conv(10, 5, causal=False)(x).tolist() == [[[0.0, 3.0]]]
    assert _delay_conv(10, 5, causal=True)(x).tolist() == [[[0.0, 1.0]]]


def test_an_odd_centred_transposed_trim_cuts_the_extra_sample_on_the_left() -> None:
    """The transposed conv trims ``k - stride`` samples, the odd one on the left (non-causal),
    all on the right (causal): [B, C, F] -> [B, C, F * stride]."""
    from opencodec.modules.conv import StreamableConvTranspose1d

    def layer(causal: bool) -> StreamableConvTranspose1d:
        conv = StreamableConvTranspose1d(1, 1, kernel_size=10, stride=5, causal=causal)
        with torch.no_grad():
            conv.convtr.convtr.weight.copy_(torch.arange(10.0)[None, None])
            conv.convtr.convtr.bias.zero_()
        return conv

    x = torch.tensor([[[1.0]]])  # one frame: y is the kernel itself, 10 samples
    assert layer(False)(x).tolist() == [[[3.0, 4.0, 5.0, 6.0, 7.0]]]
    assert layer(True)(x).tolist() == [[[0.0, 1.0, 2.0, 3.0, 4.0]]]


# --------------------------------------------------------------------------- eval.metrics
def test_si_snr_of_identical_signals_is_the_150_db_cap() -> None:
    """Identical signals: the documented cap, +150 dB exactly (noise floor 1e-15 of the signal)."""
    import numpy as np

    from opencodec.eval.metrics import si_snr

    x = np.sin(np.linspace(0.0, 40.0, 2000))
    assert si_snr(x, x) == pytest.approx(150.0, abs=1e-9)
    assert si_snr(0.5 * x, x) == pytest.approx(150.0, abs=1e-9)  # scale-invariant


# --------------------------------------------------------------------------- bitstream.packing
def test_bit_packer_starts_clean_after_flush() -> None:
    """``flush`` writes the partial byte and resets: the next values (the next segment) do
    not carry the previous byte's bits, and equal ``pack_codes`` of each part."""
    import io

    from opencodec.bitstream.packing import BitPacker, pack_codes

    out = io.BytesIO()
    packer = BitPacker(3, out)
    packer.push(7)
    packer.flush()
    for value in (0, 1):
        packer.push(value)
    packer.flush()
    assert out.getvalue() == bytes([7, 8])
    assert out.getvalue() == pack_codes([[7]], 3) + pack_codes([[0, 1]], 3)


def test_spectral_distances_use_a_hop_of_a_quarter_window() -> None:
    """Hann windows of ``n`` samples every ``n // 4``: 4096 samples give 1 + 4096 / 128 = 33
    frames at n = 512; a click added to a click is pinned by value (the share of frames it
    reaches follows the hop; scale-only tests cannot see it)."""
    import numpy as np

    from opencodec.eval import metrics as M

    ref = np.zeros(4096)
    ref[1000] = 1.0
    est = ref.copy()
    est[3000] = 0.5
    assert M._stft_mag(ref[None], 512).shape == (1, 257, 33)
    assert M.mel_distance(est, ref, 16000) == pytest.approx(1.8791308276993146, rel=1e-6)
    assert M.stft_distance(est, ref) == pytest.approx(4.267192796567069, rel=1e-6)


# --------------------------------------------------------------------------- train.losses
def test_slaney_mel_filters_have_unit_area() -> None:
    """``norm="slaney"``: each triangle divided by half its width in Hz, so its area (sum over
    bins times the bin spacing) is 1."""
    from opencodec.train.losses import mel_filterbank

    fb = mel_filterbank(16000, 4096, 8, norm="slaney").double()
    areas = fb.sum(dim=1) * 16000 / 4096
    assert torch.allclose(areas, torch.ones(8, dtype=torch.float64), atol=1e-4), areas


# --------------------------------------------------------------------------- bitstream header/layout
def test_a_weights_hash_in_a_header_is_exactly_16_lowercase_hex_digits() -> None:
    from opencodec.bitstream import EcdcHeader
    from opencodec.errors import BitstreamError

    meta = {"m": "my_model", "al": 100, "nc": 2, "lm": False}
    assert EcdcHeader.from_dict({**meta, "mh": "0123456789abcdef"}).model_hash == "0123456789abcdef"
    for bad in ("0123456789abcde", "", "0123456789ABCDEF", "0123456789abcdef0", "0123456789abcdeg"):
        with pytest.raises(BitstreamError, match="16 lowercase hex digits"):
            EcdcHeader.from_dict({**meta, "mh": bad})


def test_an_entropy_model_hash_needs_an_entropy_coded_version_0_header() -> None:
    from opencodec.bitstream import DeterministicCoding, EcdcHeader
    from opencodec.errors import BitstreamError

    digest = "0123456789abcdef"
    assert EcdcHeader("my_model", 100, 2, True, lm_hash=digest).entropy_model_hash == digest
    with pytest.raises(BitstreamError, match="lm_hash is for version 0 entropy-coded files"):
        EcdcHeader("my_model", 100, 2, False, lm_hash=digest)
    det = DeterministicCoding(lm_name="lm", lm_hash=digest, scheme=1)
    with pytest.raises(BitstreamError, match="lm_hash is for version 0 entropy-coded files"):
        EcdcHeader("my_model", 100, 2, True, deterministic=det, lm_hash=digest)


def test_a_layout_has_both_segment_sizes_or_neither() -> None:
    from opencodec.bitstream import StreamLayout

    assert StreamLayout("m", 4, 10, 320, True, 48000, 47520).num_segments(48001) == 2
    for length, stride in ((48000, None), (None, 47520)):
        with pytest.raises(ValueError, match="both be set or both be None"):
            StreamLayout("m", 4, 10, 320, True, length, stride)


def test_writing_a_scale_for_a_model_that_does_not_normalise_is_refused() -> None:
    import io

    from opencodec.bitstream import EcdcHeader, StreamLayout, write_body
    from opencodec.frames import EncodedFrame

    layout = StreamLayout("m", 2, 10, 320, normalize=False)
    header = EcdcHeader("m", 640, 2, False)
    codes = torch.zeros(1, 2, 2, dtype=torch.long)
    assert write_body(io.BytesIO(), header, [EncodedFrame(codes, None)], layout) == 5
    with pytest.raises(ValueError, match="segment 0: model does not normalise but a scale was given"):
        write_body(io.BytesIO(), header, [EncodedFrame(codes, torch.ones(1, 1))], layout)


def test_lmh_in_a_header_that_is_not_entropy_coded_is_named() -> None:
    from opencodec.bitstream import EcdcHeader
    from opencodec.errors import BitstreamError

    meta = {"m": "my_model", "al": 100, "nc": 2, "lm": False, "lmh": "0123456789abcdef"}
    with pytest.raises(BitstreamError, match=r"'lmh' \(entropy model weights hash\) in a file that is "
                                             r"not entropy coded"):
        EcdcHeader.from_dict(meta)


# --------------------------------------------------------------------------- train: balancer (names)
def test_balancer_refuses_a_loss_without_a_weight() -> None:
    from opencodec.train import Balancer

    out = torch.randn(1, 1, 4, requires_grad=True)
    with pytest.raises(KeyError, match="loss 'adv' has no weight in the balancer"):
        Balancer({"l1": 1.0}).balanced_gradient({"l1": out.sum(), "adv": out.sum()}, out)


# --------------------------------------------------------------------------- releases
def test_the_entropy_model_alias_in_a_header_needs_a_weights_hash() -> None:
    """Only the bare codec alias may lack a hash (legacy files); the entropy model's alias, a
    release and an entropy-model release were never written without one; official and custom
    names may have none."""
    from opencodec.releases import CODEC_ALIAS, CURRENT_CODEC, CURRENT_LM, LM_ALIAS, needs_weights_hash

    assert needs_weights_hash(LM_ALIAS) and needs_weights_hash(CURRENT_CODEC) and needs_weights_hash(CURRENT_LM)
    assert not needs_weights_hash(CODEC_ALIAS)
    assert not needs_weights_hash("encodec_24khz") and not needs_weights_hash("my_model")


# --------------------------------------------------------------------------- data: dataset and corpus
def test_downmix_is_the_mean_and_short_clips_are_padded_at_the_end() -> None:
    import numpy as np

    from opencodec.data.dataset import convert_channels, fix_length

    stereo = np.array([[1.0, -1.0], [3.0, 1.0]], dtype=np.float32)
    assert convert_channels(stereo, 1).tolist() == [[2.0, 0.0]]
    assert fix_length(np.array([[1.0, 2.0, 3.0]]), 5).tolist() == [[1.0, 2.0, 3.0, 0.0, 0.0]]
    assert fix_length(np.array([[1.0, 2.0, 3.0]]), 2).tolist() == [[1.0, 2.0]]


def test_corpus_out_folder_blocker_is_said_under_or_above(tmp_path: Path) -> None:
    from opencodec.data.corpus import check_out_folder

    out = tmp_path / "data"
    (out / "work").mkdir(parents=True)
    (out / "work" / "audio").write_text("a file")
    with pytest.raises(NotADirectoryError, match=r"audio is a file, not a folder \(under --out"):
        check_out_folder(out, out / "work" / "audio" / "x")
    above = tmp_path / "file"
    above.write_text("a file")
    with pytest.raises(NotADirectoryError, match=r"file is a file, not a folder \(above --out"):
        check_out_folder(above / "data", above / "data" / "work")


def test_data_sources_group_stems_and_take_upper_case_extensions() -> None:
    """Sound-effect groups drop a trailing number with its separator (``door-2`` and
    ``door_12b`` are one group, so a valid split never shares a sound); a selector takes
    ``.WAV`` as it takes ``.wav``."""
    from opencodec.data.sources import _rx, _stem_group

    assert [_stem_group(n) for n in ("Door-2.wav", "door_12b.ogg", "door 3.flac", "bang3.wav")] == \
        ["door", "door", "door", "bang"]
    select = _rx(r"^sounds/(\w+)/", lambda m: m.group(1))
    assert select("sounds/doors/a.WAV") == "doors" == select("sounds/doors/a.wav")
    assert select("sounds/doors/a.txt") is None


def test_the_entropy_model_alias_is_a_registered_name() -> None:
    """Weights saved under ``opencodec_lm_24khz`` that are not that release's are exported as
    ``opencodec_lm_24khz_custom``, as for the codec alias."""
    from opencodec.releases import CODEC_ALIAS, LM_ALIAS, export_name, is_registered_name

    assert is_registered_name(LM_ALIAS) and is_registered_name(CODEC_ALIAS)
    assert export_name(LM_ALIAS) == LM_ALIAS + "_custom"
    assert export_name("my_model") == "my_model"


def test_version_1_segment_crc_seed_is_pinned() -> None:
    """The CRC-32 of a deterministic segment starts from the header's bytes, the segment's index
    (uint32 LE) and its scale bytes: part of the file format, so pinned by value (a swapped,
    repeated or re-scaled segment, or another header, fails its checks)."""
    import struct

    from opencodec.bitstream.coded_body import _segment_crc_seed

    scale = struct.pack("!f", 0.5)
    assert _segment_crc_seed(b"ECDC-header", 0, b"") == 148974892
    assert _segment_crc_seed(b"ECDC-header", 1, b"") == 2958903881
    assert _segment_crc_seed(b"ECDC-header", 1, scale) == 3597252831
    assert _segment_crc_seed(b"other", 1, scale) == 1725253649


def test_the_code_cache_is_read_back_only_under_its_key(tmp_path: Path) -> None:
    from opencodec.train.lm_codes import CodeSet, _load_codes, _save_codes

    codes = CodeSet.from_sequences([torch.tensor([[1, 2], [3, 4]])], ["a.wav"])
    path = tmp_path / "codes.safetensors"
    _save_codes(path, codes, {"key": "k1"})
    back = _load_codes(path, "k1")
    assert back is not None and back.sequence(0).tolist() == [[1, 2], [3, 4]] and back.names == ["a.wav"]
    assert _load_codes(path, "k2") is None


# --------------------------------------------------------------------------- tokens: plan
def test_unreadable_files_count_no_seconds_in_a_shard() -> None:
    """A file whose header cannot be read (duration -1) adds 0 s to its shard: the balance of
    shards over workers and the progress total count only audio."""
    from opencodec.tokens.plan import PlannedItem, shard_seconds

    planned = [PlannedItem("a", "a.wav", -1.0), PlannedItem("b", "b.wav", 2.5), PlannedItem("c", "c.wav", -1.0)]
    assert shard_seconds(planned, [range(0, 2), range(2, 3)]) == [2.5, 0.0]


# --------------------------------------------------------------------------- bitstream: lower bound
def test_the_deterministic_body_lower_bound_counts_half_of_each_segment_crc() -> None:
    """A version 1 body's lower bound adds 2 bytes per segment (half of its CRC-32), so a body
    cut to nothing is refused before decoding."""
    from opencodec.bitstream import DeterministicCoding, EcdcHeader, StreamLayout
    from opencodec.bitstream.layout import min_lm_body_size

    layout = StreamLayout("m", 4, 10, 320, True, 48000, 47520)
    det = DeterministicCoding(lm_name="lm", lm_hash="0123456789abcdef", scheme=1)
    v0 = EcdcHeader("m", 96000, 4, True)
    v1 = EcdcHeader("m", 96000, 4, True, deterministic=det)
    segments = layout.num_segments(96000)
    assert segments == 3
    assert min_lm_body_size(v1, layout, 1024) - min_lm_body_size(v0, layout, 1024) == 2 * segments
    assert min_lm_body_size(EcdcHeader("m", 1, 1, True, deterministic=det), layout, 1 << 23) >= 2


def test_progress_of_a_job_with_an_unreadable_file_reaches_the_total(tmp_path: Path) -> None:
    """A file whose header cannot be read (duration -1) is reported as 0 s done, so the progress
    reports add up to the planned seconds of audio, not one second less per such file."""
    import numpy as np
    import soundfile as sf

    from opencodec.pretrained import save_model
    from opencodec.tokens.job import TokenizeOptions, tokenize

    model = save_model(_small_model(), tmp_path / "tiny.safetensors")
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    rng = np.random.default_rng(0)
    for name in ("a.wav", "b.wav"):
        sf.write(corpus / name, 0.1 * rng.standard_normal(24000).astype(np.float32), 24000)
    (corpus / "bad.wav").write_bytes(b"not a wav file")
    done: dict[str, float] = {}

    def progress(total: float):  # type: ignore[no-untyped-def]
        done["total"], done["seconds"] = total, 0.0
        return lambda seconds, files, errors: done.__setitem__("seconds", done["seconds"] + seconds)

    summary = tokenize(TokenizeOptions([str(corpus)], tmp_path / "out", model=str(model), device="cpu",
                                       bandwidth=1.5), progress)
    assert (summary.stats.files, summary.stats.errors) == (2, 1)
    assert done["total"] == pytest.approx(2.0) and done["seconds"] == pytest.approx(2.0)


# --------------------------------------------------------------------------- train: config checks
def test_adam_betas_must_be_below_one() -> None:
    """``optim.betas``: each in [0, 1); a beta of exactly 1 never forgets (Adam divides by
    ``1 - beta ** t`` = 0 at every step) and is refused."""
    from opencodec.errors import ConfigError
    from opencodec.train.config_checks import check_betas

    assert check_betas([0.0, 0.999]) == (0.0, 0.999)
    for bad in ([0.9, 1.0], [1.0, 0.9], [-0.1, 0.9]):
        with pytest.raises(ConfigError, match=r"optim.betas: each must be in \[0, 1\)"):
            check_betas(bad)


def test_mel_scales_need_at_least_one_window() -> None:
    """``mel_scales: [lo, hi]`` means windows 2^lo .. 2^(hi-1): ``lo == hi`` is no window at all
    (a mel loss averaged over zero scales) and is refused."""
    from opencodec.errors import ConfigError
    from opencodec.train.config_checks import _check_mel_scales

    _check_mel_scales({"mel_scales": [5, 6]})
    for bad in ([5, 5], [6, 5], [1, 4]):
        with pytest.raises(ConfigError, match="expected 2 <= lo < hi"):
            _check_mel_scales({"mel_scales": bad})


# --------------------------------------------------------------------------- tokens: shards folder
def test_a_token_folder_is_claimed_only_when_empty_or_its_own(tmp_path: Path) -> None:
    from opencodec.tokens.shards import JOB_FILE, TokenizeError, claim_folder

    job = {"model": "m", "num_shards": 1}
    fresh = tmp_path / "fresh"
    (fresh / ".hidden").parent.mkdir()
    (fresh / ".hidden").write_text("")  # hidden files do not count
    claim_folder(fresh, job)
    assert (fresh / JOB_FILE).is_file()
    claim_folder(fresh, job)  # a rerun of the same job
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    with pytest.raises(TokenizeError, match="is not empty and holds no job.json"):
        claim_folder(other, job)
    assert not (other / JOB_FILE).exists()


def test_stale_temporaries_of_the_shards_to_write_are_removed(tmp_path: Path) -> None:
    """A killed run's temporary files of the shards this run writes are deleted; those of other
    shards (another worker may be writing them) are kept."""
    from opencodec._files import TEMP_SUFFIX
    from opencodec.tokens.shards import remove_stale_temps, shard_name

    mine, theirs = shard_name(0, 2), shard_name(1, 2)
    stale = tmp_path / f".{mine}.abc123{TEMP_SUFFIX}"
    kept = tmp_path / f".{theirs}.def456{TEMP_SUFFIX}"
    for path in (stale, kept):
        path.write_bytes(b"partial")
    remove_stale_temps(tmp_path, [mine])
    assert not stale.exists() and kept.exists()


def test_an_integer_config_field_refuses_true() -> None:
    """YAML ``n_q: true`` is not the integer 1: a one-line ConfigError."""
    from opencodec.errors import ConfigError
    from opencodec.train.config_checks import _integer

    _integer({"model": {"n_q": 4}}, "model.n_q", 1)
    with pytest.raises(ConfigError, match="config field model.n_q: expected an integer, got True"):
        _integer({"model": {"n_q": True}}, "model.n_q", 1)


def test_a_codec_bandwidth_of_zero_is_refused() -> None:
    """``model.target_bandwidths`` must be > 0 kbps (0 would mean no codebook at all)."""
    from opencodec.errors import ConfigError
    from opencodec.train.config_checks import check_codec_bandwidths

    model = EncodecModel(EncodecConfig(name="walk3", n_filters=4, dimension=16, n_q=4, lstm=1,
                                       target_bandwidths=[0.0, 1.5]))
    with pytest.raises(ConfigError, match="model.target_bandwidths: 0 kbps cannot be coded"):
        check_codec_bandwidths({}, model)


def test_detokenize_refuses_a_model_with_other_weights(tmp_path: Path) -> None:
    """Rows decode only with the weights that wrote them: another model is a ModelLoadError
    naming the recorded sha256, and nothing is written."""
    import numpy as np
    import soundfile as sf

    from opencodec.errors import ModelLoadError
    from opencodec.pretrained import save_model
    from opencodec.tokens import detokenize
    from opencodec.tokens.job import TokenizeOptions, tokenize

    model = save_model(_small_model(0), tmp_path / "a.safetensors")
    other = save_model(_small_model(1), tmp_path / "b.safetensors")
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    sf.write(corpus / "a.wav", 0.1 * np.random.default_rng(0).standard_normal(8000).astype(np.float32), 24000)
    tokenize(TokenizeOptions([str(corpus)], tmp_path / "tokens", model=str(model), device="cpu", bandwidth=1.5))
    assert [p.name for p in detokenize(tmp_path / "tokens", tmp_path / "ok", model=str(model))] == ["a.wav"]
    with pytest.raises(ModelLoadError, match="weights differ from those that wrote the shards"):
        detokenize(tmp_path / "tokens", tmp_path / "wrong", model=str(other))
    assert not (tmp_path / "wrong" / "a.wav").exists()


def test_streamable_conv_refusals() -> None:
    """A causal conv cannot normalise over the whole signal, and streaming refuses a pad mode
    without a causal form (circular padding reads the signal's end)."""
    from opencodec.modules.conv import StreamableConv1d, StreamableConvTranspose1d, streamable_conv

    for make in (lambda: StreamableConv1d(1, 1, 3, causal=True, norm="time_group_norm"),
                 lambda: StreamableConvTranspose1d(1, 1, 4, 2, causal=True, norm="time_group_norm")):
        with pytest.raises(ValueError, match="time_group_norm normalises over the whole signal"):
            make()
    assert isinstance(streamable_conv(StreamableConv1d(1, 1, 3, causal=True)), torch.nn.Conv1d)
    with pytest.raises(ValueError, match="pad mode 'circular' cannot be streamed"):
        streamable_conv(StreamableConv1d(1, 1, 3, causal=True, pad_mode="circular"))
