"""maximask-sim: files written, truth cubes, labels, usage errors."""

import csv
import json

import numpy as np
from astropy.io import fits

from maximask.classes import ABBRS
from maximask.sim.cli import main


def test_masking_frames_and_truth(tmp_path, capsys):
    assert main([str(tmp_path), "--n", "2", "--size", "48", "64", "--seed", "7"]) == 0
    for i in range(2):
        img = fits.getdata(tmp_path / f"sim_{i:05d}.fits")
        truth = fits.getdata(tmp_path / f"sim_{i:05d}.truth.fits")
        hdr = fits.getheader(tmp_path / f"sim_{i:05d}.truth.fits")
        assert img.shape == (48, 64) and img.dtype == np.dtype(">f4")
        assert truth.shape == (len(ABBRS), 48, 64) and truth.dtype == np.uint8
        assert [hdr[f"PLANE{k}"] for k in range(len(ABBRS))] == list(ABBRS)
    lines = (tmp_path / "metadata.jsonl").read_text().splitlines()
    assert [json.loads(s)["file"] for s in lines] == ["sim_00000.fits", "sim_00001.fits"]
    assert len(capsys.readouterr().out.splitlines()) == 2


def test_same_seed_same_files(tmp_path):
    main([str(tmp_path / "a"), "--n", "1", "--size", "32", "32", "--seed", "3"])
    main([str(tmp_path / "b"), "--n", "1", "--size", "32", "32", "--seed", "3"])
    np.testing.assert_array_equal(fits.getdata(tmp_path / "a/sim_00000.fits"), fits.getdata(tmp_path / "b/sim_00000.fits"))


def test_tracking_frames_and_labels(tmp_path):
    assert main([str(tmp_path), "--n", "3", "--size", "40", "40", "--tracking", "--raw", "uint16"]) == 0
    rows = list(csv.DictReader(open(tmp_path / "labels.csv")))
    assert [r["file"] for r in rows] == [f"trk_{i:05d}.fits" for i in range(3)]
    for r in rows:
        assert r["label"] == str(int(r["kind"] != "none"))
        assert fits.getdata(tmp_path / r["file"]).dtype.kind in "iu"


def test_usage_errors(tmp_path, capsys):
    assert main([str(tmp_path), "--n", "0"]) == 2
    assert main([str(tmp_path), "--force", "XYZ", "--n", "1", "--size", "32", "32"]) == 2
    assert main([]) == 2
    err = capsys.readouterr().err
    assert err.count("maximask-sim: error:") == 3
