"""Config schemas: every Hydra node is one of these dataclasses, so a misspelt key or a wrong type fails at start.

The YAML in `conf/` extends these schemas (Hydra's "structured config schema" pattern): each option of a
group starts with `defaults: [<option>_schema]`. Every field says what it does in `metadata={"help": ...}` (as TRL's
configs do), which `python -m crafter_exp.options <section>` lists with the composed values; a subclass that only
changes a default keeps its base's help. A field marked `"identity": False` changes how a stage runs, reports or
where it reads and writes, not what its output holds: it is left out of the output's identity (crafter_exp/paths.py),
so changing it reuses or resumes the output. Stages receive these objects (via `OmegaConf.to_object`) or build them
directly in tests.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING

# --------------------------------------------------------------------------------------------------- env group


@dataclass
class EnvConfig:
    """Fields shared by every environment."""

    name: str = field(
        default=MISSING, metadata={"help": "Environment id (`crafter`, `alfworld`); selects the implementation."}
    )
    episodes: int = field(
        default=32,
        metadata={"help": "Episodes the rollout stage plays; episode i plays seed `seed + i`.", "identity": False},
    )
    seed: int = field(
        default=0, metadata={"help": "First seed of the rollout (training) seed range.", "identity": False}
    )
    max_steps: int = field(
        default=300,
        metadata={"help": "Hard cap on environment steps per episode (the episode ends with termination `max_steps`)."},
    )


@dataclass
class CrafterEnvConfig(EnvConfig):
    name: str = "crafter"
    episodes: int = field(
        default=200,
        metadata={
            "help": "Episodes the rollout stage plays (200: the offline pipeline's teacher data, ~50k steps); lower it for paid APIs."
        },
    )
    difficulty: str = field(
        default="normal",
        metadata={"help": "`easy` / `normal` / `hard` (see README: what each changes); `normal` is stock Crafter."},
    )
    length: int = field(
        default=10000,
        metadata={
            "help": "Crafter's own episode length (stock default 10000); `max_steps` usually ends episodes first."
        },
    )
    area: int = field(default=64, metadata={"help": "World size (square)."})
    obs_format: str = field(
        default="compact",
        metadata={
            "help": "Text observation: `compact` (nearest objects, short, for small models), `full` (adds a 9x7 grid)."
        },
    )
    render: bool = field(
        default=False, metadata={"help": "Render pixels each step (slow; only for image agents or videos)."}
    )
    memory: int = field(
        default=0,
        metadata={
            "help": "Add a `Remembered:` line: the nearest cell of each kind (water, tree, table, ...) seen in the "
            "last N steps and out of view now (300: the whole default episode); 0 = none (one observation only)."
        },
    )


@dataclass
class AlfworldEnvConfig(EnvConfig):
    name: str = "alfworld"
    max_steps: int = 50
    data_path: Optional[str] = field(
        default=None,
        metadata={
            "help": "ALFWorld data folder (json_2.1.1/ + logic/); default: $ALFWORLD_DATA, else ../shared/alfworld_data when present."
        },
    )
    split: str = field(
        default="train",
        metadata={"help": "`train`, `eval_in_distribution` (valid_seen) or `eval_out_of_distribution` (valid_unseen)."},
    )
    task_types: list[str] = field(
        default_factory=list,
        metadata={"help": "Keep only these task types (e.g. pick_and_place_simple); empty = all six."},
    )
    show_admissible: bool = field(
        default=True, metadata={"help": "Append the admissible commands to each observation."}
    )
    memory: int = field(
        default=0,
        metadata={
            "help": "List the episode's last N commands in each observation (`Your last commands: ...`, oldest "
            "first); 0 = none. One observation does not show where the agent has already looked."
        },
    )
    notes: bool = field(
        default=True,
        metadata={
            "help": "Add the episode's notes to each observation: location, what is held, where the task's objects "
            "were seen, receptacles not searched yet (tracked from the printed texts only)."
        },
    )
    eval_split: Optional[str] = field(
        default="eval_in_distribution",
        metadata={
            "help": "Split the evaluate stage plays (held-out games: eval seeds alone would replay `split`'s games); null = split."
        },
    )
    also_eval_splits: list[str] = field(
        default_factory=lambda: ["eval_out_of_distribution"],
        metadata={
            "help": "Further held-out splits the pipeline plays `eval.also_policies` on, reported beside the main comparison."
        },
    )
    fast_text: bool = field(
        default=True,
        metadata={
            "help": "Memoise TextWorld's text-generation parses (identical text, ~2x faster episodes); false = stock TextWorld."
        },
    )


# ------------------------------------------------------------------------------------------------- model group


@dataclass
class PromptConfig:
    """How observations become chat messages (used by LLM policies and by the SFT export alike)."""

    template: str = field(
        default="standard",
        metadata={
            "help": "`standard` (<think> then <action>), `world_model` (<think>, <prediction>, <action>) or `bare` (action name only)."
        },
    )
    history: int = field(default=0, metadata={"help": "Previous turns (observation + reply) included in each prompt."})
    system_prompt_file: Optional[str] = field(
        default=None, metadata={"help": "Replace the built-in system prompt with this file's text."}
    )
    action_mode: str = field(
        default="text",
        metadata={
            "help": "`text` (actions parsed from the reply) or `tools` (one `interact` tool taking 1..N actions)."
        },
    )
    max_actions_per_turn: int = field(
        default=1, metadata={"help": "Most actions one reply may execute (tool calls or several <action> lines)."}
    )
    invalid_feedback: bool = field(
        default=False,
        metadata={
            "help": 'Start the next observation with "Your last reply was invalid: <why>. Played: <actions>." (BALROG\'s idea).'
        },
    )


@dataclass
class ModelConfig:
    name: str = field(default=MISSING, metadata={"help": "Policy kind: `scripted`, `random`, `openai`, `hf_local`."})
    label: Optional[str] = field(
        default=None,
        metadata={
            "help": "Name shown in stores and reports (default: the policy's own model name).",
            "identity": False,
        },
    )
    prompt: PromptConfig = field(default_factory=PromptConfig, metadata={"help": "Prompt template and history window."})


@dataclass
class ScriptedModelConfig(ModelConfig):
    name: str = "scripted"
    epsilon: float = field(
        default=0.1,
        metadata={
            "help": "Probability of a uniformly random action instead of the expert's (mixed-quality data to filter)."
        },
    )


@dataclass
class RandomModelConfig(ModelConfig):
    name: str = "random"


@dataclass
class OpenAIModelConfig(ModelConfig):
    name: str = "openai"
    model: str = field(default="gpt-4o-mini", metadata={"help": "Model name sent to the endpoint."})
    provider: str = field(default="openai", metadata={"help": "Provider label stored with traces (filterable)."})
    base_url: Optional[str] = field(
        default=None, metadata={"help": "OpenAI-compatible endpoint; None = the openai client's default."}
    )
    api_key_env: str = field(
        default="OPENAI_API_KEY",
        metadata={
            "help": "Name of the environment variable holding the key (the key itself never enters config or files).",
            "identity": False,
        },
    )
    temperature: Optional[float] = field(
        default=0.7, metadata={"help": "Sampling temperature; None = not sent (reasoning models that reject it)."}
    )
    top_p: Optional[float] = field(default=1.0, metadata={"help": "Nucleus sampling mass; None = not sent."})
    max_tokens: int = field(default=512, metadata={"help": "Completion token cap per call."})
    seed: Optional[int] = field(
        default=None, metadata={"help": "Sampling seed sent to the endpoint (where supported)."}
    )
    reasoning_effort: Optional[str] = field(
        default=None, metadata={"help": "`low`/`medium`/`high` for reasoning models; None = not sent."}
    )
    timeout: float = field(
        default=60.0, metadata={"help": "Seconds per request before it counts as failed.", "identity": False}
    )
    max_retries: int = field(
        default=5,
        metadata={
            "help": "Retries per call (the openai client's own backoff, honouring Retry-After).",
            "identity": False,
        },
    )
    concurrency: int = field(
        default=16,
        metadata={"help": "Requests in flight per Ray worker (total = workers x concurrency).", "identity": False},
    )
    max_consecutive_errors: int = field(
        default=3,
        metadata={
            "help": "An episode whose calls fail this many times in a row ends with termination `api_error`.",
            "identity": False,
        },
    )
    probe: bool = field(
        default=True,
        metadata={
            "help": "One probe call before any episode: unreachable endpoint / 401 / unknown model fail fast.",
            "identity": False,
        },
    )
    prices: dict[str, Any] = field(
        default_factory=dict,
        metadata={
            "help": "Per-model price table, USD per 1M tokens: {model: {input: x, output: y}}; unknown model -> cost null.",
            "identity": False,
        },
    )
    extra_body: dict[str, Any] = field(
        default_factory=dict, metadata={"help": "Extra JSON fields sent with each request (vendor-specific knobs)."}
    )
    tool_choice: str = field(
        default="required",
        metadata={
            "help": "`tool_choice` sent in action_mode=tools (`required`; `auto` for servers that lack `required`)."
        },
    )
    max_tokens_param: str = field(
        default="max_tokens",
        metadata={
            "help": "Request field carrying max_tokens: `max_tokens`, or `max_completion_tokens` (OpenAI reasoning models)."
        },
    )
    stream: bool = field(
        default=False,
        metadata={
            "help": "Request the reply streamed (server-sent chunks, usage in the last) and assemble it; the record is the same.",
            "identity": False,
        },
    )


@dataclass
class HFLocalModelConfig(ModelConfig):
    name: str = "hf_local"
    # Optional where the base's is not: None means "the checkpoint's own", resolved when the policy loads it
    prompt: Optional[PromptConfig] = field(  # type: ignore[assignment]
        default=None,
        metadata={
            "help": "Prompt template; None = the one recorded in the checkpoint's manifest (the data's), else standard."
        },
    )
    path: Optional[str] = field(
        default=None,
        metadata={
            "help": "Checkpoint: a local folder (full model or PEFT adapter) or a hub id; None = the newest checkpoint of `name`."
        },
    )
    base_model: Optional[str] = field(
        default=None, metadata={"help": "Base model for an adapter checkpoint (default: read from the adapter config)."}
    )
    do_sample: Optional[bool] = field(
        default=None,
        metadata={
            "help": "Sample instead of greedy decoding; None = as the checkpoint's manifest recommends (`play_temperature`), else greedy."
        },
    )
    temperature: Optional[float] = field(
        default=None,
        metadata={"help": "Sampling temperature when sampling; None = the manifest's `play_temperature`, else 1.0."},
    )
    max_new_tokens: Optional[int] = field(
        default=None,
        metadata={
            "help": "Tokens generated per turn; None = the longest reply in the checkpoint's training data (manifest), else 256."
        },
    )
    batch_size: int = field(
        default=32, metadata={"help": "Episodes decoded together in one forward pass.", "identity": False}
    )
    device: str = field(
        default="auto", metadata={"help": "`auto` (cuda if available), `cpu`, `cuda`.", "identity": False}
    )
    dtype: str = field(
        default="auto",
        metadata={
            "help": "`auto` (bf16 on a GPU that has it; on a CPU with native bf16, fp32 weights under bf16 autocast), `float32`, `bfloat16`, `float16`."
        },
    )
    seed: int = field(default=0, metadata={"help": "Sampling seed."})
    in_process: Optional[bool] = field(
        default=None,
        metadata={
            "help": "Play in the driver (one batched forward for all episodes) or, false, a copy per Ray worker (envs whose steps cost more than the model's forward then step in parallel); None = as the env says (`TextEnv.slow_steps`).",
            "identity": False,
        },
    )
    decoding: str = field(
        default="auto",
        metadata={
            "help": "`rank` (score every valid action given the prompt, play the best or sample from their softmax), `generate` (free text, parsed), `auto` (rank where the env's actions are its admissible commands, else generate)."
        },
    )
    score: str = field(
        default="sum",
        metadata={
            "help": "With decoding=rank: a candidate's score is the `sum` of its tokens' log-probs (its probability) or the `mean`."
        },
    )
    chat_template_kwargs: dict[str, Any] = field(
        default_factory=dict,
        metadata={
            "help": "Extra arguments for the tokenizer's chat template (e.g. {enable_thinking: false} for Qwen3)."
        },
    )


# ------------------------------------------------------------------------------------------------ filter group


@dataclass
class FilterConfig:
    """Which traces to keep (compiled to parameterised SQL) and how to export them."""

    runs: list[str] = field(
        default_factory=list,
        metadata={
            "help": "Trace run ids (or experiment names = their newest complete rollout run) to read; empty = that of `name`.",
            "identity": False,
        },
    )
    min_achievements: Optional[int] = field(
        default=None, metadata={"help": "Minimum distinct achievements in the episode."}
    )
    max_achievements: Optional[int] = field(
        default=None, metadata={"help": "Maximum distinct achievements in the episode."}
    )
    min_reward: Optional[float] = field(default=None, metadata={"help": "Minimum total episode reward."})
    max_reward: Optional[float] = field(default=None, metadata={"help": "Maximum total episode reward."})
    max_turns: Optional[int] = field(default=None, metadata={"help": "Maximum turns in the episode."})
    achievement_types: list[str] = field(
        default_factory=list,
        metadata={"help": "Required achievements: all of them, or at least `min_achievement_types` of them."},
    )
    min_achievement_types: Optional[int] = field(
        default=None, metadata={"help": "With achievement_types: how many of them are required (None = all)."}
    )
    exclude_achievements: list[str] = field(
        default_factory=list, metadata={"help": "Achievements ignored when counting (e.g. collect_sapling)."}
    )
    success_only: bool = field(default=False, metadata={"help": "Keep only successful episodes (ALFWorld: won)."})
    task_types: list[str] = field(default_factory=list, metadata={"help": "Keep only these task types (ALFWorld)."})
    models: list[str] = field(default_factory=list, metadata={"help": "Keep only episodes played by these models."})
    providers: list[str] = field(default_factory=list, metadata={"help": "Keep only episodes from these providers."})
    max_cost: Optional[float] = field(default=None, metadata={"help": "Maximum episode cost (USD)."})
    max_tokens: Optional[int] = field(default=None, metadata={"help": "Maximum episode tokens (prompt + completion)."})
    include_api_errors: bool = field(
        default=False, metadata={"help": "Keep episodes that ended with termination `api_error`."}
    )
    min_quality: Optional[float] = field(
        default=None,
        metadata={
            "help": "Minimum episode quality score (crafter_exp.filtering.quality: achievements + efficiency - penalties)."
        },
    )
    quality_weights: dict[str, float] = field(
        default_factory=lambda: {
            "achievements": 1.0,
            "success": 5.0,
            "efficiency": 10.0,
            "invalid": 2.0,
            "repeated": 0.5,
        },
        metadata={
            "help": "Weights of the quality score's terms (keys: achievements, success, efficiency, invalid, repeated)."
        },
    )
    sort_by: str = field(
        default="quality",
        metadata={
            "help": "Which episodes `limit` keeps (best first): `quality`, `reward`, `achievements`, `efficiency`, `seed`."
        },
    )
    limit: Optional[int] = field(default=None, metadata={"help": "Keep at most this many episodes."})
    step_mode: str = field(
        default="all",
        metadata={
            "help": "Turns kept: `all`, `achievement` (turns that unlocked one), `window` (K turns before one), `reward`."
        },
    )
    window: int = field(default=5, metadata={"help": "With step_mode=window: turns kept before each achievement turn."})
    min_step_reward: float = field(
        default=0.0, metadata={"help": "With step_mode=reward: keep turns with reward >= this."}
    )
    drop_unparsed: bool = field(default=True, metadata={"help": "Drop turns whose reply failed to parse."})
    exclude_actions: list[str] = field(
        default_factory=list,
        metadata={
            "help": "Drop turns whose training target (the played actions, or with target=expert the expert's) includes one of these actions, e.g. [look] on ALFWorld, where `look` changes nothing; [] keeps all."
        },
    )
    target: str = field(
        default="reply",
        metadata={
            "help": "What a kept turn trains on: `reply` (what the policy said) or `expert` (the environment expert's action for the same prompt, `steps.expert_action`, in the prompt template's reply format: DAgger's relabelling; turns without one are dropped; per-turn text formats only)."
        },
    )
    format: str = field(
        default="openai_chat",
        metadata={"help": "`openai_chat`, `openai_tools`, `vertex_gemini`, `single_turn`, `parquet`."},
    )
    multi_turn: bool = field(
        default=False, metadata={"help": "One example per episode (multi-turn) instead of one per turn."}
    )
    system_prompt: Optional[str] = field(
        default=None,
        metadata={
            "help": "System prompt text for exported examples (None = the prompt the policy saw); see system_prompt_mode."
        },
    )
    system_prompt_mode: str = field(
        default="replace",
        metadata={"help": "With system_prompt: `replace` the policy's system prompt, or `append` the text to it."},
    )
    keep_reasoning: bool = field(default=True, metadata={"help": "Keep <think> reasoning in assistant turns."})
    keep_predictions: bool = field(
        default=True,
        metadata={
            "help": "Keep world-model <prediction>s in assistant turns; false drops them and exports the `standard` template's system prompt (the student learns to act, not to predict)."
        },
    )
    min_prediction_f1: Optional[float] = field(
        default=None,
        metadata={
            "help": "Minimum episode prediction F1 (0-1, mean over its scored world-model predictions; episodes without any fail)."
        },
    )
    step_min_prediction_f1: Optional[float] = field(
        default=None,
        metadata={
            "help": "Step level: keep only turns whose world-model prediction scored F1 >= this (0-1; unscored turns dropped)."
        },
    )
    max_examples: Optional[int] = field(default=None, metadata={"help": "Subset to N examples (seeded)."})
    dedupe: bool = field(default=False, metadata={"help": "Drop duplicate examples."})
    val_fraction: Optional[float] = field(
        default=None,
        metadata={
            "help": "Fraction of episodes in the validation split (val.parquet, or val.jsonl for the JSONL formats: a fine-tuning job's validation_file, the local trainers' eval set); null = 0.1 for parquet, 0 (no split) for JSONL."
        },
    )
    seed: int = field(default=0, metadata={"help": "Seed for splits and subsets."})
    stats_only: bool = field(default=False, metadata={"help": "Print statistics, write nothing.", "identity": False})
    output: Optional[str] = field(
        default=None,
        metadata={
            "help": "Output path; default: <paths.datasets>/<name>/<identity> (crafter_exp/paths.py).",
            "identity": False,
        },
    )
    validate_path: Optional[str] = field(
        default=None,
        metadata={
            "help": "stage=validate: a JSONL file or a dataset folder to check; None = this experiment's dataset.",
            "identity": False,
        },
    )
    validate_format: str = field(
        default="auto",
        metadata={
            "help": "stage=validate: the format to check against; `auto` = the manifest's, else guessed from the first line.",
            "identity": False,
        },
    )
    tokenizer: Optional[str] = field(
        default=None,
        metadata={
            "help": "Local tokenizer for token counts (a tokenizer.json or a HF folder); None = estimate (chars / 4).",
            "identity": False,
        },
    )
    price_model: str = field(
        default="gpt-4o-mini-2024-07-18",
        metadata={"help": "Model whose training price `validate` uses for the cost estimate.", "identity": False},
    )
    cost_epochs: int = field(default=3, metadata={"help": "Epochs assumed by the cost estimate.", "identity": False})
    training_prices: dict[str, float] = field(
        default_factory=lambda: {
            "gpt-4o-mini-2024-07-18": 3.0,
            "gpt-4o-2024-08-06": 25.0,
            "gpt-4.1-2025-04-14": 25.0,
            "gpt-4.1-mini-2025-04-14": 5.0,
            "gpt-4.1-nano-2025-04-14": 1.5,
            "gpt-3.5-turbo-0125": 8.0,
            "gemini-2.0-flash-001": 3.0,
            "gemini-2.0-flash-lite-001": 1.0,
            "gemini-2.5-flash": 5.0,
            "gemini-2.5-flash-lite": 1.5,
            "gemini-2.5-pro": 25.0,
        },
        metadata={
            "help": "USD per 1M training tokens by model (published list prices, mid 2025: check before relying on them).",
            "identity": False,
        },
    )
    chunk_steps: int = field(
        default=50_000,
        metadata={
            "help": "Steps read per query when exporting (bounds memory: peak RSS does not grow with the dataset).",
            "identity": False,
        },
    )
    memory_limit: str = field(
        default="256MB", metadata={"help": "DuckDB memory cap for the filter's queries.", "identity": False}
    )
    threads: int = field(
        default=2,
        metadata={
            "help": "Chunks exported in parallel, each on its own DuckDB cursor (memory: threads x one chunk).",
            "identity": False,
        },
    )


# ----------------------------------------------------------------------------------------------- trainer group


@dataclass
class TrainerConfig:
    name: str = field(
        default=MISSING,
        metadata={
            "help": "Trainer kind: `tiny` (offline student from a config), `local_lora`, `local_qlora`, `local_full`, `openai`."
        },
    )
    dataset: Optional[str] = field(
        default=None,
        metadata={
            "help": "Dataset path; None = the newest complete dataset of `name` (the pipeline: its filter output).",
            "identity": False,
        },
    )
    output_dir: Optional[str] = field(
        default=None,
        metadata={
            "help": "Checkpoint folder; default: <paths.checkpoints>/<name>/<identity> (crafter_exp/paths.py).",
            "identity": False,
        },
    )
    seed: int = field(default=0, metadata={"help": "Training seed."})


@dataclass
class TinyStudentConfig:
    """Architecture of the offline student built from a config (random init, no download)."""

    architecture: str = field(default="llama", metadata={"help": "transformers config family: `llama` or `qwen3`."})
    hidden_size: int = field(default=128, metadata={"help": "Hidden width."})
    num_layers: int = field(
        default=2,
        metadata={
            "help": "Transformer blocks (2: in the 300 s budget it beat 4 layers in the game, see conf/trainer/tiny.yaml)."
        },
    )
    num_heads: int = field(default=4, metadata={"help": "Attention heads."})
    intermediate_size: int = field(default=512, metadata={"help": "MLP width."})
    vocab_size: int = field(
        default=1024, metadata={"help": "Target vocabulary of the tokenizer trained on the dataset."}
    )
    tie_embeddings: bool = field(default=True, metadata={"help": "Share input and output embeddings."})


@dataclass
class LocalTrainerConfig(TrainerConfig):
    name: str = "local_lora"
    model: str = field(default="Qwen/Qwen3-0.6B", metadata={"help": "Base model: a hub id or a local path."})
    method: str = field(default="lora", metadata={"help": "`lora`, `qlora` or `full`."})
    epochs: float = field(default=3.0, metadata={"help": "Training epochs."})
    max_steps: int = field(default=-1, metadata={"help": "Stop after this many optimiser steps (-1 = use epochs)."})
    max_time_s: Optional[float] = field(
        default=None, metadata={"help": "Stop after this many seconds of training (None = no limit)."}
    )
    learning_rate: float = field(default=1e-4, metadata={"help": "Peak learning rate."})
    per_device_batch: int = field(default=4, metadata={"help": "Examples per device per step."})
    grad_accum: int = field(default=4, metadata={"help": "Gradient accumulation steps."})
    warmup_ratio: float = field(default=0.03, metadata={"help": "Fraction of steps of linear warm-up."})
    weight_decay: float = field(default=0.0, metadata={"help": "AdamW weight decay."})
    lr_scheduler: str = field(
        default="cosine",
        metadata={
            "help": "Learning-rate schedule: cosine, linear, constant, constant_with_warmup (run on max(step, time) progress, so they complete within max_time_s), or any other transformers scheduler name (step-based)."
        },
    )
    min_lr_ratio: float = field(
        default=0.0, metadata={"help": "Final learning rate as a fraction of the peak (cosine / linear)."}
    )
    max_grad_norm: float = field(default=1.0, metadata={"help": "Gradient clipping norm."})
    max_length: int = field(
        default=2048, metadata={"help": "Max tokens per example; longer ones are truncated and counted."}
    )
    packing: bool = field(default=False, metadata={"help": "Pack examples into full-length sequences."})
    group_by_length: bool = field(
        default=True,
        metadata={
            "help": "Batch examples of similar length together (less padding; transformers' length-grouped sampler)."
        },
    )
    loss_on: str = field(
        default="assistant",
        metadata={
            "help": '`assistant` (assistant tokens only), `all` (every token), or `weighted` (prompt tokens x prompt_weight); in every mode a reply with `"weight": 0` is context and gets no loss.'
        },
    )
    prompt_weight: float = field(
        default=0.5, metadata={"help": "With loss_on=weighted: weight of the prompt tokens' next-token loss."}
    )
    reply_balance: float = field(
        default=0.0,
        metadata={
            "help": "Weight each example's reply loss by (frequency of its exact reply) ^ -x, mean 1: 0 = off; 0.5 = rare replies (e.g. crafting actions among thousands of moves) count more."
        },
    )
    augment_copies: int = field(
        default=0,
        metadata={
            "help": "Train also on this many copies of each training example in which the environment's interchangeable names (ALFWorld: object kinds) are swapped consistently, so that the names in a reply can only come from the prompt; 0 = off. Held-out examples are never swapped."
        },
    )
    lora_r: int = field(default=16, metadata={"help": "LoRA rank."})
    lora_alpha: int = field(default=32, metadata={"help": "LoRA alpha."})
    lora_dropout: float = field(default=0.05, metadata={"help": "LoRA dropout."})
    lora_target_modules: list[str] = field(
        default_factory=lambda: ["all-linear"], metadata={"help": "Modules LoRA adapts (`all-linear` or names)."}
    )
    bf16: str = field(default="auto", metadata={"help": "`auto` (where the device supports it), `true`, `false`."})
    gradient_checkpointing: bool = field(
        default=False, metadata={"help": "Recompute activations to save memory (slower)."}
    )
    eval_fraction: float = field(
        default=0.05, metadata={"help": "Held-out fraction of the dataset for eval loss (0 = none)."}
    )
    eval_steps: int = field(
        default=100,
        metadata={"help": "Evaluate, and save a resumable checkpoint (weights + optimizer state), every N steps."},
    )
    eval_max_examples: Optional[int] = field(
        default=512, metadata={"help": "Cap on held-out eval examples (eval passes stay short); None = no cap."}
    )
    save_best: bool = field(default=True, metadata={"help": "Keep the checkpoint with the lowest eval loss."})
    logging_steps: int = field(default=10, metadata={"help": "Log loss every N steps.", "identity": False})
    merge_adapter: bool = field(default=False, metadata={"help": "Also save LoRA weights merged into the base model."})
    student: TinyStudentConfig = field(
        default_factory=TinyStudentConfig,
        metadata={
            "help": "Architecture of the student built when `model: tiny` (any method; LoRA on a random init barely learns)."
        },
    )
    retrain: bool = field(
        default=False,
        metadata={
            "help": "Train even when the output folder already holds a complete checkpoint of this config and dataset.",
            "identity": False,
        },
    )
    play_temperature: Optional[float] = field(
        default=None,
        metadata={
            "help": "Sampling temperature recorded in the checkpoint for hf_local play (None = greedy decoding)."
        },
    )
    progress: bool = field(
        default=True, metadata={"help": "Show a progress bar while tokenizing and training.", "identity": False}
    )


@dataclass
class TinyTrainerConfig(LocalTrainerConfig):
    """The offline student's defaults (conf/trainer/tiny.yaml explains each choice and what it was measured against)."""

    name: str = "tiny"
    model: str = "tiny"
    method: str = "full"
    learning_rate: float = 1e-3
    per_device_batch: int = 32
    grad_accum: int = 1
    warmup_ratio: float = 0.05
    min_lr_ratio: float = 0.1
    max_length: int = 256
    loss_on: str = "weighted"
    max_steps: int = 3800
    max_time_s: Optional[float] = 420.0
    epochs: float = 3.0
    eval_steps: int = 250
    logging_steps: int = 25
    play_temperature: Optional[float] = 0.7


