"""The one exception type the CLI turns into a one-line message and a non-zero exit."""


class CnnlabError(Exception):
    """A problem the user can fix: bad input, a missing file, a refused operation.

    The message is shown as is, on one line, so it must name the problem and, where useful, the fix.
    """


def first_line(exc: BaseException) -> str:
    """An exception's message reduced to one line, for wrapping a library's error in a CnnlabError."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
