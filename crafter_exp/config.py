"""Config schemas: every Hydra node is one of these dataclasses, so a misspelt key or a wrong type fails at start.

The YAML in `conf/` extends these schemas (Hydra's "structured config schema" pattern): each option of a
group starts with `defaults: [<option>_schema]`. Every field carries a one-line docstring (the string literal
below it) saying what it does; the default is the value shown. Stages receive these objects (via
`OmegaConf.to_object`) or build them directly in tests.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING

NOT_IDENTITY = {"identity": False}
"""Field metadata of a setting that changes how a stage runs, reports or where it reads and writes, not what its
output holds: left out of the output's identity (crafter_exp/paths.py), so changing it reuses or resumes the output."""

# --------------------------------------------------------------------------------------------------- env group


@dataclass
class EnvConfig:
    """Fields shared by every environment."""

    name: str = MISSING
    """Environment id (`crafter`, `alfworld`); selects the implementation."""
    episodes: int = field(default=32, metadata=NOT_IDENTITY)
    """Episodes the rollout stage plays; episode i plays seed `seed + i`."""
    seed: int = field(default=0, metadata=NOT_IDENTITY)
    """First seed of the rollout (training) seed range."""
    max_steps: int = 300
    """Hard cap on environment steps per episode (the episode ends with termination `max_steps`)."""


@dataclass
class CrafterEnvConfig(EnvConfig):
    name: str = "crafter"
    episodes: int = 200
    """Episodes the rollout stage plays (200: the offline pipeline's teacher data, ~50k steps); lower it for paid APIs."""
    difficulty: str = "normal"
    """`easy` / `normal` / `hard` (see README: what each changes); `normal` is stock Crafter."""
    length: int = 10000
    """Crafter's own episode length (stock default 10000); `max_steps` usually ends episodes first."""
    area: int = 64
    """World size (square)."""
    obs_format: str = "compact"
    """Text observation: `compact` (nearest objects, short, for small models), `full` (adds a 9x7 grid)."""
    render: bool = False
    """Render pixels each step (slow; only for image agents or videos)."""


@dataclass
class AlfworldEnvConfig(EnvConfig):
    name: str = "alfworld"
    max_steps: int = 50
    data_path: Optional[str] = None
    """ALFWorld data folder (json_2.1.1/ + logic/); default: $ALFWORLD_DATA, else ../shared/alfworld_data when present."""
    split: str = "train"
    """`train`, `eval_in_distribution` (valid_seen) or `eval_out_of_distribution` (valid_unseen)."""
    task_types: list[str] = field(default_factory=list)
    """Keep only these task types (e.g. pick_and_place_simple); empty = all six."""
    show_admissible: bool = True
    """Append the admissible commands to each observation."""
    eval_split: Optional[str] = "eval_in_distribution"
    """Split the evaluate stage plays (held-out games: eval seeds alone would replay `split`'s games); null = split."""
    also_eval_splits: list[str] = field(default_factory=lambda: ["eval_out_of_distribution"])
    """Further held-out splits the pipeline plays `eval.also_policies` on, reported beside the main comparison."""
    fast_text: bool = True
    """Memoise TextWorld's text-generation parses (identical text, ~2x faster episodes); false = stock TextWorld."""


# ------------------------------------------------------------------------------------------------- model group


@dataclass
class PromptConfig:
    """How observations become chat messages (used by LLM policies and by the SFT export alike)."""

    template: str = "standard"
    """`standard` (<think> then <action>), `world_model` (<think>, <prediction>, <action>) or `bare` (action name only)."""
    history: int = 0
    """Previous turns (observation + reply) included in each prompt."""
    system_prompt_file: Optional[str] = None
    """Replace the built-in system prompt with this file's text."""
    action_mode: str = "text"
    """`text` (actions parsed from the reply) or `tools` (one `interact` tool taking 1..N actions)."""
    max_actions_per_turn: int = 1
    """Most actions one reply may execute (tool calls or several <action> lines)."""
    invalid_feedback: bool = False
    """Start the next observation with "Your last reply was invalid: <why>. Played: <actions>." (BALROG's idea)."""


@dataclass
class ModelConfig:
    name: str = MISSING
    """Policy kind: `scripted`, `random`, `openai`, `hf_local`."""
    label: Optional[str] = field(default=None, metadata=NOT_IDENTITY)
    """Name shown in stores and reports (default: the policy's own model name)."""
    prompt: PromptConfig = field(default_factory=PromptConfig)
    """Prompt template and history window."""


