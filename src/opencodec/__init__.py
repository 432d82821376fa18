"""opencodec: the EnCodec neural audio codec (official-compatible), in PyTorch."""

from .errors import AudioIOError, BitstreamError, ModelLoadError, OpenCodecError
from .model import EncodecConfig, EncodecModel, EncodedFrame

__version__ = "0.1.0"

__all__ = [
    "AudioIOError", "BitstreamError", "ModelLoadError", "OpenCodecError",
    "EncodecConfig", "EncodecModel", "EncodedFrame", "__version__",
]
