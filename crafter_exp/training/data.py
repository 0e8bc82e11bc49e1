"""Load the filter stage's SFT dataset (chat JSONL or parquet) and tokenize it with per-token roles for the loss.

A dataset is a folder with `manifest.json` (written last by the filter stage: format, files, digest, prompt, ...)
or a single `.jsonl` / `.parquet` file. Rows may be:
- `{"messages": [...], "tools": [...]?}` (OpenAI chat / tools formats; `messages` may be a JSON string in parquet),
- `{"contents": [...], "systemInstruction": {...}?}` (Vertex Gemini format; role `model` = assistant),
- `{"prompt": ..., "completion": ...}` (strings or message lists).
Every example becomes a list of chat messages with at least one assistant message to learn.

Per-message `weight` (OpenAI's fine-tuning field, written by the filter stage for history windows and multi-turn
examples): an assistant message with `"weight": 0` is context, not a target; weight 1 or no weight is learned. Only
0 and 1 are accepted, as OpenAI does. Vertex rows carry no weights: every `model` turn is learned.

Tokenizing marks each token as prompt (0), learned reply (1) or context reply (2: an assistant message of weight 0,
which gets no loss under any `loss_on`); the loss setting (`loss_on`) turns those roles into weights. Sequences
longer than `max_length` keep their first `max_length` tokens (the count is reported and logged); an example left
with no reply token after that is dropped (also counted).

Chat templates that render earlier assistant turns differently from the last one (Qwen3's drops the `<think>`
block of every reply before the last user message) cannot be masked in one sequence: such an example becomes one
sequence per learned reply, that reply last with the conversation before it as context (as Qwen's team advises for
multi-turn SFT), so each reply is learned in the context the model sees when it generates it.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from crafter_exp.errors import UserError

Messages = list[dict[str, Any]]
EVAL_SPLIT_WORDS = ("val", "valid", "validation", "eval", "test")


PROMPT, REPLY, CONTEXT = 0, 1, 2
"""Token roles: prompt (system/user/tool text and chat markup), a learned reply, a context reply (weight 0)."""


@dataclass
class Example:
    messages: Messages
    tools: Optional[list[dict[str, Any]]] = None
    targets: Optional[tuple[int, ...]] = None
    """Indices of the assistant messages to learn (weight 1); None = every assistant message."""

    def target_indices(self) -> tuple[int, ...]:
        if self.targets is not None:
            return self.targets
        return tuple(i for i, m in enumerate(self.messages) if m["role"] == "assistant")


@dataclass
class SFTData:
    """A loaded dataset: training examples, an optional eval split shipped with it, and where it came from."""

    train: list[Example]
    eval: list[Example]
    path: Path
    digest: str
    manifest: dict[str, Any] = field(default_factory=dict)

    @property
    def prompt(self) -> Optional[dict[str, Any]]:
        """The model.prompt the data was made with (carried on to the checkpoint manifest)."""
        return self.manifest.get("prompt")


# ---------------------------------------------------------------------------------------------------- loading


def _as_messages(value: Any, role: str) -> Messages:
    if isinstance(value, str):
        return [{"role": role, "content": value}]
    if isinstance(value, list):
        return list(value)
    raise UserError(f"expected a string or a list of messages, got {type(value).__name__}")


def _vertex_to_messages(row: dict[str, Any]) -> Messages:
    messages: Messages = []
    system = row.get("systemInstruction") or row.get("system_instruction")
    if system:
        parts = system.get("parts", []) if isinstance(system, dict) else []
        messages.append({"role": "system", "content": "".join(p.get("text", "") for p in parts)})
    for content in row["contents"]:
        role = {"model": "assistant"}.get(content.get("role"), content.get("role", "user"))
        text = "".join(p.get("text", "") for p in content.get("parts", []))
        messages.append({"role": role, "content": text})
    return messages


def _normalise_tool_calls(message: dict[str, Any]) -> dict[str, Any]:
    # chat templates expect `arguments` as a mapping; the OpenAI format stores a JSON string
    calls = message.get("tool_calls")
    if not calls:
        return message
    fixed = []
    for call in calls:
        call = dict(call)
        fn = dict(call.get("function") or {})
        if isinstance(fn.get("arguments"), str):
            try:
                fn["arguments"] = json.loads(fn["arguments"])
            except json.JSONDecodeError:
                pass
        call["function"] = fn
        fixed.append(call)
    return {**message, "tool_calls": fixed}


def row_to_example(row: dict[str, Any]) -> Example:
    """One dataset row -> Example; raises ValueError saying what is wrong."""
    if not isinstance(row, dict):
        raise UserError(f"expected a JSON object, got {type(row).__name__}")
    tools = row.get("tools")
    if isinstance(tools, str):
        tools = json.loads(tools) if tools else None
    if "messages" in row:
        messages = row["messages"]
        if isinstance(messages, str):
            messages = json.loads(messages)
    elif "contents" in row:
        messages = _vertex_to_messages(row)
    elif "prompt" in row and "completion" in row:
        messages = _as_messages(row["prompt"], "user") + _as_messages(row["completion"], "assistant")
    else:
        raise UserError(f"no `messages`, `contents` or `prompt`/`completion` field (keys: {sorted(row)})")
    if not isinstance(messages, list) or not messages:
        raise UserError("`messages` must be a non-empty list")
    clean: Messages = []
    targets: list[int] = []
    for m in messages:
        if not isinstance(m, dict) or "role" not in m:
            raise UserError("every message needs a `role`")
        m = {k: v for k, v in dict(m).items() if v is not None or k == "content"}
        weight = m.pop("weight", None)  # not passed on to the chat template: it is ours to read
        if m.get("content") is None and not m.get("tool_calls"):
            raise UserError(f"a {m['role']} message has neither content nor tool_calls")
        if m["role"] == "assistant":
            if weight is not None and (isinstance(weight, bool) or weight not in (0, 1)):
                raise UserError(f"an assistant message has weight {weight!r}; weight must be 0 or 1")
            if weight is None or weight == 1:
                targets.append(len(clean))
        clean.append(_normalise_tool_calls(m))
    if not any(m["role"] == "assistant" for m in clean):
        raise UserError("no assistant message (nothing to learn)")
    if not targets:
        raise UserError("every assistant message has weight 0 (nothing to learn)")
    return Example(messages=clean, tools=tools or None, targets=tuple(targets))


def read_jsonl(path: Path) -> list[Example]:
    examples = []
    with path.open(encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                examples.append(row_to_example(json.loads(line)))
            except (json.JSONDecodeError, ValueError, TypeError, KeyError, AttributeError) as e:
                raise UserError(f"{path}:{lineno}: bad example: {e}") from None
    return examples


def read_parquet(path: Path) -> list[Example]:
    import pyarrow.parquet as pq

    try:
        rows = pq.read_table(path).to_pylist()
    except Exception as e:  # pyarrow raises several types for a broken file
        raise UserError(f"{path}: unreadable parquet: {e}") from None
    examples = []
    for i, row in enumerate(rows):
        try:
            examples.append(row_to_example(row))
        except (json.JSONDecodeError, ValueError, TypeError, KeyError, AttributeError) as e:
            raise UserError(f"{path}: row {i}: bad example: {e}") from None
    return examples


def read_file(path: Path) -> list[Example]:
    if path.suffix == ".parquet":
        return read_parquet(path)
    if path.suffix in (".jsonl", ".json"):
        return read_jsonl(path)
    raise UserError(f"unsupported dataset file {path} (expected .jsonl or .parquet)")


def _manifest_files(manifest: dict[str, Any], root: Path) -> tuple[list[Path], list[Path]]:
    """(train files, eval files) named by a dataset manifest; eval = names/keys that say val/eval/test."""
    files = manifest.get("files")
    if not files:
        raise UserError(f"{root / 'manifest.json'}: no `files` listed")
    named: list[tuple[str, str]] = []
    if isinstance(files, dict):
        named = [(str(k), str(v if not isinstance(v, dict) else v.get("path"))) for k, v in files.items()]
    else:
        for f in files:
            p = f.get("path") if isinstance(f, dict) else f
            split = f.get("split", "") if isinstance(f, dict) else ""
            named.append((str(split or p), str(p)))
    if manifest.get("format") == "parquet":
        # the filter's parquet folders also list CSV copies and raw_trajectories.json: the .parquet files are the data
        named = [(key, rel) for key, rel in named if rel.endswith(".parquet")]
    train: list[Any] = []
    evals: list[Any] = []
    for key, rel in named:
        p = Path(rel) if Path(rel).is_absolute() else root / rel
        words = Path(key).stem.lower().replace("-", "_").split("_")
        (evals if any(w in EVAL_SPLIT_WORDS for w in words) else train).append(p)
    return train, evals


def file_digest(paths: list[Path]) -> str:
    h = hashlib.sha256()
    for p in paths:
        with p.open("rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()[:16]


def load_sft_data(path: str | Path) -> SFTData:
    """Read a dataset folder (with manifest.json) or file; raises FileNotFoundError / ValueError with one line."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"dataset not found: {path} (run the filter stage first, or set trainer.dataset)")
    manifest: dict[str, Any] = {}
    if path.is_dir():
        mpath = path / "manifest.json"
        if not mpath.is_file():
            raise UserError(f"{path} has no manifest.json (the filter stage did not finish writing it)")
        try:
            manifest = json.loads(mpath.read_text())
        except json.JSONDecodeError as e:
            raise UserError(f"{mpath}: not valid JSON ({e})") from None
        train_files, eval_files = _manifest_files(manifest, path)
    else:
        train_files, eval_files = [path], []
    for p in train_files + eval_files:
        if not p.is_file():
            raise UserError(f"dataset file listed in the manifest is missing: {p}")
    train = [ex for p in train_files for ex in read_file(p)]
    evals = [ex for p in eval_files for ex in read_file(p)]
    if not train:
        raise UserError(f"dataset {path} is empty (0 training examples)")
    digest = str(manifest.get("digest") or file_digest(train_files + eval_files))
    return SFTData(train=train, eval=evals, path=path, digest=digest, manifest=manifest)


