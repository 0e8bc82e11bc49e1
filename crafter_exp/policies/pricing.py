"""Cost of a model call from the config's price table (USD per 1M tokens).

Table shape (`model.prices` in config): `{model_name: {input: x, output: y, cached_input: z}}`; `cached_input` is
optional (prompt tokens served from the provider's cache, where usage reports them). Reasoning tokens are part of
`completion_tokens` in the OpenAI usage format and are priced as output. A model missing from the table has an
unknown cost: None, never 0 — a NULL in the store, so sums over runs with unpriced calls stay honest.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Optional

from crafter_exp.errors import UserError

PER = 1_000_000


def check_prices(prices: Mapping[str, Any]) -> None:
    """One clear line for a malformed table (before any call is made)."""
    for model, entry in (prices or {}).items():
        if not isinstance(entry, Mapping) or "input" not in entry or "output" not in entry:
            raise UserError(f"model.prices[{model!r}] must be {{input: USD/1M, output: USD/1M}}, got {entry!r}")
        for key, value in entry.items():
            if key not in ("input", "output", "cached_input"):
                raise UserError(f"model.prices[{model!r}]: unknown key {key!r} (input, output, cached_input)")
            if not isinstance(value, (int, float)) or value < 0:
                raise UserError(f"model.prices[{model!r}].{key} must be a number >= 0, got {value!r}")


def price_for(prices: Mapping[str, Any], *models: Optional[str]) -> Optional[Mapping[str, float]]:
    """The first of `models` (e.g. the name sent, then the name the response reports) with an exact entry."""
    for model in models:
        if model and model in (prices or {}):
            return prices[model]
    return None


def call_cost(
    prices: Mapping[str, Any],
    models: tuple[Optional[str], ...],
    prompt_tokens: int,
    completion_tokens: int,
    cached_tokens: int = 0,
) -> Optional[float]:
    """USD for one call, or None when no model of `models` is priced."""
    price = price_for(prices, *models)
    if price is None:
        return None
    cached = min(cached_tokens, prompt_tokens) if "cached_input" in price else 0
    return (
        (prompt_tokens - cached) * float(price["input"])
        + cached * float(price.get("cached_input", 0.0))
        + completion_tokens * float(price["output"])
    ) / PER
