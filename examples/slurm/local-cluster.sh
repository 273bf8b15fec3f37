#!/bin/bash
# A real test of the Slurm example on a one-node Slurm cluster brought up on this machine.
#
# It installs Debian's slurm-wlm and munge when they are missing, starts munged, slurmctld and slurmd
# directly (no systemd), submits the shipped example (submit.sh, sweep.sbatch and merge.sbatch, unchanged:
# only the variables they document are set), cancels one task of the array while it trains and checks
# that the merge names what that shard owes and fails, re-submits that task, waits for the merge, then
# checks that the merged store equals the same sweep trained in one process (same runs, weights hashes,
# epoch rows) and that `runner verify --all` says identical for every run. Then it runs an adaptive search
# with search.sh, rung by rung (a job array and a merge per round), and checks that its decisions and bits
# equal the same search in one process. It stops the daemons it started. Any step that fails fails the
# script (exit 1): under CI nothing is skipped.
#
# Usage (as root, from anywhere): examples/slurm/local-cluster.sh
set -euo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
work=$(mktemp -d /tmp/mlp-slurm.XXXXXX)
log() { echo "[local-cluster] $*"; }
fail() { echo "[local-cluster] FAILED: $*" >&2; exit 1; }
[ "$(id -u)" -eq 0 ] || fail "run as root (it installs packages and starts the Slurm daemons)"

# 1. Slurm and munge.
if ! command -v slurmctld >/dev/null || ! command -v munged >/dev/null; then
    log "installing slurm-wlm and munge"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends slurm-wlm munge >/dev/null
fi
command -v sbatch >/dev/null || fail "sbatch is not installed"

# 2. A one-node cluster, its state in $work.
pids=()
stop() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
    log "daemons stopped"
}
trap stop EXIT
if [ ! -s /etc/munge/munge.key ]; then
    mungekey --create --force >/dev/null 2>&1 || dd if=/dev/urandom of=/etc/munge/munge.key bs=1k count=1 2>/dev/null
fi
chown munge:munge /etc/munge/munge.key && chmod 400 /etc/munge/munge.key
mkdir -p /run/munge /var/log/munge /var/lib/munge
chown munge:munge /run/munge /var/log/munge /var/lib/munge
if ! munge -n </dev/null >/dev/null 2>&1; then
    runuser -u munge -- /usr/sbin/munged --foreground --force >"$work/munged.log" 2>&1 &
    pids+=($!)
    for _ in $(seq 50); do munge -n </dev/null >/dev/null 2>&1 && break; sleep 0.1; done
fi
munge -n </dev/null | unmunge >/dev/null || fail "munge does not work (see $work/munged.log)"

