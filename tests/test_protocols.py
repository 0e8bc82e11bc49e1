"""Evaluation protocols (conf/protocol/): the Crafter paper's score formula on a hand-computed case, the presets
composing into held-out play, and the protocol recorded with eval runs (trace store, MLflow) and stated in
compare reports."""

from __future__ import annotations

import json
import math

import mlflow
import pandas as pd
import pytest
from conftest import project_overrides
from episode_factory import CRAFTER_ACHIEVEMENTS, episode
from test_cli import cli

from crafter_exp import metrics as M
from crafter_exp.config import compose_config
from crafter_exp.errors import UserError
from crafter_exp.stages.evaluate import check_eval_config, eval_episodes, eval_seeds, protocol_env_config


def test_crafter_score_matches_danijar_analysis_by_hand():
    # danijar/crafter analysis/common.py: percent_i = 100 * mean(count_i >= 1) over a run's episodes, then
    # score = exp(nanmean_i(log(1 + percent_i))) - 1 over all 22 achievements.
    # 4 episodes: collect_wood in 4 (100 %), place_table in 2 (50 %), collect_drink in 1 (25 %), the other 19 in 0:
    # exp((ln 101 + ln 51 + ln 26 + 19 ln 1) / 22) - 1 = exp(11.80505 / 22) - 1 = exp(0.536593) - 1 = 0.710170 %.
    run = [
        episode("r", 0, ["collect_wood", "place_table", "collect_drink"]),
        episode("r", 1, ["collect_wood", "place_table"]),
        episode("r", 2, ["collect_wood"]),
        episode("r", 3, ["collect_wood"]),
    ]
    values = M.compute(pd.DataFrame(run), CRAFTER_ACHIEVEMENTS)
    assert values["crafter_score"] == pytest.approx(0.710170, abs=1e-6)
    # BALROG: progression = unlocked / 22 per episode, averaged: (3 + 2 + 1 + 1) / 4 / 22 = 7.9545 %
    assert values["progression"] == pytest.approx(100 * 7 / 88, abs=1e-9)
    # the bootstrap's point value is the same statistic
    boot = M.bootstrap(pd.DataFrame(run), CRAFTER_ACHIEVEMENTS, resamples=50).set_index("metric")
    assert boot.loc["crafter_score", "value"] == pytest.approx(0.710170, abs=1e-6)
    # the offset: one achievement at 100 % alone gives exp(ln(101) / 22) - 1, not 0 (a plain geometric mean)
    one = M.compute(pd.DataFrame([episode("r", 0, ["collect_wood"])]), CRAFTER_ACHIEVEMENTS)
    assert one["crafter_score"] == pytest.approx(math.exp(math.log(101) / 22) - 1, rel=1e-12)


@pytest.mark.parametrize(
    "name, episodes, max_steps, length",
    [
        ("ours", 20, 300, 10000),  # today's default, unchanged
        ("crafter_paper", 20, 10000, 10000),  # the paper fixes no episode count: eval.episodes
        ("balrog", 10, 2000, 10000),  # BALROG config.yaml: 10 Crafter episodes, max_episode_steps 2000
    ],
)
def test_protocol_presets_compose(name, episodes, max_steps, length):
    cfg = compose_config([f"protocol={name}"])
    assert cfg.protocol.name == name
    check_eval_config(cfg)
    assert eval_episodes(cfg) == episodes
    assert eval_seeds(cfg)[0] == cfg.eval.seed and len(eval_seeds(cfg)) == episodes
    env = protocol_env_config(cfg)
    assert (env.max_steps, env.length, env.difficulty) == (max_steps, length, "normal")
    assert cfg.env.max_steps == 300  # training rollouts keep the env's own cap
    # CLI overrides compose on top of a preset
    cfg = compose_config([f"protocol={name}", "protocol.episodes=3", "++protocol.env.area=32"])
    assert eval_episodes(cfg) == 3 and protocol_env_config(cfg).area == 32


def test_protocol_bad_input_is_one_line():
    cfg = compose_config(["env=alfworld", "protocol=balrog"])
    with pytest.raises(UserError, match="protocol 'balrog' is defined for env crafter"):
        check_eval_config(cfg)
    cfg = compose_config(["protocol=balrog", "+protocol.env.maxsteps=5"])
    with pytest.raises(UserError, match="unknown env field"):
        check_eval_config(cfg)
    proc = cli("stage=eval", "protocol=crafter_paper", "env=alfworld", "tracking.enabled=false")
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1].startswith("crafter-exp: error: protocol 'crafter_paper' is defined")


@pytest.mark.slow
def test_protocol_recorded_in_store_mlflow_and_report(project):
    from crafter_exp.stages.compare import compare
    from crafter_exp.stages.evaluate import evaluate
    from crafter_exp.store.traces import TraceStore

    base = project_overrides(project) + [
        "eval.episodes=2",
        "compare.bootstrap=100",
        "compare.permutations=99",
        "compare.figures=false",
    ]
    balrog = compose_config(base + ["protocol=balrog", "protocol.episodes=2"])
    random_b = evaluate(balrog, compose_config(base + ["model=random"]).model)
    scripted_b = evaluate(balrog)
    ours = compose_config(base)
    random_o = evaluate(ours, compose_config(base + ["model=random"]).model)
    assert len({random_b.run_id, scripted_b.run_id, random_o.run_id}) == 3

    store = TraceStore(ours.paths.db)
    config = json.loads(store.get_run(random_b.run_id)["config"])
    assert config["protocol"]["name"] == "balrog" and config["env"]["max_steps"] == 2000
    assert json.loads(store.get_run(random_o.run_id)["config"])["protocol"]["name"] == "ours"
    played = store.episodes([scripted_b.run_id])
    assert len(played) == 2 and played["steps"].max() <= 2000

    mlflow.set_tracking_uri(ours.tracking.uri)
    client = mlflow.MlflowClient()
    run = client.get_run(random_b.mlflow_run_id)
    assert run.data.tags["protocol"] == "balrog"
    assert run.data.params["protocol.name"] == "balrog" and run.data.params["protocol.env.max_steps"] == "2000"

    same = compare(ours, runs=[random_b.run_id, scripted_b.run_id])
    report = same.files["markdown"].read_text()
    assert "**Protocol: balrog** — BALROG" in report and "Published tables under it report: progression." in report
    assert "random: 2 episodes, cap 2000 steps" in report
    assert client.get_run(same.mlflow_run_id).data.tags["protocol"] == "balrog"
    assert json.loads(same.files["manifest"].read_text())["protocol"] == "balrog"

    mixed = compare(ours, runs=[random_o.run_id, random_b.run_id], labels=["ours", "balrog"])
    report = mixed.files["markdown"].read_text()
    assert "**Protocols differ between runs** (ours: ours, balrog: balrog)" in report
    assert client.get_run(mixed.mlflow_run_id).data.tags["protocol"] == "mixed"
    assert client.get_run(mixed.mlflow_run_id).data.params["protocol.runs.balrog"] == "balrog"