@dataclass
class ScriptedModelConfig(ModelConfig):
    name: str = "scripted"
    epsilon: float = 0.1
    """Probability of a uniformly random action instead of the expert's (mixed-quality data to filter)."""


@dataclass
class RandomModelConfig(ModelConfig):
    name: str = "random"


@dataclass
class OpenAIModelConfig(ModelConfig):
    name: str = "openai"
    model: str = "gpt-4o-mini"
    """Model name sent to the endpoint."""
    provider: str = "openai"
    """Provider label stored with traces (filterable)."""
    base_url: Optional[str] = None
    """OpenAI-compatible endpoint; None = the openai client's default."""
    api_key_env: str = field(default="OPENAI_API_KEY", metadata=NOT_IDENTITY)
    """Name of the environment variable holding the key (the key itself never enters config or files)."""
    temperature: Optional[float] = 0.7
    """Sampling temperature; None = not sent (reasoning models that reject it)."""
    top_p: Optional[float] = 1.0
    """Nucleus sampling mass; None = not sent."""
    max_tokens: int = 512
    """Completion token cap per call."""
    seed: Optional[int] = None
    """Sampling seed sent to the endpoint (where supported)."""
    reasoning_effort: Optional[str] = None
    """`low`/`medium`/`high` for reasoning models; None = not sent."""
    timeout: float = field(default=60.0, metadata=NOT_IDENTITY)
    """Seconds per request before it counts as failed."""
    max_retries: int = field(default=5, metadata=NOT_IDENTITY)
    """Retries per call (the openai client's own backoff, honouring Retry-After)."""
    concurrency: int = field(default=16, metadata=NOT_IDENTITY)
    """Requests in flight per Ray worker (total = workers x concurrency)."""
    max_consecutive_errors: int = field(default=3, metadata=NOT_IDENTITY)
    """An episode whose calls fail this many times in a row ends with termination `api_error`."""
    probe: bool = field(default=True, metadata=NOT_IDENTITY)
    """One probe call before any episode: unreachable endpoint / 401 / unknown model fail fast."""
    prices: dict[str, Any] = field(default_factory=dict, metadata=NOT_IDENTITY)
    """Per-model price table, USD per 1M tokens: {model: {input: x, output: y}}; unknown model -> cost null."""
    extra_body: dict[str, Any] = field(default_factory=dict)
    """Extra JSON fields sent with each request (vendor-specific knobs)."""
    tool_choice: str = "required"
    """`tool_choice` sent in action_mode=tools (`required`; `auto` for servers that lack `required`)."""
    max_tokens_param: str = "max_tokens"
    """Request field carrying max_tokens: `max_tokens`, or `max_completion_tokens` (OpenAI reasoning models)."""
    stream: bool = field(default=False, metadata=NOT_IDENTITY)
    """Request the reply streamed (server-sent chunks, usage in the last) and assemble it; the record is the same."""


@dataclass
class HFLocalModelConfig(ModelConfig):
    name: str = "hf_local"
    prompt: Optional[PromptConfig] = None
    """Prompt template; None = the one recorded in the checkpoint's manifest (the data's), else standard."""
    path: Optional[str] = None
    """Checkpoint: a local folder (full model or PEFT adapter) or a hub id; None = the newest checkpoint of `name`."""
    base_model: Optional[str] = None
    """Base model for an adapter checkpoint (default: read from the adapter config)."""
    do_sample: Optional[bool] = None
    """Sample instead of greedy decoding; None = as the checkpoint's manifest recommends (`play_temperature`), else greedy."""
    temperature: Optional[float] = None
    """Sampling temperature when sampling; None = the manifest's `play_temperature`, else 1.0."""
    max_new_tokens: Optional[int] = None
    """Tokens generated per turn; None = the longest reply in the checkpoint's training data (manifest), else 256."""
    batch_size: int = field(default=32, metadata=NOT_IDENTITY)
    """Episodes decoded together in one forward pass."""
    device: str = field(default="auto", metadata=NOT_IDENTITY)
    """`auto` (cuda if available), `cpu`, `cuda`."""
    dtype: str = "auto"
    """`auto` (bf16 on a GPU that has it; on a CPU with native bf16, fp32 weights under bf16 autocast), `float32`,
    `bfloat16`, `float16`."""
    seed: int = 0
    """Sampling seed."""
    in_process: Optional[bool] = field(default=None, metadata=NOT_IDENTITY)
    """Play in the driver (one batched forward for all episodes) or, false, a copy per Ray worker (envs whose steps
    cost more than the model's forward then step in parallel); None = as the env says (`TextEnv.slow_steps`)."""
    decoding: str = "auto"
    """`rank` (score every valid action given the prompt, play the best or sample from their softmax), `generate`
    (free text, parsed), `auto` (rank where the env's actions are its admissible commands, else generate)."""
    score: str = "sum"
    """With decoding=rank: a candidate's score is the `sum` of its tokens' log-probs (its probability) or the `mean`."""
    chat_template_kwargs: dict[str, Any] = field(default_factory=dict)
    """Extra arguments for the tokenizer's chat template (e.g. {enable_thinking: false} for Qwen3)."""


