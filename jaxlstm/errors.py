"""Errors that mean "the user's input or options are wrong" (scripts exit 2 with one line)."""


class InputError(ValueError):
    """Bad data file, bad column, bad option. The message is one line meant for the user."""
