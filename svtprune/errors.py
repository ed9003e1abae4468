"""The one exception type that means "the user's input is wrong", shown as a line, exit 2."""


class UserError(Exception):
    """Bad input or usage: the CLI prints the message and exits with code 2."""


class ConstraintError(Exception):
    """The user's constraints cannot be met: the CLI exits with code 1.

    ``report`` carries what was found (the best candidate and why it falls short).
    """

    def __init__(self, message: str, report: dict | None = None) -> None:
        super().__init__(message)
        self.report = report
