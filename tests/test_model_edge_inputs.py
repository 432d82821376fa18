"""Edge inputs of model loading and naming (``--model`` by name or path, ``save_model`` /
``load_model`` with odd configurations) and of ``opencodec info -m``: each test pins a case
that misbehaved (a traceback from deep inside, or a figure that was not true)."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import torch

import opencodec
from opencodec import EncodecConfig, EncodecModel
from opencodec.compress import compress
from opencodec.pretrained import save_model

from codec_helpers import run


def _tiny(name: str, seed: int, **extra: object) -> EncodecModel:
    torch.manual_seed(seed)
    return EncodecModel(EncodecConfig(name=name, n_filters=4, dimension=16, lstm=0, n_q=4,
                                      target_bandwidths=[1.5, 3.0], **extra)).eval()


def _ecdc(model: EncodecModel, path: Path, samples: int = 4800) -> Path:
    wav = torch.randn(model.channels, samples, generator=torch.Generator().manual_seed(1)) * 0.1
    path.write_bytes(compress(model, wav, 1.5 if model.sample_rate == 24_000 else model.target_bandwidths[0]))
    return path


def _load_error_with_config(tmp_path: Path, field: str, value: object) -> tuple[Path, str]:
    """A ``.th`` of a tiny model whose stored configuration has ``field`` set to ``value``, and
    the ``ModelLoadError`` message ``load_model`` gives for it."""
    from opencodec.errors import ModelLoadError
    from opencodec.pretrained import load_model

    model = _tiny("mine", 0)
    path = tmp_path / "w.th"
    torch.save({"state_dict": model.state_dict(), "config": {**model.config.to_dict(), field: value}}, path)
    with pytest.raises(ModelLoadError) as info:
        load_model(path)
    return path, str(info.value)


# -- info -m: the weights that wrote the file, not just a model of that name -----------------------------------
def test_info_model_of_the_same_name_but_other_weights_does_not_describe_the_file(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A file of model 'mine' at 24 kHz; ``info -m`` with another 'mine' (16 kHz, other weights,
    which decompress refuses for the file) used to print 16000 Hz, 0.300 s and "complete: yes"."""
    writer = _tiny("mine", 0)
    other = _tiny("mine", 1, sample_rate=16_000)
    ecdc = _ecdc(writer, tmp_path / "a.ecdc")
    right = save_model(writer, tmp_path / "right.safetensors")
    wrong = save_model(other, tmp_path / "wrong.safetensors")
    code, out, err = run(capsys, "info", ecdc, "-m", right)
    assert (code, err) == (0, "") and "sample rate:   24000 Hz" in out and "duration:      0.200 s" in out
    code, out, err = run(capsys, "info", ecdc, "-m", wrong)
    assert code == 0
    assert "sample rate:   unknown (model not known)" in out and "16000" not in out
    assert "complete:      unknown (model not known" in out
    assert err.startswith(f"opencodec: warning: -m/--model '{wrong}' (model 'mine', weights hash ")
    assert err.endswith(f") was not used for {ecdc}, whose header records weights hash "
                        f"{out.split('hash ')[1][:16]}: other weights of that name wrote it; pass their weights file\n")
    assert run(capsys, "decompress", ecdc, tmp_path / "o.wav", "-m", wrong)[0] == 1  # as decompress says


