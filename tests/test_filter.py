"""Filter stage: every criterion, the quality score, step-level modes, bad input, empty selections, stats-only,
manifest/resume, subsets and dedupe, chunking, MLflow and the CLI — against hand-built trace databases whose
right answers are known."""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from crafter_exp.config import PathsConfig, compose_config
from crafter_exp.filtering import quality_score
from crafter_exp.stages import filter as F
from crafter_exp.store.traces import TraceStore

sys.path.insert(0, str(Path(__file__).resolve().parent))
from filter_fixtures import build_store, make_episode, register_run  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
OBS_RE = re.compile(r"obs s(\d+) t(\d+)")


def crafter_episodes(run: str = "run-a"):
    """Seeds 0..6; achievements/reward/turns/model/cost chosen so every criterion has a known answer."""
    E = make_episode
    return [
        E(run, 0, turns=4),
        E(run, 1, turns=4, unlock={1: ["collect_wood"]}, success=False),
        E(run, 2, turns=4, unlock={0: ["collect_wood"], 2: ["place_table"]}, success=True),
        E(run, 3, turns=6, unlock={1: ["collect_wood"], 2: ["collect_sapling"], 4: ["place_table"]}, repeated=3),
        E(
            run,
            4,
            turns=8,
            unlock={0: ["collect_wood"], 1: ["place_table"], 3: ["make_wood_pickaxe"], 5: ["collect_stone"]},
            model="other",
            provider="openai",
            cost=0.5,
            prompt_tokens=1000,
            completion_tokens=200,
        ),
        E(run, 5, turns=4, unlock={1: ["collect_sapling"]}, termination="api_error", parse_fail=(3,)),
        E(
            run,
            6,
            turns=10,
            unlock={2: ["collect_wood"], 3: ["place_table"], 6: ["make_wood_pickaxe"]},
            model="other",
            provider="groq",
            cost=None,
            prompt_tokens=5000,
            completion_tokens=1000,
            parse_fail=(3,),
            invalid=2,
        ),
    ]


def alfworld_episodes(run: str = "alf-a"):
    E = make_episode
    return [
        E(run, 0, turns=5, unlock={4: ["won"]}, success=True, task_type="pick_and_place_simple", env="alfworld"),
        E(run, 1, turns=5, success=False, task_type="pick_and_place_simple", env="alfworld"),
        E(run, 2, turns=3, unlock={2: ["won"]}, success=True, task_type="look_at_obj_in_light", env="alfworld"),
    ]


@pytest.fixture(scope="module")
def home(tmp_path_factory) -> Path:
    home = tmp_path_factory.mktemp("filter_home")
    db = home / "data" / "traces.duckdb"
    build_store(db, crafter_episodes(), run_id="run-a", name="exp", created="2024-01-01")
    store = TraceStore(db)
    register_run(store, "alf-a", name="alfexp", env="alfworld", created="2024-01-02")
    store.append(alfworld_episodes())
    return home


@functools.lru_cache(maxsize=1)
def _base():
    return compose_config(["tracking.enabled=false"])


def cfg_for(home: Path, *overrides: str, name: str = "exp"):
    """The real conf/ composed once; per test only the filter group is re-merged (Hydra's compose costs ~0.5 s)."""
    base = _base()
    dotlist = [o.lstrip("+").removeprefix("filter.") for o in overrides]
    assert all(not o.startswith(("paths.", "name=")) for o in dotlist)
    fcfg = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(base.filter), OmegaConf.from_dotlist(dotlist)))
    paths = PathsConfig(
        home=str(home),
        db=f"{home}/data/traces.duckdb",
        datasets=f"{home}/data/datasets",
        checkpoints=f"{home}/data/checkpoints",
        reports=f"{home}/data/reports",
    )
    return dataclasses.replace(base, name=name, paths=paths, filter=fcfg)


def seeds(home: Path, *overrides: str, name: str = "exp") -> set[int]:
    cfg = cfg_for(home, *overrides, name=name)
    ctx = F.prepare(cfg)
    return set(F.select_episodes(ctx.store, cfg.filter, [s.run_id for s in ctx.sources])["seed"].astype(int))


