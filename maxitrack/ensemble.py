"""An ensemble of maxitrack networks exported as one network.

Networks trained with the same settings differ by about 0.01 in frame AUC from one run to the
next (docs/MAXITRACK.md), so their errors are partly independent and the mean of their tile logits
can beat each of them. One Keras model holds the members side by side on the same input and
outputs the mean of their tile logits; it is exported as one LiteRT model with
:func:`maximask.network.save_network`, so the command runs it as any other network (the tile
selection, normalisation and autocorrelation are computed once). The calibration is fitted anew,
as ``maxitrack-train`` fits it, on cached validation frames (a ``maxitrack-train`` work
directory's ``data/*.npz`` chunks).

Usage::

    python -m maxitrack.ensemble --member NET --member NET [...] \\
        --frames 'WORK/data/val_s1_1024x2048_t128_n12_*.npz' --out DIR
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

import numpy as np

#: Metadata that every member must share: what the command computes before the network.
SHARED = ("tile_size", "normalisation", "output")
SHARED_EXTRA = ("tiles", "input", "tile_fingerprint", "aggregation")


def build_ensemble(members: list, name: str = "maxitrack_ensemble"):
    """One Keras model whose output is the mean of the members' outputs on the same input.

    Parameters
    ----------
    members : list of keras.Model
        Tile networks with the same input shape; each gets a unique name (``member_i``).
    name : str

    Returns
    -------
    keras.Model
    """
    import keras

    if len(members) < 2:
        raise ValueError("an ensemble needs at least two members")
    inp = keras.Input(tuple(members[0].inputs[0].shape[1:]), name="tile")
    outs = []
    for i, m in enumerate(members):
        m.name = f"member_{i}"
        outs.append(m(inp))
    return keras.Model(inp, keras.layers.Average(name="mean_logit")(outs), name=name)


def check_members(metas: list, nets: list) -> None:
    """SystemExit naming the first member whose tile preparation differs from the first one's."""
    ref = metas[0]
    for net, meta in zip(nets[1:], metas[1:]):
        for key in SHARED:
            if meta[key] != ref[key]:
                raise SystemExit(f"maxitrack.ensemble: error: {net}: its {key} differs from {nets[0]}'s")
        for key in SHARED_EXTRA:
            if meta["extra"].get(key) != ref["extra"].get(key):
                raise SystemExit(f"maxitrack.ensemble: error: {net}: its {key} differs from {nets[0]}'s")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m maxitrack.ensemble", description=__doc__.split("\n\n")[0])
    ap.add_argument("--member", action="append", required=True, help="network directory (repeat)")
    ap.add_argument("--frames", required=True, help="glob of cached validation chunks for the calibration")
    ap.add_argument("--out", required=True, help="network directory to write")
    args = ap.parse_args(argv)

    import keras

    from maximask.network import NetworkMetadata, save_network
    from maxitrack.model import custom_objects
    from maxitrack.train import calibrate, frame_mean_logits, load_cached_frames, network_inputs

    metas = []
    for net in args.member:
        path = Path(net) / "metadata.json"
        if not path.is_file():
            raise SystemExit(f"maxitrack.ensemble: error: {net}: not a network directory (no metadata.json)")
        metas.append(json.loads(path.read_text()))
    check_members(metas, args.member)
    members = [keras.models.load_model(Path(net) / "model.keras", custom_objects=custom_objects())
               for net in args.member]
    model = build_ensemble(members)

    data = load_cached_frames(args.frames)
    z = model.predict(network_inputs(data["tiles"], metas[0]["extra"]["input"]), batch_size=256, verbose=0).ravel()
    frames, mean_z = frame_mean_logits(z, data["frame"])
    y = np.array([data["labels"][int(f)] for f in frames])
    calibration, auc, loss = calibrate(mean_z, y, f"{len(frames)} cached validation frames ({args.frames})")
    print(f"calibration {calibration}; frame AUC {auc:.4f}, log-loss {loss:.4f}")

    ref = metas[0]
    ids = [m["extra"].get("model_id") for m in metas]
    extra = {key: ref["extra"][key] for key in SHARED_EXTRA if key in ref["extra"]}
    extra.update(
        calibration=calibration,
        loss=ref["extra"].get("loss"),
        ensemble={"members": ids, "combination": "mean of the members' tile logits"},
        training_command="python -m maxitrack.ensemble " + " ".join(shlex.quote(a) for a in (sys.argv[1:] if argv is None else argv)),
        members_data=[m["extra"].get("data") for m in metas],
        members_training_commands=[m["extra"].get("training_command") for m in metas],
    )
    meta = NetworkMetadata(
        name=ref["name"],
        classes=ref["classes"],
        # the members' priors differ by about 0.01 (their training frames are ~51 % positive)
        training_priors=[float(np.mean([m["training_priors"][0] for m in metas]))],
        margin=ref["margin"],
        tile_size=ref["tile_size"],
        size_multiple=ref["size_multiple"],
        normalisation=ref["normalisation"],
        output=ref["output"],
        extra=extra,
    )
    model_id = save_network(model, args.out, meta)
    print(f"exported to {args.out} (model id {model_id}; members {', '.join(str(i) for i in ids)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
