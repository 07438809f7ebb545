"""``{% load tempstore %}``: sizes in binary units in templates."""

from __future__ import annotations

from django import template

from django_tempstore.units import binary_size as _binary_size

register = template.Library()


@register.filter
def binary_size(value: int | float | None) -> str:
    """``{{ size|binary_size }}``: ``"64 MiB"``; empty for None."""
    return "" if value is None else _binary_size(value)
