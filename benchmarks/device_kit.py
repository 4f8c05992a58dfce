"""What a lent GPU machine needs to train cnnlab (the `device` tool of this workplace), carried in pieces.

    .venv/bin/python benchmarks/device_kit.py pack --data ../shared/datasets/cifar-10-python.tar.gz   # here
    python3 benchmarks/device_kit.py unpack                                                          # there

That machine has CUDA, JAX and PyTorch but no Keras and no data, and each call to it carries at most 64 MiB of files,
the repository included. `pack` fills `.kit/` (ignored by git): the wheels of Keras and of what Keras needs that
the machine lacks (`pip download`, for its Python), and the data archive cut into parts small enough to travel one
a call, with a manifest of their SHA-256 sums. `unpack`, run there in every call, moves the parts that came into a
folder outside the repository (kept while the machine stays warm), and once all have come joins them, checks the
whole archive's sum and prints its path; until then it prints which parts are missing and exits 3. CONTRIBUTING.md
("On a lent GPU") gives the calls in order.
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
# Keras and what it needs beyond what the GPU machine's image holds (absl-py, numpy, rich, h5py, ml-dtypes and
# packaging are there, as are cnnlab's own needs: device/KINDS.md of the tool library lists the image's packages)
WHEELS = ("keras", "namex", "optree")
# The machine's Python (3.12) and platform, as the device tool's README says to ask pip for them
PLATFORM_ARGUMENTS = ["--only-binary=:all:", "--python-version", "3.12", "--implementation", "cp"] + [
    argument for tag in ("manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_17_x86_64",
                         "manylinux2014_x86_64", "manylinux1_x86_64") for argument in ("--platform", tag)]
MISSING_PARTS = 3  # unpack's exit status while parts are still to come


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def cut(data: Path, kit: Path, part_bytes: int) -> dict:
    """Cut `data` into `kit`/parts/NAME.partNN of at most `part_bytes` each; returns the manifest, also written."""
    parts_dir = kit / "parts"
    shutil.rmtree(parts_dir, ignore_errors=True)
    parts_dir.mkdir(parents=True)
    parts = []
    with open(data, "rb") as stream:
        for index, block in enumerate(iter(lambda: stream.read(part_bytes), b"")):
            part = parts_dir / f"{data.name}.part{index:02d}"
            part.write_bytes(block)
            parts.append({"name": part.name, "sha256": hashlib.sha256(block).hexdigest()})
    manifest = {"name": data.name, "bytes": data.stat().st_size, "sha256": sha256(data), "parts": parts}
    (kit / MANIFEST).write_text(json.dumps(manifest, indent=2), encoding="utf-8")
    return manifest


def join(kit: Path, into: Path) -> Path:
    """Move the parts that came (`kit`/parts) into `into`, checking each; once all are there, the joined archive
    (checked whole). Raises LookupError naming the parts still missing, ValueError for a damaged one."""
    manifest = json.loads((kit / MANIFEST).read_text(encoding="utf-8"))
    whole = into / manifest["name"]
    if whole.is_file() and sha256(whole) == manifest["sha256"]:
        return whole
    (into / "parts").mkdir(parents=True, exist_ok=True)
    for part in manifest["parts"]:
        arrived = kit / "parts" / part["name"]
        if arrived.is_file():
            if sha256(arrived) != part["sha256"]:
                raise ValueError(f"{arrived}: damaged (its SHA-256 is not the manifest's)")
            shutil.copyfile(arrived, into / "parts" / part["name"])
    missing = [part["name"] for part in manifest["parts"] if not (into / "parts" / part["name"]).is_file()]
    if missing:
        raise LookupError(", ".join(missing))
    partial = whole.with_name(whole.name + ".joining")
    with open(partial, "wb") as out:
        for part in manifest["parts"]:
            with open(into / "parts" / part["name"], "rb") as stream:
                shutil.copyfileobj(stream, out)
    if sha256(partial) != manifest["sha256"]:
        partial.unlink()
        raise ValueError(f"{whole.name}: the joined parts do not make the archive packed (SHA-256 differs)")
    partial.replace(whole)
    shutil.rmtree(into / "parts")
    return whole


def download_wheels(kit: Path) -> list[str]:
    """The wheels of `WHEELS`, at the versions installed here, for the GPU machine's Python."""
    wheels = kit / "wheels"
    shutil.rmtree(wheels, ignore_errors=True)
    pins = [f"{name}=={importlib.metadata.version(name)}" for name in WHEELS]
    subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", *PLATFORM_ARGUMENTS,
                    "-d", str(wheels), *pins], check=True)
    return sorted(path.name for path in wheels.glob("*.whl"))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    pack = commands.add_parser("pack", help="here: the wheels and the data's parts into --kit")
    pack.add_argument("--data", type=Path, required=True, help="the file to carry (cifar-10-python.tar.gz)")
    pack.add_argument("--part-mib", type=float, default=56.0,
                      help="the largest part: each call carries one, with the repository and the wheels (64 MiB)")
    pack.add_argument("--no-wheels", action="store_true", help="cut the data only")
    pack.add_argument("--kit", type=Path, default=KIT)
    unpack = commands.add_parser("unpack", help="there: keep the parts that came; join them once all have")
    unpack.add_argument("--kit", type=Path, default=KIT)
    unpack.add_argument("--into", type=Path, default=Path("/tmp/cnnlab-kit"))
    args = parser.parse_args(argv)
    if args.command == "pack":
        if not args.data.is_file():
            parser.exit(2, f"device_kit: {args.data}: no such file\n")
        manifest = cut(args.data, args.kit, int(args.part_mib * 2**20))
        wheels = [] if args.no_wheels else download_wheels(args.kit)
        print(f"{args.kit}: {len(manifest['parts'])} parts of {manifest['name']}, wheels: {', '.join(wheels) or 'none'}")
        return 0
    try:
        print(join(args.kit, args.into))
    except LookupError as missing:
        print(f"device_kit: parts still to come: {missing}", file=sys.stderr)
        return MISSING_PARTS
    except (ValueError, FileNotFoundError) as error:
        print(f"device_kit: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
