"""What every benchmark does with its measurements: ``--json``/``--out`` FILE, one format.

The benchmarks import it as ``benchmarks.results`` (each puts the repository on
``sys.path`` first, so they run from anywhere without an install).
"""

from __future__ import annotations

import json
from pathlib import Path


def write_results(path: Path | None, results) -> None:
    """``results`` as JSON (indent 1, a final newline) in ``path``, its folder made if missing; no path, no file."""
    if path:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(results, indent=1) + "\n")
