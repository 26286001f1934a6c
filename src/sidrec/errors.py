"""The one exception type for mistakes a user can make (bad file, bad option)."""


class SidrecError(Exception):
    """A user-facing error: the CLI prints its message on one line and exits with code 2.

    The message must name the file (and line or record) at fault and say what is wrong.
    """
