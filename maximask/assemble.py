"""Assembling a shipped network directory from trained parts.

``maximask-train`` writes one network per run. The shipped directory can hold a second one, the
*context network*: a network fine-tuned on binned frames (``maximask-train --bin B``) that the
context pass runs on the binned frame instead of the main network (see :mod:`maximask.context`).
This module installs it, so that the shipped directory is rebuilt by a command, not by hand::

    python -m maximask.assemble context tensorflow_models/maximask runs/ctxnet/net \
        --classes NEB=mean OV=mean BBG=coarse --network-classes NEB OV

Only what inference reads is installed (``model.tflite``, ``refine.tflite``, ``metadata.json``):
the Keras copy, which only fine-tuning needs, would double the shipped weights.

:func:`carry_inference` gives a fine-tuned network (``maximask-train --init-from``) the inference
entries of the network it started from, context network included.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

from .context import MODES, ContextPass
from .network import INFERENCE_ENTRIES, METADATA_FILE, MODEL_FILE, REFINE_FILE, Network

#: Subdirectory of the shipped network that holds its context network.
CONTEXT_DIR = "context"


def install_context_network(net_dir, context_net_dir, modes: dict, network_classes=None,
                            name: str = CONTEXT_DIR) -> dict:
    """Install a context network in a network directory and point its context pass at it.

    Parameters
    ----------
    net_dir : path
        The network directory (its metadata must describe a context pass: its factor is kept).
    context_net_dir : path
        A network directory written by ``maximask-train --bin B --out DIR``, with B the context
        pass's factor.
    modes : dict
        ``{class: "mean" | "coarse"}``: the classes the context pass sets, and how.
    network_classes : list of str, optional
        Those of the classes whose binned logits come from the context network; the others' come
        from the network itself, run on the same binned frame. Default: all of them.
    name : str
        Subdirectory name of the context network inside ``net_dir``.

    Returns
    -------
    dict
        The new ``context`` metadata entry.

    Raises
    ------
    ValueError
        No context pass in ``net_dir``, a context network trained on another binning, or an
        unknown class or mode. Nothing is written then.
    """
    net_dir, context_net_dir = Path(net_dir), Path(context_net_dir)
    meta = json.loads((net_dir / METADATA_FILE).read_text())
    context = meta.get("context")
    if not context:
        raise ValueError(f"{net_dir}: the network has no context pass to give a context network")
    inner = json.loads((context_net_dir / METADATA_FILE).read_text())
    trained_bin = (inner.get("extra") or {}).get("bin", 1)
    if trained_bin != context["factor"]:
        raise ValueError(f"{context_net_dir}: trained on frames binned {trained_bin} x {trained_bin}, "
                         f"the context pass bins {context['factor']} x {context['factor']}")
    new_context = {"factor": context["factor"], "classes": dict(modes), "network": name}
    if network_classes is not None and list(network_classes) != list(modes):
        new_context["network_classes"] = list(network_classes)
    try:
        ContextPass.from_metadata(new_context, meta["classes"])  # checks the classes, modes and name
    except ValueError as exc:
        raise ValueError(f"{net_dir}: {exc}") from None
    for entry in INFERENCE_ENTRIES:  # the context network runs plain, whatever it was trained from
        inner.pop(entry, None)

    _install_inference_files(context_net_dir, inner, net_dir / name)
    meta["context"] = new_context
    _write_metadata(net_dir, meta)
    return new_context


def carry_inference(source_dir, net_dir) -> list:
    """Give a fine-tuned network the inference entries of the network it was fine-tuned from.

    The context pass (with its context network, copied), the block smoothing, the dip score, the
    hot-column score and the peak score are set on validation frames for the shipped network, and
    its thresholds were chosen with them; a network fine-tuned from it keeps them unless told
    otherwise (``maximask-train --no-carry``).

    Parameters
    ----------
    source_dir : path
        The network fine-tuned from (``--init-from``).
    net_dir : path
        The fine-tuned network's directory (``--out``).

    Returns
    -------
    list of str
        The entries carried over (empty: the source has none, and nothing is written).

    Raises
    ------
    ValueError
        The two networks have different classes.
    """
    source_dir, net_dir = Path(source_dir), Path(net_dir)
    source = json.loads((source_dir / METADATA_FILE).read_text())
    if source["classes"] != json.loads((net_dir / METADATA_FILE).read_text())["classes"]:
        raise ValueError(f"{net_dir}: its classes differ from those of {source_dir}")
    carried = [entry for entry in INFERENCE_ENTRIES if source.get(entry)]
    if not carried:
        return []
    name = (source.get("context") or {}).get("network")
    if name:
        inner = json.loads((source_dir / name / METADATA_FILE).read_text())
        _install_inference_files(source_dir / name, inner, net_dir / name)

    def carry(doc):
        for entry in carried:
            doc[entry] = source[entry]
        doc["extra"] = dict(doc.get("extra") or {}, inference_carried_from=str(source_dir))

    update_metadata(net_dir, carry)
    return carried


def update_metadata(net_dir, update) -> str:
    """Apply ``update(doc)`` to a network directory's metadata and record its new model id.

    Inference entries change the outputs, so the model id: it is computed by loading the updated
    directory (which also checks it) and stored as ``extra.model_id``. Each write replaces the
    file in one step.

    Parameters
    ----------
    net_dir : path
    update : callable
        Changes the metadata dict in place.

    Returns
    -------
    str
        The new model id.
    """
    net_dir = Path(net_dir)
    meta = json.loads((net_dir / METADATA_FILE).read_text())
    update(meta)
    _write_metadata(net_dir, meta)
    meta.setdefault("extra", {})["model_id"] = model_id = Network(net_dir, num_threads=1).model_id
    _write_metadata(net_dir, meta)
    return model_id


def _install_inference_files(src_dir: Path, meta: dict, dest: Path) -> None:
    """Install a network's inference files, with metadata ``meta``, as directory ``dest``: staged
    and loaded first, so that a directory the engine cannot run is never installed."""
    staging = dest.with_name(f".{dest.name}.new")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    files = [MODEL_FILE] + ([meta["refinement"].get("file", REFINE_FILE)] if meta.get("refinement") else [])
    for file in files:
        shutil.copy2(src_dir / file, staging / file)
    (staging / METADATA_FILE).write_text(json.dumps(meta, indent=2) + "\n")
    Network(staging, num_threads=1)
    shutil.rmtree(dest, ignore_errors=True)
    staging.rename(dest)


def _write_metadata(net_dir: Path, meta: dict) -> None:
    """Replace a network directory's metadata in one step."""
    tmp = net_dir / f".{METADATA_FILE}.new"
    tmp.write_text(json.dumps(meta, indent=2) + "\n")
    tmp.replace(net_dir / METADATA_FILE)


