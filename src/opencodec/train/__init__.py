"""Training components: losses, MS-STFT discriminator and loss balancer (spec section 8)."""

from .balancer import Balancer
from .discriminator import MultiScaleSTFTDiscriminator, STFTDiscriminator
from .losses import (
    MelFilterbank,
    MelSpectrogram,
    MultiScaleMelLoss,
    audiocraft_alphas,
    discriminator_hinge_loss,
    generator_hinge_loss,
    mel_distance,
    mel_filterbank,
    relative_feature_matching_loss,
    si_snr,
    waveform_l1,
)

__all__ = [
    "Balancer", "MultiScaleSTFTDiscriminator", "STFTDiscriminator",
    "MelFilterbank", "MelSpectrogram", "MultiScaleMelLoss", "audiocraft_alphas",
    "discriminator_hinge_loss", "generator_hinge_loss", "mel_distance", "mel_filterbank",
    "relative_feature_matching_loss", "si_snr", "waveform_l1",
]