@pytest.mark.parametrize(
    "overrides, expected",
    [
        ([], {0, 1, 2, 3, 4, 6}),
        (["filter.include_api_errors=true"], {0, 1, 2, 3, 4, 5, 6}),
        (["filter.min_achievements=2"], {2, 3, 4, 6}),
        (["filter.max_achievements=1"], {0, 1}),
        (["filter.min_achievements=3", "filter.exclude_achievements=[collect_sapling]"], {4, 6}),
        (
            [
                "filter.max_achievements=0",
                "filter.exclude_achievements=[collect_sapling]",
                "filter.include_api_errors=true",
            ],
            {0, 5},
        ),
        (["filter.min_reward=2"], {2, 3, 4, 6}),
        (["filter.max_reward=1"], {0, 1}),
        (["filter.min_reward=1", "filter.max_reward=2"], {1, 2}),
        (["filter.max_turns=4"], {0, 1, 2}),
        (["filter.achievement_types=[collect_wood,place_table]"], {2, 3, 4, 6}),
        (
            [
                "filter.achievement_types=[make_wood_pickaxe,collect_stone,collect_sapling]",
                "filter.min_achievement_types=2",
            ],
            {4},
        ),
        (
            [
                "filter.achievement_types=[make_wood_pickaxe,collect_stone,collect_sapling]",
                "filter.min_achievement_types=1",
            ],
            {3, 4, 6},
        ),
        (["filter.models=[other]"], {4, 6}),
        (["filter.providers=[groq,local]"], {0, 1, 2, 3, 6}),
        (["filter.max_cost=0.1"], {0, 1, 2, 3, 6}),
        (["filter.max_tokens=2000"], {0, 1, 2, 3, 4}),
        (["filter.success_only=true"], {2}),
        (["filter.limit=2", "filter.sort_by=achievements"], {3, 4}),
        (["filter.limit=1", "filter.sort_by=reward"], {4}),
        (["filter.limit=2", "filter.sort_by=seed"], {0, 1}),
        (["filter.limit=1", "filter.sort_by=efficiency"], {2}),
        (["filter.min_achievements=2", "filter.models=[other]", "filter.max_tokens=2000"], {4}),
    ],
)
def test_episode_criteria(home, overrides, expected):
    assert seeds(home, *overrides) == expected


@pytest.mark.parametrize(
    "overrides, expected",
    [
        (["filter.success_only=true"], {0, 2}),
        (["filter.task_types=[look_at_obj_in_light]"], {2}),
        (["filter.task_types=[pick_and_place_simple]", "filter.success_only=true"], {0}),
        (["filter.achievement_types=[won]"], {0, 2}),
    ],
)
def test_alfworld_criteria(home, overrides, expected):
    assert seeds(home, *overrides, name="alfexp") == expected


def test_quality_score_sql_matches_formula(home):
    weights = {"achievements": 1.0, "success": 5.0, "efficiency": 10.0, "invalid": 2.0, "repeated": 0.5}
    cfg = cfg_for(home, "filter.include_api_errors=true", "filter.exclude_achievements=[collect_sapling]")
    ctx = F.prepare(cfg)
    df = F.select_episodes(ctx.store, cfg.filter, ["run-a"])
    by_seed = {e.episode["seed"]: e.episode for e in crafter_episodes()}
    for row in df.itertuples():
        expected = quality_score(by_seed[row.seed], weights, exclude=["collect_sapling"])
        assert row.quality == pytest.approx(expected), row.seed
    # seed 6: 3 achievements + 10 * 3/10 - 2 * (2 invalid + 1 parse failure)/10
    assert df.set_index("seed").loc[6, "quality"] == pytest.approx(3 + 3.0 - 0.6)
    # seed 2 succeeded: +5, and is the best by quality
    assert seeds(home, "filter.limit=1", "filter.sort_by=quality") == {2}
    assert seeds(home, "filter.min_quality=5.5") == {2, 3, 4}


def exported_turns(path: Path) -> set[tuple[int, int]]:
    out = set()
    for line in (path / "train.jsonl").read_text().splitlines():
        msgs = json.loads(line)["messages"]
        last_user = [m for m in msgs if m["role"] == "user"][-1]["content"]
        seed, turn = OBS_RE.fullmatch(last_user).groups()
        out.add((int(seed), int(turn)))
    return out


