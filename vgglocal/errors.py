"""The one base class for user errors (bad file, key, value): the CLI prints their message
as one line and exits non-zero instead of showing a traceback."""


class UserError(ValueError):
    """A mistake in the user's input; the message names the file, key or value."""
