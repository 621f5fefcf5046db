from typing import Any, Callable

IMPLEMENTATION: str
MODES: tuple[str, ...]

def copy_body(
    resp: Any,
    fd: int,
    offset: int,
    length: int,
    buf: bytearray,
    cursor: Any,
    progress: Callable[[int], object] | None = None,
    mode: str = "auto",
    url: str | None = None,
    byte_range: tuple[int, int] | None = None,
) -> int: ...
