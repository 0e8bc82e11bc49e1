"""`model=hf_local`: play a local checkpoint (full model, PEFT adapter, or merged) with batched generation.

Same prompts (prompts.build_messages + the tokenizer's chat template) and parsing (done by the rollout) as the
openai policy. All turns of a lockstep batch are decoded together: left padding, one `generate` call per
`batch_size` turns, greedy or sampled (sampling is seeded per episode and turn, so a decision does not depend on
which other episodes share its batch). The prompt template comes from the checkpoint's manifest.json (the data's
template, recorded by the train stage) unless `model.prompt` is set.

Decoding (`model.decoding`): `generate` writes free text that the rollout parses; `rank` scores every valid action of
the turn as the reply the template would hold (`crafter_exp.policies.scoring`: one prompt pass shared by all
candidates) and plays the best one, or one sampled from the softmax of the scores at the play temperature — so a
reply is always a valid action (no parse failures, no inadmissible commands). The rollout stage resolves `auto` from
the environment (`TextEnv.actions_admissible`); a policy built directly treats `auto` as `generate`.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

from crafter_exp import prompts
from crafter_exp.errors import UserError
from crafter_exp.parsing import split_reasoning
from crafter_exp.policies.base import Decision, LLMCall, Policy, Turn

if TYPE_CHECKING:
    from crafter_exp.config import HFLocalModelConfig, PromptConfig

DECODINGS = ("auto", "rank", "generate")
REPLY_SLOT = "\x00reply\x00"
"""Placeholder reply rendered once per turn to find the text the chat template puts around an assistant reply."""
TOP_RECORDED = 5
"""Candidates (best first, with probabilities) recorded in each ranked call's response."""
DEFAULT_MAX_NEW_TOKENS = 256
"""Reply budget when neither the config nor the checkpoint's manifest gives one."""
TOOL_CALL_RE = re.compile(r"<tool_call>\s*(\{.*?\})\s*</tool_call>", re.S)


def read_manifest(path: Path) -> dict[str, Any]:
    f = path / "manifest.json"
    if not f.is_file():
        return {}
    try:
        return json.loads(f.read_text())
    except json.JSONDecodeError as e:
        raise UserError(f"{f}: not valid JSON ({e})") from None


def resolve_prompt(cfg_prompt: Optional[PromptConfig], manifest: dict[str, Any]) -> PromptConfig:
    """The user's prompt config, else the checkpoint's (the data's), else the standard template."""
    from crafter_exp.config import PromptConfig

    if cfg_prompt is not None:
        return cfg_prompt
    recorded = manifest.get("prompt")
    if recorded:
        known = set(PromptConfig.__dataclass_fields__)
        return PromptConfig(**{k: v for k, v in recorded.items() if k in known})
    return PromptConfig()


def resolve_decoding(cfg: HFLocalModelConfig, manifest: dict[str, Any]) -> tuple[bool, float]:
    """(sample?, temperature): the user's settings, else the checkpoint's recommendation, else greedy.

    A small student imitating a teacher that has memory is uncertain exactly where the teacher acted on what the
    student cannot see; greedy decoding then repeats one choice forever (e.g. walks into a wall), sampling does not.
    So the train stage records a play temperature for the tiny student and hf_local uses it unless told otherwise.
    """
    recorded = (manifest.get("play") or {}).get("temperature")
    do_sample = cfg.do_sample if cfg.do_sample is not None else recorded is not None
    temperature = cfg.temperature if cfg.temperature is not None else (recorded if recorded is not None else 1.0)
    if do_sample and temperature <= 0:
        raise UserError(f"model.temperature must be > 0 when sampling, got {temperature}")
    return bool(do_sample), float(temperature)


def parse_tool_calls(text: str) -> Optional[list[dict[str, Any]]]:
    """`<tool_call>{"name": ..., "arguments": ...}</tool_call>` blocks (Qwen/Hermes style) -> tool calls."""
    calls = []
    for raw in TOOL_CALL_RE.findall(text or ""):
        try:
            obj = json.loads(raw)
        except json.JSONDecodeError:
            continue
        if isinstance(obj, dict) and "name" in obj:
            calls.append({"name": obj["name"], "arguments": obj.get("arguments", {})})
    return calls or None


def row_seed(seed: int, episode: int, turn: int) -> int:
    """A sampling seed for one decision, independent of which other episodes share its batch."""
    import hashlib

    return int.from_bytes(hashlib.blake2b(f"{seed}/{episode}/{turn}".encode(), digest_size=8).digest(), "little") >> 1