def test_info_model_with_the_file_s_weights_under_another_name_describes_it(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The same weights saved under another name: decompress -m takes them (the hash is the
    file's), info -m said "unknown" and warned that -m was not used."""
    writer = _tiny("before", 0)
    ecdc = _ecdc(writer, tmp_path / "a.ecdc")
    writer.config.name = "after"
    renamed = save_model(writer, tmp_path / "after.safetensors")
    code, out, err = run(capsys, "info", ecdc, "-m", renamed)
    assert (code, err) == (0, "") and "model:         before\n" in out and "sample rate:   24000 Hz" in out
    assert "complete:      yes" in out
    assert run(capsys, "decompress", ecdc, tmp_path / "o.wav", "-m", renamed, "-q")[:1] == (0,)


# -- a stored configuration of the wrong types: refused when loaded, naming the field -------------------------
@pytest.mark.parametrize("field, value, said", [
    ("target_bandwidths", None, "target_bandwidths must be a non-empty list of kbps > 0, got None"),
    ("target_bandwidths", 6, "target_bandwidths must be a non-empty list of kbps > 0, got 6"),
    ("target_bandwidths", [], "target_bandwidths must be a non-empty list of kbps > 0, got []"),
    ("target_bandwidths", [1.5, float("nan")], "target_bandwidths must be a non-empty list of kbps > 0, got [1.5, nan]"),
    ("causal", "no", "causal must be true or false, got 'no'"),
    ("normalize", 0, "normalize must be true or false, got 0"),
    ("name", None, "name must be a non-empty string, got None"),
    ("lstm", -1, "lstm must be an integer >= 0, got -1"),
    ("ratios", 4, "ratios must be a list of integers (the strides), got 4"),
    ("segment", "1", "segment must be a number of seconds or null, got '1'"),
    ("overlap", None, "overlap must be a number (a fraction of a segment), got None"),
])
def test_a_stored_configuration_of_the_wrong_type_is_refused_when_loaded(
        field: str, value: object, said: str, tmp_path: Path) -> None:
    """These loaded without a word: compress then failed with a TypeError traceback from
    bandwidth.py (bandwidths None or a number), or a stored "causal": "no" computed as causal."""
    path, error = _load_error_with_config(tmp_path, field, value)
    assert error == f"{path}: invalid model configuration ({said})"


def test_compress_with_weights_whose_configuration_has_no_bandwidths_is_one_line(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import numpy as np
    import soundfile as sf

    model = _tiny("mine", 0)
    path = tmp_path / "w.th"
    torch.save({"state_dict": model.state_dict(), "config": {**model.config.to_dict(), "target_bandwidths": None}},
               path)
    src = tmp_path / "a.wav"
    sf.write(src, np.zeros(2400, dtype=np.float32), 24_000)
    code, out, err = run(capsys, "compress", src, tmp_path / "a.ecdc", "-m", path)
    assert (code, out) == (1, "") and err == (f"opencodec: error: {path}: invalid model configuration "
                                              f"(target_bandwidths must be a non-empty list of kbps > 0, got None)\n")
    assert not (tmp_path / "a.ecdc").exists()


def test_configurations_that_compute_still_load(tmp_path: Path) -> None:
    """What the check must not refuse: numpy integers, tuples, an integer segment, no LSTM nor
    residual layers, a dilation base 0 with one residual layer (it computes as 1)."""
    import numpy as np

    from opencodec.pretrained import load_model, model_from_state_dict

    model = _tiny("mine", 0, segment=1, overlap=0, normalize=True, dilation_base=0)
    path = save_model(model, tmp_path / "w.safetensors")
    assert load_model(path).config.to_dict() == model.config.to_dict()
    config = EncodecConfig(**{**model.config.to_dict(), "n_q": np.int64(4), "target_bandwidths": (1.5, np.float32(3))})
    assert model_from_state_dict(model.state_dict(), config).n_q == 4
    bare = _tiny("bare", 0, n_residual_layers=0)
    assert load_model(save_model(bare, tmp_path / "b.safetensors")).config.n_residual_layers == 0


@pytest.mark.parametrize("field, value", [("target_bandwidths", []), ("name", None), ("causal", 1)])
def test_save_model_refuses_a_configuration_that_would_not_load_back(field: str, value: object,
                                                                     tmp_path: Path) -> None:
    """``EncodecModel`` builds these, and save_model wrote a file that load_model refuses."""
    model = _tiny("mine", 0)
    setattr(model.config, field, value)
    with pytest.raises(ValueError, match=rf"^save_model: the model's configuration cannot be loaded back "
                                         rf"\({field} must be "):
        save_model(model, tmp_path / "w.safetensors")
    assert list(tmp_path.iterdir()) == []


# -- a broken installation: the shipped release's file is missing ---------------------------------------------
def test_info_and_config_for_name_of_a_missing_shipped_release_say_reinstall(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """Was "No such file or directory: .../weights/opencodec_24khz.safetensors" (info, compress),
    while decompress said what the README says: reinstall."""
    from opencodec import model_config
    from opencodec.bitstream.header import EcdcHeader, header_bytes
    from opencodec.errors import ModelLoadError
    from opencodec.releases import codec_release

    monkeypatch.setattr(model_config, "BUNDLED_DIR", tmp_path / "weights")
    missing = tmp_path / "weights" / "opencodec_24khz.safetensors"
    said = (f"the bundled model 'opencodec_24khz_v5' is missing from the installation ({missing}); "
            f"reinstall opencodec")
    for name in ("opencodec_24khz", "opencodec_24khz_v5"):
        with pytest.raises(ModelLoadError) as info:
            model_config.config_for_name(name)
        assert str(info.value) == said
    ecdc = tmp_path / "a.ecdc"
    v5 = codec_release("opencodec_24khz_v5")
    assert v5 is not None
    ecdc.write_bytes(header_bytes(EcdcHeader(v5.name, 320, 8, False, model_hash=v5.short_hash)) + bytes(10))
    code, out, err = run(capsys, "info", ecdc)
    assert (code, out, err) == (1, "", f"opencodec: error: {ecdc}: {said}\n")


# -- a stored configuration larger than the tensors: refused before anything is built -------------------------
@pytest.mark.parametrize("field, value, said", [
    ("n_q", 10**6, "n_q 1000000 (its tensors: 4)"),
    ("n_filters", 10**5, "n_filters 100000 (its tensors: 4)"),
    ("bins", 2**40, "bins 1099511627776 (its tensors: 1024)"),
    ("ratios", [8, 5, 4, 2, 2], "ratios [8, 5, 4, 2, 2] (its tensors: [8, 5, 4, 2])"),
])
def test_a_stored_configuration_larger_than_its_tensors_is_refused_before_building(
        field: str, value: object, said: str, tmp_path: Path) -> None:
    """A 60 kB weights file whose stored configuration says n_q 10**6 made load_model (and
    ``info -m``) build that model first: > 5.6 GB and over 100 s before failing; n_filters 10**5
    or bins 2**40 failed with torch's "can't allocate memory" RuntimeError, not a ModelLoadError."""
    path, error = _load_error_with_config(tmp_path, field, value)
    assert error == f"{path} does not match the mine architecture: {said}"


# -- info of a device or pipe: the header first, the rest counted, not kept ------------------------------------
def _limited_memory() -> None:
    import resource

    resource.setrlimit(resource.RLIMIT_AS, (2 << 30, 2 << 30))  # 2 GiB: the old reading ran into it


def test_info_of_an_endless_device_answers_from_its_first_bytes() -> None:
    """``opencodec info /dev/zero`` read the whole device into memory before parsing the header
    (MemoryError under a 2 GiB limit after ~3 s; without a limit it takes the machine's memory)."""
    env = {**os.environ, "PYTHONPATH": str(Path(opencodec.__file__).parents[1]), "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-m", "opencodec", "info", "/dev/zero"], capture_output=True,
                          timeout=120, env=env, preexec_fn=_limited_memory)
    assert (done.returncode, done.stdout) == (1, b"")
    assert done.stderr == (b"opencodec: error: /dev/zero: not an ECDC file: magic expected b'ECDC', got "
                           b"b'\\x00\\x00\\x00\\x00'\n")


def test_info_of_a_pipe_counts_its_bytes(tmp_path: Path) -> None:
    """A pipe is still read to its end (its size, and 3 MiB after the end of the body)."""
    from opencodec.bitstream import parse_header
    from opencodec.ecdc_info import describe_file

    model = _tiny("mine", 0)
    data = _ecdc(model, tmp_path / "a.ecdc").read_bytes()
    extra = bytes(3 << 20)
    fifo = tmp_path / "pipe.ecdc"
    os.mkfifo(fifo)
    writer = threading.Thread(target=lambda: fifo.write_bytes(data + extra))
    writer.start()
    info = describe_file(fifo, ("mine", model.config))
    writer.join()
    assert (info["size_bytes"], info["body_bytes_missing"]) == (len(data) + len(extra), -len(extra))
    assert info["body_bytes"] == len(data) + len(extra) - parse_header(data)[1]


# -- a safetensors file whose stored configuration is not a JSON object -------------------------------------------
@pytest.mark.parametrize("text, said", [
    ("[" * 100_000, "is not valid JSON (nested too deep)"),
    ('{"a": ' * 50_000, "is not valid JSON (nested too deep)"),
    ("[1, 2]", "must be a JSON object, got list"),
    ('"tiny"', "must be a JSON object, got str"),
])
def test_a_stored_configuration_that_is_not_a_json_object_is_one_line(
        text: str, said: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Were a RecursionError traceback (deep nesting) and a TypeError meant for Python callers
    ("config must be an EncodecConfig, a dict or None") from load_model, and so from -m."""
    from safetensors.torch import save_file

    model = _tiny("mine", 0)
    path = tmp_path / "w.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path),
              metadata={"opencodec_config": text})
    ecdc = _ecdc(model, tmp_path / "a.ecdc")
    code, out, err = run(capsys, "info", ecdc, "-m", path)
    assert (code, out, err) == (1, "", f"opencodec: error: {path}: metadata 'opencodec_config' {said}\n")


# -- tensors that give no architecture: a ModelLoadError, with or without a stored configuration ---------------
@pytest.mark.parametrize("key, tensor", [("encoder.model.0.conv.conv.weight_v", torch.zeros(3)),
                                         ("encoder.model.x.conv.conv.weight", torch.zeros(2))])
@pytest.mark.parametrize("with_config", [False, True])
def test_tensors_that_give_no_architecture_are_a_model_load_error(key: str, tensor: torch.Tensor, with_config: bool,
                                                                  tmp_path: Path) -> None:
    """Reading the architecture off such tensors raised ValueError ("not enough values to
    unpack", "invalid literal for int()") from deep inside infer_config."""
    from opencodec.errors import ModelLoadError
    from opencodec.pretrained import load_model

    model = _tiny("mine", 0)
    state = {**model.state_dict(), key: tensor}
    path = tmp_path / "w.th"
    torch.save({"state_dict": state, "config": model.config.to_dict()} if with_config else state, path)
    with pytest.raises(ModelLoadError) as info:
        load_model(path)
    said = str(info.value)
    assert said.startswith(f"{path} does not match the mine architecture: " if with_config else
                           f"{path}: not an EnCodec state dict: its tensors give no architecture (ValueError: ")


# -- a header with more codebooks than the model it names: refused before that model is loaded -----------------
@pytest.mark.parametrize("name, by_hash, said", [
    ("opencodec_24khz_v1", "opencodec_24khz_v1", "opencodec_24khz_v1"),  # not shipped: extracted from git
    ("encodec_48khz", None, "encodec_48khz"),  # official: downloaded
    ("mine", "opencodec_24khz_v4", "opencodec_24khz_v4"),  # the release whose hash the header records
])
def test_decompress_refuses_too_many_codebooks_before_loading_the_model(
        name: str, by_hash: str | None, said: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    """info refused these headers at once; decompress first asked for v1's file to be extracted
    from git, or downloaded the official weights (here: failed offline), only to refuse them."""
    from opencodec.bitstream.header import EcdcHeader, header_bytes
    from opencodec.errors import BitstreamError
    from opencodec.identity import model_for_file
    from opencodec.releases import codec_release

    monkeypatch.setenv("OPENCODEC_OFFLINE", "1")
    monkeypatch.setenv("OPENCODEC_CACHE", str(tmp_path / "cache"))
    release = codec_release(by_hash) if by_hash else None
    digest = release.short_hash if release else None
    ecdc = tmp_path / "a.ecdc"
    ecdc.write_bytes(header_bytes(EcdcHeader(name, 320, 17, False, model_hash=digest)) + bytes(100))
    message = f"uses 17 codebooks, but model '{said}' has at most 16: it is not the model that wrote it"

    def never(loaded: str) -> EncodecModel:
        raise AssertionError(f"loaded {loaded}")

    with pytest.raises(BitstreamError, match=f"^the ECDC file {message}$"):
        model_for_file(name, digest, 17, "the ECDC file", load=never)
    code, out, err = run(capsys, "decompress", ecdc, tmp_path / "o.wav")
    assert (code, out, err) == (1, "", f"opencodec: error: {ecdc}: the file {message}\n")
    assert run(capsys, "info", ecdc)[2] == err
