"""Compare chat-prompt layouts for a small model: greedy accuracy and share of answers in format.

Why the task prompt looks the way it does (docs/prompts.md): SmolLM2-135M ignores format
instructions given only in words, but follows one worked example. This script measures it.

    .venv/bin/python scripts/compare_prompts.py --task demo --limit 48     # -> runs/compare_prompts/prompts_demo.json

The committed files (docs/prompts.md's table) and the commands that regenerate them:

    .venv/bin/python scripts/compare_prompts.py --task demo --limit 48 --out benchmarks/prompts_demo.json
    .venv/bin/python scripts/compare_prompts.py --task gsm8k --data ../shared/data/gsm8k --limit 48 --out benchmarks/prompts_gsm8k.json

Layouts: `instruction` (system format + question with the answer instruction, no example),
`task` (the task's own messages: system format + one worked example + question).
The first problem's output is kept as `example_output` only for problems bundled in the repo
(no `--data`): outputs on external data restate its questions, which stay out of the repo.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from mcts_po.backends import GenerationRequest, make_backend
from mcts_po.io_utils import atomic_write_json
from mcts_po.tasks import get_task

REPO = Path(__file__).resolve().parents[1]


def instruction_only(task, problem):
    return [{"role": "system", "content": task.system_prompt},
            {"role": "user", "content": f"{problem.question.strip()}\n\n{task.answer_instruction}"}]


LAYOUTS = {"instruction": instruction_only, "task": lambda task, problem: task.messages(problem)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="demo")
    parser.add_argument("--data")
    parser.add_argument("--split", default="test")
    parser.add_argument("--limit", type=int, default=48)
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--backend", default="transformers")
    parser.add_argument("--max-tokens", type=int, default=160)
    parser.add_argument("--out", help="results JSON (default runs/compare_prompts/prompts_TASK.json)")
    args = parser.parse_args()
    task = get_task(args.task)
    problems = task.load(split=args.split, limit=args.limit, path=args.data)
    backend = make_backend(args.backend, model=args.model, seed=0)
    results = {}
    for name, layout in LAYOUTS.items():
        start = time.time()
        requests = [GenerationRequest(prompt=backend.render_chat(layout(task, p)), max_tokens=args.max_tokens,
                                      n=1, temperature=0.0) for p in problems]
        texts = [r.completions[0].text for r in backend.generate(requests)]
        results[name] = {
            "problems": len(problems),
            "correct": sum(task.is_correct(t, p) for t, p in zip(texts, problems)),
            "has_final_answer": sum(task.extract_answer(t) is not None for t in texts),
            "mean_lines": round(sum(len([s for s in t.split("\n") if s.strip()]) for t in texts) / len(texts), 2),
            "seconds": round(time.time() - start, 1),
        }
        if not args.data:  # bundled problems only (see the docstring)
            results[name]["example_output"] = texts[0]
        print(name, json.dumps({k: v for k, v in results[name].items() if k != "example_output"}), flush=True)
    backend.close()
    out = Path(args.out) if args.out else REPO / "runs" / "compare_prompts" / f"prompts_{args.task}.json"
    atomic_write_json(out, {"task": args.task, "model": args.model, "limit": args.limit, "layouts": results})
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
