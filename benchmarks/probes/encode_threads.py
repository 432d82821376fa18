"""Do an encoder's latent and codes depend on the thread count? Before and after CPU encoding
ran on one thread (``opencodec.threads.one_thread``), and what that costs in time.

    OMP_WAIT_POLICY=PASSIVE PYTHONPATH=src python benchmarks/probes/encode_threads.py [--threads 1 2 3 4]

Table 1, for the bundled model and the official architectures with random weights (seeded),
on seeded noise of several lengths: whether the latent and the codes at each thread count
equal those at one thread,
* "before": the encoder and quantiser called directly on the caller's threads (what
  ``model.encode`` did before);
* "now": ``model.encode``, with a forward hook catching the latent it quantises.

With ``--audio DIR``, table 3: over the audio files below DIR (sorted; the bundled model at its
largest bandwidth), how many files' codes on two threads differ from one thread's, before and
now (what a file tokenised by a worker process of one thread was compared with).

Table 2: encoding 30 s of noise, best of ``--repeats`` alternating runs, now (one thread,
whatever the caller's count) and before on each thread count (24 kHz models; the 48 kHz
model segments and normalises, which the "before" call here does not reproduce).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from opencodec.audio import convert_audio, read_audio
from opencodec.errors import OpenCodecError
from opencodec.model import EncodecConfig, EncodecModel
from opencodec.pretrained import load_model


def _models() -> dict[str, EncodecModel]:
    models = {"bundled": load_model()}
    for name, cfg in (("official 24 kHz", EncodecConfig.encodec_24khz()),
                      ("official 48 kHz", EncodecConfig.encodec_48khz())):
        torch.manual_seed(1)
        models[name] = EncodecModel(cfg).eval()
    for model in models.values():
        model.set_target_bandwidth(max(model.target_bandwidths))
    return models


def _before(model: EncodecModel, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The latent and codes of the encoder and quantiser on the caller's threads."""
    if model.config.segment is not None:  # one segment, normalised as encode does
        x = x[..., : model.segment_length]
        if model.normalize:
            x = x / (1e-8 + x.mean(dim=1, keepdim=True).pow(2).mean(dim=2, keepdim=True).sqrt())
    latent = model.encoder(x)
    return latent, model.quantizer.encode(latent, model.num_codebooks())


def _now(model: EncodecModel, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    seen: list[torch.Tensor] = []
    hook = model.encoder.register_forward_hook(lambda mod, inp, out: seen.append(out.clone()))
    try:
        frames = model.encode(x)
    finally:
        hook.remove()
    return seen[0], frames[0].codes


def _at(threads: int, fn, *args):  # type: ignore[no-untyped-def]
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with torch.inference_mode():
            return fn(*args)
    finally:
        torch.set_num_threads(before)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2, 3, 4])
    parser.add_argument("--seconds", type=float, nargs="+", default=[0.3, 1.0, 3.3, 10.0])
    parser.add_argument("--repeats", type=int, default=4)
    parser.add_argument("--audio", default=None, help="folder of audio files for table 3")
    args = parser.parse_args()
    others = [n for n in args.threads if n != 1]
    models = _models()
    print(f"torch {torch.__version__}; OMP_WAIT_POLICY as set by the caller\n")
    print("| model | seconds | " + " | ".join(f"{n} threads: before latent / codes, now latent / codes" for n in others) + " |")
    print("|---|---|" + "---|" * len(others))
    for name, model in models.items():
        for seconds in args.seconds:
            torch.manual_seed(2)
            x = 0.1 * torch.randn(1, model.channels, int(seconds * model.sample_rate))
            ref_before, ref_now = _at(1, _before, model, x), _at(1, _now, model, x)
            cells = []
            for n in others:
                b, w = _at(n, _before, model, x), _at(n, _now, model, x)
                flags = [torch.equal(b[0], ref_before[0]), torch.equal(b[1], ref_before[1]),
                         torch.equal(w[0], ref_now[0]), torch.equal(w[1], ref_now[1])]
                cells.append("{} / {}, {} / {}".format(*("equal" if f else "DIFFER" for f in flags)))
            print(f"| {name} | {seconds:g} | " + " | ".join(cells) + " |", flush=True)
    print("\n| model | now: model.encode (one thread) | " + " | ".join(f"before, {n} thread(s)" for n in args.threads) + " |")
    print("|---|---|" + "---|" * len(args.threads))
    for name, model in models.items():
        if model.config.segment is not None:
            continue
        torch.manual_seed(3)
        x = 0.1 * torch.randn(1, model.channels, 30 * model.sample_rate)
        best = {key: float("inf") for key in ["now", *args.threads]}
        _at(max(args.threads), _now, model, x[..., : model.sample_rate])  # warm-up
        for _ in range(args.repeats):
            for key in best:
                fn, threads = (_now, max(args.threads)) if key == "now" else (_before, int(key))
                start = time.perf_counter()
                _at(threads, fn, model, x)
                best[key] = min(best[key], time.perf_counter() - start)
        print(f"| {name} | {best['now']:.3f} s | " + " | ".join(f"{best[n]:.3f} s" for n in args.threads) + " |",
              flush=True)

    if args.audio:
        _real_files(models["bundled"], Path(args.audio))


def _real_files(model: EncodecModel, folder: Path) -> None:
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    counts = {"files": 0, "unreadable": 0, "before": 0, "before_codes": 0, "now": 0, "codes": 0}
    for path in files:
        try:
            wav, rate = read_audio(path)
        except OpenCodecError:
            counts["unreadable"] += 1
            continue
        x = convert_audio(wav, rate, model.sample_rate, model.channels)[None]
        one_b, two_b = _at(1, _before, model, x)[1], _at(2, _before, model, x)[1]
        one_n, two_n = _at(1, _now, model, x)[1], _at(2, _now, model, x)[1]
        counts["files"] += 1
        counts["codes"] += one_b.numel()
        counts["before"] += int(not torch.equal(one_b, two_b))
        counts["before_codes"] += int((one_b != two_b).sum())
        counts["now"] += int(not torch.equal(one_n, two_n))
    print(f"\n| audio below {folder} | files | codes | before: files (codes) differing, 2 vs 1 thread "
          f"| now: files differing |")
    print("|---|---|---|---|---|")
    print(f"| bundled model, {model.num_codebooks()} codebooks | {counts['files']} ({counts['unreadable']} unreadable "
          f"skipped) | {counts['codes']} | {counts['before']} ({counts['before_codes']}) | {counts['now']} |")


if __name__ == "__main__":
    main()
