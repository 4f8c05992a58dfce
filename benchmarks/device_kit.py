"""What a lent GPU machine needs to train cnnlab (the `device` tool of this workplace), carried in pieces.

    .venv/bin/python benchmarks/device_kit.py pack --data ../shared/datasets/cifar-10-python.tar.gz   # here
    python3 benchmarks/device_kit.py unpack                                                          # there

That machine has CUDA, JAX and PyTorch but no Keras and no data, and each call to it carries at most 64 MiB of files,
the repository included. `pack` fills `.kit/` (ignored by git): the wheels of Keras and of what Keras needs that
the machine lacks (`pip download`, for its Python), and the data archive cut into parts small enough to travel one
a call, with a manifest of their SHA-256 sums. `unpack`, run there in every call, copies the parts that came into a
folder outside the repository (kept while the machine stays warm), and once all are there joins them, checks the
whole archive's sum and prints its path; until then it names the parts still to come and exits 3. CONTRIBUTING.md
("On a lent GPU") gives the calls in order. Standalone on purpose: it runs there before cnnlab can be imported.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.metadata
import json
import shutil
import subprocess
import sys
from pathlib import Path

KIT = Path(".kit")
MANIFEST = "manifest.json"
# Keras and what it needs beyond what the GPU machine's image holds (absl-py, numpy, rich, h5py, ml-dtypes,
# packaging and typing-extensions are there, as are cnnlab's own needs: device/KINDS.md of the tool library lists
# the image's packages)
WHEELS = ("keras", "namex", "optree")
# The machine's Python (3.12) and platform, as the device tool's README says to ask pip for them
PLATFORM_ARGUMENTS = ["--only-binary=:all:", "--python-version", "3.12", "--implementation", "cp"] + [
    argument for tag in ("manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_17_x86_64",
                         "manylinux2014_x86_64", "manylinux1_x86_64") for argument in ("--platform", tag)]
LARGEST_PART_MIB = 58  # a call carries 64 MiB: one part, the repository (about 3 MiB) and the wheels (about 3 MiB)
FAILED, PARTS_TO_COME = 2, 3  # unpack's exit statuses


class PartsToCome(Exception):
    """Some parts have not arrived yet: the exception's text names them."""


def sha256(path: Path) -> str:
    with open(path, "rb") as stream:
        return hashlib.file_digest(stream, "sha256").hexdigest()


def cut(data: Path, kit: Path, part_bytes: int) -> dict:
    """Cut `data` into `kit`/parts/NAME.partNN of at most `part_bytes` each; returns the manifest, also written."""
    parts_dir = kit / "parts"
    shutil.rmtree(parts_dir, ignore_errors=True)
    parts_dir.mkdir(parents=True)
    whole, parts = hashlib.sha256(), []
    with open(data, "rb") as stream:
        for index, block in enumerate(iter(lambda: stream.read(part_bytes), b"")):
            part = parts_dir / f"{data.name}.part{index:02d}"
            part.write_bytes(block)
            whole.update(block)
            parts.append({"name": part.name, "sha256": hashlib.sha256(block).hexdigest()})
    manifest = {"name": data.name, "sha256": whole.hexdigest(), "parts": parts}
    (kit / MANIFEST).write_text(json.dumps(manifest, indent=2), encoding="utf-8")
    return manifest


def read_manifest(kit: Path) -> dict:
    path = kit / MANIFEST
    if not path.is_file():
        raise ValueError(f"{path} missing: carry it in every call")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
        names = [(part["name"], part["sha256"]) for part in manifest["parts"]]
        if not (names and isinstance(manifest["name"], str) and isinstance(manifest["sha256"], str)):
            raise TypeError
    except (ValueError, KeyError, TypeError):
        raise ValueError(f"{path}: not a manifest written by `device_kit.py pack`") from None
    return manifest


