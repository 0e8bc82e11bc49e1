"""The offline tiny student: a tokenizer trained on the dataset's own text and a small causal LM built from a config.

Nothing is downloaded. The tokenizer is byte-level BPE behind a whitespace pre-tokenizer: each pre-token is one
word with its leading whitespace, so with a vocabulary of a few hundred entries every frequent word (every action
name, every object and direction of an observation) becomes one token — short sequences are what make a CPU run
learn in minutes (a feasibility run here: ~34 tokens per observation, ~514 tokens of vocabulary). Byte-level means
any text still encodes (rare words fall back to bytes) and decoding gives back the exact text.

The chat template wraps each message in role markers and an end marker; the assistant part carries
`{% generation %}` markers so TRL / transformers can return an assistant-token mask.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import torch

from crafter_exp.errors import UserError

if TYPE_CHECKING:
    from crafter_exp.config import TinyStudentConfig

PAD = "<|pad|>"
END = "<|end|>"
ROLES = ("system", "user", "assistant", "tool")
ROLE_TOKENS = [f"<|{r}|>" for r in ROLES]
SPECIAL_TOKENS = [PAD, END, *ROLE_TOKENS]

# System messages are not rendered: the student is trained on one dataset whose system prompt is a constant
# instruction, which carries no information for a 1M-parameter model and cost ~12 % of the tokens of a Crafter
# example (7 of ~56). Roles outside ROLES render as `user`. Tool calls are not rendered: the tiny student is meant
# for text replies (`prompt.action_mode: text`).
CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "{%- set role = message['role'] if message['role'] in ['system', 'user', 'assistant', 'tool'] else 'user' -%}"
    "{%- if role == 'system' -%}"
    "{%- elif role == 'assistant' -%}"
    "<|assistant|>{% generation %}{{ message['content'] or '' }}<|end|>{% endgeneration %}"
    "{%- else -%}"
    "<|{{ role }}|>{{ message['content'] or '' }}<|end|>"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}<|assistant|>{%- endif -%}"
)


def train_tokenizer(texts: Iterable[str], vocab_size: int) -> Any:
    """A byte-level BPE tokenizer (whitespace pre-tokenizer) trained on `texts`, as a transformers tokenizer."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    # one pre-token per word with its leading whitespace ("tree", " 3", "\nstone"): merges never cross words,
    # and the byte-level step makes every string encodable and decoding exact
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(r"\s*\S+|\s+"), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    hf = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token=END,
        pad_token=PAD,
        extra_special_tokens=ROLE_TOKENS,
        model_max_length=1_000_000,
    )
    hf.chat_template = CHAT_TEMPLATE
    return hf


def message_texts(examples: Iterable[list[dict[str, Any]]]) -> Iterable[str]:
    """Every message content the student's template renders (what the tokenizer is trained on)."""
    for messages in examples:
        for m in messages:
            if m.get("content") and m.get("role") != "system":
                yield str(m["content"])


def build_student(student_cfg: TinyStudentConfig, tokenizer: Any, max_positions: int, seed: int) -> Any:
    """A randomly initialised causal LM of a standard transformers architecture, sized by `student_cfg`."""
    from transformers import AutoModelForCausalLM, LlamaConfig, Qwen3Config

    common = dict(
        vocab_size=len(tokenizer),
        hidden_size=student_cfg.hidden_size,
        intermediate_size=student_cfg.intermediate_size,
        num_hidden_layers=student_cfg.num_layers,
        num_attention_heads=student_cfg.num_heads,
        num_key_value_heads=student_cfg.num_heads,
        max_position_embeddings=max(max_positions, 64),
        tie_word_embeddings=student_cfg.tie_embeddings,
        bos_token_id=None,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    arch = student_cfg.architecture
    config: Any
    if arch == "llama":
        config = LlamaConfig(**common)
    elif arch == "qwen3":
        config = Qwen3Config(head_dim=student_cfg.hidden_size // student_cfg.num_heads, **common)
    else:
        raise UserError(f"trainer.student.architecture must be llama or qwen3, got {arch!r}")
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.bos_token_id = None
    return model


def check_student_config(student_cfg: TinyStudentConfig) -> None:
    """Raise ValueError with one line when the student's shape is impossible."""
    if student_cfg.architecture not in ("llama", "qwen3"):
        raise UserError(f"trainer.student.architecture must be llama or qwen3, got {student_cfg.architecture!r}")
    if student_cfg.hidden_size % student_cfg.num_heads:
        raise UserError(
            f"trainer.student.hidden_size ({student_cfg.hidden_size}) must be divisible by num_heads "
            f"({student_cfg.num_heads})"
        )
    if student_cfg.vocab_size < 256 + len(SPECIAL_TOKENS):
        raise UserError(f"trainer.student.vocab_size must be >= {256 + len(SPECIAL_TOKENS)} (bytes + specials)")
