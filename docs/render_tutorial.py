"""Run docs/tutorial.py on the full data and write docs/tutorial.md: its prose, its code, what each code cell printed,
the figures it showed (copied into docs/tutorial_files/), and a header that says on what hardware, with which
libraries, on what date and in how much wall time the numbers were measured.

    python docs/render_tutorial.py --data ../shared/datasets/cifar-10-python.tar.gz
    python docs/render_tutorial.py --data cifar-10-python.tar.gz --weights vgg16_notop.h5   # offline: a local copy
    python docs/render_tutorial.py --small --data cifar-10-python.tar.gz --weights none --out /tmp/check.md

The default renders the `quick` preset on all of CIFAR-10 (the official download unless --data or $CNNLAB_DATA names
a copy) with VGG16's ImageNet weights: tens of minutes on a laptop CPU. --small runs the tutorial's small mode
(CNNLAB_TUTORIAL_SMALL=1, a check that the code works, in a minute or two); its page says that its numbers mean
nothing. The page is written only when every cell ran; a failing cell stops the render with its traceback.

The cells run in one namespace in this process, one after the other, as a notebook kernel runs them, with standard
output captured per cell (and echoed as it comes, so a long run shows its progress). Not nbconvert or jupytext:
neither is a cnnlab dependency (adding one needs a pyproject.toml extra and a constraints.txt pin), CI has no
network to install them, and a kernel would add nothing here: the cells are plain Python that prints text and saves
PNG files. A cell shows a figure by printing `figure: PATH` (the tutorial's `show`); such lines become images.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
TUTORIAL = HERE / "tutorial.py"
MARKER = re.compile(r"^# %%(?P<title>[^\[]*?)\s*(?:\[(?P<kind>\w+)\])?\s*$")  # `# %%`, `# %% Title [markdown]`
FIGURE_LINE = re.compile(r"^figure: (?P<path>.+\.png)$")
ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]")
TIMED_CELL_SECONDS = 5  # a code cell that ran longer gets its time written under its output


@dataclass(frozen=True)
class Cell:
    kind: str  # "markdown" or "code"
    source: str  # markdown: the text without its comment marks; code: as written
    line: int  # the file's line number of the cell's first line of content


@dataclass
class Output:
    text: str = ""
    figures: list[Path] = field(default_factory=list)
    seconds: float = 0.0


def read_cells(path: Path) -> list[Cell]:
    """The cells of a jupytext "percent" file. Before the first `# %%` only comments (jupytext's header) may stand."""
    lines = Path(path).read_text(encoding="utf-8").splitlines()
    starts = [index for index, line in enumerate(lines) if MARKER.match(line)]
    if not starts:
        raise ValueError(f"{path}: no `# %%` cell markers: not a jupytext percent file")
    stray = [index + 1 for index in range(starts[0]) if lines[index].strip() and not lines[index].startswith("#")]
    if stray:
        raise ValueError(f"{path}:{stray[0]}: code before the first `# %%` cell marker")
    cells = []
    for start, end in zip(starts, [*starts[1:], len(lines)]):
        kind = MARKER.match(lines[start])["kind"] or "code"
        body = lines[start + 1:end]
        if kind == "markdown":
            not_comment = [start + 2 + offset for offset, line in enumerate(body)
                           if line.strip() and not line.startswith("#")]
            if not_comment:
                raise ValueError(f"{path}:{not_comment[0]}: a markdown cell's lines must be comments")
            body = [line[2:] if line.startswith("# ") else line[1:] for line in body]
        elif kind != "code":
            raise ValueError(f"{path}:{start + 1}: unknown cell type [{kind}]")
        cells.append(Cell(kind, "\n".join(body).strip("\n"), start + 2))
    return cells


class _Tee(io.TextIOBase):
    """Standard output for a cell: kept for the page, and passed on to the terminal as it comes."""

    def __init__(self, echo):
        self.kept, self.echo = io.StringIO(), echo

    def write(self, text: str) -> int:
        self.kept.write(text)
        if self.echo is not None:
            self.echo.write(text)
        return len(text)

    def flush(self) -> None:
        if self.echo is not None:
            self.echo.flush()

    @property
    def encoding(self) -> str:
        return "utf-8"

    def isatty(self) -> bool:  # Keras then logs one line per epoch instead of redrawing a progress bar
        return False


def run_cells(cells: list[Cell], filename: str, echo=None) -> list[Output | None]:
    """Run the code cells in order in one namespace; each one's printed text and figures (None for markdown)."""
    namespace = {"__name__": "__main__", "__file__": filename}
    outputs: list[Output | None] = []
    for cell in cells:
        if cell.kind != "code":
            outputs.append(None)
            continue
        # Padded to its own line numbers, so a traceback points into the tutorial file.
        code = compile("\n" * (cell.line - 1) + cell.source, filename, "exec")
        tee = _Tee(echo)
        start = time.perf_counter()
        with contextlib.redirect_stdout(tee):
            exec(code, namespace)  # noqa: S102  (the tutorial, run as `python docs/tutorial.py` would run it)
        outputs.append(_parsed(tee.kept.getvalue(), time.perf_counter() - start))
    return outputs


def _parsed(raw: str, seconds: float) -> Output:
    output = Output(seconds=seconds)
    lines = []
    for line in raw.split("\n"):
        line = ANSI_ESCAPE.sub("", line).split("\r")[-1]  # a redrawn line: what was left on the screen
        while "\b" in line:
            line = re.sub(".?\b", "", line, count=1)
        figure = FIGURE_LINE.match(line.strip())
        if figure:
            output.figures.append(Path(figure["path"]))
        else:
            lines.append(line.rstrip())
    output.text = "\n".join(lines).strip("\n")
    return output


def figure_name(path: Path, work: Path) -> str:
    """A figure's file name on the page: its path under the tutorial's folder, flattened (cnn/figures/x.png becomes
    cnn-figures-x.png), so that two runs' figures of the same name stay apart."""
    try:
        parts = path.resolve().relative_to(work.resolve()).parts
    except ValueError:
        parts = (path.name,)
    return "-".join(parts)


def markdown_page(cells: list[Cell], outputs: list[Output | None], header: str, files_dir: Path,
                  work: Path) -> tuple[str, dict[str, Path]]:
    """The page's Markdown and the figures it links ({file name in files_dir: source path}). The header goes after
    the first markdown cell (the title)."""
    parts = ["<!-- Written by docs/render_tutorial.py from docs/tutorial.py: edit those, not this file. -->"]
    figures: dict[str, Path] = {}
    header_placed = False
    for cell, output in zip(cells, outputs):
        if cell.kind == "markdown":
            parts.append(cell.source)
            if not header_placed:
                parts.append(header)
                header_placed = True
            continue
        parts.append(f"```python\n{cell.source}\n```")
        if output.text.strip():
            parts.append(f"```text\n{output.text}\n```")
        for path in output.figures:
            name = figure_name(path, work)
            figures[name] = path
            parts.append(f"![{Path(name).stem}]({files_dir.name}/{name})")
        if output.seconds >= TIMED_CELL_SECONDS:
            parts.append(f"*This cell ran for {_duration(output.seconds)}.*")
    if not header_placed:
        parts.insert(1, header)
    return "\n\n".join(parts) + "\n", figures


def _duration(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.1f} min"


def _file_description(source: str) -> str:
    """A local file by name and SHA-256 (what a reader can check a copy against); a folder by name."""
    path = Path(source).expanduser()
    if not path.is_file():
        return f"the folder `{path.name}`"
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return f"`{path.name}`, sha256 `{digest.hexdigest()}`"


def _revision() -> str:
    """The commit this page was rendered from, as its numbers' source; said so where it is not a git checkout."""
    try:
        done = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=Path(__file__).parent, capture_output=True,
                              text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return "not recorded"
    return done.stdout.strip() if done.returncode == 0 and done.stdout.strip() else "not recorded"


def header_text(command: str, seconds: float, data: str | None, weights: str, small: bool,
                weights_note: str = "") -> str:
    from cnnlab.backends import machine

    hardware = machine.hardware()
    versions = machine.library_versions()
    libraries = ", ".join(f"{name} {version}" for name, version in versions.items() if name not in ("backend",))
    accelerators = ", ".join(hardware["accelerators"]) or "none"
    lines = [
        f"> **How this page was made.** `{command}` ran `docs/tutorial.py` on {time.strftime('%Y-%m-%d')}, start to "
        f"finish in **{_duration(seconds)}** of wall time, on {hardware['cpu']} ({hardware['cpu_cores']} cores, "
        f"native bfloat16: {'yes' if hardware['native_bfloat16'] else 'no'}; accelerators: {accelerators}; "
        f"{hardware['platform']}), Keras backend {versions['backend']}; {libraries}; cnnlab revision {_revision()}. "
        f"Data: {_file_description(data) if data else 'the official CIFAR-10 archive, downloaded through Keras'}. "
        f"VGG16's starting weights: {_file_description(weights) if weights not in ('imagenet', 'none') else weights}. "
        "One run of each model.",
    ]
    if weights_note.strip():  # one line: a line break in it would end the quoted header
        lines.append(f">\n> **About VGG16's weights:** {' '.join(weights_note.split())}")
    if small:
        lines.append(">\n> **Small run** (`--small`, CNNLAB_TUTORIAL_SMALL=1): a few hundred training images, one "
                     "epoch, narrow layers, VGG16 cut after its first block. It checks that the code runs; its "
                     "numbers mean nothing.")
    if weights == "none":
        lines.append(">\n> VGG16 started from random weights here (`none`): its numbers are no test of transfer "
                     "learning.")
    return "\n".join(lines)


def _write_atomically(path: Path, text: str) -> None:
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(text, encoding="utf-8")
    os.replace(temporary, path)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=os.environ.get("CNNLAB_DATA") or None,
                        help="cifar-10-python.tar.gz or the extracted folder (default: $CNNLAB_DATA, else the "
                             "official download)")
    parser.add_argument("--weights", default="imagenet",
                        help="VGG16's starting weights: imagenet (default), a VGG16 no-top .h5 file, or none")
    parser.add_argument("--weights-note", default="",
                        help="a sentence for the page's header on what the weights are (e.g. where a local file came "
                             "from, and that it is not ImageNet's)")
    parser.add_argument("--small", action="store_true", help="the tutorial's small mode: a check in a minute or two")
    parser.add_argument("--out", type=Path, default=HERE / "tutorial.md",
                        help="the page to write (default docs/tutorial.md); its figures go to <name>_files/ beside "
                             "it, a folder this script owns: PNG files already in it are replaced")
    parser.add_argument("--work", type=Path, default=None,
                        help="where the tutorial's runs go (default: runs/tutorial-render-<time>)")
    parser.add_argument("--tutorial", type=Path, default=TUTORIAL, help=argparse.SUPPRESS)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    work = args.work or Path("runs") / f"tutorial-render-{time.strftime('%Y%m%d-%H%M%S')}"
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ["CNNLAB_TUTORIAL_OUT"] = str(work)
    os.environ["CNNLAB_TUTORIAL_WEIGHTS"] = args.weights
    if args.data:
        os.environ["CNNLAB_DATA"] = str(args.data)
    if args.small:
        os.environ["CNNLAB_TUTORIAL_SMALL"] = "1"
    else:
        os.environ.pop("CNNLAB_TUTORIAL_SMALL", None)
    given = argv if argv is not None else sys.argv[1:]
    # Absolute paths are this machine's, not the reader's: the page shows their file names.
    command = shlex.join(["python", "docs/render_tutorial.py", *(Path(word).name if os.path.isabs(word) else word
                                                                 for word in given)])

    cells = read_cells(args.tutorial)
    start = time.perf_counter()
    try:
        outputs = run_cells(cells, str(args.tutorial), echo=sys.stdout)
    except Exception:
        traceback.print_exc()
        print(f"render_tutorial: a cell failed; {args.out} is left as it was", file=sys.stderr)
        return 1
    seconds = time.perf_counter() - start

    files_dir = args.out.with_name(args.out.stem + "_files")
    page, figures = markdown_page(cells, outputs, header_text(command, seconds, args.data, args.weights, args.small,
                                                          args.weights_note),
                                  files_dir, work)
    files_dir.mkdir(parents=True, exist_ok=True)
    for old in files_dir.glob("*.png"):
        old.unlink()
    for name, source in figures.items():
        shutil.copyfile(source, files_dir / name)
    _write_atomically(args.out, page)
    print(f"wrote {args.out} and {len(figures)} figures in {files_dir} ({_duration(seconds)})", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
