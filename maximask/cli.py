"""``maximask IM_PATH [options]``: contaminant masks for FITS images.

The command parses its options, reads the configuration, loads the network once, then processes each
input with :func:`maximask.process.mask_file`. It is the only place that prints or chooses exit codes:

* 0: every input processed; 1: at least one input failed (the others were processed);
  2: usage or configuration error (nothing processed); 130/143: interrupted by SIGINT/SIGTERM.
* each failure prints one line ``maximask: error: <path>: <reason>`` on stderr;
* stdout carries only results: the path of each output written (nothing with ``-q``);
* a progress bar is drawn on stderr only when stderr is a terminal.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import traceback
from pathlib import Path

from .cli_common import OneLineParser, parse_bool, positive_int, print_error, run_interruptible
from .errors import MaximaskError, UsageError

PROG = "maximask"

def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    ap = OneLineParser(
        prog=PROG,
        description="Find contaminants (cosmic rays, hot/dead columns and pixels, persistence, trails, fringes, "
        "nebulosities, saturation, diffraction spikes, overscan, bright background) in FITS images. "
        "Writes file.masks.fits next to each input (file.masks<N>.fits for file.fits[N]).",
    )
    ap.add_argument("im_path", nargs="+",
                    help="FITS file (.fits/.fit/.fts, .fz, .gz), file.fits[N] for HDU N only, a directory, "
                         "or a .list file (one path per line)")
    ap.add_argument("--net_dir", default=None,
                    help="network directory (default: the bundled tensorflow_models/maximask)")
    ap.add_argument("--config_dir", default=None,
                    help="directory with classes.flags, classes.priors, classes.thresh (default: bundled "
                         "data/configs)")
    ap.add_argument("--prior_modif", type=parse_bool, default=True, metavar="BOOL",
                    help="rescale probabilities from the training priors to classes.priors (default true)")
    ap.add_argument("--proba_thresh", type=parse_bool, default=True, metavar="BOOL",
                    help="threshold probabilities with classes.thresh into uint8 0/1 masks (default true)")
    ap.add_argument("--single_mask", type=parse_bool, default=False, metavar="BOOL",
                    help="write one int16 plane, the sum of the bit codes of the classes over threshold "
                         "(default false; needs thresholding)")
    ap.add_argument("--batch_size", type=positive_int, default=8, metavar="N",
                    help="tiles per network call (default 8)")
    ap.add_argument("-o", "--out-dir", default=None, metavar="DIR",
                    help="write outputs in DIR (created if needed) instead of next to the inputs")
    ap.add_argument("--compress", action="store_true",
                    help="write tile-compressed outputs (RICE for masks, lossless GZIP for probabilities)")
    verb = ap.add_mutually_exclusive_group()
    verb.add_argument("-v", "--verbose", action="store_true", help="report each file and its timing on stderr")
    verb.add_argument("-q", "--quiet", action="store_true", help="print nothing but errors")
    ap.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    return ap


def _error(path, reason) -> None:
    print_error(PROG, path, reason)


def _setup(args):
    """Configuration, network and plan; UsageError for anything wrong."""
    from .config import load_config
    from .network import Network
    from .postprocess import make_plan
    from .resources import default_config_dir, default_net_dir

    if args.single_mask and not args.proba_thresh:
        raise UsageError("--single_mask", "a single mask needs thresholding (--proba_thresh true)")
    config = load_config(args.config_dir or default_config_dir(), args.prior_modif, args.proba_thresh)
    net_dir = Path(args.net_dir) if args.net_dir else default_net_dir()
    if not net_dir.is_dir():
        raise UsageError(net_dir, "network directory not found")
    network = Network(net_dir)
    plan = make_plan(network.metadata.classes, config.flags, network.metadata.training_priors,
                     config.priors, config.thresholds, args.single_mask)
    if args.out_dir is not None:
        out_dir = Path(args.out_dir)
        if out_dir.exists() and not out_dir.is_dir():
            raise UsageError(out_dir, "output directory is not a directory")
        try:
            out_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise UsageError(out_dir, f"cannot create output directory ({exc.strerror})") from None
        if not out_dir.is_dir():
            raise UsageError(out_dir, "output directory is not a directory")
        if not os.access(out_dir, os.W_OK | os.X_OK):
            raise UsageError(out_dir, "output directory is not writable")
    return network, plan


def _tasks(im_paths, out_dir):
    """Expand every IM_PATH; report those that fail and outputs that would collide."""
    from .inputs import expand, output_path

    tasks, failed, seen = [], False, {}
    for im_path in im_paths:
        try:
            expanded = expand(im_path)
        except MaximaskError as exc:
            _error(exc.path, exc.reason)
            failed = True
            continue
        for task in expanded:
            dest = output_path(task, out_dir).resolve()
            if dest in seen:
                _error(task.label, f"its output {dest} would overwrite the output of {seen[dest]}")
                failed = True
                continue
            seen[dest] = task.label
            tasks.append(task)
    return tasks, failed


def main(argv=None) -> int:
    """Run the command; returns the exit code (the console script passes it to ``sys.exit``)."""
    try:
        args = build_parser().parse_args(argv)
    except UsageError as exc:
        _error(exc.path, exc.reason)
        return 2
    except SystemExit as exc:  # --help, --version
        return int(exc.code or 0)

    return run_interruptible(_run, args)


def _run(args) -> int:
    from .process import mask_file

    try:
        network, plan = _setup(args)
    except UsageError as exc:
        _error(exc.path, exc.reason)
        return 2

    def log(msg):
        if args.verbose:
            print(f"{PROG}: {msg}", file=sys.stderr, flush=True)

    tasks, failed = _tasks(args.im_path, args.out_dir)
    log(f"network {network.net_dir} (id {network.model_id}), output {plan.mode}, "
        f"classes {', '.join(network.metadata.classes[c] for c in plan.channels)}")
    show_progress = not args.quiet and sys.stderr.isatty()
    for task in tasks:
        bar = None
        t0 = time.perf_counter()

        def start(total, task=task):
            nonlocal bar
            if show_progress:
                from tqdm import tqdm

                bar = tqdm(total=total, unit="tile", desc=Path(task.label).name, leave=False, file=sys.stderr)

        try:
            out = mask_file(task, network, plan, out_dir=args.out_dir, batch_size=args.batch_size,
                            compress=args.compress, progress=lambda n: bar is not None and bar.update(n),
                            start=start)
        except MaximaskError as exc:
            _error(exc.path, exc.reason)
            failed = True
        except KeyboardInterrupt:
            _error(task.label, "interrupted: no output written")
            raise
        except Exception as exc:  # a bug, or a failure we did not foresee: report it, go on
            _error(task.label, f"unexpected {type(exc).__name__}: {exc}")
            if args.verbose:
                traceback.print_exc(file=sys.stderr)
            failed = True
        else:
            if not args.quiet:
                print(out, flush=True)
            log(f"{task.label} -> {out} ({time.perf_counter() - t0:.2f} s)")
        finally:
            if bar is not None:
                bar.close()
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
