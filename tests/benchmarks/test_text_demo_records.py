"""The text demo benchmark keeps what earlier commands recorded: a run it does not redo stays in
its results file with its own command, machine and date."""

import json

from text_demo import merged, recorded

PAIRS = {"seen": {"pair_accuracy": 0.1}, "held_out": {"pair_accuracy": 0.0}}
HERE = {"command": "python benchmarks/text_demo.py --methods speed_released", "machine": "box B",
        "date": "2026-12-06 22:25 UTC"}  # fmt: skip


def test_an_earlier_file_is_read_with_int_keys_and_its_own_provenance(tmp_path):
    path = tmp_path / "text_demo.json"
    run = {"train_seconds": 10.0, "scores": {"600": PAIRS}}
    path.write_text(json.dumps({"command": "old", "machine": "box A", "date": "d",
                                "results": {"baseline": {"0": run}}}))  # fmt: skip
    assert recorded(path) == {"baseline": {0: {
        "train_seconds": 10.0, "scores": {600: PAIRS}, "command": "old", "machine": "box A",
        "date": "d"}}}  # fmt: skip
    assert recorded(tmp_path / "absent.json") == {}


def test_new_runs_join_the_recorded_ones_and_a_report_keeps_their_provenance():
    old = {
        "baseline": {0: {"scores": {600: PAIRS}, "command": "old", "machine": "A", "date": "d"}},
        "speed_released": {0: {"scores": {}, "command": "older", "machine": "A", "date": "d"}},
    }
    new = {"speed_released": {0: {"scores": {1200: PAIRS}}, 1: {"scores": {1200: PAIRS}}}}
    out = merged(old, new, HERE, report=False)
    assert out["baseline"] == old["baseline"]  # not redone: kept as recorded
    assert out["speed_released"][0] == {"scores": {1200: PAIRS}, **HERE}  # redone: replaced
    assert out["speed_released"][1]["machine"] == "box B"
    rebuilt = merged(old, new, HERE, report=True)  # --report made nothing
    assert rebuilt["speed_released"][0]["command"] == "older"
    assert rebuilt["speed_released"][1]["command"] == HERE["command"]  # found only in runs/
