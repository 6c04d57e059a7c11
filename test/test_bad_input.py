"""Bad input (PRODUCT.md §4): for each case the exit code, one error line naming the file, no output
(not even a temporary file) and an unchanged input. Interrupts leave no partial output."""

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from astropy.io import fits

import fits_factory as ff
from maximask.classes import ABBRS
from maximask.cli import main
from fits_factory import config_dir

N = len(ABBRS)


@pytest.fixture
def run(capsys, test_net_dir):
    def _run(*argv):
        code = main([str(a) for a in argv] + ["--net_dir", str(test_net_dir)])
        out, err = capsys.readouterr()
        return code, out.splitlines(), err.splitlines()

    return _run


def assert_fails(run, tmp_path, argv, code, named, words):
    """Run, then check the exit code, the single error line, and that tmp_path is unchanged."""
    before = ff.snapshot(tmp_path)
    got, out, err = run(*argv)
    assert got == code
    assert out == []
    assert len(err) == 1, err
    assert err[0].startswith(f"maximask: error: {named}: "), err[0]
    assert words in err[0], err[0]
    assert ff.snapshot(tmp_path) == before  # no output, no temporary file, input unchanged


@pytest.fixture
def good(tmp_path):
    return ff.write_mef(tmp_path / "m.fits", shape=(32, 40))


def test_missing_file(run, tmp_path):
    assert_fails(run, tmp_path, [tmp_path / "nope.fits"], 1, tmp_path / "nope.fits", "no such file")


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any file")
def test_unreadable_file(run, tmp_path):
    p = ff.write_image(tmp_path / "a.fits", ff.sky((20, 20)))
    p.chmod(0)
    try:
        assert_fails(run, tmp_path, [p], 1, p, "cannot read")
    finally:
        p.chmod(0o644)


def test_unreadable_file_even_for_root(run, tmp_path, monkeypatch):
    # root reads any file, so the permission error is simulated where the file is first opened
    from maximask import fitsio_io

    p = ff.write_image(tmp_path / "a.fits", ff.sky((20, 20)))

    def refuse(path, *args, **kwargs):
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(fitsio_io, "open", refuse, raising=False)
    assert_fails(run, tmp_path, [p], 1, p, "cannot read file (Permission denied)")


def test_not_fits(run, tmp_path):
    p = tmp_path / "a.fits"
    p.write_text("this is a text file\n" * 300)
    assert_fails(run, tmp_path, [p], 1, p, "not a readable FITS file")


def test_corrupt_header(run, tmp_path):
    p = ff.write_image(tmp_path / "a.fits", ff.sky((20, 20)))
    raw = bytearray(p.read_bytes())
    raw[80:160] = b"NAXIS   =                 -7 / broken".ljust(80)
    p.write_bytes(bytes(raw))
    assert_fails(run, tmp_path, [p], 1, p, "FITS")


def test_truncated_file(run, tmp_path):
    p = ff.write_image(tmp_path / "a.fits", ff.sky((64, 64)))
    p.write_bytes(p.read_bytes()[: 2880 + 5000])
    assert_fails(run, tmp_path, [p], 1, p, "truncated")


def test_truncated_table_after_images(run, tmp_path):
    # the images are fine; the damage is found when the table is copied: still no output at all
    p = ff.write_mef(tmp_path / "m.fits", shape=(32, 40), n_images=1)
    p.write_bytes(p.read_bytes()[:-2880])
    got, out, err = run(p)
    assert got == 1 and out == [] and len(err) == 1 and err[0].startswith(f"maximask: error: {p}")
    assert sorted(x.name for x in tmp_path.iterdir()) == ["m.fits"]


def test_hdu_index_out_of_range(run, tmp_path, good):
    assert_fails(run, tmp_path, [f"{good}[7]"], 1, f"{good}[7]", "out of range (the file has 5 HDUs)")


def test_hdu_without_image_data(run, tmp_path, good):
    assert_fails(run, tmp_path, [f"{good}[0]"], 1, f"{good}[0]", "holds no image data")


def test_non_numeric_data(run, tmp_path, good):
    assert_fails(run, tmp_path, [f"{good}[2]"], 1, f"{good}[2]", "non-numeric data")


def test_one_dimensional_hdu(run, tmp_path):
    p = tmp_path / "spec.fits"
    fits.HDUList([fits.PrimaryHDU(), fits.ImageHDU(np.arange(50.0))]).writeto(p)
    assert_fails(run, tmp_path, [f"{p}[1]"], 1, f"{p}[1]", "1-D image")
    assert_fails(run, tmp_path, [p], 1, p, "no 2-D image or 3-D cube")


