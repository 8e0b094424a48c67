"""The console/file channel, on by default: each digest is written under RUN_DIR/digests/ as .html (chart
embedded), .txt and .eml, and a one-line summary goes to the console."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from rich.console import Console
from rich.text import Text

from botlab.notifiers.outbox import OutboxItem


def write_atomic(path: Path, content: str) -> None:
    """Readers never see half a file: write beside it, then rename."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(content, encoding="utf-8")
    os.replace(tmp, path)


class ConsoleChannel:
    name = "console"

    def __init__(self, run_dir: Path, console: Console | None = None):
        self.folder = run_dir / "digests"
        self.news = asyncio.Event()  # never set: replies come through `botlab feedback`
        self.console = console or Console(stderr=True)

    async def start(self, listen: bool = True) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)

    async def stop(self) -> None:
        pass

    async def send(self, item: OutboxItem) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        for name, content in item.payload["files"].items():
            write_atomic(self.folder / Path(name).name, content)  # .name: a payload never chooses the folder
        # Text, not markup: the subject's "[botlab team]" would read as a style tag.
        self.console.print(Text(item.payload["subject"], style="bold"), Text(f"-> {self.folder}"))
        self.console.print(item.payload["summary"], highlight=False, markup=False)

    async def catch_up(self) -> None:
        pass

    async def receive(self) -> list:
        return []  # feedback from the terminal arrives through `botlab feedback` (channel "cli")

    async def commit_receive(self) -> None:
        pass
