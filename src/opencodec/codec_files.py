"""Compress audio files to ``.ecdc`` and back, one file or a folder tree at a time.

The work behind ``opencodec compress`` and ``opencodec decompress``, without the printing:
:func:`plan_compress` / :func:`plan_decompress` decide which file goes where (refusing to
overwrite without ``force``), :class:`FileCompressor` / :class:`FileDecompressor` load the
models once and process one :class:`~opencodec.file_jobs.Job`, returning a
:class:`FileResult`; :func:`opencodec.file_jobs.run_jobs` runs them over a plan. Outputs are
written atomically (a temporary file renamed into place), so a failure leaves no partial file.
Long inputs of a streaming model (single files and files in a folder alike) go through
:mod:`opencodec.longform` (bounded memory). The sizes reported for entropy-coded files come
from :mod:`opencodec.ecdc_sizes`.

Progress is reported through an optional :data:`ProgressFactory`: ``factory(desc, unit, lazy)``
is a context manager yielding ``update(done, total)``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import typing as tp
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ._files import (check_output, check_output_folder, keep_existing, make_folder as _make_folder,
                     temporary_path, write_bytes_atomic)
from .audio import (AUDIO_EXTENSIONS, check_mp3_content, check_not_ecdc, check_output_format, convert_audio,
                    convert_input, fit_length, is_audio_file, loud_input_message, read_audio, resampled_length,
                    stores_float_samples, write_audio)
from .bandwidth import DEFAULT_BANDWIDTH  # noqa: F401 (re-exported: defined here before)
from .bitstream import EcdcHeader, StreamLayout, parse_header, read_header
from .compress import compress, decompress, header_lm_name
from .ecdc_info import ECDC_SUFFIX, is_ecdc_file, read_file_header, read_stream_file
from .ecdc_sizes import body_overhead, header_extra, plain_size  # noqa: F401 (re-exported: defined here before)
from .errors import AudioIOError, OutputError, UsageError
from .file_jobs import Job, Plan, check_input, is_same_file, plan_folder, single_output
from .longform import compress_file_streaming, decompress_file_streaming, supports_streaming
from .model import EncodecModel
from .model_cache import CodecModels, EntropyModels, lm_header_name, load_checked_model
from .pretrained import load_lm_model, load_model
from .progress import ProgressFactory, Update  # (defined here before: still importable from here)

AUDIO_OUTPUT_SUFFIXES = (".wav", ".flac")

#: Inputs longer than this (seconds) are processed in bounded memory (``opencodec.longform``)
#: when the model streams and an ``.ecdc`` file (compress) or audio at the model's rate and
#: channels (decompress, and a round trip not rescaled) is written, for a single file or for
#: each file of a folder.
STREAMING_MIN_SECONDS = 60.0



@dataclass
class OutputOptions:
    """How outputs are written: ``force`` overwrites, ``skip_existing`` leaves out the inputs
    whose output exists (to resume an interrupted folder), ``rescale`` scales decoded audio to a
    0.99 peak instead of clipping, ``float32`` writes 32-bit float WAV, ``rate`` (Hz) and
    ``channels`` convert decoded audio (None: the default of the command)."""

    force: bool = False
    skip_existing: bool = False
    rescale: bool = False
    float32: bool = False
    rate: int | None = None
    channels: int | None = None


@dataclass
class FileResult:
    """One processed file: ``seconds`` of audio, ``size_bytes`` of ``.ecdc`` data (compress;
    None for decompress), the written audio's ``sample_rate`` and ``channels`` (decompress and
    round trips), ``streamed`` when it went through bounded-memory streaming, the
    ``warnings`` (clipping) raised while writing audio, the other ``notices`` (an input
    louder than full scale or shorter than its header says, an output with no samples),
    and for entropy-coded data ``plain_bytes``, the size the same file has without the
    entropy model (:func:`plain_size`), ``header_extra``, the bytes its header has
    over the plain header's (:func:`header_extra`), ``checksums``: whether its format
    carries checksums (the deterministic one; the official one has none), and
    ``body_overhead``, the bytes of its body that code no code (:func:`body_overhead`)."""

    src: Path
    dst: Path
    seconds: float
    size_bytes: int | None = None
    sample_rate: int | None = None
    channels: int | None = None
    streamed: bool = False
    warnings: list[str] = field(default_factory=list)
    plain_bytes: int | None = None
    notices: list[str] = field(default_factory=list)
    header_extra: int | None = None
    checksums: bool = False
    body_overhead: int = 0

    @property
    def body_extra(self) -> int | None:
        """Bytes an entropy-coded file's body spends on the codes (and scales) over the plain
        body, its fixed costs left out (the header's extra fields, :attr:`body_overhead`):
        >= 0 when the entropy model codes the codes into no fewer bytes than plain coding,
        negative when it saves. None unless entropy-coded."""
        if self.size_bytes is None or self.plain_bytes is None or self.header_extra is None:
            return None
        return self.size_bytes - self.plain_bytes - self.header_extra - self.body_overhead


# ------------------------------------------------------------------------------------------
# Planning
# ------------------------------------------------------------------------------------------
def _check_float(options: OutputOptions, jobs: list[Job]) -> None:
    if options.float32 and any(j.dst.suffix.lower() == ".flac" for j in jobs):
        raise UsageError("--float needs a .wav output: FLAC stores 16 or 24-bit integers only")
    for job in jobs:  # --rate/--channels that a FLAC output cannot hold: refused before any work
        try:
            check_output_format(job.dst, options.rate or 0, options.channels or 0)
        except AudioIOError as exc:
            raise UsageError(str(exc)) from None


def _plan(src: str | os.PathLike[str], out: str | os.PathLike[str] | None, options: OutputOptions,
          accept: tp.Callable[[Path], bool], suffix: str, allowed: tp.Sequence[str], what: str, stdio: str,
          reads_pipes: bool) -> Plan:
    """The plan of a command (``src``/``out``: str or path-like); ``reads_pipes``: the command
    reads an input that is not a regular file (``/dev/stdin``), else such an input is refused
    with ``stdio``, which says why."""
    for name, given in (("input", src), ("output", out)):
        if given is not None and os.fspath(given) == "":  # Path("") is the current folder
            raise UsageError(f"the {name} path is empty (''): it names no file; an unset shell variable?")
    folder_out = out is not None and os.fspath(out).endswith(("/", os.sep))  # "OUT/": a folder is meant
    src, out = Path(src), None if out is None else Path(out)
    if str(src) == "-" or str(out) == "-":
        raise UsageError(f"'-' (stdin/stdout) is not a file: {stdio}")
    check_input(src)
    if not reads_pipes and not src.is_dir() and not src.is_file():
        raise UsageError(f"input {src} is not a regular file (a pipe or device): {stdio}")
    if options.force and options.skip_existing:
        raise UsageError("--force and --skip-existing contradict each other: choose one")
    if src.is_dir():
        if out is not None and not out.is_dir() and out.suffix.lower() in (*AUDIO_EXTENSIONS, ECDC_SUFFIX):
            raise UsageError(f"input {src} is a folder, so OUT must be a folder, but {out} ends in "
                             f"{out.suffix}: give a folder name (a folder's files are written into it, "
                             "each with its own name)")
        plan = Plan(plan_folder(src, out, accept, suffix, what), folder=True)
    else:
        dst = single_output(src, out, suffix, allowed, folder=folder_out)
        if is_same_file(src, dst):  # before "exists, use -f": -f would not help
            raise FileExistsError(f"output {dst} is the input file itself; give another output")
        if not (options.skip_existing and dst.is_file()):
            check_output(dst, options.force)
        plan = Plan([Job(src, dst)])
    _check_float(options, plan.jobs)
    return plan.skip_existing() if options.skip_existing else plan


def plan_compress(src: str | os.PathLike[str], out: str | os.PathLike[str] | None,
                  options: OutputOptions) -> Plan:
    """Jobs for ``compress SRC [OUT]`` (str or path-like paths): audio -> ``.ecdc``, or a round
    trip when OUT ends in .wav/.flac. Raises ``FileNotFoundError``/``FileExistsError``
    (existing output without ``force``) or :class:`~opencodec.errors.UsageError` (options that do not
    fit, an empty path: ``Path("")`` would be the current folder)."""
    check_not_ecdc(src)  # an .ecdc input: AudioIOError saying so (before "OUT is the input file itself")
    plan = _plan(src, out, options, is_audio_file, ECDC_SUFFIX, (ECDC_SUFFIX, *AUDIO_OUTPUT_SUFFIXES),
                 f"audio files ({', '.join(sorted(AUDIO_EXTENSIONS))})",
                 "compress reads and writes files; 'opencodec stream-encode' encodes audio from stdin "
                 "to a packet stream on stdout ('opencodec stream-decode' decodes it)", reads_pipes=False)
    if any(j.dst.suffix.lower() == ECDC_SUFFIX for j in plan.jobs):
        decoding = [flag for flag, given in (("--rate", options.rate), ("--channels", options.channels),
                                             ("--float", options.float32), ("-r/--rescale", options.rescale))
                    if given]
        if decoding:
            verb = "applies" if len(decoding) == 1 else "apply"
            raise UsageError(f"{' and '.join(decoding)} {verb} to decoded audio: a round trip (OUT .wav "
                             f"or .flac), or decompress of the .ecdc file")
    return plan


def plan_decompress(src: str | os.PathLike[str], out: str | os.PathLike[str] | None,
                    options: OutputOptions) -> Plan:
    """Jobs for ``decompress SRC [OUT]`` (str or path-like paths): ``.ecdc`` -> .wav (or
    .flac). Errors as :func:`plan_compress`."""
    return _plan(src, out, options, is_ecdc_file, ".wav",
                 AUDIO_OUTPUT_SUFFIXES, f"{ECDC_SUFFIX} files",
                 "decompress reads and writes files (an .ecdc file from a pipe: IN /dev/stdin); "
                 "'opencodec stream-decode' decodes the packet streams of 'opencodec stream-encode' "
                 "from stdin to stdout", reads_pipes=True)


# ------------------------------------------------------------------------------------------
# Shared pieces
# ------------------------------------------------------------------------------------------
@contextlib.contextmanager
def _bar(progress: ProgressFactory | None, desc: str, unit: str, lazy: bool = False) -> tp.Iterator[Update]:
    if progress is None:
        yield lambda done, total: None
        return
    with progress(desc, unit, lazy) as update:
        yield update


@contextlib.contextmanager
def _count_segments(progress: ProgressFactory | None, modules: tp.Sequence[torch.nn.Module],
                    steps: int, desc: str) -> tp.Iterator[None]:
    """Progress advanced by each forward call of ``modules`` (one per segment), when there is
    more than one step to count."""
    if progress is None or steps <= 1:
        yield
        return
    with progress(desc, "segment", False) as update:
        done = [0]
        update(0, steps)

        def advance(*_: tp.Any) -> None:  # must return None: a hook's return value replaces the output
            done[0] += 1
            update(done[0], steps)

        handles = [m.register_forward_hook(advance) for m in modules]
        try:
            yield
        finally:
            for handle in handles:
                handle.remove()


def _save_audio(options: OutputOptions, dst: Path, wav: torch.Tensor, sample_rate: int) -> list[str]:
    """Write decoded audio [C, T] with the output options; returns the clipping warnings."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        write_audio(dst, wav, sample_rate, bits=32 if options.float32 else 16, rescale=options.rescale)
    return [str(w.message) for w in caught]


def _to_output_format(options: OutputOptions, wav: torch.Tensor, sample_rate: int,
                      default_rate: int, default_channels: int,
                      input_length: int | None = None) -> tuple[torch.Tensor, int]:
    """Decoded audio [C, T] converted to ``options.rate``/``channels`` (else the defaults).
    ``input_length``: samples of the round trip's input at ``default_rate`` (its own rate);
    the output then has exactly that length at that rate (:func:`resampled_length` of it at
    another): resampling to the codec's rate and back can add a sample (soxr rounds half up)."""
    rate = options.rate or default_rate
    out = convert_audio(wav, sample_rate, rate, options.channels or default_channels)
    if input_length is not None:
        out = fit_length(out, resampled_length(input_length, default_rate, rate))
    return out, rate


def _empty_output(dst: Path, wav: torch.Tensor, seconds: float, rate: int) -> list[str]:
    """The notice for decoded audio that holds no samples (a very short input at a low rate)."""
    if wav.shape[-1]:
        return []
    return [f"{dst}: the output holds no samples: {seconds:.6g} s of audio at {rate} Hz rounds to 0 samples"]


@contextlib.contextmanager
def _notices(into: list[str]) -> tp.Iterator[None]:
    """Collect the ``UserWarning`` messages raised in the block (a truncated input, a loud
    long input) into ``into``, for the caller to report with its result."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", UserWarning)
        yield
    into += [str(w.message) for w in caught if issubclass(w.category, UserWarning)]


def loudness_notice(src: Path, wav: torch.Tensor) -> list[str]:
    """The notice for input audio louder than full scale (:func:`~opencodec.audio.loud_input_message`)."""
    message = loud_input_message(src, float(wav.abs().max()) if wav.numel() else 0.0)
    return [] if message is None else [message]


def _header_info(path: Path) -> tp.Any:
    """libsndfile's header facts of an audio file (``soundfile.info``), None when unreadable (the
    ordinary path then reports the problem; a ``.mp3`` holding no MPEG audio is not handed to
    libsndfile, whose MP3 decoder would print notes on stderr: :func:`~opencodec.audio.check_mp3_content`)."""
    import soundfile as sf
    try:
        check_mp3_content(path)
        return sf.info(os.fsencode(path))
    except Exception:  # noqa: BLE001 - the ordinary path reports the problem
        return None


def _long_input(path: Path) -> tp.Any:
    """libsndfile's header facts of ``path`` (:func:`_header_info`) when it lasts more than
    :data:`STREAMING_MIN_SECONDS`, else None (also when its header cannot be read)."""
    info = _header_info(path)
    long = info is not None and info.samplerate > 0 and info.frames / info.samplerate > STREAMING_MIN_SECONDS
    return info if long else None


def _entropy_coded_sizes(result: FileResult, header: EcdcHeader, model: EncodecModel) -> None:
    """Fill in ``result``'s sizes of an entropy-coded file with ``header``: ``plain_bytes``,
    ``header_extra``, ``checksums`` (the deterministic format's) and ``body_overhead``."""
    result.plain_bytes, result.header_extra = plain_size(header, model), header_extra(header)
    result.checksums = header.deterministic is not None
    result.body_overhead = body_overhead(header, StreamLayout.from_model(model))


# ------------------------------------------------------------------------------------------
# compress
# ------------------------------------------------------------------------------------------
class FileCompressor:
    """Compresses files with one model at one bandwidth (kbps), loaded once.

    ``lm`` (or an ``lm_model`` name/path) entropy-codes the codes, in the ``lm_format``
    'deterministic' (version 1) or 'official' (version 0) format. An unsupported bandwidth of
    a known model name fails before any weights load; the entropy model loads here too, so
    it fails before any file.
    """

    def __init__(self, model_arg: str | None, bandwidth: float, options: OutputOptions, *,
                 lm: bool = False, lm_model: str | None = None, lm_format: str = "deterministic",
                 progress: ProgressFactory | None = None, exact: bool = True):
        self.bandwidth, self.options, self.progress = bandwidth, options, progress
        self.model: EncodecModel = load_checked_model(model_arg, bandwidth, load=lambda arg: load_model(arg))
        self.model.exact = exact  # fast mode when False (README, "Fast mode")
        self.model.set_target_bandwidth(bandwidth)
        self.lm = None
        if lm or lm_model is not None:
            self.lm = load_lm_model(lm_model, codec=self.model,
                                    num_codebooks=self.model.num_codebooks(bandwidth))
        self._lm_args: dict[str, tp.Any] = {} if self.lm is None else {"lm": self.lm}
        if self.lm is not None and lm_format == "deterministic":
            name = lm_header_name(lm_model, self.model, self.lm)  # checked now, before any work
            self._lm_args.update(deterministic=True, lm_name=header_lm_name(name, lm_model, self.lm))

    def __call__(self, job: Job, folder: bool = False) -> FileResult:
        """Compress ``job.src`` to ``job.dst`` (.ecdc, or .wav/.flac for a round trip). Without
        ``options.force``, an output that appears meanwhile (another command) is kept: an error."""
        with keep_existing(not self.options.force):
            return self._compress(job, folder)

    def _compress(self, job: Job, folder: bool) -> FileResult:
        check_output(job.dst, self.options.force, need_folder=not folder)
        check_output_folder(job.dst.parent)  # before the work: _make_folder creates it after
        model = self.model
        long = _long_input(job.src) if supports_streaming(model) else None
        if long is not None:
            if job.dst.suffix.lower() == ECDC_SUFFIX:
                return self._streamed(job, folder)
            if self._round_trip_streams(long):
                return self._streamed_round_trip(job, folder)
        notices: list[str] = []
        with _notices(notices):
            wav, sample_rate = read_audio(job.src)
        input_rate, input_channels, input_length = sample_rate, wav.shape[0], wav.shape[-1]
        wav = convert_input(job.src, wav, sample_rate, model.sample_rate, model.channels)
        if stores_float_samples(job.src):  # what the codec sees, as the long-file path measures it
            notices += loudness_notice(job.src, wav)
        length = wav.shape[-1]
        round_trip = job.dst.suffix.lower() in AUDIO_OUTPUT_SUFFIXES
        if round_trip:  # before the work: the output's format must hold its channels and rate
            check_output_format(job.dst, self.options.rate or input_rate, self.options.channels or input_channels)
        steps = len(model.segments(length)) * (2 if round_trip else 1)
        modules = [model.encoder, model.decoder] if round_trip else [model.encoder]
        with torch.no_grad(), _count_segments(None if folder else self.progress, modules, steps,
                                              job.src.name):
            data = compress(model, wav, bandwidth=self.bandwidth, **self._lm_args)
            if round_trip:
                out, out_rate = decompress(data, model, **({} if self.lm is None else {"lm": self.lm}))
        _make_folder(job.dst.parent)
        result = FileResult(job.src, job.dst, length / model.sample_rate, size_bytes=len(data), notices=notices)
        if self.lm is not None:
            _entropy_coded_sizes(result, parse_header(data)[0], model)
        if round_trip:  # back to the input's rate and channels unless options say otherwise
            out, out_rate = _to_output_format(self.options, out, out_rate, input_rate, input_channels,
                                              input_length)
            notices += _empty_output(job.dst, out, result.seconds, out_rate)
            result.warnings = _save_audio(self.options, job.dst, out, out_rate)
            result.sample_rate, result.channels = out_rate, out.shape[0]
        else:
            write_bytes_atomic(job.dst, data)
        return result

    def _round_trip_streams(self, info: tp.Any) -> bool:
        """Whether a long round trip of an input with header facts ``info`` (``soundfile.info``)
        can run in bounded memory (.ecdc streamed, then decoded streamed): its output is at the
        model's rate and channels, not rescaled (which needs the whole peak). Other long round
        trips are processed whole (memory grows with length)."""
        options, model = self.options, self.model
        return (not options.rescale
                and (options.rate or int(info.samplerate)) == model.sample_rate
                and (options.channels or int(info.channels)) == model.channels)

    def _streamed_round_trip(self, job: Job, folder: bool) -> FileResult:
        """A long round trip in bounded memory: ``.ecdc`` into a hidden temporary file beside the
        output (:func:`~opencodec._files.temporary_path`: one a ``kill -9`` leaves is removed by
        the next write into that folder), decoded from there, then removed."""
        with temporary_path(job.dst) as coded_path:
            try:
                coded = self._streamed(Job(job.src, coded_path), folder)
            except OutputError as exc:  # "cannot write PATH": name the output, not its temporary file
                raise OutputError(str(exc).replace(str(coded_path), str(job.dst))) from exc
            bars = None if folder else self.progress
            with warnings.catch_warnings(record=True) as caught, _bar(bars, job.src.name, "frame", lazy=True) as bar:
                warnings.simplefilter("always")
                decompress_file_streaming(coded.dst, job.dst, self.model, bits=32 if self.options.float32 else 16,
                                          progress=bar, lm=self.lm)
        return dataclasses.replace(coded, dst=job.dst, sample_rate=self.model.sample_rate,
                                   channels=self.model.channels, warnings=[str(w.message) for w in caught])

    def _streamed(self, job: Job, folder: bool) -> FileResult:
        bars = None if folder else self.progress  # a folder has one bar, over its files
        notices: list[str] = []
        _make_folder(job.dst.parent)
        with _bar(bars, job.src.name, "sample") as progress, \
                _bar(bars, "entropy coding", "frame", lazy=True) as lm_progress, _notices(notices):
            size = compress_file_streaming(self.model, job.src, job.dst, self.bandwidth, progress=progress,
                                           lm_progress=lm_progress, **self._lm_args)
        with open(job.dst, "rb") as fi:
            header = read_header(fi)
        result = FileResult(job.src, job.dst, header.audio_length / self.model.sample_rate, size_bytes=size,
                            streamed=True, notices=notices)
        if self.lm is not None:
            _entropy_coded_sizes(result, header, self.model)
        return result


# ------------------------------------------------------------------------------------------
# decompress
# ------------------------------------------------------------------------------------------
class FileDecompressor:
    """Decompresses ``.ecdc`` files with the model each header names (or ``model_arg``,
    checked against each header) and, for entropy-coded files, its entropy model (or
    ``lm_model``); each model loads at most once."""

    def __init__(self, model_arg: str | None, options: OutputOptions, *, lm_model: str | None = None,
                 progress: ProgressFactory | None = None, exact: bool = True):
        self.options, self.progress = options, progress
        self.models = CodecModels(model_arg, lambda name: load_model(name), exact=exact)
        self.lms = EntropyModels(lm_model)

    def preload(self, paths: tp.Iterable[Path]) -> None:
        """Load now the models the headers of ``paths`` name (each once), so that worker
        processes forked afterwards share them instead of each loading its own. A file or
        model that fails is left for its job to report."""
        for path in paths:
            try:
                with open(path, "rb") as fi:
                    header = read_header(fi)
                model = self.models.get(header.model_name, header.model_hash, header.num_codebooks)
                if header.use_lm:
                    self.lms.get(model, header)
            except Exception:  # noqa: BLE001  (each job reports its own file's error)
                continue

    def __call__(self, job: Job, folder: bool = False) -> FileResult:
        """Decode ``job.src`` (.ecdc) to ``job.dst`` (.wav/.flac). Without ``options.force``, an
        output that appears meanwhile (another command) is kept: an error."""
        with keep_existing(not self.options.force):
            return self._decompress(job, folder)

    def _decompress(self, job: Job, folder: bool) -> FileResult:
        options = self.options
        check_output(job.dst, options.force, need_folder=not folder)
        check_output_folder(job.dst.parent)  # before the work: _make_folder creates it after
        # a bad file fails at its header, before any model loads; a pipe (IN /dev/stdin) can be
        # read once: its header (/dev/zero: refused there), then all of it
        data = None
        if job.src.is_file():
            with open(job.src, "rb") as fi:
                header = read_file_header(fi, "opencodec decompress")
        else:
            header, data = read_stream_file(job.src, "opencodec decompress")
        model = self.models.get(header.model_name, header.model_hash, header.num_codebooks)
        lm = self.lms.get(model, header) if header.use_lm else None
        bars = None if folder else self.progress  # a folder has one bar, over its files
        if (data is None and not options.rescale and supports_streaming(model)
                and options.rate in (None, model.sample_rate) and options.channels in (None, model.channels)
                and header.audio_length / model.sample_rate > STREAMING_MIN_SECONDS):
            _make_folder(job.dst.parent)
            shown: list[str] = []  # the header's warnings, given above: the decode reads it again
            with open(job.src, "rb") as fi, _notices(shown):
                read_file_header(fi, "opencodec decompress")
            with warnings.catch_warnings(record=True) as caught, \
                    _bar(bars, "entropy decoding", "frame", lazy=True) as lm_progress, \
                    _bar(bars, job.src.name, "frame", lazy=True) as progress:
                warnings.simplefilter("always")
                length = decompress_file_streaming(job.src, job.dst, model,
                                                   bits=32 if options.float32 else 16, progress=progress,
                                                   lm=lm, lm_progress=lm_progress)
            return FileResult(job.src, job.dst, length / model.sample_rate, sample_rate=model.sample_rate,
                              channels=model.channels, streamed=True,
                              warnings=[str(w.message) for w in caught if str(w.message) not in shown])
        check_output_format(job.dst, options.rate or model.sample_rate, options.channels or model.channels)
        data = job.src.read_bytes() if data is None else data
        steps = len(model.segments(header.audio_length))
        with torch.no_grad(), _count_segments(None if folder else self.progress, [model.decoder], steps,
                                              job.src.name):
            wav, sample_rate = decompress(data, model, **({} if lm is None else {"lm": lm}))
        seconds = header.audio_length / model.sample_rate
        wav, sample_rate = _to_output_format(options, wav, sample_rate, sample_rate, wav.shape[0])
        _make_folder(job.dst.parent)
        warned = _save_audio(options, job.dst, wav, sample_rate)
        return FileResult(job.src, job.dst, wav.shape[-1] / sample_rate, sample_rate=sample_rate,
                          channels=wav.shape[0], warnings=warned,
                          notices=_empty_output(job.dst, wav, seconds, sample_rate))
