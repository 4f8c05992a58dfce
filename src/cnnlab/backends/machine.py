"""What a result was measured on: library versions, CPU, accelerators. Recorded with every run's metrics."""

from __future__ import annotations

import platform
import sys
from importlib import metadata

from cnnlab.backends.engine import detect_devices
from cnnlab.common.cores import usable_cores


def library_versions() -> dict[str, str]:
    import keras

    from cnnlab import __version__

    versions = {"cnnlab": __version__, "python": platform.python_version(), "keras": keras.__version__,
                "backend": keras.backend.backend()}
    for package in ("tensorflow", "jax", "torch", "numpy"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            pass
    return versions


def hardware() -> dict[str, object]:
    return {
        "cpu": cpu_model(),
        "cpu_cores": usable_cores(),
        "native_bfloat16": native_bfloat16(),
        "platform": f"{platform.system()} {platform.machine()}",
        "accelerators": accelerators(),
    }


BFLOAT16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")  # x86 instructions that compute in bfloat16 natively


def _cpuinfo_field(name: str, cpuinfo: str = "/proc/cpuinfo") -> str | None:
    """The first `name : value` line of Linux's CPU description; None elsewhere."""
    try:
        with open(cpuinfo, encoding="utf-8") as handle:
            for line in handle:
                if line.startswith(name):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def cpu_flags(cpuinfo: str = "/proc/cpuinfo") -> set[str]:
    """The CPU's feature flags as Linux reports them; empty elsewhere."""
    return set((_cpuinfo_field("flags", cpuinfo) or "").split())


def native_bfloat16(flags: set[str] | None = None) -> bool:
    """True where bfloat16 math is native and fast; elsewhere it is emulated and slower than float32."""
    flags = cpu_flags() if flags is None else flags
    return any(flag in flags for flag in BFLOAT16_CPU_FLAGS)


def cpu_model() -> str:
    return _cpuinfo_field("model name") or platform.processor() or platform.machine() or "unknown"


def accelerators() -> list[str]:
    """The accelerators the active Keras backend sees (none: a CPU-only run), as its engine lists them."""
    try:
        devices = detect_devices()
    except Exception as exc:  # a broken driver must not lose a finished run's metrics
        print(f"warning: could not list accelerators ({exc})", file=sys.stderr)
        return []
    return [] if devices.kind == "cpu" else list(devices.names)
