"""The exceptions that carry the error contract: a user mistake, an unmet constraint.

The library names *fields* (``max_accuracy_drop``), never command-line flags: the CLI maps a
field to its flag, so a Python caller reads the name it passed and a shell user the flag it typed.
"""

from __future__ import annotations


class UserError(Exception):
    """Bad input or usage: the CLI prints one line and exits with code 2.

    ``option`` is the library parameter the problem is about (None for input files and
    other problems not tied to one parameter); ``problem`` reads after the option's name.
    """

    def __init__(self, problem: str, option: str | None = None) -> None:
        super().__init__(f"{option} {problem}" if option else problem)
        self.problem = problem
        self.option = option

    def phrased(self, name_of: dict[str, str] | None = None) -> str:
        """The message with the option spelled as ``name_of`` says (the CLI passes flag names)."""
        if self.option is None:
            return self.problem
        name = self.option if name_of is None else name_of.get(self.option, self.option)
        return f"{name} {self.problem}"


class ConstraintError(Exception):
    """The user's constraints cannot be met: the CLI exits with code 1.

    ``report`` carries what was found (the best candidate and why it falls short).
    """

    def __init__(self, message: str, report: dict | None = None) -> None:
        super().__init__(message)
        self.report = report
