import io
import tarfile

import pytest

from cnnlab.common.errors import CnnlabError
from cnnlab.data import archive
from cnnlab.data.archive import read_tar_members


def tar_with(path, *members, format=tarfile.DEFAULT_FORMAT):
    """members: (TarInfo, bytes-or-None)."""
    with tarfile.open(path, "w:gz", format=format) as tar:
        for info, content in members:
            tar.addfile(info, io.BytesIO(content) if content is not None else None)
    return path


def regular(name, content=b"hello"):
    info = tarfile.TarInfo(name)
    info.size = len(content)
    return info, content


def test_reads_only_the_wanted_regular_files(tmp_path):
    path = tar_with(tmp_path / "a.tar.gz", regular("top/one", b"1"), regular("top/two", b"22"), regular("other/one"))
    assert read_tar_members(path, "top", {"one", "three"}) == {"one": b"1"}


@pytest.mark.parametrize(
    "member, message",
    [
        (regular("../escape"), "escapes its folder"),
        (regular("top/../../escape"), "escapes its folder"),
        (regular("/etc/passwd"), "absolute path"),
    ],
)
def test_unsafe_names_are_refused(tmp_path, member, message):
    path = tar_with(tmp_path / "bad.tar.gz", regular("top/fine"), member)
    with pytest.raises(CnnlabError, match=message):
        read_tar_members(path, "top", {"fine"})


@pytest.mark.parametrize("kind", [tarfile.SYMTYPE, tarfile.LNKTYPE])
def test_links_are_refused(tmp_path, kind):
    link = tarfile.TarInfo("top/data_batch_1")
    link.type, link.linkname = kind, "/etc/passwd"
    path = tar_with(tmp_path / "link.tar.gz", (link, None))
    with pytest.raises(CnnlabError, match="is a link"):
        read_tar_members(path, "top", {"data_batch_1"})


def test_devices_are_refused(tmp_path):
    device = tarfile.TarInfo("top/dev")
    device.type = tarfile.CHRTYPE
    path = tar_with(tmp_path / "dev.tar.gz", (device, None))
    with pytest.raises(CnnlabError, match="not a regular file"):
        read_tar_members(path, "top", {"dev"})


def test_oversized_member_is_refused_before_reading(tmp_path, monkeypatch):
    monkeypatch.setattr(archive, "MAX_MEMBER_BYTES", 10)
    path = tar_with(tmp_path / "big.tar.gz", regular("top/big", b"x" * 11))
    with pytest.raises(CnnlabError, match="over the 10 limit"):
        read_tar_members(path, "top", {"big"})


def test_not_a_gzip_tar(tmp_path):
    path = tmp_path / "plain.tar.gz"
    path.write_text("this is not an archive")
    with pytest.raises(CnnlabError, match="not a readable gzip-compressed tar archive"):
        read_tar_members(path, "top", {"x"})


def test_truncated_archive(tmp_path):
    whole = tar_with(tmp_path / "whole.tar.gz", regular("top/x", bytes(range(256)) * 4000))
    cut = tmp_path / "cut.tar.gz"
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    with pytest.raises(CnnlabError, match="not a readable gzip-compressed tar archive"):
        read_tar_members(cut, "top", {"x"})


def test_total_unpacked_size_is_capped_whatever_the_headers_say(tmp_path, monkeypatch):
    monkeypatch.setattr(archive, "MAX_TOTAL_BYTES", 50_000)
    path = tar_with(tmp_path / "bomb.tar.gz", *(regular(f"top/part{i}", b"\0" * 9_000) for i in range(8)))
    with pytest.raises(CnnlabError, match="unpacks to more than 50,000 bytes"):
        read_tar_members(path, "top", {"part0"})


def test_a_malformed_pax_sparse_map_is_refused_in_one_line(tmp_path):
    info, content = regular("top/one")
    info.pax_headers = {"GNU.sparse.major": "0", "GNU.sparse.minor": "1", "GNU.sparse.map": "x,y"}
    path = tar_with(tmp_path / "pax.tar.gz", (info, content), format=tarfile.PAX_FORMAT)
    with pytest.raises(CnnlabError, match="not a readable gzip-compressed tar archive .*invalid literal for int"):
        read_tar_members(path, "top", {"one"})
