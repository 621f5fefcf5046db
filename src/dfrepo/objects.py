"""What a store listing hands to the transfer engine: one :class:`RemoteObject` per file,
and :class:`Signed`, a fresh authorization for one of them."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from .redact import redact_url


@dataclass(frozen=True)
class Signed:
    """A fresh authorization for the same object: the GET URL and the request headers
    that go with it (a store's re-signer returns one; the engine uses both from then on).

    :param url: the URL to request now: a new signature (S3, Azure SAS, GCS V4), or the
        same URL when the credential travels in a header.  Secret.
    :param headers: the object's own request headers from now on, replacing the listed
        ones (``RemoteObject.headers`` / ``DownloadRequest.headers``), e.g. a newly minted
        ``Authorization: Bearer`` token; empty when the URL carries the credential.
        Secret.

    Neither is part of the Dragonfly task identity: signature query parameters are
    filtered out of it and no credential header is hashed into it, so a request
    authorized afresh continues the same P2P task.  ``repr`` shows the redacted URL and
    the header names only.
    """

    url: str
    headers: Mapping[str, str] = field(default_factory=dict)

    def __repr__(self) -> str:
        return f"Signed(url={redact_url(self.url)!r}, headers={sorted(self.headers)!r})"


Resign = Callable[[], Signed]
"""A store's re-signer: a fresh :class:`Signed` for the same object version on each call."""


@dataclass(frozen=True)
class RemoteObject:
    """One object of a model directory, ready to be fetched.

    :param rel_path: POSIX path relative to the model directory (already checked safe).
    :param size: size in bytes as listed by the store.
    :param url: presigned (or public) GET URL. Secret: never logged, redacted in ``repr``.
    :param version: the store's version evidence (S3 ETag, GCS generation, Azure ETag),
        used for If-Match, for the Dragonfly task identity and as the cache key.
    :param md5: hex MD5 of the content when the store vouches for it, else None.
    :param crc32c: base64 CRC32C (GCS) when known, else None.
    :param headers: extra request headers the URL needs (e.g. a bearer token when a GCS
        credential cannot sign). Secret, like ``url``.
    :param source: the object's location for messages (``s3://bucket/key``), no secrets.
    :param resign: authorizes the same object version afresh (:class:`Signed`: the
        store's presigner, or a newly minted GCS bearer token in ``headers``), or None when
        nothing expires (public, anonymous, ``file://``).  The pull hands it to the engine
        as ``DownloadRequest.refresh``.  Not part of equality, hash or ``repr``.
    :param is_dir: a directory entry (an S3/GCS ``dir/`` marker, an Azure HNS folder blob,
        an empty local directory): ``size`` is 0, ``url`` is empty, and the pull only
        creates the directory (Triton refuses an ensemble whose empty version directory
        is missing).
    """

    rel_path: str
    size: int
    url: str = field(repr=False)
    version: str | None = None
    md5: str | None = None
    crc32c: str | None = None
    headers: dict[str, str] = field(default_factory=dict, repr=False)
    source: str = ""
    resign: Resign | None = field(default=None, repr=False, compare=False, hash=False)
    is_dir: bool = False

    @classmethod
    def directory(cls, rel_path: str, source: str = "") -> RemoteObject:
        """An (empty) directory of the model tree."""
        return cls(rel_path=rel_path, size=0, url="", source=source, is_dir=True)

    def __repr__(self) -> str:
        if self.is_dir:
            return f"RemoteObject(rel_path={self.rel_path!r}, is_dir=True, source={self.source!r})"
        return (
            f"RemoteObject(rel_path={self.rel_path!r}, size={self.size}, "
            f"url={redact_url(self.url)!r}, version={self.version!r}, source={self.source!r})"
        )
