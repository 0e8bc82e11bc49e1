"""Filter + export benchmark: crafter-exp's SQL filter stage vs a plain-Python baseline, on synthetic trace stores.

For each size (default 100k and 1M steps) it
  1. generates a trace database with DuckDB SQL (no Python loop over rows): one rollout run of scripted-teacher-like
     episodes (100-400 turns, the `bare` prompt the scripted teacher writes, ~300-character observations,
     sparse achievement unlocks, 2 % unparsed replies), and its JSON export (runs / episodes / steps as JSON);
  2. runs, each in a fresh subprocess (so peak RSS is that run's own; VmHWM), `--repeat` times (fastest counts):
     - `sql`: crafter_exp.stages.filter.filter_and_export -> openai_chat JSONL (tracking off);
     - `baseline`: what the reference workflows do — json.load the traces, filter episodes and steps in Python
       loops, rebuild each prompt with prompts.build_messages, json.dumps each example;
  3. checks the two outputs hold the same examples, and prints wall time, CPU time (all threads; steadier than
     wall time on a shared machine), peak RSS and the ratios.
Then the SQL stage alone on a bigger store (default 3M steps): its peak RSS must stay flat.
Files go to /dev/shm when it exists: both sides are timed on compute, not on a disk other jobs share.
Times exclude interpreter start-up and imports (crafter's numba world generator costs ~1 s to import).

Filter used: >= 3 achievements not counting collect_sapling, <= 380 turns, no api errors, unparsed replies dropped.

    python benchmarks/filter_export.py                                    # 100k + 1M, then 3M SQL-only
    python benchmarks/filter_export.py --sizes 100000 --sql-only-sizes   # quicker
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Optional

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

RUN_ID = "bench-rollout"
NAME = "bench"
PROMPT = {
    "template": "bare",
    "history": 0,
    "system_prompt_file": None,
    "action_mode": "text",
    "max_actions_per_turn": 1,
}
FILTER = {"min_achievements": 3, "exclude_achievements": ["collect_sapling"], "max_turns": 380}
ACTIONS = [
    "noop",
    "move_left",
    "move_right",
    "move_up",
    "move_down",
    "do",
    "sleep",
    "place_stone",
    "place_table",
    "place_furnace",
    "place_plant",
    "make_wood_pickaxe",
    "make_stone_pickaxe",
    "make_iron_pickaxe",
    "make_wood_sword",
    "make_stone_sword",
    "make_iron_sword",
]
OBJECTS = ["tree", "water", "stone", "coal", "iron", "cow", "zombie", "sand", "grass", "table"]
DIRS = ["north", "south", "east", "west", "north-east", "north-west", "south-east", "south-west"]


def _sql_list(values: list[str]) -> str:
    return "[" + ", ".join("'" + v + "'" for v in values) + "]"  # benchmark constants, not user input


def generate(db_path: Path, json_dir: Optional[Path], n_steps: int, prompt: Optional[dict] = None) -> int:
    """A synthetic store of about n_steps steps, and its JSON export; returns the exact step count."""
    import duckdb

    from crafter_exp.envs import env_achievements
    from crafter_exp.store import schema

    achievements = list(env_achievements("crafter"))
    con = duckdb.connect(str(db_path))
    for stmt in schema.ddl():
        con.execute(stmt)
    n_eps = max(1, n_steps // 250)
    con.execute(
        f"CREATE TEMP TABLE eps AS SELECT e AS seed, (100 + (hash(e * 7919) >> 2)::BIGINT % 301)::INTEGER AS turns "
        f"FROM range({n_eps}) t(e)"
    )
    A, O, D, ACH = _sql_list(ACTIONS), _sql_list(OBJECTS), _sql_list(DIRS), _sql_list(achievements)
    con.execute("""
    CREATE TEMP TABLE raw AS
    SELECT seed, turns, t, (hash(seed * 1000003 + t) >> 2)::BIGINT AS h FROM (SELECT seed, turns, unnest(range(turns)) AS t FROM eps)
    """)
    con.execute(f"""
    INSERT INTO steps ({", ".join(schema.column_names("steps")[:15])})
    SELECT '{RUN_ID}', seed, t::INTEGER, t::INTEGER,
      'Step ' || t || ' of 10000. You face ' || {O}[1 + h % 10] || '.' || chr(10)
        || 'Health ' || (1 + h % 9) || '/9, food ' || (1 + (h // 9) % 9) || '/9, drink ' || (1 + (h // 81) % 9)
        || '/9, energy ' || (1 + (h // 729) % 9) || '/9.' || chr(10)
        || 'You see: ' || {O}[1 + (h // 7) % 10] || ' ' || (1 + h % 5) || ' steps ' || {D}[1 + (h // 11) % 8]
        || ', ' || {O}[1 + (h // 13) % 10] || ' ' || (1 + (h // 3) % 6) || ' steps ' || {D}[1 + (h // 17) % 8]
        || ', ' || {O}[1 + (h // 19) % 10] || ' ' || (2 + (h // 5) % 6) || ' steps ' || {D}[1 + (h // 23) % 8]
        || '.' || chr(10) || 'Inventory: wood ' || (h // 29) % 6 || ', stone ' || (h // 31) % 4 || ', sapling '
        || (h // 37) % 2 || '.' || chr(10) || 'Achievements so far: ' || (t // 40) || '.',
      CASE WHEN h % 50 = 0 THEN 'I am not sure what to do here.' ELSE {A}[1 + (h // 3) % 17] END,
      NULL, NULL,
      [CASE WHEN h % 50 = 0 THEN 'noop' ELSE {A}[1 + (h // 3) % 17] END],
      h % 50 <> 0, TRUE,
      CASE WHEN (h // 101) % 40 = 0 THEN 1.0 WHEN (h // 7) % 97 = 0 THEN -0.1 ELSE 0.0 END,
      CASE WHEN (h // 101) % 40 = 0 THEN [{ACH}[1 + (h // 4001) % 22]] ELSE []::VARCHAR[] END,
      NULL, t = turns - 1
    FROM raw ORDER BY seed, t
    """)
    con.execute(f"""
    INSERT INTO episodes ({", ".join(schema.column_names("episodes")[:24] + ["created_at"])})
    SELECT '{RUN_ID}', seed, 'crafter', 'scripted', 'teacher', 'local', NULL, count(*), count(*), sum(reward),
      list_distinct(flatten(list(unlocked ORDER BY turn))), len(list_distinct(flatten(list(unlocked ORDER BY turn)))),
      NULL, 'max_steps', 0, count(*) FILTER (WHERE NOT parse_ok), 0, '{{}}', 0, 0, 0, 0, NULL, 1.0, now()
    FROM steps GROUP BY seed ORDER BY seed
    """)
    config = json.dumps({"model": {"name": "scripted", "prompt": prompt or PROMPT}, "env": {"name": "crafter"}})
    con.execute(
        "INSERT INTO runs VALUES ($run, $name, 'rollout', 'crafter', 'scripted', 'teacher', 'local', 0, "
        "$n, $config, 'bench', 'bench', NULL, now())",
        {"run": RUN_ID, "name": NAME, "n": n_eps, "config": config},
    )
    total = con.execute("SELECT count(*) FROM steps").fetchone()[0]
    for table in ("runs", "episodes", "steps") if json_dir else ():
        json_dir.mkdir(parents=True, exist_ok=True)
        order = " ORDER BY run_id, seed" + (", turn" if table == "steps" else "") if table != "runs" else ""
        con.execute(
            f"COPY (SELECT * FROM {table}{order}) TO '{json_dir / (table + '.json')}' (FORMAT JSON, ARRAY true)"
        )
    con.execute("CHECKPOINT")
    con.close()
    return int(total)


# --------------------------------------------------------------------------------------------------- children


def child_sql(home: Path, out: Path) -> dict:
    from crafter_exp.config import compose_config
    from crafter_exp.stages.filter import filter_and_export

    overrides = [
        f"paths.home={home}",
        f"name={NAME}",
        "tracking.enabled=false",
        f"filter.output={out}",
        f"filter.min_achievements={FILTER['min_achievements']}",
        f"filter.exclude_achievements=[{','.join(FILTER['exclude_achievements'])}]",
        f"filter.max_turns={FILTER['max_turns']}",
    ]
    cfg = compose_config(overrides)
    shutil.rmtree(out, ignore_errors=True)  # else a repeat finds the dataset up to date and skips the work
    import crafter_exp.envs.crafter  # noqa: F401  (import cost — numba — is not filtering; same in the baseline)

    start, cpu = time.perf_counter(), cpu_seconds()
    result = filter_and_export(cfg, progress=False)
    assert not result.skipped
    return {"seconds": time.perf_counter() - start, "cpu_s": cpu_seconds() - cpu, "examples": result.examples}


def child_baseline(json_dir: Path, out: Path) -> dict:
    """The reference workflows' way: load everything from JSON, filter in loops, rebuild prompts one by one."""
    from collections import defaultdict

    from crafter_exp import prompts
    from crafter_exp.config import PromptConfig
    from crafter_exp.envs import env_instructions

    env_instructions("crafter")
    start, cpu = time.perf_counter(), cpu_seconds()
    runs = json.loads((json_dir / "runs.json").read_text())
    episodes = json.loads((json_dir / "episodes.json").read_text())
    steps = json.loads((json_dir / "steps.json").read_text())
    config = runs[0]["config"]
    config = json.loads(config) if isinstance(config, str) else config
    prompt_cfg = PromptConfig(**config["model"]["prompt"])
    instructions = env_instructions("crafter")
    exclude = set(FILTER["exclude_achievements"])
    keep = set()
    for e in episodes:
        counted = [a for a in (e["achievements"] or []) if a not in exclude]
        if (
            len(counted) >= FILTER["min_achievements"]
            and e["turns"] <= FILTER["max_turns"]
            and e["termination"] != "api_error"
        ):
            keep.add((e["run_id"], e["seed"]))
    by_episode = defaultdict(list)
    for s in steps:
        if (s["run_id"], s["seed"]) in keep:
            by_episode[(s["run_id"], s["seed"])].append(s)
    examples = 0
    with open(out, "w", encoding="utf-8") as f:
        for key in sorted(by_episode):
            history: list[tuple[str, str]] = []
            for s in sorted(by_episode[key], key=lambda r: r["turn"]):
                if s["parse_ok"] is not False:
                    messages = prompts.build_messages(prompt_cfg, instructions, s["observation"], history)
                    messages = [dict(m, weight=0) if m["role"] == "assistant" else m for m in messages]
                    messages.append({"role": "assistant", "content": s["reply"]})
                    f.write(json.dumps({"messages": messages}, ensure_ascii=False) + "\n")
                    examples += 1
                history.append((s["observation"], s["reply"]))
    return {"seconds": time.perf_counter() - start, "cpu_s": cpu_seconds() - cpu, "examples": examples}


def cpu_seconds() -> float:
    """CPU time of this process, all threads (robust to other load on a shared machine, unlike wall time)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def peak_rss_mb() -> float:
    """This process's peak RSS. VmHWM, not ru_maxrss: Linux carries ru_maxrss over fork+exec, so a child would
    report its parent's peak (here the generator's) when that is higher than its own."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


REPEAT = 1


def run_child(kind: str, *args: str) -> dict:
    """Run one side in a fresh process, REPEAT times; the fastest run counts (the others met more load from
    whatever else the machine was doing), its peak RSS with it."""
    best = None
    for _ in range(REPEAT):
        proc = subprocess.run(
            [sys.executable, __file__, "--child", kind, *args], capture_output=True, text=True, cwd=ROOT
        )
        if proc.returncode != 0:
            raise RuntimeError(f"{kind} child failed:\n{proc.stderr[-3000:]}")
        got = json.loads(proc.stdout.strip().splitlines()[-1])
        if best is None or got["seconds"] < best["seconds"]:
            best = got
    return best


def same_examples(a: Path, b: Path) -> bool:
    with open(a, encoding="utf-8") as fa, open(b, encoding="utf-8") as fb:
        for la, lb in zip(fa, fb):
            if json.loads(la) != json.loads(lb):
                return False
        return fa.readline() == "" and fb.readline() == ""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument(
        "--sql-only-sizes",
        type=int,
        nargs="*",
        default=[3_000_000],
        help="extra sizes run with the SQL stage only (peak RSS must stay flat)",
    )
    parser.add_argument(
        "--workdir",
        default=None,
        help="where to put the databases and outputs (default: a temp folder in /dev/shm when there "
        "is one, so that both sides are timed on compute, not on a shared disk)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the generated files")
    parser.add_argument("--reuse", action="store_true", help="reuse databases kept in --workdir by an earlier --keep")
    parser.add_argument("--repeat", type=int, default=2, help="runs per side and size; the fastest counts")
    parser.add_argument(
        "--template",
        default="bare",
        help="prompt template the synthetic run records (bare = the "
        "scripted teacher's; standard adds the ~2.5 kB rules prompt to every example)",
    )
    parser.add_argument("--history", type=int, default=0, help="history window the synthetic run records")
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    global REPEAT
    REPEAT = max(1, args.repeat)
    if args.child:
        kind, *rest = args.child
        out = child_sql(Path(rest[0]), Path(rest[1])) if kind == "sql" else child_baseline(Path(rest[0]), Path(rest[1]))
        out["peak_rss_mb"] = peak_rss_mb()
        print(json.dumps(out))
        return

    shm = "/dev/shm" if Path("/dev/shm").is_dir() else None
    prompt = {**PROMPT, "template": args.template, "history": args.history}
    if args.reuse and prompt != PROMPT:
        parser.error("--reuse keeps the prompt the stores were generated with; drop --template/--history")
    work = Path(args.workdir or tempfile.mkdtemp(prefix="filter_bench_", dir=shm))
    print(f"working in {work}")
    rows = []
    try:
        for size in args.sizes:
            home = work / f"steps_{size}"
            db = home / "data" / "traces.duckdb"
            t0 = time.perf_counter()
            if args.reuse and db.exists() and (home / "json" / "steps.json").exists():
                import duckdb

                with duckdb.connect(str(db), read_only=True) as con:
                    steps = con.execute("SELECT count(*) FROM steps").fetchone()[0]
                for old in ("out_sql", "baseline.jsonl"):
                    shutil.rmtree(home / old, ignore_errors=True) if old == "out_sql" else (home / old).unlink(True)
            else:
                shutil.rmtree(home, ignore_errors=True)
                (home / "data").mkdir(parents=True)
                steps = generate(db, home / "json", size, prompt)
            gen_s = time.perf_counter() - t0
            db_mb = (home / "data" / "traces.duckdb").stat().st_size / 2**20
            json_mb = sum(p.stat().st_size for p in (home / "json").iterdir()) / 2**20
            print(
                f"[{size:,}] generated {steps:,} steps in {gen_s:.1f} s (DuckDB {db_mb:.0f} MB, JSON {json_mb:.0f} MB)",
                flush=True,
            )
            sql = run_child("sql", str(home), str(home / "out_sql"))
            print(
                f"[{size:,}] sql       {sql['seconds']:7.2f} s ({sql['cpu_s']:.2f} s CPU)  {sql['examples']:>9,} examples  "
                f"peak RSS {sql['peak_rss_mb']:6.0f} MB",
                flush=True,
            )
            base = run_child("baseline", str(home / "json"), str(home / "baseline.jsonl"))
            print(
                f"[{size:,}] baseline  {base['seconds']:7.2f} s ({base['cpu_s']:.2f} s CPU)  {base['examples']:>9,} examples  "
                f"peak RSS {base['peak_rss_mb']:6.0f} MB",
                flush=True,
            )
            same = same_examples(home / "out_sql" / "train.jsonl", home / "baseline.jsonl")
            out_mb = (home / "out_sql" / "train.jsonl").stat().st_size / 2**20
            rows.append((steps, sql, base, same, out_mb))
            if not args.keep:
                shutil.rmtree(home, ignore_errors=True)
        for size in args.sql_only_sizes:
            home = work / f"steps_{size}"
            db = home / "data" / "traces.duckdb"
            if not (args.reuse and db.exists()):
                shutil.rmtree(home, ignore_errors=True)
                (home / "data").mkdir(parents=True)
                generate(db, None, size, prompt)
            shutil.rmtree(home / "out_sql", ignore_errors=True)
            import duckdb

            with duckdb.connect(str(db), read_only=True) as con:
                steps = con.execute("SELECT count(*) FROM steps").fetchone()[0]
            sql = run_child("sql", str(home), str(home / "out_sql"))
            print(
                f"[{size:,}] sql       {sql['seconds']:7.2f} s ({sql['cpu_s']:.2f} s CPU)  {sql['examples']:>9,} "
                f"examples  peak RSS {sql['peak_rss_mb']:6.0f} MB  (SQL only)",
                flush=True,
            )
            rows.append((steps, sql, None, None, (home / "out_sql" / "train.jsonl").stat().st_size / 2**20))
            if not args.keep:
                shutil.rmtree(home, ignore_errors=True)
    finally:
        if not args.keep and not args.workdir:
            shutil.rmtree(work, ignore_errors=True)

    print("\nfilter + export to openai_chat (per-turn examples), each run in its own process")
    print(
        f"{'steps':>10} {'examples':>10} {'output MB':>9} {'sql s':>7} {'base s':>7} {'speed-up':>8} "
        f"{'sql CPU s':>9} {'base CPU s':>10} {'CPU ratio':>9} {'sql RSS MB':>10} {'base RSS MB':>11} {'same':>5}"
    )
    for steps, sql, base, same, out_mb in rows:
        if base is None:
            print(
                f"{steps:>10,} {sql['examples']:>10,} {out_mb:>9.0f} {sql['seconds']:>7.2f} {'-':>7} {'-':>8} "
                f"{sql['cpu_s']:>9.2f} {'-':>10} {'-':>9} {sql['peak_rss_mb']:>10.0f} {'-':>11} {'-':>5}"
            )
            continue
        print(
            f"{steps:>10,} {sql['examples']:>10,} {out_mb:>9.0f} {sql['seconds']:>7.2f} {base['seconds']:>7.2f} "
            f"{base['seconds'] / sql['seconds']:>7.1f}x {sql['cpu_s']:>9.2f} {base['cpu_s']:>10.2f} "
            f"{base['cpu_s'] / sql['cpu_s']:>8.1f}x {sql['peak_rss_mb']:>10.0f} {base['peak_rss_mb']:>11.0f} "
            f"{str(same):>5}"
        )
    rows.sort(key=lambda r: r[0])
    if len(rows) >= 2:
        print(
            "peak RSS of the SQL stage: "
            + " / ".join(f"{r[1]['peak_rss_mb']:.0f}" for r in rows)
            + " MB at "
            + " / ".join(f"{r[0] / 1e6:.1f}" for r in rows)
            + " M steps (baseline: "
            + " / ".join(f"{r[2]['peak_rss_mb']:.0f}" for r in rows if r[2])
            + " MB)"
        )


if __name__ == "__main__":
    main()
