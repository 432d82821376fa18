"""Fetch Debian packages for the corpus builder: ``apt-get download``, ``dpkg -x``, unzip game
archives and unpack the MIDI music of Doom WADs.

Layout under the corpus root (shared caches)::

    debs/<pkg>_<ver>_<arch>.deb           downloaded packages (apt-get download)
    extract/<pkg>/ + extract/<pkg>.done    dpkg -x (+ unzipped .pk3/.zip archives)
"""
from __future__ import annotations

import hashlib
import logging
import os
import re
import shutil
import subprocess
import time
import zipfile
from pathlib import Path
from typing import Optional, Sequence

from ..errors import OpenCodecError
from .sources import AUDIO_EXTS

# the builder's logger: these steps' lines go to the build.log that build() attaches to it
log = logging.getLogger("opencodec.data.corpus")

ARCHIVE_EXTS = (".pk3", ".zip", ".wz")


class ToolError(OpenCodecError, RuntimeError):
    """An external tool of the builder (``apt-get``, ``dpkg``, ``fluidsynth``) failed: the
    command line reports it in one line."""


def _run(cmd: Sequence[str], cwd: Optional[Path] = None) -> None:
    """Run ``cmd``; raise :class:`ToolError` with the last lines of its stderr (joined into
    one line) when it fails."""
    res = subprocess.run(list(cmd), cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if res.returncode != 0:
        tail = " ".join(line.strip() for line in res.stderr.strip().splitlines()[-3:])
        raise ToolError(f"{' '.join(cmd)} failed ({res.returncode}): {tail[-500:]}")


def download(package: str, debs_dir: Path) -> Path:
    """``apt-get download`` ``package`` into ``debs_dir`` (skipped if a .deb is there).
    Downloads into a private partial folder and moves the file in when complete."""
    debs_dir.mkdir(parents=True, exist_ok=True)
    found = sorted(debs_dir.glob(f"{package}_*.deb"))
    if found:
        return found[-1]
    tmp = debs_dir / ".partial" / package
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    t0 = time.time()
    _run(["apt-get", "download", package], cwd=tmp)
    deb = next(tmp.glob("*.deb"))
    dst = debs_dir / deb.name
    os.replace(deb, dst)
    shutil.rmtree(tmp, ignore_errors=True)
    log.info("downloaded %s (%.1f MB, %.1f s)", dst.name, dst.stat().st_size / 1e6, time.time() - t0)
    return dst


def extract(deb: Path, package: str, extract_dir: Path) -> Path:
    """``dpkg -x`` the package into ``extract_dir/<package>`` and unzip game archives
    (.pk3/.zip/.wz) into ``<package>/_unzipped/<archive name>/``. Skipped when the
    ``<package>.done`` marker exists."""
    dst = extract_dir / package
    done = extract_dir / f"{package}.done"
    if done.exists() and dst.is_dir():
        return dst
    tmp = extract_dir / f"{package}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.rmtree(dst, ignore_errors=True)
    tmp.mkdir(parents=True)
    _run(["dpkg", "-x", str(deb), str(tmp)])
    for arc in [p for p in tmp.rglob("*") if p.suffix.lower() in ARCHIVE_EXTS and p.is_file()]:
        try:
            with zipfile.ZipFile(arc) as z:  # audio members only (0ad's public.zip is 3 GB)
                z.extractall(tmp / "_unzipped" / arc.name,
                             [n for n in z.namelist() if n.lower().endswith(AUDIO_EXTS)])
            arc.unlink()
        except zipfile.BadZipFile as e:
            log.warning("cannot unzip %s: %s", arc, e)
    seen: set[str] = set()
    for wad in sorted(p for p in tmp.rglob("*.wad") if p.is_file()):
        _unpack_wad_midi(wad, tmp / "_wadmidi" / wad.stem, seen)
    os.replace(tmp, dst)
    done.write_text(deb.name + "\n")
    log.info("extracted %s", package)
    return dst


def _unpack_wad_midi(wad: Path, dst: Path, seen: set[str]) -> int:
    """Write the Standard-MIDI music lumps (``D_*`` starting with ``MThd``) of a Doom WAD
    to ``dst/<LUMP>.mid``, skipping contents already in ``seen`` (sha1). Returns count.

    A file that is not a WAD gives 0; a damaged one (its lump directory or a lump outside the
    file) is logged and gives the lumps that lie inside it. Characters of a lump name other
    than letters, digits, ``_`` and ``-`` become ``_`` in the file name."""
    import struct
    data = wad.read_bytes()
    if data[:4] not in (b"IWAD", b"PWAD"):
        return 0
    if len(data) < 12:
        log.warning("skip WAD %s: damaged (no lump directory)", wad)
        return 0
    n, off = struct.unpack("<ii", data[4:12])
    if n < 0 or off < 0 or off + 16 * n > len(data):
        log.warning("skip WAD %s: damaged (its lump directory lies outside the file)", wad)
        return 0
    count = 0
    for i in range(n):
        pos, size, raw = struct.unpack("<ii8s", data[off + 16 * i: off + 16 * i + 16])
        name = re.sub(r"[^A-Za-z0-9_-]", "_", raw.rstrip(b"\0").decode("ascii", "replace"))
        if pos < 0 or size < 0 or pos + size > len(data):
            log.warning("skip lump %s of WAD %s: damaged (outside the file)", name, wad)
            continue
        lump = data[pos:pos + size]
        if not name.startswith("D_") or lump[:4] != b"MThd":
            continue
        h = hashlib.sha1(lump).hexdigest()
        if h in seen:
            continue
        seen.add(h)
        dst.mkdir(parents=True, exist_ok=True)
        (dst / f"{name}.mid").write_bytes(lump)
        count += 1
    return count
