import os

import numpy as np
import pytest
from astropy.io import fits
from astropy.wcs import WCS

import fits_factory as ff
from maximask.errors import MaximaskError
from maximask.fitsio_io import InputFile, OutputFile, image_header, wcs_cards


def test_input_file_lists_hdus_and_reads_pixels(tmp_path):
    path = ff.write_mef(tmp_path / "m.fits", shape=(20, 30))
    with InputFile(path) as f:
        kinds = [(h.exttype, h.shape, h.is_image) for h in f.hdus]
        assert kinds == [
            ("IMAGE_HDU", (), False),
            ("IMAGE_HDU", (20, 30), True),
            ("BINARY_TBL", (), False),
            ("IMAGE_HDU", (20, 30), True),
            ("IMAGE_HDU", (20, 30), True),
        ]
        np.testing.assert_array_equal(f.read_image(3), fits.getdata(path, 3))


def test_raw_hdu_is_byte_exact_for_plain_and_gzipped(tmp_path):
    path = ff.write_mef(tmp_path / "m.fits", shape=(20, 30))
    gz = ff.gzip_file(path, tmp_path / "m.fits.gz")
    raw = path.read_bytes()
    with fits.open(path) as hdul:
        table_start = hdul.fileinfo(2)["hdrLoc"]
        table_end = hdul.fileinfo(3)["hdrLoc"]
    for p in (path, gz):
        with InputFile(p) as f:
            assert f.raw_hdu(2) == raw[table_start:table_end]
            assert f.raw_hdu(0) == raw[:2880]


def test_reads_tile_compressed_and_scaled_integers(tmp_path):
    data = np.arange(40 * 50, dtype=np.int16).reshape(40, 50)
    fz = ff.write_fz(tmp_path / "c.fits.fz", data, header=ff.wcs_header())
    with InputFile(fz) as f:
        assert f.hdus[1].compressed and f.hdus[1].is_image and f.hdus[1].shape == (40, 50)
        np.testing.assert_array_equal(f.read_image(1), data)
        hdr = f.copied_keywords(1)
        assert hdr["CTYPE1"] == "RA---TAN" and hdr["EXTNAME"] == "SCI" and "ZIMAGE" not in hdr
    physical = np.linspace(1000, 2000, 12 * 10).reshape(12, 10)
    scaled = ff.write_scaled_int16(tmp_path / "s.fits", physical, bscale=0.5, bzero=1000.0)
    with InputFile(scaled) as f:
        got = f.read_image(0)
    assert got.dtype.kind == "f"
    np.testing.assert_allclose(got, np.round((physical - 1000) / 0.5) * 0.5 + 1000)


@pytest.mark.parametrize(
    "make, words",
    [
        (lambda p: None, "no such file"),
        (lambda p: p.write_bytes(b""), "empty file"),
        (lambda p: p.write_text("SIMPLE? no, this is text\n" * 200), "not a readable FITS file"),
        (lambda p: p.mkdir(), "is a directory"),
    ],
)
def test_unreadable_inputs(tmp_path, make, words):
    p = tmp_path / "bad.fits"
    make(p)
    with pytest.raises(MaximaskError) as e:
        InputFile(p)
    assert e.value.path == str(p) and words in e.value.reason


def test_truncated_data_is_reported(tmp_path):
    p = ff.write_image(tmp_path / "t.fits", ff.sky((64, 64)))
    p.write_bytes(p.read_bytes()[: 2880 + 4000])
    with pytest.raises(MaximaskError, match="truncated|corrupt") as e:
        with InputFile(p) as f:
            f.read_image(0)
    assert e.value.path == str(p)


def test_wcs_cards_select_and_renumber():
    h = ff.wcs_header()
    h["CTYPE3"], h["CRVAL3"], h["CDELT3"], h["PC3_3"] = "WAVE", 5e-7, 1e-9, 1.0
    h["PV2_1"] = 0.5
    h["WCSAXES"] = 3
    h["EXTNAME"], h["EXTVER"] = "SCI", 2
    h["A_ORDER"], h["A_0_2"] = 2, 1e-7
    h["WAT0_001"], h["WAT1_001"] = "system=image", "wtype=tnx"
    h["CTYPE1A"] = "PIXEL"
    keys2 = [c.keyword for c in wcs_cards(h, {1: 1, 2: 2})]
    assert "CTYPE3" not in keys2 and "WCSAXES" not in keys2 and "OBJECT" not in keys2
    for k in ("CTYPE1", "CD2_2", "PV2_1", "RADESYS", "EQUINOX", "MJD-OBS", "EXTNAME", "EXTVER", "A_ORDER", "A_0_2",
              "WAT0_001", "WAT1_001", "CTYPE1A"):
        assert k in keys2
    cube = {c.keyword: c.value for c in wcs_cards(h, {1: 1, 2: 2, 3: 4})}
    assert cube["CTYPE4"] == "WAVE" and cube["CRVAL4"] == 5e-7 and cube["PC4_4"] == 1.0 and "CTYPE3" not in cube
    assert cube["CRVAL1"] == 150.1234567890123


