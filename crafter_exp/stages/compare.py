"""Compare stage: N trace runs side by side — metrics with 95 % intervals, significance against the baseline,
a table (terminal, CSV, Markdown), seaborn figures, all logged to an MLflow run.

The first run is the baseline. Runs that played the same seeds are compared paired by seed; runs with different
seed sets are refused unless `compare.force` (then those pairs are compared unpaired). Outputs go to
`<paths.reports>/<name>/compare/`; `manifest.json` is written last and marks the report complete.

The stage computes, then reports: `compute` reads the trace store and returns a `Comparison` (tables, tests,
what the console shows) without writing anything; `report` writes the files, logs to MLflow and says the summary
(the `crafter_exp` logger); `compare` is both.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import json
import logging
import math
import shutil
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

import numpy as np
import pandas as pd

from crafter_exp import metrics as M
from crafter_exp import paths, tracking
from crafter_exp.errors import UserError
from crafter_exp.files import write_text_atomic
from crafter_exp.store.traces import TraceStore
from crafter_exp.tables import fmt, fmt_p, markdown_table  # noqa: F401 - also importable from here, as before

if TYPE_CHECKING:
    from crafter_exp.config import Config, TrackingConfig

log = logging.getLogger(__name__)

FAMILY_TITLES = {
    "achievement/": "Per-achievement success rate (% of episodes)",
    "success/": "Success rate per task type (%)",
    "action/": "Action distribution (% of actions)",
}


@dataclass
class CompareResult:
    table: pd.DataFrame
    """Long table, one row per (experiment, metric): value, ci_low, ci_high, n, and the test against the baseline
    (baseline, diff, p, p_adj, significant, test)."""
    tests: pd.DataFrame
    """Every significance test made: baseline, experiment, metric, baseline_value, value, diff, p, p_adj,
    significant, test."""
    labels: list[str]
    """Experiment labels, baseline first."""
    runs: list[str]
    """Trace run ids, in label order."""
    report_dir: Path
    files: dict[str, Path] = field(default_factory=dict)
    """Written files by role: metrics_csv, tests_csv, markdown, manifest, figure:<name>."""
    mlflow_run_id: Optional[str] = None
    seeds: dict[str, list[int]] = field(default_factory=dict)
    """Seeds played, per label."""

    @property
    def significant(self) -> pd.DataFrame:
        """The tests whose adjusted p-value is below alpha."""
        return self.tests[self.tests["significant"]] if len(self.tests) else self.tests

    @property
    def metrics_by_label(self) -> dict[str, dict[str, float]]:
        """{label: {metric: value}} (what a sweep job writes to result.json)."""
        return {
            label: {r.metric: float(r.value) for r in self.table[self.table["experiment"] == label].itertuples()}
            for label in self.labels
        }

    def job_result(self) -> tuple[dict[str, dict[str, float]], dict[str, Any]]:
        """What a sweep job records (crafter_exp/sweep.py `report_job`): metrics per label, and where the report is."""
        return self.metrics_by_label, {"report": str(self.report_dir), "mlflow_run_id": self.mlflow_run_id}

    def value(self, label: str, metric: str) -> float:
        rows = self.table[(self.table["experiment"] == label) & (self.table["metric"] == metric)]
        return float(rows["value"].iloc[0]) if len(rows) else float("nan")

    def test(self, baseline: str, other: str, metric: str) -> Optional[dict[str, Any]]:
        """The test of `other` against `baseline` on `metric` (None when it was not made)."""
        rows = self.tests[
            (self.tests["baseline"] == baseline)
            & (self.tests["experiment"] == other)
            & (self.tests["metric"] == metric)
        ]
        return rows.iloc[0].to_dict() if len(rows) else None


# ------------------------------------------------------------------------------------------------------ checks


def check_compare_config(c: Any) -> None:
    if c.k < 0:
        raise UserError(f"compare.k must be >= 0, got {c.k}")
    if c.bootstrap < 1 or c.permutations < 1 or c.custom_resamples < 1:
        raise UserError("compare.bootstrap, compare.permutations and compare.custom_resamples must be >= 1")
    if not 0 < c.alpha < 1:
        raise UserError(f"compare.alpha must be in (0, 1), got {c.alpha}")
    if c.correction not in ("bh", "holm", "none"):
        raise UserError(f"unknown compare.correction {c.correction!r} (bh, holm, none)")


def _mlflow_names_to_ids(tracking_cfg: TrackingConfig, names: list[str]) -> dict[str, list[str]]:
    """MLflow run name -> MLflow run ids (newest first) in the project's experiment; {} when unavailable."""
    if not names or not tracking_cfg.enabled:
        return {}
    uri = str(tracking_cfg.uri)
    if uri.startswith("sqlite:///") and not Path(uri[len("sqlite:///") :]).exists():
        return {}  # no store yet: don't create one just to look a name up
    import mlflow

    mlflow.set_tracking_uri(uri)
    client = mlflow.MlflowClient()
    exp = client.get_experiment_by_name(tracking_cfg.experiment)
    if exp is None:
        return {}
    out: dict[str, list[str]] = {}
    for name in names:
        quoted = name.replace("'", "\\'")
        found = client.search_runs(
            [exp.experiment_id],
            filter_string=f"attributes.run_name = '{quoted}'",
            order_by=["attributes.start_time DESC"],
            max_results=50,
        )
        out[name] = [r.info.run_id for r in found]
    return out