@pytest.mark.parametrize(
    "overrides, expected",
    [
        (["filter.step_mode=achievement"], {(3, 1), (3, 2), (3, 4), (6, 2), (6, 6)}),
        (
            ["filter.step_mode=achievement", "filter.drop_unparsed=false"],
            {(3, 1), (3, 2), (3, 4), (6, 2), (6, 3), (6, 6)},
        ),
        # excluding collect_sapling: seed 3 counts 2 achievements, so min 2 (which also admits seed 2)
        (
            [
                "filter.step_mode=achievement",
                "filter.exclude_achievements=[collect_sapling]",
                "filter.min_achievements=2",
            ],
            {(2, 0), (2, 2), (3, 1), (3, 4), (6, 2), (6, 6)},
        ),
        (
            ["filter.step_mode=window", "filter.window=1"],
            {(3, 0), (3, 1), (3, 2), (3, 3), (3, 4), (6, 1), (6, 2), (6, 5), (6, 6)},
        ),
        (["filter.step_mode=window", "filter.window=0"], {(3, 1), (3, 2), (3, 4), (6, 2), (6, 6)}),
        (["filter.step_mode=reward", "filter.min_step_reward=1"], {(3, 1), (3, 2), (3, 4), (6, 2), (6, 6)}),
        (["filter.step_mode=all"], {(3, t) for t in range(6)} | {(6, t) for t in range(10) if t != 3}),
        # seed 6's unparsed turn 3 played the fallback `noop`: excluding that action drops it as drop_unparsed does
        (
            ["filter.step_mode=all", "filter.drop_unparsed=false", "filter.exclude_actions=[noop]"],
            {(3, t) for t in range(6)} | {(6, t) for t in range(10) if t != 3},
        ),
    ],
)
def test_step_modes(home, tmp_path, overrides, expected):
    # selects seeds 3 and 6 (place_table, >= 3 achievements, provider not openai); unlocks: seed 3 at turns
    # 1, 2 (sapling), 4; seed 6 at 2, 3, 6, its reply at turn 3 unparsed (dropped unless drop_unparsed=false)
    cfg = cfg_for(
        home,
        "filter.achievement_types=[place_table]",
        "filter.min_achievement_types=1",
        "filter.models=[teacher,other]",
        "filter.max_tokens=100000",
        "filter.providers=[local,groq]",
        "filter.min_achievements=3",
        *overrides,
        f"filter.output={tmp_path / 'out'}",
    )
    F.filter_and_export(cfg, progress=False)
    assert exported_turns(tmp_path / "out") == expected


@pytest.mark.parametrize(
    "overrides, fragment",
    [
        (["filter.achievement_types=[collect_wod]"], "unknown achievement(s) ['collect_wod']"),
        (["filter.exclude_achievements=[won]"], "unknown achievement(s) ['won']"),
        (["filter.min_achievements=5", "filter.max_achievements=2"], "min_achievements=5 > max_achievements=2"),
        (["filter.min_reward=3", "filter.max_reward=1"], "min_reward=3.0 > max_reward=1.0"),
        (["filter.min_achievement_types=2"], "min_achievement_types needs filter.achievement_types"),
        (["filter.achievement_types=[collect_wood]", "filter.min_achievement_types=2"], "min_achievement_types=2"),
        (["filter.achievement_types=[collect_wood]", "filter.exclude_achievements=[collect_wood]"], "both required"),
        (["filter.min_achievements=23"], "only 22 achievements can be counted"),
        (["filter.step_mode=turns"], "unknown filter.step_mode"),
        (["filter.format=alpaca"], "unknown filter.format"),
        (["filter.sort_by=luck"], "unknown filter.sort_by"),
        (["filter.format=single_turn", "filter.multi_turn=true"], "one example per turn"),
        (["filter.limit=0"], "filter.limit must be >= 1"),
        (["filter.val_fraction=1.0"], "val_fraction"),
        (["filter.runs=[nope]"], "no trace run or experiment name 'nope'"),
        (["+filter.quality_weights.speed=1"], "unknown filter.quality_weights"),
    ],
)
def test_bad_input_is_one_clear_line(home, tmp_path, overrides, fragment):
    cfg = cfg_for(home, *overrides, f"filter.output={tmp_path / 'out'}")
    with pytest.raises(ValueError) as err:
        F.filter_and_export(cfg, progress=False)
    assert fragment in str(err.value)
    assert "\n" not in str(err.value)
    assert not (tmp_path / "out").exists()


def test_mixed_envs_rejected(home):
    cfg = cfg_for(home, "filter.runs=[run-a,alf-a]")
    with pytest.raises(ValueError, match="several envs"):
        F.prepare(cfg)


