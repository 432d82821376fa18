"""Measuring an entropy model: held-out bits per code with the coder's own arithmetic
(:func:`sequence_bits`, :func:`validate`), and the saving on held-out audio
(:func:`evaluate_saving`): per bandwidth the ideal bits per code (``-log2 p`` of the model)
against the plain ``log2(bins)`` = 10 bits, and the real ``.ecdc`` sizes written by
``compress(..., lm=lm)`` against ``compress(...)``, in ``report.json`` and ``report.md``
(:func:`write_report`; ``opencodec train-lm report``, :func:`report_main`).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import typing as tp
from pathlib import Path

import torch

from .._files import check_output, file_in_the_way, write_bytes_atomic
from ..argtypes import bandwidth_arg, positive_int
from ..errors import AudioIOError, ConfigError, OutputError, advice_for_entropy_model, codec_advice
from ..model import EncodecModel
from .lm_codes import CodeSet, _manifest_rows
from .lm_model import read_lm_info

#: What ``train-lm report`` says of an entropy model given as its codec (the loader's advice
#: names ``--lm-model``, an option report does not have).
REPORT_LM_ADVICE = codec_advice("train-lm report", "to --codec") + " (the entropy model goes to --lm)"
#: ... and of a codec given as its entropy model (the loader's advice names compress's options).
REPORT_CODEC_ADVICE = ("a codec goes to --codec; --lm takes an entropy model (the lm.safetensors that "
                       "opencodec train-lm exports)")

if tp.TYPE_CHECKING:
    from ..entropy import EntropyLM

REPORT_JSON = "report.json"
REPORT_MD = "report.md"


# -- 5. validation with the coder's path ---------------------------------------------------------
#: Frames per forward pass of :func:`sequence_bits`: its attention costs memory with the square
#: of a pass's length (a 10-minute file in one pass asked for about 20 GB).
SEQUENCE_CHUNK = 1024


def sequence_bits(lm: EntropyLM, codes: torch.Tensor, chunk: int = SEQUENCE_CHUNK) -> torch.Tensor:
    """Ideal code lengths ``-log2 p(code)`` of one sequence under ``lm``, as the coder sees it.

    Args:
        codes: long ``[K, F]``, the codes of one coder segment (fresh state at its start).
        chunk: frames per forward pass (the state carries the attention window across passes,
            so memory is bounded for any ``F``).
    Returns:
        float64 ``[K, F]`` bits. Computed with ``EntropyLM.forward`` under inference mode (the
        same arithmetic as the streaming ``step`` the arithmetic coder calls).
    """
    K, F = codes.shape
    device = next(lm.parameters()).device
    codes = codes.to(device)
    inputs = torch.cat([torch.zeros(K, 1, dtype=torch.long, device=device), codes[:, :-1] + 1], dim=1)
    parts, state = [], None
    with torch.inference_mode():
        for start in range(0, F, chunk):
            probs, state = lm(inputs[None, :, start:start + chunk], state)    # [1, K, f, card]
            p = probs[0].gather(-1, codes[:, start:start + chunk].unsqueeze(-1)).squeeze(-1)
            parts.append(-torch.log2(p.double().clamp_min(1e-30)).cpu())
    return torch.cat(parts, dim=1) if parts else torch.zeros(K, 0, dtype=torch.float64)


def validate(lm: EntropyLM, codes: CodeSet, bandwidths: tp.Sequence[float],
             codebooks: tp.Sequence[int], frame_rate: int, max_items: int | None = None
             ) -> dict[str, float]:
    """Held-out bits per code at each bandwidth, and the implied bitrate (kbps).

    Uses the first ``max_items`` sequences of ``codes``; keys ``bits_per_code/<bw>kbps`` and
    ``ideal_kbps/<bw>kbps``. The model is left in train mode. ``ValueError`` when those
    sequences hold no frame (``max_items`` 0, or only empty sequences): there is nothing to score.
    """
    count = len(codes) if max_items is None else min(len(codes), max_items)
    if int(codes.offsets[count]) == int(codes.offsets[0]):  # no frame: 0 bits per code would be a false figure
        raise ValueError(f"no held-out code to score: {count} of the {len(codes)} sequences used, none "
                         f"with a frame")
    lm.eval()
    out: dict[str, float] = {}
    for bw, k in zip(bandwidths, codebooks):
        bits, n = 0.0, 0
        for i in range(count):
            seq = codes.sequence(i)[:k]
            if seq.shape[-1] == 0:
                continue
            bits += float(sequence_bits(lm, seq).sum())
            n += seq.numel()
        out[f"bits_per_code/{bw:g}kbps"] = bits / n
        out[f"ideal_kbps/{bw:g}kbps"] = bits / n * k * frame_rate / 1000
    lm.train()
    return out


# -- 8. the saving on held-out audio -----------------------------------------------------------
def evaluate_saving(codec: EncodecModel, lm: EntropyLM, manifests: tp.Sequence[str],
                    bandwidths: tp.Sequence[float] | None = None, max_items: int | None = None,
                    progress: bool = True, verify: bool = True) -> dict[str, tp.Any]:
    """Measure what the entropy model saves on held-out audio, per bandwidth.

    For each of the first ``max_items`` readable files of ``manifests`` (converted to the
    codec's rate and channels) and each bandwidth: the ideal code length ``-log2 p`` of the
    codes under ``lm`` (fresh state per coder segment, as the coder) and the sizes of the
    ``.ecdc`` files that ``compress(codec, wav, bw)`` and ``compress(codec, wav, bw, lm=lm)``
    write (headers included). With ``verify``, the first file's entropy-coded bytes are
    decoded with ``decompress`` and must give the same audio as the plain file.

    Returns:
        ``{"codec", "items", "seconds", "skipped", "plain_bits_per_code", "bandwidths": [...]}``;
        each bandwidth entry has ``kbps``, ``codebooks``, ``ideal_bits_per_code``,
        ``ideal_saving_pct`` (vs ``log2(bins)`` bits per code), ``plain_bytes``, ``lm_bytes``,
        ``plain_kbps``, ``lm_kbps`` (real bitrates of the files), ``file_saving_pct`` and
        ``round_trip`` (True, or None when not checked).
    Raises:
        AudioIOError: no file could be read. BitstreamError/ValueError: a failed round trip.
    """
    from ..audio import convert_audio, read_audio
    from ..compress import compress, decompress
    from ..lm_pairing import check_lm_for_codec
    from ..progress import progress_bar

    # each bandwidth once: a repeated one would add its files' bytes twice into one row
    bandwidths = list(dict.fromkeys(float(b) for b in (bandwidths or codec.target_bandwidths)))
    check_lm_for_codec(lm, codec, max(codec.num_codebooks(b) for b in bandwidths))
    rows = _manifest_rows(manifests)
    if not rows:
        raise ConfigError(f"manifest(s) {', '.join(str(m) for m in manifests)} list no files")
    codec, lm = codec.cpu().eval(), lm.cpu().eval()
    plain_bits = math.log2(codec.bins)
    totals = {bw: {"bits": 0.0, "codes": 0, "plain_bytes": 0, "lm_bytes": 0} for bw in bandwidths}
    round_trip: dict[float, bool | None] = {bw: None for bw in bandwidths}
    items, seconds, skipped = 0, 0.0, []
    top = max(codec.target_bandwidths)
    bar = progress_bar(total=len(rows) if max_items is None else min(len(rows), max_items),
                       desc="saving", unit="file", disable=not progress, dynamic_ncols=True)
    for row in rows:
        if max_items is not None and items >= max_items:
            break
        try:
            wav, sr = read_audio(row["path"])
        except AudioIOError as exc:
            skipped.append({"path": row["path"], "error": str(exc)})
            print(f"warning: skipping {row['path']}: {exc}", file=sys.stderr)
            continue
        wav = convert_audio(wav, sr, codec.sample_rate, codec.channels)
        previous = codec.bandwidth
        codec.set_target_bandwidth(top)
        try:
            with torch.inference_mode():
                segments = [f.codes[0] for f in codec.encode(wav[None])]
        finally:
            codec.bandwidth = previous
        for bw in bandwidths:
            k = codec.num_codebooks(bw)
            for seg in segments:
                totals[bw]["bits"] += float(sequence_bits(lm, seg[:k]).sum())
                totals[bw]["codes"] += seg[:k].numel()
            plain = compress(codec, wav, bandwidth=bw)
            coded = compress(codec, wav, bandwidth=bw, lm=lm)
            totals[bw]["plain_bytes"] += len(plain)
            totals[bw]["lm_bytes"] += len(coded)
            if verify and items == 0:
                expected, _ = decompress(plain, codec)
                decoded, _ = decompress(coded, codec, lm=lm)
                round_trip[bw] = bool(torch.equal(expected, decoded))
        items += 1
        seconds += wav.shape[-1] / codec.sample_rate
        bar.update(1)
    bar.close()
    if items == 0:
        raise AudioIOError(f"no file of {', '.join(manifests)} could be read ({len(skipped)} skipped)")
    entries = []
    for bw in bandwidths:
        t = totals[bw]
        ideal = t["bits"] / max(t["codes"], 1)
        entries.append({
            "kbps": bw, "codebooks": codec.num_codebooks(bw),
            "ideal_bits_per_code": ideal, "ideal_saving_pct": 100 * (1 - ideal / plain_bits),
            "plain_bytes": t["plain_bytes"], "lm_bytes": t["lm_bytes"],
            "plain_kbps": t["plain_bytes"] * 8 / seconds / 1000, "lm_kbps": t["lm_bytes"] * 8 / seconds / 1000,
            "file_saving_pct": 100 * (1 - t["lm_bytes"] / max(t["plain_bytes"], 1)),
            "round_trip": round_trip[bw]})
    return {"codec": codec.name, "items": items, "seconds": seconds, "skipped": skipped,
            "plain_bits_per_code": plain_bits, "manifests": [str(m) for m in manifests],
            "bandwidths": entries}


def format_report(report: dict[str, tp.Any]) -> str:
    """The report as Markdown: one table row per bandwidth."""
    plain = report["plain_bits_per_code"]
    lines = [
        f"# Entropy model saving on held-out audio ({report['codec']})",
        "",
        (f"Entropy model: `{report.get('lm', '?')}`. Held-out audio: {report['items']} files, "
         f"{report['seconds']:.1f} s ({', '.join(report['manifests'])}; "
         f"{len(report['skipped'])} unreadable skipped)."),
        (f"Ideal bits per code: mean `-log2 p` of the codes under the model, against {plain:g} bits "
         f"per code for plain packing. Files: whole `.ecdc` files (headers included) written by "
         f"`compress()` without and with the entropy model."),
        "",
        (f"| bandwidth | codebooks | ideal bits/code (vs {plain:g}) | ideal saving | plain file kbps | "
         f"entropy-coded kbps | file saving | round trip |"),
        "|---|---|---|---|---|---|---|---|",
    ]
    for e in report["bandwidths"]:
        rt = {True: "ok", False: "FAILED", None: "not checked"}[e["round_trip"]]
        lines.append(f"| {e['kbps']:g} kbps | {e['codebooks']} | {e['ideal_bits_per_code']:.3f} | "
                     f"{e['ideal_saving_pct']:.1f}% | {e['plain_kbps']:.3f} | {e['lm_kbps']:.3f} | "
                     f"{e['file_saving_pct']:.1f}% | {rt} |")
    return "\n".join(lines) + "\n"


def write_report(report: dict[str, tp.Any], folder: str | os.PathLike[str], force: bool = False) -> None:
    """Write ``report.json`` and ``report.md`` into ``folder`` (atomically; existing files
    only with ``force``)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for name in (REPORT_JSON, REPORT_MD):
        check_output(folder / name, force)
    write_bytes_atomic(folder / REPORT_JSON, (json.dumps(report, indent=2) + "\n").encode())
    write_bytes_atomic(folder / REPORT_MD, format_report(report).encode())


# -- command line --------------------------------------------------------------------------------
def _check_report_folder(out: Path) -> None:
    """``OutputError`` when ``--out`` cannot be a folder (it, or a folder above it, is a file)."""
    blocker = file_in_the_way(out)
    if blocker is not None:
        where = "is a file" if blocker == out else f"cannot be a folder: {blocker} is a file"
        raise OutputError(f"--out {out} {where}; give a folder for {REPORT_JSON} and {REPORT_MD}")


def report_main(argv: tp.Sequence[str]) -> int:
    """``... report --lm PATH --manifest M [...] [--codec NAME] [--bandwidths ...] [--items N]``."""
    from ..pretrained import CODEC_LMS, load_lm_model, load_model

    parser = argparse.ArgumentParser(
        prog="opencodec train-lm report",
        description="Measure an entropy model's saving on held-out audio: ideal bits per code "
                    "and real .ecdc sizes with and without it, per bandwidth.")
    parser.add_argument("--lm", required=True, help="entropy model name or weights file")
    parser.add_argument("--codec", default=None,
                        help="codec name or weights file (default: the one the LM file was trained on)")
    parser.add_argument("--manifest", nargs="+", required=True, help="JSONL manifest(s) of held-out audio")
    parser.add_argument("--bandwidths", type=bandwidth_arg, nargs="*", default=None, help="kbps (default: all)")
    parser.add_argument("--items", type=positive_int, default=16, help="files to measure (default 16)")
    parser.add_argument("--out", default=None, help="folder for report.json and report.md")
    parser.add_argument("-f", "--force", action="store_true", help="overwrite an existing report")
    parser.add_argument("--threads", type=positive_int, default=None, help="torch threads")
    parser.add_argument("--no-verify", action="store_true", help="skip the round-trip check")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.out is not None:  # before the slow part
        _check_report_folder(Path(args.out))
        for name in (REPORT_JSON, REPORT_MD):
            check_output(Path(args.out) / name, args.force, need_folder=False)
    official_codec = {lm_name: codec for codec, lm_name in CODEC_LMS.items()}.get(args.lm)
    if official_codec is None and not Path(args.lm).expanduser().exists():
        load_lm_model(args.lm)  # the loader's own error: no such name or file
    info = read_lm_info(Path(args.lm).expanduser()) if Path(args.lm).expanduser().is_file() else {}
    codec_name = args.codec or info.get("codec_source") or info.get("codec") or official_codec
    if codec_name is None:
        load_lm_model(args.lm, codec_advice=REPORT_CODEC_ADVICE)  # what it is if not an entropy model (a codec...)
        parser.error(f"{args.lm} does not name its codec: pass --codec")
    with advice_for_entropy_model(REPORT_LM_ADVICE):
        codec = load_model(codec_name)
    # refuses an entropy model trained on another codec's codes (as compress does)
    lm = load_lm_model(args.lm, codec=codec, codec_advice=REPORT_CODEC_ADVICE)
    if not _manifest_rows(args.manifest):  # before the slow part (a missing manifest: FileNotFoundError naming it)
        raise ConfigError(f"--manifest {' '.join(args.manifest)}: the manifest(s) list no files; give "
                          f"manifest(s) of held-out audio")
    report = evaluate_saving(codec, lm, args.manifest, args.bandwidths or None, args.items,
                             progress=not args.no_progress, verify=not args.no_verify)
    report["lm"] = str(args.lm)
    if args.out is not None:
        write_report(report, args.out, force=args.force)
    print(format_report(report))
    return 0