def resolve_runs(cfg: Config, store: TraceStore, names: Sequence[str]) -> list[str]:
    """Trace run ids for names that are trace run ids, MLflow run ids or MLflow run names."""
    runs = store.runs()
    known = set(runs["run_id"])
    by_mlflow = {m: r for r, m in zip(runs["run_id"], runs["mlflow_run_id"]) if isinstance(m, str) and m}
    resolved: dict[str, str] = {n: n if n in known else by_mlflow.get(n) for n in names}
    unresolved = [n for n, r in resolved.items() if r is None]
    for name, mlflow_ids in _mlflow_names_to_ids(cfg.tracking, unresolved).items():
        resolved[name] = next((by_mlflow[i] for i in mlflow_ids if i in by_mlflow), None)
    missing = [n for n, r in resolved.items() if r is None]
    if missing:
        hint = ", ".join(list(runs["run_id"])[-5:]) or "none"
        raise UserError(
            f"unknown run(s): {', '.join(missing)} (not a trace run id or MLflow run; latest trace runs: {hint})"
        )
    ids = [resolved[n] for n in names]
    dupes = sorted({i for i in ids if ids.count(i) > 1})
    if dupes:
        raise UserError(f"run(s) listed more than once: {', '.join(dupes)}")
    return ids


def default_labels(store: TraceStore, run_ids: list[str]) -> list[str]:
    """The runs' model labels when they are distinct, else the run ids without their common prefix."""
    runs = store.runs().set_index("run_id")
    models = [
        str(runs.loc[r, "model"]) if r in runs.index and isinstance(runs.loc[r, "model"], str) else "" for r in run_ids
    ]
    if all(models) and len(set(models)) == len(models):
        return models
    if len(run_ids) < 2:
        return list(run_ids)
    prefix = 0
    common = min(len(r) for r in run_ids)
    for i in range(common):
        if len({r[i] for r in run_ids}) > 1:
            break
        if run_ids[0][i] == "-":
            prefix = i + 1
    labels = [r[prefix:] or r for r in run_ids]
    return labels if len(set(labels)) == len(labels) else list(run_ids)


def _seed_summary(seeds: list[int]) -> str:
    if not seeds:
        return "none"
    contiguous = seeds == list(range(seeds[0], seeds[0] + len(seeds)))
    return f"{len(seeds)} seeds {seeds[0]}..{seeds[-1]}" + ("" if contiguous else " (gaps)")