@dataclass
class OpenAITrainerConfig(TrainerConfig):
    name: str = "openai"
    base_model: str = field(default="gpt-4o-mini-2024-07-18", metadata={"help": "Model to fine-tune."})
    suffix: Optional[str] = field(default=None, metadata={"help": "Suffix of the fine-tuned model name."})
    base_url: Optional[str] = field(
        default=None, metadata={"help": "OpenAI-compatible endpoint; None = the openai client's default."}
    )
    api_key_env: str = field(
        default="OPENAI_API_KEY",
        metadata={"help": "Name of the environment variable holding the key.", "identity": False},
    )
    epochs: Optional[int] = field(default=None, metadata={"help": "n_epochs (None = service default)."})
    batch_size: Optional[int] = field(default=None, metadata={"help": "batch_size (None = service default)."})
    learning_rate_multiplier: Optional[float] = field(
        default=None, metadata={"help": "learning_rate_multiplier (None = service default)."}
    )
    job_id: Optional[str] = field(
        default=None, metadata={"help": "Resume polling this existing job instead of creating one.", "identity": False}
    )
    cancel: bool = field(default=False, metadata={"help": "Cancel `job_id` and exit.", "identity": False})
    poll_interval_s: float = field(
        default=10.0,
        metadata={"help": "Initial poll interval (backs off up to poll_max_interval_s).", "identity": False},
    )
    poll_max_interval_s: float = field(default=120.0, metadata={"help": "Longest poll interval.", "identity": False})
    timeout_s: float = field(
        default=86400.0,
        metadata={
            "help": "Give up polling after this long (the job keeps running on the service; a rerun resumes polling it).",
            "identity": False,
        },
    )
    poll_backoff: float = field(
        default=1.5,
        metadata={
            "help": "Poll interval multiplier after each poll (reset to poll_interval_s when the job's status changes).",
            "identity": False,
        },
    )
    wait: bool = field(
        default=True,
        metadata={
            "help": "Poll until the job ends; false = upload, create, record the job id and return (a rerun resumes polling).",
            "identity": False,
        },
    )
    hyperparameters_style: str = field(
        default="method",
        metadata={
            "help": "`method` (current OpenAI API: method.supervised.hyperparameters) or `legacy` (top-level `hyperparameters`)."
        },
    )
    extra_hyperparameters: dict[str, Any] = field(
        default_factory=dict,
        metadata={
            "help": "Extra entries merged into the hyperparameters object (vendor knobs, e.g. {training_type: sft})."
        },
    )
    extra_body: dict[str, Any] = field(
        default_factory=dict,
        metadata={"help": "Extra top-level JSON fields sent with the job creation request (vendor knobs)."},
    )
    max_retries: int = field(
        default=5,
        metadata={
            "help": "Retries per request (the openai client's own backoff, honouring 429 Retry-After).",
            "identity": False,
        },
    )
    request_timeout_s: float = field(
        default=120.0,
        metadata={"help": "Seconds per HTTP request (uploads of large files may need more).", "identity": False},
    )
    retrain: bool = field(
        default=False,
        metadata={
            "help": "Create a new job even when the output folder already records a finished job of this config and dataset.",
            "identity": False,
        },
    )
    validation_file: bool = field(
        default=True,
        metadata={
            "help": "Upload the dataset's validation split (val.jsonl, from filter.val_fraction) as the job's validation_file."
        },
    )


