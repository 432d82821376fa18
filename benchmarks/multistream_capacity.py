"""How many full-duplex 24 kHz streams one core sustains in real time (``opencodec.multistream``).

    OMP_NUM_THREADS=1 OMP_WAIT_POLICY=PASSIVE .venv/bin/python benchmarks/multistream_capacity.py \
        [--streams 1,2,4,6,8,12,16,20,24,28,32] [--ticks 150] [--threads 1] [--audio demo/sample_speech_fr.flac]

For each model (the official 24 kHz architecture with random weights, 6 kbps; the bundled
``opencodec_24khz``, 6 kbps) and each number of streams N: N streams of real speech (the same
file at N different offsets) are opened, warmed up, then advanced for ``--ticks`` frames;
one tick = ``MultiStreamEncoder.push`` of N audio frames + ``MultiStreamDecoder.push`` of the
N code frames it returned (a full-duplex stream: it is both encoded and decoded). A tick
must take at most one frame (320 samples = 13.33 ms) for real time: the table gives the
tick time (p50 and p99), the real-time factor (p99 / 13.33 ms) and the largest N whose p99
tick fits in 13.33 ms ("capacity"). ``--unbatched`` measures ``batched=False`` instead.

Below the table, how far the batched streams are from each stream alone (bit-exact with the
streaming encoder/decoder): code frames equal (all codebooks) in %, and the audio's relative
L2 difference, for the largest N measured.

``--dry-run``: a tiny random model, 2 and 3 streams, 10 ticks (checks the script runs).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

from opencodec import EncodecConfig, EncodecModel
from opencodec.audio import convert_audio, read_audio
from opencodec.multistream import MultiStreamDecoder, MultiStreamEncoder
from opencodec.pretrained import load_model
from provenance import provenance_line

REPO = Path(__file__).resolve().parent.parent


def official_random(seed: int = 0) -> EncodecModel:
    """The official 24 kHz architecture with random weights; codebook entries are its own
    latents of noise and a chirp (random N(0, 1) entries would give nearly the same codes
    to every frame, and the batched-vs-alone code comparison would mean nothing)."""
    torch.manual_seed(seed)
    model = EncodecModel(EncodecConfig.encodec_24khz()).eval()
    gen = torch.Generator().manual_seed(seed + 1)
    t = torch.arange(48000) / 24000
    x = torch.cat([0.3 * torch.randn(1, 1, 48000, generator=gen),
                   0.4 * torch.sin(2 * torch.pi * (100 + 900 * t) * t)[None, None]], dim=-1)
    with torch.inference_mode():
        residual = model.encoder(x)[0].T.clone()  # [frames, D]
    with torch.no_grad():
        for layer in model.quantizer.vq.layers:
            cb = layer._codebook
            pick = torch.randint(residual.shape[0], (cb.embed.shape[0],), generator=gen)
            noise = torch.randn(cb.embed.shape, generator=gen)
            cb.embed.copy_(residual[pick] + 0.1 * residual.std() * noise)
            cb.inited.fill_(1.0)
            residual = residual - cb.embed[torch.cdist(residual, cb.embed).argmin(dim=1)]
    return model


def tiny_random(seed: int = 0) -> EncodecModel:
    torch.manual_seed(seed)
    cfg = EncodecConfig(name="tiny", n_filters=4, dimension=16, n_q=4, bins=64, lstm=1,
                        target_bandwidths=[1.5, 3.0])
    return EncodecModel(cfg).eval()


def speech(path: Path, model: EncodecModel, seconds: float) -> torch.Tensor:
    """The file as [C, T] at the model's rate, looped to ``seconds``."""
    wav, sr = read_audio(path)
    wav = convert_audio(wav, sr, model.sample_rate, model.channels)
    need = int(seconds * model.sample_rate)
    reps = -(-need // wav.shape[-1])
    return wav.repeat(1, reps)[:, :need]


def run_streams(model: EncodecModel, audio: torch.Tensor, n: int, ticks: int, batched: bool,
                exact: bool = True) -> tuple[list[float], list[torch.Tensor], list[torch.Tensor]]:
    """N full-duplex streams for warm-up + ``ticks`` frames; (tick seconds, codes, audio) per stream."""
    hop = model.hop_length
    enc, dec = MultiStreamEncoder(model, batched, exact=exact), MultiStreamDecoder(model, batched, exact=exact)
    warm = enc.warmup_frames + dec.warmup_frames
    total = warm + ticks
    offset = max(1, (audio.shape[-1] - total * hop) // max(n, 1))
    ids = [(enc.open(), dec.open()) for _ in range(n)]
    codes: list[list[torch.Tensor]] = [[] for _ in range(n)]
    out: list[list[torch.Tensor]] = [[] for _ in range(n)]
    times = []
    for t in range(total):
        frames = {e: audio[:, (i * offset + t * hop) % (audio.shape[-1] - hop):][:, :hop]
                  for i, (e, _) in enumerate(ids)}
        start = time.perf_counter()
        got = enc.push(frames)
        # A stream's code frames go to its decoder one at a time (7 at once after the warm-up).
        pending = {i: got[e] for i, (e, _) in enumerate(ids)}
        while any(c.shape[-1] for c in pending.values()):
            step = {ids[i][1]: c[:, :1] for i, c in pending.items() if c.shape[-1]}
            back = dec.push(step)
            for i, (_, d) in enumerate(ids):
                if d in back:
                    out[i].append(back[d])
            pending = {i: c[:, 1:] for i, c in pending.items()}
        elapsed = time.perf_counter() - start
        for i, (e, _) in enumerate(ids):
            codes[i].append(got[e])
        if t >= warm:
            times.append(elapsed)
    return times, [torch.cat(c, -1) for c in codes], [torch.cat(a, -1) for a in out]


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--streams", default="1,2,4,6,8,12,16,20,24,28,32")
    parser.add_argument("--ticks", type=int, default=150)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--bandwidth", type=float, default=6.0)
    parser.add_argument("--audio", default=str(REPO / "demo" / "sample_speech_fr.flac"))
    parser.add_argument("--unbatched", action="store_true", help="measure batched=False")
    parser.add_argument("--fast", action="store_true", help="fast mode (exact=False; README, 'Fast mode')")
    parser.add_argument("--dry-run", action="store_true", help="tiny random model, 2-3 streams, 10 ticks")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.dry_run:
        models = {"tiny random (dry run)": tiny_random()}
        counts, ticks, bandwidth = [2, 3], 10, 1.5
    else:
        models = {"encodec_24khz architecture (random weights)": official_random(),
                  "opencodec_24khz (bundled)": load_model("opencodec_24khz")}
        counts, ticks, bandwidth = [int(c) for c in args.streams.split(",")], args.ticks, args.bandwidth
    for model in models.values():
        model.set_target_bandwidth(bandwidth)
    frame_ms = 1000 * 320 / 24000
    print(provenance_line(models))
    print(f"{'batched' if not args.unbatched else 'unbatched'}, {'fast' if args.fast else 'exact'} mode, {bandwidth} kbps, {ticks} ticks after the warm-up, "
          f"one tick = encode + decode one frame of every stream, real time = {frame_ms:.2f} ms per tick")
    print("| model | streams | tick p50 ms | tick p99 ms | per stream p50 ms | p99 / real time |")
    print("|---|---|---|---|---|---|")
    for name, model in models.items():
        audio = speech(Path(args.audio), model, seconds=(ticks + 20) * 320 / 24000 + 5)
        capacity = 0
        largest = None
        with torch.inference_mode():
            for n in counts:
                times, codes, out = run_streams(model, audio, n, ticks, not args.unbatched, not args.fast)
                p50, p99 = 1000 * statistics.median(times), 1000 * pct(times, 0.99)
                print(f"| {name} | {n} | {p50:.2f} | {p99:.2f} | {p50 / n:.2f} | {p99 / frame_ms:.2f} |")
                sys.stdout.flush()
                if p99 <= frame_ms:
                    capacity = max(capacity, n)
                largest = (n, codes, out)
            print(f"| {name} | capacity (largest N with p99 tick <= {frame_ms:.2f} ms): **{capacity}** | | | | |")
            if largest is not None and not args.unbatched:
                n, codes, out = largest
                _, codes1, out1 = zip(*[run_streams_alone(model, audio, n, i, ticks) for i in range(n)])
                same = sum(int((a == b).all(0).sum()) for a, b in zip(codes, codes1))
                frames = sum(c.shape[-1] for c in codes1)
                diff = torch.cat([a - b for a, b in zip(out, out1)], -1).norm()
                ref = torch.cat(list(out1), -1).norm()
                print(f"  batched ({n} streams) vs each stream alone: code frames equal {100 * same / frames:.2f}% "
                      f"of {frames}, audio relative L2 {float(diff / ref):.2e}")


def run_streams_alone(model: EncodecModel, audio: torch.Tensor, n: int, i: int, ticks: int
                      ) -> tuple[None, torch.Tensor, torch.Tensor]:
    """Stream ``i`` of ``run_streams(.., n, ..)`` alone (batch of one): its codes and audio."""
    hop = model.hop_length
    enc, dec = MultiStreamEncoder(model), MultiStreamDecoder(model)
    total = enc.warmup_frames + dec.warmup_frames + ticks
    offset = max(1, (audio.shape[-1] - total * hop) // max(n, 1))
    e, d = enc.open(), dec.open()
    codes, out = [], []
    for t in range(total):
        c = enc.push({e: audio[:, (i * offset + t * hop) % (audio.shape[-1] - hop):][:, :hop]})[e]
        codes.append(c)
        out += [dec.push({d: c[:, f:f + 1]})[d] for f in range(c.shape[-1])]
    return None, torch.cat(codes, -1), torch.cat(out, -1)


if __name__ == "__main__":
    main()
