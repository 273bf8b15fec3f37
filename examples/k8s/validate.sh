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
# What the schemas cannot see: $(VAR) in an env value only expands a variable defined earlier in the same
# list (the Job controller appends JOB_COMPLETION_INDEX after it); $(VAR) in command and args only the
# container's own env; an image pulled by a name the cluster resolves; volumes writable by the image's
# user; the merge copying the shard stores' write-ahead logs.
"$venv/bin/python" - "$here" <<'PY'
import re, sys, yaml, pathlib
here = pathlib.Path(sys.argv[1])
uid = int(re.search(r"useradd --uid (\d+)", (here / "Dockerfile").read_text()).group(1))
ref = re.compile(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)")
for name in ["sweep-job.yaml", "merge-job.yaml"]:
    job = yaml.safe_load((here / name).read_text())
    pod = job["spec"]["template"]["spec"]
    assert pod.get("securityContext", {}).get("fsGroup") == uid, f"{name}: fsGroup must be the image's uid {uid}"
    for c in pod["containers"]:
        assert not c["image"].endswith(":latest") and ":" in c["image"], f"{name}: pin the image's tag"
        assert c.get("imagePullPolicy") in ("IfNotPresent", "Always", "Never"), f"{name}: set imagePullPolicy"
        defined = []
        for e in c.get("env", []):
            for v in ref.findall(str(e.get("value", ""))):
                assert v in defined, f"{name}: env {e['name']} uses $({v}), which is not defined before it"
            defined.append(e["name"])
        for part in c.get("command", []) + c.get("args", []):
            for v in ref.findall(part):
                assert v in defined, f"{name}: $({v}) in command/args is not in the container's env"
merge = (here / "merge-job.yaml").read_text()
assert "-wal" in merge, "merge-job.yaml: copy each shard store's -wal file too"
print("env references, image, volume ownership and the merge's copies: checked")
PY
