"""The codec trainer's data (part 3 of :mod:`opencodec.train.solver`): random training
segments with augmentation, sharded so that N processes draw exactly the global batch one
process would, either through DataLoader workers or decoded once into device memory
(``data.loader: device``), and the fixed held-out clips of the periodic validation."""

from __future__ import annotations

import re
import signal
import sys
import typing as tp
from pathlib import Path

import torch

from ..errors import ConfigError
from ..model import EncodecModel
from . import distributed


def corpus_command(manifest: str | Path) -> str | None:
    """The command that builds ``manifest`` when it is one the corpus builder writes
    (``DIR/<preset>_<kHz>k/manifests/NAME.jsonl``, or ``<preset>_<Hz>`` for a rate that is not
    a whole number of kHz: :func:`opencodec.data.manifests.preset_dir_name`), else ``None``."""
    from ..data.presets import PRESETS

    path = Path(manifest)
    match = re.fullmatch(r"(\w+?)_(\d+)(k?)", path.parent.parent.name)
    if path.parent.name != "manifests" or not match or match[1] not in PRESETS:
        return None
    rate = int(match[2]) * (1000 if match[3] else 1)
    command = f"python -m opencodec.data.corpus build --preset {match[1]} --out {path.parent.parent.parent}"
    return command if rate == 24000 else f"{command} --sample-rate {rate}"


def check_manifests(field: str, manifests: tp.Any, required: bool = False) -> None:
    """Raise :class:`ConfigError` naming config field ``field`` (``data.train``) when one of its
    manifest files does not exist (with the command that builds it, when it is a corpus
    manifest), or when it is ``required`` and empty; a trainer calls this before it creates
    its run folder. ``manifests``: a path or a list of paths (row dicts are not checked)."""
    listed = [manifests] if isinstance(manifests, (str, Path)) else list(manifests or [])
    if required and not listed:
        raise ConfigError(f"config field {field} is missing (JSONL manifest(s) of training audio)")
    for manifest in listed:
        if isinstance(manifest, (str, Path)) and not Path(manifest).is_file():
            build = corpus_command(manifest)
            raise ConfigError(f"config field {field}: no manifest file {manifest}"
                              + (f"; build the corpus first: {build}" if build else ""))


class GlobalBatchShard(torch.utils.data.Dataset):
    """Rank ``rank``'s slice of each global batch of a single-process dataset.

    Local item ``i`` is global item ``step * B_global + rank * B_local + j`` with
    ``step, j = divmod(i, B_local)``, so concatenating the ranks' batches in rank order
    gives exactly the batch a single process with ``B_global`` would draw.
    """

    def __init__(self, base: torch.utils.data.Dataset, rank: int, world_size: int, local_batch: int):
        self.base, self.rank, self.world_size, self.local_batch = base, rank, world_size, local_batch

    def __len__(self) -> int:
        return len(self.base) // self.world_size  # type: ignore[arg-type]

    def __getitem__(self, i: int) -> torch.Tensor:
        step, j = divmod(i, self.local_batch)
        return self.base[step * self.local_batch * self.world_size + self.rank * self.local_batch + j]


def _train_dataset(cfg: dict, model: EncodecModel, info: distributed.DistInfo, local_batch: int,
                   steps_per_epoch: int) -> tuple[tp.Any, GlobalBatchShard]:
    from ..data.dataset import AudioDataset

    data = cfg["data"]
    base = AudioDataset(data["train"], segment_seconds=data.get("segment_seconds", 1.0),
                        sample_rate=model.sample_rate, channels=model.channels,
                        epoch_size=steps_per_epoch * local_batch * info.world_size,
                        seed=cfg.get("seed", 0), rank=0, world_size=1, **data.get("augment", {}))
    _warn_if_every_file_is_shorter(base.rows, float(data.get("segment_seconds", 1.0)))
    return base, GlobalBatchShard(base, info.rank, info.world_size, local_batch)


def _warn_if_every_file_is_shorter(rows: list[dict], segment_seconds: float) -> None:
    """Say so when no training file lasts ``data.segment_seconds``: every segment is then
    mostly zero padding."""
    longest = max((float(r["duration"]) for r in rows), default=0.0)
    if longest < segment_seconds:
        print(f"warning: every training file is shorter than data.segment_seconds={segment_seconds:g} s "
              f"(the longest lasts {longest:.3g} s): each segment is zero-padded to {segment_seconds:g} s",
              file=sys.stderr)