# ---------------------------------------------------------------------------------------------------- rl group


@dataclass
class RLConfig:
    """`stage=rl`: the student improves on its own rollouts, starting from a checkpoint (crafter_exp/stages/rl.py)."""

    name: str = field(
        default=MISSING,
        metadata={
            "help": "Algorithm: `grpo` (group-relative policy gradient on identical worlds), `rft` (rejection-sampling rounds) or `dagger` (the expert labels the student's own states)."
        },
    )
    start: Optional[str] = field(
        default=None,
        metadata={
            "help": "Start checkpoint folder; None = the experiment's newest SFT checkpoint (the one model=hf_local would play).",
            "identity": False,
        },
    )
    iterations: int = field(
        default=8,
        metadata={
            "help": "GRPO iterations (rft, dagger: rounds); each plays `seeds` x `group_size` episodes, then updates the policy.",
            "identity": False,
        },
    )
    seeds: int = field(
        default=8,
        metadata={
            "help": "B: training worlds per iteration; iteration i plays worlds seed + i*B .. seed + (i+1)*B - 1 (fresh each time)."
        },
    )
    seed: int = field(
        default=500_000,
        metadata={
            "help": "First training world; [seed, seed + iterations*seeds) must not overlap the held-out eval seeds."
        },
    )
    group_size: int = field(
        default=8,
        metadata={
            "help": "G: episodes of each world per iteration (identical worlds, sampled replies: the group); at least 2."
        },
    )
    max_steps: Optional[int] = field(
        default=None,
        metadata={"help": "Episode step cap while training; None = env.max_steps (the cap evaluation uses)."},
    )
    temperature: Optional[float] = field(
        default=None,
        metadata={
            "help": "Sampling temperature of rollouts and of the trained log-probabilities; None = the checkpoint's play temperature, else 1.0."
        },
    )
    max_time_s: Optional[float] = field(
        default=None,
        metadata={
            "help": "Start no new iteration once this many seconds have gone (summed over resumed runs); None = no limit.",
            "identity": False,
        },
    )
    rollout_batch: int = field(
        default=64,
        metadata={
            "help": "Episodes played together in lockstep (one batched forward pass per turn for all of them).",
            "identity": False,
        },
    )
    rollout_workers: Optional[int] = field(
        default=None,
        metadata={
            "help": "Ray actors that play an iteration's episodes, each loading the weights the iteration starts "
            "from (a lost actor's batch is replayed); 0 = in this process, batched; None = ray.num_workers where "
            "the env's steps cost more than the model's forward (ALFWorld), else 0 (Crafter).",
            "identity": False,
        },
    )
    method: str = field(
        default="full",
        metadata={
            "help": "`full` (all weights) or `lora` (adapters on the start checkpoint; the reference is the adapter switched off)."
        },
    )
    learning_rate: float = field(
        default=1e-4, metadata={"help": "AdamW learning rate (GRPO); the SFT learning rate of rft / dagger rounds."}
    )
    lora_r: int = field(default=16, metadata={"help": "LoRA rank (method=lora)."})
    lora_alpha: int = field(default=32, metadata={"help": "LoRA alpha (method=lora)."})
    device: str = field(
        default="auto", metadata={"help": "`auto` (cuda if available), `cpu`, `cuda`.", "identity": False}
    )
    output_dir: Optional[str] = field(
        default=None,
        metadata={
            "help": "Folder of the per-iteration checkpoints; None = <paths.checkpoints>/<name>/rl-<config hash>.",
            "identity": False,
        },
    )
    log_checkpoints: bool = field(
        default=True,
        metadata={
            "help": "Log each iteration's checkpoint files to MLflow as artifacts (off for large models).",
            "identity": False,
        },
    )
    progress: bool = field(default=True, metadata={"help": "Show a progress bar per iteration.", "identity": False})
    probe: bool = field(
        default=True,
        metadata={
            "help": "Before any episode: 8 sampled replies of the start checkpoint on a training world must mostly parse as actions.",
            "identity": False,
        },
    )


