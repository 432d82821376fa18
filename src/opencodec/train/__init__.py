"""Training components: losses, MS-STFT discriminator and loss balancer (spec section 8).

The codec trainer is :mod:`opencodec.train.solver` (``opencodec train``); the entropy-model
trainer is :mod:`opencodec.train.lm_solver` (``opencodec train-lm``; ``train_lm`` and
``evaluate_saving`` here).
"""

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
    "relative_feature_matching_loss", "si_snr", "waveform_l1", "evaluate_saving", "train_lm",
]


def __getattr__(name: str) -> object:
    """``train_lm`` and ``evaluate_saving``, imported on first use (so that
    ``python -m opencodec.train.lm_solver`` does not import that module twice)."""
    if name in ("train_lm", "evaluate_saving"):
        if name == "evaluate_saving":
            from .lm_eval import evaluate_saving

            return evaluate_saving
        from .lm_solver import train

        return train
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
