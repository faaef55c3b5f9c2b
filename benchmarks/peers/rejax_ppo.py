"""rejax PPO on CartPole-v1 with the benchmark's shared hyperparameters; prints one JSON line.

Runs inside benchmarks/.venv-rejax (rejax needs gymnax < 1), started by bench_ppo.py:

    python rejax_ppo.py --config '<json>' --seeds 16

Seeds are ``jax.vmap`` of ``PPO.train`` over keys, one compiled program, as in rejax's docs.
The compile is done first (``.lower().compile()``) and excluded from the timed run.
rejax's periodic evaluation is replaced by a no-op during training; the return of the
trained (sampling) policy is measured afterwards.
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
    parser.add_argument("--eval-episodes", type=int, default=20)
    args = parser.parse_args()
    hp = json.loads(args.config)

    import jax
    import jax.numpy as jnp
    from rejax import PPO
    from rejax.evaluate import evaluate

    algo = PPO.create(
        env=hp["env_id"],
        total_timesteps=hp["total_steps"],
        eval_freq=hp["total_steps"],  # one training block, no evaluation inside it
        skip_initial_evaluation=True,
        num_envs=hp["num_envs"],
        num_steps=hp["rollout_steps"],
        num_epochs=hp["num_epochs"],
        num_minibatches=hp["num_minibatches"],
        learning_rate=hp["learning_rate"],
        max_grad_norm=hp["max_grad_norm"],
        gamma=hp["gamma"],
        gae_lambda=hp["lam"],
        clip_eps=hp["clip_epsilon"],
        vf_coef=hp["value_coef"],
        ent_coef=hp["entropy_coef"],
        agent_kwargs={"activation": hp["activation"], "hidden_layer_sizes": hp["hidden"]},
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

    def policy_returns(ts, key):
        max_steps = algo.env_params.max_steps_in_episode
        _, returns = evaluate(algo.make_act(ts), key, algo.env, algo.env_params,
                              args.eval_episodes, max_steps)
        return returns

    eval_keys = jax.random.split(jax.random.PRNGKey(args.seed + 1), args.seeds)
    returns = jax.jit(jax.vmap(policy_returns))(ts, eval_keys)

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
