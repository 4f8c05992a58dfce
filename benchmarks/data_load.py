"""How long loading CIFAR-10 takes, cold (decode the archive) and warm (from cnnlab's decoded-array cache).

    .venv/bin/python benchmarks/data_load.py PATH/TO/cifar-10-python.tar.gz

Uses a fresh, temporary cache folder so the first load is really cold.
"""

import sys
import tempfile
import time
from pathlib import Path

from cnnlab.config import DataConfig
from cnnlab.data import load_dataset


def main(path: str) -> None:
    with tempfile.TemporaryDirectory() as cache:
        timings = []
        for _ in range(2):
            start = time.perf_counter()
            load_dataset(DataConfig(source=path), seed=0, cache_dir=Path(cache), warn=lambda message: None)
            timings.append(time.perf_counter() - start)
    print(f"first load (decode + write cache): {timings[0]:.2f} s")
    print(f"second load (from cache):          {timings[1]:.2f} s")
    print(f"ratio first/second:                {timings[0] / timings[1]:.1f}x")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit(__doc__)
    main(sys.argv[1])
