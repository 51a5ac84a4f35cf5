#!/usr/bin/env bash
# Does the GPU install path (MCTS_PO_ENGINE=vllm) resolve? pip's resolver, without installing:
# upstream vllm (latest on PyPI) together with this package and its test and ray extras, in a
# throwaway virtual environment. Prints the versions pip would install for the packages that
# matter, or pip's conflict report. Needs PyPI, no GPU.
#
#   bash scripts/check_gpu_install.sh            # results: runs/gpu_install/report.json + a summary
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
work="$repo/runs/gpu_install"
mkdir -p "$work"
venv="$(mktemp -d)/venv"
python3.11 -m venv "$venv"
"$venv/bin/python" -m pip install -q --upgrade pip
"$venv/bin/python" -m pip install --dry-run --ignore-installed --report "$work/report.json" \
  "vllm" -e "$repo[test,ray]" > "$work/pip.log" 2>&1 || { tail -30 "$work/pip.log"; exit 1; }
"$venv/bin/python" - "$work/report.json" <<'PY'
import json, sys
report = json.load(open(sys.argv[1]))
versions = {item["metadata"]["name"].lower(): item["metadata"]["version"] for item in report["install"]}
for name in ("vllm", "torch", "transformers", "trl", "accelerate", "peft", "datasets", "math-verify", "ray", "mcts_po"):
    print(f"{name:14s} {versions.get(name, versions.get(name.replace('-', '_'), 'not in the plan'))}")
print(f"{len(versions)} packages would be installed; pip reported no conflict")
PY
rm -rf "$(dirname "$venv")"
