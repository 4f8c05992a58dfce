"""The one exception type the CLI turns into a one-line message and a non-zero exit."""

from cnnlab.common.text import short_text


class CnnlabError(Exception):
    """A problem the user can fix: bad input, a missing file, a refused operation.

    The message is shown as is, on one line, so it must name the problem and, where useful, the fix.
    """


def first_line(exc: BaseException) -> str:
    """An exception's message reduced to one line, for wrapping a library's error in a CnnlabError."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def install_hint(extra: str) -> str:
    """How to install one of cnnlab's extras, said in every message that needs one: cnnlab is installed from its
    folder (a clone), not from the package index, where `pip install 'cnnlab[...]'` would look."""
    return f"pip install -e '.[{extra}]' in cnnlab's folder"


MAX_MESSAGE_CHARS = 500


def one_line(text: object) -> str:
    """`text` as one printable line for a terminal: its first non-empty line, invisible characters (an escape
    sequence, a carriage return) shown as escapes instead of acting on the terminal, cut to a readable length. Used
    for every message the CLI prints and every reason stored for it to print later."""
    lines = [line.strip() for line in str(text).splitlines() if line.strip()]
    return short_text(lines[0] if lines else "", MAX_MESSAGE_CHARS)