def split_eval(
    data: SFTData, fraction: float, max_examples: Optional[int], seed: int
) -> tuple[list[Example], list[Example]]:
    """(train, eval): the dataset's own eval split when it has one, else a seeded random `fraction` held out."""
    train, evals = list(data.train), list(data.eval)
    if not evals and fraction > 0 and len(train) > 1:
        rng = random.Random(seed)
        order = list(range(len(train)))
        rng.shuffle(order)
        n_eval = min(max(1, int(round(len(train) * fraction))), len(train) - 1)
        if max_examples is not None:
            n_eval = min(n_eval, max_examples)
        held = set(order[:n_eval])
        evals = [train[i] for i in sorted(held)]
        train = [ex for i, ex in enumerate(train) if i not in held]
    if max_examples is not None and len(evals) > max_examples:
        evals = random.Random(seed).sample(evals, max_examples)
    return train, evals


# ----------------------------------------------------------------------------------------------- augmenting


def _map_strings(value: Any, fn: Any) -> Any:
    if isinstance(value, str):
        return fn(value)
    if isinstance(value, list):
        return [_map_strings(v, fn) for v in value]
    if isinstance(value, dict):
        return {k: _map_strings(v, fn) for k, v in value.items()}
    return value


def with_swapped_names(examples: list[Example], names: Sequence[str], copies: int, seed: int) -> list[Example]:
    """`examples`, then `copies` rounds of each one with the `names` it uses swapped for others of `names`.

    Within a copy the swap is one consistent bijection over the whole example (every message, tool-call arguments
    included), drawn afresh per copy: "take tomato 2 from fridge 1" for a tomato task becomes "take mug 2 from
    fridge 1" for a mug task, so that the reply's name can only be explained by the prompt's. A small student from
    scratch otherwise learns which names its few teacher episodes used and ranks "take lettuce 2" at a spatula.
    Whole words only ("box" is not swapped inside "tissuebox")."""
    if copies <= 0 or not names:
        return list(examples)
    pool = sorted(set(names))
    pattern = re.compile(r"\b(" + "|".join(re.escape(n) for n in sorted(pool, key=len, reverse=True)) + r")\b")
    rng = random.Random(seed)
    # the names each example uses, in any message (JSON keeps these lower-case words as they are)
    used_by = [sorted(set(pattern.findall(json.dumps(ex.messages, ensure_ascii=False)))) for ex in examples]
    out = list(examples)
    for _ in range(copies):
        for ex, used in zip(examples, used_by):
            if not used:
                continue  # nothing to swap: a copy would only repeat the example
            swap = dict(zip(used, rng.sample(pool, len(used))))

            def rename(text: str, swap: dict[str, str] = swap) -> str:
                return pattern.sub(lambda m: swap.get(m.group(1), m.group(1)), text)

            out.append(Example(_map_strings(ex.messages, rename), _map_strings(ex.tools, rename), ex.targets))
    return out


