"""Install the repository-agent shim where Triton looks for it.

Triton searches only ``<repoagent_dir>/<name>/libtritonrepoagent_<name>.so``.  Next to
the library goes ``dfrepo_agent.json``, the interpreter record the shim reads to start
its Python worker (``$DFREPO_PYTHON`` overrides the interpreter at run time).
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from .._version import __version__
from ..errors import RepoAgentError

__all__ = ["DEFAULT_REPOAGENT_DIR", "RECORD_NAME", "find_shim", "install_agent"]

DEFAULT_REPOAGENT_DIR = "/opt/tritonserver/repoagents"
RECORD_NAME = "dfrepo_agent.json"  # must match agent_shim.c
_PACKAGE_ROOT = Path(__file__).resolve().parents[2]  # the dir that holds dfrepo/


def find_shim() -> Path:
    """Return the built shim ``dfrepo/triton/_agent_shim*.so``.

    :raises RepoAgentError: dfrepo was installed without its compiled parts.
    """
    spec = importlib.util.find_spec("dfrepo.triton._agent_shim")  # finds, never imports
    if spec is not None and spec.origin and os.path.isfile(spec.origin):
        return Path(spec.origin)
    found = sorted(Path(__file__).resolve().parent.glob("_agent_shim*.so"))
    if found:
        return found[0]
    raise RepoAgentError(
        "the repository-agent shim (dfrepo/triton/_agent_shim*.so) is not built: install a "
        "dfrepo wheel, or build it with 'pip install .' (needs gcc)"
    )


def _atomic_write(path: Path, data: bytes, mode: int) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        # A new inode: a tritonserver that has the old library mapped keeps it intact.
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def install_agent(
    repoagent_dir: str | os.PathLike[str] = DEFAULT_REPOAGENT_DIR,
    name: str = "dragonfly",
    *,
    python: str | None = None,
    sys_path: Sequence[str] | None = None,
    shim: str | os.PathLike[str] | None = None,
) -> Path:
    """Install the agent as ``<repoagent_dir>/<name>/libtritonrepoagent_<name>.so``.

    :param repoagent_dir: Triton's ``--repoagent-directory``.
    :param name: the agent name used in ``config.pbtxt`` (``dragonfly`` replaces the
        C++ agent).
    :param python: interpreter the worker runs under (default: this one,
        ``sys.executable``).
    :param sys_path: extra ``sys.path`` entries for the worker; the directory holding
        this dfrepo is always recorded first.
    :param shim: a shim library to install instead of the packaged one.
    :returns: the path of the installed library.
    """
    if not name or "/" in name or name in (".", ".."):
        raise RepoAgentError(f"invalid agent name {name!r}")
    source = Path(shim) if shim is not None else find_shim()
    target_dir = Path(repoagent_dir) / name
    target_dir.mkdir(parents=True, exist_ok=True)
    target = target_dir / f"libtritonrepoagent_{name}.so"
    _atomic_write(target, source.read_bytes(), 0o755)
    paths = [str(_PACKAGE_ROOT)]
    paths += [str(Path(p).resolve()) for p in (sys_path or ()) if str(Path(p).resolve()) not in paths]
    record = {
        "python": os.path.abspath(python or sys.executable),
        "sys_path": paths,
        "dfrepo_version": __version__,
        "agent_name": name,
    }
    _atomic_write(target_dir / RECORD_NAME, (json.dumps(record, indent=2) + "\n").encode(), 0o644)
    return target
