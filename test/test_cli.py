"""``maximask`` end to end with the test network: the IM_PATH forms, outputs, options."""

import shutil
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits

import fits_factory as ff
from fits_factory import config_dir
import maximask
from maximask.classes import ABBRS, BITS, INDEX
from maximask.cli import main
from maximask.config import read_priors, read_thresholds
from maximask.resources import default_config_dir

N = len(ABBRS)


@pytest.fixture
def run(capsys, test_net_dir):
    """main(argv) with the test network: returns (exit code, stdout lines, stderr lines)."""

    def _run(*argv, net=True):
        args = [str(a) for a in argv] + (["--net_dir", str(test_net_dir)] if net else [])
        code = main(args)
        out, err = capsys.readouterr()
        return code, out.splitlines(), err.splitlines()

    return _run


@pytest.fixture(scope="module")
def network(test_net_dir):
    from maximask.network import Network

    return Network(test_net_dir)


def expected_masks(image, network):
    """Masks by the product definition, computed in probability space from the engine's probabilities."""
    from maximask.engine import predict_probabilities

    p = predict_probabilities(image, network).astype(np.float64)
    train = np.asarray(network.metadata.training_priors)[:, None, None]
    new = read_priors(default_config_dir() / "classes.priors")[:, None, None]
    t = read_thresholds(default_config_dir() / "classes.thresh")[:, None, None]
    odds = p / (1 - p) * (new / (1 - new)) / (train / (1 - train))
    pp = odds / (1 + odds)
    return (pp > t).astype(np.uint8), np.abs(pp - t) < 1e-5


def assert_mask_header(h, network, n_nonfinite=0):
    priors = read_priors(default_config_dir() / "classes.priors")
    thresh = read_thresholds(default_config_dir() / "classes.thresh")
    for i, a in enumerate(ABBRS):
        assert h[a] == maximask.classes.CLASSES[i].meaning
        assert h[f"{a}_DIM"] == i
        assert h[f"{a}_PR"] == priors[i] and h[f"{a}_TH"] == thresh[i]
        assert f"{a}_SM" not in h
    assert h["PRIORS"] is True and h["THRESH"] is True and h["SMASK"] is False
    assert h["MMVERS"] == maximask.__version__ and h["MMMODEL"] == network.model_id
    assert h["MMNONFIN"] == n_nonfinite
    assert len(h["DATE"]) == 19 and h["DATE"][:2] == "20"


# --- the IM_PATH forms of the "done when" list ------------------------------------------------


def test_multi_extension_file_with_three_images_and_a_table(tmp_path, run, network):
    src = ff.write_mef(tmp_path / "m.fits", shape=(48, 64))
    before = src.read_bytes()
    code, out, err = run(src)
    assert (code, err) == (0, [])
    dst = tmp_path / "m.masks.fits"
    assert out == [str(dst)]
    assert src.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.fits", "m.masks.fits"]
    with fits.open(src) as hin, fits.open(dst) as hout:
        hout.verify("exception")
        assert len(hout) == len(hin) == 5
        assert [h.name for h in hout] == [h.name for h in hin] == ["PRIMARY", "SCI", "CATALOG", "SCI", "SCI"]
        assert [type(h).__name__ for h in hout] == ["PrimaryHDU", "ImageHDU", "BinTableHDU", "ImageHDU", "ImageHDU"]
        # non-image HDUs copied intact: header and data bytes
        for i in (0, 2):
            assert hout[i].header == hin[i].header
        raw_in, raw_out = src.read_bytes(), dst.read_bytes()
        loc_in, loc_out = hin.fileinfo(2), hout.fileinfo(2)
        size = hin.fileinfo(3)["hdrLoc"] - loc_in["hdrLoc"]
        assert raw_out[loc_out["hdrLoc"]:loc_out["hdrLoc"] + size] == raw_in[loc_in["hdrLoc"]:loc_in["hdrLoc"] + size]
        for i in (1, 3, 4):
            m = hout[i].data
            assert m.shape == (N, 48, 64) and m.dtype == np.uint8 and set(np.unique(m)) <= {0, 1}
            h = hout[i].header
            assert_mask_header(h, network)
            assert h["EXTNAME"] == "SCI" and h["EXTVER"] == hin[i].header["EXTVER"]
            for k in ("CTYPE1", "CTYPE2", "CRPIX1", "CRPIX2", "CRVAL1", "CRVAL2", "CD1_1", "CD1_2", "CD2_1", "CD2_2",
                      "RADESYS", "EQUINOX", "MJD-OBS"):
                assert h[k] == hin[i].header[k], k
            assert "OBJECT" not in h
        # the masks are what the product definition says
        expected, near = expected_masks(hin[3].data, network)
        agree = (hout[3].data == expected) | near
        assert agree.all()
        assert 0 < expected.mean() < 1  # the test network flags some pixels and not others


