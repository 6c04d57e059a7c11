"""Writing a benchmark's results (shared by the scripts of this directory, which run it as a script)."""

from __future__ import annotations

import json
from pathlib import Path


def write_json(path, result: dict) -> None:
    """Write ``result`` as indented JSON to ``path``, creating its directory."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=1) + "\n")

