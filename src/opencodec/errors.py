"""The project's own error types: every failure a user can cause raises one of these."""

import contextlib
import os
import traceback
import typing as tp


class OpenCodecError(Exception):
    """Base class of every error opencodec raises on bad input or missing resources."""


class BitstreamError(OpenCodecError):
    """A compressed stream (`.ecdc` or packet stream) is malformed, truncated or padded."""


class ModelLoadError(OpenCodecError):
    """A model or checkpoint cannot be found, downloaded, verified or loaded."""


class EntropyModelAsCodecError(ModelLoadError):
    """An entropy model (its weights, or a ``train-lm`` training checkpoint) given where a
    codec is expected. The message is ``problem + joiner + advice``; the loader's advice names
    ``--lm-model``, so a command without that option gives its own (:meth:`with_advice`)."""

    def __init__(self, problem: str, advice: str, joiner: str = "; ") -> None:
        super().__init__(f"{problem}{joiner}{advice}")
        self.problem = problem
        self.advice = advice
        self.joiner = joiner

    def __reduce__(self) -> tuple[tp.Any, ...]:  # pickled across processes with its parts
        return type(self), (self.problem, self.advice, self.joiner)

    def with_source(self, source: str) -> "EntropyModelAsCodecError":
        """The same error with ``source`` (the file, the model name) before its message."""
        return type(self)(f"{source}: {self.problem}", self.advice, self.joiner)

    def with_advice(self, advice: str) -> "EntropyModelAsCodecError":
        """The same error with ``advice`` in place of the loader's."""
        return type(self)(self.problem, advice, self.joiner)


#: What the loader advises for a codec given where an entropy model is expected (the options of
#: ``opencodec compress``; a command with other options passes its own: ``load_lm_model(codec_advice=...)``).
CODEC_AS_LM_ADVICE = ("a codec goes to -m/--model; --lm-model takes an entropy model (the lm.safetensors that "
                      "opencodec train-lm exports)")


class CodecAsEntropyModelError(ModelLoadError):
    """A codec (its weights, or an ``opencodec train`` checkpoint) given where an entropy model
    is expected: the reverse of :class:`EntropyModelAsCodecError`. The
    message is ``problem + "; " + advice``; the loader's advice names ``compress``'s options,
    a command with others passes its own (``opencodec.lm_loading.load_lm_model(..., codec_advice=...)``)."""

    def __init__(self, problem: str, advice: str = CODEC_AS_LM_ADVICE) -> None:
        super().__init__(f"{problem}; {advice}")
        self.problem, self.advice = problem, advice

    def __reduce__(self) -> tuple[tp.Any, ...]:  # pickled across processes with its parts
        return type(self), (self.problem, self.advice)


def codec_advice(command: str, where: str = "to -m/--model") -> str:
    """What ``opencodec COMMAND`` advises for an entropy model given where it expects a codec:
    pass a codec ``where`` (its option for one: ``"to --codec"``, ``"as MODEL"``)."""
    return f"opencodec {command} takes a codec: pass a codec's name or weights file {where}"


@contextlib.contextmanager
def advice_for_entropy_model(
        advice: str, error: tp.Callable[[EntropyModelAsCodecError], Exception] | None = None) -> tp.Iterator[None]:
    """Inside the block, an entropy model given where a codec is expected
    (:class:`EntropyModelAsCodecError`, whose loader's advice names ``--lm-model``) is re-raised
    with ``advice`` in place of the loader's (:meth:`~EntropyModelAsCodecError.with_advice`;
    the commands' own wording: :func:`codec_advice`), or as ``error(that error)`` when given
    (a trainer's ``ConfigError`` naming its config field). The one place that does this, for
    the command line and the library alike (this module imports no torch)."""
    try:
        yield
    except EntropyModelAsCodecError as exc:
        advised = exc.with_advice(advice)
        raise (advised if error is None else error(advised)) from None


class AudioIOError(OpenCodecError):
    """An audio file cannot be read, converted or written."""


class InvalidAudioError(OpenCodecError, ValueError):
    """The audio or an argument given to :func:`opencodec.compress.compress` cannot be encoded
    (wrong shape, channels, dtype, empty, non-finite samples, unsupported bandwidth); also the
    audio given to ``EncodecModel.encode``, ``batching.encode_batch`` and the streaming and
    multistream encoders (see :mod:`opencodec.input_checks`)."""


class InvalidCodesError(OpenCodecError, ValueError):
    """Codes given to a decoder (``EncodecModel.decode``, ``batching.decode_batch``, the
    streaming and multistream decoders) that it cannot decode: not an integer tensor, the
    wrong shape or number of codebooks, or a code outside ``[0, bins)`` (see
    :mod:`opencodec.input_checks`)."""