@dataclass
class GRPOConfig(RLConfig):
    """GRPO with optional per-step credit (GiGPO anchor states or return-to-go); the loss follows TRL's GRPOTrainer."""

    name: str = "grpo"
    # Re-defaulted (help and identity marks stay the base's): the settings measured best on Crafter (README "RL
    # after SFT"): 4 worlds x 6 episodes, rtg advantages with a death penalty, lr 3e-4, one epoch of 512-turn steps,
    # 20 iterations or 10 minutes, whichever ends first.
    iterations: int = 20
    seeds: int = 4
    group_size: int = 6
    max_time_s: Optional[float] = 600.0
    learning_rate: float = 3e-4
    epochs: int = field(default=1, metadata={"help": "Optimiser passes over each iteration's turns."})
    minibatch: int = field(default=512, metadata={"help": "Turns per optimiser step."})
    micro_batch: int = field(
        default=256, metadata={"help": "Turns per forward pass (gradients accumulate over a minibatch; bounds memory)."}
    )
    clip_low: float = field(default=0.2, metadata={"help": "Lower clip of the probability ratio (1 - clip_low)."})
    clip_high: float = field(
        default=0.28,
        metadata={
            "help": "Upper clip of the probability ratio (1 + clip_high; DAPO's clip-higher keeps rare good actions learnable)."
        },
    )
    beta: float = field(
        default=0.0,
        metadata={
            "help": "Weight of the KL penalty to the start checkpoint (k3 estimator, as TRL); 0 = no reference pass."
        },
    )
    max_grad_norm: float = field(default=1.0, metadata={"help": "Gradient clipping norm."})
    advantage: str = field(
        default="rtg",
        metadata={
            "help": "`grpo` (episode return vs its group), `gigpo` (+ step groups of identical states, return-to-go), `rtg` (episode term + discounted return-to-go vs the group's mean at the same turn)."
        },
    )
    step_weight: float = field(
        default=1.0, metadata={"help": "Weight of the step-level term in `gigpo` / `rtg` advantages."}
    )
    gamma: float = field(default=0.95, metadata={"help": "Discount of the return-to-go in step-level advantages."})
    scale_rewards: str = field(
        default="group",
        metadata={"help": "`group` (divide by the group's std, GRPO) or `none` (Dr. GRPO: centre only)."},
    )
    reward: str = field(
        default="env",
        metadata={
            "help": "Per-turn reward: `env` (the environment's: Crafter +1 per achievement, +-0.1 per health point) or `achievements`."
        },
    )
    death_penalty: float = field(
        default=1.0,
        metadata={
            "help": "Subtracted from the last turn's reward of an episode that ended in death (survival shaping; 0 = none)."
        },
    )


