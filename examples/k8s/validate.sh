#!/bin/bash
# Validate the Kubernetes manifests offline against the Kubernetes API schemas (kubernetes-validate from
# PyPI, which ships the schemas), strictly (an unknown field is an error), and check that the shard count
# is the same in the Job's completions and in MLP_RUNNER_SHARD_COUNT of both Jobs.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
venv=${KUBE_VALIDATE_VENV:-/tmp/mlp-runner-kube-validate}
if [ ! -x "$venv/bin/kubernetes-validate" ]; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check kubernetes-validate==1.37.0
fi
"$venv/bin/kubernetes-validate" --strict --kubernetes-version 1.33.0 "$here"/*.yaml
"$venv/bin/python" - "$here" <<'PY'
import sys, yaml, pathlib
here = pathlib.Path(sys.argv[1])
sweep = yaml.safe_load((here / "sweep-job.yaml").read_text())
merge = yaml.safe_load((here / "merge-job.yaml").read_text())
def count(job):
    env = job["spec"]["template"]["spec"]["containers"][0]["env"]
    return int(next(e["value"] for e in env if e["name"] == "MLP_RUNNER_SHARD_COUNT"))
n = sweep["spec"]["completions"]
assert count(sweep) == n, f"sweep-job.yaml: MLP_RUNNER_SHARD_COUNT {count(sweep)} != completions {n}"
assert count(merge) == n, f"merge-job.yaml: MLP_RUNNER_SHARD_COUNT {count(merge)} != completions {n}"
print(f"shard count {n}: the same in completions and both Jobs")
PY
