"""Private staging directories of pulls: how they are named, made and swept.

``pull`` writes a model into ``.<dest>.dfrepo-stage-<pid>-<random>`` beside its
destination and publishes it with one rename. A process killed mid-pull (a worker
stopped at its deadline, an OOM kill) leaves its stage behind; whoever runs next removes
the stages whose process is gone — never one of a live process or another user's.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from pathlib import Path

log = logging.getLogger("dfrepo")

MARK = ".dfrepo-stage-"


def prefix(dest_name: str, pid: int | None = None) -> str:
    """``.<dest>.dfrepo-stage-`` (every stage for *dest_name*), or with ``<pid>-`` (one process's)."""
    return f".{dest_name}{MARK}" + (f"{pid}-" if pid is not None else "")


def new_stage(dest: Path) -> Path:
    """A fresh, private stage beside *dest* (same file system: publishing is a rename)."""
    return Path(tempfile.mkdtemp(prefix=prefix(dest.name, os.getpid()), dir=dest.parent))


def remove_own(dest: Path, pid: int) -> None:
    """Remove the stages process *pid* made for *dest* (its abandoned pull)."""
    want = prefix(dest.name, pid)
    for stage in _candidates(dest.parent, want):
        shutil.rmtree(stage, ignore_errors=True)


def remove_dead(parent: Path, dest_name: str = "") -> None:
    """Remove stages in *parent* (for *dest_name*, or any destination) whose process is gone."""
    for stage in _candidates(parent, prefix(dest_name) if dest_name else "."):
        if MARK not in stage.name:
            continue
        pid_text = stage.name.split(MARK, 1)[1].split("-", 1)[0]
        if not pid_text.isdigit() or int(pid_text) == os.getpid():
            continue
        try:
            os.kill(int(pid_text), 0)
        except ProcessLookupError:
            log.info("dfrepo: removing %s left by a killed pull", stage)
            shutil.rmtree(stage, ignore_errors=True)
        except OSError:  # alive under another user: not ours to touch
            continue


def _candidates(parent: Path, start: str) -> list[Path]:
    try:
        return [p for p in parent.iterdir() if p.name.startswith(start) and p.is_dir()]
    except OSError:
        return []
