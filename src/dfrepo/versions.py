"""Which version directories of a Triton model to pull: the model's ``version_policy``.

Triton loads only the versions its policy selects (``model_lifecycle.cc``,
``VersionsToLoad``); downloading the others costs bytes and time for nothing. The rules
kept here are Triton's:

* a version directory is a top-level directory whose name is a number; ``warmup``,
  ``initial_state`` and ``configs`` are never versions; a name with a leading zero
  (``01``) is ignored by Triton;
* ``latest {num_versions: N}`` (the default, N = 1): the N highest numbers;
  ``all {}``: every one; ``specific {versions: [...]}``: those that exist.

Everything that is not a version directory (``config.pbtxt``, labels, ``configs/``, a
directory named ``1a`` ...) is always pulled: only an unselected numeric version
directory is skipped.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from .errors import ConfigError

__all__ = ["VersionPolicy", "version_of"]

_VERSION = re.compile(r"0|[1-9][0-9]{0,17}")
T = TypeVar("T")


def version_of(rel_path: str) -> int | None:
    """The version number of the top-level directory *rel_path* is in, or None."""
    head, sep, _ = rel_path.lstrip("/").partition("/")
    if not sep or not _VERSION.fullmatch(head):
        return None
    return int(head)


@dataclass(frozen=True)
class VersionPolicy:
    """A model's ``version_policy``: ``kind`` is ``latest``, ``all`` or ``specific``.

    :ivar latest: N for ``latest``.
    :ivar versions: the numbers for ``specific``.
    """

    kind: str = "latest"
    latest: int = 1
    versions: frozenset[int] = frozenset()

    @classmethod
    def from_model_config(cls, config: Mapping[str, Any] | None) -> VersionPolicy | None:
        """The policy of Triton's model configuration JSON; None when there is no config
        (then nothing is skipped). No ``version_policy`` means Triton's default, latest 1.

        :raises ConfigError: a malformed ``version_policy``.
        """
        if not config:
            return None
        raw = config.get("version_policy")
        if raw is None:
            return cls()
        if not isinstance(raw, Mapping) or len(raw) != 1:
            raise _bad("must hold exactly one of latest, all, specific")
        kind, body = next(iter(raw.items()))
        body = body if isinstance(body, Mapping) else {}
        try:
            if kind == "latest":
                return cls("latest", latest=max(1, int(body.get("num_versions", 1) or 1)))
            if kind == "all":
                return cls("all")
            if kind == "specific":
                return cls("specific", versions=frozenset(int(v) for v in body.get("versions", ())))
        except (TypeError, ValueError):
            raise _bad(f"{kind!r} has a value that is not a number") from None
        raise _bad(f"has unknown kind {kind!r}")

    def selected(self, available: Iterable[int]) -> frozenset[int]:
        """The versions Triton would load out of *available*."""
        present = sorted(set(available), reverse=True)
        if self.kind == "all":
            return frozenset(present)
        if self.kind == "specific":
            return frozenset(v for v in present if v in self.versions)
        return frozenset(present[: self.latest])

    def select(self, items: Iterable[T], rel_path: Callable[[T], str]) -> list[T]:
        """*items* without those inside an unselected version directory.

        :param rel_path: a function giving an item's path relative to the model root.
        """
        items = list(items)
        keep = self.selected(v for v in (version_of(rel_path(i)) for i in items) if v is not None)
        return [i for i in items if (v := version_of(rel_path(i))) is None or v in keep]

    def describe(self) -> str:
        if self.kind == "latest":
            return f"latest {self.latest}"
        if self.kind == "specific":
            return "specific " + ",".join(str(v) for v in sorted(self.versions))
        return "all"


def _bad(what: str) -> ConfigError:
    return ConfigError(f"config.pbtxt version_policy {what}", source="config.pbtxt", key="version_policy")