# ------------------------------------------------------------------------------------------------ filter group


@dataclass
class FilterConfig:
    """Which traces to keep (compiled to parameterised SQL) and how to export them."""

    runs: list[str] = field(default_factory=list, metadata=NOT_IDENTITY)
    """Trace run ids (or experiment names = their newest complete rollout run) to read; empty = that of `name`."""
    min_achievements: Optional[int] = None
    """Minimum distinct achievements in the episode."""
    max_achievements: Optional[int] = None
    """Maximum distinct achievements in the episode."""
    min_reward: Optional[float] = None
    """Minimum total episode reward."""
    max_reward: Optional[float] = None
    """Maximum total episode reward."""
    max_turns: Optional[int] = None
    """Maximum turns in the episode."""
    achievement_types: list[str] = field(default_factory=list)
    """Required achievements: all of them, or at least `min_achievement_types` of them."""
    min_achievement_types: Optional[int] = None
    """With achievement_types: how many of them are required (None = all)."""
    exclude_achievements: list[str] = field(default_factory=list)
    """Achievements ignored when counting (e.g. collect_sapling)."""
    success_only: bool = False
    """Keep only successful episodes (ALFWorld: won)."""
    task_types: list[str] = field(default_factory=list)
    """Keep only these task types (ALFWorld)."""
    models: list[str] = field(default_factory=list)
    """Keep only episodes played by these models."""
    providers: list[str] = field(default_factory=list)
    """Keep only episodes from these providers."""
    max_cost: Optional[float] = None
    """Maximum episode cost (USD)."""
    max_tokens: Optional[int] = None
    """Maximum episode tokens (prompt + completion)."""
    include_api_errors: bool = False
    """Keep episodes that ended with termination `api_error`."""
    min_quality: Optional[float] = None
    """Minimum episode quality score (crafter_exp.filtering.quality: achievements + efficiency - penalties)."""
    quality_weights: dict[str, float] = field(
        default_factory=lambda: {
            "achievements": 1.0,
            "success": 5.0,
            "efficiency": 10.0,
            "invalid": 2.0,
            "repeated": 0.5,
        }
    )
    """Weights of the quality score's terms (keys: achievements, success, efficiency, invalid, repeated)."""
    sort_by: str = "quality"
    """Which episodes `limit` keeps (best first): `quality`, `reward`, `achievements`, `efficiency`, `seed`."""
    limit: Optional[int] = None
    """Keep at most this many episodes."""
    step_mode: str = "all"
    """Turns kept: `all`, `achievement` (turns that unlocked one), `window` (K turns before one), `reward`."""
    window: int = 5
    """With step_mode=window: turns kept before each achievement turn."""
    min_step_reward: float = 0.0
    """With step_mode=reward: keep turns with reward >= this."""
    drop_unparsed: bool = True
    """Drop turns whose reply failed to parse."""
    format: str = "openai_chat"
    """`openai_chat`, `openai_tools`, `vertex_gemini`, `single_turn`, `parquet`."""
    multi_turn: bool = False
    """One example per episode (multi-turn) instead of one per turn."""
    system_prompt: Optional[str] = None
    """System prompt text for exported examples (None = the prompt the policy saw); see system_prompt_mode."""
    system_prompt_mode: str = "replace"
    """With system_prompt: `replace` the policy's system prompt, or `append` the text to it."""
    keep_reasoning: bool = True
    """Keep <think> reasoning in assistant turns."""
    keep_predictions: bool = True
    """Keep world-model <prediction>s in assistant turns; false drops them and exports the `standard` template's
    system prompt (the student learns to act, not to predict)."""
    min_prediction_f1: Optional[float] = None
    """Minimum episode prediction F1 (0-1, mean over its scored world-model predictions; episodes without any fail)."""
    step_min_prediction_f1: Optional[float] = None
    """Step level: keep only turns whose world-model prediction scored F1 >= this (0-1; unscored turns dropped)."""
    max_examples: Optional[int] = None
    """Subset to N examples (seeded)."""
    dedupe: bool = False
    """Drop duplicate examples."""
    val_fraction: Optional[float] = None
    """Fraction of episodes in the validation split (val.parquet, or val.jsonl for the JSONL formats: a fine-tuning
    job's validation_file, the local trainers' eval set); null = 0.1 for parquet, 0 (no split) for JSONL."""
    seed: int = 0
    """Seed for splits and subsets."""
    stats_only: bool = field(default=False, metadata=NOT_IDENTITY)
    """Print statistics, write nothing."""
    output: Optional[str] = field(default=None, metadata=NOT_IDENTITY)
    """Output path; default: <paths.datasets>/<name>/<identity> (crafter_exp/paths.py)."""
    validate_path: Optional[str] = field(default=None, metadata=NOT_IDENTITY)
    """stage=validate: a JSONL file or a dataset folder to check; None = this experiment's dataset."""
    validate_format: str = field(default="auto", metadata=NOT_IDENTITY)
    """stage=validate: the format to check against; `auto` = the manifest's, else guessed from the first line."""
    tokenizer: Optional[str] = field(default=None, metadata=NOT_IDENTITY)
    """Local tokenizer for token counts (a tokenizer.json or a HF folder); None = estimate (chars / 4)."""
    price_model: str = field(default="gpt-4o-mini-2024-07-18", metadata=NOT_IDENTITY)
    """Model whose training price `validate` uses for the cost estimate."""
    cost_epochs: int = field(default=3, metadata=NOT_IDENTITY)
    """Epochs assumed by the cost estimate."""
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
        metadata=NOT_IDENTITY,
    )
    """USD per 1M training tokens by model (published list prices, mid 2025: check before relying on them)."""
    chunk_steps: int = field(default=50_000, metadata=NOT_IDENTITY)
    """Steps read per query when exporting (bounds memory: peak RSS does not grow with the dataset)."""
    memory_limit: str = field(default="256MB", metadata=NOT_IDENTITY)
    """DuckDB memory cap for the filter's queries."""
    threads: int = field(default=2, metadata=NOT_IDENTITY)
    """Chunks exported in parallel, each on its own DuckDB cursor (memory: threads x one chunk)."""