@dataclass
class RoundsConfig(RLConfig):
    """Rounds of play, then SFT continued on what the round selected (rl=rft, rl=dagger: crafter_exp/rl/rounds.py)."""

    learning_rate: float = 3e-4
    sft_steps: int = field(default=200, metadata={"help": "SFT optimiser steps per round."})
    sft_time_s: Optional[float] = field(
        default=60.0, metadata={"help": "SFT seconds per round at most (trainer.max_time_s)."}
    )


@dataclass
class RFTConfig(RoundsConfig):
    """Rejection-sampling rounds: play, keep the best episodes (the filter's SQL), continue SFT on them."""

    name: str = "rft"
    keep: int = field(default=16, metadata={"help": "Episodes kept per round (filter.limit), best first by `sort_by`."})
    sort_by: str = field(
        default="achievements",
        metadata={
            "help": "Which episodes count as best (filter.sort_by): `quality`, `reward`, `achievements`, `efficiency`."
        },
    )
    min_achievements: Optional[int] = field(
        default=None,
        metadata={"help": "Keep only episodes with at least this many achievements (filter.min_achievements)."},
    )


@dataclass
class DaggerConfig(RoundsConfig):
    """DAgger rounds: the student plays, the environment's expert labels every state it reached, SFT continues on
    those labels (filter.target=expert), aggregated over the rounds."""

    name: str = "dagger"
    group_size: int = field(
        default=1, metadata={"help": "Episodes of each world per round (1: DAgger needs states, not groups)."}
    )
    seeds: int = field(default=16, metadata={"help": "Training worlds per round (fresh each round)."})
    iterations: int = field(default=4, metadata={"help": "Rounds.", "identity": False})
    aggregate: bool = field(
        default=True,
        metadata={
            "help": "Train each round on the labelled turns of every round so far (DAgger's aggregated dataset); false = this round's only."
        },
    )
    start_data: bool = field(
        default=True,
        metadata={
            "help": "Also train on the traces the start checkpoint was trained on (its dataset's source runs), relabelled by the expert where they recorded it (DAgger's D0: the teacher's own states stay in the mix)."
        },
    )