node=$(hostname -s)
cpus=$(nproc)
mem=$(( $(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 - 512 ))
mkdir -p "$work/state" "$work/spool"
export SLURM_CONF=$work/slurm.conf
cat > "$SLURM_CONF" <<CONF
ClusterName=local
SlurmctldHost=$node
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
MpiDefault=none
SlurmctldPort=16817
SlurmdPort=16818
StateSaveLocation=$work/state
SlurmdSpoolDir=$work/spool
SlurmctldPidFile=$work/slurmctld.pid
SlurmdPidFile=$work/slurmd.pid
SlurmctldLogFile=$work/slurmctld.log
SlurmdLogFile=$work/slurmd.log
KillWait=30
NodeName=$node CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=local Nodes=$node Default=YES MaxTime=INFINITE State=UP
CONF
/usr/sbin/slurmctld -D -i -f "$SLURM_CONF" >"$work/slurmctld.out" 2>&1 &
pids+=($!)
/usr/sbin/slurmd -D -f "$SLURM_CONF" >"$work/slurmd.out" 2>&1 &
pids+=($!)
log "waiting for node $node"
for _ in $(seq 120); do
    state=$(sinfo -h -n "$node" -o %T 2>/dev/null || true)
    [ "$state" = idle ] && break
    sleep 0.5
done
[ "$(sinfo -h -n "$node" -o %T 2>/dev/null)" = idle ] || fail "node $node did not come up (see $work/slurmctld.log, $work/slurmd.log)"
log "cluster up: $(sinfo -h -o '%P %D %T %c')"

# 3. runner, and a sweep small enough for a test: 6 runs, each epoch followed by a pause (the test hook
#    MLP_RUNNER_PAUSE_AFTER_EPOCH_MS) so that a task can be cancelled while it trains.
(cd "$repo" && cargo build --release --quiet)
export RUNNER=$repo/target/release/runner
# The data folder by a relative path (the jobs run in $work): the runs' config hashes, and so their shards,
# do not depend on where the repository is.
ln -s "$repo/data" "$work/data"
cat > "$work/sweep.toml" <<SPEC
name = "slurm_sweep"
[data]
dir = "data/mnist"
limit_train = 3000
limit_test = 500
[model]
sizes = [784, 32, 10]
[train]
epochs = 3
[sweep]
"train.seed" = [1, 2]
"train.learning_rate" = [0.3, 0.1, 0.03]
SPEC
export SPEC=$work/sweep.toml SHARDS=3 CPUS=1 RESULTS=$work/shards OUT=$work/merged.db
export MLP_RUNNER_PAUSE_AFTER_EPOCH_MS=1500

wait_job() { # until every job given has left the queue
    for _ in $(seq 600); do
        [ -z "$(squeue -h -j "$1" 2>/dev/null)" ] && return 0
        sleep 0.5
    done
    fail "job $1 did not finish"
}
job_state() { scontrol show job "$1" 2>/dev/null | sed -n 's/.*JobState=\([A-Z_]*\).*/\1/p' | head -1; }

cd "$work"
read -r sweep merge < <("$repo/examples/slurm/submit.sh")
log "submitted array job $sweep and merge job $merge"
# Cancel task 1 once it has stored an epoch.
for _ in $(seq 240); do
    grep -q "epoch 1/3" "slurm-mlp-sweep-${sweep}_1.out" 2>/dev/null && break
    sleep 0.25
done
grep -q "epoch 1/3" "slurm-mlp-sweep-${sweep}_1.out" || fail "task 1 did not start training"
scancel "${sweep}_1"
log "cancelled task ${sweep}_1 while it trained"
wait_job "$sweep"
wait_job "$merge"
grep -q "MISSING: run .*owed by shard 1 of 3" "slurm-mlp-merge-$merge.out" \
    || fail "the merge after the cancelled task does not name what shard 1 owes: $(cat "slurm-mlp-merge-$merge.out")"
[ "$(job_state "$merge")" = FAILED ] || log "note: merge job state $(job_state "$merge")"
log "merge after the partial array: $(grep -c MISSING "slurm-mlp-merge-$merge.out") runs missing, as expected"

read -r sweep2 merge2 < <("$repo/examples/slurm/submit.sh" 1)
log "re-submitted shard 1 as job $sweep2, merge $merge2"
wait_job "$sweep2"
wait_job "$merge2"
cat "slurm-mlp-sweep-${sweep2}_1.out"
cat "slurm-mlp-merge-$merge2.out"
grep -q "resuming after epoch" "slurm-mlp-sweep-${sweep2}_1.out" \
    || fail "the re-submitted shard did not resume its interrupted run"
if grep -q MISSING "slurm-mlp-merge-$merge2.out"; then fail "the merge still misses runs"; fi

# 4. The merged store equals the sweep trained in one process, and verifies.
unset MLP_RUNNER_PAUSE_AFTER_EPOCH_MS
(cd "$work" && "$RUNNER" "$SPEC" --db "$work/reference.db" >/dev/null)
fingerprint() {
    "$RUNNER" sql --csv --db "$1" "SELECT r.config_hash, r.status, r.weights_sha256, r.init_weights_sha256,
        r.dataset_sha256, e.epoch, e.train_loss, e.train_acc, e.test_loss, e.test_acc
        FROM runs r JOIN epochs e ON e.run_id = r.id ORDER BY r.config_hash, e.epoch"
}
fingerprint "$OUT" >"$work/merged.csv"
fingerprint "$work/reference.db" >"$work/reference.csv"
[ "$(wc -l <"$work/merged.csv")" -eq 19 ] || fail "expected 6 runs x 3 epochs in the merged store"
diff "$work/merged.csv" "$work/reference.csv" || fail "the merged store differs from the one-process sweep"
(cd "$work" && "$RUNNER" verify --all --db "$OUT") | tee "$work/verify.txt"
[ "$(grep -c ': identical' "$work/verify.txt")" -eq 6 ] || fail "verify --all did not say identical for all 6 runs"
"$RUNNER" check --db "$OUT"
log "PASSED: 6 runs over 3 shards, one cancelled and re-submitted, merged bit for bit equal to one process"

# 5. An adaptive search, rung by rung (search.sh): each round a job array of 2 shards and a merge that
#    decides the rung; the result must equal the search run in one process, decisions and bits.
cat > "$work/search.toml" <<SPEC
name = "slurm_search"
[data]
dir = "data/mnist"
limit_train = 3000
validation = 1000
limit_test = 500
[model]
sizes = [784, 32, 10]
[train]
epochs = 9
batch_size = 20
[sweep]
method = "halving"
eta = 3
"train.learning_rate" = [0.3, 0.1, 0.03]
"model.sizes" = [[784, 16, 10], [784, 32, 10], [784, 64, 10]]
SPEC
export SPEC=$work/search.toml SHARDS=2 RESULTS=$work/search-shards OUT=$work/search.db
mapfile -t rounds < <("$repo/examples/slurm/search.sh")
[ "${#rounds[@]}" -eq 3 ] || fail "search.sh submitted ${#rounds[@]} rounds, not 3"
log "submitted the search in ${#rounds[@]} rounds: ${rounds[*]}"
for line in "${rounds[@]}"; do
    read -r array merge_job <<<"$line"
    wait_job "$array"
    wait_job "$merge_job"
    cat "slurm-mlp-merge-$merge_job.out"
    [ "$(job_state "$merge_job")" = COMPLETED ] || fail "merge $merge_job ended $(job_state "$merge_job")"
done
grep -q "round 3 of 3: rungs 0..2 decided" "slurm-mlp-merge-${merge_job}.out" || fail "the last round did not decide its rung"
(cd "$work" && "$RUNNER" "$SPEC" --db "$work/search-reference.db" >/dev/null)
search_fingerprint() {
    "$RUNNER" sql --csv --db "$1" "SELECT 'rung', bracket, rung, config_hash, epochs, value, place, promoted, '', ''
        FROM rung_members UNION ALL
        SELECT 'run', r.config_hash, r.status, r.epochs_done, r.weights_sha256, e.epoch, e.train_loss, e.val_loss,
            e.val_acc, e.test_acc FROM runs r JOIN epochs e ON e.run_id = r.id ORDER BY 1, 2, 3, 4, 5, 6"
}
search_fingerprint "$OUT" >"$work/search.csv"
search_fingerprint "$work/search-reference.db" >"$work/search-reference.csv"
diff "$work/search.csv" "$work/search-reference.csv" || fail "the search on Slurm differs from the one-process search"
(cd "$work" && "$RUNNER" verify --all --db "$OUT") | tee "$work/search-verify.txt"
[ "$(grep -c ': identical' "$work/search-verify.txt")" -eq 9 ] || fail "verify --all did not say identical for all 9 runs"
log "PASSED: a 9-candidate halving over 2 shards in 3 rounds decided and stored bit for bit as one process"