@pytest.mark.parametrize("fill, words", [(np.nan, "NaN"), (7.0, "constant")])
def test_all_nan_or_constant_image(run, tmp_path, fill, words):
    p = ff.write_image(tmp_path / "a.fits", np.full((30, 30), fill, np.float32))
    assert_fails(run, tmp_path, [p], 1, p, words)


def test_one_bad_hdu_spoils_the_file_but_not_the_others(run, tmp_path):
    p = tmp_path / "m.fits"
    fits.HDUList([fits.PrimaryHDU(), fits.ImageHDU(ff.sky((30, 30)), name="A"),
                  fits.ImageHDU(np.zeros((30, 30), np.float32), name="B")]).writeto(p)
    other = ff.write_image(tmp_path / "o.fits", ff.sky((30, 30)))
    got, out, err = run(p, other)
    assert got == 1
    assert out == [str(tmp_path / "o.masks.fits")]
    assert err == [f"maximask: error: {p}[2]: constant image (no noise to normalise by)"]
    assert not (tmp_path / "m.masks.fits").exists()
    assert not [x for x in tmp_path.iterdir() if x.name.startswith(".")]


def test_constant_cube_plane_is_named(run, tmp_path):
    cube = ff.sky((3, 30, 30))
    cube[1] = 5.0
    p = ff.write_image(tmp_path / "c.fits", cube)
    assert_fails(run, tmp_path, [p], 1, p, "plane 1: constant")


@pytest.mark.parametrize(
    "name, values, words",
    [
        ("thresh", [0.5] * 13, "expected 14 lines"),
        ("thresh", [0.5] * 15, "expected 14 lines"),
        ("priors", [0.01] * 5 + ["x"] + [0.01] * 8, "line 6: prior is not a number"),
        ("thresh", [0.5] * 13 + [1.2], "line 14: threshold 1.2 outside [0, 1]"),
        ("priors", [0.0] + [0.01] * 13, "line 1: prior 0.0 outside (0, 1)"),
        ("priors", [0.01] * 13 + [1], "line 14: prior 1 outside (0, 1)"),
        ("flags", [0] * 14, "no class flagged"),
        ("flags", [1] * 13 + [2], "flag must be 0 or 1"),
    ],
)
def test_malformed_config_file(run, tmp_path, good, name, values, words):
    cfg_root = tmp_path / "c"
    cfg_root.mkdir()
    cfg = config_dir(cfg_root, **{name: values})
    bad = cfg / f"classes.{name}"
    bad.write_text("".join(f"X {v}\n" for v in values))
    assert_fails(run, tmp_path, [good, "--config_dir", cfg], 2, bad, words)


def test_missing_config_dir(run, tmp_path, good):
    assert_fails(run, tmp_path, [good, "--config_dir", tmp_path / "none"], 2, tmp_path / "none", "not found")