def ignore_interrupts(worker_id: int) -> None:
    """A DataLoader worker ignores Ctrl-C (a terminal sends SIGINT to the whole process
    group): the trainer finishes its step and saves, which needs the workers alive. They
    end with the trainer."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _batches(base: tp.Any, shard: GlobalBatchShard, local_batch: int, steps_per_epoch: int,
             start_step: int, num_workers: int) -> tp.Iterator[torch.Tensor]:
    """Batches [B_local, C, T] from ``start_step`` on, epoch after epoch (resumable).

    Starting a DataLoader iterator draws its base seed from the global torch generator, which
    k-means and dead-code replacement (``quantization/vq.py``) also draw from. A run draws once
    at each epoch start; a run resumed in the middle of an epoch starts an iterator there,
    whose draw is undone, so that it continues exactly as the uninterrupted run. (The batches
    themselves depend on (seed, epoch, index) only, not on the workers' seeds.)"""
    step = start_step
    while True:
        epoch, first = divmod(step, steps_per_epoch)
        base.set_epoch(epoch)
        indices = list(range(first * local_batch, steps_per_epoch * local_batch))
        loader = torch.utils.data.DataLoader(shard, batch_size=local_batch, sampler=indices,
                                             num_workers=num_workers, drop_last=True,
                                             persistent_workers=False,
                                             worker_init_fn=ignore_interrupts if num_workers else None)
        state = torch.get_rng_state()
        batches = iter(loader)
        if first:  # mid-epoch: only a resumed run starts an iterator here
            torch.set_rng_state(state)
        for batch in batches:
            yield batch
            step += 1


def _device_corpus(cfg: dict, model: EncodecModel, device: torch.device) -> tp.Any:
    """``data.loader: device``: the training corpus decoded once into device (or pinned,
    ``data.device_storage: pinned``) memory, batches augmented there (``device_data.py``)."""
    from .device_data import DeviceCorpus

    data = cfg["data"]
    corpus = DeviceCorpus(data["train"], model.sample_rate, model.channels, data.get("segment_seconds", 1.0), device,
                          seed=int(cfg.get("seed", 0)), storage=data.get("device_storage", "device"),
                          **data.get("augment", {}))
    print(f"data.loader=device: {corpus.hours:.2f} h decoded into {corpus.audio.device} memory "
          f"({corpus.audio.numel() * 2 / 2**20:.0f} MiB)", file=sys.stderr)
    return corpus


def _device_batches(corpus: tp.Any, start_step: int, local_batch: int, info: distributed.DistInfo
                    ) -> tp.Iterator[torch.Tensor]:
    """This rank's slice of each step's global batch, drawn on the device, from ``start_step`` on."""
    step = start_step
    while True:
        batch = corpus.batch(step, local_batch * info.world_size)
        yield batch[info.rank * local_batch: (info.rank + 1) * local_batch]
        step += 1


def _valid_items(cfg: dict, model: EncodecModel) -> list[torch.Tensor]:
    """Fixed held-out clips [1, C, T] (at most ``valid.items`` of ``valid.seconds``). Manifests
    given (``data.valid``) with ``valid.items`` > 0 that yield no clip (empty, every file
    unreadable, too short or silent) are a ``ConfigError``, as for the training manifests:
    validation is not silently left out."""
    from ..data.dataset import EvalDataset, _names

    valid = cfg.get("valid") or {}  # (``valid:`` with nothing under it: the defaults)
    manifests = cfg["data"].get("valid")
    if not manifests:
        return []
    ds = EvalDataset(manifests, sample_rate=model.sample_rate, channels=model.channels)
    length = int(valid.get("seconds", 3.0) * model.sample_rate)
    items, checked = [], min(len(ds), valid.get("items", 16))
    for i in range(checked):
        audio = ds[i]["audio"][:, :length]
        if audio.shape[-1] >= model.hop_length * 8 and audio.abs().max() > 1e-4:
            items.append(audio[None])
    if not items and valid.get("items", 16) > 0 and not len(ds):
        if ds.skipped:
            path, reason = ds.skipped[0]
            raise ConfigError(f"config field data.valid: none of the {len(ds.skipped)} audio file(s) the manifests "
                              f"{_names(manifests)} list can be read (e.g. {path}: {reason}); set "
                              f"data.valid=[] or valid.items=0 to train without validation")
        raise ConfigError(f"config field data.valid: the manifests {_names(manifests)} list no files; set "
                          f"data.valid=[] or valid.items=0 to train without validation")
    if not items and valid.get("items", 16) > 0:
        shortest = model.hop_length * 8 / model.sample_rate
        raise ConfigError(f"config field data.valid: no usable rows in the manifests {_names(manifests)} ({checked} "
                          f"of {len(ds)} readable rows checked; a validation clip lasts at least {shortest:g} s and "
                          f"is not silent); set data.valid=[] or valid.items=0 to train without validation")
    return items


def _training_segments(cfg: dict, model: EncodecModel, items: int) -> torch.Tensor:
    """``items`` training segments [items, C, T] (fixed seed, no augmentation) of the rows that
    training draws from (``data.augment``'s ``categories``, ``min_seconds`` and ``pad_short``)."""
    from ..data.dataset import AudioDataset

    data = cfg["data"]
    rows = {k: v for k, v in (data.get("augment") or {}).items() if k in ("categories", "min_seconds", "pad_short")}
    ds = AudioDataset(data["train"], segment_seconds=data.get("segment_seconds", 1.0),
                      sample_rate=model.sample_rate, channels=model.channels, epoch_size=items,
                      seed=int(cfg.get("seed", 0)) + 1, augment=False, **rows)
    return torch.stack([ds[i] for i in range(items)])
