"""Writing a benchmark's results (shared by the scripts of this directory, which run it as a script)."""

from __future__ import annotations

import json
from pathlib import Path


def write_json(path, result: dict) -> None:
    """Write ``result`` as indented JSON to ``path``, creating its directory."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=1) + "\n")


def update_network_metadata(net_dir, update) -> str:
    """Apply ``update(doc)`` to the network's metadata.json and record the new model id in it.

    The entries a fit writes change the outputs, so the model id: it is computed by loading the
    updated network, then stored as ``extra.model_id``. Returns it.
    """
    from maximask.network import Network

    path = Path(net_dir) / "metadata.json"
    doc = json.loads(path.read_text())
    update(doc)
    path.write_text(json.dumps(doc, indent=2) + "\n")
    doc.setdefault("extra", {})["model_id"] = model_id = Network(net_dir).model_id
    path.write_text(json.dumps(doc, indent=2) + "\n")
    return model_id