def test_missing_network_dir(capsys, tmp_path, good):
    before = ff.snapshot(tmp_path)
    assert main([str(good), "--net_dir", str(tmp_path / "net")]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err == f"maximask: error: {tmp_path / 'net'}: network directory not found\n"
    assert ff.snapshot(tmp_path) == before


@pytest.mark.parametrize("refinement", [{"file": "refine.tflite", "rows": 150, "halo": 4, "block": 4},
                                        {"file": "refine.tflite", "halo": 4}, [160]])
def test_refinement_strips_that_do_not_tile_are_malformed_metadata(capsys, tmp_path, good, refinement):
    import json
    import shutil

    from maximask.resources import default_net_dir

    net = tmp_path / "net"
    shutil.copytree(default_net_dir(), net)
    meta = json.loads((net / "metadata.json").read_text())
    assert meta["refinement"]["rows"] == 160  # the shipped network runs its refinement on strips
    meta["refinement"] = refinement
    (net / "metadata.json").write_text(json.dumps(meta))
    assert main([str(good), "--net_dir", str(net)]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1
    assert err.startswith(f"maximask: error: {net / 'metadata.json'}: malformed network metadata"), err
    assert not list(good.parent.glob("*.masks*"))


def test_missing_list_entries_others_processed(run, tmp_path, good):
    lst = tmp_path / "in.list"
    lst.write_text(f"{tmp_path / 'gone.fits'}\n{good}[1]\n{tmp_path / 'gone2.fits'}[3]\n")
    got, out, err = run(lst)
    assert got == 1
    assert out == [str(tmp_path / "m.masks1.fits")]
    assert err == [f"maximask: error: {tmp_path / 'gone.fits'}: no such file",
                   f"maximask: error: {tmp_path / 'gone2.fits'}[3]: no such file"]


def test_missing_list_file(run, tmp_path):
    assert_fails(run, tmp_path, [tmp_path / "in.list"], 1, tmp_path / "in.list", "no such file")


def test_empty_directory(run, tmp_path):
    d = tmp_path / "empty"
    d.mkdir()
    (d / "readme.txt").write_text("no FITS here")
    assert_fails(run, tmp_path, [d], 1, d, "no FITS file")


def test_unwritable_out_dir_is_a_usage_error(run, tmp_path, good):
    blocker = tmp_path / "file.txt"
    blocker.write_text("a file, not a directory")
    assert_fails(run, tmp_path, [good, "-o", blocker / "sub"], 2, blocker / "sub", "cannot create output directory")
    assert_fails(run, tmp_path, [good, "-o", blocker], 2, blocker, "not a directory")


def test_unwritable_directory_next_to_the_input(run, tmp_path, good, monkeypatch):
    import tempfile

    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(tempfile, "mkstemp", refuse)
    assert_fails(run, tmp_path, [good], 1, good, "cannot write output directory (Permission denied)")


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes anywhere")
def test_read_only_directory_next_to_the_input(run, tmp_path, good):
    tmp_path.chmod(0o555)
    try:
        assert_fails(run, tmp_path, [good], 1, good, "Permission denied")
    finally:
        tmp_path.chmod(0o755)


def test_output_failure_midway_leaves_nothing(run, tmp_path, good, monkeypatch):
    from maximask import fitsio_io

    calls = []
    original = fitsio_io.OutputFile.write_image

    def fail_second(self, data, cards=()):
        calls.append(1)
        if len(calls) == 2:
            raise fitsio_io.MaximaskError(self.path, "cannot write output (No space left on device)")
        return original(self, data, cards)

    monkeypatch.setattr(fitsio_io.OutputFile, "write_image", fail_second)
    assert_fails(run, tmp_path, [good], 1, tmp_path / "m.masks.fits", "No space left")


def test_usage_errors_are_one_line(run, tmp_path, good):
    for argv, words in (
        ([good, "--prior_modif", "maybe"], "invalid BOOL 'maybe'"),
        ([good, "--batch_size", "0"], "must be at least 1"),
        ([good, "--single_mask", "true", "--proba_thresh", "false"], "needs thresholding"),
        ([good, "-v", "-q"], "not allowed with"),
        ([good, "--bogus"], "unrecognized arguments"),
    ):
        before = ff.snapshot(tmp_path)
        got, out, err = run(*argv)
        assert got == 2 and out == [] and len(err) == 1 and err[0].startswith("maximask: error: "), err
        assert words in err[0]
        assert ff.snapshot(tmp_path) == before


def test_colliding_outputs_are_refused(run, tmp_path):
    for d in ("a", "b"):
        (tmp_path / d).mkdir()
        ff.write_image(tmp_path / d / "x.fits", ff.sky((20, 20)))
    got, out, err = run(tmp_path / "a" / "x.fits", tmp_path / "b" / "x.fits", "-o", tmp_path / "out")
    assert got == 1 and out == [str(tmp_path / "out" / "x.masks.fits")]
    assert len(err) == 1 and err[0].startswith(f"maximask: error: {tmp_path / 'b' / 'x.fits'}: its output")


# --- interrupts ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("sig, code", [(signal.SIGTERM, 128 + 15), (signal.SIGINT, 128 + 2)])
def test_interrupt_mid_file_leaves_no_partial_output(tmp_path, test_net_dir, sig, code):
    # several large HDUs, so that the run is still inside the file when the signal comes
    p = tmp_path / "big.fits"
    fits.HDUList([fits.PrimaryHDU()] + [fits.ImageHDU(ff.sky((768, 768), seed=i)) for i in range(6)]).writeto(p)
    before = ff.snapshot(tmp_path)
    proc = subprocess.Popen([sys.executable, "-m", "maximask.cli", str(p), "--net_dir", str(test_net_dir),
                             "--batch_size", "1"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            # a shell's background jobs inherit SIGINT ignored; the test needs it delivered
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.time() + 60
    while time.time() < deadline and not any(x.name.endswith(".part") for x in tmp_path.iterdir()):
        time.sleep(0.01)
    assert proc.poll() is None, proc.communicate()
    time.sleep(0.3)  # well inside the file: writing has started
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == code, err
    assert out == ""
    assert err.splitlines() == [f"maximask: error: {p}: interrupted: no output written"]
    assert ff.snapshot(tmp_path) == before
