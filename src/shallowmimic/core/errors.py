"""The one exception type that reaches users.

Anything raised as `UserError` is printed by the CLI as a single line (`error: ...`) with a
non-zero exit code; everything else is a bug and keeps its traceback.
"""


class UserError(Exception):
    """A problem with the user's input (a file, a flag, a spec), explained in one line."""


class DataError(UserError):
    """A data source is missing, unreadable or malformed."""
