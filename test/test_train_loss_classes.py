"""maximask-train --loss-classes with --train-only refinement-output: a fine-tune of some classes leaves
every other class's logits and training prior exactly as they were (what makes its thresholds reusable)."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np

from maximask.classes import ABBRS, INDEX

TINY = ["--batch-size", "2", "--tile", "32", "--edge-pad", "0", "--frame-size", "128",
        "--frames-per-chunk", "1", "--steps-per-chunk", "4", "--val-frames", "1",
        "--val-every", "100000", "--checkpoint-every", "100000", "--threads", "1", "--tile-size", "64",
        "--sim-config", json.dumps({"clean_prob": 0.0, "force": ["HP", "DP"], "star_density": [100, 101],
                                    "galaxy_density": [50, 51], "bright_star_density": [1, 1.01],
                                    "resample_prob": 0})]
ARCH = {"widths": [4, 8], "encoder_convs": [1, 1], "decoder_convs": [1], "refine": 2, "refine_hidden": 4}


def _train(run_dir, *extra):
    subprocess.run([sys.executable, "-m", "maximask.train", "--run-dir", str(run_dir), *TINY, *extra],
                   check=True, capture_output=True, timeout=600)


def _logits(net_dir, image):
    from maximask.network import Network

    return Network(str(net_dir)).predict_logits(image[None, ..., None])[0]


def test_only_the_named_classes_change(tmp_path):
    _train(tmp_path / "r0", "--steps", "8", "--lr", "1e-2", "--arch", json.dumps(ARCH), "--out", str(tmp_path / "n0"))
    _train(tmp_path / "r1", "--steps", "8", "--lr", "1e-1", "--init-from", str(tmp_path / "n0"),
           "--train-only", "refinement-output", "--loss-classes", "HP", "DP", "--seed", "7",
           "--out", str(tmp_path / "n1"))
    image = np.random.default_rng(0).normal(size=(64, 64)).astype(np.float32)
    image[20, 20], image[40, 40] = 30.0, -30.0
    z0, z1 = _logits(tmp_path / "n0", image), _logits(tmp_path / "n1", image)
    m0 = json.loads((tmp_path / "n0" / "metadata.json").read_text())
    m1 = json.loads((tmp_path / "n1" / "metadata.json").read_text())
    for c in ABBRS:
        i = INDEX[c]
        if c in ("HP", "DP"):
            assert not np.array_equal(z0[..., i], z1[..., i]), c
        else:
            assert np.array_equal(z0[..., i], z1[..., i]), c
            assert m1["training_priors"][i] == m0["training_priors"][i], c
    assert m1["extra"]["loss_pos_weight"]["CR"] == 1.0


def test_unknown_loss_class_or_missing_initial_network_is_refused(tmp_path):
    def run(*extra):
        return subprocess.run([sys.executable, "-m", "maximask.train", "--run-dir", str(tmp_path / "r"), *extra],
                              capture_output=True, text=True, timeout=120)

    r = run("--loss-classes", "HP", "XX", "--init-from", str(tmp_path))
    assert r.returncode != 0 and "unknown class(es) in --loss-classes: XX" in r.stderr
    r = run("--loss-classes", "HP")
    assert r.returncode != 0 and "--loss-classes needs --init-from NET_DIR" in r.stderr
    assert not (tmp_path / "r").exists()


def test_a_context_network_trains_every_layer_on_binned_frames(tmp_path):
    """``--bin B`` trains on binned frames (a context network); a network saved after a
    ``--train-only`` run (frozen layers) trains whole again when fine-tuned with the default
    ``--train-only all``."""
    _train(tmp_path / "r0", "--steps", "4", "--lr", "1e-2", "--arch", json.dumps(ARCH),
           "--out", str(tmp_path / "n0"))
    _train(tmp_path / "r1", "--steps", "4", "--init-from", str(tmp_path / "n0"), "--train-only",
           "refinement-output", "--loss-classes", "HP", "--out", str(tmp_path / "n1"))
    _train(tmp_path / "r2", "--steps", "4", "--init-from", str(tmp_path / "n1"), "--bin", "2",
           "--loss-classes", "NEB", "OV", "--out", str(tmp_path / "n2"))
    starts = {}
    for run in ("r0", "r1", "r2"):
        log = [json.loads(line) for line in (tmp_path / run / "log.jsonl").read_text().splitlines()]
        starts[run] = next(e for e in log if e["event"] == "start")
    assert starts["r1"]["trainable_params"] < starts["r0"]["trainable_params"]
    assert starts["r2"]["trainable_params"] == starts["r0"]["trainable_params"]
    meta = json.loads((tmp_path / "n2" / "metadata.json").read_text())
    assert meta["extra"]["bin"] == 2 and meta["extra"]["frame_size"] == 128


def test_a_fine_tuned_network_keeps_its_initial_networks_inference_entries(tmp_path):
    """``--init-from`` carries the initial network's context pass, block smoothing, dip (with its
    pair term), peak and hot-column scores into the export (its thresholds were chosen with them),
    except with ``--no-carry`` or ``--bin`` (a context network runs plain)."""
    _train(tmp_path / "r0", "--steps", "2", "--arch", json.dumps(ARCH), "--out", str(tmp_path / "n0"))
    path = tmp_path / "n0" / "metadata.json"
    meta = json.loads(path.read_text())
    entries = {"context": {"factor": 2, "classes": {"NEB": "mean"}, "without_pass": {"NEB": -0.5}},
               "smoothing": {"block": 16, "classes": ["FR"]},
               "dips": {"class": "DP", "slope": 1.5, "offset": -7.0, "min_dip": 1.0,
                        "pairs": {"slope": 2.5, "offset": -9.0}},
               "peaks": {"class": "HP", "slope": 1.5, "offset": -7.0, "min_dip": 1.0},
               "columns": {"class": "HCL", "gate_class": "SAT", "gate": -1.0, "slope": 0.9, "offset": -3.8,
                           "min_score": 3.0, "max_score": 30.0, "block": 64}}
    path.write_text(json.dumps(dict(meta, **entries)))
    for run, extra in (("carried", []), ("plain", ["--no-carry"]), ("binned", ["--bin", "2"])):
        _train(tmp_path / run, "--steps", "2", "--init-from", str(tmp_path / "n0"), *extra,
               "--out", str(tmp_path / f"n_{run}"))
    from maximask.network import Network

    carried = json.loads((tmp_path / "n_carried" / "metadata.json").read_text())
    assert {k: carried[k] for k in entries} == entries
    assert carried["extra"]["model_id"] == Network(tmp_path / "n_carried").model_id
    for run in ("plain", "binned"):
        meta = json.loads((tmp_path / f"n_{run}" / "metadata.json").read_text())
        assert not any(meta.get(k) for k in entries), run
        assert meta["extra"]["model_id"] == Network(tmp_path / f"n_{run}").model_id


def test_a_cosmic_ray_refinement_moves_the_cr_logit_alone(tmp_path):
    """``--arch '{"cr_refine": N}'`` grows a trained network by the cosmic-ray refinement, and
    ``--train-only cr-refinement --loss-classes CR`` trains it: the exported network (LiteRT, on
    strips) changes the CR logit and leaves every other class's logits and prior bit-identical."""
    _train(tmp_path / "r0", "--steps", "8", "--lr", "1e-2", "--arch", json.dumps(ARCH), "--out", str(tmp_path / "n0"))
    _train(tmp_path / "r1", "--steps", "8", "--lr", "1e-1", "--init-from", str(tmp_path / "n0"),
           "--arch", json.dumps({"cr_refine": 2, "cr_hidden": 3}), "--train-only", "cr-refinement",
           "--loss-classes", "CR", "--seed", "7", "--out", str(tmp_path / "n1"))
    image = np.random.default_rng(1).normal(size=(64, 64)).astype(np.float32)
    image[20, 20:24] = 40.0
    z0, z1 = _logits(tmp_path / "n0", image), _logits(tmp_path / "n1", image)
    m0 = json.loads((tmp_path / "n0" / "metadata.json").read_text())
    m1 = json.loads((tmp_path / "n1" / "metadata.json").read_text())
    assert not np.array_equal(z0[..., INDEX["CR"]], z1[..., INDEX["CR"]])
    others = [INDEX[c] for c in ABBRS if c != "CR"]
    assert np.array_equal(z0[..., others], z1[..., others])
    assert [m1["training_priors"][i] for i in others] == [m0["training_priors"][i] for i in others]
    assert m1["extra"]["architecture"]["cr_refine"] == 2
    log = [json.loads(line) for line in (tmp_path / "r1" / "log.jsonl").read_text().splitlines()]
    assert sorted(next(e for e in log if e["event"] == "init")["fresh_layers"]) == ["cr_local", "cr_mix", "cr_out"]
    # 5x5 x 2 + 2, (14 + 2 + 2) x 3 + 3, 3 + 1
    assert next(e for e in log if e["event"] == "start")["trainable_params"] == 52 + 57 + 4


