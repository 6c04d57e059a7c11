"""FITS input and output.

Reading uses fitsio (CFITSIO): it reads tile-compressed (``.fz``) and gzipped files and applies
BZERO/BSCALE; each HDU's pixels are read once. The input is opened read-only.

Writing streams one HDU at a time into a temporary file in the destination directory, renamed to the
final name only when complete (:class:`OutputFile`), so that neither a crash nor an interrupt leaves
a partial output under the final name:

* an HDU that is not processed (table, empty primary, 1-D image...) is copied byte for byte, header
  and data intact;
* an uncompressed output image is written directly (header built with astropy, which writes floats
  at full precision, data big-endian);
* a tile-compressed output image (``--compress``) is written by CFITSIO.
"""

from __future__ import annotations

import gzip
import os
import re
import tempfile
from pathlib import Path
from typing import NamedTuple

import numpy as np

from .errors import MaximaskError


class _LazyAstropyFits:
    """``astropy.io.fits``, imported on first use: reading needs only fitsio, and importing
    astropy costs 0.5-1.5 s, which alone would break maxitrack's speed target."""

    def __getattr__(self, name):
        from astropy.io import fits

        return getattr(fits, name)


afits = _LazyAstropyFits()

BLOCK = 2880
_GZIP_MAGIC = b"\x1f\x8b"

#: Tile compression of integer masks (lossless; uint8 0/1 planes shrink to a few percent).
INTEGER_COMPRESSION = "RICE_1"
#: Tile compression of float32 probabilities: lossless (no quantisation).
FLOAT_COMPRESSION = "GZIP_2"


class HDUInfo(NamedTuple):
    """What the reader knows about one input HDU without reading its pixels.

    Attributes
    ----------
    index : int
        0-based HDU number.
    exttype : str
        fitsio's type: ``"IMAGE_HDU"``, ``"BINARY_TBL"`` or ``"ASCII_TBL"``.
    shape : tuple of int
        Image shape in numpy order ((H, W) or (P, H, W)...); () for tables and empty HDUs.
    compressed : bool
        A tile-compressed image.
    """

    index: int
    exttype: str
    shape: tuple
    compressed: bool

    @property
    def is_image(self) -> bool:
        """True for a 2-D image or a 3-D cube: the HDUs that maximask processes."""
        return self.exttype == "IMAGE_HDU" and len(self.shape) in (2, 3) and min(self.shape) > 0


def _describe(exc: BaseException) -> str:
    """One line from a CFITSIO/OS error message."""
    text = " ".join(str(exc).split())
    return text[:200] if text else type(exc).__name__


