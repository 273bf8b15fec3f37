#!/bin/bash
# Submit an adaptive search (a spec with [sweep] method = "halving" or "hyperband") to Slurm, rung by
# rung: for each round, a job array of shards that trains what the decisions so far ask for (each task
# starts from the store merged after the round before), then a merge that completes the round's rung and
# decides it from the merged store, with the decisions one process would make. Round r + 1 starts once
# merge r succeeded (--dependency=afterok); a merge fails, naming the round to re-submit, when a shard of
# its round did not finish, and Slurm then cancels the rounds after it (--kill-on-invalid-dep=yes), so
# none is left pending forever: `ROUND=<the failed round> examples/slurm/search.sh` submits them again.
#
#   SPEC=experiments/halving.toml examples/slurm/search.sh        # every round (runner plan --rounds)
#   ROUND=1 SPEC=experiments/halving.toml examples/slurm/search.sh # again from round 1 (after a failure)
#
# Variables (all optional), as for submit.sh: SPEC (default experiments/halving.toml), SHARDS (default 4),
# CPUS (default 2), RESULTS (default results/shards: round r's shard stores go to RESULTS/round-r), OUT (the
# merged store, default results/results.db), RUNNER, SBATCH_ARGS; and ROUND (the first round to submit,
# default 0). It prints the job ids of each round: "<array job> <merge job>", one line per round.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
SPEC=${SPEC:-experiments/halving.toml}
SHARDS=${SHARDS:-4}
CPUS=${CPUS:-2}
RESULTS=${RESULTS:-results/shards}
OUT=${OUT:-results/results.db}
RUNNER=${RUNNER:-runner}
first=${ROUND:-0}
rounds=$("$RUNNER" plan "$SPEC" --rounds)
export SPEC OUT RUNNER MLP_RUNNER_SHARD_COUNT=$SHARDS MLP_RUNNER_EXAMPLES=$here/..
after=()
for ((r = first; r < rounds; r++)); do
    mkdir -p "$RESULTS/round-$r"
    # shellcheck disable=SC2086
    sweep=$(RESULTS=$RESULTS/round-$r FROM=$OUT sbatch --parsable --array=0-$((SHARDS - 1)) \
        --cpus-per-task="$CPUS" --export=ALL "${after[@]}" ${SBATCH_ARGS:-} "$here/sweep.sbatch")
    sweep=${sweep%%;*}
    # shellcheck disable=SC2086
    merge=$(RESULTS=$RESULTS/round-$r ROUND=$r sbatch --parsable --dependency=afterany:"$sweep" \
        --export=ALL ${SBATCH_ARGS:-} "$here/merge.sbatch")
    merge=${merge%%;*}
    echo "$sweep $merge"
    # A later round waits for this round's merge; if the merge fails, Slurm cancels the later rounds
    # (--kill-on-invalid-dep) instead of leaving them pending forever: re-submit from the failed round.
    after=(--dependency=afterok:"$merge" --kill-on-invalid-dep=yes)
done
