"""opencodec: the EnCodec neural audio codec (official-compatible), in PyTorch.

    import opencodec
    model = opencodec.load_model()                  # bundled default model
    data = opencodec.compress(model, wav, 6.0)      # wav [C, T] at model.sample_rate
    audio, sample_rate = opencodec.decompress(data)
"""

from .errors import AudioIOError, BitstreamError, ModelLoadError, OpenCodecError
from .model import EncodecConfig, EncodecModel, EncodedFrame
from .pretrained import load_model, save_model
from .compress import compress, decompress  # noqa: E402  (the functions shadow the module name)
from .audio import convert_audio, read_audio, write_audio

__version__ = "0.1.0"

__all__ = [
    "AudioIOError", "BitstreamError", "ModelLoadError", "OpenCodecError",
    "EncodecConfig", "EncodecModel", "EncodedFrame", "load_model", "save_model",
    "compress", "decompress", "convert_audio", "read_audio", "write_audio", "__version__",
]
