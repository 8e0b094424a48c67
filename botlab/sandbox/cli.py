"""`botlab sandbox check PROGRAM.py --input EXPR [--json]`: is this a valid deduction task, and what is its output?

Exit status: 0 valid, 1 invalid (the reason is printed), 2 the program file cannot be read.
"""

from __future__ import annotations

import json
from pathlib import Path

from rich.console import Console
from rich.markup import escape

from botlab.config import ExecutorConfig
from botlab.sandbox.executor import Executor

EXIT_VALID, EXIT_INVALID, EXIT_USAGE = 0, 1, 2


def check_command(program: Path, input_expr: str, as_json: bool, console: Console) -> int:
    try:
        source = program.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        Console(stderr=True).print(f"[red]cannot read PROGRAM {escape(str(program))}: {escape(str(err))}[/red]")
        return EXIT_USAGE
    with Executor(ExecutorConfig(workers=1)) as ex:
        [result] = ex.validate_many([(source, [input_expr])])
        isolation = ex.isolation
    output = result.outputs[0] if result.valid else None
    if as_json:
        print(json.dumps({"valid": result.valid, "output": output, "reason": result.reason}))
    elif result.valid:
        console.print(f"[green]valid[/green]: f({escape(input_expr)}) == {escape(output or '')}", highlight=False)
    else:
        console.print(f"[red]invalid[/red]: {result.reason}: {escape(result.detail)}", highlight=False)
    if not as_json:
        console.print(f"[dim]isolation: {escape(isolation)}[/dim]", highlight=False)
    return EXIT_VALID if result.valid else EXIT_INVALID