def test_tile_compressed_input(tmp_path, run):
    data = (ff.sky((40, 70)) * 2).astype(np.int32)
    src = ff.write_fz(tmp_path / "c.fits.fz", data, header=ff.wcs_header())
    code, out, err = run(src)
    assert (code, err) == (0, [])
    dst = tmp_path / "c.masks.fits"
    assert out == [str(dst)]
    with fits.open(dst) as h:
        assert [type(x).__name__ for x in h] == ["PrimaryHDU", "ImageHDU"]
        assert h[0].data is None and h[1].name == "SCI"
        assert h[1].data.shape == (N, 40, 70) and h[1].data.dtype == np.uint8
        assert h[1].header["CTYPE1"] == "RA---TAN" and "ZIMAGE" not in h[1].header


def test_gzipped_input_gives_the_same_masks_as_plain(tmp_path, run):
    plain = ff.write_mef(tmp_path / "p.fits", shape=(40, 56), n_images=2)
    gz_dir = tmp_path / "gz"
    gz_dir.mkdir()
    gz = ff.gzip_file(plain, gz_dir / "p.fits.gz")
    assert run(plain)[0] == 0
    code, out, err = run(gz)
    assert (code, err, out) == (0, [], [str(gz_dir / "p.masks.fits")])
    with fits.open(tmp_path / "p.masks.fits") as a, fits.open(gz_dir / "p.masks.fits") as b:
        assert len(a) == len(b) == 4
        for x, y in zip(a, b):
            assert x.name == y.name
            if x.data is not None and x.is_image:
                np.testing.assert_array_equal(x.data, y.data)
        assert b[2].data.tobytes() == a[2].data.tobytes()


def test_cube_is_processed_plane_by_plane(tmp_path, run, network):
    cube = ff.sky((3, 40, 52))
    cube[1] += 50 * np.sin(np.arange(52) / 3.0)  # planes differ
    h = ff.wcs_header()
    h["CTYPE3"], h["CRVAL3"], h["CDELT3"], h["CRPIX3"] = "WAVE", 5e-7, 1e-9, 1.0
    src = ff.write_image(tmp_path / "cube.fits", cube, header=h)
    code, out, err = run(src)
    assert (code, err) == (0, [])
    with fits.open(tmp_path / "cube.masks.fits") as hl:
        m = hl[0].data
        assert m.shape == (3, N, 40, 52) and m.dtype == np.uint8
        assert hl[0].header["CTYPE4"] == "WAVE" and hl[0].header["CRVAL4"] == 5e-7 and "CTYPE3" not in hl[0].header
        expected, near = expected_masks(cube[2], network)
        assert ((m[2] == expected) | near).all()
    code, out, err = run(src, "--single_mask", "true", "-o", tmp_path / "single")
    assert (code, err) == (0, [])
    with fits.open(tmp_path / "single" / "cube.masks.fits") as hl:
        s = hl[0].data
        assert s.shape == (3, 40, 52) and s.dtype.kind == "i" and hl[0].header["BITPIX"] == 16
        assert hl[0].header["CTYPE3"] == "WAVE"
        np.testing.assert_array_equal(s, np.einsum("pchw,c->phw", m.astype(np.int64), BITS.astype(np.int64)))


