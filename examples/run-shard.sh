#!/bin/bash
# Train one shard of a sweep into a store on node-local scratch, and keep that store on shared storage.
# Used by the Slurm job array (slurm/sweep.sbatch) and the Kubernetes Indexed Job (k8s/sweep-job.yaml).
#
#   examples/run-shard.sh SHARD SHARDS
#
# Variables: SPEC (default experiments/lr_sweep.toml), RESULTS (shared folder for the shard stores, default
# results/shards), SCRATCH (node-local folder, default $TMPDIR or /tmp), JOBS (runs at once, default 1),
# RUNNER (default `runner` on PATH), FROM (a store to start from when this shard has none yet in RESULTS:
# for a search, the store merged after the previous rung; its decisions tell this shard what to train).
#
# Why: SQLite's WAL mode is not safe on NFS, Lustre or GPFS (where a cluster's shared folders are), so the
# store is written on node-local scratch only. It is copied to $RESULTS/shard-I-of-N.db when runner ends,
# normally or by SIGTERM (scancel, a time limit, a pod eviction), and a retried task starts from that copy
# with --private-store: the copy is this task's alone, so a run left `running` by the attempt before is
# taken over at once, from its last stored epoch, wherever that attempt ran. Exit code: runner's.
set -uo pipefail
shard=${1:?usage: run-shard.sh SHARD SHARDS}
shards=${2:?usage: run-shard.sh SHARD SHARDS}
SPEC=${SPEC:-experiments/lr_sweep.toml}
RESULTS=${RESULTS:-results/shards}
RUNNER=${RUNNER:-runner}
if ! command -v "$RUNNER" >/dev/null; then
    echo "error: $RUNNER is not on PATH on $(hostname): cargo install --path . (or set RUNNER)" >&2
    exit 2
fi
store=shard-$shard-of-$shards.db
mkdir -p "$RESULTS" || exit 2
scratch=$(mktemp -d "${SCRATCH:-${TMPDIR:-/tmp}}/mlp-runner.XXXXXX") || exit 2
# An earlier attempt's store of this shard: resume from it. Else (a search's next rung) the merged store.
for f in "$store" "$store-wal"; do
    if [ -f "$RESULTS/$f" ]; then cp "$RESULTS/$f" "$scratch/$f" || exit 2; fi
done
if [ ! -f "$scratch/$store" ] && [ -n "${FROM:-}" ] && [ -f "$FROM" ]; then
    cp "$FROM" "$scratch/$store" || exit 2
fi

# Copy the store (and a WAL that a killed runner left) back to shared storage, each file whole, in an
# order where a reader never meets the new database with the old WAL: both copied beside their targets
# first, then the old WAL removed, then the database renamed into place, then the new WAL. (A database
# without its WAL is an older consistent state; a new database with an old WAL would be corrupt.)
save() {
    [ -f "$scratch/$store" ] || return 0
    cp "$scratch/$store" "$RESULTS/.$store.partial" || return 1
    if [ -f "$scratch/$store-wal" ]; then
        cp "$scratch/$store-wal" "$RESULTS/.$store-wal.partial" || return 1
    fi
    rm -f "$RESULTS/$store-wal" || return 1
    mv -f "$RESULTS/.$store.partial" "$RESULTS/$store" || return 1
    if [ -f "$RESULTS/.$store-wal.partial" ]; then
        mv -f "$RESULTS/.$store-wal.partial" "$RESULTS/$store-wal" || return 1
    fi
}

echo "shard $shard of $shards on $(hostname): $SPEC -> $scratch/$store -> $RESULTS/$store"
MLP_RUNNER_SHARD_COUNT=$shards "$RUNNER" "$SPEC" --db "$scratch/$store" --shard "$shard/$shards" \
    --jobs "${JOBS:-1}" --private-store &
pid=$!
# SIGTERM: runner stops at once and marks its run interrupted. A scheduler may signal only this shell:
# then, after a moment (a second signal makes runner exit without marking the run), the signal is passed
# on. This shell waits for runner, then saves.
trap 'sleep 2; kill -TERM "$pid" 2>/dev/null' TERM INT
status=0
while kill -0 "$pid" 2>/dev/null; do
    wait "$pid"
    status=$?
done
save || status=2
rm -rf "$scratch"
exit "$status"
