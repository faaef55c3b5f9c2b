"""LQR-FLM through the runner (float32, as ``minirl train`` runs it; test_lqr_flm.py runs
in float64)."""

import numpy as np
import pytest

from minirl.model_based import lqr_flm

pytestmark = pytest.mark.timeout(300)


def test_the_run_summary_has_each_seeds_ilqr_reference_return(tmp_path):
    """``runner.train`` writes ``reference_returns`` (one per seed, iLQR on the true model
    from that seed's conditions) beside ``final_returns`` in summary.json."""
    import json

    from minirl import envs, runner

    env, env_params = envs.make("Pendulum-v1")
    config = lqr_flm.Config(total_steps=2 * 2 * 10, num_conditions=2, samples=2, horizon=10,
                            dual_iterations=8, reference_iterations=2)
    run = runner.train(lqr_flm, config, env, env_params, seeds=2, out_dir=str(tmp_path),
                       target_chunks=1, env_id="Pendulum-v1")
    with open(tmp_path / "summary.json") as f:
        summary = json.load(f)
    assert len(summary["reference_returns"]) == 2 == len(summary["final_returns"])
    np.testing.assert_allclose(summary["reference_returns"],
                               np.asarray(run.state.reference).mean(axis=-1), rtol=1e-5)
    assert all(-2000 < r <= 0 for r in summary["reference_returns"])
