#!/bin/sh
# The many-core tables: every workload whose result depends on the number of cores,
# at 16 workers (WORKERS=N for another count), ours against multiprocessing (peers
# left out to fit a short lease). One run.py per group of workloads, each writing its
# own Markdown file, so a group that runs out of time loses only its own table.
#
#   benchmarks/many_cores.sh [OUTDIR]        # default OUTDIR: benchmarks/results
#
# About 5 minutes on 16 cores. Where the tree is a copy without .git, set
# PB_BENCH_COMMIT to the commit it was copied from (the tables' headers show it).
set -u
out=${1:-benchmarks/results}
workers=${WORKERS:-16}
python=${PYTHON:-python3}
mkdir -p "$out"
group() {
    name=$1
    shift
    "$python" benchmarks/run.py --workers "$workers" --skip-peers --reps 5 "$@" \
        --markdown "$out/linux-$workers-workers-$name.md"
}
group start-trivial-stream --only startup,pool-start,trivial,stream-rate
group cpu-waiting-skewed --only cpu,waiting,skewed
group scaling --only scaling
