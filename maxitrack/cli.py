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
import zlib
from pathlib import Path

import numpy as np

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


def _positive_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {text}")
    return v


def build_parser() -> argparse.ArgumentParser:
    from maximask import __version__

    ap = argparse.ArgumentParser(
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
    ap.add_argument("--batch_size", type=_positive_int, default=16, help="tiles per network call (default 16)")
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
        self.prior = prior
        self.batch_size = batch_size

    def tiles(self, image: np.ndarray) -> np.ndarray:
        from maxitrack.tiles import prepare_tiles

        return prepare_tiles(image, self.tile, self.selection, self.normalisation)

    def score(self, tiles: np.ndarray) -> float:
        """Probability of a tracking error for the field whose tiles are ``tiles`` (N, T, T, 1)."""
        from maxitrack.scoring import field_probability

        logits = [self.net.predict_logits(tiles[i : i + self.batch_size]) for i in range(0, len(tiles), self.batch_size)]
        z = np.concatenate(logits)[:, 0]
        return field_probability(z, self.training_prior, self.prior, self.calibration)


def _tiles(scorer: Scorer, task, unit, plane: int | None) -> np.ndarray:
    from maxitrack.reading import read_plane

    image = read_plane(task.path, unit, plane)
    try:
        return scorer.tiles(image)
    except ValueError as exc:
        where = f"{task.path}[{unit.index}]" + ("" if plane is None else f" plane {plane}")
        raise MaximaskError(where, str(exc)) from None


def score_task(task, scorer: Scorer, frac: float, seed: int | None, log) -> list:
    """Result lines (without newline) for one input; raises MaximaskError if it cannot be scored."""
    from maxitrack.reading import image_hdus

    lines = []
    units = image_hdus(task.path, task.hdu)
    flat = [u for u in units if u.n_planes is None]
    cubes = [u for u in units if u.n_planes is not None]
    if flat:
        chosen = choose_hdus(flat, frac, seed, task.label)
        tiles = [_tiles(scorer, task, u, None) for u in chosen]
        log(f"{task.label}: HDU(s) {', '.join(str(u.index) for u in chosen)}, {sum(len(t) for t in tiles)} tiles")
        lines.append(f"{task.label} {scorer.score(np.concatenate(tiles)):.6f}")
    for u in cubes:
        for c in range(u.n_planes):
            p = scorer.score(_tiles(scorer, task, u, c))
            lines.append(f"{task.label} HDU {u.index} Channel {c} {p:.6f}")
    return lines


def _error(exc: MaximaskError) -> None:
    print(f"{PROG}: error: {exc.path}: {exc.reason}", file=sys.stderr)


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)

    def log(msg):
        if args.verbose:
            print(f"{PROG}: {msg}", file=sys.stderr)

    from maximask.inputs import expand
    from maximask.resources import default_net_dir

    try:
        scorer = Scorer(args.net_dir or default_net_dir("maxitrack"), args.prior, args.batch_size)
        out_path = Path(args.output)
        try:
            out = open(out_path, "a")
        except OSError as exc:
            raise UsageError(out_path, f"cannot write results ({exc.strerror})") from None
    except UsageError as exc:
        _error(exc)
        return 2

    failed = False
    tasks = []
    for im_path in args.im_path:
        try:
            tasks.extend(expand(im_path))
        except MaximaskError as exc:
            _error(exc)
            failed = True
    progress = None
    if not args.quiet and not args.verbose and sys.stderr.isatty() and len(tasks) > 1:
        from tqdm import tqdm

        progress = tqdm(total=len(tasks), unit="file", file=sys.stderr)
    with out:
        for task in tasks:
            try:
                lines = score_task(task, scorer, args.frac, args.seed, log)
            except MaximaskError as exc:
                _error(exc)
                failed = True
            else:
                out.write("".join(line + "\n" for line in lines))
                out.flush()
                for line in lines:
                    log(line)
            if progress is not None:
                progress.update()
    if progress is not None:
        progress.close()
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
