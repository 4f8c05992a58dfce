"""How fast an image folder becomes arrays: cnnlab cold (decode on every core, write the cache), cnnlab cached
(memory-mapped read), and `keras.utils.image_dataset_from_directory` on the same folder, iterated to the end.

    .venv/bin/python benchmarks/image_folder_decode.py                 # 2,000 generated 128x96 JPEGs, 10 classes
    .venv/bin/python benchmarks/image_folder_decode.py --images 400
    .venv/bin/python benchmarks/image_folder_decode.py --folder photos/ --size 64

Generated images are smooth random textures (a small random grid upscaled), saved as JPEG quality 90. Both loaders
produce size x size RGB from the centre square (cnnlab's "crop", Keras's crop_to_aspect_ratio). Each uses a fresh
temporary cache, so the first cnnlab load is really cold.
"""

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from cnnlab.config import DataConfig
from cnnlab.data.image_folder import load_image_folder

CLASSES = 10


def make_folder(folder: Path, count: int) -> Path:
    rng = np.random.default_rng(0)
    for index in range(count):
        grid = rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)
        image = Image.fromarray(grid).resize((128, 96), Image.Resampling.BICUBIC)
        path = folder / f"class{index % CLASSES}" / f"{index:05}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        image.save(path, quality=90)
    return folder


def timed(load) -> tuple[float, int]:
    start = time.perf_counter()
    images = load()
    return time.perf_counter() - start, images


def cnnlab_load(folder: Path, size: int, cache: Path) -> int:
    data = DataConfig(image_size=size, resize="crop", val_size=0.1, test_size=0.2)
    dataset = load_image_folder(folder, data, seed=0, cache_dir=cache, warn=lambda message: None)
    for part in (dataset.x_train, dataset.x_test):
        np.asarray(part).sum()  # read every pixel, as training will: a memory map reads lazily
    return len(dataset.x_train) + len(dataset.x_test)


def keras_load(folder: Path, size: int) -> int:
    import keras

    dataset = keras.utils.image_dataset_from_directory(folder, image_size=(size, size), batch_size=256,
                                                       shuffle=False, crop_to_aspect_ratio=True, verbose=False)
    return sum(len(images) for images, _ in dataset)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=2000, help="how many JPEGs to generate")
    parser.add_argument("--folder", type=Path, help="an image folder to use instead of generated JPEGs")
    parser.add_argument("--size", type=int, default=64)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        folder = args.folder or make_folder(Path(scratch) / "photos", args.images)
        cache = Path(scratch) / "cache"
        cold, count = timed(lambda: cnnlab_load(folder, args.size, cache))
        cached, _ = timed(lambda: cnnlab_load(folder, args.size, cache))
        import keras  # noqa: F401 (imported before timing: its import is not decoding)

        keras_time, keras_count = timed(lambda: keras_load(folder, args.size))
    print(f"{count} images ({keras_count} for Keras) at {args.size} px, {folder if args.folder else 'generated'}")
    print(f"cnnlab cold (decode + cache): {count / cold:9.0f} images/s  ({cold:.2f} s)")
    print(f"cnnlab cached:                {count / cached:9.0f} images/s  ({cached:.2f} s)")
    print(f"keras image_dataset_from_directory: {keras_count / keras_time:9.0f} images/s  ({keras_time:.2f} s)")
    print(f"ratios: cnnlab cold / keras {keras_time / cold * count / keras_count:.2f}x, "
          f"cnnlab cached / keras {keras_time / cached * count / keras_count:.1f}x")


if __name__ == "__main__":
    sys.exit(main())