# ----------------------------------------------------------------------------------------------- trainer group


@dataclass
class TrainerConfig:
    name: str = MISSING
    """Trainer kind: `tiny` (offline student from a config), `local_lora`, `local_qlora`, `local_full`, `openai`."""
    dataset: Optional[str] = field(default=None, metadata=NOT_IDENTITY)
    """Dataset path; None = the newest complete dataset of `name` (the pipeline: its filter output)."""
    output_dir: Optional[str] = field(default=None, metadata=NOT_IDENTITY)
    """Checkpoint folder; default: <paths.checkpoints>/<name>/<identity> (crafter_exp/paths.py)."""
    seed: int = 0
    """Training seed."""


@dataclass
class TinyStudentConfig:
    """Architecture of the offline student built from a config (random init, no download)."""

    architecture: str = "llama"
    """transformers config family: `llama` or `qwen3`."""
    hidden_size: int = 128
    """Hidden width."""
    num_layers: int = 2
    """Transformer blocks (2: in the 300 s budget it beat 4 layers in the game, see conf/trainer/tiny.yaml)."""
    num_heads: int = 4
    """Attention heads."""
    intermediate_size: int = 512
    """MLP width."""
    vocab_size: int = 1024
    """Target vocabulary of the tokenizer trained on the dataset."""
    tie_embeddings: bool = True
    """Share input and output embeddings."""


