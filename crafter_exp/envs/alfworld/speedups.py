"""Memoised parsing for TextWorld's text generator: the same output, several times faster ALFWorld steps.

Every step, TextWorld's PDDL backend re-derives the command text of each applicable action and of the feedback
through its grammar, and each derivation re-parses the same few template strings with tatsu (a PEG parser in
pure Python): a profile of an ALFWorld rollout spent most of its step time in those parses. The templates are
a handful of fixed strings, so their parses are memoised here, per process:
- `textgen._parse_and_convert(text, rule_name=...)`: returns fresh Symbol objects that the caller then mutates
  (it sets their context), so the cache hands out deep copies of a pristine parse;
- `Rule.parse_conjunctive_query(expr)`: the Rule is only read (matched against the state), so it is shared.
Then most of the remaining step time went to `textgen.copy_context`, which deep-copies the derivation context's
`variables` (EntityInfo objects) and `mapping` (Placeholder -> Variable) for every symbol; derivations only read
those objects (they evaluate `{o.name}`-style expressions) and add keys to their own context's dicts, so copying
the two dicts (not the objects in them) keeps every derivation's context separate at a fraction of the cost.
`install()` is idempotent; `uninstall()` restores the originals (tests compare both).
"""

from __future__ import annotations

from copy import deepcopy
from functools import lru_cache
from typing import Any

_originals: dict[str, Any] = {}


def install() -> None:
    if _originals:
        return
    from textworld.envs.pddl import textgen
    from textworld.logic import Rule

    if not all(hasattr(textgen, n) for n in ("_parse_and_convert", "copy_context")) or not hasattr(
        Rule, "parse_conjunctive_query"
    ):
        return  # a TextWorld whose internals moved: run it stock (slower, same text)
    parse_and_convert = textgen._parse_and_convert
    conjunctive_query = Rule.parse_conjunctive_query.__func__

    @lru_cache(maxsize=4096)
    def _parsed(text: str, rule_name: str) -> Any:
        return parse_and_convert(text, rule_name=rule_name)

    def cached_parse_and_convert(text: str, rule_name: str, **kwargs: Any) -> Any:
        if kwargs.get("trace"):  # TextWorld's grammar tracing wants the parse itself
            return parse_and_convert(text, rule_name=rule_name, **kwargs)
        return deepcopy(_parsed(text, rule_name))

    @lru_cache(maxsize=4096)
    def cached_conjunctive_query(cls: type, expr: str) -> Any:
        return conjunctive_query(cls, expr)

    def shallow_copy_context(context: dict) -> dict:
        return {
            "state": context["state"],
            "facts": context["facts"],
            "variables": dict(context["variables"]),
            "mapping": dict(context["mapping"]),
            "entity_infos": context["entity_infos"],
        }

    _originals["copy_context"] = textgen.copy_context
    textgen.copy_context = shallow_copy_context
    _originals["parse_and_convert"] = parse_and_convert
    _originals["conjunctive_query"] = Rule.__dict__["parse_conjunctive_query"]
    textgen._parse_and_convert = cached_parse_and_convert
    Rule.parse_conjunctive_query = classmethod(cached_conjunctive_query)


def uninstall() -> None:
    if not _originals:
        return
    from textworld.envs.pddl import textgen
    from textworld.logic import Rule

    textgen._parse_and_convert = _originals.pop("parse_and_convert")
    textgen.copy_context = _originals.pop("copy_context")
    Rule.parse_conjunctive_query = _originals.pop("conjunctive_query")
