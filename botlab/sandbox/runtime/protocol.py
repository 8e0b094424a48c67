"""Frames between the trainer and a sandbox worker: a 4-byte big-endian length, then UTF-8 JSON.

JSON, never pickle, on the way back: whatever a worker sends may have been shaped by model code.
"""

from __future__ import annotations

import json
import os
import struct

# A job may take this many times executor.timeout_s of wall-clock time when its process waited for a CPU
# (runtime/hub.py, _ChildClock); the trainer waits that long for a worker before it replaces it.
WALL_STRETCH = 10
MAX_FRAME = 64 << 20  # a worker reply can never be larger; anything bigger means a broken worker

_HEADER = struct.Struct(">I")


class WorkerGone(Exception):
    """The other side closed the pipe (or sent something that is not a frame)."""


def write_frame(fd: int, message: object) -> None:
    body = json.dumps(message, separators=(",", ":")).encode()
    data = _HEADER.pack(len(body)) + body
    view = memoryview(data)
    while view:
        try:
            written = os.write(fd, view)
        except (BrokenPipeError, ConnectionResetError) as err:
            raise WorkerGone(str(err)) from None
        view = view[written:]


def read_frame(fd: int) -> object:
    (size,) = _HEADER.unpack(_read_exactly(fd, _HEADER.size))
    if size > MAX_FRAME:
        raise WorkerGone(f"frame of {size} bytes")
    try:
        return json.loads(_read_exactly(fd, size))
    except ValueError as err:
        raise WorkerGone(f"malformed frame: {err}") from None


def _read_exactly(fd: int, size: int) -> bytes:
    chunks = []
    while size:
        chunk = os.read(fd, min(size, 1 << 20))
        if not chunk:
            raise WorkerGone("end of stream")
        chunks.append(chunk)
        size -= len(chunk)
    return b"".join(chunks)