@dataclass
class LocalTrainerConfig(TrainerConfig):
    name: str = "local_lora"
    model: str = "Qwen/Qwen3-0.6B"
    """Base model: a hub id or a local path."""
    method: str = "lora"
    """`lora`, `qlora` or `full`."""
    epochs: float = 3.0
    """Training epochs."""
    max_steps: int = -1
    """Stop after this many optimiser steps (-1 = use epochs)."""
    max_time_s: Optional[float] = None
    """Stop after this many seconds of training (None = no limit)."""
    learning_rate: float = 1e-4
    """Peak learning rate."""
    per_device_batch: int = 4
    """Examples per device per step."""
    grad_accum: int = 4
    """Gradient accumulation steps."""
    warmup_ratio: float = 0.03
    """Fraction of steps of linear warm-up."""
    weight_decay: float = 0.0
    """AdamW weight decay."""
    lr_scheduler: str = "cosine"
    """Learning-rate schedule: cosine, linear, constant, constant_with_warmup (run on max(step, time) progress,
    so they complete within max_time_s), or any other transformers scheduler name (step-based)."""
    min_lr_ratio: float = 0.0
    """Final learning rate as a fraction of the peak (cosine / linear)."""
    max_grad_norm: float = 1.0
    """Gradient clipping norm."""
    max_length: int = 2048
    """Max tokens per example; longer ones are truncated and counted."""
    packing: bool = False
    """Pack examples into full-length sequences."""
    group_by_length: bool = True
    """Batch examples of similar length together (less padding; transformers' length-grouped sampler)."""
    loss_on: str = "assistant"
    """`assistant` (assistant tokens only), `all` (every token), or `weighted` (prompt tokens x prompt_weight);
    in every mode a reply with `"weight": 0` is context and gets no loss."""
    prompt_weight: float = 0.5
    """With loss_on=weighted: weight of the prompt tokens' next-token loss."""
    reply_balance: float = 0.0
    """Weight each example's reply loss by (frequency of its exact reply) ^ -x, mean 1: 0 = off; 0.5 = rare replies
    (e.g. crafting actions among thousands of moves) count more."""
    lora_r: int = 16
    """LoRA rank."""
    lora_alpha: int = 32
    """LoRA alpha."""
    lora_dropout: float = 0.05
    """LoRA dropout."""
    lora_target_modules: list[str] = field(default_factory=lambda: ["all-linear"])
    """Modules LoRA adapts (`all-linear` or names)."""
    bf16: str = "auto"
    """`auto` (where the device supports it), `true`, `false`."""
    gradient_checkpointing: bool = False
    """Recompute activations to save memory (slower)."""
    eval_fraction: float = 0.05
    """Held-out fraction of the dataset for eval loss (0 = none)."""
    eval_steps: int = 100
    """Evaluate, and save a resumable checkpoint (weights + optimizer state), every N steps."""
    eval_max_examples: Optional[int] = 512
    """Cap on held-out eval examples (eval passes stay short); None = no cap."""
    save_best: bool = True
    """Keep the checkpoint with the lowest eval loss."""
    logging_steps: int = field(default=10, metadata=NOT_IDENTITY)
    """Log loss every N steps."""
    merge_adapter: bool = False
    """Also save LoRA weights merged into the base model."""
    student: TinyStudentConfig = field(default_factory=TinyStudentConfig)
    """Architecture of the student built when `model: tiny` (any method; LoRA on a random init barely learns)."""
    retrain: bool = field(default=False, metadata=NOT_IDENTITY)
    """Train even when the output folder already holds a complete checkpoint of this config and dataset."""
    play_temperature: Optional[float] = None
    """Sampling temperature recorded in the checkpoint for hf_local play (None = greedy decoding)."""
    progress: bool = field(default=True, metadata=NOT_IDENTITY)
    """Show a progress bar while tokenizing and training."""


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
    base_model: str = "gpt-4o-mini-2024-07-18"
    """Model to fine-tune."""
    suffix: Optional[str] = None
    """Suffix of the fine-tuned model name."""
    base_url: Optional[str] = None
    """OpenAI-compatible endpoint; None = the openai client's default."""
    api_key_env: str = field(default="OPENAI_API_KEY", metadata=NOT_IDENTITY)
    """Name of the environment variable holding the key."""
    epochs: Optional[int] = None
    """n_epochs (None = service default)."""
    batch_size: Optional[int] = None
    """batch_size (None = service default)."""
    learning_rate_multiplier: Optional[float] = None
    """learning_rate_multiplier (None = service default)."""
    job_id: Optional[str] = field(default=None, metadata=NOT_IDENTITY)
    """Resume polling this existing job instead of creating one."""
    cancel: bool = field(default=False, metadata=NOT_IDENTITY)
    """Cancel `job_id` and exit."""
    poll_interval_s: float = field(default=10.0, metadata=NOT_IDENTITY)
    """Initial poll interval (backs off up to poll_max_interval_s)."""
    poll_max_interval_s: float = field(default=120.0, metadata=NOT_IDENTITY)
    """Longest poll interval."""
    timeout_s: float = field(default=86400.0, metadata=NOT_IDENTITY)
    """Give up polling after this long (the job keeps running on the service; a rerun resumes polling it)."""
    poll_backoff: float = field(default=1.5, metadata=NOT_IDENTITY)
    """Poll interval multiplier after each poll (reset to poll_interval_s when the job's status changes)."""
    wait: bool = field(default=True, metadata=NOT_IDENTITY)
    """Poll until the job ends; false = upload, create, record the job id and return (a rerun resumes polling)."""
    hyperparameters_style: str = "method"
    """`method` (current OpenAI API: method.supervised.hyperparameters) or `legacy` (top-level `hyperparameters`)."""
    extra_hyperparameters: dict[str, Any] = field(default_factory=dict)
    """Extra entries merged into the hyperparameters object (vendor knobs, e.g. {training_type: sft})."""
    extra_body: dict[str, Any] = field(default_factory=dict)
    """Extra top-level JSON fields sent with the job creation request (vendor knobs)."""
    max_retries: int = field(default=5, metadata=NOT_IDENTITY)
    """Retries per request (the openai client's own backoff, honouring 429 Retry-After)."""
    request_timeout_s: float = field(default=120.0, metadata=NOT_IDENTITY)
    """Seconds per HTTP request (uploads of large files may need more)."""
    retrain: bool = field(default=False, metadata=NOT_IDENTITY)
    """Create a new job even when the output folder already records a finished job of this config and dataset."""
    validation_file: bool = True
    """Upload the dataset's validation split (val.jsonl, from filter.val_fraction) as the job's validation_file."""