def test_output_file_plain_round_trip_full_precision(tmp_path):
    masks = (np.arange(2 * 5 * 7) % 2).astype(np.uint8).reshape(2, 5, 7)
    single = np.arange(35, dtype=np.int16).reshape(5, 7) * 100
    proba = np.linspace(0, 1, 35, dtype=np.float32).reshape(5, 7)
    cards = [("CR_PR", 1e-6, "prior"), ("X_TH", 0.123456789012345678, ""), ("PRIORS", True, "")]
    with OutputFile(tmp_path / "o.fits") as out:
        out.write_image(masks, cards)
        out.copy_raw(fits.BinTableHDU.from_columns([fits.Column(name="a", format="J", array=[1, 2])]).header.tostring().encode()
                     + np.array([1, 2], ">i4").tobytes().ljust(2880, b"\0"))
        out.write_image(single, [("EXTNAME", "SCI")])
        out.write_image(proba)
        final = out.commit()
    assert final == tmp_path / "o.fits" and os.listdir(tmp_path) == ["o.fits"]
    with fits.open(final) as hdul:
        hdul.verify("exception")
        assert [type(h).__name__ for h in hdul] == ["PrimaryHDU", "BinTableHDU", "ImageHDU", "ImageHDU"]
        np.testing.assert_array_equal(hdul[0].data, masks)
        assert hdul[0].data.dtype == np.uint8
        assert hdul[0].header["CR_PR"] == 1e-6 and hdul[0].header["X_TH"] == 0.123456789012345678
        assert hdul[1].data["a"].tolist() == [1, 2]
        np.testing.assert_array_equal(hdul[2].data, single)
        assert hdul[2].data.dtype.kind == "i" and hdul[2].header["EXTNAME"] == "SCI"
        np.testing.assert_array_equal(hdul[3].data, proba)


def test_output_file_compressed(tmp_path):
    masks = np.zeros((3, 64, 80), np.uint8)
    masks[1, 10:20, 30:33] = 1
    with OutputFile(tmp_path / "c.fits", compress=True) as out:
        out.write_image(masks, [("CR_PR", 1e-6, "prior"), ("EXTNAME", "SCI")])
        out.write_image(np.ones((64, 80), np.int16) * 4096)
        out.write_image(np.linspace(0, 1, 64 * 80, dtype=np.float32).reshape(64, 80))
        out.commit()
    with fits.open(tmp_path / "c.fits") as hdul:
        assert [type(h).__name__ for h in hdul] == ["PrimaryHDU", "CompImageHDU", "CompImageHDU", "CompImageHDU"]
        np.testing.assert_array_equal(hdul[1].data, masks)
        assert hdul[1].header["CR_PR"] == 1e-6 and hdul[1].header["EXTNAME"] == "SCI"
        assert hdul[2].data.dtype.kind == "i" and (hdul[2].data == 4096).all()
        np.testing.assert_array_equal(hdul[3].data, np.linspace(0, 1, 64 * 80, dtype=np.float32).reshape(64, 80))


def test_compressed_masks_are_a_few_percent_of_their_size(tmp_path):
    rng = np.random.default_rng(0)
    masks = (rng.random((3, 1024, 1024)) < 0.001).astype(np.uint8)  # hot pixels
    masks[1, 50:90, 80:195] = 1  # a blob
    masks[2, :, 100:103] = 1
    with OutputFile(tmp_path / "c.fits", compress=True) as out:
        out.write_image(masks)
        out.commit()
    assert (tmp_path / "c.fits").stat().st_size < 0.05 * masks.nbytes


def test_output_file_discarded_on_exception_and_without_commit(tmp_path):
    with pytest.raises(KeyboardInterrupt):
        with OutputFile(tmp_path / "o.fits") as out:
            out.write_image(np.zeros((4, 4), np.uint8))
            assert out.tmp_path.exists() and out.tmp_path.parent == tmp_path
            raise KeyboardInterrupt
    assert os.listdir(tmp_path) == []


def test_output_file_unwritable_directory(tmp_path):
    with pytest.raises(MaximaskError) as e:
        OutputFile(tmp_path / "missing" / "o.fits")
    assert e.value.path == str(tmp_path / "missing") and "cannot write" in e.value.reason


@pytest.mark.filterwarnings("ignore::astropy.wcs.FITSFixedWarning")
def test_output_keeps_wcs_usable(tmp_path):
    h = ff.wcs_header()
    with OutputFile(tmp_path / "o.fits") as out:
        out.write_image(np.zeros((2, 40, 60), np.uint8), wcs_cards(h, {1: 1, 2: 2}))
        out.commit()
    w_in = WCS(h)
    w_out = WCS(fits.getheader(tmp_path / "o.fits")).celestial
    pix = np.array([[0.0, 0.0], [59.0, 39.0], [12.5, 7.25]])
    np.testing.assert_allclose(w_out.wcs_pix2world(pix, 0), w_in.wcs_pix2world(pix, 0), rtol=0, atol=1e-10)


def test_image_header_structure():
    h = image_header((3, 4, 5), np.int16, primary=False, cards=[("A", 1, "")])
    assert list(h.keys())[:8] == ["XTENSION", "BITPIX", "NAXIS", "NAXIS1", "NAXIS2", "NAXIS3", "PCOUNT", "GCOUNT"]
    assert h["NAXIS1"] == 5 and h["NAXIS3"] == 3 and h["BITPIX"] == 16 and h["A"] == 1