# ------------------------------------------------------------------------------------------------- tokenizing


@dataclass
class Tokenized:
    """Token ids and per-token roles (PROMPT / REPLY / CONTEXT) of each kept sequence, plus what was cut."""

    input_ids: list[list[int]]
    roles: list[list[int]]
    truncated: int = 0
    dropped: int = 0
    split: int = 0
    """Examples turned into one sequence per learned reply (templates that render earlier replies differently)."""

    @property
    def tokens(self) -> int:
        return sum(len(x) for x in self.input_ids)

    @property
    def assistant_tokens(self) -> int:
        return sum(r.count(REPLY) for r in self.roles)


def has_generation_markers(template: Any) -> bool:
    if isinstance(template, dict):
        template = template.get("default", "")
    return bool(template) and "{% generation %}" in template.replace("{%- generation %}", "{% generation %}")


def training_chat_template(tokenizer: Any) -> Optional[str]:
    """A template with `{% generation %}` markers for assistant masks: the tokenizer's own, TRL's patched
    version of a known template, or None (then masks come from rendering conversation prefixes)."""
    if tokenizer.chat_template is None:
        raise UserError("the tokenizer has no chat template; use a chat/instruct model or set one")
    if has_generation_markers(tokenizer.chat_template):
        return None
    try:
        from trl.chat_template_utils import get_training_chat_template

        return get_training_chat_template(tokenizer)
    except Exception:  # unknown template: fall back to prefix rendering
        return None