class InputFile:
    """A FITS file opened read-only.

    Parameters
    ----------
    path : path
        The file (plain, gzipped or with tile-compressed HDUs).

    Raises
    ------
    MaximaskError
        Missing or unreadable file, not FITS, corrupt header.

    Use as a context manager; :attr:`hdus` lists the HDUs.
    """

    def __init__(self, path):
        import fitsio

        self.path = Path(path)
        if not self.path.exists():
            raise MaximaskError(self.path, "no such file")
        if self.path.is_dir():
            raise MaximaskError(self.path, "is a directory, not a FITS file")
        try:
            with open(self.path, "rb") as f:
                magic = f.read(2)
        except OSError as exc:
            raise MaximaskError(self.path, f"cannot read file ({exc.strerror})") from None
        if not magic:
            raise MaximaskError(self.path, "empty file, not FITS")
        self._gzipped = magic == _GZIP_MAGIC
        try:
            self._fits = fitsio.FITS(str(self.path), "r")
        except (OSError, ValueError, RuntimeError) as exc:
            raise MaximaskError(self.path, f"not a readable FITS file ({_describe(exc)})") from None
        try:
            self.hdus = [self._info(i, hdu) for i, hdu in enumerate(self._fits)]
        except (OSError, ValueError, RuntimeError) as exc:
            self.close()
            raise MaximaskError(self.path, f"corrupt FITS file ({_describe(exc)})") from None

    @staticmethod
    def _info(index, hdu) -> HDUInfo:
        exttype = hdu.get_exttype()
        if exttype == "IMAGE_HDU":
            return HDUInfo(index, exttype, tuple(int(n) for n in hdu.get_dims()), bool(hdu.is_compressed()))
        return HDUInfo(index, exttype, (), False)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self):
        fits = getattr(self, "_fits", None)
        if fits is not None:
            fits.close()
            self._fits = None

    def copied_keywords(self, index: int) -> afits.Header:
        """The keywords of an HDU that its output may carry (WCS, EXTNAME, EXTVER), verbatim.

        For a compressed image they are read from its binary-table header, which carries the
        image's WCS and EXTNAME unchanged. Pass the result to :func:`wcs_cards`.
        """
        try:
            cards = self._fits[index].read_header_list()
        except (OSError, ValueError, RuntimeError) as exc:
            raise MaximaskError(self.path, f"HDU {index}: corrupt header ({_describe(exc)})") from None
        header = afits.Header()
        for rec in cards:
            name = rec.get("name")
            if name and _copied(name):
                try:
                    header.append(afits.Card.fromstring(rec["card_string"]))
                except Exception:  # a malformed card outside the FITS standard: not ours to fix
                    continue
        return header

    def read_image(self, index: int) -> np.ndarray:
        """Pixels of an image HDU, BZERO/BSCALE applied, native byte order.

        Raises
        ------
        MaximaskError
            Truncated or corrupt data.
        """
        try:
            data = self._fits[index].read()
        except (OSError, ValueError, RuntimeError) as exc:
            raise MaximaskError(self.path, f"HDU {index}: truncated or corrupt data ({_describe(exc)})") from None
        if data is None:
            raise MaximaskError(self.path, f"HDU {index}: no image data")
        if not data.dtype.isnative:
            data = data.astype(data.dtype.newbyteorder("="))
        return data

    def raw_hdu(self, index: int) -> bytes:
        """Header and data of an HDU, byte for byte as in the (decompressed) file."""
        offsets = self._fits[index].get_offsets()
        start, end = offsets["header_start"], offsets["data_end"]
        opener = gzip.open if self._gzipped else open
        try:
            with opener(self.path, "rb") as f:
                f.seek(start)
                raw = f.read(end - start)
        except (OSError, EOFError) as exc:
            raise MaximaskError(self.path, f"HDU {index}: cannot copy ({_describe(exc)})") from None
        if len(raw) != end - start:
            raise MaximaskError(self.path, f"HDU {index}: truncated FITS file")
        return raw


# --- WCS and identification keywords copied from an input HDU to its output -------------------------

_ALT = r"[A-Z]?"
_AXIS1 = re.compile(rf"^(CTYPE|CUNIT|CRVAL|CRPIX|CDELT|CROTA|CRDER|CSYER|CNAME)(\d)({_ALT})$")
_AXIS2 = re.compile(rf"^(PC|CD)(\d)_(\d)({_ALT})$")
_PARAM = re.compile(rf"^(PV|PS)(\d)_(\d+)({_ALT})$")
_IRAF1 = re.compile(r"^(LTV)(\d)()$")
_IRAF2 = re.compile(r"^(LTM)(\d)_(\d)()$")
_WAT = re.compile(r"^(WAT)(\d)_(\d{3})$")
_SIP = re.compile(r"^(A|B|AP|BP)_(ORDER|DMAX|\d+_\d+)$")
_GLOBAL = re.compile(
    rf"^((WCSNAME|RADESYS|EQUINOX|LONPOLE|LATPOLE|RESTFRQ|RESTWAV|SPECSYS|SSYSOBS|VELOSYS|ZSOURCE|"
    rf"SSYSSRC|VELANGL){_ALT}|RADECSYS|EPOCH|RESTFREQ|MJD-OBS|DATE-OBS|MJD-AVG|DATE-AVG|MJDREF|MJDREFI|"
    rf"MJDREFF|DATEREF|TIMESYS|TIMEUNIT|OBSGEO-[XYZ]|EXTNAME|EXTVER)$"
)
_ALL = (_AXIS1, _AXIS2, _PARAM, _IRAF1, _IRAF2, _WAT, _SIP, _GLOBAL)


def _copied(name: str) -> bool:
    """True for a keyword that may be copied to the output."""
    return any(p.match(name) for p in _ALL)


