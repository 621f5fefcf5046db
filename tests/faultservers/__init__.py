"""Loopback HTTP servers with fault knobs, for the transfer engine's tests."""

from .fault_proxy import FaultProxy
from .range_server import Knobs, RangeServer

__all__ = ["FaultProxy", "Knobs", "RangeServer"]