def _render_ids(tokenizer: Any, messages: Messages, tools: Any, template: Optional[str], **kw: Any) -> list[int]:
    out = tokenizer.apply_chat_template(
        messages, tools=tools, chat_template=template, tokenize=True, return_dict=True, **kw
    )
    return list(out["input_ids"])


Pair = tuple[list[int], list[int]]


class _Prefixes:
    """Renderings of one example's conversation prefixes, each made once (the per-reply split renders the same
    prefixes for every learned reply: without the cache a conversation of n turns costs n^3)."""

    def __init__(self, tokenizer: Any, example: Example, template: Optional[str]):
        self.tokenizer, self.msgs, self.tools, self.template = tokenizer, example.messages, example.tools, template
        self.cache: dict[tuple[int, bool, bool], list[int]] = {}

    def ids(self, n: int, generation_prompt: bool = False, then_user: bool = False) -> list[int]:
        """messages[:n] (+ the generation prompt, or + an empty user message) as token ids."""
        key = (n, generation_prompt, then_user)
        if key not in self.cache:
            msgs = self.msgs[:n] + ([{"role": "user", "content": ""}] if then_user else [])
            self.cache[key] = _render_ids(
                self.tokenizer, msgs, self.tools, self.template, add_generation_prompt=generation_prompt
            )
        return self.cache[key]

    def turn_span(self, i: int) -> tuple[list[int], int]:
        """(ids of messages[:i+1], where reply i starts): the reply is what rendering it adds to the generation
        prompt."""
        before, upto = self.ids(i, generation_prompt=True), self.ids(i + 1)
        if upto[: len(before)] != before:
            raise UserError(
                "the chat template's generation prompt is not a prefix of the rendered reply, so reply tokens cannot "
                "be located; use a chat template with {% generation %} markers"
            )
        return upto, len(before)

    def mark_context(self, k: int, ids: list[int], roles: list[int]) -> None:
        """Mark the earlier reply k inside `ids` (a sequence ending with a later reply) as CONTEXT.

        The template draws reply k there as it draws history, not as a last reply; it starts after its generation
        prompt and ends where `ids` stops agreeing with a rendering in which reply k is history too (k followed by
        an empty user message). That end may take in the next message's role header: a few markup tokens without
        loss. When even the prefix before reply k is drawn differently, its tokens stay prompt text.
        """
        before = self.ids(k, generation_prompt=True)
        if ids[: len(before)] != before:
            return
        probe = self.ids(k + 1, then_user=True)
        end = len(before)
        while end < min(len(ids), len(probe)) and ids[end] == probe[end]:
            end += 1
        for j in range(len(before), end):
            roles[j] = CONTEXT


def _prefix_roles(tokenizer: Any, example: Example, template: Optional[str]) -> list[Pair]:
    """Roles without generation markers: the tokens that rendering each assistant turn adds after the prompt
    (rendered with add_generation_prompt) are that turn's. Templates whose full rendering does not start with a
    learned reply's prefix rendering (earlier turns drawn differently) give one sequence per learned reply."""
    msgs = example.messages
    targets = example.target_indices()
    prefixes = _Prefixes(tokenizer, example, template)
    ids = prefixes.ids(len(msgs))
    roles = [PROMPT] * len(ids)
    consistent = True
    for i, m in enumerate(msgs):
        if m["role"] != "assistant":
            continue
        upto, start = prefixes.turn_span(i)
        if ids[: len(upto)] != upto:
            consistent = False
            break
        for j in range(start, len(upto)):
            roles[j] = REPLY if i in targets else CONTEXT
    if consistent:
        return [(ids, roles)]
    pairs = []
    for i in targets:
        upto, start = prefixes.turn_span(i)
        # earlier replies are drawn as the template draws them in a prompt (so, as context) and get no loss
        turn_roles = [PROMPT] * start + [REPLY] * (len(upto) - start)
        for k in range(i):
            if msgs[k]["role"] == "assistant":
                prefixes.mark_context(k, upto, turn_roles)
        pairs.append((upto, turn_roles))
    return pairs


