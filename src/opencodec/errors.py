"""The project's own error types: every failure a user can cause raises one of these."""


class OpenCodecError(Exception):
    """Base class of every error opencodec raises on bad input or missing resources."""


class BitstreamError(OpenCodecError):
    """A compressed stream (`.ecdc` or packet stream) is malformed, truncated or padded."""


class ModelLoadError(OpenCodecError):
    """A model or checkpoint cannot be found, downloaded, verified or loaded."""


class AudioIOError(OpenCodecError):
    """An audio file cannot be read, converted or written."""


class InvalidAudioError(OpenCodecError, ValueError):
    """The audio or an argument given to :func:`opencodec.compress.compress` cannot be encoded
    (wrong shape, channels, dtype, empty, non-finite samples, unsupported bandwidth)."""


class UnsupportedBandwidthError(InvalidAudioError):
    """A bandwidth (kbps) that the model does not support (see
    :func:`opencodec.bandwidth.check_bandwidth`)."""


class OutputError(OpenCodecError, OSError):
    """An output file or folder cannot be created or written (the path is a file where a
    folder is needed, read-only file system, no permission, disk full); an ``OSError`` too."""


class UsageError(OpenCodecError):
    """An invalid option value or combination of options (the command line reports it with
    its usage line and exit status 2)."""


#: Errors that are the user's or the environment's: reported in one line, without a traceback.
EXPECTED_ERRORS: tuple[type[BaseException], ...] = (OpenCodecError, OSError, ValueError)