# ---------------------------------------------------------------------------------------------------- rl group


@dataclass
class RLConfig:
    """`stage=rl`: the student improves on its own rollouts, starting from a checkpoint (crafter_exp/stages/rl.py)."""

    name: str = MISSING
    """Algorithm: `grpo` (group-relative policy gradient on identical worlds) or `rft` (rejection-sampling rounds)."""
    start: Optional[str] = field(default=None, metadata=NOT_IDENTITY)
    """Start checkpoint folder; None = the experiment's newest SFT checkpoint (the one model=hf_local would play)."""
    iterations: int = field(default=8, metadata=NOT_IDENTITY)
    """GRPO iterations (rft: rounds); each plays `seeds` x `group_size` episodes, then updates the policy."""
    seeds: int = 8
    """B: training worlds per iteration; iteration i plays worlds seed + i*B .. seed + (i+1)*B - 1 (fresh each time)."""
    seed: int = 500_000
    """First training world; [seed, seed + iterations*seeds) must not overlap the held-out eval seeds."""
    group_size: int = 8
    """G: episodes of each world per iteration (identical worlds, sampled replies: the group); at least 2."""
    max_steps: Optional[int] = None
    """Episode step cap while training; None = env.max_steps (the cap evaluation uses)."""
    temperature: Optional[float] = None
    """Sampling temperature of rollouts and of the trained log-probabilities; None = the checkpoint's play temperature, else 1.0."""
    max_time_s: Optional[float] = field(default=None, metadata=NOT_IDENTITY)
    """Start no new iteration once this many seconds have gone (summed over resumed runs); None = no limit."""
    rollout_batch: int = field(default=64, metadata=NOT_IDENTITY)
    """Episodes played together in lockstep (one batched forward pass per turn for all of them)."""
    method: str = "full"
    """`full` (all weights) or `lora` (adapters on the start checkpoint; the reference is the adapter switched off)."""
    learning_rate: float = 1e-4
    """AdamW learning rate (GRPO); the SFT learning rate of rft rounds."""
    lora_r: int = 16
    """LoRA rank (method=lora)."""
    lora_alpha: int = 32
    """LoRA alpha (method=lora)."""
    device: str = field(default="auto", metadata=NOT_IDENTITY)
    """`auto` (cuda if available), `cpu`, `cuda`."""
    output_dir: Optional[str] = field(default=None, metadata=NOT_IDENTITY)
    """Folder of the per-iteration checkpoints; None = <paths.checkpoints>/<name>/rl-<config hash>."""
    log_checkpoints: bool = field(default=True, metadata=NOT_IDENTITY)
    """Log each iteration's checkpoint files to MLflow as artifacts (off for large models)."""
    progress: bool = field(default=True, metadata=NOT_IDENTITY)
    """Show a progress bar per iteration."""
    probe: bool = field(default=True, metadata=NOT_IDENTITY)
    """Before any episode: 8 sampled replies of the start checkpoint on a training world must mostly parse as actions."""


