"""What a model is, without the network: :class:`EncodecConfig` and the configurations of
the models known by name (:func:`config_for_name`). No torch here, so that ``opencodec info``
answers in a fraction of a second; :mod:`opencodec.model` builds the network from these.

``EncodecConfig`` is re-exported by :mod:`opencodec.model` (and the package), and
:data:`OFFICIAL_CONFIGS`, :data:`CONFIG_METADATA_KEY`, :data:`BUNDLED_DIR`,
:data:`BUNDLED_MODELS` and :func:`config_for_name` by :mod:`opencodec.model_registry` and
:mod:`opencodec.pretrained`, so every older import path gives these objects.
"""

from __future__ import annotations

import dataclasses
import json
import math
import typing as tp
from dataclasses import dataclass, field
from pathlib import Path

from .errors import ModelLoadError
from .releases import CODEC_ALIAS, CODEC_RELEASES, CURRENT_CODEC, codec_release, resolve_alias

if tp.TYPE_CHECKING:
    from .modules.seanet_blocks import SEANetConfig

__all__ = ["EncodecConfig", "OFFICIAL_CONFIGS", "CONFIG_METADATA_KEY", "BUNDLED_DIR", "BUNDLED_MODELS",
           "config_for_name"]


@dataclass
class EncodecConfig:
    """Everything needed to build an ``EncodecModel``.

    ``target_bandwidths`` in kbps; ``segment`` and ``overlap`` in seconds and fraction;
    ``n_q`` codebooks of ``bins`` entries (a power of two).
    """

    name: str = "unset"
    sample_rate: int = 24_000
    channels: int = 1
    causal: bool = True
    norm: str = "weight_norm"
    normalize: bool = False
    segment: float | None = None
    overlap: float = 0.01
    target_bandwidths: list[float] = field(default_factory=lambda: [1.5, 3.0, 6.0, 12.0, 24.0])
    n_q: int = 32
    bins: int = 1024
    dimension: int = 128
    n_filters: int = 32
    n_residual_layers: int = 1
    ratios: list[int] = field(default_factory=lambda: [8, 5, 4, 2])
    lstm: int = 2
    kernel_size: int = 7
    last_kernel_size: int = 7
    residual_kernel_size: int = 3
    dilation_base: int = 2
    compress: int = 2
    true_skip: bool = False
    pad_mode: str = "reflect"

    @classmethod
    def encodec_24khz(cls) -> "EncodecConfig":
        """The released 24 kHz mono causal model (1.5-24 kbps, 32 codebooks)."""
        return cls(name="encodec_24khz")

    @classmethod
    def encodec_48khz(cls) -> "EncodecConfig":
        """The released 48 kHz stereo non-causal model (3-24 kbps, 16 codebooks, 1 s segments)."""
        return cls(name="encodec_48khz", sample_rate=48_000, channels=2, causal=False,
                   norm="time_group_norm", normalize=True, segment=1.0,
                   target_bandwidths=[3.0, 6.0, 12.0, 24.0], n_q=16)

    @classmethod
    def from_dict(cls, data: dict[str, tp.Any]) -> "EncodecConfig":
        """Build from a plain dict (e.g. JSON metadata); unknown keys are a ``ValueError``,
        anything but a dict a ``TypeError``."""
        if not isinstance(data, dict):
            raise TypeError(f"EncodecConfig.from_dict expects a dict, got {type(data).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown EncodecConfig field(s): {', '.join(unknown)}")
        return cls(**data)

    def to_dict(self) -> dict[str, tp.Any]:
        """Plain-dict form (JSON-serialisable)."""
        return dataclasses.asdict(self)

    def seanet(self) -> "SEANetConfig":
        """The encoder/decoder part of this configuration."""
        from .modules.seanet_blocks import SEANetConfig  # only here: it loads torch

        return SEANetConfig(
            channels=self.channels, dimension=self.dimension, n_filters=self.n_filters,
            n_residual_layers=self.n_residual_layers, ratios=list(self.ratios), norm=self.norm,
            kernel_size=self.kernel_size, last_kernel_size=self.last_kernel_size,
            residual_kernel_size=self.residual_kernel_size, dilation_base=self.dilation_base,
            causal=self.causal, pad_mode=self.pad_mode, true_skip=self.true_skip,
            compress=self.compress, lstm=self.lstm)

    @property
    def hop_length(self) -> int:
        """Samples per code frame."""
        return int(math.prod(self.ratios))

    @property
    def frame_rate(self) -> int:
        """Code frames per second, ``ceil(sample_rate / hop_length)``."""
        return math.ceil(self.sample_rate / self.hop_length)

    @property
    def bits_per_codebook(self) -> int:
        """Bits of one code, ``log2(bins)``."""
        return int(math.log2(self.bins))

    @property
    def segment_length(self) -> int | None:
        """Segment length in samples, or None when the whole signal is one segment."""
        if self.segment is None:
            return None
        return int(self.segment * self.sample_rate)

    @property
    def segment_stride(self) -> int | None:
        """Samples between segment starts, or None when not segmenting."""
        length = self.segment_length
        if length is None:
            return None
        return max(1, int((1 - self.overlap) * length))


OFFICIAL_CONFIGS: dict[str, tp.Callable[[], EncodecConfig]] = {
    "encodec_24khz": EncodecConfig.encodec_24khz,
    "encodec_48khz": EncodecConfig.encodec_48khz,
}
#: Key of the configuration (JSON of :meth:`EncodecConfig.to_dict`) in a ``.safetensors``
#: file's metadata, as ``save_model`` writes it.
CONFIG_METADATA_KEY = "opencodec_config"
# Models shipped inside the package (trained by opencodec itself; see docs/training/): every
# released set of weights has a versioned name (opencodec.releases); the unversioned alias
# loads the current release.
BUNDLED_DIR = Path(__file__).parent / "weights"
BUNDLED_MODELS: dict[str, str] = {
    CODEC_ALIAS: tp.cast(str, codec_release(CURRENT_CODEC).file),  # type: ignore[union-attr]
    **{r.name: r.file for r in CODEC_RELEASES if r.file is not None}}


def config_for_name(name: str) -> EncodecConfig | None:
    """Configuration of a known model name, or None (reads no weights; for a shipped
    release only the file's metadata). The alias gives the current release's, named so.
    ``ModelLoadError`` when a shipped release's file is missing from the installation."""
    factory = OFFICIAL_CONFIGS.get(name)
    if factory is not None:
        return factory()
    if name in BUNDLED_MODELS:
        from safetensors import safe_open  # the metadata only: no tensors, no torch

        path = BUNDLED_DIR / BUNDLED_MODELS[name]
        if not path.is_file():  # the words of opencodec.model_registry.release_path
            raise ModelLoadError(f"the bundled model {resolve_alias(name)!r} is missing from the "
                                 f"installation ({path}); reinstall opencodec")
        with safe_open(str(path), framework="numpy") as f:
            config = EncodecConfig.from_dict(json.loads((f.metadata() or {})[CONFIG_METADATA_KEY]))
        config.name = resolve_alias(name)
        return config
    return None
