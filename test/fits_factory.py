"""Small FITS files built in code for the tests."""

from __future__ import annotations

import gzip
import shutil
from pathlib import Path

import numpy as np
from astropy.io import fits


def sky(shape=(64, 96), seed=0, background=1000.0, noise=10.0) -> np.ndarray:
    """A float32 frame: flat sky, Gaussian noise, a few stars and one hot column."""
    rng = np.random.default_rng(seed)
    *planes, h, w = shape
    image = background + noise * rng.standard_normal(shape)
    yy, xx = np.mgrid[0:h, 0:w]
    for _ in range(4):
        y, x = rng.uniform(0, h), rng.uniform(0, w)
        image = image + 500.0 * np.exp(-((yy - y) ** 2 + (xx - x) ** 2) / 4.0)
    image[..., :, w // 3] += 300.0
    return image.astype(np.float32)


def wcs_header(ctype=("RA---TAN", "DEC--TAN"), crpix=(30.5, 20.5), crval=(150.1234567890123, 2.2)) -> fits.Header:
    """A celestial TAN header with a CD matrix and a SIP-like extra keyword."""
    h = fits.Header()
    h["CTYPE1"], h["CTYPE2"] = ctype
    h["CRPIX1"], h["CRPIX2"] = crpix
    h["CRVAL1"], h["CRVAL2"] = crval
    h["CD1_1"], h["CD1_2"], h["CD2_1"], h["CD2_2"] = -7.3e-5, 1.1e-6, 1.2e-6, 7.3e-5
    h["CUNIT1"], h["CUNIT2"] = "deg", "deg"
    h["RADESYS"] = "ICRS"
    h["EQUINOX"] = 2000.0
    h["MJD-OBS"] = 60000.25
    h["OBJECT"] = "not a WCS keyword"
    return h


def table_hdu(name="CATALOG") -> fits.BinTableHDU:
    """A binary table with numeric, string and variable-length columns."""
    cols = [
        fits.Column(name="flux", format="E", unit="adu", array=np.array([1.5, 2.5, np.nan])),
        fits.Column(name="name", format="8A", array=np.array(["a", "bb", "ccc"])),
        fits.Column(name="flag", format="J", null=-1, array=np.array([1, -1, 3])),
        fits.Column(name="vla", format="PJ()", array=np.array([[1], [2, 3], [4, 5, 6]], dtype=object)),
    ]
    hdu = fits.BinTableHDU.from_columns(cols, name=name)
    hdu.header["HISTORY"] = "copied intact?"
    return hdu


def write_image(path, data, header=None, extname=None) -> Path:
    """Single-HDU file, data in the primary."""
    hdu = fits.PrimaryHDU(data, header=header)
    if extname:
        hdu.header["EXTNAME"] = extname
    hdu.writeto(path, overwrite=True)
    return Path(path)


def write_mef(path, shape=(48, 64), n_images=3, with_table=True, seed=0) -> Path:
    """Empty primary, ``n_images`` image extensions SCI/1..n with WCS, then a binary table."""
    hdus = [fits.PrimaryHDU()]
    hdus[0].header["TELESCOP"] = "TEST"
    for i in range(n_images):
        h = wcs_header(crpix=(30.5 + i, 20.5 - i))
        h["EXTNAME"], h["EXTVER"] = "SCI", i + 1
        hdus.append(fits.ImageHDU(sky(shape, seed=seed + i), header=h))
        if i == 0 and with_table:
            hdus.append(table_hdu())
    fits.HDUList(hdus).writeto(path, overwrite=True)
    return Path(path)


def write_fz(path, data, header=None, extname="SCI") -> Path:
    """A tile-compressed image (RICE for integers, lossless GZIP for floats) after an empty primary."""
    import fitsio

    path = Path(path)
    if path.exists():
        path.unlink()
    kind = data.dtype.kind
    with fitsio.FITS(str(path), "rw") as f:
        f.write(None)
        records = [{"name": c.keyword, "value": c.value, "comment": c.comment} for c in (header or fits.Header()).cards]
        f.write(data, header=records, extname=extname, compress="RICE" if kind in "iu" else "GZIP_2",
                **({} if kind in "iu" else {"qlevel": None}))
    return path


def gzip_file(src, dst) -> Path:
    with open(src, "rb") as fi, gzip.open(dst, "wb") as fo:
        shutil.copyfileobj(fi, fo)
    return Path(dst)


def write_scaled_int16(path, physical: np.ndarray, bscale=0.5, bzero=1000.0) -> Path:
    """An int16 image with BSCALE/BZERO, written byte for byte so that no library rescales it."""
    stored = np.round((physical - bzero) / bscale).astype(">i2")
    h = fits.PrimaryHDU(stored.astype(np.int16)).header
    h["BSCALE"], h["BZERO"] = bscale, bzero
    Path(path).write_bytes(h.tostring().encode() + stored.tobytes() + b"\0" * (-stored.nbytes % 2880))
    return Path(path)


def hdu_summary(path):
    """[(EXTNAME, kind, shape, dtype)] as astropy reads a file (compressed HDUs decompressed)."""
    with fits.open(path) as hdul:
        return [
            (h.name, type(h).__name__, None if h.data is None else h.data.shape, None if h.data is None else h.data.dtype)
            for h in hdul
        ]


def snapshot(directory) -> dict:
    """{name: bytes} of every file (hidden ones included) of a directory, to compare before/after."""
    return {p.name: p.read_bytes() for p in sorted(Path(directory).iterdir()) if p.is_file()}


def config_dir(tmp_path, flags=None, priors=None, thresh=None) -> Path:
    """A copy of the bundled configuration in ``tmp_path/cfg`` with some files replaced (14 values each)."""
    from maximask.classes import ABBRS
    from maximask.resources import default_config_dir

    d = Path(tmp_path) / "cfg"
    shutil.copytree(default_config_dir(), d)
    for name, values in (("flags", flags), ("priors", priors), ("thresh", thresh)):
        if values is not None:
            (d / f"classes.{name}").write_text("".join(f"{a} {v}\n" for a, v in zip(ABBRS, values)))
    return d