def wcs_cards(header: afits.Header, axis_map: dict[int, int]) -> list[afits.Card]:
    """WCS keywords (and EXTNAME/EXTVER) of an input header, renumbered for the output axes.

    Parameters
    ----------
    header : astropy.io.fits.Header
        Input HDU header.
    axis_map : dict
        FITS axis number in the input -> axis number in the output (1-based, FITS order). For an
        image (H, W) written as (K, H, W): ``{1: 1, 2: 2}``; for a cube (P, H, W) written as
        (P, K, H, W): ``{1: 1, 2: 2, 3: 4}``. Keywords of axes not in the map are dropped.

    Returns
    -------
    list of astropy.io.fits.Card
        Unchanged cards are kept verbatim. Celestial (TAN, SIP, TPV, IRAF TNX/ZPX ``WAT``) and
        spectral/time keywords are recognised; ``WCSAXES`` is dropped since the output axes differ.
    """
    out = []
    for card in header.cards:
        key = card.keyword
        for pattern in (_AXIS1, _AXIS2, _PARAM, _IRAF1, _IRAF2, _WAT):
            m = pattern.match(key)
            if m is None:
                continue
            prefix, *rest = m.groups()
            if pattern is _WAT:
                axis, nnn = int(rest[0]), rest[1]
                if axis == 0:
                    out.append(card)
                elif axis in axis_map:
                    out.append(_renamed(card, f"WAT{axis_map[axis]}_{nnn}"))
                break
            alt = rest[-1]
            if pattern is _PARAM:  # PVi_m: i is an axis, m a parameter number
                axis, param = int(rest[0]), rest[1]
                if axis in axis_map:
                    out.append(_renamed(card, f"{prefix}{axis_map[axis]}_{param}{alt}"))
                break
            axes = [int(a) for a in rest[:-1]]
            if all(a in axis_map for a in axes):
                new = [str(axis_map[a]) for a in axes]
                out.append(_renamed(card, f"{prefix}{'_'.join(new)}{alt}"))
            break
        else:
            if _SIP.match(key) or _GLOBAL.match(key):
                out.append(card)
    return out


def _renamed(card: afits.Card, key: str) -> afits.Card:
    return card if key == card.keyword else afits.Card(key, card.value, card.comment)


def open_task(task) -> InputFile:
    """Open the file of a work-list task and check that it has something to process.

    Parameters
    ----------
    task : maximask.inputs.Task
        ``task.hdu`` is the HDU named by ``file.fits[N]``, or None for every image HDU.

    Returns
    -------
    InputFile
        Open; the caller closes it (use it as a context manager).

    Raises
    ------
    MaximaskError
        Named after ``task.label``: the file cannot be read, the selected HDU cannot be processed, or
        the file holds no 2-D image or 3-D cube.
    """
    from .cli_common import check_selected

    try:
        src = InputFile(task.path)
    except MaximaskError as exc:
        raise MaximaskError(task.label, exc.reason) from None
    try:
        if task.hdu is not None:
            check_selected(task, src.hdus)
        elif not any(h.is_image for h in src.hdus):
            raise MaximaskError(task.label, "no 2-D image or 3-D cube HDU in the file")
    except BaseException:
        src.close()
        raise
    return src


# --- output -------------------------------------------------------------------------------------------

_BITPIX = {np.dtype(np.uint8): 8, np.dtype(np.int16): 16, np.dtype(np.int32): 32, np.dtype(np.float32): -32,
           np.dtype(np.float64): -64}


def image_header(shape: tuple, dtype, primary: bool, cards=()) -> afits.Header:
    """Header of an uncompressed image HDU.

    Parameters
    ----------
    shape : tuple of int
        Data shape in numpy order.
    dtype : numpy dtype
        uint8, int16, int32, float32 or float64.
    primary : bool
        Primary HDU (``SIMPLE``) or image extension (``XTENSION = 'IMAGE'``).
    cards : iterable of astropy Card or (keyword, value, comment)
        Written after the structural keywords, in order.
    """
    h = afits.Header()
    if primary:
        h.append(("SIMPLE", True, "conforms to FITS standard"))
    else:
        h.append(("XTENSION", "IMAGE", "image extension"))
    h.append(("BITPIX", _BITPIX[np.dtype(dtype)], "array data type"))
    h.append(("NAXIS", len(shape), "number of array dimensions"))
    for i, n in enumerate(reversed(shape), start=1):
        h.append((f"NAXIS{i}", int(n)))
    if primary:
        h.append(("EXTEND", True))
    else:
        h.append(("PCOUNT", 0, "number of parameters"))
        h.append(("GCOUNT", 1, "number of groups"))
    for card in cards:
        h.append(card, end=True)
    return h


