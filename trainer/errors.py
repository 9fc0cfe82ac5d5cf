"""One exception type for problems the user can fix (bad input, bad flags).

The CLI prints its message as one line and exits non-zero, without a traceback.
"""


class UserError(Exception):
    """A problem with the user's input or flags, explained in the message."""
