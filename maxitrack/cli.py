"""``maxitrack IM_PATH [options]``: the probability that each exposure suffers a tracking error.

For each input it appends one line to ``maxitrack.out`` in the working directory (or to ``-o FILE``):

* ``path score`` for the 2D image HDUs of a file, taken together as one field (or for the one HDU
  of ``file.fits[N]``);
* ``path HDU h Channel c score`` for each plane ``c`` of a 3D cube in HDU ``h``.

``score`` is the probability (6 decimals) that the field suffers a tracking error, for a population
in which a fraction ``--prior`` of the exposures is affected. How the tiles of a field are chosen
and combined: :mod:`maxitrack.tiles`, :mod:`maxitrack.scoring`.

Exit codes, error lines (``maxitrack: error: <path>: <reason>``) and the handling of bad inputs are
those of ``maximask``.
"""

from __future__ import annotations

import argparse
import sys
import time
import traceback
import zlib
from pathlib import Path

import numpy as np

from maximask.cli_common import OneLineParser, positive_int, print_error, run_interruptible
from maximask.errors import MaximaskError, UsageError

PROG = "maxitrack"
DEFAULT_OUTPUT = "maxitrack.out"


def _probability(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0.0 < v < 1.0:
        raise argparse.ArgumentTypeError(f"must be in (0, 1), got {text}")
    return v


def _fraction(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0.0 < v <= 1.0:
        raise argparse.ArgumentTypeError(f"must be in (0, 1], got {text}")
    return v


def build_parser() -> argparse.ArgumentParser:
    from maximask import __version__

    ap = OneLineParser(
        prog=PROG,
        description="Probability that astronomical exposures suffer a tracking error "
        "(one line per field appended to maxitrack.out).",
    )
    ap.add_argument("im_path", nargs="+", help="FITS file (optionally file.fits[N]), directory, or .list file")
    ap.add_argument("--net_dir", default=None, help="network directory (default: the bundled maxitrack network)")
    ap.add_argument("--prior", type=_probability, default=0.05,
                    help="expected fraction of exposures with a tracking error (default 0.05)")
    ap.add_argument("--frac", type=_fraction, default=1.0,
                    help="use a random fraction of the 2D HDUs of each file, at least one (default 1)")
    ap.add_argument("--seed", type=int, default=None, help="seed of the --frac draw (reproducible results)")
    ap.add_argument("--batch_size", type=positive_int, default=16, help="tiles per network call (default 16)")
    ap.add_argument("-o", "--output", default=DEFAULT_OUTPUT,
                    help="file the results are appended to (default: maxitrack.out in the working directory)")
    verb = ap.add_mutually_exclusive_group()
    verb.add_argument("-v", "--verbose", action="store_true", help="say what is done (on stderr)")
    verb.add_argument("-q", "--quiet", action="store_true", help="no progress bar or messages, errors only")
    ap.add_argument("--version", action="version", version=f"{PROG} (maximask {__version__})")
    return ap


def choose_hdus(hdus: list, frac: float, seed: int | None, label: str) -> list:
    """The random fraction ``frac`` of a file's 2D HDUs that ``--frac`` keeps (at least one).

    The draw depends only on ``seed`` and the file's label, so a given file gets the same HDUs
    whatever the other inputs; without a seed it is not reproducible.
    """
    if frac >= 1.0 or len(hdus) <= 1:
        return list(hdus)
    k = max(1, int(round(frac * len(hdus))))
    rng = np.random.default_rng(None if seed is None else (seed, zlib.crc32(label.encode())))
    keep = np.sort(rng.choice(len(hdus), size=k, replace=False))
    return [hdus[i] for i in keep]


class Scorer:
    """Tiles -> network -> field probability, with the network's metadata."""

    def __init__(self, net_dir, prior: float, batch_size: int):
        from maximask.network import Network

        self.net = Network(net_dir)
        meta = self.net.metadata
        if meta.classes != ["TRACKING_ERROR"] or len(meta.training_priors) != 1:
            raise UsageError(net_dir, "not a maxitrack network (classes must be ['TRACKING_ERROR'])")
        pi = float(meta.training_priors[0])
        if not 0.0 < pi < 1.0:
            raise UsageError(net_dir, f"training prior {pi} outside (0, 1)")
        self.training_prior = pi
        self.tile = int(meta.tile_size)
        self.selection = dict(meta.extra.get("tiles") or {})
        self.calibration = meta.extra.get("calibration")
        self.normalisation = dict(meta.normalisation)
        self.input = str(meta.extra.get("input", "tile"))  # what the network is fed from the tiles
        from maxitrack.scoring import DoubleImageTerm, FieldRotationTerm, StarElongationTerm

        try:
            self.double_images = DoubleImageTerm.from_metadata(meta.double_images)
            self.field_rotation = FieldRotationTerm.from_metadata(meta.field_rotation)
            self.star_elongation = StarElongationTerm.from_metadata(meta.star_elongation)
            if self.star_elongation is not None and self.field_rotation is None:
                raise ValueError("star_elongation needs field_rotation (whose stars it uses)")
        except ValueError as exc:
            raise UsageError(net_dir, f"malformed metadata: {exc}") from None
        self.prior = prior
        self.batch_size = batch_size

    def tiles(self, image: np.ndarray) -> np.ndarray:
        return self.hdu(image).tiles

    def hdu(self, image: np.ndarray):
        """:func:`maxitrack.tiles.prepare_hdu` of one HDU (or cube plane) as this network needs it:
        its compact peaks too when the network has a double-image term, its stars' shapes when it
        has a field-rotation term."""
        from maxitrack.tiles import prepare_hdu

        stars = None if self.field_rotation is None else self.field_rotation.params
        return prepare_hdu(image, self.tile, self.selection, self.normalisation,
                           with_peaks=self.double_images is not None, stars=stars)

    def field_pairs(self):
        """An empty :class:`maxitrack.double_images.FieldPairs` for one field (None when the network
        has no double-image term)."""
        if self.double_images is None:
            return None
        from maxitrack.double_images import FieldPairs

        return FieldPairs(self.double_images.params)

    def field_rotation_statistic(self):
        """An empty :class:`maxitrack.field_rotation.FieldRotation` for one field (None when the
        network has no field-rotation term)."""
        if self.field_rotation is None:
            return None
        from maxitrack.field_rotation import FieldRotation

        return FieldRotation(self.field_rotation.params)

    def field_statistics(self) -> tuple:
        """Empty accumulators of one field's statistics, in :meth:`score`'s order: ``(pairs,
        rotation, elongation)``, each None where the network has no such term."""
        return self.field_pairs(), self.field_rotation_statistic(), self.star_elongation_statistic()

    def star_elongation_statistic(self):
        """An empty :class:`maxitrack.star_elongation.FieldElongation` for one field (None when the
        network has no star-elongation term); it reads the stars the field-rotation term measures."""
        if self.star_elongation is None:
            return None
        from maxitrack.star_elongation import FieldElongation

        return FieldElongation(self.field_rotation.params, self.star_elongation.params.get("sigmas", 0.0))

    def logits(self, tiles: np.ndarray) -> np.ndarray:
        """Network logits (N, 1) of prepared tiles (N, T, T, 1) (the network input made from them
        as the metadata says: :func:`maxitrack.tiles.network_input`)."""
        from maxitrack.tiles import network_input

        return self.net.predict_logits(network_input(tiles, self.input))

    def score(self, tiles: np.ndarray, pairs=None, rotation=None, elongation=None) -> float:
        """Probability of a tracking error for the field whose tiles are ``tiles`` (N, T, T, 1)
        and, for a network with a double-image term, whose peak pairs are ``pairs``
        (:meth:`field_pairs`, filled with every HDU of the field); for a network with a
        field-rotation term, whose star shapes are in ``rotation``
        (:meth:`field_rotation_statistic`, likewise), and with a star-elongation term in
        ``elongation`` (:meth:`star_elongation_statistic`) too."""
        from maxitrack.scoring import field_probability

        logits = [self.logits(tiles[i : i + self.batch_size]) for i in range(0, len(tiles), self.batch_size)]
        z = np.concatenate(logits)[:, 0]
        extra = 0.0
        if self.double_images is not None:
            if pairs is None:
                raise ValueError("this network scores a field from its peak pairs too")
            extra = self.double_images(pairs.significance())
        if self.field_rotation is not None:
            if rotation is None:
                raise ValueError("this network scores a field from its stars' shapes too")
            extra += self.field_rotation(rotation.significance())
        if self.star_elongation is not None:
            if elongation is None:
                raise ValueError("this network scores a field from its stars' mean elongation too")
            extra += self.star_elongation(elongation.percent())
        return field_probability(z, self.training_prior, self.prior, self.calibration, extra)


def score_task(task, scorer: Scorer, frac: float, seed: int | None, log) -> list:
    """Result lines (without newline) for one input; raises MaximaskError if it cannot be scored.

    A file is scored completely or not at all: an HDU that cannot be read or normalised (all NaN,
    constant) fails the whole file, as in maximask.
    """
    from maximask.fitsio_io import open_task

    with open_task(task) as src:
        hdus = src.hdus
        images = [hdus[task.hdu]] if task.hdu is not None else [h for h in hdus if h.is_image]

        def tiles(info, plane, data, field):
            # the error names the HDU, unless the file or the task has only one (as maximask)
            where = task.label if task.hdu is not None or len(hdus) == 1 else f"{task.label}[{info.index}]"
            if plane is not None:
                where += f" plane {plane}"
            try:
                prepared = scorer.hdu(data)
            except ValueError as exc:
                raise MaximaskError(where, str(exc)) from None
            pairs, rotation, elongation = field
            if pairs is not None:
                pairs.add(prepared.peaks)
            if rotation is not None:
                rotation.add(prepared.stars)
            if elongation is not None:
                elongation.add(prepared.stars)
            return prepared.tiles

        lines = []
        flat = [h for h in images if len(h.shape) == 2]
        if flat:
            chosen = choose_hdus(flat, frac, seed, task.label)
            # the field's HDUs together: a mosaic's CCDs moved as one
            field = scorer.field_statistics()
            t = np.concatenate([tiles(h, None, src.read_image(h.index), field) for h in chosen])
            log(f"{task.label}: HDU {', '.join(str(h.index) for h in chosen)}: {len(t)} tiles")
            lines.append(f"{task.label} {scorer.score(t, *field):.6f}")
        for h in images:
            if len(h.shape) == 3:
                cube = src.read_image(h.index)
                for c in range(cube.shape[0]):
                    field = scorer.field_statistics()
                    p = scorer.score(tiles(h, c, cube[c], field), *field)
                    lines.append(f"{task.label} HDU {h.index} Channel {c} {p:.6f}")
    return lines


def _error(exc: MaximaskError) -> None:
    print_error(PROG, exc.path, exc.reason)


def main(argv=None) -> int:
    """Run the command; returns the exit code (the console script passes it to ``sys.exit``)."""
    try:
        args = build_parser().parse_args(argv)
    except UsageError as exc:
        _error(exc)
        return 2
    except SystemExit as exc:  # --help, --version
        return int(exc.code or 0)
    # SIGTERM handled as maximask does: the results already appended stay, the exit code is 143
    return run_interruptible(_run, args)


def _run(args) -> int:
    def log(msg):
        if args.verbose:
            print(f"{PROG}: {msg}", file=sys.stderr, flush=True)

    from maximask.inputs import expand
    from maximask.resources import default_net_dir

    try:
        net_dir = Path(args.net_dir) if args.net_dir else default_net_dir("maxitrack")
        if not net_dir.is_dir():
            raise UsageError(net_dir, "network directory not found")
        scorer = Scorer(net_dir, args.prior, args.batch_size)
        out_path = Path(args.output)
        try:
            out = open(out_path, "a")
        except OSError as exc:
            raise UsageError(out_path, f"cannot write results ({exc.strerror})") from None
    except UsageError as exc:
        _error(exc)
        return 2
    log(f"network {scorer.net.net_dir} (id {scorer.net.model_id}), training prior {scorer.training_prior:.4g}, "
        f"prior {args.prior:.4g}, results appended to {out_path}")

    failed = False
    tasks = []
    for im_path in args.im_path:
        try:
            tasks.extend(expand(im_path))
        except MaximaskError as exc:
            _error(exc)
            failed = True
    progress = None
    if not args.quiet and sys.stderr.isatty():
        from tqdm import tqdm

        progress = tqdm(total=len(tasks), unit="file", file=sys.stderr, leave=False)
    with out:
        for task in tasks:
            t0 = time.perf_counter()
            try:
                lines = score_task(task, scorer, args.frac, args.seed, log)
            except MaximaskError as exc:
                _error(exc)
                failed = True
            except KeyboardInterrupt:
                raise
            except Exception as exc:  # a bug, or a failure we did not foresee: report it, go on
                _error(MaximaskError(task.label, f"unexpected {type(exc).__name__}: {exc}"))
                if args.verbose:
                    traceback.print_exc(file=sys.stderr)
                failed = True
            else:
                # one write per input, flushed: a crash later never leaves a partial line
                out.write("".join(line + "\n" for line in lines))
                out.flush()
                for line in lines:
                    log(f"{line} ({time.perf_counter() - t0:.2f} s)")
            if progress is not None:
                progress.update()
    if progress is not None:
        progress.close()
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
