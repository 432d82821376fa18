"""Building blocks: streamable convolutions, the bottleneck LSTM, SEANet encoder/decoder."""

from .conv import (NormConv1d, NormConvTranspose1d, StreamableConv1d, StreamableConvTranspose1d,
                   WeightNormConv1d, WeightNormConvTranspose1d, pad1d)
from .lstm import StreamableLSTM
from .seanet import SEANetConfig, SEANetDecoder, SEANetEncoder, SEANetResnetBlock

__all__ = [
    "NormConv1d", "NormConvTranspose1d", "StreamableConv1d", "StreamableConvTranspose1d",
    "WeightNormConv1d", "WeightNormConvTranspose1d", "pad1d", "StreamableLSTM",
    "SEANetConfig", "SEANetDecoder", "SEANetEncoder", "SEANetResnetBlock",
]