# ---------------------------------------------------------------------------------------------- root sections


@dataclass
class PathsConfig:
    home: str = field(
        default=".",
        metadata={
            "help": "Project folder holding the shared trace DB, datasets and checkpoints (one per project, not per run)."
        },
    )
    db: str = field(default="${paths.home}/data/traces.duckdb", metadata={"help": "The DuckDB trace store."})
    datasets: str = field(
        default="${paths.home}/data/datasets", metadata={"help": "Where the filter stage writes datasets."}
    )
    checkpoints: str = field(
        default="${paths.home}/data/checkpoints", metadata={"help": "Where trainers write checkpoints."}
    )
    reports: str = field(
        default="${paths.home}/data/reports", metadata={"help": "Where compare / sweep summaries are written."}
    )


@dataclass
class TrackingConfig:
    uri: str = field(
        default="sqlite:///mlflow.db", metadata={"help": "MLflow tracking URI (MLflow 3's default local store)."}
    )
    experiment: str = field(default="crafter-exp", metadata={"help": "MLflow experiment name."})
    enabled: bool = field(default=True, metadata={"help": "Log to MLflow at all."})
    traces: str = field(
        default="llm",
        metadata={
            "help": "MLflow traces of rollout/eval episodes (Traces tab: a trace per episode, a span per turn), linked to the run: `llm` = episodes that called a model (openai, hf_local), `all` = every episode, `off`."
        },
    )
    trace_episodes: Optional[int] = field(
        default=8,
        metadata={
            "help": "Most episodes traced per rollout/eval run (the first to finish; MLflow's span writer costs ms per turn, the DuckDB store keeps every step anyway); null = every episode."
        },
    )


