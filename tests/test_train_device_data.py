"""The device-side corpus (train/device_data.py, ``data.loader: device``): segments are
exact windows of the decoded files, the augmentations do what they say (gain, speech +
noise at the drawn SNR, reverberation), batches depend on the step alone, and the trainer
resumes exactly with it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from opencodec.train.device_data import DeviceCorpus
from opencodec.train.solver import train
from test_train_solver import _config, _corpus  # tests/ is on sys.path (conftest.py)

SR = 24000


def _tone_corpus(folder: Path) -> tuple[Path, Path]:
    """A 'speech' file (1 kHz tone, amplitude 0.5) and a 'noise' file (3 kHz tone, 0.2)."""
    folder.mkdir(parents=True, exist_ok=True)
    t = np.arange(SR * 2) / SR
    manifests = []
    for name, freq, amp, cat in (("speech", 1000, 0.5, "speech"), ("noise", 3000, 0.2, "noise")):
        path = folder / f"{name}.wav"
        sf.write(path, (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32), SR, subtype="PCM_16")
        manifest = folder / f"{name}.jsonl"
        manifest.write_text(json.dumps({"path": str(path), "duration": 2.0, "sample_rate": SR, "channels": 1,
                                        "category": cat}) + "\n")
        manifests.append(manifest)
    return manifests[0], manifests[1]


def _band_power(x: torch.Tensor, freq: float) -> float:
    spec = torch.fft.rfft(x.double()).abs().pow(2)
    bin_hz = SR / x.shape[-1]
    k = int(round(freq / bin_hz))
    return float(spec[..., k - 2: k + 3].sum())


def test_segments_are_windows_of_the_files_and_depend_on_the_step(tmp_path: Path) -> None:
    train_m, _ = _corpus(tmp_path / "data")
    corpus = DeviceCorpus([str(train_m)], SR, 1, 0.25, torch.device("cpu"), seed=3, augment=False)
    files = [torch.from_numpy(sf.read(json.loads(line)["path"], dtype="float32")[0])
             for line in train_m.read_text().splitlines()]
    batch = corpus.batch(7, 4)
    assert batch.shape == (4, 1, 6000) and batch.dtype == torch.float32
    for item in batch[:, 0]:
        found = False  # a window of some file equal to the item (to the int16 storage's precision)
        for f in files:
            for start in torch.nonzero((f[: len(f) - 6000 + 1] - item[0]).abs() < 1e-4).flatten().tolist():
                found = found or float((f[start:start + 6000] - item).abs().amax()) < 1e-4
        assert found
    assert torch.equal(corpus.batch(7, 4), batch)
    assert not torch.equal(corpus.batch(8, 4), batch)
    host = DeviceCorpus([str(train_m)], SR, 1, 0.25, torch.device("cpu"), seed=3, augment=False, storage="pinned")
    assert torch.equal(host.batch(7, 4), batch)  # same draws whichever memory holds the corpus
    with pytest.raises(ValueError, match="device_storage"):
        DeviceCorpus([str(train_m)], SR, 1, 0.25, torch.device("cpu"), storage="disk")
    with pytest.raises(ValueError, match="reverb"):
        DeviceCorpus([str(train_m)], SR, 1, 0.25, torch.device("cpu"), reverb=0.5)


def test_gain_and_speech_plus_noise_at_the_drawn_snr(tmp_path: Path) -> None:
    speech, noise = _tone_corpus(tmp_path)
    quiet = DeviceCorpus([str(speech)], SR, 1, 0.5, torch.device("cpu"), mix_probs=(1, 0, 0), gain_db=(-6.0, -6.0),
                         reverb_prob=0.0, noisy_speech_prob=0.0)
    y = quiet.batch(0, 3)
    assert float(y.abs().amax()) == pytest.approx(0.5 * 10 ** (-6 / 20), rel=1e-3)
    noisy = DeviceCorpus([str(speech)], SR, 1, 0.5, torch.device("cpu"), noise_manifests=[str(noise)],
                         gain_db=(0.0, 0.0), reverb_prob=0.0, noisy_speech_prob=1.0, snr_db=(10.0, 10.0),
                         generated_noise_prob=0.0)
    for item in noisy.batch(1, 3)[:, 0]:
        ratio_db = 10 * np.log10(_band_power(item, 1000) / _band_power(item, 3000))
        assert ratio_db == pytest.approx(10.0, abs=0.3)
    generated = DeviceCorpus([str(speech)], SR, 1, 0.5, torch.device("cpu"), gain_db=(0.0, 0.0), reverb_prob=0.0,
                             noisy_speech_prob=1.0, snr_db=(0.0, 0.0))  # no noise file: generated noise
    for item in generated.batch(2, 3)[:, 0]:  # at 0 dB, half the energy is the tone's
        total = float(torch.fft.rfft(item.double()).abs().pow(2).sum())
        assert _band_power(item, 1000) / total == pytest.approx(0.5, abs=0.05)


def test_reverberation_spreads_energy(tmp_path: Path) -> None:
    speech, _ = _tone_corpus(tmp_path)
    dry = DeviceCorpus([str(speech)], SR, 1, 0.5, torch.device("cpu"), mix_probs=(1, 0, 0), gain_db=(0.0, 0.0),
                       reverb_prob=0.0, noisy_speech_prob=0.0)
    wet = DeviceCorpus([str(speech)], SR, 1, 0.5, torch.device("cpu"), mix_probs=(1, 0, 0), gain_db=(0.0, 0.0),
                       reverb_prob=1.0, rt60=(0.5, 0.5), noisy_speech_prob=0.0)
    a, b = dry.batch(0, 2), wet.batch(0, 2)
    assert torch.isfinite(b).all() and float(b.abs().amax()) <= 1.0
    assert float((a - b).abs().amax()) > 0.05  # changed, and not just scaled: the tone's phase is smeared
    assert float(torch.nn.functional.cosine_similarity(a.flatten(1), b.flatten(1)).min()) < 0.99


def test_trainer_with_the_device_loader_resumes_exactly(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    train_m, valid_m = _corpus(tmp_path / "data")
    cfg = _config(train_m, valid_m, steps=4)
    cfg["data"]["loader"] = "device"
    drawn: list[int] = []  # the steps whose batches the device corpus drew (a spy: same batches)
    batch = DeviceCorpus.batch
    monkeypatch.setattr(DeviceCorpus, "batch", lambda self, step, n: drawn.append(step) or batch(self, step, n))
    _, straight, _ = train(cfg, tmp_path / "a", progress=False, return_models=True)
    assert drawn == [0, 1, 2, 3] and "data.loader=device:" in capsys.readouterr().err
    train(cfg, tmp_path / "b", max_steps=2, progress=False)
    drawn.clear()
    _, resumed, _ = train(cfg, tmp_path / "b", progress=False, return_models=True)
    # Deterministic training: a run that retrained from step 0 (or on the worker loader) would
    # end with the same weights, so the resume, the loader and the log are checked as well.
    err = capsys.readouterr().err
    assert "data.loader=device:" in err and f"resumed from {tmp_path / 'b' / 'checkpoint.pt'} at step 2" in err
    assert drawn == [2, 3]  # the resumed run draws on from the checkpoint's step
    metrics = [json.loads(line) for line in (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in metrics if "train/lr" in m] == [1, 2, 3, 4]
    for key, value in straight.state_dict().items():
        assert torch.equal(value, resumed.state_dict()[key]), key
    with pytest.raises(ValueError, match="data.loader"):
        train({**cfg, "data": {**cfg["data"], "loader": "gpu"}}, tmp_path / "c", progress=False)


def test_a_noise_manifest_row_without_duration_names_the_noise_manifest(tmp_path: Path) -> None:
    """A row of ``noise_manifests`` without a duration is an error naming that manifest (it
    named the training manifests), as the host-side AudioDataset's does."""
    from opencodec.errors import ConfigError

    train_m, _ = _tone_corpus(tmp_path)
    noise_m = tmp_path / "extra_noise.jsonl"
    noise_m.write_text(json.dumps({"path": str(tmp_path / "noise.wav"), "category": "noise"}) + "\n")
    with pytest.raises(ConfigError, match=rf"^manifest {noise_m}: the row of {tmp_path / 'noise.wav'} has no "):
        DeviceCorpus([str(train_m)], SR, 1, 0.25, torch.device("cpu"), noise_manifests=[str(noise_m)])