def _select(selection: Sequence[str], known: Sequence[str]) -> Optional[list[str]]:
    """Metric names matching the selection (exact names or globs like `achievement/*`); None = all."""
    if not selection:
        return None
    chosen: list[str] = []
    for pattern in selection:
        hits = [m for m in known if fnmatch.fnmatchcase(m, pattern)]
        if not hits and pattern in M.METRICS:
            continue  # a known metric that does not apply to these runs (e.g. success_rate on Crafter)
        if not hits:
            raise UserError(f"unknown metric {pattern!r} (known: {', '.join(known)}; globs like achievement/* work)")
        chosen.extend(h for h in hits if h not in chosen)
    return chosen


# ------------------------------------------------------------------------------------------------- formatting


def wide_rows(table: pd.DataFrame, labels: list[str], metrics: list[str], intervals: bool = True) -> list[list[str]]:
    """One row per metric, one cell per experiment: `value [low, high]` and `*` when significant vs baseline."""
    index = table.set_index(["metric", "experiment"])
    rows = []
    for metric in metrics:
        row = [metric]
        for label in labels:
            if (metric, label) not in index.index:
                row.append("-")
                continue
            r = index.loc[(metric, label)]
            cell = fmt(r["value"])
            if intervals:
                cell += f" [{fmt(r['ci_low'])}, {fmt(r['ci_high'])}]"
            if bool(r.get("significant", False)):
                cell += " *"
            row.append(cell)
        rows.append(row)
    return rows


def terminal_table(table: pd.DataFrame, labels: list[str], metrics: list[str]) -> str:
    rows = wide_rows(table, labels, metrics)
    header = ["metric", *labels]
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)]
    line = lambda cells: "  ".join(str(c).ljust(w) for c, w in zip(cells, widths))  # noqa: E731
    return "\n".join([line(header), line(["-" * w for w in widths]), *(line(r) for r in rows)])


def significance_lines(tests: pd.DataFrame) -> list[str]:
    lines = []
    for r in tests[tests["significant"]].itertuples():
        sign = "+" if r.diff > 0 else ""
        lines.append(
            f"{r.experiment} vs {r.baseline}: {r.metric} {sign}{fmt(r.diff)} "
            f"({fmt(r.baseline_value)} -> {fmt(r.value)}), p = {fmt_p(r.p)} (adjusted {fmt_p(r.p_adj)})"
        )
    return lines


# --------------------------------------------------------------------------------------------------- writing


def _write_csv(path: Path, df: pd.DataFrame) -> Path:
    return write_text_atomic(path, df.to_csv(index=False))


def _mlflow_episodes(df: pd.DataFrame) -> pd.DataFrame:
    """Episodes with list/JSON/time columns as text, so MLflow can infer a schema and digest them."""
    out = df.copy()
    out["achievements"] = [",".join(M._as_list(v)) for v in out["achievements"]]
    for column in ("action_counts", "created_at", "success"):
        if column in out.columns:
            out[column] = out[column].astype(str)
    return out


def _config_tree(cfg: Config) -> dict[str, Any]:
    as_dict = lambda x: dataclasses.asdict(x) if dataclasses.is_dataclass(x) else x  # noqa: E731
    return {"name": cfg.name, "seed": cfg.seed, "compare": as_dict(cfg.compare), "paths": as_dict(cfg.paths)}


