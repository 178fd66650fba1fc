"""Errors that stop start-up: printed as one line, exit status 2."""


class StartupError(Exception):
    """A problem an operator must fix; printed as one line."""
