"""Released weights of the bundled models: one name per set of weights, for ever.

Every retrain of the bundled codec used to keep the name ``opencodec_24khz``, so a file
compressed by an earlier release decoded with later weights, silently. Now each released set
of weights has its own name (``opencodec_24khz_v1`` ... ``opencodec_24khz_v5``), recorded
here with its weights hash (:func:`opencodec.weights_hash.weights_sha256`), the commit that
shipped it and whether the package ships it. ``.ecdc`` headers carry the versioned name and
a hash prefix (:data:`HASH_CHARS` hex digits), and decoding checks both.

``opencodec_24khz`` (:data:`CODEC_ALIAS`) is an alias for :data:`CURRENT_CODEC` when loading a
model to *encode*; a file header never carries it any more. Files written before the
versioned names say ``opencodec_24khz`` without a hash: they are ambiguous, and decode only
with a release named explicitly (:func:`legacy_choice_message`).

The entropy models (``opencodec_lm_24khz_v1`` ...) are recorded the same way, each tied to the
codec release it was trained for (``lm`` of a :class:`CodecRelease` is the one used with it by
default); their ``fixed_hash`` is the :class:`~opencodec.entropy.fixed.FixedLM` weights hash
that deterministic headers carry (``lmh``), which names the release of a file written before
the versioned names.

To release new weights: add a record below with its hash (``weights_sha256`` of the model as
loaded), make it :data:`CURRENT_CODEC` (or :data:`CURRENT_LM`), and give the previous one a
``git_path`` (and a ``file`` if it stays shipped). ``tests/test_releases.py`` checks that the
shipped files have the recorded hashes, so a retrain copied over a shipped file without a new
record fails the tests.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "HASH_CHARS", "CODEC_ALIAS", "LM_ALIAS", "CURRENT_CODEC", "CURRENT_LM", "CodecRelease",
    "LMRelease", "CODEC_RELEASES", "LM_RELEASES", "codec_release", "codec_releases_by_hash",
    "lm_release", "lm_release_by_fixed_hash", "resolve_alias", "extract_command",
    "legacy_choice_message", "short_hash", "OFFICIAL_NAMES", "OFFICIAL_LM_NAMES", "is_registered_name",
    "export_name", "needs_weights_hash", "RELEASE_SETTINGS",
]

HASH_CHARS = 16
"""Hex digits of a weights hash written to headers (64 bits)."""

CODEC_ALIAS = "opencodec_24khz"
"""The bundled codec's unversioned name: the current release when encoding; ambiguous in a
file header (files written before versioned names)."""

DEFAULT_MODEL = CODEC_ALIAS
"""The codec ``load_model()`` and the command line use when none is named."""

LM_ALIAS = "opencodec_lm_24khz"
"""The bundled entropy model's unversioned name (same rules as :data:`CODEC_ALIAS`)."""

OFFICIAL_NAMES = ("encodec_24khz", "encodec_48khz")
"""Models whose headers carry no hash, byte-identical to the official package's: the name
means the official weights, whose files are checked against their sha256 when loaded
(re-exported by :mod:`opencodec.identity`)."""

OFFICIAL_LM_NAMES = ("encodec_lm_24khz", "encodec_lm_48khz")
"""The official entropy models (downloaded and checked against their file's sha256 when
loaded, :mod:`opencodec.model_registry`); their integer models' hashes are not recorded here."""

_CODEC_GIT_PATH = "src/opencodec/weights/opencodec_24khz.safetensors"
_LM_GIT_PATH = "src/opencodec/weights/opencodec_lm_24khz.safetensors"


@dataclass(frozen=True)
class CodecRelease:
    """One released set of codec weights.

    ``sha256``: :func:`~opencodec.weights_hash.weights_sha256` of the model as loaded;
    ``commit``: the commit that shipped it, where ``git_path`` holds its file; ``file``: its
    file name under ``opencodec/weights`` when the package ships it, else None; ``lm``: the
    entropy-model release used with it by default. ``sample_rate`` (Hz), ``channels``,
    ``n_q`` (codebooks), ``bins`` (entries per codebook) and ``frame_rate`` (frames/s) let a
    file's header be checked against a model without loading the release.
    """

    name: str
    sha256: str
    commit: str
    git_path: str
    file: str | None
    lm: str
    summary: str
    sample_rate: int = 24000
    channels: int = 1
    n_q: int = 16
    bins: int = 1024
    frame_rate: int = 75

    @property
    def short_hash(self) -> str:
        """The hash prefix headers carry."""
        return self.sha256[:HASH_CHARS]


