"""Installing a context network in a network directory (``python -m maximask.assemble``)."""

import dataclasses
import json
import shutil

import pytest

from maximask.assemble import carry_inference, install_context_network, main
from maximask.network import Network, NetworkMetadata, save_network


@pytest.fixture
def parts(tmp_path, test_net, test_net_dir):
    """A copy of the test network with a context pass (factor 2), and a 'trained' context network
    (the test network's weights, saved with ``extra.bin`` = 2 and a context pass of its own, which
    installing drops)."""
    net_dir = tmp_path / "net"
    shutil.copytree(test_net_dir, net_dir)
    meta = json.loads((net_dir / "metadata.json").read_text())
    meta["context"] = {"factor": 2, "classes": {"NEB": "mean"}}
    (net_dir / "metadata.json").write_text(json.dumps(meta))
    trained = tmp_path / "trained"
    inner = NetworkMetadata.from_dict(json.loads((test_net_dir / "metadata.json").read_text()))
    save_network(test_net.model, trained, dataclasses.replace(inner, extra={"bin": 2}))
    inner = json.loads((trained / "metadata.json").read_text())
    inner["context"] = {"factor": 2, "classes": {"NEB": "mean"}}
    (trained / "metadata.json").write_text(json.dumps(inner))
    return net_dir, trained


def test_installed_context_network_is_what_the_context_pass_runs(parts):
    net_dir, trained = parts
    before = Network(net_dir).model_id
    context = install_context_network(net_dir, trained, {"NEB": "mean", "OV": "coarse"})
    assert context == {"factor": 2, "classes": {"NEB": "mean", "OV": "coarse"}, "network": "context"}
    assert json.loads((net_dir / "metadata.json").read_text())["context"] == context
    assert sorted(p.name for p in (net_dir / "context").iterdir()) == ["metadata.json", "model.tflite"]
    assert "context" not in json.loads((net_dir / "context" / "metadata.json").read_text())
    net = Network(net_dir)
    assert net.context_network is not net and net.model_id != before
    assert not [p for p in net_dir.iterdir() if p.name.startswith(".")]  # no staging left


def test_context_network_of_another_binning_or_no_context_pass_is_refused(parts, tmp_path):
    net_dir, trained = parts
    original = (net_dir / "metadata.json").read_text()
    inner = json.loads((trained / "metadata.json").read_text())
    inner["extra"]["bin"] = 4
    (trained / "metadata.json").write_text(json.dumps(inner))
    with pytest.raises(ValueError, match="trained on frames binned 4 x 4, the context pass bins 2 x 2"):
        install_context_network(net_dir, trained, {"NEB": "mean"})
    assert (net_dir / "metadata.json").read_text() == original and not (net_dir / "context").exists()
    meta = json.loads(original)
    del meta["context"]
    (net_dir / "metadata.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="no context pass"):
        install_context_network(net_dir, trained, {"NEB": "mean"})


def test_command_line_rejects_an_unknown_mode_with_one_line(parts, capsys):
    net_dir, trained = parts
    original = (net_dir / "metadata.json").read_text()
    assert main(["context", str(net_dir), str(trained), "--classes", "NEB=sharp"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "context mode 'sharp' of NEB" in err
    assert (net_dir / "metadata.json").read_text() == original and not (net_dir / "context").exists()
    assert main(["context", str(net_dir), str(trained), "--classes", "NEB=mean", "BBG=coarse"]) == 0
    assert Network(net_dir).context_network.net_dir == net_dir / "context"


def test_carried_entries_bring_the_context_network_along(parts, tmp_path, test_net_dir):
    net_dir, trained = parts
    install_context_network(net_dir, trained, {"NEB": "mean", "OV": "coarse"}, ["OV"])
    meta = json.loads((net_dir / "metadata.json").read_text())
    meta["smoothing"] = {"block": 16, "classes": ["FR"]}
    (net_dir / "metadata.json").write_text(json.dumps(meta))
    tuned = tmp_path / "tuned"
    shutil.copytree(test_net_dir, tuned)
    plain_id = Network(tuned).model_id
    assert carry_inference(net_dir, tuned) == ["context", "smoothing"]
    got = json.loads((tuned / "metadata.json").read_text())
    assert got["context"] == meta["context"] and got["smoothing"] == meta["smoothing"]
    assert got["extra"]["inference_carried_from"] == str(net_dir)
    net = Network(tuned)
    assert net.context_network is not net
    assert got["extra"]["model_id"] == net.model_id == Network(net_dir).model_id != plain_id  # same files
    assert not [p for p in tuned.iterdir() if p.name.startswith(".")]


def test_nothing_to_carry_writes_nothing_and_other_classes_are_refused(parts, tmp_path, test_net_dir):
    net_dir, _ = parts
    tuned = tmp_path / "tuned"
    shutil.copytree(test_net_dir, tuned)
    before = (tuned / "metadata.json").read_text()
    assert carry_inference(test_net_dir, tuned) == []
    assert (tuned / "metadata.json").read_text() == before
    meta = json.loads(before)
    meta["classes"] = meta["classes"][::-1]
    (tuned / "metadata.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="classes differ"):
        carry_inference(net_dir, tuned)
