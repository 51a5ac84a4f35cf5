"""TrainConfig and ValueConfig: the options of `mcts-po train` (policy and value model) and of a
loop's `train:` section (torch-free).

Each field's `metadata["help"]` becomes a `mcts-po train` flag (`mcts_po.config_utils`); YAML
files and loop configs fill the same fields through the same path.

    from mcts_po.train.config import TrainConfig
    config = TrainConfig(max_steps=20, learning_rate=1e-5)
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from mcts_po.precision import normalize_bf16_choice

METHODS = ("dpo", "step-dpo", "step-apo", "tpo", "sft")
DEFAULT_BETA = {"dpo": 0.1, "step-dpo": 0.4, "step-apo": 0.3, "tpo": 0.5}
DEVICES = ("auto", "cpu", "cuda")
TRAINERS = ("mcts_po", "trl")
SAVE_DTYPES = ("float32", "bfloat16")


@dataclass
class TrainConfig:
    trainer: str = field(default="mcts_po", metadata={"help": "mcts_po: our loop, every method; trl: TRL's DPOTrainer for dpo/step-dpo, EOS only after a finishing step (mcts_po/train/trl_dpo.py)"})
    beta: float = field(default=0.0, metadata={"help": "beta of the loss; 0 = the method's default (dpo 0.1, step-dpo 0.4, step-apo 0.3, tpo 0.5)"})
    alpha: float = field(default=1.0, metadata={"help": "step-apo: weight of the advantage offset alpha*(Q_w - Q_l)"})
    sft_weight: float = field(default=1.0, metadata={"help": "dpo/step-dpo/step-apo: add this times the chosen step's per-token NLL to the loss (RPO); 0 = off (pure DPO: step-dpo solved 37/300 held-out problems after two loop rounds against 70/300 at 1.0, benchmarks/loop_grid/seed2.md; with same_ending off too the policy stopped answering: benchmarks/loop.md); tpo and sft ignore it"})
    conservative: bool = field(default=False, metadata={"help": "dpo/step-dpo: label smoothing min(N_l/(N_w+N_l), 0.5) from visits_chosen/visits_rejected (MCTS-DPO)"})
    label_smoothing: float = field(default=0.0, metadata={"help": "dpo/step-dpo: a fixed label smoothing in [0, 0.5] (ignored with conservative)"})
    learning_rate: float = field(default=5e-6, metadata={"help": "AdamW learning rate (LoRA usually wants ~1e-4)"})
    weight_decay: float = field(default=0.0, metadata={"help": "AdamW weight decay"})
    warmup_steps: int = field(default=0, metadata={"help": "optimizer steps of linear learning-rate warm-up"})
    max_grad_norm: float = field(default=1.0, metadata={"help": "gradient clipping norm; 0 = no clipping"})
    num_epochs: int = field(default=1, metadata={"help": "passes over the rows"})
    max_steps: int = field(default=0, metadata={"help": "stop after this many optimizer steps; 0 = run all epochs"})
    batch_size: int = field(default=2, metadata={"help": "pairs (or TPO lists) per micro-batch"})
    gradient_accumulation_steps: int = field(default=1, metadata={"help": "micro-batches per optimizer step"})
    max_length: int = field(default=256, metadata={"help": "tokens per sequence; the prompt is cut from the left, never the completion"})
    max_list_size: int = field(default=4, metadata={"help": "tpo: responses kept per list (best, worst and evenly spaced ranks in between)"})
    lora: bool = field(default=False, metadata={"help": "train LoRA adapters (peft) and merge them into the saved weights"})
    lora_r: int = field(default=16, metadata={"help": "LoRA rank"})
    lora_alpha: int = field(default=32, metadata={"help": "LoRA alpha"})
    lora_dropout: float = field(default=0.0, metadata={"help": "LoRA dropout"})
    lora_target_modules: str = field(default="all-linear", metadata={"help": "LoRA target modules: 'all-linear' or comma-separated names"})
    bf16: str = field(default="auto", metadata={"help": "bf16 autocast for forward/backward: auto (bf16 only where the processor has it: a bf16 CUDA device, or a CPU with avx512_bf16/AMX, where it is ~3x faster; an AVX2-only CPU emulates it ~5x slower than float32), true or false; weights stay float32; the choice is recorded in training_log.json"})
    device: str = field(default="auto", metadata={"help": f"device: {', '.join(DEVICES)}"})
    ref_model: str = field(default="", metadata={"help": "reference model folder; empty = a frozen copy of the initial policy"})
    save_dtype: str = field(default="float32", metadata={"help": f"dtype of the saved weights: {', '.join(SAVE_DTYPES)}"})
    seed: int = field(default=0, metadata={"help": "seed of row shuffling and of LoRA initialisation"})
    shuffle: bool = field(default=True, metadata={"help": "shuffle the rows each epoch"})
    progress: bool = field(default=True, metadata={"help": "show a tqdm progress bar"})

    def __post_init__(self) -> None:
        self.bf16 = normalize_bf16_choice(self.bf16)
        if self.beta < 0:
            raise ValueError(f"TrainConfig.beta must be >= 0 (0 = method default), got {self.beta!r}")
        if self.sft_weight < 0:
            raise ValueError(f"TrainConfig.sft_weight must be >= 0 (0 = off), got {self.sft_weight!r}")
        if not 0.0 <= self.label_smoothing <= 0.5:
            raise ValueError(f"TrainConfig.label_smoothing must be in [0, 0.5], got {self.label_smoothing!r}")
        for name in ("num_epochs", "batch_size", "gradient_accumulation_steps", "max_list_size", "lora_r"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"TrainConfig.{name} must be >= 1, got {getattr(self, name)!r}")
        if self.max_list_size < 2:
            raise ValueError("TrainConfig.max_list_size must be >= 2 (a list needs two responses to rank)")
        if self.max_length < 2:
            raise ValueError(f"TrainConfig.max_length must be >= 2, got {self.max_length!r}")
        for name in ("max_steps", "warmup_steps"):
            if int(getattr(self, name)) < 0:
                raise ValueError(f"TrainConfig.{name} must be >= 0, got {getattr(self, name)!r}")
        if self.learning_rate <= 0:
            raise ValueError(f"TrainConfig.learning_rate must be > 0, got {self.learning_rate!r}")
        if self.trainer not in TRAINERS:
            raise ValueError(f"TrainConfig.trainer = {self.trainer!r} is not one of: {', '.join(TRAINERS)}")
        if self.device not in DEVICES:
            raise ValueError(f"TrainConfig.device = {self.device!r} is not one of: {', '.join(DEVICES)}")
        if self.save_dtype not in SAVE_DTYPES:
            raise ValueError(f"TrainConfig.save_dtype = {self.save_dtype!r} is not one of: {', '.join(SAVE_DTYPES)}")

    def beta_for(self, method: str) -> float:
        return self.beta if self.beta > 0 else DEFAULT_BETA[method]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


VALUE_TARGETS = ("q", "outcome")
VALUE_BACKBONES = ("train", "frozen")


@dataclass
class ValueConfig:
    """The value model's own options (`mcts-po train --method value|ppm`; a YAML `value:` section)."""

    value_init: str = field(default="", metadata={"help": "value model to start from: empty = the policy given as --model (a new head on it); else a folder, hub id or alias whose tokenizer equals the policy's (an earlier value model keeps its head)"})
    ppm_use_margin: bool = field(default=False, metadata={"help": "ppm: pass the rows' Q margin to RewardTrainer's loss -log sigma(r_w - r_l - margin); rStar-Math uses plain Bradley-Terry (off)"})
    count_steps_once: bool = field(default=True, metadata={"help": "value: a step on k rows (a shared prefix) weighs 1/k on each, so every (tree_id, node_id) counts once"})
    target: str = field(default="outcome", metadata={"help": f"value: what a step's score is regressed to: {', '.join(VALUE_TARGETS)} (q = the node's backed-up Q; outcome = 2 s - 1, s the share of correct verified terminals at or below the step, steps without any left out; the two tied in benchmarks/value_data.md, outcome rose steadily with more trees)"})
    backbone: str = field(default="frozen", metadata={"help": f"value: {', '.join(VALUE_BACKBONES)} (frozen = the policy's backbone as it is and only the head, fitted by L-BFGS on one forward pass per row that holds a node no longer row holds; train = backbone and head by AdamW over the TrainConfig's steps. benchmarks/value_data.md, 32 trees: frozen AUC 0.651 vs train 0.530 on the same held-out nodes, in about a tenth of the time)"})
    head_l2: float = field(default=0.1, metadata={"help": "value with backbone frozen: L2 penalty on the head's weights, added to the weighted mean squared error (0.1 = what cross-validation chose at 256 trees in benchmarks/value_data.md)"})

    def __post_init__(self) -> None:
        if self.target not in VALUE_TARGETS:
            raise ValueError(f"ValueConfig.target = {self.target!r} is not one of: {', '.join(VALUE_TARGETS)}")
        if self.backbone not in VALUE_BACKBONES:
            raise ValueError(f"ValueConfig.backbone = {self.backbone!r} is not one of: {', '.join(VALUE_BACKBONES)}")
        if not float(self.head_l2) >= 0:
            raise ValueError(f"ValueConfig.head_l2 must be >= 0, got {self.head_l2!r}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
