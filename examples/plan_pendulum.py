"""Planning with known dynamics, one jitted program per planner.

    python examples/plan_pendulum.py

1. iLQR (receding horizon) on Pendulum-v1's differentiable transitions swings the pendulum
   up from hanging at rest.
2. CEM-MPC with the true Pendulum model, 4 seeds vmapped.
3. MCTS (UCT, 64 simulations per step) with CartPole-v1 as its model, 4 seeds vmapped.
"""

import jax
import jax.numpy as jnp
import numpy as np

from minirl import envs, runner
from minirl.planning import mpc

# 1. iLQR swing-up from θ = π (down), θ̇ = 0
env, params = envs.make("Pendulum-v1")
_, state = env.reset(jax.random.PRNGKey(0), params)
state = state.replace(theta=jnp.array(jnp.pi), theta_dot=jnp.array(0.0))
planner = mpc.make_planner("ilqr", env, params, {"horizon": 40, "max_iterations": 10})
result = jax.jit(lambda key: mpc.mpc(key, env, params, planner, 200, env_state=state))(
    jax.random.PRNGKey(0)
)
theta = float(result.final_state.theta)
print(
    f"iLQR swing-up: return {float(result.episode_return):.1f}, final angle from upright "
    f"{abs((theta + np.pi) % (2 * np.pi) - np.pi):.2e} rad"
)

# 2. CEM-MPC and 3. MCTS, through the same entry point as `minirl plan`
for name, env_id in (("cem", "Pendulum-v1"), ("mcts", "CartPole-v1")):
    out = runner.plan(name, *envs.make(env_id), seeds=4)
    print(
        f"{name} on {env_id}: returns {np.round(out['final_returns'], 1)}, median "
        f"{out['median_final_return']:.1f} ({out['wall_seconds']:.1f} s with compilation)"
    )