class GumbelSampler:
    """Sampling as greedy search over Gumbel-perturbed logits (the Gumbel-max trick), with one random generator
    per row: a row's sample depends only on its own seed, not on the batch it was decoded in (lockstep batches and
    Ray actors regroup episodes freely, and evaluations stay reproducible)."""

    def __init__(self, seeds: list[int], temperature: float):
        import torch

        self.generators = [torch.Generator().manual_seed(s) for s in seeds]
        self.temperature = temperature

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        import torch

        vocab = scores.shape[-1]
        uniform = torch.stack([torch.rand(vocab, generator=g) for g in self.generators]).to(scores.device)
        gumbel = -torch.log(-torch.log(uniform.clamp(min=1e-20, max=1.0 - 1e-7)))
        return scores.float() / self.temperature + gumbel


class HFLocalPolicy(Policy):
    """Plays a transformers checkpoint in-process; one forward per step for all live episodes of the batch."""

    provider = "local"
    in_process = True  # batched generation over all episodes is the parallelism; workers would split the cores

    def __init__(self, cfg: HFLocalModelConfig, seed: int = 0):
        self.cfg = cfg
        self.seed = seed if seed is not None else cfg.seed
        if not cfg.path:
            raise UserError(
                "model.path is not set: point it at a checkpoint folder (data/checkpoints/<name>) or hub id"
            )
        self.path = Path(str(cfg.path)).expanduser()
        self.is_local = self.path.exists()
        if not self.is_local and (str(cfg.path).startswith((".", "/", "~")) or str(cfg.path).count("/") > 1):
            raise UserError(f"model.path not found: {cfg.path}")
        self.manifest = read_manifest(self.path) if self.is_local else {}
        self.prompt = resolve_prompt(cfg.prompt, self.manifest)
        prompts.check_template(self.prompt.template)
        self.do_sample, self.temperature = resolve_decoding(cfg, self.manifest)
        decoding = getattr(cfg, "decoding", "generate")
        if decoding not in DECODINGS:
            raise UserError(f"model.decoding must be one of {', '.join(DECODINGS)}, got {decoding!r}")
        self.decoding = "rank" if decoding == "rank" else "generate"
        if getattr(cfg, "in_process", None) is False:
            self.in_process = False  # a copy per Ray worker: the env's steps, not the forward, are the cost
        from crafter_exp.policies.scoring import SCORE_MODES

        self.score_mode = getattr(cfg, "score", "sum")
        if self.score_mode not in SCORE_MODES:
            raise UserError(f"model.score must be one of {', '.join(SCORE_MODES)}, got {self.score_mode!r}")
        recorded = (self.manifest.get("play") or {}).get("max_new_tokens")
        self.max_new_tokens = int(cfg.max_new_tokens or recorded or DEFAULT_MAX_NEW_TOKENS)
        self.model_name = cfg.label or (self.path.name if self.is_local else str(cfg.path))
        self.model: Any = None
        self.tokenizer: Any = None
        self.device: Any = None

    # ---------------------------------------------------------------------------------------------- loading

    def _is_adapter(self) -> bool:
        return self.is_local and (
            self.manifest.get("kind") == "adapter" or (self.path / "adapter_config.json").is_file()
        )

    def _base_for_adapter(self) -> str:
        base = self.cfg.base_model or self.manifest.get("base_model")
        if not base:
            adapter_cfg = json.loads((self.path / "adapter_config.json").read_text())
            base = adapter_cfg.get("base_model_name_or_path")
        if not base:
            raise UserError(f"{self.path} is an adapter but names no base model; set model.base_model")
        local = self.path / base
        return str(local) if local.exists() else str(base)

    def _dtype(self) -> Any:
        import torch

        if self.cfg.dtype == "auto":
            cuda = self.device.type == "cuda"
            return torch.bfloat16 if cuda and torch.cuda.is_bf16_supported() else torch.float32
        return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[self.cfg.dtype]

    def _autocast(self) -> Any:
        """bf16 autocast on a CPU with native bf16 (dtype auto): fp32 weights, bf16 matmuls — the numerics the
        student was trained with under the trainer's bf16 setting, and a faster prefill."""
        import contextlib

        import torch

        if self.cfg.dtype == "auto" and self.device.type == "cpu":
            from crafter_exp.training.sft.models import cpu_has_bf16

            if cpu_has_bf16():
                return torch.autocast(device_type="cpu", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def load(self) -> None:
        if self.model is not None:
            return
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # no "Loading weights" bar in every rollout actor
        device = self.cfg.device
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.device = torch.device(device)
        dtype = self._dtype()
        try:
            if self._is_adapter():
                from peft import PeftModel

                base = AutoModelForCausalLM.from_pretrained(self._base_for_adapter(), dtype=dtype)
                # merged for play: the same function, without LoRA's extra matmuls per layer
                model = PeftModel.from_pretrained(base, str(self.path)).merge_and_unload()
            else:
                model = AutoModelForCausalLM.from_pretrained(str(self.cfg.path), dtype=dtype)
            tokenizer = AutoTokenizer.from_pretrained(str(self.cfg.path))
        except OSError as e:
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise UserError(f"cannot load checkpoint {self.cfg.path}: {first}") from None
        tokenizer.padding_side = "left"  # generation continues from the right end of every row
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        if tokenizer.chat_template is None:
            raise UserError(f"{self.cfg.path}: the tokenizer has no chat template")
        model.to(self.device)
        model.eval()  # dropout off
        self.model, self.tokenizer = model, tokenizer

    def start(self) -> None:
        self.load()

    # ---------------------------------------------------------------------------------------------- acting

    def _tools(self, turn: Turn) -> Optional[list[dict[str, Any]]]:
        if self.prompt.action_mode != "tools":
            return None
        return [prompts.interact_tool(turn.actions, self.prompt.max_actions_per_turn)]

    def messages(self, turn: Turn) -> list[dict[str, Any]]:
        # earlier replies as the text generated (tool-call markup included), as the SFT export renders them: a
        # local model's reply is its own text, not the structured tool_calls an API returns
        history = [(past[0], past[1]) for past in turn.history]
        return prompts.build_messages(self.prompt, turn.instructions, turn.observation, history)

    def _generation_kwargs(self, seeds: Optional[list[int]]) -> dict[str, Any]:
        from transformers import GenerationConfig, LogitsProcessorList

        gen = GenerationConfig(
            max_new_tokens=self.max_new_tokens,
            do_sample=False,  # sampling, when asked, is greedy search over Gumbel-perturbed logits (GumbelSampler)
            temperature=None,
            top_p=None,
            top_k=None,
            pad_token_id=self.tokenizer.pad_token_id,
            eos_token_id=self.model.generation_config.eos_token_id or self.tokenizer.eos_token_id,
            bos_token_id=self.model.generation_config.bos_token_id,
        )
        kwargs: dict[str, Any] = {"generation_config": gen}
        if self.do_sample and seeds is not None:
            kwargs["logits_processor"] = LogitsProcessorList([GumbelSampler(seeds, self.temperature)])
        return kwargs

    def generate(self, texts: list[str], seeds: Optional[list[int]] = None) -> list[tuple[str, int, int, float]]:
        """(reply, prompt tokens, completion tokens, seconds per row) for each prompt text, batched.

        `seeds`: one sampling seed per text (default: derived from the policy seed and the row's position)."""
        import torch

        self.load()
        if self.do_sample and seeds is None:
            seeds = [row_seed(self.seed, -1, i) for i in range(len(texts))]
        out: list[tuple[str, int, int, float]] = []
        eos_ids = self.model.generation_config.eos_token_id
        eos_ids = set(eos_ids if isinstance(eos_ids, list) else [eos_ids or self.tokenizer.eos_token_id])
        step = max(1, int(self.cfg.batch_size))
        for i in range(0, len(texts), step):
            chunk = texts[i : i + step]
            t0 = time.perf_counter()
            enc = self.tokenizer(chunk, return_tensors="pt", padding=True, add_special_tokens=False).to(self.device)
            with torch.inference_mode(), self._autocast():
                seqs = self.model.generate(**enc, **self._generation_kwargs(seeds[i : i + step] if seeds else None))
            new = seqs[:, enc["input_ids"].shape[1] :].tolist()
            dt = (time.perf_counter() - t0) / len(chunk)
            prompt_lens = enc["attention_mask"].sum(dim=1).tolist()
            for row, n_prompt in zip(new, prompt_lens):
                n = len(row)
                for j, tok in enumerate(row):
                    if tok in eos_ids:
                        n = j + 1
                        break
                reply = self.tokenizer.decode(row[:n], skip_special_tokens=True).strip()
                out.append((reply, int(n_prompt), n, dt))
        return out

    def _reply_frame(self, messages: list[dict[str, Any]], prompt_text: str, kwargs: dict[str, Any]) -> tuple[str, str]:
        """(text before, text after) a reply, as the chat template renders an assistant turn after this prompt."""
        full = self.tokenizer.apply_chat_template(
            [*messages, {"role": "assistant", "content": REPLY_SLOT}], tokenize=False, **kwargs
        )
        if full.startswith(prompt_text) and REPLY_SLOT in full[len(prompt_text) :]:
            before, after = full[len(prompt_text) :].split(REPLY_SLOT, 1)
            return before, after
        return "", self.tokenizer.eos_token or ""  # a template that re-renders history differently: reply + eos

    def rank(
        self,
        turns: list[Turn],
        messages: list[list[dict[str, Any]]],
        texts: list[str],
        seeds: list[int],
        kwargs: dict[str, Any],
    ) -> list[Decision]:
        """decoding=rank: every turn's valid actions scored as replies; the best (or a sampled) one is played."""
        import torch

        from crafter_exp.policies.scoring import choose, score_candidates

        template = self.prompt.template
        candidates = []
        for msgs, text, turn in zip(messages, texts, turns):
            before, after = self._reply_frame(msgs, text, kwargs)
            candidates.append([before + prompts.format_reply(template, [a]) + after for a in turn.actions])
        t0 = time.perf_counter()
        scored = score_candidates(
            self.model,
            self.tokenizer,
            texts,
            candidates,
            max_rows=max(1, self.cfg.batch_size) * 8,
            autocast=self._autocast(),
        )
        dt = (time.perf_counter() - t0) / max(len(turns), 1)
        decisions = []
        for turn, msgs, _text, result, seed in zip(turns, messages, texts, scored, seeds):
            values = result.values(self.score_mode)
            generator = torch.Generator().manual_seed(seed) if self.do_sample else None
            best = choose(values, self.do_sample, self.temperature, generator)
            reply = prompts.format_reply(template, [turn.actions[best]])
            probs = torch.softmax(torch.tensor(values, dtype=torch.float64) / self.temperature, dim=0).tolist()
            top = sorted(range(len(values)), key=lambda i: -values[i])[:TOP_RECORDED]
            call = LLMCall(
                messages=msgs,
                response={
                    "text": reply,
                    "decoding": "rank",
                    "score": self.score_mode,
                    "sampled": self.do_sample,
                    "temperature": self.temperature,
                    "candidates": len(values),
                    "top": [[turn.actions[i], round(values[i], 4), round(probs[i], 4)] for i in top],
                },
                prompt_tokens=result.prompt_tokens,
                completion_tokens=int(result.tokens[best]),
                latency_s=dt,
                cost=0.0,
            )
            decisions.append(Decision(reply=reply, calls=[call]))
        return decisions

    def act(self, turns: list[Turn]) -> list[Decision]:
        self.load()
        messages = [self.messages(t) for t in turns]
        kwargs = dict(self.cfg.chat_template_kwargs or {})
        texts = [
            self.tokenizer.apply_chat_template(
                m, tools=self._tools(t), tokenize=False, add_generation_prompt=True, **kwargs
            )
            for m, t in zip(messages, turns)
        ]
        seeds = [row_seed(self.seed, t.episode, len(t.history)) for t in turns]
        if self.decoding == "rank":
            ranked = [i for i, t in enumerate(turns) if t.actions]
            out: list[Optional[Decision]] = [None] * len(turns)
            for i, d in zip(
                ranked,
                self.rank(
                    [turns[i] for i in ranked],
                    [messages[i] for i in ranked],
                    [texts[i] for i in ranked],
                    [seeds[i] for i in ranked],
                    kwargs,
                ),
            ):
                out[i] = d
            rest = [i for i in range(len(turns)) if out[i] is None]  # no valid action listed: free text
            for i, d in zip(
                rest,
                self._generated([messages[i] for i in rest], [texts[i] for i in rest], [seeds[i] for i in rest])
                if rest
                else [],
            ):
                out[i] = d
            return [d for d in out if d is not None]
        return self._generated(messages, texts, seeds)

    def _generated(self, messages: list[list[dict[str, Any]]], texts: list[str], seeds: list[int]) -> list[Decision]:
        decisions = []
        for msgs, (reply, n_prompt, n_completion, dt) in zip(messages, self.generate(texts, seeds)):
            reasoning, _ = split_reasoning(reply)
            tool_calls = parse_tool_calls(reply) if self.prompt.action_mode == "tools" else None
            call = LLMCall(
                messages=msgs,
                response={"text": reply, "decoding": "generate"},
                reasoning=reasoning,
                tool_calls=tool_calls,
                prompt_tokens=n_prompt,
                completion_tokens=n_completion,
                latency_s=dt,
                cost=0.0,
            )
            decisions.append(Decision(reply=reply, tool_calls=tool_calls, reasoning=reasoning, calls=[call]))
        return decisions

    def close(self) -> None:
        self.model = None
        self.tokenizer = None
