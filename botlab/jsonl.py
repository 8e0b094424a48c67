"""JSON Lines files of text fields (evaluation data, seed files), read with errors that name the file and the line."""

from __future__ import annotations

import json
from pathlib import Path


def read_text_rows(path: Path, fields: tuple[str, ...], error: type[Exception], blank_ok: bool = True
                   ) -> list[dict]:
    """The file's rows (blank lines skipped); each must be an object whose `fields` are strings (not blank, unless
    `blank_ok`). Raises `error` with "FILE:LINE: what is wrong"."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as err:
        raise error(f"{path}: cannot read it ({err})") from None
    rows = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise error(f"{path}:{number}: not JSON ({err.msg})") from None
        missing = [k for k in fields if not isinstance(row, dict) or not isinstance(row.get(k), str)
                   or not (blank_ok or row[k].strip())]
        if missing:
            raise error(f"{path}:{number}: missing or non-string field(s): {', '.join(missing)}")
        rows.append(row)
    return rows
