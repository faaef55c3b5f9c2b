"""Stable-Baselines3 SAC (CPU PyTorch) on Pendulum-v1 with the benchmark's shared
hyperparameters; prints one JSON line. sbx_sac.py runs sbx's SAC through the same code.

Runs inside benchmarks/.venv-sb3, started by bench_sac.py:

    python sb3_sac.py --config '<json>' --seeds 4 --threads 1

SB3 has no way to batch seeds inside one model, so ``--seeds N`` runs N independent
training processes *at the same time* (multiprocessing, spawn), each with
``torch.set_num_threads(--threads)``. They build their models, wait at a barrier, then
learn; the aggregate throughput is all env steps divided by the wall time from the first
``learn`` start to the last ``learn`` end (model construction and evaluation excluded).

For sbx (JAX), each process first runs its model for a few steps past a lowered
``learning_starts`` (before the barrier), so that sbx's jitted update and action programs
are compiled, then restores the model's initial train states and empties its buffer; the
timed ``learn`` starts afresh (env reset, step count 0). That warm-up time is reported as
the compile time.
"""

import argparse
import json
import sys
import time
from importlib import metadata
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import concurrent_seeds  # noqa: E402  (the launcher shared with the other peer scripts)

WARMUP_STEPS = 20  # env steps of the sbx warm-up (updates from step 11 on)


def make_model(library: str, hp: dict, seed: int, **overrides):
    """An SB3 or sbx SAC with the shared hyperparameters (``overrides`` replace them)."""
    if library == "sbx":
        import flax.linen as nn
        from sbx import SAC

        activation = {"relu": nn.relu, "tanh": nn.tanh}[hp["activation"]]
    else:
        import torch
        from stable_baselines3 import SAC

        activation = {"relu": torch.nn.ReLU, "tanh": torch.nn.Tanh}[hp["activation"]]
    if hp["target_entropy_per_dim"] != -1.0:
        raise SystemExit("this runner maps only target_entropy_per_dim = -1 ('auto')")
    kwargs = dict(
        learning_rate=hp["learning_rate"],
        buffer_size=hp["buffer_size"],
        learning_starts=hp["learning_starts"],
        batch_size=hp["batch_size"],
        tau=hp["tau"],
        gamma=hp["gamma"],
        train_freq=hp["rollout_steps"],
        gradient_steps=hp["gradient_steps"],
        ent_coef=f"auto_{hp['alpha_init']}",  # learned temperature, initial α
        target_entropy="auto",  # −|A|
        policy_kwargs={
            "net_arch": list(hp["hidden"]),  # actor and critics
            "activation_fn": activation,
            "n_critics": hp["num_critics"],
        },
        device="cpu",
        seed=seed,
        verbose=0,
    )
    if library != "sbx":
        kwargs["target_update_interval"] = 1  # Polyak update after every gradient step
    kwargs.update(overrides)
    return SAC("MlpPolicy", hp["env_id"], **kwargs)


def warm_up(model, hp: dict) -> float:
    """Compile sbx's programs on ``model`` itself, then put it back as it was built; returns
    the seconds taken. sbx's jitted functions take the train states (whose ``apply_fn`` is
    static), so a throwaway model of the same shapes would not share the compiled programs;
    acting before and after the first update are two programs, so the warm-up runs past
    one update."""
    start = time.time()
    policy = model.policy
    saved = (policy.actor_state, policy.qf_state, model.ent_coef_state, model.key,
             policy.noise_key)
    model.learning_starts = WARMUP_STEPS // 2
    model.learn(total_timesteps=WARMUP_STEPS)
    (policy.actor_state, policy.qf_state, model.ent_coef_state, model.key,
     policy.noise_key) = saved
    model.learning_starts = hp["learning_starts"]
    model.replay_buffer.reset()
    model._n_updates = 0
    return time.time() - start  # the timed learn() resets the env and num_timesteps


def worker(library: str, hp: dict, seed: int, threads: int, eval_episodes: int, barrier,
           queue) -> None:
    try:
        import torch

        torch.set_num_threads(threads)
        import gymnasium as gym
        from stable_baselines3.common.evaluation import evaluate_policy
        from stable_baselines3.common.monitor import Monitor

        model = make_model(library, hp, seed)
        compile_s = warm_up(model, hp) if library == "sbx" else 0.0
        barrier.wait(timeout=900)
        start = time.time()
        model.learn(total_timesteps=hp["total_steps"])
        end = time.time()
        returns, _ = evaluate_policy(
            model,
            Monitor(gym.make(hp["env_id"])),
            n_eval_episodes=eval_episodes,
            deterministic=True,
            return_episode_rewards=True,
        )
        queue.put({
            "seed": seed,
            "start": start,
            "end": end,
            "compile_s": compile_s,
            "env_steps": int(model.num_timesteps),
            "final_return": float(sum(returns) / len(returns)),
        })
    except BaseException as error:  # report, so the parent never waits forever
        queue.put({"seed": seed, "error": f"{type(error).__name__}: {error}"})
        barrier.abort()


def main(library: str = "sb3") -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--config", required=True, help="shared hyperparameters as JSON")
    parser.add_argument("--seeds", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="torch threads per process")
    parser.add_argument("--eval-episodes", type=int, default=10)
    args = parser.parse_args()
    hp = json.loads(args.config)
    if hp["num_envs"] != 1:
        raise SystemExit(f"this runner drives {library} with one environment per process")

    outcome = concurrent_seeds.run(
        worker,
        lambda i: (library, hp, args.seed + i, args.threads, args.eval_episodes),
        args.seeds,
        library,
    )
    if outcome is None:
        return 1
    results, wall, steps = outcome

    import torch

    threads = f"torch.set_num_threads({args.threads})"
    if library == "sbx":
        threads += ", JAX's default CPU threads"
    versions = {
        "stable-baselines3": metadata.version("stable-baselines3"),
        "torch": torch.__version__,
        "gymnasium": metadata.version("gymnasium"),
    }
    if library == "sbx":
        versions = {"sbx-rl": metadata.version("sbx-rl"), "jax": metadata.version("jax"),
                    "flax": metadata.version("flax"), **versions}
    result = {
        "library": library,
        "seeds": args.seeds,
        "parallelism": (
            f"{args.seeds} concurrent processes, {threads} each"
            if args.seeds > 1
            else f"1 process, {threads}"
        ),
        "torch_threads": args.threads,
        "env_steps": steps,
        "compile_s": max(r["compile_s"] for r in results),
        "run_s": wall,
        "steps_per_s": steps / wall,
        "per_process_steps_per_s": [r["env_steps"] / (r["end"] - r["start"]) for r in results],
        "final_return_per_seed": [r["final_return"] for r in results],
        "versions": versions,
        "python": sys.version.split()[0],
    }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
