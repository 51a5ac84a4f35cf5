"""Tiny random Llama models for tests: built locally in a second, no download, saved as HF folders.

Used by the tests that need a real transformers model but not a trained one (backend protocol,
crash/resume, TRL data path). Not a test module itself; import the helpers:

    from tiny_model import byte_level_tokenizer, save_tiny_llama
    folder = save_tiny_llama(tmp_path / "tiny", byte_level_tokenizer())
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

# Chat templates: "<user>hi\n<assistant>" (angle) and "[user] hi\n[assistant] " (bracket).
ANGLE_CHAT_TEMPLATE = ("{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}\n{% endfor %}"
                       "{% if add_generation_prompt %}<assistant>{% endif %}")
BRACKET_CHAT_TEMPLATE = ("{% for m in messages %}[{{ m['role'] }}] {{ m['content'] }}\n{% endfor %}"
                         "{% if add_generation_prompt %}[assistant] {% endif %}")


def byte_level_tokenizer(chat_template: str = ANGLE_CHAT_TEMPLATE):
    """A byte-level BPE tokenizer without merges (every byte is a token), `<eos>` as EOS and pad."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    byte_symbols = sorted(pre_tokenizers.ByteLevel.alphabet())
    core = Tokenizer(models.BPE(vocab={symbol: index for index, symbol in enumerate(byte_symbols)}, merges=[]))
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=core, eos_token="<eos>", pad_token="<eos>")
    tokenizer.chat_template = chat_template
    return tokenizer


def save_tiny_llama(folder: str | Path, tokenizer: Any, *, hidden_size: int = 64, intermediate_size: int = 128,
                    num_attention_heads: int = 4, num_key_value_heads: int = 4,
                    max_position_embeddings: int = 1024, seed: int = 0,
                    initializer_range: float | None = None, extra_eos: list[int] | None = None) -> str:
    """Build a 2-layer random Llama sized to `tokenizer` from `seed` (the caller's global torch RNG
    state is left as it was), save model and tokenizer to `folder`, return the folder.

    `extra_eos` adds token ids that end a sample through the generation config, as chat models
    such as SmolLM2 do."""
    import torch
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

    options: dict[str, Any] = {}
    if initializer_range is not None:
        options["initializer_range"] = initializer_range
    if tokenizer.pad_token_id is not None:
        options["pad_token_id"] = tokenizer.pad_token_id
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=hidden_size, intermediate_size=intermediate_size,
                         num_hidden_layers=2, num_attention_heads=num_attention_heads,
                         num_key_value_heads=num_key_value_heads, max_position_embeddings=max_position_embeddings,
                         eos_token_id=tokenizer.eos_token_id, **options)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config)
    if extra_eos is not None:
        model.generation_config = GenerationConfig(eos_token_id=[tokenizer.eos_token_id, *extra_eos])
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return str(folder)