def test_empty_selection_writes_nothing(home, tmp_path):
    out = tmp_path / "out"
    cfg = cfg_for(home, "filter.min_achievements=4", "filter.max_turns=4", f"filter.output={out}")
    with pytest.raises(F.EmptySelectionError) as err:
        F.filter_and_export(cfg, progress=False)
    msg = str(err.value)
    assert "min_achievements 1" in msg and "max_turns 4" in msg and "all together: 0" in msg
    assert not out.exists()
    # episodes pass, but no turn survives the step selection
    cfg = cfg_for(home, "filter.max_achievements=0", "filter.step_mode=achievement", f"filter.output={out}")
    with pytest.raises(F.EmptySelectionError, match="no turn left"):
        F.filter_and_export(cfg, progress=False)
    assert not out.exists()


def test_stats_only_prints_and_writes_nothing(home, tmp_path, capsys):
    db = home / "data" / "traces.duckdb"
    before = (db.stat().st_mtime_ns, sorted(p.name for p in home.rglob("*")))
    cfg = cfg_for(
        home,
        "filter.stats_only=true",
        "filter.min_achievements=2",
        "filter.max_turns=8",
        "filter.step_mode=achievement",
    )
    st = F.run(cfg)
    out = capsys.readouterr().out
    assert st.total_episodes == 7
    assert st.criteria == {"min_achievements": 4, "max_turns": 6, "no_api_errors": 6}
    assert st.passing_all == 3 and st.selected == 3  # seeds 2, 3, 4
    assert st.examples == 2 + 3 + 4  # unlocking turns of seeds 2, 3, 4
    assert "min_achievements" in out and "unlock rate per achievement" in out and "collect_wood" in out
    assert st.columns["selected"]["mean_achievements"] == pytest.approx(3.0)
    rates = st.unlock_rates.set_index("achievement")
    assert rates.loc["place_table", "selected"] == pytest.approx(1.0)
    assert rates.loc["place_table", "all"] == pytest.approx(4 / 7)
    assert (db.stat().st_mtime_ns, sorted(p.name for p in home.rglob("*"))) == before


def test_manifest_resume_and_new_episodes(tmp_path):
    home = tmp_path
    db = home / "data" / "traces.duckdb"
    build_store(db, crafter_episodes("r1")[:3], run_id="r1", name="exp", created="2024-01-01")
    register_run(TraceStore(db), "r0-old", name="exp", created="2023-01-01")  # older run: not the default
    cfg = cfg_for(home)
    first = F.filter_and_export(cfg, progress=False)
    manifest = json.loads((first.path / "manifest.json").read_text())
    assert first.path == home / "data/datasets/exp" / manifest["identity"][:8]  # crafter_exp/paths.py's rule
    assert manifest["source_runs"] == ["r1"] and manifest["env"] == "crafter"
    assert manifest["examples"] == 12 and manifest["episodes"] == 3 and manifest["files"] == ["train.jsonl"]
    assert manifest["prompt"]["template"] == "standard" and manifest["digest"] == first.digest
    assert len((first.path / "train.jsonl").read_text().splitlines()) == 12
    assert not list(first.path.glob("*.tmp"))
    again = F.filter_and_export(cfg, progress=False)
    assert again.skipped and again.digest == first.digest
    TraceStore(db).append([make_episode("r1", 9, turns=2)])
    third = F.filter_and_export(cfg, progress=False)
    assert not third.skipped and third.examples == 14 and third.digest != first.digest
    # switching format replaces the files and drops the stale ones
    fourth = F.filter_and_export(cfg_for(home, "filter.format=parquet", f"filter.output={third.path}"), progress=False)
    assert not (fourth.path / "train.jsonl").exists() and (fourth.path / "train.parquet").exists()


def test_runs_by_id_and_name(home, tmp_path):
    assert seeds(home, "filter.runs=[exp]", name="other") == {0, 1, 2, 3, 4, 6}
    assert seeds(home, "filter.runs=[alf-a]") == {0, 1, 2}
    cfg = cfg_for(home, name="nobody")
    with pytest.raises(ValueError, match="rollout run for name 'nobody'"):
        F.prepare(cfg)


