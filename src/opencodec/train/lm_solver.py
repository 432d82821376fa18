"""Train the entropy model on a codec's codes: ``opencodec train-lm CONFIG [key=value ...]``.

Also ``python -m opencodec.train.lm_solver CONFIG [key=value ...]``, and
``python -m opencodec.train.lm_solver report --lm LM.safetensors --manifest M.jsonl`` for the
measured saving of any entropy model on held-out audio.

This file reads top to bottom:

1. configuration: a YAML file from ``configs/`` (``lm_tiny.yaml``, ``lm_opencodec_24khz.yaml``)
   plus dotted ``key=value`` overrides, checked field by field (:func:`parse_settings`);
2. codes: every file of the train and valid manifests is encoded once by the codec at its
   largest bandwidth (lower bandwidths use the first ``k`` codebooks: residual quantisation
   codes are prefixes of each other) and cached in a safetensors file keyed by the codec's
   weights, the manifest's content and the number of codebooks (:func:`extract_codes`);
   a rerun loads the cache. Each segment of a segmenting codec (48 kHz) is its own
   sequence, because the coder restarts the entropy model at every segment;
3. the model (:class:`~opencodec.entropy.EntropyLM`, paper sizes by default) and its
   differentiable forward (:func:`lm_logits`), identical in arithmetic to the streaming
   path the coder uses;
4. batches: random windows of ``seq_len`` frames (a sequence drawn in proportion to its
   length, a start uniform in it; the first input of a window that starts a sequence is
   0, "no code", as in the coder; positions are absolute, as in the coder). One entropy
   model serves every bandwidth: at ``k`` codebooks the coder feeds the sum of the first
   ``k`` embeddings and reads the first ``k`` heads, so each step draws ``k`` from the
   codec's bandwidths and trains exactly that (the loss is on the first ``k`` heads);
5. the loop: AdamW/Adam with linear warm-up and a cosine or constant schedule, gradient
   clipping, cross-entropy reported in bits per code, checkpoints with exact resume
   (model, optimiser, step, random states), TensorBoard, ``metrics.jsonl``, a tqdm bar,
   periodic validation (held-out bits per code per bandwidth, computed with
   ``EntropyLM.forward`` under inference mode: the coder's own arithmetic) and an export
   to ``<run_dir>/lm.safetensors`` that ``opencodec.pretrained.load_lm_model`` and
   ``opencodec compress --lm-model`` read;
6. at the end, the saving on held-out audio (:func:`evaluate_saving`): per bandwidth the
   ideal bits per code (``-log2 p`` of the model) against the plain ``log2(bins)`` = 10
   bits, and the real ``.ecdc`` sizes written by ``compress(..., lm=lm)`` against
   ``compress(...)``, in ``<run_dir>/report.json`` and ``report.md``.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import math
import os
import sys
import time
import typing as tp
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .._files import atomic_output, check_output, write_bytes_atomic
from ..argtypes import bandwidth_arg, positive_int
from ..bandwidth import check_bandwidth
from ..errors import AudioIOError, ModelLoadError, OpenCodecError, UnsupportedBandwidthError
from ..model import EncodecModel

# The codec trainer's helpers (config loading, seeding, atomic checkpoints, random states).
from .solver import (
    _atomic_torch_save,
    _rng_state,
    _seed_everything,
    _set_rng_state,
    _step_rng,
    learning_rate_at,
    parse_run_arguments,
)

if tp.TYPE_CHECKING:
    from ..entropy import EntropyLM

CHECKPOINT = "checkpoint.pt"
EXPORT = "lm.safetensors"
REPORT_JSON = "report.json"
REPORT_MD = "report.md"
LM_METADATA_KEY = "opencodec_lm_config"
CACHE_FORMAT = 1
IGNORE = -100  # target of padded positions (not scored)
# What load_lm_model builds for a weights file: 8 heads, a 3.5 s window, max period 10000.
LOADABLE_HEADS = 8
LOADABLE_PAST_SECONDS = 3.5


class ConfigError(OpenCodecError, ValueError):
    """A ``train-lm`` config field is missing, has the wrong type or an unusable value."""


# -- 1. configuration --------------------------------------------------------------------------
_MISSING = object()


def _get(cfg: dict, dotted: str, kind: type | tuple[type, ...], default: tp.Any = _MISSING) -> tp.Any:
    """The value at ``dotted`` (``"optim.lr"``) checked against ``kind``; ``default`` if absent."""
    node: tp.Any = cfg
    *parents, leaf = dotted.split(".")
    for i, part in enumerate(parents):
        node = node.get(part) if isinstance(node, dict) else None
        if node is None:
            node = {}
        if not isinstance(node, dict):
            raise ConfigError(f"config field {'.'.join(parents[:i + 1])} must be a section, "
                              f"got {node!r}")
    value = node.get(leaf, _MISSING)
    if value is _MISSING or (value is None and default is not _MISSING):
        if default is _MISSING:
            raise ConfigError(f"config field {dotted} is missing")
        return default
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if float in kinds and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if list in kinds and isinstance(value, str):
        value = [value]
    if (isinstance(value, bool) and bool not in kinds) or not isinstance(value, kinds):
        names = " or ".join(k.__name__ for k in kinds)
        raise ConfigError(f"config field {dotted}: expected {names}, got {value!r}")
    return value


@dataclasses.dataclass
class Settings:
    """Everything a ``train-lm`` run reads from its config (see ``configs/lm_*.yaml``)."""

    name: str
    codec: str | None
    train_manifests: list[str]
    valid_manifests: list[str]
    cache_dir: str | None
    bandwidths: list[float] | None
    dim: int
    num_heads: int
    num_layers: int
    hidden_scale: float
    past_context_s: float
    seq_len: int
    batch_size: int
    optimizer: str
    lr: float
    betas: tuple[float, float]
    weight_decay: float
    warmup_steps: int
    schedule: str
    min_lr_ratio: float
    grad_clip: float
    steps: int
    log_every: int
    valid_every: int
    checkpoint_every: int
    tensorboard: bool
    valid_max_items: int
    report_items: int
    report_manifests: list[str]
    seed: int
    threads: int | None
    device: str
    amp: str


def parse_settings(cfg: dict) -> Settings:
    """Check a loaded config and fill in the defaults (the paper's LM sizes).

    Raises :class:`ConfigError` naming the field for a missing or mistyped value, and for LM
    sizes that ``load_lm_model`` could not rebuild from the exported file (it assumes
    8 heads and a 3.5 s attention window).
    """
    s = Settings(
        name=_get(cfg, "name", str, "lm"),
        codec=_get(cfg, "codec", str, None),
        train_manifests=[str(m) for m in _get(cfg, "data.train", list, [])],
        valid_manifests=[str(m) for m in _get(cfg, "data.valid", list, [])],
        cache_dir=_get(cfg, "data.cache_dir", str, None),
        bandwidths=[float(b) for b in _get(cfg, "bandwidths", list, [])] or None,
        dim=_get(cfg, "lm.dim", int, 200),
        num_heads=_get(cfg, "lm.num_heads", int, LOADABLE_HEADS),
        num_layers=_get(cfg, "lm.num_layers", int, 5),
        hidden_scale=_get(cfg, "lm.hidden_scale", float, 4.0),
        past_context_s=_get(cfg, "lm.past_context_s", float, LOADABLE_PAST_SECONDS),
        seq_len=_get(cfg, "seq_len", int, 300),
        batch_size=_get(cfg, "optim.batch_size", int, 32),
        optimizer=_get(cfg, "optim.name", str, "adamw").lower(),
        lr=_get(cfg, "optim.lr", float, 5e-4),
        betas=tuple(float(b) for b in _get(cfg, "optim.betas", list, [0.9, 0.95])),  # type: ignore[arg-type]
        weight_decay=_get(cfg, "optim.weight_decay", float, 0.01),
        warmup_steps=_get(cfg, "optim.warmup_steps", int, 0),
        schedule=_get(cfg, "optim.schedule", str, "cosine").lower(),
        min_lr_ratio=_get(cfg, "optim.min_lr_ratio", float, 0.1),
        grad_clip=_get(cfg, "optim.grad_clip", float, 1.0),
        steps=_get(cfg, "optim.steps", int, 1000),
        log_every=_get(cfg, "log.every", int, 10),
        valid_every=_get(cfg, "log.valid_every", int, 500),
        checkpoint_every=_get(cfg, "log.checkpoint_every", int, 500),
        tensorboard=_get(cfg, "log.tensorboard", bool, True),
        valid_max_items=_get(cfg, "valid.max_items", int, 200),
        report_items=_get(cfg, "report.items", int, 16),
        report_manifests=[str(m) for m in _get(cfg, "report.manifests", list, [])],
        seed=_get(cfg, "seed", int, 0),
        threads=_get(cfg, "threads", int, None),
        device=_get(cfg, "device", str, "auto"),
        amp=_get(cfg, "amp", str, "none"),
    )
    positive = {"lm.dim": s.dim, "lm.num_layers": s.num_layers, "seq_len": s.seq_len,
                "optim.batch_size": s.batch_size, "optim.steps": s.steps, "log.every": s.log_every,
                "log.valid_every": s.valid_every, "log.checkpoint_every": s.checkpoint_every}
    for field, value in positive.items():
        if value < 1:
            raise ConfigError(f"config field {field} must be >= 1, got {value}")
    if s.num_heads != LOADABLE_HEADS:
        raise ConfigError(f"config field lm.num_heads is {s.num_heads}, but load_lm_model builds "
                          f"{LOADABLE_HEADS} heads, so the exported model would not load as trained")
    if s.past_context_s != LOADABLE_PAST_SECONDS:
        raise ConfigError(f"config field lm.past_context_s is {s.past_context_s:g}, but load_lm_model "
                          f"gives a weights file a {LOADABLE_PAST_SECONDS:g} s window")
    if s.dim % s.num_heads or s.dim % 2:
        raise ConfigError(f"config field lm.dim ({s.dim}) must be even and a multiple of lm.num_heads "
                          f"({s.num_heads})")
    if s.optimizer not in ("adamw", "adam"):
        raise ConfigError(f"config field optim.name: expected adamw or adam, got {s.optimizer!r}")
    if s.schedule not in ("cosine", "constant"):
        raise ConfigError(f"config field optim.schedule: expected cosine or constant, got {s.schedule!r}")
    if len(s.betas) != 2:
        raise ConfigError(f"config field optim.betas: expected two numbers, got {list(s.betas)}")
    if s.amp not in ("none", "bf16"):
        raise ConfigError(f"config field amp: expected none or bf16, got {s.amp!r}")
    return s


def _device(want: str) -> torch.device:
    if want == "auto":
        want = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(want)


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


def codec_fingerprint(codec: EncodecModel) -> str:
    """sha256 (hex) of the codec's configuration and every tensor of its state dict."""
    digest = hashlib.sha256(json.dumps(codec.config.to_dict(), sort_keys=True).encode())
    for key, value in sorted(codec.state_dict().items()):
        digest.update(key.encode())
        digest.update(value.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def _manifest_rows(manifests: tp.Sequence[str]) -> list[dict]:
    from ..data.dataset import load_manifests

    for m in manifests:
        if not Path(m).is_file():
            raise FileNotFoundError(f"no manifest file {m}")
    try:
        return load_manifests(list(manifests))
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise ConfigError(f"cannot read manifest(s) {', '.join(manifests)}: {exc}") from exc


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
    from tqdm import tqdm

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
        for row in tqdm(rows, desc=f"codes {split}", unit="file", disable=not progress, dynamic_ncols=True):
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


def prepare_data(s: Settings, run: Path, device: torch.device, progress: bool = True) -> CodeData:
    """Load the codec of ``s.codec``, extract (or load cached) codes of the manifests."""
    from ..pretrained import load_model

    if not s.codec:
        raise ConfigError("config field codec is missing (a codec name such as opencodec_24khz, or a "
                          "weights file)")
    if not s.train_manifests:
        raise ConfigError("config field data.train is missing (JSONL manifest(s) of training audio)")
    codec = load_model(s.codec)
    bandwidths = s.bandwidths or codec.target_bandwidths
    try:
        bandwidths = [check_bandwidth(b, codec.target_bandwidths, codec.name) for b in bandwidths]
    except UnsupportedBandwidthError as error:
        raise ConfigError(f"config field bandwidths: {error}") from None
    codec_hash = codec_fingerprint(codec)
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


# -- 3. the model ------------------------------------------------------------------------------
def build_lm(s: Settings, num_codebooks: int, card: int, frame_rate: int) -> EntropyLM:
    """An :class:`EntropyLM` with the config's sizes and the window ``load_lm_model`` uses."""
    from ..entropy import EntropyLM

    return EntropyLM(n_q=num_codebooks, card=card, dim=s.dim, num_heads=s.num_heads,
                     num_layers=s.num_layers, hidden_scale=s.hidden_scale,
                     past_context=int(s.past_context_s * frame_rate))


def _hidden(lm: EntropyLM, indices: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
    """Transformer output ``[B, T, dim]`` of a fresh state for ``indices`` ``[B, K, T]``."""
    from ..entropy import sin_embedding

    B, K, T = indices.shape
    x = lm.emb[0](indices[:, 0])
    for k in range(1, K):  # the coder's order: ((e_0 + e_1) + e_2) + ...
        x = x + lm.emb[k](indices[:, k])
    tr = lm.transformer
    positions = torch.arange(T, device=indices.device).view(1, -1, 1) + offsets.view(-1, 1, 1)
    x = tr.norm_in(x) + sin_embedding(positions, lm.dim, tr.max_period)
    past = x.new_zeros(B, 1, lm.dim)  # the streaming state's initial zero vector
    for layer in tr.layers:
        x = layer(x, past, tr.past_context)
    return x


def lm_logits(lm: EntropyLM, indices: torch.Tensor, offsets: torch.Tensor | None = None) -> torch.Tensor:
    """Differentiable logits of ``lm`` from a fresh state (``EntropyLM.forward`` caches its
    embedding and head tables without gradients, so training needs this path).

    Args:
        indices: long ``[B, K, T]``, ``1 + code`` of the previous frame (0: none), ``K <= n_q``.
        offsets: long ``[B]``, position of each window's first step (default 0).
    Returns:
        float ``[B, K, T, card]``; ``softmax`` over the last axis equals ``lm(indices)[0]`` for
        zero offsets (same operations, up to float rounding).
    """
    if offsets is None:
        offsets = torch.zeros(indices.shape[0], dtype=torch.long, device=indices.device)
    x = _hidden(lm, indices, offsets)
    return torch.stack([lm.linears[k](x) for k in range(indices.shape[1])], dim=1)


def _loss(lm: EntropyLM, inputs: torch.Tensor, targets: torch.Tensor, offsets: torch.Tensor
          ) -> tuple[torch.Tensor, int]:
    """Summed cross-entropy (nats) of the first ``K`` heads and the number of scored codes.

    inputs, targets: long ``[B, K, T]`` (targets ``IGNORE`` where padded); offsets ``[B]``.
    """
    x = _hidden(lm, inputs, offsets)
    valid = targets[:, 0] != IGNORE              # [B, T]: padding is the same in every codebook
    x = x[valid]                                 # [N, dim]: the heads only see scored steps
    total = x.new_zeros((), dtype=torch.float32)
    for k in range(inputs.shape[1]):  # one head at a time: [N, card] logits, not [N, K, card]
        logits = lm.linears[k](x).float()
        total = total + F.cross_entropy(logits, targets[:, k][valid], reduction="sum")
    return total, int(valid.sum()) * inputs.shape[1]


# -- 4. batches ----------------------------------------------------------------------------------
def sample_batch(codes: CodeSet, batch_size: int, seq_len: int, num_codebooks: int,
                 rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Random windows of the first ``num_codebooks`` codebooks.

    Each window picks a sequence with probability proportional to its frames and a start
    ``s`` uniform in ``[0, max(0, F - seq_len)]``.
    Returns:
        ``(inputs, targets, offsets)``: inputs long ``[B, K, T]`` (``1 + code`` of the previous
        frame; 0 at a sequence's first frame and in the padding), targets long ``[B, K, T]``
        (the codes; ``IGNORE`` past a sequence's end), offsets long ``[B]`` (the starts ``s``).
    """
    lengths = codes.lengths.numpy()
    picks = rng.choice(len(lengths), size=batch_size, p=lengths / lengths.sum())
    K, T = num_codebooks, seq_len
    inputs = torch.zeros(batch_size, K, T, dtype=torch.long)
    targets = torch.full((batch_size, K, T), IGNORE, dtype=torch.long)
    offsets = torch.zeros(batch_size, dtype=torch.long)
    for b, i in enumerate(picks):
        length = int(lengths[i])
        start = int(rng.integers(0, max(0, length - T) + 1))
        n = min(T, length - start)
        base = int(codes.offsets[i]) + start
        window = codes.codes[:K, base: base + n].long()
        targets[b, :, :n] = window
        inputs[b, :, 1:n] = window[:, :-1] + 1
        if start > 0:
            inputs[b, :, 0] = codes.codes[:K, base - 1].long() + 1
        offsets[b] = start
    return inputs, targets, offsets


def _batch_rng(seed: int, step: int) -> np.random.Generator:
    """The window sampler of ``step``: a function of (seed, step) only, so resume is exact."""
    return np.random.default_rng([seed, step, 0x4C4D])


def learning_rate(s: Settings, step: int) -> float:
    """Linear warm-up to ``lr`` over ``warmup_steps``, then constant or cosine down to
    ``min_lr_ratio * lr`` at ``steps`` (the codec trainer's ``learning_rate_at``)."""
    return learning_rate_at(step, s.lr, s.steps, s.schedule, s.min_lr_ratio, s.warmup_steps)


# -- 5. validation with the coder's path ---------------------------------------------------------
def sequence_bits(lm: EntropyLM, codes: torch.Tensor) -> torch.Tensor:
    """Ideal code lengths ``-log2 p(code)`` of one sequence under ``lm``, as the coder sees it.

    Args:
        codes: long ``[K, F]``, the codes of one coder segment (fresh state at its start).
    Returns:
        float64 ``[K, F]`` bits. Computed with ``EntropyLM.forward`` under inference mode (the
        same arithmetic as the streaming ``step`` the arithmetic coder calls).
    """
    K = codes.shape[0]
    device = next(lm.parameters()).device
    codes = codes.to(device)
    inputs = torch.cat([torch.zeros(K, 1, dtype=torch.long, device=device), codes[:, :-1] + 1], dim=1)
    with torch.inference_mode():
        probs, _ = lm(inputs[None])                                  # [1, K, F, card]
        p = probs[0].gather(-1, codes.unsqueeze(-1)).squeeze(-1)
    return -torch.log2(p.double().clamp_min(1e-30)).cpu()


def validate(lm: EntropyLM, codes: CodeSet, bandwidths: tp.Sequence[float],
             codebooks: tp.Sequence[int], frame_rate: int, max_items: int | None = None
             ) -> dict[str, float]:
    """Held-out bits per code at each bandwidth, and the implied bitrate (kbps).

    Uses the first ``max_items`` sequences of ``codes``; keys ``bits_per_code/<bw>kbps`` and
    ``ideal_kbps/<bw>kbps``. The model is left in train mode.
    """
    lm.eval()
    count = len(codes) if max_items is None else min(len(codes), max_items)
    out: dict[str, float] = {}
    for bw, k in zip(bandwidths, codebooks):
        bits, n = 0.0, 0
        for i in range(count):
            seq = codes.sequence(i)[:k]
            if seq.shape[-1] == 0:
                continue
            bits += float(sequence_bits(lm, seq).sum())
            n += seq.numel()
        out[f"bits_per_code/{bw:g}kbps"] = bits / max(n, 1)
        out[f"ideal_kbps/{bw:g}kbps"] = bits / max(n, 1) * k * frame_rate / 1000
    lm.train()
    return out


# -- 6. export -----------------------------------------------------------------------------------
def export_lm(lm: EntropyLM, path: str | os.PathLike[str], info: dict[str, tp.Any]) -> Path:
    """Write the LM's state dict (official ``LMModel`` keys) to a ``.safetensors`` file.

    ``info`` (codec name and hash, bandwidths, training step, ...) goes into the file's
    metadata under ``opencodec_lm_config`` together with the model sizes; the tensors alone
    are what ``opencodec.pretrained.load_lm_model`` needs.
    """
    from safetensors.torch import save_file

    path = Path(path)
    sizes = {"n_q": lm.n_q, "card": lm.card, "dim": lm.dim, "num_layers": len(lm.transformer.layers),
             "num_heads": lm.transformer.layers[0].self_attn.num_heads,
             "hidden": lm.transformer.layers[0].linear1.out_features,
             "past_context": lm.past_context, "max_period": lm.transformer.max_period}
    state = {k: v.detach().cpu().contiguous().clone() for k, v in lm.state_dict().items()}
    with atomic_output(path) as tmp:
        save_file(state, str(tmp), metadata={LM_METADATA_KEY: json.dumps({**sizes, **info})})
    return path


def read_lm_info(path: str | os.PathLike[str]) -> dict[str, tp.Any]:
    """The ``opencodec_lm_config`` metadata of an exported LM (empty for other files)."""
    if Path(path).suffix.lower() != ".safetensors":
        return {}
    from safetensors.torch import safe_open

    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
    return json.loads(meta[LM_METADATA_KEY]) if LM_METADATA_KEY in meta else {}


# -- 7. the run ----------------------------------------------------------------------------------
def train(cfg: dict, run_dir: str | os.PathLike[str] | None = None, max_steps: int | None = None,
          progress: bool = True, max_minutes: float | None = None, data: CodeData | None = None,
          return_model: bool = False) -> tp.Any:
    """Run (or resume) entropy-model training as configured; returns the run folder (and the
    model with ``return_model``).

    ``data`` gives the codes directly (tests); by default they come from ``prepare_data``.
    ``max_steps`` and ``max_minutes`` stop this invocation early after a validation, a
    checkpoint and an export; the run resumes from ``<run_dir>/checkpoint.pt``. When the run
    reaches ``optim.steps`` and the codec is known, the saving on held-out audio is measured
    (``report.items`` files) into ``report.json``/``report.md``.
    """
    s = parse_settings(cfg)
    started = time.monotonic()
    run = Path(run_dir or cfg.get("run_dir") or f"runs/{s.name}")
    run.mkdir(parents=True, exist_ok=True)
    write_bytes_atomic(run / "config.json", json.dumps(cfg, indent=2).encode())
    if s.threads:
        torch.set_num_threads(s.threads)
    device = _device(s.device)
    if data is None:
        data = prepare_data(s, run, device, progress)

    # the model and the optimiser
    _seed_everything(s.seed)
    lm = build_lm(s, max(data.codebooks), data.card, data.frame_rate).to(device)
    lm.train()
    optim_cls = torch.optim.AdamW if s.optimizer == "adamw" else torch.optim.Adam
    opt = optim_cls(lm.parameters(), lr=s.lr, betas=s.betas, weight_decay=s.weight_decay)

    # resume
    step = 0
    ckpt_path = run / CHECKPOINT
    if ckpt_path.exists():
        ckpt = torch.load(ckpt_path, map_location=device, weights_only=True)
        if ckpt.get("codec_hash") != data.codec_hash:
            raise ConfigError(f"{ckpt_path} was trained on the codes of another codec "
                              f"({ckpt.get('codec_name')}, weights {str(ckpt.get('codec_hash'))[:12]}); "
                              f"this config uses {data.codec_name} ({data.codec_hash[:12]}): "
                              f"use another --run-dir")
        try:
            lm.load_state_dict(ckpt["model"])
        except RuntimeError as exc:
            raise ConfigError(f"{ckpt_path} does not match the configured LM sizes: "
                              f"{str(exc).splitlines()[0]}") from exc
        opt.load_state_dict(ckpt["optim"])
        step = int(ckpt["step"])
        _set_rng_state(ckpt["rng"])
        print(f"resumed from {ckpt_path} at step {step}", file=sys.stderr)

    writer = None
    if s.tensorboard:
        from torch.utils.tensorboard import SummaryWriter
        writer = SummaryWriter(str(run / "tensorboard"))
    metrics_file = open(run / "metrics.jsonl", "a")  # noqa: SIM115 - closed after the loop

    def log(values: dict[str, float], at: int) -> None:
        if writer is not None:
            for key, value in values.items():
                writer.add_scalar(key, value, at)
        metrics_file.write(json.dumps({"step": at, **values}) + "\n")
        metrics_file.flush()

    def run_validation(at: int) -> None:
        if data.valid is None:
            return
        values = validate(lm, data.valid, data.bandwidths, data.codebooks, data.frame_rate, s.valid_max_items)
        log({f"valid/{k}": v for k, v in values.items()}, at)
        print(f"step {at}: " + ", ".join(f"{k} {v:.3f}" for k, v in values.items()
                                        if k.startswith("bits")), file=sys.stderr)

    def save_checkpoint(at: int) -> None:
        state = {"model": lm.state_dict(), "optim": opt.state_dict(), "step": at, "rng": _rng_state(),
                 "config": cfg, "codec_name": data.codec_name, "codec_hash": data.codec_hash}
        _atomic_torch_save(state, ckpt_path)
        export_lm(lm, run / EXPORT, {"codec": data.codec_name, "codec_source": data.codec_source,
                                     "codec_hash": data.codec_hash, "frame_rate": data.frame_rate,
                                     "bandwidths": data.bandwidths, "step": at})

    if step == 0:
        run_validation(0)  # the untrained model (about log2(card) bits per code)

    # the loop
    start_step = step
    stop = s.steps if max_steps is None else min(s.steps, step + max_steps)
    autocast = (torch.autocast(device.type, dtype=torch.bfloat16) if s.amp == "bf16"
                else torch.autocast(device.type, enabled=False))
    bar = None
    if progress:
        from tqdm import tqdm
        bar = tqdm(total=stop, initial=step, desc=s.name, unit="step", dynamic_ncols=True)
    t_last, nats, scored, steps_since = time.perf_counter(), 0.0, 0, 0
    while step < stop:
        if max_minutes is not None and time.monotonic() - started > 60 * max_minutes:
            run_validation(step)
            save_checkpoint(step)
            break
        k = _step_rng(s.seed, step, 1).choice(data.codebooks)
        inputs, targets, offsets = (t.to(device) for t in
                                    sample_batch(data.train, s.batch_size, s.seq_len, k, _batch_rng(s.seed, step)))
        lr = learning_rate(s, step)
        for group in opt.param_groups:
            group["lr"] = lr
        with autocast:
            total, count = _loss(lm, inputs, targets, offsets)
        loss = total / max(count, 1)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = (torch.nn.utils.clip_grad_norm_(lm.parameters(), s.grad_clip) if s.grad_clip > 0
                     else None)
        opt.step()
        step += 1
        steps_since += 1
        nats += float(total.detach())
        scored += count

        if step % s.log_every == 0 or step == stop:
            elapsed = time.perf_counter() - t_last
            bits = nats / max(scored, 1) / math.log(2)
            values = {"train/bits_per_code": bits, "train/n_q": float(k), "train/lr": lr,
                      "perf/steps_per_second": steps_since / max(elapsed, 1e-9),
                      "perf/codes_per_second": scored / max(elapsed, 1e-9)}
            if grad_norm is not None:
                values["train/grad_norm"] = float(grad_norm)
            log(values, step)
            if bar is not None:
                bar.set_postfix(bits=f"{bits:.3f}", k=int(k))
            t_last, nats, scored, steps_since = time.perf_counter(), 0.0, 0, 0
        if bar is not None:
            bar.update(1)
        if step % s.valid_every == 0 or step == stop:
            run_validation(step)
        if step % s.checkpoint_every == 0 or step == stop:
            save_checkpoint(step)
    if bar is not None:
        bar.close()
    if writer is not None:
        writer.close()
    metrics_file.close()

    # the saving on held-out audio, measured with the exported file as the CLI loads it
    manifests = s.report_manifests or s.valid_manifests
    finished = step >= s.steps and (step > start_step or not (run / REPORT_JSON).exists())
    if finished and data.codec is not None and s.report_items > 0 and manifests:
        from ..pretrained import load_lm_model

        exported = load_lm_model(run / EXPORT, codec=data.codec, num_codebooks=max(data.codebooks))
        report = evaluate_saving(data.codec, exported, manifests, data.bandwidths, s.report_items, progress)
        report.update(lm=str(run / EXPORT), step=step)
        write_report(report, run, force=True)
        print(format_report(report), file=sys.stderr)
    return (run, lm) if return_model else run


# -- 8. the saving on held-out audio -----------------------------------------------------------
def evaluate_saving(codec: EncodecModel, lm: EntropyLM, manifests: tp.Sequence[str],
                    bandwidths: tp.Sequence[float] | None = None, max_items: int | None = None,
                    progress: bool = True, verify: bool = True) -> dict[str, tp.Any]:
    """Measure what the entropy model saves on held-out audio, per bandwidth.

    For each of the first ``max_items`` readable files of ``manifests`` (converted to the
    codec's rate and channels) and each bandwidth: the ideal code length ``-log2 p`` of the
    codes under ``lm`` (fresh state per coder segment, as the coder) and the sizes of the
    ``.ecdc`` files that ``compress(codec, wav, bw)`` and ``compress(codec, wav, bw, lm=lm)``
    write (headers included). With ``verify``, the first file's entropy-coded bytes are
    decoded with ``decompress`` and must give the same audio as the plain file.

    Returns:
        ``{"codec", "items", "seconds", "skipped", "plain_bits_per_code", "bandwidths": [...]}``;
        each bandwidth entry has ``kbps``, ``codebooks``, ``ideal_bits_per_code``,
        ``ideal_saving_pct`` (vs ``log2(bins)`` bits per code), ``plain_bytes``, ``lm_bytes``,
        ``plain_kbps``, ``lm_kbps`` (real bitrates of the files), ``file_saving_pct`` and
        ``round_trip`` (True, or None when not checked).
    Raises:
        AudioIOError: no file could be read. BitstreamError/ValueError: a failed round trip.
    """
    from tqdm import tqdm

    from ..audio import convert_audio, read_audio
    from ..compress import compress, decompress
    from ..pretrained import check_lm_for_codec

    bandwidths = [float(b) for b in (bandwidths or codec.target_bandwidths)]
    check_lm_for_codec(lm, codec, max(codec.num_codebooks(b) for b in bandwidths))
    rows = _manifest_rows(manifests)
    codec, lm = codec.cpu().eval(), lm.cpu().eval()
    plain_bits = math.log2(codec.bins)
    totals = {bw: {"bits": 0.0, "codes": 0, "plain_bytes": 0, "lm_bytes": 0} for bw in bandwidths}
    round_trip: dict[float, bool | None] = {bw: None for bw in bandwidths}
    items, seconds, skipped = 0, 0.0, []
    top = max(codec.target_bandwidths)
    bar = tqdm(total=len(rows) if max_items is None else min(len(rows), max_items), desc="saving",
               unit="file", disable=not progress, dynamic_ncols=True)
    for row in rows:
        if max_items is not None and items >= max_items:
            break
        try:
            wav, sr = read_audio(row["path"])
        except AudioIOError as exc:
            skipped.append({"path": row["path"], "error": str(exc)})
            print(f"warning: skipping {row['path']}: {exc}", file=sys.stderr)
            continue
        wav = convert_audio(wav, sr, codec.sample_rate, codec.channels)
        previous = codec.bandwidth
        codec.set_target_bandwidth(top)
        try:
            with torch.inference_mode():
                segments = [f.codes[0] for f in codec.encode(wav[None])]
        finally:
            codec.bandwidth = previous
        for bw in bandwidths:
            k = codec.num_codebooks(bw)
            for seg in segments:
                totals[bw]["bits"] += float(sequence_bits(lm, seg[:k]).sum())
                totals[bw]["codes"] += seg[:k].numel()
            plain = compress(codec, wav, bandwidth=bw)
            coded = compress(codec, wav, bandwidth=bw, lm=lm)
            totals[bw]["plain_bytes"] += len(plain)
            totals[bw]["lm_bytes"] += len(coded)
            if verify and items == 0:
                expected, _ = decompress(plain, codec)
                decoded, _ = decompress(coded, codec, lm=lm)
                round_trip[bw] = bool(torch.equal(expected, decoded))
        items += 1
        seconds += wav.shape[-1] / codec.sample_rate
        bar.update(1)
    bar.close()
    if items == 0:
        raise AudioIOError(f"no file of {', '.join(manifests)} could be read ({len(skipped)} skipped)")
    entries = []
    for bw in bandwidths:
        t = totals[bw]
        ideal = t["bits"] / max(t["codes"], 1)
        entries.append({
            "kbps": bw, "codebooks": codec.num_codebooks(bw),
            "ideal_bits_per_code": ideal, "ideal_saving_pct": 100 * (1 - ideal / plain_bits),
            "plain_bytes": t["plain_bytes"], "lm_bytes": t["lm_bytes"],
            "plain_kbps": t["plain_bytes"] * 8 / seconds / 1000, "lm_kbps": t["lm_bytes"] * 8 / seconds / 1000,
            "file_saving_pct": 100 * (1 - t["lm_bytes"] / max(t["plain_bytes"], 1)),
            "round_trip": round_trip[bw]})
    return {"codec": codec.name, "items": items, "seconds": seconds, "skipped": skipped,
            "plain_bits_per_code": plain_bits, "manifests": [str(m) for m in manifests],
            "bandwidths": entries}


def format_report(report: dict[str, tp.Any]) -> str:
    """The report as Markdown: one table row per bandwidth."""
    plain = report["plain_bits_per_code"]
    lines = [
        f"# Entropy model saving on held-out audio ({report['codec']})",
        "",
        (f"Entropy model: `{report.get('lm', '?')}`. Held-out audio: {report['items']} files, "
         f"{report['seconds']:.1f} s ({', '.join(report['manifests'])}; "
         f"{len(report['skipped'])} unreadable skipped)."),
        (f"Ideal bits per code: mean `-log2 p` of the codes under the model, against {plain:g} bits "
         f"per code for plain packing. Files: whole `.ecdc` files (headers included) written by "
         f"`compress()` without and with the entropy model."),
        "",
        (f"| bandwidth | codebooks | ideal bits/code (vs {plain:g}) | ideal saving | plain file kbps | "
         f"entropy-coded kbps | file saving | round trip |"),
        "|---|---|---|---|---|---|---|---|",
    ]
    for e in report["bandwidths"]:
        rt = {True: "ok", False: "FAILED", None: "not checked"}[e["round_trip"]]
        lines.append(f"| {e['kbps']:g} kbps | {e['codebooks']} | {e['ideal_bits_per_code']:.3f} | "
                     f"{e['ideal_saving_pct']:.1f}% | {e['plain_kbps']:.3f} | {e['lm_kbps']:.3f} | "
                     f"{e['file_saving_pct']:.1f}% | {rt} |")
    return "\n".join(lines) + "\n"


def write_report(report: dict[str, tp.Any], folder: str | os.PathLike[str], force: bool = False) -> None:
    """Write ``report.json`` and ``report.md`` into ``folder`` (atomically; existing files
    only with ``force``)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for name in (REPORT_JSON, REPORT_MD):
        check_output(folder / name, force)
    write_bytes_atomic(folder / REPORT_JSON, (json.dumps(report, indent=2) + "\n").encode())
    write_bytes_atomic(folder / REPORT_MD, format_report(report).encode())


# -- command line --------------------------------------------------------------------------------
def report_main(argv: tp.Sequence[str]) -> int:
    """``... report --lm PATH --manifest M [...] [--codec NAME] [--bandwidths ...] [--items N]``."""
    from ..pretrained import CODEC_LMS, load_lm_model, load_model

    parser = argparse.ArgumentParser(
        prog="opencodec train-lm report",
        description="Measure an entropy model's saving on held-out audio: ideal bits per code "
                    "and real .ecdc sizes with and without it, per bandwidth.")
    parser.add_argument("--lm", required=True, help="entropy model name or weights file")
    parser.add_argument("--codec", default=None,
                        help="codec name or weights file (default: the one the LM file was trained on)")
    parser.add_argument("--manifest", nargs="+", required=True, help="JSONL manifest(s) of held-out audio")
    parser.add_argument("--bandwidths", type=bandwidth_arg, nargs="*", default=None, help="kbps (default: all)")
    parser.add_argument("--items", type=positive_int, default=16, help="files to measure (default 16)")
    parser.add_argument("--out", default=None, help="folder for report.json and report.md")
    parser.add_argument("-f", "--force", action="store_true", help="overwrite an existing report")
    parser.add_argument("--threads", type=positive_int, default=None, help="torch threads")
    parser.add_argument("--no-verify", action="store_true", help="skip the round-trip check")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.out is not None:  # before the slow part
        for name in (REPORT_JSON, REPORT_MD):
            check_output(Path(args.out) / name, args.force, need_folder=False)
    info = read_lm_info(args.lm) if Path(args.lm).is_file() else {}
    official_codec = {lm_name: codec for codec, lm_name in CODEC_LMS.items()}.get(args.lm)
    codec_name = args.codec or info.get("codec_source") or info.get("codec") or official_codec
    if codec_name is None:
        parser.error(f"{args.lm} does not name its codec: pass --codec")
    codec = load_model(codec_name)
    if info.get("codec_hash") and info["codec_hash"] != codec_fingerprint(codec):
        raise ModelLoadError(f"{args.lm} was trained on the codes of another {info.get('codec')} "
                             f"(weights {info['codec_hash'][:12]}), not on {codec_name}")
    lm = load_lm_model(args.lm, codec=codec)
    report = evaluate_saving(codec, lm, args.manifest, args.bandwidths or None, args.items,
                             progress=not args.no_progress, verify=not args.no_verify)
    report["lm"] = str(args.lm)
    if args.out is not None:
        write_report(report, args.out, force=args.force)
    print(format_report(report))
    return 0


def main(argv: tp.Sequence[str] | None = None) -> int:
    """``opencodec train-lm CONFIG [key=value ...] [--run-dir DIR] [--max-steps N]``, or
    ``opencodec train-lm report ...``; errors are one line on stderr and exit status 1."""
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        if argv[:1] == ["report"]:
            return report_main(argv[1:])
        parser = argparse.ArgumentParser(
            prog="opencodec train-lm",
            description="Train the entropy model on a codec's codes (see configs/lm_*.yaml). "
                        "'opencodec train-lm report --help' measures a trained model's saving.")
        args, cfg = parse_run_arguments(parser, argv, "YAML config (see configs/lm_*.yaml)")
        run = train(cfg, args.run_dir, args.max_steps, progress=not args.no_progress,
                    max_minutes=args.max_minutes)
        print(f"run folder: {run}; entropy model: {run / EXPORT} "
              f"(opencodec compress IN --model {cfg.get('codec')} --lm-model {run / EXPORT})", file=sys.stderr)
        return 0
    except (OpenCodecError, OSError, ValueError) as exc:
        print(f"opencodec train-lm: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
