"""How ``--help`` reads: options in panels, two columns fitted to the terminal, a usage line that names what is needed.

Each option names its panel (``rich_help_panel``). A command's own panels (prune's "Pruning", export's "Model") come
first, then those of ``PANELS`` in that order; ``--help`` joins the last. Only the help is reordered: options are
parsed and checked in the order they are declared. Help is drawn COLUMNS wide (else the terminal's width, at most
``MAX_HELP_WIDTH``): an option's name and value in one column, what it does in the other, and a name too long for its
column on a line of its own, so no name is cut.
"""

from __future__ import annotations

import inspect
import os
import re
import sys
from typing import Any

import typer
from rich.console import Console, Group, RenderableType
from rich.padding import Padding
from rich.panel import Panel
from rich.table import Table
from rich.text import Text
from typer import rich_utils
from typer.core import TyperArgument, TyperCommand, TyperGroup, TyperOption

GOALS, DATA, OUTPUT, METHOD, QUANTIZATION, FINETUNING, EXPERT = PANELS = (
    "Goals",
    "Data",
    "Output",
    "Method",
    "Quantization",
    "Fine-tuning",
    "Expert",
)
FALLBACK_WIDTH = 80  # off a terminal (a pipe, CI) with no COLUMNS
MAX_HELP_WIDTH = 100  # longer lines are hard to read: a wider terminal still gets help this wide
TYPE_NAMES = {"str": "TEXT", "int range": "INT", "float range": "FLOAT"}  # typer's <str> shown as TEXT


def help_width() -> int:
    """Columns to draw help in: COLUMNS, else the terminal's (stdout, stderr or stdin), at most MAX_HELP_WIDTH."""
    columns = os.environ.get("COLUMNS", "")
    if columns.isdigit() and int(columns) > 0:
        return min(int(columns), MAX_HELP_WIDTH)
    for stream in (sys.__stdout__, sys.__stderr__, sys.__stdin__):
        try:
            return min(os.get_terminal_size(stream.fileno()).columns, MAX_HELP_WIDTH)
        except (AttributeError, ValueError, OSError):  # closed, replaced or not a terminal
            continue
    return FALLBACK_WIDTH


def panel_of(param: TyperArgument | TyperOption) -> str:
    """The panel a parameter is shown in (typer's titles for those that name none)."""
    default = "Arguments" if isinstance(param, TyperArgument) else "Options"
    return getattr(param, "rich_help_panel", None) or default


def panel_rank(param: TyperArgument | TyperOption) -> tuple[int, int]:
    """Arguments first, then a command's own panels, then ``PANELS`` in order."""
    panel = panel_of(param)
    return (isinstance(param, TyperOption), PANELS.index(panel) + 1 if panel in PANELS else 0)


def reflowed(text: str | None) -> str | None:
    """Each paragraph of a docstring (blank lines, or an example, start one) on one line: the terminal wraps it."""
    if text is None:
        return None
    text = re.sub(r"\n(?=Example: )", "\n\n", inspect.cleandoc(text))  # each example a paragraph of its own
    paragraphs = re.split(r"\n{2,}", text)
    return "\n\n".join(" ".join(line.strip() for line in paragraph.splitlines()) for paragraph in paragraphs)


def row(param: TyperArgument | TyperOption, ctx: typer.Context) -> tuple[str, Text] | None:
    """``("--calib INT", "Images in the search split ... [x>=1]")``: the name as typed and the help with its notes."""
    record = param.get_help_record(ctx)
    if record is None:  # hidden
        return None
    name, described = record
    if isinstance(param, TyperArgument):
        name = param.metavar or (param.name or "").upper()
    name = re.sub(r"<([a-z ]+)>", lambda m: TYPE_NAMES.get(m[1], m[1].upper()), name)
    said = param.help or ""
    notes = described[len(said) :].strip() if described.startswith(said) else ""
    if isinstance(param, TyperArgument) and notes == "[required]":
        notes = ""  # the usage line shows it
    return name, Text(said) + Text(f" {notes}" if notes else "", style="dim")


def options_panel(title: str, rows: list[tuple[str, Text]], name_width: int) -> Panel:
    """One panel: names in a column ``name_width`` wide, help beside them; a longer name has a line of its own."""
    parts: list[RenderableType] = []
    for name, described in rows:
        shown = Text(name, style="bold cyan")
        if len(name) > name_width:
            parts += [shown, Padding(described, (0, 0, 0, name_width + 1))]
            continue
        grid = Table.grid(padding=(0, 1), expand=True)
        grid.add_column(width=name_width, no_wrap=True)
        grid.add_column(ratio=1, overflow="fold")  # a word longer than the column is broken, not cut
        grid.add_row(shown, described)
        parts.append(grid)
    return Panel(Group(*parts), title=title, title_align="left", border_style="dim")


class HelpCommand(TyperCommand):
    """A typer command that draws its own help: the usage it needs, then its panels in order, fitted to the terminal."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.help = reflowed(self.help)

    def collect_usage_pieces(self, ctx: typer.Context) -> list[str]:
        """``MODEL --data DATA -o OUT [OPTIONS]``: the arguments, then the required options, then the rest."""
        pieces = []
        for param in self.params:
            if isinstance(param, TyperArgument):
                name = param.metavar or (param.name or "").upper()
                name = name if param.required else f"[{name}]"
                pieces.append(name + ("..." if param.nargs != 1 else ""))
            elif isinstance(param, TyperOption) and param.required:
                flag = min(param.opts, key=len)
                pieces.append(f"{flag} {param.metavar or (param.name or '').upper()}")
        return [*pieces, self.options_metavar] if self.options_metavar else pieces

    def format_help(self, ctx: typer.Context, formatter: Any) -> None:
        """Print the help (click then echoes the formatter's empty text, a blank line, as with typer's own)."""
        width = rich_utils.MAX_WIDTH or help_width()
        console = Console(width=width, highlight=False)
        console.print(Padding(Text(self.get_usage(ctx), style="bold"), 1))
        first, *rest = (self.help or "").split("\n\n")
        console.print(Padding(Text(first), (0, 1, 1, 1)))
        for paragraph in rest:
            console.print(Padding(Text(paragraph, style="dim"), (0, 1, 1, 1)))
        params = sorted(self.params, key=panel_rank)
        rows = [(panel_of(p), shown) for p in params if (shown := row(p, ctx)) is not None]
        help_option = self.get_help_option(ctx)
        if help_option is not None and (shown := row(help_option, ctx)) is not None:
            rows.append((rows[-1][0] if rows and rows[-1][0] != "Arguments" else "Options", shown))  # the last panel
        name_width = min(max([12, *(len(name) for _, (name, _) in rows)]), (width - 6) // 3 + 2)  # 26 of 80
        order = list(dict.fromkeys(panel for panel, _ in rows))
        for title in order:
            console.print(options_panel(title, [shown for panel, shown in rows if panel == title], name_width))


def no_metavar(param: TyperArgument | TyperOption) -> None:
    """A switch (``--version``, ``--help``) takes no value: typer's help shows no ``<bool>`` after it."""
    if isinstance(param, TyperOption) and param.is_flag and param.metavar is None:
        param.metavar = ""


class HelpGroup(TyperGroup):
    """The ``svtprune`` group (typer draws its help): its switches shown without ``<bool>``."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        for param in self.params:
            no_metavar(param)

    def get_help_option(self, ctx: typer.Context) -> TyperOption | None:
        option = super().get_help_option(ctx)
        if option is not None:
            no_metavar(option)
        return option