def _runs(mask: list[int]) -> list[tuple[int, int]]:
    """(start, end) of each run of 1s in a 0/1 mask."""
    runs, start = [], None
    for j, v in enumerate(list(mask) + [0]):
        if v and start is None:
            start = j
        elif not v and start is not None:
            runs.append((start, j))
            start = None
    return runs


def _marked_roles(tokenizer: Any, ex: Example, ids: list[int], mask: list[int], template: Optional[str]) -> list[Pair]:
    """Roles from a generation mask: its k-th run of reply tokens is the k-th assistant message. When the runs
    cannot be matched to messages (adjacent or empty replies) and some reply is context, prefixes decide."""
    assistants = [i for i, m in enumerate(ex.messages) if m["role"] == "assistant"]
    targets = set(ex.target_indices())
    if len(targets) == len(assistants):
        return [(ids, [REPLY if v else PROMPT for v in mask])]
    runs = _runs(mask)
    if len(runs) != len(assistants):
        return _prefix_roles(tokenizer, ex, template)
    roles = [PROMPT] * len(ids)
    for msg_index, (a, b) in zip(assistants, runs):
        for j in range(a, b):
            roles[j] = REPLY if msg_index in targets else CONTEXT
    return [(ids, roles)]


def _marked_chunks(tokenizer: Any, examples: list[Example], template: Optional[str], chunk: int = 256):
    """Sequences per example via the template's generation markers, rendering and tokenizing in batches."""
    i = 0
    while i < len(examples):
        tools = examples[i].tools
        j = i
        while j < len(examples) and j - i < chunk and examples[j].tools == tools:
            j += 1
        enc = tokenizer.apply_chat_template(
            [ex.messages for ex in examples[i:j]],
            tools=tools,
            chat_template=template,
            tokenize=True,
            return_dict=True,
            return_assistant_tokens_mask=True,
        )
        for ex, ids, mask in zip(examples[i:j], enc["input_ids"], enc["assistant_masks"]):
            yield _marked_roles(tokenizer, ex, list(ids), list(mask), template)
        i = j


def tokenize_examples(tokenizer: Any, examples: list[Example], max_length: int, progress: bool = False) -> Tokenized:
    """Token ids + roles for every example (truncated to `max_length`; sequences with no reply token dropped)."""
    from crafter_exp.progress import progress_bar

    template = training_chat_template(tokenizer)
    use_markers = template is not None or has_generation_markers(tokenizer.chat_template)
    if use_markers:
        per_example = _marked_chunks(tokenizer, examples, template)
    else:
        per_example = (_prefix_roles(tokenizer, ex, template) for ex in examples)
    out = Tokenized([], [])
    for pairs in progress_bar(per_example, total=len(examples), desc="tokenize", disable=not progress, mininterval=1.0):
        if len(pairs) > 1:
            out.split += 1
        for ids, roles in pairs:
            ids, roles = list(ids), list(roles)
            if len(ids) > max_length:
                out.truncated += 1
                ids, roles = ids[:max_length], roles[:max_length]
            if REPLY not in roles[1:]:  # the first token is never a target
                out.dropped += 1
                continue
            out.input_ids.append(ids)
            out.roles.append(roles)
    return out


def pack(tok: Tokenized, max_length: int, seed: int) -> Tokenized:
    """Concatenate shuffled examples into sequences of up to `max_length` tokens (fewer pad tokens; attention
    crosses example boundaries, the usual cost of simple packing)."""
    order = list(range(len(tok.input_ids)))
    random.Random(seed).shuffle(order)
    packed = Tokenized([], [], truncated=tok.truncated, dropped=tok.dropped)
    ids: list[int] = []
    roles: list[int] = []
    for i in order:
        if ids and len(ids) + len(tok.input_ids[i]) > max_length:
            packed.input_ids.append(ids)
            packed.roles.append(roles)
            ids, roles = [], []
        ids = ids + tok.input_ids[i]
        roles = roles + tok.roles[i]
    if ids:
        packed.input_ids.append(ids)
        packed.roles.append(roles)
    return packed
