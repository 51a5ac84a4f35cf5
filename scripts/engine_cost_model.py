"""Where vLLM's time goes in the search benchmark: a least-squares cost model of its engine calls.

Reads the per-call records that `scripts/bench_search.py` keeps (`<work>/scale_N/bench_partial.json`,
calls made with vLLM's scheduler counters) and the flat-sampling section of `<work>/results.json`,
and fits, without intercept,

    call seconds = a * engine steps + b * generated tokens + c * prompt tokens prefilled

(a = the fixed cost of one forward pass, b = the cost of one decoded token, c = of one prefilled
prompt token). It prints the coefficients, the fit's error, and for the search and for flat
sampling how many seconds each term accounts for, so a throughput gap can be attributed to
decoding, prefill or the number of engine steps. Measured data only; nothing is estimated by hand.

    .venv/bin/python scripts/engine_cost_model.py --work runs/bench_search [--work DIR ...] [--json out.json]

It prints the model; `--json FILE` also writes it. The committed models and their commands:
benchmarks/cost_model.json (the 61 calls of runs/bench_search, the runs of benchmarks/search.md):

    .venv/bin/python scripts/engine_cost_model.py --work runs/bench_search --json benchmarks/cost_model.json

and benchmarks/search_session9/cost_model.json: the command in benchmarks/search_session9/README.md.

Pricing other runs at one machine speed (the runs of a comparison were measured hours apart, and
this machine's speed drifts by several per cent): `--price DIR` (repeatable) prices every search
section of DIR, and its flat section, with the coefficients of `--model FILE` (a JSON written by
`--json`) or of this fit, and prints modelled seconds and generated tokens per second:

    .venv/bin/python scripts/engine_cost_model.py --model benchmarks/cost_model.json \
        --price runs/bench_search --price runs/bench_search_fused
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

TERMS = ("engine_steps", "generated_tokens", "computed_prompt_tokens")


def load_points(work: Path) -> tuple[list[dict], dict | None]:
    """Search calls with counters (one dict per call, role and scale added) and the flat run."""
    points = []
    for partial in sorted(work.glob("scale_*/bench_partial.json")):
        scale = partial.parent.name
        for call in json.loads(partial.read_text())["calls"]:
            if call.get("engine_steps") is not None:
                points.append({**call, "scale": scale})
    results = json.loads((work / "results.json").read_text()) if (work / "results.json").exists() else {}
    flat = results.get("flat")
    flat_point = None
    if flat and flat.get("engine"):
        flat_point = {"role": "flat", "scale": "flat", "seconds": flat["wall_seconds"],
                      "generated_tokens": flat["generated_tokens"], **flat["engine"]}
    return points, flat_point


def fit(points: list[dict]) -> np.ndarray:
    design = np.array([[p[t] for t in TERMS] for p in points], dtype=float)
    seconds = np.array([p["seconds"] for p in points], dtype=float)
    coefficients, *_ = np.linalg.lstsq(design, seconds, rcond=None)
    return coefficients


def attribute(points: list[dict], coefficients: np.ndarray) -> dict:
    totals = {t: sum(p[t] for p in points) for t in TERMS}
    parts = {t: round(float(c * totals[t]), 1) for t, c in zip(TERMS, coefficients)}
    return {"measured_seconds": round(sum(p["seconds"] for p in points), 1),
            "modelled_seconds": round(sum(parts.values()), 1), "seconds_by_term": parts, "totals": totals}


def by_scale(points: list[dict]) -> dict[str, list[dict]]:
    """Search calls grouped by their section, in section order."""
    return {scale: [p for p in points if p["scale"] == scale] for scale in sorted({p["scale"] for p in points})}


def price_runs(works: list[Path], coefficients: np.ndarray) -> dict:
    """Modelled seconds and generated tokens/s of every search section and flat run in `works`."""
    out = {}
    for work in works:
        search, flat = load_points(work)
        sections = by_scale(search)
        if flat:
            sections["flat"] = [flat]
        for name, points in sections.items():
            parts = attribute(points, coefficients)
            generated = parts["totals"]["generated_tokens"]
            parts["generated_tokens_per_second_measured"] = round(generated / parts["measured_seconds"], 1)
            parts["generated_tokens_per_second_modelled"] = round(generated / parts["modelled_seconds"], 1)
            out[f"{work}/{name}"] = parts
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, action="append",
                        help="bench work folder whose calls are fitted (repeatable; default runs/bench_search)")
    parser.add_argument("--json", type=Path, help="also write the model here")
    parser.add_argument("--model", type=Path, help="price with this model (a --json file) instead of fitting")
    parser.add_argument("--price", type=Path, action="append", default=[], help="a bench work folder to price (repeatable)")
    args = parser.parse_args(argv)
    if args.model:
        model = json.loads(args.model.read_text())
        coefficients = np.array([model["seconds_per_engine_step"], model["seconds_per_generated_token"],
                                 model["seconds_per_prefilled_token"]])
        print(json.dumps(price_runs(args.price, coefficients), indent=1))
        return 0
    works = args.work or [Path(__file__).resolve().parents[1] / "runs" / "bench_search"]
    search, flats = [], []
    for work in works:
        points, flat = load_points(work)
        search += [{**p, "scale": f"{work.name}/{p['scale']}" if len(works) > 1 else p["scale"]} for p in points]
        flats += [flat] if flat else []
    flat = flats[0] if len(flats) == 1 else None
    every = search + flats
    if len(every) < len(TERMS) + 1:
        raise SystemExit(f"{works}: {len(every)} engine calls with vLLM counters; the fit needs at least "
                         f"{len(TERMS) + 1} (run scripts/bench_search.py on this code first)")
    coefficients = fit(every)
    predicted = [float(np.dot(coefficients, [p[t] for t in TERMS])) for p in every]
    errors = [abs(q - p["seconds"]) / p["seconds"] for q, p in zip(predicted, every)]
    model = {
        "calls": len(every),
        "seconds_per_engine_step": round(float(coefficients[0]), 5),
        "seconds_per_generated_token": round(float(coefficients[1]), 6),
        "seconds_per_prefilled_token": round(float(coefficients[2]), 6),
        "mean_abs_relative_error": round(sum(errors) / len(errors), 4),
        "search": {scale: attribute(points, coefficients) for scale, points in by_scale(search).items()},
        "flat": attribute([flat], coefficients) if flat else None,
    }
    if args.price:
        model["priced"] = price_runs(args.price, coefficients)
    print(json.dumps(model, indent=1))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(model, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
