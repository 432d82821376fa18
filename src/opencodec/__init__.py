"""opencodec: the EnCodec neural audio codec (official-compatible), in PyTorch.

    import opencodec
    model = opencodec.load_model()                  # bundled default model
    data = opencodec.compress(model, wav, 6.0)      # wav [C, T] at model.sample_rate
    audio, sample_rate = opencodec.decompress(data)

The public names are loaded on first use (PEP 562), so that ``import opencodec`` and the
``opencodec`` command's start do not wait for torch (about 2 s): ``opencodec.load_model``
imports :mod:`opencodec.pretrained` then, and is the same object as before. ``compress`` and
``decompress`` are the functions of :mod:`opencodec.compress`, also once that module is
imported under its own name (``from opencodec.compress import compress``).
"""

from __future__ import annotations

import importlib as _importlib
import importlib.util as _importlib_util
import sys as _sys
import types as _types
import typing as _tp

from .errors import (AudioIOError, BitstreamError, InvalidAudioError, InvalidCodesError,  # (light: no torch)
                     ModelLoadError, OpenCodecError, UnsupportedBandwidthError)

if _tp.TYPE_CHECKING:  # what type checkers and IDEs see; at run time __getattr__ loads these
    from .audio import convert_audio, read_audio, write_audio
    from .compress import compress, decompress
    from .model import EncodecModel, EncodedFrame
    from .model_config import EncodecConfig
    from .pretrained import load_model, save_model

__version__ = "0.1.0"

__all__ = [
    "AudioIOError", "BitstreamError", "InvalidAudioError", "InvalidCodesError", "ModelLoadError",
    "OpenCodecError", "UnsupportedBandwidthError",
    "EncodecConfig", "EncodecModel", "EncodedFrame", "load_model", "save_model",
    "compress", "decompress", "convert_audio", "read_audio", "write_audio", "__version__",
]

#: The lazily loaded public names, by the submodule that defines them.
_LAZY: dict[str, str] = {
    "EncodecConfig": "model_config", "EncodecModel": "model", "EncodedFrame": "model",
    "load_model": "pretrained", "save_model": "pretrained",
    "compress": "compress", "decompress": "compress",
    "convert_audio": "audio", "read_audio": "audio", "write_audio": "audio",
}


def __getattr__(name: str) -> _tp.Any:
    """A public name of ``_LAZY``, imported on first use (then kept as a plain attribute); any
    other name that is a submodule (``opencodec.pretrained``), imported as ``import`` would.
    Anything else, also a name that is no identifier (``"x.y"``) or a submodule that cannot
    be imported (its ImportError is the cause), is an AttributeError, as ``hasattr`` expects."""
    if name in _LAZY:
        value = getattr(_importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
    else:
        value = _submodule(name)
    globals()[name] = value
    return value


def _submodule(name: str) -> _types.ModuleType:
    """The submodule ``name`` (imported), or AttributeError when there is none or it fails to import."""
    missing = AttributeError(f"module {__name__!r} has no attribute {name!r}")
    if name.startswith("__") or not name.isidentifier():
        raise missing
    try:
        if _importlib_util.find_spec(f"{__name__}.{name}") is None:
            raise missing
        return _importlib.import_module(f"{__name__}.{name}")
    except ImportError as exc:
        raise missing from exc


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


class _Package(_types.ModuleType):
    """This package's module type: a submodule named as one of its functions (``compress``)
    does not replace that function. Importing a submodule sets it as the package's attribute
    of that name; eagerly, ``from .compress import compress`` here rebound the name to the
    function afterwards, and this keeps it so however the submodule is first imported."""

    def __setattr__(self, name: str, value: _tp.Any) -> None:
        if isinstance(value, _types.ModuleType) and value.__name__ == f"{self.__name__}.{name}" \
                and _LAZY.get(name) == name:
            value = getattr(value, name)
        super().__setattr__(name, value)


_sys.modules[__name__].__class__ = _Package
