"""What every benchmark prints: the machine it ran on, and plain-text tables."""

from __future__ import annotations

import os
import platform

import detflow

__all__ = ["machine", "table"]


def machine() -> str:
    """``nproc``, the CPU model, the Python version and detflow's, for the record."""
    model = platform.processor() or "unknown CPU"
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return (
        f"{cpus} CPUs ({model}), Python {platform.python_version()} "
        f"({platform.python_implementation()}), detflow {detflow.__version__}"
    )


def table(header: list[str], rows: list[list[str]], left: int = 1) -> list[str]:
    """The lines of a table: the first ``left`` columns left-aligned, the others right.

    >>> print("\\n".join(table(["name", "n"], [["a", "10"]])))
    name   n
    ----  --
    a     10
    """
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        pairs = enumerate(zip(cells, widths, strict=True))
        return "  ".join(c.ljust(w) if i < left else c.rjust(w) for i, (c, w) in pairs)

    return [line(header), "  ".join("-" * w for w in widths), *(line(r) for r in rows)]
