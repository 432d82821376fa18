"""The trainer's "build the corpus first" hint names the command that writes the missing
manifest, for every folder name the corpus builder gives (``small_24k``, ``small_22050``)."""

from __future__ import annotations

from pathlib import Path

import pytest

from opencodec.data.manifests import preset_dir_name
from opencodec.train.batches import check_manifests, corpus_command
from opencodec.train.config import ConfigError


@pytest.mark.parametrize("rate", [24000, 16000, 48000, 22050, 44100, 24500])
def test_command_rebuilds_the_folder_of_every_rate(rate: int) -> None:
    manifest = Path("data") / preset_dir_name("small", rate) / "manifests" / "train.jsonl"
    command = corpus_command(manifest)
    expected = "python -m opencodec.data.corpus build --preset small --out data"
    assert command == (expected if rate == 24000 else f"{expected} --sample-rate {rate}")


def test_other_paths_get_no_command(tmp_path: Path) -> None:
    assert corpus_command("data/mine_24k/manifests/train.jsonl") is None  # not a preset
    assert corpus_command("data/small_24k/train.jsonl") is None  # not under manifests/
    with pytest.raises(ConfigError, match=r"--preset tiny --out .* --sample-rate 22050"):
        check_manifests("data.train", [str(tmp_path / "tiny_22050" / "manifests" / "train.jsonl")])


def test_a_missing_noise_manifest_is_a_config_error_with_the_build_command(tmp_path: Path) -> None:
    """``opencodec train configs/opencodec_24khz.yaml`` before the corpus is built: the noise
    manifest is named with its field and the command, like the training manifest, and nothing
    is written."""
    from opencodec.train.config import load_config
    from opencodec.train.solver import train

    train_m = tmp_path / "train.jsonl"
    train_m.write_text('{"path": "a.wav", "duration": 1.0}\n')
    noise = tmp_path / "data" / "small_24k" / "manifests" / "train_noise.jsonl"
    cfg = load_config(Path(__file__).resolve().parent.parent / "configs" / "tiny_24khz.yaml",
                      [f"data.train=[{train_m}]", "data.valid=[]", f"data.augment.noise_manifests=[{noise}]"])
    with pytest.raises(ConfigError, match=r"^config field data\.augment\.noise_manifests: no manifest file .*"
                                          r"build the corpus first: python -m opencodec\.data\.corpus build "
                                          r"--preset small --out .*data$"):
        train(cfg, tmp_path / "run", progress=False)
    assert not (tmp_path / "run").exists()