def test_int16_with_bzero_bscale_is_read_in_physical_units(tmp_path, run):
    physical = np.round(ff.sky((50, 60), seed=3) * 2) / 2  # representable exactly with BSCALE 0.5
    scaled = ff.write_scaled_int16(tmp_path / "s.fits", physical, bscale=0.5, bzero=1000.0)
    assert fits.getheader(scaled)["BITPIX"] == 16
    ref = ff.write_image(tmp_path / "f.fits", physical.astype(np.float32))
    assert run(scaled)[0] == 0 and run(ref)[0] == 0
    a = fits.getdata(tmp_path / "s.masks.fits")
    assert a.shape == (N, 50, 60) and a.dtype == np.uint8
    np.testing.assert_array_equal(a, fits.getdata(tmp_path / "f.masks.fits"))


def test_image_smaller_than_a_tile(tmp_path, run, network):
    image = ff.sky((100, 80), seed=5)
    src = ff.write_image(tmp_path / "small.fits", image)
    code, out, err = run(src)
    assert (code, err) == (0, [])
    m = fits.getdata(tmp_path / "small.masks.fits")
    assert m.shape == (N, 100, 80) and m.dtype == np.uint8
    expected, near = expected_masks(image, network)
    assert ((m == expected) | near).all()


def test_directory_skips_our_outputs_and_other_files(tmp_path, run):
    d = tmp_path / "night"
    d.mkdir()
    ff.write_image(d / "a.fits", ff.sky((40, 40)))
    ff.write_fz(d / "b.fits.fz", ff.sky((40, 48), seed=1))
    ff.write_image(d / "old.masks.fits", np.zeros((2, 2), np.uint8))
    (d / "notes.txt").write_text("not FITS")
    code, out, err = run(d)
    assert (code, err) == (0, [])
    assert out == [str(d / "a.masks.fits"), str(d / "b.masks.fits")]
    assert sorted(p.name for p in d.iterdir()) == ["a.fits", "a.masks.fits", "b.fits.fz", "b.masks.fits",
                                                   "notes.txt", "old.masks.fits"]
    assert fits.getdata(d / "old.masks.fits").shape == (2, 2)


def test_list_with_hdu_entries_comments_and_blank_lines(tmp_path, run, monkeypatch):
    ff.write_mef(tmp_path / "m.fits", shape=(40, 48))
    ff.write_image(tmp_path / "one.fits", ff.sky((30, 36)))
    lst = tmp_path / "in.list"
    lst.write_text("# tonight\n\nm.fits[1]\n  m.fits[4]\n\n# whole file\none.fits\n")
    monkeypatch.chdir(tmp_path)
    code, out, err = run(lst)
    assert (code, err) == (0, [])
    assert out == ["m.masks1.fits", "m.masks4.fits", "one.masks.fits"]
    for name, hdu in (("m.masks1.fits", 1), ("m.masks4.fits", 4)):
        with fits.open(tmp_path / name) as hl, fits.open(tmp_path / "m.fits") as src:
            assert len(hl) == 1 and hl[0].data.shape == (N, 40, 48) and hl[0].data.dtype == np.uint8
            assert hl[0].header["EXTNAME"] == "SCI" and hl[0].header["EXTVER"] == src[hdu].header["EXTVER"]
            assert hl[0].header["CRPIX1"] == src[hdu].header["CRPIX1"]
    assert not (tmp_path / "m.masks.fits").exists()


# --- options --------------------------------------------------------------------------------------------


def test_probabilities_without_prior_modification_are_the_network_output(tmp_path, run, network):
    from maximask.engine import predict_probabilities

    image = ff.sky((44, 50))
    src = ff.write_image(tmp_path / "a.fits", image)
    code, out, err = run(src, "--proba_thresh", "false", "--prior_modif", "no")
    assert (code, err) == (0, [])
    with fits.open(tmp_path / "a.masks.fits") as hl:
        p, h = hl[0].data, hl[0].header
        assert p.dtype == np.dtype(">f4") and p.shape == (N, 44, 50)
        np.testing.assert_allclose(p, predict_probabilities(image, network), rtol=1e-5, atol=1e-7)
        assert h["PRIORS"] is False and h["THRESH"] is False and "CR_PR" not in h and "CR_TH" not in h


