"""``make demo``: compress and decompress a bundled real-speech sample with the default model.

For each bandwidth (1.5, 3, 6, 12 kbps) it writes ``demo/out/<sample>_<kbps>kbps.ecdc`` and
the decoded ``.wav`` next to it, and prints the file size, the actual bitrate, SI-SNR (dB),
mel distance, ViSQOL (speech mode, 16 kHz; the audio-samples-qoe reimplementation of
ViSQOL v3) and the encode/decode real-time factors (compute time / audio duration, one
CPU thread). Opus at 6 and 12 kbps on the same clip is shown for comparison.

    python scripts/demo.py [AUDIO_FILE] [--model NAME_OR_PATH] [--out DIR] [--bandwidths KBPS ...]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

import opencodec
from opencodec.audio import convert_audio, read_audio, write_audio
from opencodec.compress import compress, decompress
from opencodec.eval.baselines import opus_roundtrip
from opencodec.eval.metrics import mel_distance, si_snr
from opencodec.eval.visqol import visqol
from opencodec.identity import model_hash
from opencodec.pretrained import load_model

HERE = Path(__file__).resolve().parent.parent
SAMPLE = HERE / "demo" / "sample_speech_fr.flac"


def _scores(decoded: torch.Tensor, reference: torch.Tensor, rate: int) -> tuple[float, float, float]:
    est, ref = decoded.numpy(), reference.numpy()
    return si_snr(est, ref), mel_distance(est, ref, rate), visqol(est, ref, rate, mode="speech")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("audio", nargs="?", type=Path, default=SAMPLE)
    parser.add_argument("--model", default=None, help="model name or weights file (default: the bundled model)")
    parser.add_argument("--out", type=Path, default=HERE / "demo" / "out")
    parser.add_argument("--bandwidths", type=float, nargs="+", default=None, metavar="KBPS",
                        help="bandwidths to run (default: all of the model's)")
    args = parser.parse_args()
    torch.set_num_threads(1)

    model = load_model(args.model)
    bandwidths = args.bandwidths or model.target_bandwidths
    bad = [bw for bw in bandwidths if bw not in model.target_bandwidths]
    if bad:
        parser.error(f"--bandwidths {' '.join(f'{b:g}' for b in bad)}: model {model.name} supports "
                     f"{', '.join(f'{b:g}' for b in model.target_bandwidths)} kbps")
    wav, rate = read_audio(args.audio)
    wav = convert_audio(wav, rate, model.sample_rate, model.channels)
    seconds = wav.shape[-1] / model.sample_rate
    args.out.mkdir(parents=True, exist_ok=True)
    print(f"opencodec {opencodec.__version__}: model {model.name} (weights {model_hash(model)}, "
          f"{model.sample_rate} Hz, {model.channels} ch), input {args.audio.name}: {seconds:.2f} s")
    header = (f"{'system':<16}{'bytes':>8}{'kbps':>8}{'SI-SNR dB':>11}{'mel dist':>10}"
              f"{'ViSQOL':>8}{'enc RTF':>9}{'dec RTF':>9}")
    print(header)
    print("-" * len(header))
    stem = args.audio.stem
    for bw in bandwidths:
        t0 = time.perf_counter()
        data = compress(model, wav, bandwidth=bw)
        t1 = time.perf_counter()
        decoded, out_rate = decompress(data, model=model)
        t2 = time.perf_counter()
        (args.out / f"{stem}_{bw:g}kbps.ecdc").write_bytes(data)
        write_audio(args.out / f"{stem}_{bw:g}kbps.wav", decoded, out_rate, rescale=True)
        snr, mel, vq = _scores(decoded, wav, model.sample_rate)
        kbps = 8 * len(data) / seconds / 1000
        print(f"{'opencodec ' + f'{bw:g}':<16}{len(data):>8}{kbps:>8.2f}{snr:>11.2f}{mel:>10.3f}{vq:>8.2f}"
              f"{(t1 - t0) / seconds:>9.3f}{(t2 - t1) / seconds:>9.3f}")
    for kbps_target in (6, 12):
        decoded_np, kbps = opus_roundtrip(wav.numpy(), model.sample_rate, kbps_target)
        decoded = torch.from_numpy(decoded_np)
        write_audio(args.out / f"{stem}_opus{kbps_target}.wav", decoded, model.sample_rate, rescale=True)
        snr, mel, vq = _scores(decoded, wav, model.sample_rate)
        print(f"{f'Opus {kbps_target}':<16}{'':>8}{kbps:>8.2f}{snr:>11.2f}{mel:>10.3f}{vq:>8.2f}{'':>9}{'':>9}")
    print(f"decoded files: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
