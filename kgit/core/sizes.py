"""Byte sizes as people read them: the one formatter of a size kgit shows (progress bars, the upload
line of a push, ``kgit show``, ``kgit get``, the report, the limits named in error messages).

Decimal units, as DVC's and kgit's progress bars count them (1 kB = 1,000 bytes): ``512 B``,
``1.5 kB``, ``12.1 MB``, ``3.0 GB``, ``1.2 TB``.
"""

from __future__ import annotations

UNITS = ("B", "kB", "MB", "GB", "TB")
STEP = 1000


def human_size(n: object, missing: str = "?") -> str:
    """``n`` bytes in the largest unit that keeps it under 1,000 (bytes whole, the rest to one
    decimal); ``missing`` when ``n`` is not a number (a size a record does not carry)."""
    if isinstance(n, bool) or not isinstance(n, (int, float)):
        return missing
    value = float(n)
    for unit in UNITS[:-1]:
        if abs(value) < STEP:
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= STEP
    return f"{value:.1f} {UNITS[-1]}"