def run_protocols(store: TraceStore, run_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
    """Each run's evaluation protocol as recorded with it (crafter_exp.config.ProtocolConfig as a dict), plus the
    step cap and length it was played with. A rollout run records none (`name` = `none (rollout)`); a run stored
    before protocols were recorded says `unrecorded`."""
    runs = store.runs().set_index("run_id")
    out: dict[str, dict[str, Any]] = {}
    for run in run_ids:
        config = runs.loc[run, "config"] if run in runs.index else None
        if isinstance(config, str):
            config = json.loads(config) if config else {}
        config = config if isinstance(config, dict) else {}
        protocol = config.get("protocol")
        env = config.get("env") if isinstance(config.get("env"), dict) else {}
        if isinstance(protocol, dict) and protocol.get("name"):
            entry = dict(protocol)
        else:
            entry = {
                "name": "none (rollout)" if "protocol" in config else "unrecorded",
                "description": "",
                "source": "",
                "metrics": [],
            }
        entry["max_steps"] = env.get("max_steps")
        entry["length"] = env.get("length")
        out[run] = entry
    return out


def protocol_name(protocols: dict[str, dict[str, Any]]) -> str:
    """The protocol all runs share, or `mixed`."""
    names = {p["name"] for p in protocols.values()}
    return names.pop() if len(names) == 1 else "mixed"


def protocol_lines(
    protocols: dict[str, dict[str, Any]],
    labels: Sequence[str],
    run_ids: Sequence[str],
    episodes: dict[str, pd.DataFrame],
) -> list[str]:
    """The report's statement of the evaluation protocol: what it is and what was actually played."""
    by_label = {label: protocols[run] for label, run in zip(labels, run_ids)}
    played = "; ".join(
        f"{label}: {len(episodes[label])} episodes, cap {p.get('max_steps') or '-'} steps"
        + (f" (env length {p['length']})" if p.get("length") else "")
        for label, p in by_label.items()
    )
    name = protocol_name(protocols)
    if name == "mixed":
        names = ", ".join(f"{label}: {p['name']}" for label, p in by_label.items())
        return [
            f"**Protocols differ between runs** ({names}): their numbers are not comparable with each other "
            "or with one published table.",
            f"Played: {played}.",
        ]
    first = next(iter(by_label.values()))
    lines = [f"**Protocol: {name}**" + (f" — {first['description']}." if first.get("description") else ".")]
    if first.get("source"):
        lines.append(f"Source: {first['source']}.")
    if first.get("metrics"):
        lines.append(f"Published tables under it report: {', '.join(first['metrics'])}.")
    lines.append(f"Played: {played}.")
    return lines


def _report_markdown(
    cfg: Config,
    labels: list[str],
    run_ids: list[str],
    episodes: dict[str, pd.DataFrame],
    table: pd.DataFrame,
    tests: pd.DataFrame,
    scalar: list[str],
    families: dict[str, list[str]],
    figures: dict[str, Path],
    report_dir: Path,
    protocols: Optional[dict[str, dict[str, Any]]] = None,
) -> str:
    c = cfg.compare
    kinds = sorted(set(tests["test"])) if len(tests) else []
    parts = [f"# Compare: {cfg.name}", ""]
    parts.append(
        markdown_table(
            ["experiment", "trace run", "episodes", "seeds", "model", "policy"],
            [
                [
                    label,
                    run,
                    str(len(episodes[label])),
                    _seed_summary(sorted(episodes[label]["seed"].astype(int))),
                    str(episodes[label]["model"].iloc[0]),
                    str(episodes[label]["policy"].iloc[0]),
                ]
                for label, run in zip(labels, run_ids)
            ],
        )
    )
    if protocols:
        parts += ["", " ".join(protocol_lines(protocols, labels, run_ids, episodes))]
    parts += [
        "",
        f"Baseline: **{labels[0]}**. Intervals: 95 % percentile bootstrap over episodes ({c.bootstrap} "
        f"resamples, seed {cfg.seed}). Tests: {'; '.join(kinds) or 'none'}, two-sided, {c.permutations} "
        f"permutations, on the difference of each metric; p adjusted with "
        f"{ {'bh': 'Benjamini-Hochberg', 'holm': 'Holm', 'none': 'no correction'}[c.correction] } over all "
        f"{len(tests)} tests. `*` = differs from the baseline at adjusted p < {c.alpha}. "
        f"Achievement rate: % of episodes with >= {c.k} achievements.",
        "",
        "## Metrics",
        "",
        markdown_table(["metric", *labels], wide_rows(table, labels, scalar)),
        "",
    ]
    parts += ["## Significant differences", ""]
    lines = significance_lines(tests)
    parts += [f"- {line}" for line in lines] if lines else ["None at this level."]
    parts.append("")
    for prefix, names in families.items():
        if names:
            rows = wide_rows(table, labels, names, intervals=False)
            for row in rows:
                row[0] = row[0][len(prefix) :]
            parts += [f"## {FAMILY_TITLES[prefix]}", "", markdown_table([prefix.rstrip("/"), *labels], rows), ""]
    if figures:
        parts += ["## Figures", ""]
        parts += [f"![{name}]({path.relative_to(report_dir).as_posix()})" for name, path in figures.items()]
        parts.append("")
    return "\n".join(parts)


# ------------------------------------------------------------------------------------------------------- stage


@dataclass
class Comparison:
    """The numbers of a comparison, before any report: `compute`'s result."""

    table: pd.DataFrame
    """Long table, one row per (experiment, metric) (as CompareResult.table)."""
    tests: pd.DataFrame
    """Every significance test made (as CompareResult.tests)."""
    labels: list[str]
    """Experiment labels, baseline first."""
    runs: list[str]
    """Trace run ids, in label order."""
    episodes: dict[str, pd.DataFrame]
    """Each label's episodes."""
    seeds: dict[str, list[int]]
    """Seeds played, per label."""
    env: str
    achievements: list[str]
    scalar: list[str]
    """The table's scalar metrics (the console table's rows), in report order."""
    families: dict[str, list[str]]
    """Per-item metrics (achievement/, success/, action/) by family prefix."""
    protocols: dict[str, dict[str, Any]]
    """Each run's recorded evaluation protocol (run_protocols)."""
    store_path: Path
    """The trace database the episodes come from."""

    def console_lines(self, report_md: Path) -> list[str]:
        """What `stage=compare` prints: the setting, the protocol, the table and the significant differences."""
        labels, tests = self.labels, self.tests
        lines = [
            f"compare ({self.env}, baseline {labels[0]}; {len(self.seeds[labels[0]])} episodes each; "
            f"* = significant vs baseline)",
            " ".join(protocol_lines(self.protocols, labels, self.runs, self.episodes)).replace("**", ""),
            terminal_table(self.table, labels, self.scalar),
        ]
        scalar_tests = tests[~tests["metric"].str.startswith(M.FAMILIES)]
        diffs = significance_lines(scalar_tests)
        per_item = int(tests["significant"].sum()) - len(diffs) if len(tests) else 0
        if per_item:
            diffs.append(f"+ {per_item} per-achievement / per-action differences (see {report_md})")
        lines.append("significant differences:" + ("".join(f"\n  {line}" for line in diffs) if diffs else " none"))
        return lines


def compare(
    cfg: Config,
    runs: Optional[Sequence[str]] = None,
    labels: Optional[Sequence[str]] = None,
    pairs: Optional[Sequence[tuple[str, str]]] = None,
) -> CompareResult:
    """Compare trace runs (default cfg.compare.runs; the first is the baseline): `compute`, then `report`.

    `labels` name the experiments in reports (default: model labels, else shortened run ids). `pairs` adds tests
    of (baseline_label, other_label) besides each run against the first (compare.pairwise: every pair).
    """
    return report(cfg, compute(cfg, runs, labels, pairs))


def compute(
    cfg: Config,
    runs: Optional[Sequence[str]] = None,
    labels: Optional[Sequence[str]] = None,
    pairs: Optional[Sequence[tuple[str, str]]] = None,
) -> Comparison:
    """The comparison's numbers (arguments as `compare`): reads the trace store, writes nothing, no MLflow."""
    c = cfg.compare
    check_compare_config(c)
    names = list(runs if runs is not None else c.runs)
    if not names:
        raise UserError(
            "nothing to compare: give trace run ids, e.g. compare.runs=[run_a,run_b] (the first is the baseline)"
        )
    store = TraceStore(cfg.paths.db)
    if not store.path.exists():
        raise UserError(f"trace database not found: {store.path} (set paths.home or paths.db)")
    run_ids = resolve_runs(cfg, store, names)
    labels = list(labels) if labels is not None else default_labels(store, run_ids)
    if len(labels) != len(run_ids) or len(set(labels)) != len(labels):
        raise UserError(f"need one distinct label per run: got {labels} for {len(run_ids)} runs")

    all_episodes = store.episodes(run_ids)
    episodes = {
        label: all_episodes[all_episodes["run_id"] == run].reset_index(drop=True) for label, run in zip(labels, run_ids)
    }
    empty = [run for label, run in zip(labels, run_ids) if episodes[label].empty]
    if empty:
        raise UserError(f"run(s) with no episodes: {', '.join(empty)}")
    envs = sorted({str(e) for e in all_episodes["env"]})
    if len(envs) != 1:
        raise UserError(f"runs of different environments cannot be compared: {', '.join(envs)}")
    from crafter_exp.envs import env_achievements, env_metrics

    achievements = env_achievements(envs[0])
    declaration = env_metrics(envs[0])  # the env's own metrics: the report shows these (and custom ones) only
    seeds = {label: sorted(int(s) for s in df["seed"]) for label, df in episodes.items()}
    if len({tuple(s) for s in seeds.values()}) > 1 and not c.force:
        detail = "; ".join(f"{label}: {_seed_summary(s)}" for label, s in seeds.items())
        raise UserError(
            f"runs played different seed sets ({detail}); evaluate them on the same seeds, or set "
            "compare.force=true to compare them unpaired"
        )

    pair_list: list[tuple[str, str]] = [(labels[0], other) for other in labels[1:]]
    if c.pairwise:
        pair_list = [(a, b) for i, a in enumerate(labels) for b in labels[i + 1 :]]
    for a, b in pairs or []:
        if a not in labels or b not in labels:
            raise UserError(f"pair ({a}, {b}) names an unknown label (labels: {', '.join(labels)})")
        if (a, b) not in pair_list:
            pair_list.append((a, b))

    custom = M.load_custom_metrics(c.custom_metrics)
    custom_names: list[str] = []
    for target, fn in custom:
        try:
            custom_names += list(M._call_custom(target, fn, episodes[labels[0]]))
        except ValueError:
            raise
        except Exception as exc:
            raise UserError(f"custom metric {target!r} failed on run {run_ids[0]}: {exc}") from None
    actions = M.top_actions(all_episodes)  # one action list for every run, so their distributions line up
    known = list(
        dict.fromkeys(
            [
                *M.METRICS,
                *(n for df in episodes.values() for n in M.metric_names(df, achievements, c.k, actions)),
                *custom_names,
            ]
        )
    )
    known = [m for m in known if m in custom_names or not declaration or M.declared(m, declaration)]
    selected = _select(c.metrics, known)
    if selected is None:
        selected = known

    # --- the numbers
    tables = []
    for label, run in zip(labels, run_ids):
        t = M.bootstrap(
            episodes[label],
            achievements,
            k=c.k,
            resamples=c.bootstrap,
            seed=cfg.seed,
            custom=custom,
            custom_resamples=c.custom_resamples,
            actions=actions,
        )
        tables.append(t.assign(experiment=label, run_id=run))
    table = pd.concat(tables, ignore_index=True)
    test_frames = []
    for a, b in pair_list:
        t = M.significance(
            episodes[a],
            episodes[b],
            achievements,
            k=c.k,
            permutations=c.permutations,
            seed=cfg.seed,
            custom=custom,
            custom_resamples=c.custom_resamples,
            actions=actions,
        )
        test_frames.append(t.assign(baseline=a, experiment=b))
    tests = (
        pd.concat(test_frames, ignore_index=True)
        if test_frames
        else pd.DataFrame(columns=["metric", "baseline_value", "value", "diff", "p", "test", "baseline", "experiment"])
    )
    if selected is not None:
        table = table[table["metric"].isin(selected)]
        tests = tests[tests["metric"].isin(selected)]
    tests = tests.reset_index(drop=True)
    tests["p_adj"] = M.adjust_pvalues(tests["p"].to_numpy(dtype=float), c.correction) if len(tests) else []
    tests["significant"] = (tests["p_adj"] < c.alpha) if len(tests) else []
    tests = tests[
        ["baseline", "experiment", "metric", "baseline_value", "value", "diff", "p", "p_adj", "significant", "test"]
    ]
    vs_first = tests[tests["baseline"] == labels[0]][
        ["experiment", "metric", "diff", "p", "p_adj", "significant", "test"]
    ]
    table = table.merge(vs_first, on=["experiment", "metric"], how="left").assign(baseline=labels[0])
    table["significant"] = table["significant"].astype("boolean").fillna(False).astype(bool)
    order = {m: i for i, m in enumerate(known)}
    table["_order"] = table["metric"].map(lambda m: order.get(m, len(order)))
    table["_label"] = table["experiment"].map({label: i for i, label in enumerate(labels)})
    table = table.sort_values(["_label", "_order"]).drop(columns=["_order", "_label"]).reset_index(drop=True)
    table = table[
        [
            "experiment",
            "run_id",
            "metric",
            "value",
            "ci_low",
            "ci_high",
            "n",
            "baseline",
            "diff",
            "p",
            "p_adj",
            "significant",
            "test",
        ]
    ]

    present = list(dict.fromkeys(m for m in known if (table["metric"] == m).any()))
    scalar = [m for m in present if not m.startswith(M.FAMILIES)]
    families = {p: [m for m in present if m.startswith(p)] for p in M.FAMILIES}
    return Comparison(
        table,
        tests,
        labels,
        run_ids,
        episodes,
        seeds,
        envs[0],
        list(achievements),
        scalar,
        families,
        run_protocols(store, run_ids),
        store.path,
    )


def report(cfg: Config, comp: Comparison) -> CompareResult:
    """Write the comparison's report folder (CSV, Markdown, figures; manifest last), log it to MLflow, print it."""
    c = cfg.compare
    table, tests, labels, run_ids, seeds = comp.table, comp.tests, comp.labels, comp.runs, comp.seeds
    episodes, scalar, families, protocols = comp.episodes, comp.scalar, comp.families, comp.protocols
    report_dir = paths.compare_dir(cfg)
    report_dir.mkdir(parents=True, exist_ok=True)
    folder = paths.OutputFolder(report_dir, paths.identity([_config_tree(cfg)["compare"], run_ids, labels, cfg.seed]))
    folder.invalidate()  # the report is incomplete until the new manifest lands
    figures_dir = report_dir / "figures"
    if figures_dir.exists():
        shutil.rmtree(figures_dir)
    result = CompareResult(table, tests, labels, run_ids, report_dir, seeds=seeds)
    tags = {"name": cfg.name, "env": comp.env, "runs": ",".join(run_ids)[:5000], "protocol": protocol_name(protocols)}
    # the runs' protocols (what was played), not cfg.protocol (what a new eval would play)
    params = _config_tree(cfg) | {
        "protocol": {
            "name": protocol_name(protocols),
            "runs": {label: protocols[run]["name"] for label, run in zip(labels, run_ids)},
        }
    }
    with tracking.stage_run(cfg.tracking, "compare", f"compare-{cfg.name}", params, tags) as mlrun:
        result.mlflow_run_id = mlrun.info.run_id if mlrun else None
        figures: dict[str, Path] = {}
        if c.figures:
            figures = _figures(table, episodes, labels, comp.achievements, scalar, figures_dir)
        files = {
            "metrics_csv": _write_csv(report_dir / "metrics.csv", table),
            "tests_csv": _write_csv(report_dir / "significance.csv", tests),
            "markdown": write_text_atomic(
                report_dir / "report.md",
                _report_markdown(
                    cfg, labels, run_ids, episodes, table, tests, scalar, families, figures, report_dir, protocols
                ),
            ),
            **{f"figure:{name}": path for name, path in figures.items()},
        }
        for line in comp.console_lines(report_dir / "report.md"):
            log.info("%s", line)

        for label, run in zip(labels, run_ids) if result.mlflow_run_id else []:
            rows = table[table["experiment"] == label]
            values: dict[str, float] = {f"{label}/{r.metric}": r.value for r in rows.itertuples()}
            for r in rows[~rows["metric"].str.startswith(M.FAMILIES)].itertuples():
                values[f"{label}/{r.metric}_ci_low"] = r.ci_low
                values[f"{label}/{r.metric}_ci_high"] = r.ci_high
                if isinstance(r.p, float) and math.isfinite(r.p):
                    values[f"{label}/{r.metric}_p"] = r.p
            tracking.log_metrics(values)
            with warnings.catch_warnings():  # MLflow's schema-inference hints about int columns: noise here
                warnings.simplefilter("ignore", UserWarning)
                tracking.log_dataframe_input(
                    _mlflow_episodes(episodes[label]), name=run, source=str(comp.store_path), context=f"compare:{label}"
                )
        for role, path in files.items() if result.mlflow_run_id else []:
            tracking.log_file(path, "compare/figures" if role.startswith("figure:") else "compare")
        manifest = {
            "kind": "compare",
            "name": cfg.name,
            "env": comp.env,
            "runs": dict(zip(labels, run_ids)),
            "baseline": labels[0],
            "seeds": {label: _seed_summary(s) for label, s in seeds.items()},
            "paired": sorted({t for t in tests["test"]}) if len(tests) else [],
            "protocol": protocol_name(protocols),
            "protocols": {label: protocols[run] for label, run in zip(labels, run_ids)},
            "files": {role: path.relative_to(report_dir).as_posix() for role, path in files.items()},
            "metrics": result.metrics_by_label,
            "significant": [f"{r.experiment} vs {r.baseline}: {r.metric}" for r in result.significant.itertuples()],
            "mlflow_run_id": result.mlflow_run_id,
        }
        folder.finish(manifest)
        files["manifest"] = folder.manifest_path
        if result.mlflow_run_id:
            tracking.log_file(files["manifest"], "compare")
    result.files = files
    log.info("report: %s", files["markdown"])
    return result


def _json_default(value: Any) -> Any:
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    return str(value)


def _figures(
    table: pd.DataFrame,
    episodes: dict[str, pd.DataFrame],
    labels: list[str],
    achievements: Sequence[str],
    scalar: list[str],
    out: Path,
) -> dict[str, Path]:
    from crafter_exp import figures as F

    made = {
        "per_achievement": F.per_achievement(table, out / "per_achievement.png", order=list(achievements) or None),
        # episode reward and achievement counts: only where the env reports them (ALFWorld's restate success)
        "reward_distribution": F.reward_distribution(
            pd.concat([df.assign(experiment=label) for label, df in episodes.items()], ignore_index=True),
            out / "reward_distribution.png",
            labels,
        )
        if {"mean_reward", "mean_achievements"} & set(scalar)
        else None,
        "action_distribution": F.action_distribution(table, out / "action_distribution.png"),
        "task_success": F.task_success(table, out / "task_success.png"),
        "metric_intervals": F.metric_intervals(
            table, [m for m in M.HEADLINE if m in scalar] or scalar[:8], out / "metric_intervals.png"
        ),
    }
    return {name: path for name, path in made.items() if path is not None}


def run(cfg: Config) -> CompareResult:
    """stage=compare: compare cfg.compare.runs (under a sweep, the entrypoint writes `job_result()` to the job's
    result.json)."""
    return compare(cfg)


__all__ = [
    "CompareResult",
    "Comparison",
    "compare",
    "compute",
    "report",
    "run",
    "resolve_runs",
    "default_labels",
    "check_compare_config",
    "run_protocols",
    "protocol_name",
    "protocol_lines",
]