@dataclass
class RayConfig:
    address: Optional[str] = field(
        default=None,
        metadata={"help": "None = start a local Ray; `auto` or `ray://host:port` joins an existing cluster."},
    )
    num_workers: int = field(default=2, metadata={"help": "Rollout actors; 0 = play in this process without Ray."})
    episodes_per_task: int = field(
        default=8, metadata={"help": "Episodes one actor plays together (in lockstep, so policies can batch)."}
    )
    max_task_retries: int = field(
        default=3, metadata={"help": "Times a batch is replayed elsewhere when its actor dies."}
    )


@dataclass
class RolloutConfig:
    run_id: Optional[str] = field(
        default=None,
        metadata={
            "help": "Trace run id; None = derived from name, stage, env and model. Rerunning an id plays only missing seeds."
        },
    )
    progress: bool = field(default=True, metadata={"help": "Show a progress bar."})
    record_expert: Optional[bool] = field(
        default=None,
        metadata={
            "help": "Ask the env's expert at every turn and store its action (steps.expert_action; compare's expert_agreement) whatever the policy plays; None = in evaluation runs and when filter.target=expert, where the env has an expert.",
            "identity": False,
        },
    )


@dataclass
class EvalConfig:
    episodes: int = field(default=20, metadata={"help": "Held-out episodes per evaluated policy."})
    seed: int = field(
        default=1_000_000, metadata={"help": "First eval seed; the eval range must not overlap the training range."}
    )
    policies: list[str] = field(
        default_factory=lambda: ["random", "student_before", "student_after", "teacher"],
        metadata={"help": "Policies the pipeline evaluates (random, teacher, student_before, student_after, base)."},
    )
    also_policies: list[str] = field(
        default_factory=lambda: ["student_after"],
        metadata={
            "help": "Policies the pipeline also plays on the env's further held-out sets (ALFWorld: valid_unseen); [] = none."
        },
    )


@dataclass
class ProtocolConfig:
    """An evaluation protocol: how many held-out episodes each policy plays and how they end, so a number can be
    set beside a published table's (conf/protocol/: `ours`, `crafter_paper`, `balrog`). It applies to the held-out
    evaluation (stage=eval and the pipeline's evaluations), never to rollouts that make training data."""

    name: str = field(
        default="ours",
        metadata={
            "help": "Protocol id, recorded with every eval run (trace store, MLflow tag `protocol`) and stated in compare reports."
        },
    )
    description: str = field(
        default="this project's default: 20 held-out episodes capped at env.max_steps (300 on Crafter)",
        metadata={"help": "One line saying what the protocol is (printed in compare reports)."},
    )
    source: str = field(
        default="", metadata={"help": "Where the protocol is defined (paper, code, config file), for the report."}
    )
    envs: list[str] = field(
        default_factory=list,
        metadata={"help": "Environments the protocol is defined for (another env fails at start); empty = any."},
    )
    episodes: Optional[int] = field(
        default=None, metadata={"help": "Held-out episodes per evaluated policy; None = eval.episodes."}
    )
    env: dict[str, Any] = field(
        default_factory=dict,
        metadata={
            "help": "Env settings the protocol fixes for evaluation, e.g. {max_steps: 10000, length: 10000}; {} = the env's own."
        },
    )
    metrics: list[str] = field(
        default_factory=list,
        metadata={"help": "The metrics published tables report under this protocol (named first in compare reports)."},
    )


