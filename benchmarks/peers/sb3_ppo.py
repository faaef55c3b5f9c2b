"""Stable-Baselines3 PPO (CPU PyTorch) on CartPole-v1 with the benchmark's shared
hyperparameters; prints one JSON line.

Runs inside benchmarks/.venv-sb3, started by bench_ppo.py:

    python sb3_ppo.py --config '<json>' --seeds 4 --threads 1

SB3 has no way to batch seeds inside one model, so ``--seeds N`` runs N independent
training processes *at the same time* (multiprocessing, spawn), each with
``torch.set_num_threads(--threads)``. They build their models, wait at a barrier, then
learn; the aggregate throughput is all env steps divided by the wall time from the first
``learn`` start to the last ``learn`` end (model construction and evaluation excluded).
"""

import argparse
import json
import sys
import time
from importlib import metadata
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import concurrent_seeds  # noqa: E402  (the launcher shared with the other peer scripts)


def worker(hp: dict, seed: int, threads: int, eval_episodes: int, barrier, queue) -> None:
    try:
        import torch

        torch.set_num_threads(threads)
        import gymnasium as gym
        from stable_baselines3 import PPO
        from stable_baselines3.common.env_util import make_vec_env
        from stable_baselines3.common.evaluation import evaluate_policy
        from stable_baselines3.common.monitor import Monitor

        activation = {"relu": torch.nn.ReLU, "tanh": torch.nn.Tanh}[hp["activation"]]
        n_envs = hp["num_envs"]
        env = make_vec_env(hp["env_id"], n_envs=n_envs, seed=seed)  # DummyVecEnv
        model = PPO(
            "MlpPolicy",
            env,
            learning_rate=hp["learning_rate"],
            n_steps=hp["rollout_steps"],
            batch_size=n_envs * hp["rollout_steps"] // hp["num_minibatches"],
            n_epochs=hp["num_epochs"],
            gamma=hp["gamma"],
            gae_lambda=hp["lam"],
            clip_range=hp["clip_epsilon"],
            ent_coef=hp["entropy_coef"],
            vf_coef=hp["value_coef"],
            max_grad_norm=hp["max_grad_norm"],
            policy_kwargs={
                "net_arch": {"pi": list(hp["hidden"]), "vf": list(hp["hidden"])},
                "activation_fn": activation,
            },
            device="cpu",
            seed=seed,
            verbose=0,
        )
        barrier.wait(timeout=600)
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
            "env_steps": int(model.num_timesteps),
            "final_return": float(sum(returns) / len(returns)),
            "torch_threads": torch.get_num_threads(),
        })
    except BaseException as error:  # report, so the parent never waits forever
        queue.put({"seed": seed, "error": f"{type(error).__name__}: {error}"})
        barrier.abort()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--config", required=True, help="shared hyperparameters as JSON")
    parser.add_argument("--seeds", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="torch threads per process")
    parser.add_argument("--eval-episodes", type=int, default=20)
    args = parser.parse_args()
    hp = json.loads(args.config)
    outcome = concurrent_seeds.run(
        worker,
        lambda i: (hp, args.seed + i, args.threads, args.eval_episodes),
        args.seeds,
        "sb3",
    )
    if outcome is None:
        return 1
    results, wall, steps = outcome

    import torch

    result = {
        "library": "sb3",
        "seeds": args.seeds,
        "parallelism": (
            f"{args.seeds} concurrent processes, torch.set_num_threads({args.threads}) each"
            if args.seeds > 1
            else f"1 process, torch.set_num_threads({args.threads})"
        ),
        "torch_threads": args.threads,
        "env_steps": steps,
        "compile_s": 0.0,
        "run_s": wall,
        "steps_per_s": steps / wall,
        "per_process_steps_per_s": [r["env_steps"] / (r["end"] - r["start"]) for r in results],
        "final_return_per_seed": [r["final_return"] for r in results],
        "versions": {
            "stable-baselines3": metadata.version("stable-baselines3"),
            "torch": torch.__version__,
            "gymnasium": metadata.version("gymnasium"),
        },
        "python": sys.version.split()[0],
    }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
