"""Measure bf16 against float32 on this processor: a SmolLM2 training step, and optionally vLLM decoding.

Why: bf16 autocast is ~3x faster than float32 on CPUs with bf16 instructions (avx512_bf16/AMX) and
much slower on AVX2-only CPUs, where PyTorch emulates it; TrainConfig.bf16 = "auto" picks by the CPU
flags (mcts_po/precision.py). This script checks that choice on the machine it runs on and appends
one record per run (CPU flags, torch's capability, seconds per step for each dtype, the choice
"auto" made) to runs/bench_precision/precision.json, or with `--publish` to the repository's
benchmarks/precision.json.

    flock /tmp/mcts_po_cpu.lock .venv/bin/python scripts/bench_precision.py            # training step only (~2 min)
    flock /tmp/mcts_po_cpu.lock .venv/bin/python scripts/bench_precision.py --vllm     # + vLLM decode, bf16 vs float32 (two engine starts)

The committed record (an AVX2-only CPU) and the command that adds another one:

    flock /tmp/mcts_po_cpu.lock .venv/bin/python scripts/bench_precision.py --vllm --length 64 --steps 1 --publish
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def train_step_seconds(model_path: str, use_bf16: bool, batch: int, length: int, steps: int) -> float:
    import torch
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32)
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-6)
    ids = torch.randint(0, model.config.vocab_size, (batch, length))
    times = []
    for _ in range(steps + 1):  # the first step warms up and is not counted
        start = time.perf_counter()
        context = torch.autocast("cpu", dtype=torch.bfloat16) if use_bf16 else torch.autocast("cpu", enabled=False)
        with context:
            loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        times.append(time.perf_counter() - start)
    return sum(times[1:]) / steps


def vllm_tokens_per_second(model_path: str, dtype: str, prompts: int, tokens: int) -> float:
    from vllm import LLM, SamplingParams

    llm = LLM(model=model_path, dtype=dtype, seed=0, block_size=32, kv_cache_memory_bytes=1 << 30)
    params = SamplingParams(temperature=0.7, max_tokens=tokens, ignore_eos=True)
    texts = [f"Question {i}: what is {i} + {2 * i}? Answer step by step." for i in range(prompts)]
    llm.generate(texts[:4], params, use_tqdm=False)
    start = time.perf_counter()
    outputs = llm.generate(texts, params, use_tqdm=False)
    seconds = time.perf_counter() - start
    generated = sum(len(o.outputs[0].token_ids) for o in outputs)
    del llm
    return generated / seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--length", type=int, default=128)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--vllm", action="store_true", help="also time vLLM decoding in bfloat16 and float32")
    parser.add_argument("--out", help="JSON file the record is appended to (default runs/bench_precision/precision.json)")
    parser.add_argument("--publish", action="store_true", help="append to the repository's benchmarks/precision.json")
    args = parser.parse_args()
    if args.publish and args.out:
        parser.error("--publish appends to benchmarks/precision.json; give it or --out, not both")
    out = Path(args.out) if args.out else REPO / ("benchmarks" if args.publish else "runs/bench_precision") / "precision.json"

    import torch

    from mcts_po.io_utils import atomic_write_json
    from mcts_po.models import resolve_model
    from mcts_po.precision import CPU_BF16_FLAGS, choose_bf16, cpu_flags

    model_path = resolve_model("smollm2-135m")
    record = {
        "date": time.strftime("%Y-%m-%d %H:%M:%S"), "machine": platform.processor() or platform.machine(),
        "cpu_bf16_flags": sorted(cpu_flags() & CPU_BF16_FLAGS), "cpu_has_avx512f": "avx512f" in cpu_flags(),
        "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(), "threads": torch.get_num_threads(),
        "train_step": {"batch": args.batch, "length": args.length, "steps": args.steps},
    }
    for name, use_bf16 in (("float32", False), ("bf16_autocast", True)):
        record["train_step"][f"{name}_s"] = round(train_step_seconds(model_path, use_bf16, args.batch, args.length, args.steps), 3)
        print(f"train step {name}: {record['train_step'][f'{name}_s']} s", flush=True)
    record["train_step"]["bf16_over_float32"] = round(record["train_step"]["bf16_autocast_s"] / record["train_step"]["float32_s"], 2)
    use_bf16, reason = choose_bf16("auto", "cpu")
    record["auto_choice"] = {"bf16": use_bf16, "reason": reason,
                             "faster_of_the_two": "bf16" if record["train_step"]["bf16_over_float32"] < 1 else "float32"}
    if args.vllm:
        record["vllm_decode_tok_s"] = {}
        for dtype in ("bfloat16", "float32"):
            record["vllm_decode_tok_s"][dtype] = round(vllm_tokens_per_second(model_path, dtype, 32, 64), 1)
            print(f"vllm {dtype}: {record['vllm_decode_tok_s'][dtype]} tok/s", flush=True)
    runs = json.loads(out.read_text(encoding="utf-8"))["runs"] if out.exists() else []
    atomic_write_json(out, {"script": "scripts/bench_precision.py", "runs": runs + [record]})
    print(json.dumps(record, indent=2))


if __name__ == "__main__":
    main()
