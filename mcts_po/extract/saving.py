"""Saving extracted rows: an HF `datasets` dataset on disk plus JSONL and Parquet files; hub upload.

`save_dataset(rows, out_dir, name, columns)` writes

    out_dir/name/          Dataset.save_to_disk (reload with datasets.load_from_disk)
    out_dir/name.jsonl     one row per line, exactly the row dicts
    out_dir/name.parquet   Dataset.to_parquet

each written to a temporary name first and renamed into place, so an interrupted run never
leaves half a dataset under the final name. Column types come from the format's schema
(`columns`: "string" / "int64" / "float64" / "bool", `[spec]` for `datasets.List(spec)`,
`{field: spec}` for a struct), so an empty dataset still has the right columns.

`datasets` is imported here lazily; building rows never needs it.

    from mcts_po.extract.saving import save_dataset, push_dataset
    save_dataset(rows, "data/x", "step-dpo", FORMATS["step-dpo"].columns)
    push_dataset(rows, "me/my-steps", "step-dpo", FORMATS["step-dpo"].columns)
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Sequence

from mcts_po.io_utils import UserError, atomic_write_text


def _feature(spec: Any):
    from datasets import List, Value

    if isinstance(spec, str):
        return Value(spec)
    if isinstance(spec, list) and len(spec) == 1:
        return List(_feature(spec[0]))
    if isinstance(spec, dict):
        return {key: _feature(value) for key, value in spec.items()}
    raise ValueError(f"bad column type spec {spec!r}")


def features_for(columns: dict[str, Any]):
    """`datasets.Features` for a format's column schema."""
    from datasets import Features

    return Features({name: _feature(spec) for name, spec in columns.items()})


def check_columns(rows: Sequence[dict[str, Any]], columns: dict[str, Any]) -> None:
    expected = list(columns)
    for index, row in enumerate(rows):
        if list(row) != expected:
            missing = sorted(set(expected) - set(row))
            extra = sorted(set(row) - set(expected))
            raise ValueError(f"row {index} does not match the schema (missing {missing}, extra {extra}, "
                             f"or columns out of order)")


def build_dataset(rows: Sequence[dict[str, Any]], columns: dict[str, Any]):
    from datasets import Dataset

    check_columns(rows, columns)
    features = features_for(columns)
    if not rows:
        return Dataset.from_dict({name: [] for name in columns}, features=features)
    return Dataset.from_list(list(rows), features=features)


def rows_to_jsonl(rows: Sequence[dict[str, Any]]) -> str:
    return "".join(json.dumps(row, ensure_ascii=False, allow_nan=False) + "\n" for row in rows)


def make_readable(path: str | os.PathLike) -> None:
    """Give a file written through a private temp file the usual mode (0666 minus the umask)."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, 0o666 & ~umask)


def _replace_dir(new: Path, final: Path) -> None:
    """Move the finished directory `new` to `final`, replacing an older one."""
    old = None
    if final.exists():
        old = final.parent / f".{final.name}.old-{os.getpid()}"
        if old.exists():
            shutil.rmtree(old)
        os.replace(final, old)
    os.replace(new, final)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def save_dataset(rows: Sequence[dict[str, Any]], out_dir: str | os.PathLike, name: str,
                 columns: dict[str, Any]) -> dict[str, str]:
    """Write the dataset folder, JSONL and Parquet for `rows`; return the paths written."""
    import datasets

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    dataset = build_dataset(rows, columns)
    final_dir = out_dir / name
    staging = Path(tempfile.mkdtemp(dir=out_dir, prefix=f".{name}.tmp-"))
    bars_were_off = datasets.is_progress_bar_enabled() is False
    datasets.disable_progress_bars()  # one bar per shard and file is noise for a few thousand rows
    try:
        # datasets 5.x writes no shard for 0 rows and then cannot load the folder: force one shard
        dataset.save_to_disk(str(staging / name), num_shards=1 if len(dataset) == 0 else None)
        parquet_tmp = staging / f"{name}.parquet"
        dataset.to_parquet(str(parquet_tmp))
        _replace_dir(staging / name, final_dir)
        os.replace(parquet_tmp, out_dir / f"{name}.parquet")
        atomic_write_text(out_dir / f"{name}.jsonl", rows_to_jsonl(rows))
        make_readable(out_dir / f"{name}.jsonl")
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        if not bars_were_off:
            datasets.enable_progress_bars()
    return {"dataset": str(final_dir), "jsonl": str(out_dir / f"{name}.jsonl"),
            "parquet": str(out_dir / f"{name}.parquet")}


def push_dataset(rows: Sequence[dict[str, Any]], repo_id: str, config_name: str, columns: dict[str, Any],
                 token: str | None = None, private: bool | None = None) -> None:
    """Upload the rows to the hub as config `config_name` of dataset `repo_id`."""
    from huggingface_hub import get_token

    token = token or get_token()
    if not token:
        raise UserError("--push-to-hub needs a Hugging Face token: run `hf auth login` or set HF_TOKEN")
    dataset = build_dataset(rows, columns)
    try:
        dataset.push_to_hub(repo_id, config_name=config_name, token=token, private=private)
    except Exception as exc:  # network, permission, bad repo id: one clear line for the user
        raise UserError(f"push of {config_name!r} to {repo_id!r} failed: {type(exc).__name__}: {exc}") from exc
