"""Triton model-repository locations: the parsed values (:mod:`.location`) and the
grammars that produce them (:mod:`.grammar`, :func:`parse_location`)."""

from __future__ import annotations

from .grammar import parse_location
from .location import (
    AZURE_DEFAULT_SUFFIX,
    GCS_DEFAULT_ENDPOINT,
    AnyLocation,
    AzureLocation,
    GCSLocation,
    LocalLocation,
    Location,
    S3Location,
)

__all__ = [
    "AZURE_DEFAULT_SUFFIX",
    "GCS_DEFAULT_ENDPOINT",
    "AnyLocation",
    "AzureLocation",
    "GCSLocation",
    "LocalLocation",
    "Location",
    "S3Location",
    "parse_location",
]