@dataclass(frozen=True)
class LMRelease:
    """One released set of entropy-model weights: ``sha256`` is
    :func:`~opencodec.weights_hash.state_dict_sha256` of its float state dict, ``fixed_hash``
    the ``FixedLM.weights_hash`` (16 hex digits) of its integer twin; ``codec`` the codec
    release it was trained for; other fields as in :class:`CodecRelease`."""

    name: str
    sha256: str
    fixed_hash: str
    commit: str
    git_path: str
    file: str | None
    codec: str
    summary: str

    @property
    def short_hash(self) -> str:
        return self.fixed_hash


CODEC_RELEASES: tuple[CodecRelease, ...] = (
    CodecRelease("opencodec_24khz_v1",
                 "776d0be8511b4147c464b847529c68875e12b89b64ffa92f65cb127fc03b9ca6",
                 "999a7438e051e06ef59708e938a90d65bba9c6bc", _CODEC_GIT_PATH, None,
                 "opencodec_lm_24khz_v1", "first bundled model (12 min on one H200)"),
    CodecRelease("opencodec_24khz_v2",
                 "66de279d07bc201dd5a00a0cc9f3b0fba76306329b4b9e8bf6ff59a31834dd40",
                 "9bfa8d13da15b517451c1c7412d47d8c2fa60e63", _CODEC_GIT_PATH, None,
                 "opencodec_lm_24khz_v2", "configs/opencodec_cpu_24khz.yaml, 77 min on one CPU core"),
    CodecRelease("opencodec_24khz_v3",
                 "82fadfed90c75d6772cd2587f257b29e3294b7d0f53278ad1e7b0d164d5a85c5",
                 "f3b64a18ef14df663dccd446d05bc817cce0bed6", _CODEC_GIT_PATH, None,
                 "opencodec_lm_24khz_v3", "stage 2: perceptual fine-tune on the CPU"),
    CodecRelease("opencodec_24khz_v4",
                 "1d3a9cac17d9aa5a231fc73c6d5c0633a1e01b26ac6e9506a63e177399a336ba",
                 "621d8862d54cc1b15f0e066593ac61cc31410521", _CODEC_GIT_PATH,
                 "opencodec_24khz_v4.safetensors", "opencodec_lm_24khz_v4b",
                 "stage 3: fine-tune continued on an H200"),
    CodecRelease("opencodec_24khz_v5",
                 "e701927ffb852e186dcbf517c024915b06a2b2a8168259744c615c1e8dd39aca",
                 "60c49f20639d265ba8c4a34a939860e3411f0b1a", _CODEC_GIT_PATH,
                 "opencodec_24khz.safetensors", "opencodec_lm_24khz_v5",
                 "stage 4: stage 3's recipe with the learning rate annealed"),
)

LM_RELEASES: tuple[LMRelease, ...] = (
    LMRelease("opencodec_lm_24khz_v1",
              "8d276c0d5105aaa685839c9512a7f931ed1eb6ee0ad68feea2d7c8ff17baa096", "e5989152e0ab8235",
              "1da0d1a34b8905a11b26963bf9bdf9bb84b20ed3", _LM_GIT_PATH, None, "opencodec_24khz_v1",
              "first bundled entropy model"),
    LMRelease("opencodec_lm_24khz_v2",
              "e559f4f0d83649f78b5e61d9e4db8f3b7a1bd2ebdce7977757a974809eada52c", "ca29c01888fef558",
              "9bfa8d13da15b517451c1c7412d47d8c2fa60e63", _LM_GIT_PATH, None, "opencodec_24khz_v2",
              "retrained for codec v2"),
    LMRelease("opencodec_lm_24khz_v3",
              "630bf4136d6c5613e35651dd74a44fe8c63869b235e9daf3cf1547acd140f4ce", "c38a8af7e692191e",
              "f3b64a18ef14df663dccd446d05bc817cce0bed6", _LM_GIT_PATH, None, "opencodec_24khz_v3",
              "retrained for codec v3"),
    LMRelease("opencodec_lm_24khz_v4",
              "beec650822a7c41019020048d5d0214eed4cad375d5371227cc27b83067065c7", "f05222cf3e58a37d",
              "621d8862d54cc1b15f0e066593ac61cc31410521", _LM_GIT_PATH, None, "opencodec_24khz_v4",
              "retrained for codec v4 (1500 steps)"),
    LMRelease("opencodec_lm_24khz_v4b",
              "816549eca190c6b02b1e285072a4145af98052adee7808f35709b5ebcd384edd", "0152e0fa6560d893",
              "6e5aa390ea5ffba71044679c6ee27fe4331116e1", _LM_GIT_PATH,
              "opencodec_lm_24khz_v4b.safetensors", "opencodec_24khz_v4",
              "codec v4's entropy model retrained for 3000 steps"),
    LMRelease("opencodec_lm_24khz_v5",
              "5ecdc373fce412365aeee94dc6dc0ba7317f79b7079e623135d90d8d5f534ea7", "afe7bbb406b50526",
              "60c49f20639d265ba8c4a34a939860e3411f0b1a", _LM_GIT_PATH,
              "opencodec_lm_24khz.safetensors", "opencodec_24khz_v5",
              "retrained for codec v5"),
)