def main(argv=None):
    """``python -m maximask.assemble context NET_DIR CONTEXT_NET_DIR --classes CLASS=MODE ...``."""
    p = argparse.ArgumentParser(prog="python -m maximask.assemble", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="what", required=True)
    c = sub.add_parser("context", help="install a context network (maximask-train --bin) in NET_DIR")
    c.add_argument("net_dir")
    c.add_argument("context_net_dir")
    c.add_argument("--classes", nargs="+", required=True, metavar="CLASS=MODE",
                   help=f"classes the context pass sets and their mode ({' or '.join(MODES)})")
    c.add_argument("--network-classes", nargs="+", metavar="CLASS",
                   help="the classes the context network gives (default: all of --classes); the others "
                        "come from NET_DIR's own network on the binned frame")
    c.add_argument("--name", default=CONTEXT_DIR, help="subdirectory name (default %(default)s)")
    args = p.parse_args(argv)
    modes = dict(item.split("=", 1) if "=" in item else (item, "") for item in args.classes)
    try:
        context = install_context_network(args.net_dir, args.context_net_dir, modes, args.network_classes,
                                          args.name)
    except (ValueError, OSError) as exc:
        print(f"python -m maximask.assemble: error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(context))
    return 0


if __name__ == "__main__":
    sys.exit(main())
