"""The deterministic entropy-coded format against the official one, on real audio and codes.

Usage: .venv/bin/python benchmarks/deterministic_lm.py [--lm PATH] [--model NAME_OR_PATH]
           [--audio FILE] [--seconds 6] [--bandwidths 1.5 3 6 12] [--threads 1]

Per bandwidth: bits per code of the float entropy model (the official quantised CDF) and of
its integer twin (``opencodec.entropy.fixed``) on the same codes; the sizes of the plain,
official-LM (version 0) and deterministic (version 1) files; what the checks cost (version 1
with the default checks minus version 1 with only the final CRC-32, plus those 32 bits),
in bit/s and % of the nominal bitrate; and the deterministic encode/decode times (whole
``compress``/``decompress`` calls, codec included), with the official format's decode time.

Without ``--lm`` a random entropy model of the paper's size is used, its heads scaled so
that its distributions are peaked (a random model's are nearly uniform); pass a trained
one (``opencodec train-lm`` output, or an official file) for representative numbers.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from opencodec.audio import convert_audio, read_audio
from opencodec.bitstream import DEFAULT_CHECK_BITS, default_check_interval
from opencodec.compress import compress, decompress
from opencodec.entropy import EntropyLM, build_quantized_cdf, fixed_lm_for
from opencodec.entropy.fixed import cdf_to_probs
from opencodec.pretrained import load_lm_model, load_model
from provenance import provenance_line

ROOT = Path(__file__).resolve().parents[1]


def bits_per_code(lm: EntropyLM, codes: torch.Tensor) -> tuple[float, float]:
    """Ideal bits per code of ``codes [K, F]`` under the float model's quantised CDF and under
    its integer twin's CDF (both exactly what the coders use)."""
    K, F = codes.shape
    flm = fixed_lm_for(lm)
    fixed = flm.cdfs(codes)                                   # [F, K, card]
    float_bits = fixed_bits = 0.0
    state, inp = None, torch.zeros(K, dtype=torch.long)
    with torch.inference_mode():
        for t in range(F):
            probs, state = lm.step(inp, state)
            cdf = build_quantized_cdf(probs)
            freq = torch.diff(cdf, dim=-1, prepend=torch.zeros(K, 1, dtype=torch.long))
            float_bits -= float(torch.log2(freq.gather(1, codes[:, t:t + 1]).double() / 2 ** 24).sum())
            fixed_bits -= float(torch.log2(cdf_to_probs(fixed[t]).gather(1, codes[:, t:t + 1])).sum())
            inp = codes[:, t] + 1
    return float_bits / (K * F), fixed_bits / (K * F)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--lm", help="entropy model name or weights file (default: random, peaked)")
    ap.add_argument("--model", default=None, help="codec (default: the bundled opencodec_24khz)")
    ap.add_argument("--audio", default=str(ROOT / "demo" / "sample_speech_fr.flac"))
    ap.add_argument("--seconds", type=float, default=6.0)
    ap.add_argument("--bandwidths", type=float, nargs="+", default=[1.5, 3.0, 6.0, 12.0])
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    model = load_model(args.model)
    if args.lm:
        lm = load_lm_model(args.lm, codec=model)
        lm_label = args.lm
    else:
        torch.manual_seed(0)
        lm = EntropyLM(n_q=model.n_q, card=model.bins, dim=200, num_layers=5,
                       past_context=int(3.5 * model.frame_rate)).eval()
        with torch.no_grad():
            for lin in lm.linears:
                lin.weight.mul_(8.0)
        lm_label = "random (paper size, heads x8)"
    wav, rate = read_audio(args.audio)
    wav = convert_audio(wav, rate, model.sample_rate, model.channels)
    wav = wav[:, :int(args.seconds * model.sample_rate)]
    seconds = wav.shape[-1] / model.sample_rate
    t0 = time.perf_counter()
    flm = fixed_lm_for(lm)
    convert_s = time.perf_counter() - t0
    interval = default_check_interval(model.frame_rate)
    print(provenance_line({model.name: model, f"entropy model {lm_label}": lm}))
    print(f"codec {model.name}, entropy model {lm_label} (hash {flm.weights_hash}, converted in "
          f"{convert_s:.2f} s), {Path(args.audio).name} {seconds:.2f} s, {torch.get_num_threads()} thread(s)")
    print(f"default checks: {DEFAULT_CHECK_BITS} bits every {interval} frames + CRC-32 per segment")
    header = (f"{'kbps':>5s} {'float b/code':>12s} {'fixed b/code':>12s} {'diff %':>7s} {'plain B':>8s} "
              f"{'v0 LM B':>8s} {'v1 B':>8s} {'checks bit/s':>12s} {'checks %':>8s} {'enc s':>6s} {'dec s':>6s} "
              f"{'v0 dec s':>9s}")
    print(header)
    for bandwidth in args.bandwidths:
        previous = model.bandwidth
        model.set_target_bandwidth(bandwidth)
        try:
            with torch.inference_mode():
                frames = model.encode(wav[None])
        finally:
            model.bandwidth = previous
        float_b = fixed_b = 0.0
        n_codes = 0
        for codes, _ in frames:
            fb, xb = bits_per_code(lm, codes[0])
            float_b += fb * codes[0].numel()
            fixed_b += xb * codes[0].numel()
            n_codes += codes[0].numel()
        float_b /= n_codes
        fixed_b /= n_codes
        plain = compress(model, wav, bandwidth=bandwidth)
        official = compress(model, wav, bandwidth=bandwidth, lm=lm)
        t0 = time.perf_counter()
        decompress(official, model, lm=lm)
        t1 = time.perf_counter()
        det = compress(model, wav, bandwidth=bandwidth, lm=lm, deterministic=True, lm_name="bench")
        t2 = time.perf_counter()
        out, _ = decompress(det, model, lm=lm)
        t3 = time.perf_counter()
        assert torch.equal(out, decompress(plain, model)[0]), "deterministic decode differs"
        crc_only = compress(model, wav, bandwidth=bandwidth, lm=lm, deterministic=True, lm_name="bench",
                            check_bits=0)
        check_bits = 8 * (len(det) - len(crc_only)) + 32 * len(frames)
        rate_bps = check_bits / seconds
        print(f"{bandwidth:5g} {float_b:12.4f} {fixed_b:12.4f} {100 * (fixed_b - float_b) / float_b:+7.3f} "
              f"{len(plain):8d} {len(official):8d} {len(det):8d} {rate_bps:12.1f} "
              f"{100 * rate_bps / (bandwidth * 1000):8.2f} {t2 - t1:6.2f} {t3 - t2:6.2f} {t1 - t0:9.2f}")
    print("v1 B includes its longer header (entropy-model name, weights hash, check settings: "
          "~70 bytes more than version 0's); checks % is of the nominal bitrate")


if __name__ == "__main__":
    main()
