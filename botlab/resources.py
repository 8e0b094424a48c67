"""What the daemon holds: memory, open files, threads, child processes and disk, recorded every step.

A run lasts days; these numbers (metrics `process/*` and `disk/*`) are how a slow leak shows up, in TensorBoard,
metrics.jsonl and the soak benchmark (bench/soak.py).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
from functools import cache
from pathlib import Path

import psutil


def usage(run_dir: Path) -> dict[str, float]:
    me = psutil.Process()
    children = me.children(recursive=True)
    child_rss = 0
    for child in children:
        try:
            child_rss += child.memory_info().rss
        except psutil.Error:  # it ended meanwhile
            pass
    return {
        "process/rss_mb": me.memory_info().rss / 2**20,
        "process/children_rss_mb": child_rss / 2**20,
        "process/open_fds": me.num_fds(),
        "process/threads": me.num_threads(),
        "process/children": len(children),
        "disk/run_dir_mb": folder_size(run_dir) / 2**20,
    }


def folder_size(folder: Path) -> int:
    """Bytes under `folder`, each hard-linked file counted once."""
    seen: set[tuple[int, int]] = set()
    total = 0
    for root, _, files in os.walk(folder):
        for name in files:
            try:
                st = os.lstat(os.path.join(root, name))
            except OSError:  # removed meanwhile (pruning)
                continue
            if (st.st_dev, st.st_ino) not in seen:
                seen.add((st.st_dev, st.st_ino))
                total += st.st_blocks * 512
    return total


def release_free_memory() -> None:
    """Hand freed heap pages back to the OS (glibc keeps them otherwise, and RSS only ever grows)."""
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


@cache
def _malloc_trim():
    """glibc's malloc_trim, looked up once (find_library runs ldconfig), or None on other C libraries."""
    name = ctypes.util.find_library("c")
    return getattr(ctypes.CDLL(name), "malloc_trim", None) if name else None
