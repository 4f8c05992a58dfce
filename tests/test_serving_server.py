"""The server's own limits, through its public functions: one log line per condition, and as many connections as
the open-file limit allows. (Its deadlines and evictions, with a real server: test_cli_serve.py.)"""

import logging
import subprocess
import sys
import time

import pytest

from cnnlab.serving.server import connection_limit, log_once_per_condition

resource = pytest.importorskip("resource")  # no open-file limit on Windows


def test_each_condition_is_one_line_at_most_once_a_period_with_a_count_of_the_rest(caplog):
    logger = logging.getLogger("cnnlab-test-conditions")
    log_once_per_condition(logger, period=0.5)
    with caplog.at_level(logging.WARNING, logger=logger.name):
        for _ in range(500):
            logger.warning("Invalid HTTP request received.")
            try:
                raise OSError(24, "Too many open files")
            except OSError:
                logger.error("socket.accept() out of system resource\nsocket: <socket fd=7>", exc_info=True)
        time.sleep(0.6)
        logger.warning("Invalid HTTP request received.")
    assert [record.getMessage() for record in caplog.records] == [
        "Invalid HTTP request received.",
        "socket.accept() out of system resource: OSError: [Errno 24] Too many open files",
        "Invalid HTTP request received. (499 more like it in the 0.5 s before)",
    ]
    assert not any(record.exc_info or record.exc_text for record in caplog.records)  # no traceback


def limited(soft: int, hard: int, wanted: int) -> int:
    """connection_limit(wanted) in a fresh process started with these open-file limits."""
    code = (f"import resource; resource.setrlimit(resource.RLIMIT_NOFILE, ({soft}, {hard})); "
            f"from cnnlab.serving.server import connection_limit; print(connection_limit({wanted}))")
    return int(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout)


def test_connections_are_capped_below_the_open_file_limit_after_raising_it_to_the_hard_limit():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 1024:
        pytest.skip(f"this machine's hard open-file limit is {hard}")
    assert limited(256, 1024, 64) == 64  # 256 is raised towards 1,024: room for all
    assert 1 <= limited(100, 100, 64) < 64  # no room to raise: fewer connections, not "Too many open files"
    assert limited(30, 30, 64) == 1
    assert connection_limit(64) == 64
