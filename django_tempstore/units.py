"""Byte counts for people, in binary units (KiB, MiB, GiB) everywhere."""

from __future__ import annotations

from django.utils.formats import number_format
from django.utils.translation import gettext as _

_UNITS = ("KiB", "MiB", "GiB", "TiB", "PiB")


def binary_size(size: int | float) -> str:
    """Format ``size`` bytes as ``"64 MiB"`` or ``"1.5 GiB"`` (powers of 1024, no-break space)."""
    value = float(size)
    if abs(value) < 1024:
        return _("%(size)d\xa0bytes") % {"size": int(value)}
    unit = 0
    value /= 1024
    while abs(value) >= 1024 and unit < len(_UNITS) - 1:
        value /= 1024
        unit += 1
    digits = 0 if value == int(value) else 1
    return f"{number_format(round(value, digits), digits)}\xa0{_UNITS[unit]}"
