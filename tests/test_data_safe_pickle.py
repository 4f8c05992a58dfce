import os
import pickle

import numpy as np
import pytest

from cnnlab.data.safe_pickle import UnsafePickleError, safe_loads


class RunsACommand:
    """Unpickling this would run a shell command that creates a file."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_numpy_batch_round_trips():
    data = np.arange(12, dtype=np.uint8).reshape(3, 4)
    loaded = safe_loads(pickle.dumps({b"data": data, b"labels": [1, 2, 3]}, protocol=2))
    np.testing.assert_array_equal(loaded[b"data"], data)
    assert loaded[b"labels"] == [1, 2, 3]


def test_payload_that_would_run_a_command_is_refused_and_does_not_run(tmp_path):
    marker = tmp_path / "pwned"
    payload = pickle.dumps({b"data": RunsACommand(marker)}, protocol=2)
    with pytest.raises(UnsafePickleError, match="refusing to load global (posix|os).system"):
        safe_loads(payload)
    assert not marker.exists()


def test_codecs_encode_is_allowed_only_for_latin1():
    hostile = b"\x80\x02c_codecs\nencode\nq\x00X\x01\x00\x00\x00aq\x01X\x04\x00\x00\x00zlibq\x02\x86q\x03Rq\x04."
    with pytest.raises(pickle.UnpicklingError, match="encoding 'zlib'"):
        safe_loads(hostile)


def test_a_claimed_huge_shape_does_not_allocate():
    """The reconstructor's shape comes from the file; it is ignored, so a few bytes cannot ask for terabytes."""
    gigantic_shape = b"J\x00\x00\x00\x40J\x00\x00\x00\x40\x86"  # (2**30, 2**30): an exabyte of uint8
    payload = pickle.dumps(np.arange(3, dtype=np.uint8), protocol=2).replace(b"K\x00\x85", gigantic_shape, 1)
    assert payload.count(gigantic_shape) == 1
    np.testing.assert_array_equal(safe_loads(payload), [0, 1, 2])
