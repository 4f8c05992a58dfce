"""The one exception type the CLI turns into a one-line message and a non-zero exit."""


class CnnlabError(Exception):
    """A problem the user can fix: bad input, a missing file, a refused operation.

    The message is shown as is, on one line, so it must name the problem and, where useful, the fix.
    """