def test_subset_dedupe_and_chunking_are_deterministic(tmp_path):
    db = tmp_path / "data" / "traces.duckdb"
    # seeds 0..3 share observations and replies (duplicates); 4..9 differ
    same = lambda s, t: f"obs dup t{t}"  # noqa: E731
    eps = [make_episode("r", s, turns=5, observation=same if s < 4 else None) for s in range(10)]
    build_store(db, eps, run_id="r", name="exp")
    out = lambda n: f"filter.output={tmp_path / n}"  # noqa: E731
    a = F.filter_and_export(cfg_for(tmp_path, "filter.max_examples=7", out("a")), progress=False)
    b = F.filter_and_export(
        cfg_for(tmp_path, "filter.max_examples=7", "filter.chunk_steps=3", out("b")), progress=False
    )
    c = F.filter_and_export(cfg_for(tmp_path, "filter.max_examples=7", "filter.seed=1", out("c")), progress=False)
    assert a.examples == b.examples == c.examples == 7
    assert (tmp_path / "a/train.jsonl").read_bytes() == (tmp_path / "b/train.jsonl").read_bytes()
    assert a.digest == b.digest != c.digest
    full_small = F.filter_and_export(cfg_for(tmp_path, "filter.chunk_steps=1", out("d")), progress=False)
    full_big = F.filter_and_export(cfg_for(tmp_path, out("e")), progress=False)
    assert full_small.digest == full_big.digest and full_big.examples == 50
    # dedupe: the replies differ per seed ("r{seed}.{turn}") -> strip them to make seeds 0..3 identical
    eps2 = [
        make_episode("r2", s, turns=5, observation=same if s < 4 else None, reply=lambda s, t: "<action>do</action>")
        for s in range(10)
    ]
    db2 = tmp_path / "p2" / "data" / "traces.duckdb"
    build_store(db2, eps2, run_id="r2", name="exp")
    d = F.filter_and_export(cfg_for(tmp_path / "p2", "filter.dedupe=true"), progress=False)
    assert d.examples == 50 - 15 and d.manifest["dedupe_dropped"] == 15
    lines = (d.path / "train.jsonl").read_text().splitlines()
    assert len(lines) == len(set(lines)) == 35


def test_multi_turn_subset_counts_episodes(home, tmp_path):
    cfg = cfg_for(home, "filter.multi_turn=true", "filter.max_examples=2", f"filter.output={tmp_path / 'o'}")
    r = F.filter_and_export(cfg, progress=False)
    assert r.examples == 2 and r.episodes == 2


