"""Tracked, bounded, atomically persisted temp files for Django uploads."""

from __future__ import annotations

__version__ = "0.1.0"
