"""The memory cap: how much memory a run, an analysis or a checkpoint may ask for, and the one
line that refuses more (docs/design.md §4, "Memory cap").

A config says how big everything it builds is, so an absurd one (``--width 65536 --n 100000``
wants half a terabyte) can be refused *before* anything is allocated or any folder is made. Each
model kind estimates its own sizes (:meth:`dufm_core.kinds.base.ModelKind.memory_estimate` and
friends) as a :class:`MemoryEstimate` of named parts; this module owns the cap and the wording.

The cap is ``$DUFM_MEMORY_CAP`` when set (``8G``, ``512M``, ``1.5GB``, ``4GiB`` or a number of
bytes; k/M/G/T are powers of 1000, KiB/MiB/GiB/TiB powers of 1024), else
:data:`DEFAULT_FRACTION` of this machine's physical memory. Sizes are shown in powers of 1000
(``524 GB``). This module is at the bottom of the engine: it imports only the config's error type.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass

from dufm_core.config import ConfigError

CAP_ENV = "DUFM_MEMORY_CAP"
DEFAULT_FRACTION = 0.5  # of the physical memory, when $DUFM_MEMORY_CAP is not set
FALLBACK_MEMORY = 8 * 10**9  # assumed physical memory where os.sysconf cannot tell
_UNITS = {"": 1, "b": 1, "k": 10**3, "m": 10**6, "g": 10**9, "t": 10**12,
          "ki": 2**10, "mi": 2**20, "gi": 2**30, "ti": 2**40}
_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]i?)?b?\s*$", re.IGNORECASE)


class MemoryCapError(ConfigError):
    """A config needs more memory than the cap; ``field`` names the fields that set the size
    of its largest part (e.g. ``width × n``)."""


@dataclass(frozen=True)
class Part:
    """One named part of an estimate: its size in bytes and the config fields that set it."""

    name: str
    nbytes: int
    fields: str


@dataclass(frozen=True)
class MemoryEstimate:
    """What one piece of work (``what``: "this run", "the analysis", ...) needs, part by part."""

    what: str
    parts: tuple[Part, ...]

    @property
    def total(self) -> int:
        """The sum of the parts, in bytes (a Python int: never overflows)."""
        return sum(p.nbytes for p in self.parts)

    def largest(self) -> Part:
        """The biggest part (the one the error names the fields of)."""
        return max(self.parts, key=lambda p: p.nbytes)

    def describe(self, most: int = 4) -> str:
        """``about 524 GB (features H_1 524 GB, weights 4.3 GB, ...)``: the total and its
        ``most`` biggest non-empty parts."""
        parts = sorted((p for p in self.parts if p.nbytes > 0), key=lambda p: -p.nbytes)
        shown = ", ".join(f"{p.name} {format_bytes(p.nbytes)}" for p in parts[:most])
        more = ", ..." if len(parts) > most else ""
        return f"about {format_bytes(self.total)} ({shown}{more})"


def numel(shape: Iterable[int]) -> int:
    """Number of entries of a tensor of ``shape`` (exact: Python ints do not overflow)."""
    return math.prod(int(d) for d in shape)


def format_bytes(n: int | float) -> str:
    """Bytes in powers of 1000 with 2 significant digits: ``524 GB``, ``4.3 GB``, ``12 MB``."""
    n = float(n)
    for unit, size in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= size:
            value = n / size
            return f"{value:.2g} {unit}" if value < 10 else f"{value:.0f} {unit}"
    return f"{n:.0f} B"


def parse_size(text: str, name: str = CAP_ENV) -> int:
    """A size such as ``8G``, ``512M``, ``1.5GB``, ``4GiB`` or ``123456`` (bytes) → bytes;
    ConfigError naming ``name`` for anything else (zero and negative sizes included)."""
    m = _SIZE_RE.match(text or "") if len(text or "") <= 40 else None
    value = int(float(m.group(1)) * _UNITS[(m.group(2) or "").lower()]) if m else 0
    if value <= 0:
        shown = text if len(text) <= 40 else text[:40] + "…"
        raise ConfigError(name, f"must be a size such as 8G, 512M, 4GiB or a number of bytes "
                                f"(got {shown!r})")
    return value


def physical_memory() -> int:
    """This machine's physical memory in bytes (``os.sysconf``; a fallback where unknown)."""
    try:
        pages, page = os.sysconf("SC_PHYS_PAGES"), os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):
        return FALLBACK_MEMORY
    return pages * page if pages > 0 and page > 0 else FALLBACK_MEMORY


def memory_cap() -> tuple[int, str]:
    """(cap in bytes, where it comes from, in words for the error line)."""
    text = os.environ.get(CAP_ENV)
    if text is not None and text.strip():
        return parse_size(text), CAP_ENV
    total = physical_memory()
    return (int(total * DEFAULT_FRACTION),
            f"{DEFAULT_FRACTION:.0%} of this machine's {format_bytes(total)}; set {CAP_ENV} "
            "to change it")


def check(estimate: MemoryEstimate) -> MemoryEstimate:
    """Return ``estimate`` when it fits under the cap, else raise :class:`MemoryCapError` with
    one line: what needs how much, its biggest parts, and the cap with its source."""
    cap, source = memory_cap()
    if estimate.total <= cap:
        return estimate
    raise MemoryCapError(
        estimate.largest().fields,
        f"{estimate.what} needs {estimate.describe()}, more than the memory cap "
        f"{format_bytes(cap)} ({source})",
    )