def test_class_weight_parses_and_refuses_malformed_entries(tmp_path):
    import pytest

    from maximask.train import class_emphasis

    assert class_emphasis(None) == {}
    assert class_emphasis(["CR=4", "FR=0.5"]) == {"CR": 4.0, "FR": 0.5}
    for bad in ("XX=2", "CR", "CR=0", "CR=-1", "CR=nan", "CR=inf", "CR=two"):
        with pytest.raises(SystemExit, match="--class-weight"):
            class_emphasis([bad])
    r = subprocess.run([sys.executable, "-m", "maximask.train", "--run-dir", str(tmp_path / "r"),
                        "--class-weight", "CR=0"], capture_output=True, text=True, timeout=120)
    assert r.returncode != 0 and "--class-weight 'CR=0'" in r.stderr
    assert not (tmp_path / "r").exists()


def test_class_weight_multiplies_that_class_loss_only():
    from maximask.train import _loss_class

    bce = _loss_class()
    rng = np.random.default_rng(1)
    y_true = (rng.random((2, 8, 8, len(ABBRS))) < 0.3).astype(np.float32)
    y_pred = rng.normal(size=y_true.shape).astype(np.float32)
    weights = [1.0] * len(ABBRS)
    emphasis = list(weights)
    emphasis[INDEX["CR"]] = 4.0
    plain = np.asarray(bce(weights, weights).call(y_true, y_pred))
    heavy = np.asarray(bce(weights, emphasis).call(y_true, y_pred))
    only_cr = np.asarray(bce(weights, [float(c == "CR") for c in ABBRS]).call(y_true, y_pred))
    np.testing.assert_allclose(heavy, plain + 3.0 * only_cr, rtol=1e-5)
