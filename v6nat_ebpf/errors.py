"""The project's one user-facing error type.

Anything raised as `V6natError` is printed by the CLI as a single line on stderr
followed by a non-zero exit; anything else is a bug and keeps its traceback.
"""


class V6natError(Exception):
    """An error caused by input or environment, explained in one line."""
