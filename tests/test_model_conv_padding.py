"""The streamable convolutions, pinned by value: where an odd centred padding or transposed trim
puts its extra sample, and the settings a causal or streaming conv refuses."""

from __future__ import annotations

import pytest
import torch


# --------------------------------------------------------------------------- modules.conv padding
def _delay_conv(kernel: int, stride: int, causal: bool):  # type: ignore[no-untyped-def]
    """A streamable conv whose output frame t is the padded input's sample t * stride."""
    from opencodec.modules.conv import StreamableConv1d

    layer = StreamableConv1d(1, 1, kernel, stride, causal=causal, pad_mode="constant")
    with torch.no_grad():
        layer.conv.conv.weight.zero_()
        layer.conv.conv.weight[0, 0, 0] = 1.0
        layer.conv.conv.bias.zero_()
    return layer


def test_an_odd_centred_padding_puts_the_extra_sample_on_the_left() -> None:
    """Non-causal: padding ``k_eff - stride`` split with the odd sample on the left (the
    official layout); causal: all of it on the left. Kernel 2, stride 1: one sample of padding."""
    x = torch.arange(1.0, 6.0)[None, None]
    centred = _delay_conv(2, 1, causal=False)(x)
    assert centred.tolist() == [[[0.0, 1.0, 2.0, 3.0, 4.0]]]
    # kernel 10, stride 5 (the 5x downsampling of the released models): 5 samples, 3 left 2 right
    x = torch.arange(1.0, 11.0)[None, None]
    assert _delay_conv(10, 5, causal=False)(x).tolist() == [[[0.0, 3.0]]]
    assert _delay_conv(10, 5, causal=True)(x).tolist() == [[[0.0, 1.0]]]


def test_an_odd_centred_transposed_trim_cuts_the_extra_sample_on_the_left() -> None:
    """The transposed conv trims ``k - stride`` samples, the odd one on the left (non-causal),
    all on the right (causal): [B, C, F] -> [B, C, F * stride]."""
    from opencodec.modules.conv import StreamableConvTranspose1d

    def layer(causal: bool) -> StreamableConvTranspose1d:
        conv = StreamableConvTranspose1d(1, 1, kernel_size=10, stride=5, causal=causal)
        with torch.no_grad():
            conv.convtr.convtr.weight.copy_(torch.arange(10.0)[None, None])
            conv.convtr.convtr.bias.zero_()
        return conv

    x = torch.tensor([[[1.0]]])  # one frame: y is the kernel itself, 10 samples
    assert layer(False)(x).tolist() == [[[3.0, 4.0, 5.0, 6.0, 7.0]]]
    assert layer(True)(x).tolist() == [[[0.0, 1.0, 2.0, 3.0, 4.0]]]


def test_streamable_conv_refusals() -> None:
    """A causal conv cannot normalise over the whole signal, and streaming refuses a pad mode
    without a causal form (circular padding reads the signal's end)."""
    from opencodec.modules.conv import StreamableConv1d, StreamableConvTranspose1d, streamable_conv

    for make in (lambda: StreamableConv1d(1, 1, 3, causal=True, norm="time_group_norm"),
                 lambda: StreamableConvTranspose1d(1, 1, 4, 2, causal=True, norm="time_group_norm")):
        with pytest.raises(ValueError, match="time_group_norm normalises over the whole signal"):
            make()
    assert isinstance(streamable_conv(StreamableConv1d(1, 1, 3, causal=True)), torch.nn.Conv1d)
    with pytest.raises(ValueError, match="pad mode 'circular' cannot be streamed"):
        streamable_conv(StreamableConv1d(1, 1, 3, causal=True, pad_mode="circular"))
