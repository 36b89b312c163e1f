"""The SpeeD study's two files load the committed records unchanged and reproduce the committed
reports' numbers (benchmarks/results/speedup_{unet,dit}.json and .md): every speed-up per seed,
its mean +- std and the speed-up of the mean curves, to two decimals, at each method's rate and
(DiT) at the common rate; and the final scores behind them."""

import json
import re
from pathlib import Path

import pytest

from speed.study import plan, report, summary

REPO = Path(__file__).resolve().parents[2]
RESULTS = REPO / "benchmarks" / "results"


def two_decimals(value):
    return None if value is None else round(value, 2)


def committed_speedups(speedups: dict) -> dict:
    return {
        method: {
            "per_seed": {int(k): two_decimals(v) for k, v in s["per_seed"].items()},
            "mean": two_decimals(s["mean"]),
            "std": two_decimals(s["std"]),
            "of_mean_curves": two_decimals(s["of_mean_curves"]),
            "reach": s["seeds_reaching_target"],
        }
        for method, s in speedups.items()
    }


def new_speedups(speedups: dict, methods) -> dict:
    return {m: committed_speedups({m: speedups[m]})[m] for m in methods}


@pytest.fixture(scope="module", params=["unet", "dit"])
def reproduced(request):
    backbone = request.param
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(REPO)
        study, _, runs, records = plan.open_study(REPO / "studies" / f"speed_{backbone}.yaml")
        result = summary.summarize(study, runs, records)
        table = report.markdown(study, result, records, "cmd")
    committed = json.loads((RESULTS / f"speedup_{backbone}.json").read_text())
    md = (RESULTS / f"speedup_{backbone}.md").read_text()
    return backbone, records, result, table, committed, md


def test_the_records_load_unchanged_every_one_a_run_of_the_study(reproduced):
    backbone, records, _, _, committed, _ = reproduced
    assert len(records) == {"unet": 22, "dit": 14}[backbone]
    assert set(records) == set(committed["runs"])
    for name, record in records.items():
        assert record == committed["runs"][name]


def test_the_speedups_are_the_committed_ones(reproduced):
    _, _, result, table, committed, md = reproduced
    old = committed_speedups(committed["summary"]["speedup"])
    assert new_speedups(result["speedup"], old) == old
    for method in old:  # the committed table's cells, as the new table writes them
        row = next(line for line in md.splitlines() if line.startswith(f"| {method} | seed"))
        per_seed, mean = row.split(" | ")[1:3]
        assert f"| {method} | {per_seed} | {mean} |" in table
    shared = committed["summary"]["shared_rate"]
    if shared:
        old = committed_speedups(shared["speedup"])
        assert new_speedups(result["shared"]["speedup"], old) == old
        assert result["shared"]["setting"] == {"optimizer.lr": shared["lr"]}


def test_the_chosen_rates_and_final_scores_are_the_committed_ones(reproduced):
    _, _, result, _, committed, _ = reproduced
    old = committed["summary"]
    for method, lr in old["chosen_lr"].items():
        assert result["chosen"][method] == {"optimizer.lr": lr}
    for method, m in old["methods"].items():
        new = result["methods"][method]
        assert new["setting"] == {"optimizer.lr": m["lr"]} and new["seeds"] == m["seeds"]
        assert list(new["final"]["domain"]["fid"]) == pytest.approx(m["final_domain_fid"])
        assert list(new["final"]["inception"]["fid"]) == pytest.approx(m["final_inception_fid"])
        means = new["curves"]["curve"]["fid"]["mean"]
        assert {str(s): v for s, v in means.items()} == pytest.approx(m["fid_mean"])
    probe = old["noise_probe"]
    assert result["noise_probe"]["values"] == pytest.approx(probe["fids"])
    assert re.search(rf"std {probe['std']:.2f}\.", reproduced[3])