class OutputFile:
    """An output FITS file written HDU by HDU under a temporary name, then renamed.

    Parameters
    ----------
    path : path
        Final name. The temporary file ``.<name>.<random>.part`` is created in the same directory,
        so that the rename is atomic.
    compress : bool
        Write output images tile-compressed.

    Raises
    ------
    MaximaskError
        The destination directory is missing or not writable.

    Use as a context manager: leaving the block with an exception (KeyboardInterrupt included)
    deletes the temporary file; :meth:`commit` renames it to the final name.
    """

    def __init__(self, path, compress: bool = False):
        self.path = Path(path)
        self.compress = compress
        self.n_hdus = 0
        try:
            fd, tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=".part", dir=self.path.parent)
        except OSError as exc:
            raise MaximaskError(self.path.parent, f"cannot write output directory ({exc.strerror})") from None
        self.tmp_path = Path(tmp)
        try:
            os.close(fd)
            # mkstemp creates 0600; outputs get the permissions of any new file (umask)
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(self.tmp_path, 0o666 & ~umask)
        except BaseException:  # an interrupt here must not leave the temporary file behind
            self.discard()
            raise

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is not None:
            self.discard()

    def _check_write(self, fn, *args):
        try:
            return fn(*args)
        except OSError as exc:
            raise MaximaskError(self.path, f"cannot write output ({_describe(exc)})") from None

    def copy_raw(self, raw: bytes) -> None:
        """Append an HDU copied byte for byte (header and data, 2880-byte padded)."""
        def write():
            with open(self.tmp_path, "ab") as f:
                f.write(raw)

        self._check_write(write)
        self.n_hdus += 1

    def write_image(self, data: np.ndarray, cards=()) -> None:
        """Append an image HDU (the primary HDU when it is the first one).

        Parameters
        ----------
        data : ndarray
            uint8, int16 or float32 image, any number of axes, numpy order.
        cards : iterable of astropy Card or (keyword, value, comment)
            Header keywords after the structural ones.

        Notes
        -----
        A compressed image cannot be the primary HDU: as fpack does, CFITSIO then writes an empty
        primary HDU followed by the compressed image.
        """
        if self.compress:
            self._check_write(self._write_compressed, data, cards)
        else:
            self._check_write(self._write_plain, data, cards)
        self.n_hdus += 1

    def _write_plain(self, data, cards):
        header = image_header(data.shape, data.dtype, primary=self.n_hdus == 0, cards=cards)
        big = data.dtype.newbyteorder(">")
        with open(self.tmp_path, "ab") as f:
            f.write(header.tostring().encode("ascii"))
            # plane by plane: byte-swapping a whole float32 cube would double the memory
            planes = data.reshape((-1,) + data.shape[-2:]) if data.ndim >= 2 else data[None]
            for plane in planes:
                f.write(plane.astype(big, copy=False).tobytes())
            nbytes = data.size * data.dtype.itemsize
            f.write(b"\0" * (-nbytes % BLOCK))

    def _write_compressed(self, data, cards):
        import fitsio

        method = FLOAT_COMPRESSION if data.dtype.kind == "f" else INTEGER_COMPRESSION
        kwargs = {"qlevel": None} if data.dtype.kind == "f" else {}
        with fitsio.FITS(str(self.tmp_path), "rw", clobber=self.n_hdus == 0) as f:
            f.create_image_hdu(dims=data.shape, dtype=data.dtype, compress=method, **kwargs)
            hdu = f[-1]
            for card in cards:
                card = card if isinstance(card, afits.Card) else afits.Card(*card)
                # write_record keeps astropy's card image, hence full-precision floats
                # (fitsio's write_key rounds floats to 15 significant digits)
                f._FITS.write_record(hdu.get_extnum() + 1, card.image)
            hdu.write(np.ascontiguousarray(data))
        if self.n_hdus == 0:
            self.n_hdus += 1  # the empty primary HDU CFITSIO added

    def commit(self) -> Path:
        """Rename the temporary file to the final name; returns the final path."""
        self._check_write(os.replace, self.tmp_path, self.path)
        return self.path

    def discard(self) -> None:
        """Delete the temporary file (no error if already gone)."""
        try:
            self.tmp_path.unlink()
        except FileNotFoundError:
            pass
