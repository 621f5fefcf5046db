"""Local / NFS model directories (``FILESYSTEM`` or ``file://`` locations).

Each regular file becomes a :class:`RemoteObject` with a ``file://`` URL (the real
path, symlinks resolved) so callers can hard-link or copy it instead of downloading.
Symlinked directories are followed once (cycles are skipped); an empty directory
becomes a directory entry (``RemoteObject.is_dir``).  ``version`` is
``"<mtime_ns hex>-<size hex>"``, enough to notice a changed file; there is no md5.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import ObjectNotFoundError, StoreError
from ..locations import LocalLocation
from ..objects import RemoteObject
from ..safepaths import safe_relpath
from ._common import finish


def list_local(location: LocalLocation) -> list[RemoteObject]:
    """List every regular file under ``location.path``."""
    root = os.path.abspath(location.path)
    if not os.path.isdir(root):
        what = "does not exist" if not os.path.exists(root) else "is not a directory"
        raise ObjectNotFoundError(f"local model directory {location.path!r} {what}",
                                  provider="file", status=404)
    objects: list[RemoteObject] = []
    seen: set[str] = set()

    def onerror(exc: OSError) -> None:
        raise StoreError(f"cannot list {exc.filename!r}: {exc.strerror}", provider="file")

    for dirpath, dirnames, filenames in os.walk(root, followlinks=True, onerror=onerror):
        real = os.path.realpath(dirpath)
        if real in seen:
            dirnames[:] = []
            continue
        seen.add(real)
        dirnames.sort()
        if not filenames and not dirnames and dirpath != root:
            key = os.path.relpath(dirpath, root).replace(os.sep, "/")
            objects.append(RemoteObject.directory(safe_relpath(key, ""), source=dirpath))
        for fname in sorted(filenames):
            full = os.path.join(dirpath, fname)
            try:
                st = os.stat(full)
            except OSError:
                continue  # dangling symlink
            if not os.path.isfile(full):
                continue
            key = os.path.relpath(full, root).replace(os.sep, "/")
            rel = safe_relpath(key, "")
            objects.append(RemoteObject(
                rel_path=rel, size=st.st_size, url=Path(os.path.realpath(full)).as_uri(),
                version=f"{st.st_mtime_ns:x}-{st.st_size:x}", source=full))
    return finish(objects, location.display)