@dataclass
class GRPOConfig(RLConfig):
    """GRPO with optional per-step credit (GiGPO anchor states or return-to-go); the loss follows TRL's GRPOTrainer."""

    name: str = "grpo"
    epochs: int = 2
    """Optimiser passes over each iteration's turns."""
    minibatch: int = 1024
    """Turns per optimiser step."""
    micro_batch: int = 256
    """Turns per forward pass (gradients accumulate over a minibatch; bounds memory)."""
    clip_low: float = 0.2
    """Lower clip of the probability ratio (1 - clip_low)."""
    clip_high: float = 0.28
    """Upper clip of the probability ratio (1 + clip_high; DAPO's clip-higher keeps rare good actions learnable)."""
    beta: float = 0.0
    """Weight of the KL penalty to the start checkpoint (k3 estimator, as TRL); 0 = no reference pass."""
    max_grad_norm: float = 1.0
    """Gradient clipping norm."""
    advantage: str = "gigpo"
    """`grpo` (episode return vs its group), `gigpo` (+ step groups of identical states, return-to-go), `rtg`
    (episode term + discounted return-to-go vs the group's mean at the same turn)."""
    step_weight: float = 1.0
    """Weight of the step-level term in `gigpo` / `rtg` advantages."""
    gamma: float = 0.95
    """Discount of the return-to-go in step-level advantages."""
    scale_rewards: str = "group"
    """`group` (divide by the group's std, GRPO) or `none` (Dr. GRPO: centre only)."""
    reward: str = "env"
    """Per-turn reward: `env` (the environment's: Crafter +1 per achievement, +-0.1 per health point) or `achievements`."""
    death_penalty: float = 0.0
    """Subtracted from the last turn's reward of an episode that ended in death (survival shaping)."""


@dataclass
class RFTConfig(RLConfig):
    """Rejection-sampling rounds: play, keep the best episodes (the filter's SQL), continue SFT on them."""

    name: str = "rft"
    learning_rate: float = 3e-4
    keep: int = 16
    """Episodes kept per round (filter.limit), best first by `sort_by`."""
    sort_by: str = "achievements"
    """Which episodes count as best (filter.sort_by): `quality`, `reward`, `achievements`, `efficiency`."""
    min_achievements: Optional[int] = None
    """Keep only episodes with at least this many achievements (filter.min_achievements)."""
    sft_steps: int = 200
    """SFT optimiser steps per round."""
    sft_time_s: Optional[float] = 60.0
    """SFT seconds per round at most (trainer.max_time_s)."""


# ---------------------------------------------------------------------------------------------- root sections


@dataclass
class PathsConfig:
    home: str = "."
    """Project folder holding the shared trace DB, datasets and checkpoints (one per project, not per run)."""
    db: str = "${paths.home}/data/traces.duckdb"
    """The DuckDB trace store."""
    datasets: str = "${paths.home}/data/datasets"
    """Where the filter stage writes datasets."""
    checkpoints: str = "${paths.home}/data/checkpoints"
    """Where trainers write checkpoints."""
    reports: str = "${paths.home}/data/reports"
    """Where compare / sweep summaries are written."""


@dataclass
class TrackingConfig:
    uri: str = "sqlite:///mlflow.db"
    """MLflow tracking URI (MLflow 3's default local store)."""
    experiment: str = "crafter-exp"
    """MLflow experiment name."""
    enabled: bool = True
    """Log to MLflow at all."""
    traces: str = "llm"
    """MLflow traces of rollout/eval episodes (Traces tab: a trace per episode, a span per turn), linked to the run:
    `llm` = episodes that called a model (openai, hf_local), `all` = every episode, `off`."""
    trace_episodes: Optional[int] = 8
    """Most episodes traced per rollout/eval run (the first to finish; MLflow's span writer costs ms per turn, the
    DuckDB store keeps every step anyway); null = every episode."""


@dataclass
class RayConfig:
    address: Optional[str] = None
    """None = start a local Ray; `auto` or `ray://host:port` joins an existing cluster."""
    num_workers: int = 2
    """Rollout actors; 0 = play in this process without Ray."""
    episodes_per_task: int = 8
    """Episodes one actor plays together (in lockstep, so policies can batch)."""
    max_task_retries: int = 3
    """Times a batch is replayed elsewhere when its actor dies."""


@dataclass
class RolloutConfig:
    run_id: Optional[str] = None
    """Trace run id; None = derived from name, stage, env and model. Rerunning an id plays only missing seeds."""
    progress: bool = True
    """Show a progress bar."""