class ChannelConversionError(InvalidAudioError, AudioIOError):
    """Audio whose channel count :func:`~opencodec.audio.convert_channels` cannot change as asked (e.g. 3 -> 2): a
    ``ValueError`` (:class:`~opencodec.errors.InvalidAudioError`) about the tensor given, and
    also an ``AudioIOError``, as before, so that callers skipping files they cannot use by that
    class (``except AudioIOError``) still skip such a file."""


class UnsupportedBandwidthError(InvalidAudioError):
    """A bandwidth (kbps) that the model does not support (see
    :func:`opencodec.bandwidth.check_bandwidth`)."""


class OutputError(OpenCodecError, OSError):
    """An output file or folder cannot be created or written (the path is a file where a
    folder is needed, read-only file system, no permission, disk full); an ``OSError`` too."""


class ConfigError(OpenCodecError, ValueError):
    """A training or data configuration, manifest or checkpoint that cannot be used (bad value,
    missing key, malformed manifest); a ValueError too."""


class UsageError(OpenCodecError):
    """An invalid option value or combination of options (the command line reports it with
    its usage line and exit status 2)."""


#: Errors that are the user's or the environment's: reported in one line, without a traceback
#: (unless ``OPENCODEC_TRACEBACK=1``: :func:`print_traceback_if_asked`).
EXPECTED_ERRORS: tuple[type[BaseException], ...] = (OpenCodecError, OSError, ValueError)


def print_traceback_if_asked() -> None:
    """Print the exception being handled, with its traceback, on stderr when the environment
    variable ``OPENCODEC_TRACEBACK`` is set to a value other than empty or ``0``. The handlers
    that report an expected error in one line call it first, so that an error taken for the
    user's (a ``ValueError`` from deep inside) can still be traced."""
    if os.environ.get("OPENCODEC_TRACEBACK", "") not in ("", "0"):
        traceback.print_exc()


def stdout_closed_status() -> int:
    """What a command does when its reader closed stdout (``... | head``, ``BrokenPipeError``):
    stdout goes to ``/dev/null`` so that Python's flush at exit stays quiet too, and the status
    is SIGPIPE's (141), as for a command killed by it: quietly, as ls or grep."""
    import sys

    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 128 + 13


def one_line(exc: BaseException) -> str:
    """``exc``'s message for a one-line report. An error re-raised from a DataLoader worker
    process carries the worker's whole traceback in its message; that gives its last line,
    without the type name."""
    text = str(exc) or type(exc).__name__
    if "\nOriginal Traceback" in text:
        lines = [line.strip() for line in text.splitlines() if line.strip()]
        marker = f"{type(exc).__name__}: "
        starts = [n for n, line in enumerate(lines) if marker in line]
        if starts:  # the message, from the line that names the error (it may span lines)
            first = lines[starts[-1]]
            text = " ".join([first[first.index(marker) + len(marker):], *lines[starts[-1] + 1:]])
        else:
            text = lines[-1]
    return text


#: How many characters of a value an error message shows (:func:`shown`).
SHOWN_CHARS = 60
#: How many characters of a path an error message shows (its file name is often at the end).
PATH_CHARS = 240


def shown(value: tp.Any, limit: int = SHOWN_CHARS) -> str:
    """``repr(value)`` for an error message, cut to its first ``limit`` characters with ``...``
    and the value's length when longer (a 5000-character name is not echoed whole), e.g.
    ``'yyyy...' (5000 characters)``. An integer too large to print gives its bit length."""
    try:
        text = repr(value)
    except ValueError:  # an int over sys.get_int_max_str_digits() digits
        return f"an integer of {value.bit_length()} bits" if isinstance(value, int) else type(value).__name__
    if len(text) <= limit:
        return text
    size = f" ({len(value)} characters)" if isinstance(value, str) else \
        f" ({len(value)} bytes)" if isinstance(value, (bytes, bytearray)) else ""
    return f"{text[:limit]}...{size}"


class Interrupted(KeyboardInterrupt):
    """Ctrl-C, once the command has saved what it could: its message says what (a trainer's:
    the step its checkpoint holds, and how to resume). A ``KeyboardInterrupt`` too (exit 130)."""


class Terminated(Interrupted):
    """SIGTERM (``kill``, ``timeout``, a scheduler, ``docker stop``), handled like Ctrl-C under
    :func:`opencodec.signals.sigterm_as_interrupt` (temporary outputs removed; a trainer saves
    the checkpoint of its last whole step first) and reported as ``error: terminated`` with
    exit status 143 (128 + SIGTERM, as Ctrl-C gives 130 = 128 + SIGINT)."""
