"""Check an SFT dataset — ours or anyone's — line by line, count its examples and tokens, estimate training cost.

Formats: openai_chat, openai_tools, vertex_gemini, single_turn (JSONL), and our parquet dataset folders.
Every broken line is reported with its 1-based line number and what is wrong; the first MAX_ERRORS are kept.

Tokens: with `filter.tokenizer` (a local tokenizer.json, or a local Hugging Face tokenizer folder) each text is
encoded; otherwise ESTIMATED as ceil(characters / 4) per text plus 4 tokens per message (OpenAI's rule of thumb
for English: ~4 characters a token, ~4 tokens of framing a message) — good to ~20 % for English prose, looser for
code-like text. Nothing is downloaded. Cost = all tokens x epochs x the price per 1M training tokens of
`filter.price_model` in `filter.training_prices` (hosted fine-tuning bills every token of every example each epoch).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

from crafter_exp.errors import UserError

if TYPE_CHECKING:
    from crafter_exp.config import FilterConfig

MAX_ERRORS = 50
CHAT_ROLES = ("system", "developer", "user", "assistant", "tool")
ESTIMATE = "estimate: ceil(chars / 4) + 4 per message"


@dataclass
class LineError:
    line: int
    message: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.message}" if self.line else self.message


@dataclass
class ValidationReport:
    path: Path
    format: str
    lines: int = 0
    examples: int = 0
    error_count: int = 0
    errors: list[LineError] = field(default_factory=list)
    prompt_tokens: int = 0
    trained_tokens: int = 0
    max_example_tokens: int = 0
    token_counter: str = ESTIMATE
    price_model: Optional[str] = None
    epochs: int = 1
    price_per_million: Optional[float] = None
    notes: list[str] = field(default_factory=list)

    @property
    def tokens(self) -> int:
        return self.prompt_tokens + self.trained_tokens

    @property
    def cost(self) -> Optional[float]:
        if self.price_per_million is None:
            return None
        return self.tokens * self.epochs * self.price_per_million / 1e6

    def error(self, line: int, message: str) -> None:
        self.error_count += 1
        if len(self.errors) < MAX_ERRORS:
            self.errors.append(LineError(line, message))

    def summary(self) -> str:
        out = [
            f"{self.path} ({self.format}): {self.lines} line(s), {self.examples} valid example(s), "
            f"{self.error_count} broken"
        ]
        out += [f"  {e}" for e in self.errors]
        if self.error_count > len(self.errors):
            out.append(f"  ... and {self.error_count - len(self.errors)} more")
        mean = self.tokens / self.examples if self.examples else 0
        out.append(
            f"tokens ({self.token_counter}): {self.tokens} total = {self.prompt_tokens} prompt + "
            f"{self.trained_tokens} trained; {mean:.0f} per example, longest {self.max_example_tokens}"
        )
        if self.cost is not None:
            out.append(
                f"estimated training cost: ${self.cost:.2f} ({self.price_model}, {self.epochs} epoch(s), "
                f"${self.price_per_million}/1M tokens)"
            )
        elif self.price_model:
            out.append(f"no price for {self.price_model!r} in filter.training_prices: cost not estimated")
        out += self.notes
        return "\n".join(out)


# ------------------------------------------------------------------------------------------------- tokens


def token_counter(tokenizer: Optional[str]) -> tuple[Callable[[str], int], str]:
    """(count(text) -> tokens, description). A local tokenizer when configured; else the documented estimate."""
    if not tokenizer:
        return (lambda text: math.ceil(len(text) / 4)), ESTIMATE
    path = Path(tokenizer)
    if not path.exists():
        raise UserError(f"filter.tokenizer not found: {path} (a tokenizer.json or a local tokenizer folder)")
    if path.is_file():
        from tokenizers import Tokenizer

        tok = Tokenizer.from_file(str(path))
        return (lambda text: len(tok.encode(text, add_special_tokens=False).ids)), f"tokenizer {path}"
    from transformers import AutoTokenizer

    hf = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    return (lambda text: len(hf.encode(text, add_special_tokens=False))), f"tokenizer {path}"


# ------------------------------------------------------------------------------------------------- checks


class Broken(Exception):
    """What is wrong with one example (the message becomes the report line)."""


def _need(cond: bool, message: str) -> None:
    if not cond:
        raise Broken(message)


def _text(value: Any, where: str, allow_empty: bool = False) -> str:
    _need(isinstance(value, str), f"{where} must be a string, got {type(value).__name__}")
    _need(allow_empty or value.strip() != "", f"{where} is empty")
    return value


def _check_tool_calls(calls: Any, where: str, tool_names: Optional[set[str]]) -> list[str]:
    _need(isinstance(calls, list) and calls, f"{where}.tool_calls must be a non-empty list")
    ids = []
    for j, call in enumerate(calls):
        w = f"{where}.tool_calls[{j}]"
        _need(isinstance(call, dict), f"{w} must be an object")
        _need(isinstance(call.get("id"), str) and call["id"], f"{w}.id is missing")
        _need(call.get("type") == "function", f"{w}.type must be 'function'")
        fn = call.get("function")
        _need(isinstance(fn, dict), f"{w}.function is missing")
        _need(isinstance(fn.get("name"), str) and fn["name"], f"{w}.function.name is missing")
        if tool_names is not None:
            _need(fn["name"] in tool_names, f"{w} calls {fn['name']!r}, not among the tools")
        args = fn.get("arguments")
        _need(isinstance(args, str), f"{w}.function.arguments must be a JSON string")
        try:
            parsed = json.loads(args)
        except json.JSONDecodeError as exc:
            raise Broken(f"{w}.function.arguments is not valid JSON ({exc.msg})") from None
        _need(isinstance(parsed, dict), f"{w}.function.arguments must encode an object")
        ids.append(call["id"])
    return ids


def check_chat(obj: dict[str, Any], tools_format: bool, count: Callable[[str], int]) -> tuple[int, int]:
    """openai_chat / openai_tools; returns (prompt tokens, trained tokens)."""
    messages = obj.get("messages")
    _need(messages is not None, "no `messages` field")
    _need(isinstance(messages, list) and messages, "`messages` must be a non-empty list")
    tool_names: Optional[set[str]] = None
    prompt = trained = 0
    if "tools" in obj:
        tools = obj["tools"]
        _need(isinstance(tools, list) and tools, "`tools` must be a non-empty list")
        tool_names = set()
        for j, tool in enumerate(tools):
            fn = tool.get("function") if isinstance(tool, dict) else None
            _need(
                isinstance(fn, dict) and isinstance(fn.get("name"), str),
                f"tools[{j}] must be {{'type': 'function', 'function': {{'name': ...}}}}",
            )
            tool_names.add(fn["name"])
        prompt += count(json.dumps(tools))
    elif tools_format:
        raise Broken("no `tools` field (openai_tools examples declare the tools they call)")
    open_calls: set[str] = set()
    learned = 0
    for i, m in enumerate(messages):
        w = f"messages[{i}]"
        _need(isinstance(m, dict), f"{w} must be an object")
        role = m.get("role")
        _need(role in CHAT_ROLES, f"{w}.role {role!r} is not one of {', '.join(CHAT_ROLES)}")
        if role in ("system", "developer"):
            _need(i == 0, f"{w}: a {role} message must come first")
        content = m.get("content")
        tokens = 4
        if role == "assistant" and m.get("tool_calls") is not None:
            open_calls |= set(_check_tool_calls(m["tool_calls"], w, tool_names))
            tokens += count(json.dumps(m["tool_calls"]))
            if content is not None:
                tokens += count(_text(content, f"{w}.content", allow_empty=True))
        else:
            tokens += count(_text(content, f"{w}.content", allow_empty=role == "assistant"))
        if role == "tool":
            _need(m.get("tool_call_id") in open_calls, f"{w}.tool_call_id does not answer an earlier tool call")
        if "weight" in m:
            _need(role == "assistant", f"{w}: only assistant messages may carry a weight")
            _need(m["weight"] in (0, 1), f"{w}.weight must be 0 or 1")
        if role == "assistant" and m.get("weight", 1) == 1:
            learned += 1
            trained += tokens
        else:
            prompt += tokens
    _need(learned > 0, "no assistant message to learn (every example needs one with weight 1)")
    _need(messages[-1].get("role") == "assistant", "the last message is not from the assistant")
    if tools_format:
        _need(any(m.get("tool_calls") for m in messages if isinstance(m, dict)), "no assistant tool call")
    return prompt, trained


def check_vertex(obj: dict[str, Any], count: Callable[[str], int]) -> tuple[int, int]:
    contents = obj.get("contents")
    _need(contents is not None, "no `contents` field")
    _need(isinstance(contents, list) and contents, "`contents` must be a non-empty list")
    prompt = trained = 0
    system = obj.get("systemInstruction", obj.get("system_instruction"))
    if system is not None:
        _need(
            isinstance(system, dict) and isinstance(system.get("parts"), list) and system["parts"],
            "systemInstruction must be {'parts': [{'text': ...}]}",
        )
        for j, part in enumerate(system["parts"]):
            _need(isinstance(part, dict), f"systemInstruction.parts[{j}] must be an object")
            prompt += count(_text(part.get("text"), f"systemInstruction.parts[{j}].text")) + 4
    previous = None
    for i, c in enumerate(contents):
        w = f"contents[{i}]"
        _need(isinstance(c, dict), f"{w} must be an object")
        role = c.get("role")
        _need(role in ("user", "model"), f"{w}.role {role!r} must be 'user' or 'model'")
        _need(role != previous, f"{w}: two {role!r} turns in a row (turns must alternate)")
        previous = role
        parts = c.get("parts")
        _need(isinstance(parts, list) and parts, f"{w}.parts must be a non-empty list")
        tokens = 4
        for j, part in enumerate(parts):
            _need(isinstance(part, dict) and "text" in part, f"{w}.parts[{j}] must be {{'text': ...}}")
            tokens += count(_text(part["text"], f"{w}.parts[{j}].text", allow_empty=role == "model"))
        if role == "model":
            trained += tokens
        else:
            prompt += tokens
    _need(contents[0].get("role") == "user", "contents[0] must be a 'user' turn")
    _need(contents[-1].get("role") == "model", "the last turn is not from the model")
    return prompt, trained


def check_single_turn(obj: dict[str, Any], count: Callable[[str], int]) -> tuple[int, int]:
    values = []
    for key in ("prompt_data", "response_data"):
        value = obj.get(key)
        _need(value is not None, f"no `{key}` field")
        _need(isinstance(value, dict) and "content" in value, f"`{key}` must be {{'content': ...}}")
        values.append(_text(value["content"], f"{key}.content"))
    return count(values[0]), count(values[1])


def detect_format(obj: Any) -> Optional[str]:
    if not isinstance(obj, dict):
        return None
    if "messages" in obj:
        return "openai_tools" if "tools" in obj else "openai_chat"
    if "contents" in obj:
        return "vertex_gemini"
    if "prompt_data" in obj:
        return "single_turn"
    return None


CHECKS: dict[str, Callable[[dict[str, Any], Callable[[str], int]], tuple[int, int]]] = {
    "openai_chat": lambda o, c: check_chat(o, False, c),
    "openai_tools": lambda o, c: check_chat(o, True, c),
    "vertex_gemini": check_vertex,
    "single_turn": check_single_turn,
}


# --------------------------------------------------------------------------------------------------- files


def _detect_file_format(path: Path) -> str:
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            if line.strip():
                try:
                    fmt = detect_format(json.loads(line))
                except json.JSONDecodeError:
                    continue
                if fmt:
                    return fmt
    raise UserError(
        f"cannot tell the format of {path} (no line with messages/contents/prompt_data); set filter.validate_format"
    )


def _priced(report: ValidationReport, fcfg: FilterConfig) -> ValidationReport:
    report.price_model = fcfg.price_model
    report.epochs = int(fcfg.cost_epochs)
    report.price_per_million = (fcfg.training_prices or {}).get(fcfg.price_model)
    return report


def validate_jsonl(
    path: Path,
    fmt: str,
    count: Callable[[str], int],
    report: Optional[ValidationReport] = None,
) -> ValidationReport:
    """Check every line of one JSONL file against `fmt`; tokens counted on valid lines."""
    if fmt not in CHECKS:
        raise UserError(f"unknown format {fmt!r} for a JSONL file (known: {', '.join(CHECKS)})")
    report = report or ValidationReport(path, fmt)
    check = CHECKS[fmt]
    with open(path, "rb") as f:
        for number, raw in enumerate(f, start=1):
            report.lines += 1
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                report.error(number, f"not UTF-8 ({exc.reason} at byte {exc.start})")
                continue
            if not text.strip():
                report.error(number, "empty line")
                continue
            try:
                obj = json.loads(text)
            except json.JSONDecodeError as exc:
                report.error(number, f"invalid JSON: {exc.msg} (column {exc.colno})")
                continue
            if not isinstance(obj, dict):
                report.error(number, f"expected a JSON object, got {type(obj).__name__}")
                continue
            try:
                prompt, trained = check(obj, count)
            except Broken as exc:
                report.error(number, str(exc))
                continue
            report.examples += 1
            report.prompt_tokens += prompt
            report.trained_tokens += trained
            report.max_example_tokens = max(report.max_example_tokens, prompt + trained)
    return report


PARQUET_COLUMNS = ("data_source", "messages", "prompt_data", "response_data", "extra_info")


def validate_parquet_folder(folder: Path, files: list[str], count: Callable[[str], int]) -> ValidationReport:
    """Our parquet datasets: the columns, one row per example with an assistant reply, no episode in two splits."""
    import pyarrow.parquet as pq

    report = ValidationReport(folder, "parquet")
    episodes: dict[str, set[tuple[str, int]]] = {}
    for name in [f for f in files if f.endswith(".parquet")]:
        parquet = pq.ParquetFile(folder / name)
        missing = [c for c in PARQUET_COLUMNS if c not in parquet.schema_arrow.names]
        if missing:
            report.error(0, f"{name}: missing column(s) {missing}")
            continue
        split = name.rsplit(".", 1)[0]
        episodes[split] = set()
        rows = (
            row
            for batch in parquet.iter_batches(batch_size=2048, columns=["messages", "extra_info"])
            for row in batch.to_pylist()
        )
        for row_number, row in enumerate(rows, start=1):
            report.lines += 1
            try:
                # a struct column gives every message every field: a null weight is an absent one
                messages = [
                    {k: v for k, v in m.items() if v is not None or k != "weight"} if isinstance(m, dict) else m
                    for m in row["messages"] or []
                ]
                prompt, trained = check_chat({"messages": messages}, False, count)
            except Broken as exc:
                report.error(row_number, f"{name}: {exc}")
                continue
            report.examples += 1
            report.prompt_tokens += prompt
            report.trained_tokens += trained
            report.max_example_tokens = max(report.max_example_tokens, prompt + trained)
            extra = row.get("extra_info") or {}
            episodes[split].add((extra.get("run_id"), extra.get("seed")))
    names = sorted(episodes)
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            both = episodes[a] & episodes[b]
            if both:
                report.error(0, f"{len(both)} episode(s) in both {a} and {b}, e.g. {sorted(both)[0]}")
    return report


def validate_path(path: Path, fcfg: FilterConfig) -> ValidationReport:
    """A JSONL file, or a dataset folder (its manifest names the format and files; the digest is rechecked)."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"nothing to validate at {path}")
    if fcfg.validate_format not in ("auto", *CHECKS, "parquet"):
        raise UserError(
            f"unknown filter.validate_format {fcfg.validate_format!r} (known: auto, {', '.join(CHECKS)}, parquet)"
        )
    count, how = token_counter(fcfg.tokenizer)
    fmt = None if fcfg.validate_format == "auto" else fcfg.validate_format
    if path.is_dir():
        manifest_path = path / "manifest.json"
        if not manifest_path.exists():
            raise UserError(f"{path} is a folder without manifest.json (an incomplete or foreign dataset)")
        manifest = json.loads(manifest_path.read_text())
        fmt = fmt or manifest["format"]
        files = list(manifest["files"])
        present = [f for f in files if (path / f).exists()]
        if fmt == "parquet":
            report = validate_parquet_folder(path, present, count)
        else:
            report = ValidationReport(path, fmt)
            for name in [f for f in present if f.endswith(".jsonl")]:
                validate_jsonl(path / name, fmt, count, report)
        from crafter_exp.export.writer import dataset_digest

        missing = [f for f in files if not (path / f).exists()]
        if missing:
            report.error(0, f"file(s) named in the manifest are missing: {missing}")
        else:
            actual = dataset_digest([(f, path / f) for f in files])
            if actual != manifest.get("digest"):
                report.error(
                    0,
                    f"digest {actual} differs from the manifest's {manifest.get('digest')} "
                    "(files changed after export)",
                )
        if report.examples != manifest.get("examples") and report.error_count == 0:
            report.notes.append(f"note: manifest says {manifest.get('examples')} examples, found {report.examples}")
    else:
        fmt = fmt or _detect_file_format(path)
        report = validate_jsonl(path, fmt, count)
    report.token_counter = how
    return _priced(report, fcfg)
