"""Reading files out of a `.tar.gz` without ever writing them to disk, refusing anything unsafe.

Members are read into memory rather than extracted, so nothing in an archive can land outside a folder. Every member
is still checked, because an archive that carries an absolute path, a `..` component, a link or a device is not the
official archive and should not be trusted for anything else either. Size limits stop a decompression bomb before
it fills memory.
"""

from __future__ import annotations

import gzip
import tarfile
import zlib
from pathlib import Path, PurePosixPath

from cnnlab.common.errors import CnnlabError, first_line

MAX_MEMBER_BYTES = 64 * 2**20  # the largest official member is 31 MB
MAX_TOTAL_BYTES = 512 * 2**20  # the official archive unpacks to 185 MB; headers count too
MAX_MEMBERS = 1000  # the official archive holds 9


class _CappedReader:
    """A file-like view of the decompressed stream that stops at `limit` bytes, whatever the tar headers claim."""

    def __init__(self, stream, limit: int, path: Path):
        self.stream, self.limit, self.path, self.count = stream, limit, path, 0

    def read(self, size: int = -1) -> bytes:
        data = self.stream.read(size)
        self.count += len(data)
        if self.count > self.limit:
            raise CnnlabError(f"{self.path}: unpacks to more than {self.limit:,} bytes; not a CIFAR-10 archive")
        return data


def read_tar_members(path: Path, folder: str, wanted: set[str]) -> dict[str, bytes]:
    """Return `{name: content}` for the regular files `folder/name` with name in `wanted`.

    Raises CnnlabError for anything that is not a well-formed gzip-compressed tar, or that holds an unsafe member.
    """
    found: dict[str, bytes] = {}
    try:
        # Stream mode ("r|") reads front to back through the capped reader, so no header or member can make us
        # decompress more than MAX_TOTAL_BYTES.
        with gzip.open(path, "rb") as stream, tarfile.open(
            fileobj=_CappedReader(stream, MAX_TOTAL_BYTES, path), mode="r|"
        ) as tar:
            for count, member in enumerate(tar, start=1):
                if count > MAX_MEMBERS:
                    raise CnnlabError(f"{path}: more than {MAX_MEMBERS} archive members; not a CIFAR-10 archive")
                _check_member(path, member)
                parent, name = _split(member.name)
                if parent == folder and name in wanted and member.isfile():
                    handle = tar.extractfile(member)
                    found[name] = handle.read() if handle else b""
    # tarfile raises a bare ValueError for some malformed PAX headers (a sparse map that is not numbers).
    except (tarfile.TarError, zlib.error, EOFError, OSError, ValueError) as exc:
        raise CnnlabError(f"{path}: not a readable gzip-compressed tar archive ({first_line(exc)})") from None
    return found


def _check_member(path: Path, member: tarfile.TarInfo) -> None:
    name = member.name
    parts = PurePosixPath(name).parts
    if name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":"):
        raise CnnlabError(f"{path}: refusing archive member with an absolute path: {name!r}")
    if ".." in parts:
        raise CnnlabError(f"{path}: refusing archive member that escapes its folder: {name!r}")
    if member.issym() or member.islnk():
        raise CnnlabError(f"{path}: refusing archive member that is a link: {name!r}")
    if not (member.isfile() or member.isdir()):
        raise CnnlabError(f"{path}: refusing archive member that is not a regular file or folder: {name!r}")
    if member.size > MAX_MEMBER_BYTES:
        raise CnnlabError(
            f"{path}: archive member {name!r} claims {member.size:,} bytes, over the {MAX_MEMBER_BYTES:,} limit"
        )


def _split(name: str) -> tuple[str, str]:
    parts = PurePosixPath(name).parts
    return ("/".join(parts[:-1]), parts[-1]) if parts else ("", "")
