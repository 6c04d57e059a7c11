#!/usr/bin/env bash
# The four candidate maxitrack networks of stop 20 (docs/MAXITRACK.md, "Longer training on a GPU"),
# trained side by side on one GPU machine with Keras's JAX backend (--train-only: the calibration and
# the LiteRT export need TensorFlow and run afterwards on the CPU machine, in the same work directories).
#
#   scripts/maxitrack_gpu_runs.sh WORK SECONDS
#
# WORK: work directory; SECONDS: wall time, from the start of this script, by which the runs should
# end. The number of epochs of each run is chosen from a speed probe so that it ends in time; the
# commands actually run are written to WORK/commands.txt. Run from the repository root.
set -u
W=${1:-/root/mt}
BUDGET=${2:-1200}
export KERAS_BACKEND=jax XLA_PYTHON_CLIENT_PREALLOCATE=false PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
mkdir -p "$W"
t0=$(date +%s)
declare -A FRAMES=([A]=12000 [B]=12000 [C]=12000 [D]=24000)
declare -A WIDTHS=(
  [A]=""
  [B]="--widths 16 24 48 64 --ac-widths 12 24 48 64"
  [C]="--widths 24 32 64 96 --ac-widths 16 32 64 96"
  [D]="--widths 24 32 64 96 --ac-widths 16 32 64 96"
)
RUNS="A B C D"
echo "$(date +%T) simulating"
# (python3 -c, not a script on stdin: the worker processes are spawned and re-import __main__)
python3 -c '
import sys
from pathlib import Path
from maxitrack.train import make_tiles
from maxitrack.tiles import DEFAULT_SELECTION
sel = dict(DEFAULT_SELECTION, n_tiles=4)
for split, n in (("val", 400), ("train", 24000)):
    make_tiles(Path(sys.argv[1]) / "shared", split, n, 1, (512, 512), 128, sel, workers=16, log=lambda m: None)
' "$W" || exit 1
echo "$(date +%T) simulated ($(( $(date +%s) - t0 )) s)"
# speed probe: steps 100 and 400 of a first epoch on 4000 frames (the step time does not depend on
# the frame count);
# the difference removes the compilation and start-up time
for n in 100 400; do
  for r in $RUNS; do
    p="$W/probe_${r}_$n"; mkdir -p "$p"; ln -sfn "$W/shared/data" "$p/data"
    python3 -m maxitrack.train --work "$p" --frames 4000 --workers 4 ${WIDTHS[$r]} --epochs 10 \
        --stop-at-step $n --train-only > "$p.out" 2>&1 &
  done
  wait
done
left=$(( BUDGET - ($(date +%s) - t0) - 90 ))
: > "$W/commands.txt"
for r in $RUNS; do
  python3 - "$W" "$r" "$left" "${FRAMES[$r]}" >> "$W/epochs.txt" <<'PY'
import json, sys
w, r, left, frames = sys.argv[1], sys.argv[2], float(sys.argv[3]), int(sys.argv[4])
s = [json.load(open(f"{w}/probe_{r}_{n}/state.json"))["in_epoch"]["seconds"] for n in (100, 400)]
step = max((s[1] - s[0]) / 300, 0.002)
per_epoch = frames // 8 * step * 1.1 + 5  # 8 frames a step; validation and checkpoints
print(r, f"{step * 1000:.1f} ms/step", f"{per_epoch:.0f} s/epoch", max(2, min(40, int(left // per_epoch))))
PY
done
cat "$W/epochs.txt"
for r in $RUNS; do
  e=$(awk -v r=$r '$1 == r {print $NF}' "$W/epochs.txt")
  mkdir -p "$W/$r"; ln -sfn "$W/shared/data" "$W/$r/data"
  args="--frames ${FRAMES[$r]} ${WIDTHS[$r]} --epochs $e"
  echo "$r: maxitrack-train --work $W/$r $args --workers 4 --train-only" >> "$W/commands.txt"
  python3 -m maxitrack.train --work "$W/$r" $args --workers 4 --train-only > "$W/$r.out" 2>&1 &
done
wait
echo "$(date +%T) all runs ended ($(( $(date +%s) - t0 )) s)"
