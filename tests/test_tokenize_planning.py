"""``opencodec tokenize`` planning, pinned by value: shard seconds and progress of unreadable files,
which token folder a job may claim, stale temporaries of its shards, and detokenize refusing a model
with other weights."""

from __future__ import annotations

from pathlib import Path

import pytest

from codec_helpers import _small_model


# --------------------------------------------------------------------------- tokens: plan
def test_unreadable_files_count_no_seconds_in_a_shard() -> None:
    """A file whose header cannot be read (duration -1) adds 0 s to its shard: the balance of
    shards over workers and the progress total count only audio."""
    from opencodec.tokens.plan import PlannedItem, shard_seconds

    planned = [PlannedItem("a", "a.wav", -1.0), PlannedItem("b", "b.wav", 2.5), PlannedItem("c", "c.wav", -1.0)]
    assert shard_seconds(planned, [range(0, 2), range(2, 3)]) == [2.5, 0.0]


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