def join(kit: Path, into: Path) -> Path:
    """Copy the parts that came (`kit`/parts) into `into`, each checked; once all are there, the joined archive
    (checked whole). Raises PartsToCome naming the parts still missing, ValueError for a damaged part or manifest."""
    manifest = read_manifest(kit)
    whole = into / manifest["name"]
    if whole.is_file() and sha256(whole) == manifest["sha256"]:
        return whole  # joined in an earlier call
    held = into / "parts"
    held.mkdir(parents=True, exist_ok=True)
    missing = [part["name"] for part in manifest["parts"] if not hold(kit / "parts" / part["name"], held, part)]
    if missing:
        raise PartsToCome(", ".join(missing))
    joining = whole.with_name(whole.name + ".joining")
    with open(joining, "wb") as out:
        for part in manifest["parts"]:
            with open(held / part["name"], "rb") as stream:
                shutil.copyfileobj(stream, out)
    if sha256(joining) != manifest["sha256"]:
        joining.unlink()
        raise ValueError(f"{whole.name}: the joined parts do not make the archive packed (SHA-256 differs)")
    joining.replace(whole)
    shutil.rmtree(held)
    return whole


def hold(arrived: Path, held: Path, part: dict) -> bool:
    """Keep `part` in `held` if it arrived (checked: ValueError if damaged); whether `held` has it, checked: a part
    held from an earlier call counts only if it still matches, so a copy cut short is asked for again."""
    kept = held / part["name"]
    if arrived.is_file():
        copying = kept.with_name(kept.name + ".copying")
        shutil.copyfile(arrived, copying)
        if sha256(copying) != part["sha256"]:
            copying.unlink()
            raise ValueError(f"{arrived}: damaged (its SHA-256 is not the manifest's)")
        copying.replace(kept)
        return True
    return kept.is_file() and sha256(kept) == part["sha256"]


def download_wheels(kit: Path) -> list[str]:
    """The wheels of `WHEELS`, at the versions installed here, for the GPU machine's Python."""
    wheels = kit / "wheels"
    shutil.rmtree(wheels, ignore_errors=True)
    pins = [f"{name}=={importlib.metadata.version(name)}" for name in WHEELS]
    subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", *PLATFORM_ARGUMENTS,
                    "-d", str(wheels), *pins], check=True)
    return sorted(path.name for path in wheels.glob("*.whl"))


def pack(args, parser) -> int:
    if not args.data.is_file():
        parser.error(f"--data {args.data}: not a file")
    if not 0 < args.part_mib <= LARGEST_PART_MIB:  # also refuses nan
        parser.error(f"--part-mib {args.part_mib}: from over 0 to {LARGEST_PART_MIB}, to travel in one call")
    try:
        wheels = [] if args.no_wheels else download_wheels(args.kit)
        manifest = cut(args.data, args.kit, max(1, int(args.part_mib * 2**20)))
    except importlib.metadata.PackageNotFoundError as missing:
        print(f"device_kit: {missing} is not installed here: run this with the project's .venv/bin/python",
              file=sys.stderr)
        return 1
    except (subprocess.CalledProcessError, OSError) as error:
        print(f"device_kit: {error}", file=sys.stderr)
        return 1
    print(f"{args.kit}: {len(manifest['parts'])} parts of {manifest['name']}, wheels: {', '.join(wheels) or 'none'}")
    return 0


def unpack(args) -> int:
    try:
        print(join(args.kit, args.into))
    except PartsToCome as missing:
        print(f"device_kit: parts still to come: {missing}", file=sys.stderr)
        return PARTS_TO_COME
    except (ValueError, OSError) as error:
        print(f"device_kit: {error}", file=sys.stderr)
        return FAILED
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    packing = commands.add_parser("pack", help="here: the wheels and the data's parts into --kit")
    packing.add_argument("--data", type=Path, required=True, help="the file to carry (cifar-10-python.tar.gz)")
    packing.add_argument("--part-mib", type=float, default=56.0,
                         help="the largest part: each call carries one, with the repository and the wheels")
    packing.add_argument("--no-wheels", action="store_true", help="cut the data only")
    packing.add_argument("--kit", type=Path, default=KIT)
    unpacking = commands.add_parser("unpack", help="there: keep the parts that came; join them once all are there")
    unpacking.add_argument("--kit", type=Path, default=KIT)
    unpacking.add_argument("--into", type=Path, default=Path("/tmp/cnnlab-kit"))
    args = parser.parse_args(argv)
    return pack(args, parser) if args.command == "pack" else unpack(args)


if __name__ == "__main__":
    sys.exit(main())
