"""`botlab team show TEAM.yaml`: each role of a team, its model, tools, prompts file and whether it trains."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from rich.table import Table

from botlab.config import POLICY, TRAINED_ROLES, TeamConfig

COLUMNS = ("role", "model", "tools", "prompts", "trains")


@dataclass(frozen=True)
class RoleRow:
    role: str
    model: str
    tools: str
    prompts: str
    trains: str

    def cells(self) -> tuple[str, ...]:
        return self.role, self.model, self.tools, self.prompts, self.trains


def role_rows(team: TeamConfig) -> list[RoleRow]:
    from botlab.agents import prompts, reporter
    from botlab.agents.review_agent import RunProgram, SimilarPoolPrograms
    from botlab.agents.role_agent import RunCandidate

    roles = team.roles
    policy = f"{POLICY} ({team.model.name})"
    folder = Path(prompts.__file__).parent  # each role's prompt templates: agents/ROLE.yaml

    def row(role: str, model: str, tools: list[str]) -> RoleRow:
        return RoleRow(role, model, ", ".join(tools) or "-", _shown(folder / f"{role}.yaml"),
                       "yes" if role in TRAINED_ROLES else "no")

    def model_of(cfg) -> str:
        if cfg.model == POLICY:
            return policy
        extras = [f"at {cfg.api_base}"] if cfg.api_base else []
        extras += [f"key ${cfg.api_key_env}"] if cfg.api_key_env else []
        return " ".join([f"litellm {cfg.model}", *extras])

    run_candidate = RunCandidate.name + (" (revises)" if roles.proposer.revise else "")
    rows = [row(role, policy, [run_candidate] if role == "proposer" else []) for role in TRAINED_ROLES]
    reviewer = roles.reviewer
    if not reviewer.enabled:
        rows.append(row("reviewer", "off (every valid proposal is admitted)", []))
    elif not reviewer.llm:
        rows.append(row("reviewer", "rules only (llm: false)", []))
    else:
        rows.append(row("reviewer", "rules, then " + model_of(reviewer), [SimilarPoolPrograms.name, RunProgram.name]))
    if roles.reporter.model == "template":
        rows.append(row("reporter", "template (no model)", []))
    else:
        rows.append(row("reporter", model_of(roles.reporter), reporter.tool_names()))
    return rows


def print_roles(team: TeamConfig, console: Console) -> None:
    """A rich table on a terminal; plain aligned columns otherwise (pipes, files, logs)."""
    rows = [r.cells() for r in role_rows(team)]
    if console.is_terminal:
        table = Table(title=f"team {team.name}", title_justify="left")
        for name in COLUMNS:
            table.add_column(name, overflow="fold")
        for cells in rows:
            table.add_row(*cells)
        console.print(table)
        return
    widths = [max(len(line[i]) for line in [COLUMNS, *rows]) for i in range(len(COLUMNS))]
    for line in [COLUMNS, *rows]:
        print("  ".join(cell.ljust(width) for cell, width in zip(line, widths)).rstrip())


def _shown(path: Path) -> str:
    """The path relative to the working directory when it lies below it (a checkout), else as it is."""
    try:
        return str(path.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)