@dataclass
class CompareConfig:
    runs: list[str] = field(
        default_factory=list,
        metadata={"help": "Trace run ids (or MLflow run names) to compare; the first is the baseline."},
    )
    k: int = field(default=3, metadata={"help": "Achievement rate threshold: % of episodes with >= k achievements."})
    metrics: list[str] = field(default_factory=list, metadata={"help": "Metrics to report (empty = all)."})
    custom_metrics: list[Any] = field(
        default_factory=list,
        metadata={
            "help": "Extra metrics: `{_target_: module.fn}` called with the episodes DataFrame, returning {name: value}."
        },
    )
    bootstrap: int = field(default=2000, metadata={"help": "Bootstrap resamples for 95 % intervals."})
    alpha: float = field(default=0.05, metadata={"help": "Significance level."})
    force: bool = field(default=False, metadata={"help": "Compare runs even if their seed sets differ."})
    permutations: int = field(
        default=9999,
        metadata={
            "help": "Permutation-test resamples per comparison (paired by seed when the runs played the same seeds)."
        },
    )
    pairwise: bool = field(
        default=False, metadata={"help": "Test every pair of runs, not only each run against the first (baseline)."}
    )
    correction: str = field(
        default="bh",
        metadata={
            "help": "Multiple-comparison correction over all tests of a report: `bh` (Benjamini-Hochberg), `holm`, `none`."
        },
    )
    custom_resamples: int = field(
        default=500,
        metadata={"help": "Resamples (bootstrap and permutation) for custom metrics, which cost one Python call each."},
    )
    figures: bool = field(default=True, metadata={"help": "Write and log the figures."})


@dataclass
class SweepConfig:
    metric: Optional[str] = field(
        default=None,
        metadata={
            "help": "Metric summarised against the swept values at the end of a multirun; None = the env's primary metric."
        },
    )


@dataclass
class PipelineConfig:
    rl: Optional[str] = field(
        default=None,
        metadata={
            "help": "`grpo`, `rft` or `dagger`: after SFT, run stage=rl (with the `rl` group's settings) and evaluate `student_rl`; None = off."
        },
    )


@dataclass
class Config:
    stage: str = field(
        default="pipeline",
        metadata={
            "help": "What runs: `pipeline`, `rollout`, `filter`, `validate`, `train`, `eval`, `compare`, `export`, `rl`."
        },
    )
    name: str = field(
        default="default",
        metadata={"help": "Experiment name: groups a pipeline's stages; a rerun with the same name resumes."},
    )
    seed: int = field(default=0, metadata={"help": "Global seed (torch, numpy, sampling)."})
    if TYPE_CHECKING:
        # what the groups compose to, for type checkers; at run time `Any`, because a field typed with the base
        # class makes OmegaConf validate the option's nested nodes against the base (`model.prompt` then fails)
        env: EnvConfig = MISSING
        model: ModelConfig = MISSING
        trainer: TrainerConfig = MISSING
        rl: RLConfig = MISSING
    else:
        env: Any = field(default=MISSING, metadata={"help": "Environment (config group `env`: crafter | alfworld)."})
        model: Any = field(default=MISSING, metadata={"help": "The policy that plays (config group `model`)."})
        trainer: Any = field(default=MISSING, metadata={"help": "Fine-tuning backend (config group `trainer`)."})
        rl: Any = field(
            default=MISSING,
            metadata={"help": "stage=rl's algorithm and settings (config group `rl`: grpo | rft | dagger)."},
        )
    filter: FilterConfig = field(
        default_factory=FilterConfig,
        metadata={"help": "Which traces to keep and how to export them (config group `filter`)."},
    )
    paths: PathsConfig = field(
        default_factory=PathsConfig, metadata={"help": "Where the trace store, datasets, checkpoints and reports live."}
    )
    tracking: TrackingConfig = field(
        default_factory=TrackingConfig, metadata={"help": "MLflow: where runs go and what is traced."}
    )
    ray: RayConfig = field(
        default_factory=RayConfig,
        metadata={"help": "Rollout actors: a local Ray or a cluster, how many, batch size, retries."},
    )
    rollout: RolloutConfig = field(
        default_factory=RolloutConfig, metadata={"help": "The rollout stage: run id and progress bar."}
    )
    eval: EvalConfig = field(
        default_factory=EvalConfig,
        metadata={"help": "Held-out evaluation: episodes, seeds, which policies the pipeline plays."},
    )
    compare: CompareConfig = field(
        default_factory=CompareConfig,
        metadata={"help": "Compare reports: runs, metrics, intervals, significance tests, figures."},
    )
    sweep: SweepConfig = field(default_factory=SweepConfig, metadata={"help": "Multirun (-m) summaries."})
    protocol: ProtocolConfig = field(
        default_factory=ProtocolConfig,
        metadata={
            "help": "Evaluation protocol (conf/protocol/: ours, crafter_paper, balrog): episodes and step cap of held-out play."
        },
    )
    pipeline: PipelineConfig = field(
        default_factory=PipelineConfig, metadata={"help": "The pipeline's optional stages (RL after SFT)."}
    )


def register_configs() -> None:
    """Put the schemas in Hydra's ConfigStore; `conf/` YAML extends them."""
    cs = ConfigStore.instance()
    cs.store(name="base_config", node=Config)
    for group, name, node in [
        ("env", "crafter_schema", CrafterEnvConfig),
        ("env", "alfworld_schema", AlfworldEnvConfig),
        ("model", "scripted_schema", ScriptedModelConfig),
        ("model", "random_schema", RandomModelConfig),
        ("model", "openai_schema", OpenAIModelConfig),
        ("model", "hf_local_schema", HFLocalModelConfig),
        ("filter", "filter_schema", FilterConfig),
        ("protocol", "protocol_schema", ProtocolConfig),
        ("trainer", "tiny_schema", TinyTrainerConfig),
        ("trainer", "local_schema", LocalTrainerConfig),
        ("trainer", "openai_schema", OpenAITrainerConfig),
        ("rl", "grpo_schema", GRPOConfig),
        ("rl", "rft_schema", RFTConfig),
        ("rl", "dagger_schema", DaggerConfig),
    ]:
        cs.store(group=f"schema/{group}", name=name.removesuffix("_schema"), node=node)


CONF_DIR = str(Path(__file__).resolve().parent.parent / "conf")


def compose_config(overrides: Optional[list[str]] = None, config_dir: Optional[str] = None) -> Config:
    """The real `conf/` composed with overrides, as a typed `Config` (for tests and notebooks; no Hydra run dir)."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from omegaconf import OmegaConf

    register_configs()
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=config_dir or CONF_DIR, version_base="1.3"):
        cfg = compose(config_name="config", overrides=list(overrides or []))
    return OmegaConf.to_object(cfg)  # type: ignore[return-value]  # a Config: the schema is the root node