def test_prior_modified_probabilities(tmp_path, run, network):
    from maximask.engine import predict_probabilities

    image = ff.sky((44, 50))
    src = ff.write_image(tmp_path / "a.fits", image)
    assert run(src, "--proba_thresh", "F")[0] == 0
    p = predict_probabilities(image, network).astype(np.float64)
    train = np.asarray(network.metadata.training_priors)[:, None, None]
    new = read_priors(default_config_dir() / "classes.priors")[:, None, None]
    odds = p / (1 - p) * (new / (1 - new)) / (train / (1 - train))
    np.testing.assert_allclose(fits.getdata(tmp_path / "a.masks.fits"), odds / (1 + odds), rtol=1e-4, atol=1e-7)


def test_single_mask_sums_bit_codes_of_the_masks(tmp_path, run):
    src = ff.write_image(tmp_path / "a.fits", ff.sky((40, 44)))
    assert run(src)[0] == 0
    masks = fits.getdata(tmp_path / "a.masks.fits")
    code, out, err = run(src, "--single_mask", "YES")
    assert (code, err) == (0, [])
    with fits.open(tmp_path / "a.masks.fits") as hl:
        s, h = hl[0].data, hl[0].header
    assert s.shape == (40, 44) and h["BITPIX"] == 16
    np.testing.assert_array_equal(s, np.tensordot(BITS.astype(np.int64), masks.astype(np.int64), axes=1))
    assert h["SMASK"] is True and h["TRL_SM"] == 64 and h["BG_SM"] == 0 and "CR_DIM" not in h


def test_class_selection_with_config_dir(tmp_path, run):
    flags = [0] * N
    flags[INDEX["CR"]] = flags[INDEX["SAT"]] = 1
    # the bundled thresholds, so that the CR plane must equal the default run's
    thresh = list(read_thresholds(default_config_dir() / "classes.thresh"))
    thresh[INDEX["SAT"]] = 0.123456789012345678
    cfg = config_dir(tmp_path, flags=flags, thresh=thresh)
    src = ff.write_image(tmp_path / "a.fits", ff.sky((36, 40)))
    assert run(src)[0] == 0
    full = fits.getdata(tmp_path / "a.masks.fits")
    code, out, err = run(src, "--config_dir", cfg)
    assert (code, err) == (0, [])
    with fits.open(tmp_path / "a.masks.fits") as hl:
        m, h = hl[0].data, hl[0].header
    assert m.shape == (2, 36, 40)
    assert h["CR_DIM"] == 0 and h["SAT_DIM"] == 1 and "HP" not in h and "BG_DIM" not in h
    assert h["SAT_TH"] == 0.123456789012345678
    np.testing.assert_array_equal(m[0], full[INDEX["CR"]])


def test_compressed_output_holds_the_same_masks(tmp_path, run):
    src = ff.write_mef(tmp_path / "m.fits", shape=(64, 96), n_images=1)
    assert run(src, "-o", tmp_path / "plain")[0] == 0
    code, out, err = run(src, "--compress", "-o", tmp_path / "comp")
    assert (code, err) == (0, [])
    with fits.open(tmp_path / "plain" / "m.masks.fits") as a, fits.open(tmp_path / "comp" / "m.masks.fits") as b:
        assert [type(h).__name__ for h in b] == ["PrimaryHDU", "CompImageHDU", "BinTableHDU"]
        assert b[1].name == "SCI" and b[1].header["CR_PR"] == a[1].header["CR_PR"]
        np.testing.assert_array_equal(a[1].data, b[1].data)
        assert b[2].data.tobytes() == a[2].data.tobytes()


def test_out_dir_is_created_and_nothing_is_written_next_to_the_input(tmp_path, run):
    src_dir = tmp_path / "in"
    src_dir.mkdir()
    src = ff.write_image(src_dir / "a.fits", ff.sky((32, 32)))
    code, out, err = run(src, "-o", tmp_path / "new" / "masks")
    assert (code, err) == (0, [])
    assert out == [str(tmp_path / "new" / "masks" / "a.masks.fits")]
    assert [p.name for p in src_dir.iterdir()] == ["a.fits"]


@pytest.mark.parametrize("value, ok", [("true", True), ("Yes", True), ("1", True), ("T", True), ("y", True),
                                       ("FALSE", False), ("no", False), ("0", False), ("f", False), ("N", False)])