@dataclass
class EvalConfig:
    episodes: int = 20
    """Held-out episodes per evaluated policy."""
    seed: int = 1_000_000
    """First eval seed; the eval range must not overlap the training range."""
    policies: list[str] = field(default_factory=lambda: ["random", "student_before", "student_after", "teacher"])
    """Policies the pipeline evaluates (random, teacher, student_before, student_after, base)."""
    also_policies: list[str] = field(default_factory=lambda: ["student_after"])
    """Policies the pipeline also plays on the env's further held-out sets (ALFWorld: valid_unseen); [] = none."""


@dataclass
class ProtocolConfig:
    """An evaluation protocol: how many held-out episodes each policy plays and how they end, so a number can be
    set beside a published table's (conf/protocol/: `ours`, `crafter_paper`, `balrog`). It applies to the held-out
    evaluation (stage=eval and the pipeline's evaluations), never to rollouts that make training data."""

    name: str = "ours"
    """Protocol id, recorded with every eval run (trace store, MLflow tag `protocol`) and stated in compare reports."""
    description: str = "this project's default: 20 held-out episodes capped at env.max_steps (300 on Crafter)"
    """One line saying what the protocol is (printed in compare reports)."""
    source: str = ""
    """Where the protocol is defined (paper, code, config file), for the report."""
    envs: list[str] = field(default_factory=list)
    """Environments the protocol is defined for (another env fails at start); empty = any."""
    episodes: Optional[int] = None
    """Held-out episodes per evaluated policy; None = eval.episodes."""
    env: dict[str, Any] = field(default_factory=dict)
    """Env settings the protocol fixes for evaluation, e.g. {max_steps: 10000, length: 10000}; {} = the env's own."""
    metrics: list[str] = field(default_factory=list)
    """The metrics published tables report under this protocol (named first in compare reports)."""


@dataclass
class CompareConfig:
    runs: list[str] = field(default_factory=list)
    """Trace run ids (or MLflow run names) to compare; the first is the baseline."""
    k: int = 3
    """Achievement rate threshold: % of episodes with >= k achievements."""
    metrics: list[str] = field(default_factory=list)
    """Metrics to report (empty = all)."""
    custom_metrics: list[Any] = field(default_factory=list)
    """Extra metrics: `{_target_: module.fn}` called with the episodes DataFrame, returning {name: value}."""
    bootstrap: int = 2000
    """Bootstrap resamples for 95 % intervals."""
    alpha: float = 0.05
    """Significance level."""
    force: bool = False
    """Compare runs even if their seed sets differ."""
    permutations: int = 9999
    """Permutation-test resamples per comparison (paired by seed when the runs played the same seeds)."""
    pairwise: bool = False
    """Test every pair of runs, not only each run against the first (baseline)."""
    correction: str = "bh"
    """Multiple-comparison correction over all tests of a report: `bh` (Benjamini-Hochberg), `holm`, `none`."""
    custom_resamples: int = 500
    """Resamples (bootstrap and permutation) for custom metrics, which cost one Python call each."""
    figures: bool = True
    """Write and log the figures."""


@dataclass
class SweepConfig:
    metric: Optional[str] = None
    """Metric summarised against the swept values at the end of a multirun; None = the env's primary metric."""


@dataclass
class PipelineConfig:
    rl: Optional[str] = None
    """`grpo` or `rft`: after SFT, run stage=rl (with the `rl` group's settings) and evaluate `student_rl`; None = off."""


@dataclass
class Config:
    stage: str = "pipeline"
    """What runs: `pipeline`, `rollout`, `filter`, `validate`, `train`, `eval`, `compare`, `export`, `rl`."""
    name: str = "default"
    """Experiment name: groups a pipeline's stages; a rerun with the same name resumes."""
    seed: int = 0
    """Global seed (torch, numpy, sampling)."""
    env: Any = MISSING
    model: Any = MISSING
    filter: FilterConfig = field(default_factory=FilterConfig)
    trainer: Any = MISSING
    paths: PathsConfig = field(default_factory=PathsConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    ray: RayConfig = field(default_factory=RayConfig)
    rollout: RolloutConfig = field(default_factory=RolloutConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    compare: CompareConfig = field(default_factory=CompareConfig)
    sweep: SweepConfig = field(default_factory=SweepConfig)
    protocol: ProtocolConfig = field(default_factory=ProtocolConfig)
    """Evaluation protocol (conf/protocol/: ours, crafter_paper, balrog): episodes and step cap of held-out play."""
    rl: Any = MISSING
    """stage=rl's algorithm and settings (config group `rl`: grpo | rft)."""
    pipeline: PipelineConfig = field(default_factory=PipelineConfig)


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
