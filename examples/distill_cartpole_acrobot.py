"""Policy distillation: train DQN experts on CartPole-v1 and Acrobot-v1, then distil both into
one smaller student network that acts in either env (Rusu et al., 2016).

    python examples/distill_cartpole_acrobot.py

About two minutes on a laptop CPU. The command line does the same from run directories:
``minirl train dqn --env CartPole-v1 --out runs/cp`` (and Acrobot-v1), then
``minirl distill runs/cp runs/ac --out runs/student``.
"""

import time

import jax
import numpy as np

from minirl import distill, envs
from minirl.algos import dqn

# 1. The teachers: one DQN expert per env (each with its documented preset).
tasks = []
for env_id in ("CartPole-v1", "Acrobot-v1"):
    env, env_params = envs.make(env_id)
    config = dqn.Config(**{**dqn.preset(env_id), "total_steps": 100_000})
    start = time.perf_counter()
    state, _ = jax.jit(dqn.train, static_argnums=2)(jax.random.PRNGKey(0), config, env,
                                                    env_params)
    jax.block_until_ready(state)
    print(f"DQN expert on {env_id}: {time.perf_counter() - start:.1f}s")
    # A task is an env with its teacher: the teacher's learner module, params and config.
    tasks.append(distill.make_task(env, env_params, dqn, state.learner.params, config))
tasks = tuple(tasks)

# 2. The student: one (64, 64) MLP for both tasks, trained on the states it visits itself
#    (DAgger), with the cross-entropy to the teachers' softmax(Q / 0.01). Train 4 students
#    in one compiled program; the tasks are shared (in_axes None).
config = distill.Config()  # hidden=(64, 64), 40k env steps per task
keys = jax.random.split(jax.random.PRNGKey(1), 4)
start = time.perf_counter()
students, metrics = jax.jit(jax.vmap(distill.train, in_axes=(0, None, None)))(keys, config,
                                                                              tasks)
jax.block_until_ready(students)
print(f"4 students × {config.total_steps:,} env steps per task: "
      f"{time.perf_counter() - start:.1f}s; agreement with the teachers' argmax at the end: "
      f"{np.round(np.asarray(metrics['agreement'][:, -1]), 3)}")

# 3. Greedy returns over 32 episodes per task: teacher, each student, uniform random.
key = jax.random.PRNGKey(2)
teacher = np.asarray(jax.jit(distill.teacher_returns, static_argnums=2)(key, tasks, 32))
random = np.asarray(jax.jit(distill.random_returns, static_argnums=2)(key, tasks, 32))
student = np.asarray(jax.jit(jax.vmap(distill.student_returns, (None, 0, None, None, None)),
                             static_argnums=4)(key, students.learner.params, config, tasks, 32))
for k, task in enumerate(tasks):
    ratio = (student[:, k].mean(-1) - random[k].mean()) / (teacher[k].mean() - random[k].mean())
    print(f"{task.env.name}: teacher {teacher[k].mean():.1f}, random {random[k].mean():.1f}, "
          f"students {np.round(student[:, k].mean(-1), 1)} "
          f"((student − random) / (teacher − random): {np.round(ratio, 3)})")

# 4. Acting: the task is part of the params. for_task picks it; act pads the observation,
#    appends the task's one-hot and masks the actions the task does not have.
params = distill.for_task(jax.tree.map(lambda x: x[0], students.learner.params), 1)
env, env_params = tasks[1].env, tasks[1].env_params
obs, env_state = env.reset(jax.random.PRNGKey(3), env_params)
action = distill.act(params, obs, jax.random.PRNGKey(4), config, deterministic=True)
print(f"student's greedy action in Acrobot's first state: {int(action)} (of 3)")
