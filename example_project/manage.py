#!/usr/bin/env python3
"""The example project's command line: ``python3 example_project/manage.py demo``."""

import os
import sys
from pathlib import Path

if __name__ == "__main__":
    # Runs from any directory, so the README's command works from the repository root.
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "example.settings")
    from django.core.management import execute_from_command_line

    execute_from_command_line(sys.argv)
