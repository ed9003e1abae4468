"""The ``svtprune`` typer app and its entry point, where the error contract is kept.

- a usage mistake (no or unknown command, unknown option, missing or malformed value): one line, exit 2;
- a ``UserError`` from the library: one line ``error: ...`` naming the flag, exit 2;
- a ``ConstraintError`` (constraints cannot be met, or verify found a mismatch): exit 1;
- Ctrl-C: one line ``interrupted``, exit 130.
Anything else is a bug and shows its traceback. typer >= 0.26 vendors click (``import click`` fails
on a fresh install), so its exceptions are reached through typer only.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from importlib import metadata

import typer
from typer import rich_utils

from svtprune.cli.analyze import analyze
from svtprune.cli.compress import compress
from svtprune.cli.demo import demo
from svtprune.cli.energy import energy
from svtprune.cli.eval import eval_model
from svtprune.cli.export import export
from svtprune.cli.finetune import finetune
from svtprune.cli.help import HelpCommand, HelpGroup, help_width
from svtprune.cli.prune import prune
from svtprune.cli.quantize import quantize
from svtprune.cli.render import json_stdout, problem, show_notes
from svtprune.cli.verify import verify
from svtprune.errors import ConstraintError, UserError

INTERRUPTED = 130  # 128 + SIGINT, what shells report for Ctrl-C
HELP = {"--help", "--version"}  # what these print goes to stdout, even beside --json

app = typer.Typer(
    name="svtprune",
    help="Make Spiking Vision Transformers in ONNX smaller: structured pruning and quantization, measured.",
    cls=HelpGroup,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
COMMANDS = {
    "analyze": analyze,
    "prune": prune,
    "verify": verify,
    "energy": energy,
    "quantize": quantize,
    "finetune": finetune,
    "export": export,
    "eval": eval_model,
    "compress": compress,
    "demo": demo,
}
for _name, _command in COMMANDS.items():
    app.command(_name, cls=HelpCommand)(_command)


def show_version(value: bool) -> None:
    """``--version``: print ``svtprune X.Y.Z`` (the installed distribution's version) and exit 0."""
    if value:
        try:
            version = metadata.version("svtprune")
        except metadata.PackageNotFoundError:  # run from a source tree that was never installed
            version = "(version unknown: not installed)"
        print(f"svtprune {version}")
        raise typer.Exit()


@app.callback()
def _options(
    version: bool = typer.Option(
        False, "--version", is_eager=True, callback=show_version, help="Print the version and exit."
    ),
) -> None:
    pass  # the app's own options (the commands do the work)


# help fitted to the terminal (COLUMNS, else its width, at most 100); typer's own TERMINAL_WIDTH still wins
rich_utils.MAX_WIDTH = rich_utils.MAX_WIDTH or help_width()


def command_in(args: Sequence[str]) -> str | None:
    """The command named on the line (the app has no options of its own that take a value)."""
    return next((arg for arg in args if not arg.startswith("-")), None)


def flags_for(command: str | None) -> dict[str, str]:
    """Parameter name -> how the shell spells it, read off ``command``'s own options.

    The library names the parameter a problem is about (``UserError(problem, option="max_accuracy_drop")``)
    by its field name, which is the parameter's name, so the one-line error names the flag the user typed."""
    sub = getattr(typer.main.get_command(app), "commands", {}).get(command or "")
    spelled = {}
    for param in sub.params if sub is not None else []:
        if param.param_type_name == "argument":
            spelled[param.name] = param.name.upper()
        else:
            spelled[param.name] = next((opt for opt in param.opts if opt.startswith("--")), param.opts[0])
    return spelled


def usage_message(exc: typer.TyperException) -> str:
    """typer's message for a usage mistake, with where to read more."""
    ctx = getattr(exc, "ctx", None)
    message = exc.format_message()
    return f"{message} (see '{ctx.command_path} --help')" if ctx is not None else message


def run(args: Sequence[str]) -> int:
    """Run the command line ``args``; returns the exit code after printing any problem as one line."""
    if not args:
        problem("error", "red", f"missing command; choose one of {', '.join(COMMANDS)} (see 'svtprune --help')")
        return 2
    show_notes()
    try:
        with json_stdout("--json" in args and not HELP.intersection(args)):
            code = app(args=list(args), standalone_mode=False)
    except UserError as exc:
        problem("error", "red", exc.phrased(flags_for(command_in(args))))
        return 2
    except ConstraintError as exc:
        problem("constraints not met", "yellow", str(exc))
        return 1
    except typer.TyperException as exc:  # typer's click exceptions: usage mistakes (exit 2)
        problem("error", "red", usage_message(exc))
        return exc.exit_code
    except (KeyboardInterrupt, typer.Abort):
        code = INTERRUPTED
    if code == INTERRUPTED:  # typer turns Ctrl-C during a command into Exit(130), returned here
        sys.stderr.write("interrupted\n")
        return INTERRUPTED
    return code if isinstance(code, int) else 0


def main(argv: Sequence[str] | None = None) -> None:
    """Console entry point (``svtprune``): exits with the contract's code."""
    sys.exit(run(sys.argv[1:] if argv is None else argv))
