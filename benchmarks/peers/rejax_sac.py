"""rejax SAC on Pendulum-v1 with the benchmark's shared hyperparameters; prints one JSON line.

Runs inside benchmarks/.venv-rejax (rejax needs gymnax < 1), started by bench_sac.py:

    python rejax_sac.py --config '<json>' --seeds 4

Seeds are ``jax.vmap`` of ``SAC.train`` over keys, one compiled program, as in rejax's docs.
The compile is done first (``.lower().compile()``) and excluded from the timed run.
rejax's periodic evaluation is replaced by a no-op during training (it would run 128
evaluation episodes inside the timed program); the return of the deterministic policy
(tanh of the mean, scaled to the box) is measured afterwards.
"""

import argparse
import json
import sys
import time
from importlib import metadata


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--config", required=True, help="shared hyperparameters as JSON")
    parser.add_argument("--seeds", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--eval-episodes", type=int, default=10)
    args = parser.parse_args()
    hp = json.loads(args.config)

    import jax
    import jax.numpy as jnp
    from rejax import SAC
    from rejax.evaluate import evaluate

    if hp["alpha_init"] != 1.0 or hp["target_entropy_per_dim"] != -1.0:
        raise SystemExit("rejax's SAC starts at α = 1 with target entropy −|A|; no other")
    algo = SAC.create(
        env=hp["env_id"],
        total_timesteps=hp["total_steps"],
        eval_freq=hp["total_steps"],  # one training block, no evaluation inside it
        skip_initial_evaluation=True,
        num_envs=hp["num_envs"],
        num_epochs=hp["gradient_steps"],  # updates per env step
        batch_size=hp["batch_size"],
        buffer_size=hp["buffer_size"],
        fill_buffer=hp["learning_starts"],  # updates once global_step > fill_buffer
        learning_rate=hp["learning_rate"],
        gamma=hp["gamma"],
        num_critics=hp["num_critics"],
        target_update_freq=1,  # Polyak update after every env step (= every update here)
        polyak=1.0 - hp["tau"],  # rejax: θ̄ ← polyak·θ̄ + (1 − polyak)·θ
        hidden_layer_sizes=tuple(hp["hidden"]),
        agent_kwargs={"activation": hp["activation"]},
    )
    algo = algo.replace(eval_callback=lambda algo, ts, rng: ())

    keys = jax.random.split(jax.random.PRNGKey(args.seed), args.seeds)
    train = jax.jit(jax.vmap(algo.train))
    start = time.perf_counter()
    compiled = train.lower(keys).compile()
    compile_s = time.perf_counter() - start

    start = time.perf_counter()
    ts, _ = compiled(keys)
    jax.block_until_ready(ts)
    run_s = time.perf_counter() - start
    steps = int(jnp.sum(ts.global_step))

    actor = algo.actor

    def deterministic_returns(params, key):
        def act(obs, rng):
            mean = actor.apply(params, obs[None], method="_action_dist").mean()[0]
            return actor.action_loc + jnp.tanh(mean) * actor.action_scale

        max_steps = algo.env_params.max_steps_in_episode
        _, returns = evaluate(act, key, algo.env, algo.env_params, args.eval_episodes, max_steps)
        return returns

    eval_keys = jax.random.split(jax.random.PRNGKey(args.seed + 1), args.seeds)
    returns = jax.jit(jax.vmap(deterministic_returns))(ts.actor_ts.params, eval_keys)

    result = {
        "library": "rejax",
        "seeds": args.seeds,
        "parallelism": f"jax.vmap over {args.seeds} keys, one program",
        "env_steps": steps,
        "compile_s": compile_s,
        "run_s": run_s,
        "steps_per_s": steps / run_s,
        "final_return_per_seed": [float(r) for r in jnp.mean(returns, axis=1)],
        "versions": {
            name: metadata.version(name) for name in ("rejax", "gymnax", "jax", "flax", "optax")
        },
        "python": sys.version.split()[0],
    }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
