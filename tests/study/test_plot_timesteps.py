"""speed/study/plot_timesteps.py: the p_t / w_t / loss-by-t plots and their command line."""

import json
from pathlib import Path

import numpy as np
import pytest

from speed.diffusion import create_diffusion
from speed.flow import create_interpolant
from speed.study import plot_timesteps

PNG = b"\x89PNG\r\n\x1a\n"


def test_plots_are_written(tmp_path):
    sampler = create_diffusion("", faster=True).timestep_sampler
    csv_path = tmp_path / "loss.csv"
    csv_path.write_text("t,loss\n50,0.3\n500,0.1\n950,0.02\n")
    paths = plot_timesteps.plot_timestep_distributions(sampler, tmp_path / "plots", csv_path)
    assert [p.name for p in paths] == ["p_t.png", "w_t.png", "loss_by_t.png"]
    for path in paths:
        assert path.read_bytes()[:8] == PNG and path.stat().st_size > 1000


def test_loss_by_t_reads_training_logs(tmp_path):
    log = tmp_path / "log.jsonl"
    records = [{"loss_t/000-099": 0.2, "step": 1}, {"loss_t/000-099": 0.4, "loss_t/900-999": 0.1}]
    log.write_text("\n".join(json.dumps(r) for r in records))
    t, loss = plot_timesteps.read_loss_by_t(log)
    np.testing.assert_allclose(t, [49.5, 949.5])
    np.testing.assert_allclose(loss, [0.3, 0.1])
    (tmp_path / "bad.json").write_text("{}")
    with pytest.raises(ValueError, match="loss_t"):
        plot_timesteps.read_loss_by_t(tmp_path / "bad.json")


def test_command_line_plots_a_config_and_refuses_a_bad_value(tmp_path, capsys, demo_config):
    plot_timesteps.main(["-c", demo_config, "--out", str(tmp_path), "diffusion.faster=true"])
    out = capsys.readouterr().out
    assert "sampling=speed (k=5" in out and (tmp_path / "p_t.png").read_bytes()[:8] == PNG
    with pytest.raises(SystemExit, match="diffusion.lam=5 must lie in"):
        plot_timesteps.main(["-c", demo_config, "--out", str(tmp_path), "diffusion.lam=5"])


def test_a_flow_matching_config_is_plotted_on_its_own_t_axis(tmp_path, capsys):
    sampler = create_interpolant(faster=True).timestep_sampler
    paths = plot_timesteps.plot_timestep_distributions(sampler, tmp_path / "plots")
    assert [p.name for p in paths] == ["p_t.png", "w_t.png"]
    assert all(p.read_bytes()[:8] == PNG for p in paths)
    with pytest.raises(ValueError, match="leave --loss out"):
        plot_timesteps.plot_timestep_distributions(sampler, tmp_path, tmp_path / "loss.csv")
    config = str(Path(__file__).resolve().parents[2] / "configs/image/animals/flow/base.yaml")
    plot_timesteps.main(["-c", config, "--out", str(tmp_path / "cli"), "diffusion.faster=true"])
    assert "t in [0, 1]" in capsys.readouterr().out
    assert (tmp_path / "cli" / "w_t.png").read_bytes()[:8] == PNG