def test_bool_values(tmp_path, run, value, ok):
    src = ff.write_image(tmp_path / "a.fits", ff.sky((24, 24)))
    assert run(src, "--proba_thresh", value)[0] == 0
    assert (fits.getdata(tmp_path / "a.masks.fits").dtype == np.uint8) is ok


def test_batch_size_does_not_change_the_result(tmp_path, run):
    src = ff.write_image(tmp_path / "a.fits", ff.sky((150, 130)))
    assert run(src, "--batch_size", "1", "-o", tmp_path / "b1")[0] == 0
    assert run(src, "--batch_size", "32", "-o", tmp_path / "b32")[0] == 0
    np.testing.assert_array_equal(fits.getdata(tmp_path / "b1" / "a.masks.fits"),
                                  fits.getdata(tmp_path / "b32" / "a.masks.fits"))


def test_nan_pixels_are_counted_in_the_header(tmp_path, run):
    image = ff.sky((40, 40))
    image[5, 5] = np.nan
    image[10, :3] = np.inf
    src = ff.write_image(tmp_path / "a.fits", image)
    assert run(src)[0] == 0
    assert fits.getheader(tmp_path / "a.masks.fits")["MMNONFIN"] == 4


def test_quiet_verbose_version(tmp_path, run):
    src = ff.write_image(tmp_path / "a.fits", ff.sky((24, 24)))
    code, out, err = run(src, "-q")
    assert (code, out, err) == (0, [], [])
    code, out, err = run(src, "-v")
    assert code == 0 and out == [str(tmp_path / "a.masks.fits")]
    assert err and all(line.startswith("maximask: ") for line in err)
    code, out, err = run("--version", net=False)
    assert (code, out) == (0, [f"maximask {maximask.__version__}"])


def test_console_script_separates_results_and_errors(tmp_path, test_net_dir):
    import subprocess
    import sys

    script = Path(sys.executable).parent / "maximask"
    if not script.exists():
        pytest.skip("console script not installed next to this interpreter")
    src = ff.write_mef(tmp_path / "a.fits", shape=(24, 32))  # WCS, a table: no warning may reach stderr
    r = subprocess.run([str(script), str(src), str(tmp_path / "missing.fits"), "--net_dir", str(test_net_dir)],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 1
    assert r.stdout.splitlines() == [str(tmp_path / "a.masks.fits")]
    assert r.stderr.splitlines() == [f"maximask: error: {tmp_path / 'missing.fits'}: no such file"]


def test_python_api_of_the_readme_matches_the_command(tmp_path, run, network):
    from maximask.config import load_config
    from maximask.postprocess import make_plan
    from maximask.process import mask_image

    cube = ff.sky((2, 40, 44))
    src = ff.write_image(tmp_path / "c.fits", cube)
    assert run(src)[0] == 0
    cfg = load_config(default_config_dir())
    plan = make_plan(network.metadata.classes, cfg.flags, network.metadata.training_priors, cfg.priors,
                     cfg.thresholds)
    masks, n_nonfinite = mask_image(cube, network, plan)
    assert masks.shape == (2, N, 40, 44) and masks.dtype == np.uint8 and n_nonfinite == 0
    np.testing.assert_array_equal(masks, fits.getdata(tmp_path / "c.masks.fits"))


def test_progress_bar_only_on_a_terminal(tmp_path, test_net_dir, capsys, monkeypatch):
    import io
    import sys

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    src = ff.write_image(tmp_path / "a.fits", ff.sky((150, 150)))
    term = Terminal()
    monkeypatch.setattr(sys, "stderr", term)
    assert main([str(src), "--net_dir", str(test_net_dir)]) == 0
    assert "tile" in term.getvalue() and "a.fits" in term.getvalue()
    assert capsys.readouterr().out.splitlines() == [str(tmp_path / "a.masks.fits")]
    term = Terminal()
    monkeypatch.setattr(sys, "stderr", term)
    assert main([str(src), "--net_dir", str(test_net_dir), "-q"]) == 0
    assert term.getvalue() == "" and capsys.readouterr().out == ""
