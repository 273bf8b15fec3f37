#!/bin/bash
# Submit a sweep to Slurm: a job array of shards (sweep.sbatch) and the merge that follows it whatever
# becomes of the tasks (merge.sbatch, --dependency=afterany). The jobs run in the current folder (their
# logs, slurm-*.out, are written there; relative paths in SPEC, RESULTS and OUT are from there):
#
#   examples/slurm/submit.sh            # every shard, then the merge
#   examples/slurm/submit.sh 2          # shard 2 again (after it failed), then the merge again
#
# Variables (all optional):
#   SPEC     the spec (default experiments/lr_sweep.toml)
#   SHARDS   how many shards (default 4); keep it the same for every submission of one sweep
#   CPUS     cores per task, used as --jobs (default 2)
#   RESULTS  shard stores on shared storage (default results/shards); OUT the merged store
#            (default results/results.db); RUNNER the binary (default `runner` on PATH)
#   SBATCH_ARGS  more sbatch options for both jobs (e.g. "--partition=gpu --account=me")
# It prints the two job ids: "<array job> <merge job>".
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
SPEC=${SPEC:-experiments/lr_sweep.toml}
SHARDS=${SHARDS:-4}
CPUS=${CPUS:-2}
RESULTS=${RESULTS:-results/shards}
OUT=${OUT:-results/results.db}
RUNNER=${RUNNER:-runner}
array=${1:-0-$((SHARDS - 1))}
mkdir -p "$RESULTS"
export SPEC RESULTS OUT RUNNER MLP_RUNNER_SHARD_COUNT=$SHARDS MLP_RUNNER_EXAMPLES=$here/..
# shellcheck disable=SC2086
sweep=$(sbatch --parsable --array="$array" --cpus-per-task="$CPUS" --export=ALL ${SBATCH_ARGS:-} \
    "$here/sweep.sbatch")
sweep=${sweep%%;*}
# shellcheck disable=SC2086
merge=$(sbatch --parsable --dependency=afterany:"$sweep" --export=ALL ${SBATCH_ARGS:-} "$here/merge.sbatch")
merge=${merge%%;*}
echo "$sweep $merge"