RELEASE_SETTINGS: dict[str, object] = dict(causal=True, normalize=False, segment=None, overlap=0.01,
                                           dilation_base=2, pad_mode="reflect")
"""The configuration settings that are not in the weights (nor in their hash) and that every
codec release so far shipped with, besides its ``sample_rate``: a release's weights load only
with them (:mod:`opencodec.config_identity`; its sizes are its tensors'). Every shipped file
stores them (``tests/test_release_config_identity.py``); a release with other settings needs
its own record."""

CURRENT_CODEC = "opencodec_24khz_v5"
"""The release :data:`CODEC_ALIAS` loads for encoding (the package's default model)."""

CURRENT_LM = "opencodec_lm_24khz_v5"
"""The release :data:`LM_ALIAS` loads."""

_CODECS = {r.name: r for r in CODEC_RELEASES}
_LMS = {r.name: r for r in LM_RELEASES}


def short_hash(sha256: str) -> str:
    """The prefix of a hex weights hash that headers carry."""
    return sha256[:HASH_CHARS]


def codec_release(name: str) -> CodecRelease | None:
    """The codec release of a versioned name (not the alias), or None."""
    return _CODECS.get(name)


def codec_releases_by_hash(prefix: str) -> list[CodecRelease]:
    """Codec releases whose weights hash starts with ``prefix`` (a header's ``mh``)."""
    return [r for r in CODEC_RELEASES if prefix and r.sha256.startswith(prefix)]


def lm_release(name: str) -> LMRelease | None:
    """The entropy-model release of a versioned name (not the alias), or None."""
    return _LMS.get(name)


def lm_release_by_fixed_hash(fixed_hash: str) -> LMRelease | None:
    """The entropy-model release whose FixedLM weights hash is ``fixed_hash``, or None."""
    return next((r for r in LM_RELEASES if r.fixed_hash == fixed_hash), None)


def is_registered_name(name: str) -> bool:
    """True for a name that means particular weights: an official model, a release of a
    bundled model, or the bundled aliases."""
    return (name in OFFICIAL_NAMES or name in (CODEC_ALIAS, LM_ALIAS)
            or codec_release(name) is not None or lm_release(name) is not None)


def export_name(name: str) -> str:
    """The name a model whose weights are not the registered ones is known by: ``name``, or
    ``<name>_custom`` when ``name`` is registered to other weights (:func:`is_registered_name`;
    e.g. fine-tuning the bundled ``opencodec_24khz_v5``, a config naming its model
    ``opencodec_24khz``, or a file that stores an official name), so that no export and no
    model loaded from a file takes the name of released weights. Its files carry its own
    weights hash anyway."""
    return f"{name}_custom" if is_registered_name(name) else name


def needs_weights_hash(name: str) -> bool:
    """Whether a file header naming model ``name`` must carry its weights hash (``mh``): a
    versioned release (``opencodec_24khz_vN``, or an entropy model's name) was only ever written
    with it, so such a header without one is damaged (e.g. a flipped bit in the key ``"mh"``).
    The bare alias :data:`CODEC_ALIAS` without a hash is a legacy file
    (:func:`legacy_choice_message`); official and custom names may have none."""
    return codec_release(name) is not None or lm_release(name) is not None or name == LM_ALIAS


def resolve_alias(name: str) -> str:
    """The release an unversioned bundled name stands for when encoding (other names as given)."""
    return {CODEC_ALIAS: CURRENT_CODEC, LM_ALIAS: CURRENT_LM}.get(name, name)


def extract_command(release: CodecRelease | LMRelease) -> str:
    """The one command that writes a release's weights file from a clone of the repository."""
    return f"git show {release.commit[:7]}:{release.git_path} > {release.name}.safetensors"


def legacy_choice_message(what: str = "the file") -> str:
    """Why a header that says bare ``opencodec_24khz`` cannot be decoded as is, and how to
    choose the release."""
    lines = ", ".join(f"{r.name} ({r.commit[:7]}, {r.summary})" for r in CODEC_RELEASES)
    return (f"{what} names model {CODEC_ALIAS!r} without a weights hash: it was written by an "
            f"opencodec release before versioned model names, and {len(CODEC_RELEASES)} releases "
            f"shipped different weights under that name ({lines}). Decoding it with the wrong one "
            f"gives wrong audio, so name the release that wrote it, e.g. --model "
            f"{CODEC_RELEASES[-2].name} (Python: load_model({CODEC_RELEASES[-2].name!r})): the "
            f"release that was installed when the file was written")
