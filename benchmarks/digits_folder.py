"""A real image-folder data set from data a package ships: scikit-learn's handwritten digits as PNG class folders.

    .venv/bin/pip install scikit-learn          # not a cnnlab dependency: only this script needs it
    .venv/bin/python benchmarks/digits_folder.py digits/
    .venv/bin/cnnlab compare --data digits/ --image-size 32 --weights none ...

`sklearn.datasets.load_digits` holds 1,797 grey 8x8 scans of the digits 0-9 (UCI's "Optical Recognition of
Handwritten Digits", 43 writers), stored inside the package, so no download happens. Each becomes
digits/<digit>/<index>.png, its 17 ink levels (0-16) spread over 0-255; cnnlab then turns them to RGB and upscales
them to --image-size.
"""

import sys
from pathlib import Path

import numpy as np
from PIL import Image


def write_digits(root: Path) -> int:
    from sklearn.datasets import load_digits

    digits = load_digits()
    if root.exists() and any(root.iterdir()):
        raise SystemExit(f"{root} is not empty; choose a new folder")
    for index, (pixels, label) in enumerate(zip(digits.images, digits.target)):
        folder = root / str(label)
        folder.mkdir(parents=True, exist_ok=True)
        grey = np.round(pixels * (255 / 16)).astype(np.uint8)  # ink levels 0-16 as 8-bit grey
        Image.fromarray(grey).save(folder / f"{index:04d}.png")
    return len(digits.images)


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit(__doc__)
    print(f"{write_digits(Path(sys.argv[1]))} digits written to {sys.argv[1]}")