@pytest.mark.slow
def test_cli_filter_tracks_in_mlflow_and_fails_cleanly(tmp_path):
    db = tmp_path / "data" / "traces.duckdb"
    build_store(db, crafter_episodes(), run_id="run-a", name="exp")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    base = [
        sys.executable,
        "-m",
        "crafter_exp",
        "stage=filter",
        "name=exp",
        f"paths.home={tmp_path}",
        f"tracking.uri=sqlite:///{tmp_path}/mlflow.db",
        "hydra.run.dir=" + str(tmp_path / "hy"),
    ]
    ok = subprocess.run(
        base + ["filter.min_achievements=2", "filter.step_mode=achievement"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert ok.returncode == 0, ok.stderr[-2000:]
    [manifest_file] = (tmp_path / "data/datasets/exp").glob("*/manifest.json")
    manifest = json.loads(manifest_file.read_text())
    assert manifest["examples"] == 2 + 3 + 4 + 2 and "wrote 11 openai_chat examples" in ok.stdout

    import mlflow

    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{tmp_path}/mlflow.db")
    run = client.get_run(manifest["mlflow_run_id"])
    assert run.data.params["filter.min_achievements"] == "2"
    assert run.data.metrics["examples"] == 11 and run.data.metrics["pass_min_achievements"] == 4
    inputs = run.inputs.dataset_inputs
    assert [d.dataset.digest for d in inputs] == [manifest["digest"]]

    bad = subprocess.run(
        base + ["filter.min_achievements=9", "filter.max_turns=4", "filter.output=" + str(tmp_path / "empty")],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert bad.returncode == 2
    assert bad.stderr.strip().count("\n") == 0 and "no example passes the filter" in bad.stderr
    assert not (tmp_path / "empty").exists()


def test_presets_compose_and_select(home, tmp_path):
    cfg = compose_config(
        [
            "filter=key_turns",
            "tracking.enabled=false",
            f"paths.home={home}",
            "name=exp",
            f"filter.output={tmp_path / 'k'}",
        ]
    )
    F.filter_and_export(cfg, progress=False)
    expected = (
        {(2, t) for t in range(3)}
        | {(3, t) for t in range(5)}
        | {(4, t) for t in range(6)}
        | {(6, t) for t in (0, 1, 2, 4, 5, 6)}
    )
    assert exported_turns(tmp_path / "k") == expected
    hq = compose_config(["filter=high_quality"]).filter
    assert hq.min_quality == 3.0 and hq.dedupe and hq.sort_by == "quality"
    assert seeds(home, "filter.min_quality=3.0") == {1, 2, 3, 4, 6}


def test_alfworld_export_uses_its_own_rules(home, tmp_path):
    from crafter_exp.envs import env_instructions

    r = F.filter_and_export(
        cfg_for(home, "filter.success_only=true", f"filter.output={tmp_path / 'a'}", name="alfexp"), progress=False
    )
    first = json.loads((r.path / "train.jsonl").read_text().splitlines()[0])
    assert first["messages"][0]["content"].startswith(env_instructions("alfworld").strip())
    assert r.manifest["env"] == "alfworld" and r.examples == 5 + 3


def test_rows_come_out_in_episode_and_turn_order():
    import numpy as np
    import pyarrow as pa

    from crafter_exp.export.writer import _in_order

    rng = np.random.default_rng(0)
    ep, turn = np.repeat(np.arange(5), 4), np.tile(np.arange(4), 5)
    perm = rng.permutation(20)
    table = pa.table(
        {"ep_order": ep[perm], "turn": turn[perm], "line": [f"{e}:{t}" for e, t in zip(ep[perm], turn[perm])]}
    )
    ordered = _in_order(table)
    assert ordered.column("line").to_pylist() == [f"{e}:{t}" for e, t in zip(ep, turn)]
    assert _in_order(ordered) is ordered  # already in order: no copy


def test_stats_only_reports_to_the_sweep_summary(home):
    """`crafter-exp stage=filter filter.stats_only=true` ends in report_job: its stats are the filter's headline."""
    from crafter_exp.sweep import stage_metrics

    st = F.run(
        cfg_for(
            home,
            "filter.stats_only=true",
            "filter.min_achievements=2",
            "filter.max_turns=8",
            "filter.step_mode=achievement",
        )
    )
    assert stage_metrics("filter", st) == {
        "filter": {"examples": 9.0, "episodes_passing": 3.0, "episodes_selected": 3.0}
    }


# --------------------------------------------------------------- the computation alone (no files, no MLflow)


def test_select_computes_the_export_without_writing(home, tmp_path):
    from crafter_exp.filtering.select import ReadSession

    cfg = cfg_for(
        home,
        "filter.min_achievements=2",
        "filter.max_turns=8",
        "filter.step_mode=achievement",
        "filter.format=parquet",
        "filter.val_fraction=0",
    )
    # tracking on, pointed at a store that must not appear: the computation never talks to MLflow
    cfg = dataclasses.replace(
        cfg, tracking=dataclasses.replace(cfg.tracking, enabled=True, uri=f"sqlite:///{tmp_path}/mlflow.db")
    )
    before = sorted(p.name for p in home.rglob("*"))
    with ReadSession(TraceStore(cfg.paths.db), cfg.filter.memory_limit) as db:
        ctx = F.prepare(cfg, db=db)
        chosen = F.select(cfg, ctx)
    assert sorted(chosen.plan.episodes["seed"].astype(int)) == [2, 3, 4]
    assert list(chosen.plan.episodes["kept"]) == [2, 3, 4]  # unlocking turns of seeds 2, 3, 4
    assert chosen.total_steps == 4 + 6 + 8
    assert chosen.stats.passing_all == 3 and chosen.stats.total_episodes == 7
    assert sorted(p.name for p in home.rglob("*")) == before and not list(tmp_path.iterdir())

    # the stage writes exactly what the computation selected
    result = F.filter_and_export(cfg, output=tmp_path / "out", progress=False)
    assert (result.examples, result.episodes) == (2 + 3 + 4, 3)
    assert result.manifest["turns_kept"] == F.turns_kept(chosen, _Written(result.examples, 0)) == 9


def test_select_of_nothing_raises_before_any_write(home, tmp_path):
    cfg = cfg_for(home, "filter.min_reward=99")
    ctx = F.prepare(cfg)
    with pytest.raises(F.EmptySelectionError, match="all together: 0"):
        F.select(cfg, ctx)


@dataclasses.dataclass
class _Written:
    examples: int
    dedupe_dropped: int
