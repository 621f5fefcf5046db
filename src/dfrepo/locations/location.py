"""The parsed forms of a Triton repository location: one frozen value per store.

The public names are listed by :mod:`dfrepo.locations`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar
from urllib.parse import quote

GCS_DEFAULT_ENDPOINT = "https://storage.googleapis.com"
AZURE_DEFAULT_SUFFIX = ".blob.core.windows.net"


@dataclass(frozen=True)
class Location:
    """Base of the location family. ``raw`` is the string as given (for credential matching)."""

    scheme: ClassVar[str] = ""
    raw: str = field(default="", repr=False, compare=False)

    @property
    def display(self) -> str:
        """A canonical, secret-free string for messages."""
        raise NotImplementedError

    def source_for(self, key: str) -> str:
        """The message-safe name of one object (``s3://bucket/key``)."""
        raise NotImplementedError

    def __str__(self) -> str:
        return self.display


def _join_key(prefix: str, rel: str = "") -> str:
    return "/".join(p for p in (prefix, rel) if p)


@dataclass(frozen=True)
class S3Location(Location):
    """``s3://[http(s)://host:port/]bucket/prefix``.

    :param endpoint_url: ``http://host:port`` for the host:port form, None for AWS (then
        the SDK's own configuration, e.g. ``AWS_ENDPOINT_URL``, applies).
    :param use_https: False only for the host:port form without ``https://``.
    :param quirk: set when Triton's fallback turned ``host:port`` into the bucket.
    """

    scheme: ClassVar[str] = "s3"
    bucket: str = ""
    prefix: str = ""
    endpoint_url: str | None = None
    use_https: bool = True
    quirk: str | None = field(default=None, compare=False)

    @property
    def display(self) -> str:
        return self.source_for("")

    def source_for(self, key: str) -> str:
        head = "s3://"
        if self.endpoint_url:
            head += self.endpoint_url + "/"
        return head + _join_key(self.bucket, key if key else self.prefix)

    @property
    def path_style(self) -> bool:
        """Triton uses path-style addressing for the host:port form."""
        return self.endpoint_url is not None

    def url_for(self, key: str) -> str:
        """Unsigned object URL (path-style for endpoint forms, virtual-host for AWS)."""
        if self.endpoint_url:
            return f"{self.endpoint_url}/{self.bucket}/{quote(key, safe='/')}"
        return f"https://{self.bucket}.s3.amazonaws.com/{quote(key, safe='/')}"


@dataclass(frozen=True)
class GCSLocation(Location):
    """``gs://bucket/prefix``; ``endpoint`` is GCS or the emulator's base URL."""

    scheme: ClassVar[str] = "gs"
    bucket: str = ""
    prefix: str = ""
    endpoint: str = GCS_DEFAULT_ENDPOINT

    @property
    def display(self) -> str:
        return self.source_for("")

    def source_for(self, key: str) -> str:
        return "gs://" + _join_key(self.bucket, key if key else self.prefix)

    @property
    def is_emulator(self) -> bool:
        return self.endpoint.rstrip("/") != GCS_DEFAULT_ENDPOINT

    def url_for(self, key: str, generation: int | str | None = None) -> str:
        """JSON-API media URL of one object (needs a bearer token unless public/emulator)."""
        url = (
            f"{self.endpoint.rstrip('/')}/download/storage/v1/b/{quote(self.bucket, safe='')}"
            f"/o/{quote(key, safe='')}?alt=media"
        )
        if generation is not None:
            url += f"&generation={generation}"
        return url


@dataclass(frozen=True)
class AzureLocation(Location):
    """``as://account/container/prefix``; ``endpoint`` is the account URL (no trailing /)."""

    scheme: ClassVar[str] = "as"
    account: str = ""
    container: str = ""
    prefix: str = ""
    endpoint: str = ""

    def __post_init__(self) -> None:
        if not self.endpoint and self.account:
            object.__setattr__(self, "endpoint", f"https://{self.account}{AZURE_DEFAULT_SUFFIX}")

    @property
    def display(self) -> str:
        return self.source_for("")

    def source_for(self, key: str) -> str:
        return f"as://{self.account}/" + _join_key(self.container, key if key else self.prefix)

    def url_for(self, key: str) -> str:
        """Unsigned blob URL (works only for public containers; add a SAS)."""
        return f"{self.endpoint}/{quote(self.container, safe='')}/{quote(key, safe='/')}"


@dataclass(frozen=True)
class LocalLocation(Location):
    """A local (or NFS) directory, used in place."""

    scheme: ClassVar[str] = "file"
    path: str = ""

    @property
    def display(self) -> str:
        return self.path

    def source_for(self, key: str) -> str:
        return os.path.join(self.path, key) if key else self.path

    def url_for(self, key: str) -> str:
        return Path(os.path.abspath(os.path.join(self.path, key))).as_uri()


AnyLocation = S3Location | GCSLocation | AzureLocation | LocalLocation
