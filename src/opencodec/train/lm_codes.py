"""The codes an entropy model trains on, extracted once and cached.

Every file of the train and valid manifests is encoded once by the codec at its largest
bandwidth (lower bandwidths use the first ``k`` codebooks: residual quantisation codes are
prefixes of each other) and cached in a safetensors file keyed by the codec's weights, the
manifest's content and the number of codebooks (:func:`extract_codes`); a rerun loads the
cache. Each segment of a segmenting codec (48 kHz) is its own sequence, because the coder
restarts the entropy model at every segment.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import sys
import typing as tp
from pathlib import Path

import torch

from .._files import atomic_output
from ..bandwidth import check_bandwidth
from ..errors import AudioIOError, ConfigError, UnsupportedBandwidthError
from ..model import EncodecModel
from ..weights_hash import codec_fingerprint  # noqa: F401  (imported from here by lm_solver and tests)
from .config_checks import codec_field
from .lm_config import Settings, check_coder_limits, check_seq_len

#: What ``codec`` says of an entropy model given in place of the codec whose codes are modelled.
CODEC_LM_ADVICE = ("codec takes the codec whose codes the entropy model learns (a codec's name or weights "
                   "file); a train-lm run resumes from the checkpoint.pt in its --run-dir")

CACHE_FORMAT = 1


# -- 2. codes: extraction once, cached -----------------------------------------------------------
@dataclasses.dataclass
class CodeSet:
    """The codes of a manifest: sequence ``i`` is ``codes[:, offsets[i]:offsets[i + 1]]``.

    Attributes:
        codes: int16 (int32 for codebooks over 32768 bins) ``[K, N]``, all sequences
            concatenated in time; ``K`` codebooks, values in ``[0, bins)``.
        offsets: int64 ``[S + 1]``, start frame of each of the ``S`` sequences, then ``N``.
        names: ``S`` labels (file path, plus ``#segN`` for a segmenting codec).
        skipped: ``{"path", "error"}`` of every file that could not be read.
    """

    codes: torch.Tensor
    offsets: torch.Tensor
    names: list[str]
    skipped: list[dict[str, str]] = dataclasses.field(default_factory=list)

    def __len__(self) -> int:
        return len(self.names)

    @property
    def num_codebooks(self) -> int:
        return int(self.codes.shape[0])

    @property
    def lengths(self) -> torch.Tensor:
        """Frames per sequence, int64 ``[S]``."""
        return self.offsets[1:] - self.offsets[:-1]

    def sequence(self, i: int) -> torch.Tensor:
        """Codes of sequence ``i`` as int64 ``[K, F]``."""
        return self.codes[:, int(self.offsets[i]): int(self.offsets[i + 1])].long()

    @classmethod
    def from_sequences(cls, sequences: tp.Sequence[torch.Tensor], names: tp.Sequence[str],
                       skipped: tp.Sequence[dict[str, str]] = ()) -> CodeSet:
        """Concatenate ``[K, F_i]`` code tensors (same ``K``) into one set."""
        if not sequences:
            raise ValueError("a CodeSet needs at least one sequence")
        largest = max((int(s.max()) for s in sequences if s.numel()), default=0)
        dtype = torch.int16 if largest < 2**15 else torch.int32
        lengths = torch.tensor([0] + [int(s.shape[-1]) for s in sequences], dtype=torch.int64)
        return cls(torch.cat([s.to(dtype) for s in sequences], dim=1), lengths.cumsum(0),
                   list(names), list(skipped))


def _manifest_rows(manifests: tp.Sequence[str]) -> list[dict]:
    from ..data.dataset import load_manifests

    for m in manifests:
        if not Path(m).is_file():
            raise FileNotFoundError(f"no manifest file {m}")
    return load_manifests(list(manifests))  # ConfigError naming the file and line of a bad row


def check_manifest_rows(s: Settings) -> None:
    """Refuse, as a ``ConfigError`` naming its config field and before any code is extracted or
    anything written, a manifest list that names no file: ``data.train`` always, ``data.valid``
    when given (an empty list trains without validation), ``report.manifests`` when the report
    is asked for; or whose files are all missing."""
    fields = [("data.train", s.train_manifests, "")]
    if s.valid_manifests:
        fields.append(("data.valid", s.valid_manifests, "; set data.valid=[] to train without validation"))
    if s.report_items > 0 and s.report_manifests:
        fields.append(("report.manifests", s.report_manifests, "; set report.items=0 to skip the report"))
    for field, manifests, advice in fields:
        rows = _manifest_rows(manifests)
        names = ", ".join(str(m) for m in manifests)
        if not rows:
            raise ConfigError(f"config field {field}: the manifest(s) {names} list no files{advice}")
        paths = [str(row.get("path")) for row in rows]
        if not any(Path(p).is_file() for p in paths):
            raise ConfigError(f"config field {field}: none of the {len(paths)} file(s) the manifest(s) {names} "
                              f"list exists (e.g. {paths[0]}){advice}")


def _cache_key(codec_hash: str, rows: list[dict], num_codebooks: int) -> str:
    """What decides whether cached codes are still valid: codec weights, manifest rows (with
    each file's size) and codebooks."""
    digest = hashlib.sha256(f"opencodec-lm-codes/{CACHE_FORMAT}/{codec_hash}/{num_codebooks}/".encode())
    for row in rows:
        path = Path(row.get("path", ""))
        size = path.stat().st_size if path.is_file() else -1
        digest.update(json.dumps(row, sort_keys=True).encode() + f"/{size}\n".encode())
    return digest.hexdigest()


def _save_codes(path: Path, codes: CodeSet, meta: dict[str, tp.Any]) -> None:
    from safetensors.torch import save_file

    metadata = {k: json.dumps(v) for k, v in meta.items()}
    metadata.update(names=json.dumps(codes.names), skipped=json.dumps(codes.skipped))
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_output(path) as tmp:
        save_file({"codes": codes.codes.contiguous(), "offsets": codes.offsets.contiguous()},
                  str(tmp), metadata=metadata)


def _load_codes(path: Path, key: str) -> CodeSet | None:
    """The cached set at ``path`` if it exists and carries ``key``, else None."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file, safe_open

    if not path.is_file():
        return None
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
        if json.loads(meta.get("key", "null")) != key:
            return None
        tensors = load_file(str(path))
        return CodeSet(tensors["codes"], tensors["offsets"], json.loads(meta["names"]),
                       json.loads(meta["skipped"]))
    except (SafetensorError, OSError, KeyError, ValueError) as exc:
        print(f"warning: ignoring unreadable code cache {path} ({exc}); encoding again", file=sys.stderr)
        return None


def _encode_file(codec: EncodecModel, path: str, device: torch.device) -> list[torch.Tensor]:
    """Codes of one audio file at the codec's current bandwidth: one int64 ``[K, F]`` per segment."""
    from ..audio import convert_audio, read_audio

    wav, sr = read_audio(path)
    wav = convert_audio(wav, sr, codec.sample_rate, codec.channels)
    with torch.inference_mode():
        frames = codec.encode(wav[None].to(device))
    return [frame.codes[0].cpu() for frame in frames]


def extract_codes(codec: EncodecModel, manifests: tp.Sequence[str], cache_dir: str | os.PathLike[str],
                  split: str = "train", progress: bool = True, device: torch.device | str = "cpu",
                  codec_hash: str | None = None) -> tuple[CodeSet, bool]:
    """Codes of every file of ``manifests`` at the codec's largest bandwidth, cached.

    Args:
        codec: the codec (its weights are hashed into the cache key).
        manifests: JSONL manifests (rows with ``path``; see ``opencodec.data.dataset``).
        cache_dir: folder of the cache files ``codes-<split>-<key>.safetensors``.
        split: a label for the file name and the progress bar.
        progress: show a tqdm bar while encoding.
        device: where the codec runs.
        codec_hash: ``codec_fingerprint(codec)`` if already computed.
    Returns:
        ``(codes, from_cache)``. Files that cannot be read are reported on stderr, skipped
        and listed in ``codes.skipped``.
    Raises:
        AudioIOError: no file of the manifests could be read.
    """
    from ..progress import progress_bar

    rows = _manifest_rows(manifests)
    if not rows:
        raise ConfigError(f"manifest(s) {', '.join(manifests)} list no files")
    top = max(codec.target_bandwidths)
    num_codebooks = codec.num_codebooks(top)
    key = _cache_key(codec_hash or codec_fingerprint(codec), rows, num_codebooks)
    path = Path(cache_dir) / f"codes-{split}-{key[:24]}.safetensors"
    cached = _load_codes(path, key)
    if cached is not None:
        return cached, True
    previous = codec.bandwidth
    codec.set_target_bandwidth(top)
    codec.to(device)
    sequences, names, skipped = [], [], []
    try:
        for row in progress_bar(rows, desc=f"codes {split}", unit="file", disable=not progress,
                                dynamic_ncols=True):
            try:
                segments = _encode_file(codec, row["path"], torch.device(device))
            except AudioIOError as exc:
                skipped.append({"path": row["path"], "error": str(exc)})
                print(f"warning: skipping {row['path']}: {exc}", file=sys.stderr)
                continue
            for s, codes in enumerate(segments):
                sequences.append(codes)
                names.append(row["path"] if len(segments) == 1 else f"{row['path']}#seg{s}")
    finally:
        codec.bandwidth = previous
    if not sequences:
        raise AudioIOError(f"no file of {', '.join(manifests)} could be read ({len(skipped)} skipped)")
    result = CodeSet.from_sequences(sequences, names, skipped)
    _save_codes(path, result, {"key": key, "codec": codec.name, "num_codebooks": num_codebooks,
                               "frame_rate": codec.frame_rate})
    return result, False


@dataclasses.dataclass
class CodeData:
    """What training needs: the codes and the facts about the codec that produced them.

    ``bandwidths`` (kbps) and ``codebooks`` (the codebook count of each) are the bandwidths
    the model is trained and validated for; ``codec`` is None when codes were given directly
    (tests), which skips the end-to-end report.
    """

    train: CodeSet
    valid: CodeSet | None
    card: int
    frame_rate: int
    bandwidths: list[float]
    codebooks: list[int]
    codec_name: str
    codec_hash: str
    codec: EncodecModel | None = None
    codec_source: str | None = None  # the config's codec: a name or a weights file


def load_codec(s: Settings) -> tuple[EncodecModel, list[float]]:
    """The codec of ``s.codec`` and the bandwidths to train for, with the settings that depend
    on it checked (the bandwidths are its own, ``seq_len`` fits its frame rate, the entropy
    coder's size limits hold: :func:`~.lm_config.check_coder_limits`): before anything is
    written."""
    from ..pretrained import load_model

    if not s.codec:
        raise ConfigError("config field codec is missing (a codec name such as opencodec_24khz, or a "
                          "weights file)")
    if not s.train_manifests:
        raise ConfigError("config field data.train is missing (JSONL manifest(s) of training audio)")
    with codec_field("codec", CODEC_LM_ADVICE):  # an entropy model: a ConfigError
        codec = load_model(s.codec)
    bandwidths = s.bandwidths or codec.target_bandwidths
    try:
        bandwidths = [check_bandwidth(b, codec.target_bandwidths, codec.name) for b in bandwidths]
    except UnsupportedBandwidthError as error:
        raise ConfigError(f"config field bandwidths: {error}") from None
    check_seq_len(s, codec.frame_rate)
    bandwidths = [float(b) for b in bandwidths]
    check_coder_limits(s, codec.name, {b: codec.num_codebooks(b) for b in bandwidths}, codec.bins,
                       codec.frame_rate)
    return codec, bandwidths


def prepare_data(s: Settings, run: Path, device: torch.device, progress: bool = True,
                 loaded: tuple[EncodecModel, list[float]] | None = None, codec_hash: str | None = None) -> CodeData:
    """Extract (or load cached) codes of the manifests with the codec of ``s.codec`` (``loaded``:
    what :func:`load_codec` returned; by default it is called here; ``codec_hash``: its
    :func:`codec_fingerprint` if already computed)."""
    codec, bandwidths = load_codec(s) if loaded is None else loaded
    codec_hash = codec_hash or codec_fingerprint(codec)
    cache = Path(s.cache_dir) if s.cache_dir else run / "codes"
    train_codes, hit = extract_codes(codec, s.train_manifests, cache, "train", progress, device, codec_hash)
    print(f"train codes: {len(train_codes)} sequences, {int(train_codes.offsets[-1])} frames "
          f"({'cache' if hit else 'encoded'})", file=sys.stderr)
    valid_codes = None
    if s.valid_manifests:
        valid_codes, hit = extract_codes(codec, s.valid_manifests, cache, "valid", progress, device,
                                         codec_hash)
        print(f"valid codes: {len(valid_codes)} sequences, {int(valid_codes.offsets[-1])} frames "
              f"({'cache' if hit else 'encoded'})", file=sys.stderr)
    codec.cpu()
    return CodeData(train_codes, valid_codes, codec.bins, codec.frame_rate, [float(b) for b in bandwidths],
                    [codec.num_codebooks(b) for b in bandwidths], codec.name, codec_hash, codec, s.codec)

