"""Policy distillation (minirl/distill.py): the loss against an enumerated KL, the task masks,
the student's input layout, errors, jit = eager, same key = same bits, and the command line
(``minirl distill``, ``minirl eval`` of the student) on tiny teachers."""

import dataclasses
import json
import math

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from minirl import checkpoint, cli, distill, envs, runner
from minirl.algos import dqn, ppo, sac
from minirl.core.config import ConfigError

pytestmark = pytest.mark.timeout(300)

TINY = distill.Config(total_steps=64, num_envs=2, rollout_steps=4, gradient_steps=1,
                      buffer_size=256, batch_size=16, learning_starts=16, hidden=(8,))


def untrained_dqn_task(env_id: str, seed: int = 0) -> distill.Task:
    """A task whose teacher is a freshly initialised DQN: cheap, and its π_E is not uniform."""
    env, env_params = envs.make(env_id)
    config = dqn.Config(total_steps=1_000, hidden=(8,))
    state = dqn.init(jax.random.PRNGKey(seed), config, env, env_params)
    return distill.make_task(env, env_params, dqn, state.learner.params, config)


@pytest.fixture(scope="module")
def tasks():
    return (untrained_dqn_task("CartPole-v1"), untrained_dqn_task("Acrobot-v1", 1))


# ----------------------------------------------------------------------------- the loss


@st.composite
def teacher_and_logits(draw, positive: bool = False):
    """π_E over the first n of A outputs (zeros beyond; some zeros inside unless
    ``positive``) and student logits [A]."""
    n = draw(st.sampled_from([1, 2, 3, 5]))
    width = n + draw(st.sampled_from([0, 1, 3]))
    low = 0.05 if positive else 0.0
    weights = draw(st.lists(st.floats(low, 1.0), min_size=n, max_size=n))
    weights[draw(st.integers(0, n - 1))] = 1.0  # at least one action has mass
    probs = np.zeros(width)
    probs[:n] = np.asarray(weights) / np.sum(weights)
    logits = np.asarray(draw(st.lists(st.floats(-20.0, 20.0), min_size=width,
                                      max_size=width)))
    return n, probs, logits


def loss_and_gradient(probs, logits, n):
    with jax.enable_x64(True):
        mask = jnp.arange(probs.size) < n
        loss, grad = jax.value_and_grad(distill.distillation_loss, argnums=1)(
            jnp.asarray(probs, jnp.float64), jnp.asarray(logits, jnp.float64), mask)
        return float(loss), np.asarray(grad)


def enumerated(probs, logits, n):
    """H(π_E) and KL(π_E ‖ π_θ) summed action by action over the task's n actions, π_θ the
    softmax of the task's n logits (the student's outputs beyond n do not enter)."""
    z = np.asarray(logits[:n], np.float64)
    log_q = z - z.max() - math.log(np.exp(z - z.max()).sum())
    entropy = kl = 0.0
    for a in range(n):
        p = probs[a]
        if p > 0:
            entropy -= p * math.log(p)
            kl += p * (math.log(p) - log_q[a])
    return entropy, kl, np.exp(log_q)


@given(teacher_and_logits())
def test_loss_minus_the_teachers_entropy_is_the_enumerated_kl_and_never_negative(case):
    n, probs, logits = case
    loss, grad = loss_and_gradient(probs, logits, n)
    entropy, kl, q = enumerated(probs, logits, n)
    assert loss - entropy == pytest.approx(kl, rel=1e-9, abs=1e-9)
    assert kl >= -1e-12
    # The gradient in the logits is π_θ − π_E on the task's actions and 0 beyond: zero
    # exactly where the student's π equals the teacher's.
    np.testing.assert_allclose(grad[:n], q - probs[:n], atol=1e-9)
    np.testing.assert_array_equal(grad[n:], 0.0)
    assert np.all(np.isfinite(grad))


@given(teacher_and_logits(positive=True), st.floats(-5.0, 5.0))
def test_the_loss_is_minimal_with_zero_gradient_where_the_student_equals_the_teacher(case, shift):
    n, probs, junk = case
    logits = junk.copy()  # the outputs beyond the task's actions are anything at all
    logits[:n] = np.log(probs[:n]) + shift  # softmax(logits[:n]) = π_E
    loss, grad = loss_and_gradient(probs, logits, n)
    entropy, kl, _ = enumerated(probs, logits, n)
    assert loss == pytest.approx(entropy, rel=1e-9, abs=1e-9)
    assert abs(kl) < 1e-9
    np.testing.assert_allclose(grad, 0.0, atol=1e-9)


# ----------------------------------------------------------------------------- the masks


@given(
    st.lists(st.integers(1, 5), min_size=1, max_size=4),
    st.data(),
)
def test_masks_put_every_probability_on_the_tasks_own_actions(num_actions, data):
    num_actions = tuple(num_actions)
    task = data.draw(st.integers(0, len(num_actions) - 1))
    width = max(num_actions)
    # Adversarial logits: the largest ones are those the mask must remove.
    logits = np.asarray(data.draw(st.lists(st.floats(-10.0, 10.0), min_size=width,
                                           max_size=width)))
    logits = logits + 100.0 * (np.arange(width) >= num_actions[task])
    probs = np.asarray(jax.nn.softmax(distill.masked_logits(
        jnp.asarray(logits, jnp.float32), distill.action_mask(task, num_actions))))
    n = num_actions[task]
    np.testing.assert_array_equal(probs[n:], 0.0)
    assert probs[:n].sum() == pytest.approx(1.0, abs=1e-5)

    # The same through act, with a network whose outputs grow with the action index.
    network = eqx.nn.Lambda(lambda x: 30.0 * jnp.arange(width, dtype=jnp.float32) + x[0])
    student = distill.for_task(
        distill.init_student(jax.random.PRNGKey(0), TINY, 3, num_actions, network), task)
    obs = jnp.asarray(data.draw(st.lists(st.floats(-3.0, 3.0), min_size=3, max_size=3)))
    keys = jax.random.split(jax.random.PRNGKey(data.draw(st.integers(0, 2**16))), 32)
    sampled = jax.vmap(distill.act, in_axes=(None, None, 0, None))(student, obs, keys, TINY)
    assert np.all((np.asarray(sampled) >= 0) & (np.asarray(sampled) < n))
    assert int(distill.act(student, obs, keys[0], TINY, deterministic=True)) == n - 1


def test_deterministic_act_ignores_the_key(tasks):
    state = jax.jit(distill.init)(jax.random.PRNGKey(0), TINY, tasks)
    student = distill.for_task(state.learner.params, 1)
    obs = state.envs[1].obs[0]
    a = distill.act(student, obs, jax.random.PRNGKey(1), TINY, deterministic=True)
    b = distill.act(student, obs, jax.random.PRNGKey(2), TINY, deterministic=True)
    assert int(a) == int(b) and 0 <= int(a) < 3


# ----------------------------------------------------------------------------- the input


def test_student_input_is_the_padded_observation_then_the_task_one_hot():
    obs = jnp.arange(1.0, 7.0).reshape(2, 3)
    x = distill.student_input(obs, 1, obs_size=10, num_tasks=3)
    np.testing.assert_array_equal(x, [1, 2, 3, 4, 5, 6, 0, 0, 0, 0, 0, 1, 0])
    booleans = distill.student_input(jnp.array([True, False]), 0, obs_size=2, num_tasks=1)
    np.testing.assert_array_equal(booleans, [1, 0, 1])
    with pytest.raises(ConfigError, match="obs_size=4"):
        distill.student_input(jnp.zeros(5), 0, obs_size=4, num_tasks=2)


def test_stored_states_carry_padded_inputs_task_one_hots_and_masked_teacher_probs(tasks):
    """CartPole (4 numbers, 2 actions) and Acrobot (6 numbers, 3 actions): the student reads
    6 + 2 numbers and has 3 outputs."""
    state = jax.jit(distill.init)(jax.random.PRNGKey(0), TINY, tasks)
    params = state.learner.params
    assert (params.obs_size, params.num_actions) == (6, (2, 3))
    first_obs = [carry.obs for carry in state.envs]
    state, _ = jax.jit(distill.step)(state, TINY, tasks)
    per_task = TINY.num_envs * TINY.rollout_steps
    data = jax.tree.map(np.asarray, state.buffer.data)
    for k, (size, n) in enumerate([(4, 2), (6, 3)]):
        rows = slice(k * per_task, (k + 1) * per_task)
        inputs, probs = data.inputs[rows], data.teacher_probs[rows]
        np.testing.assert_array_equal(data.task[rows], k)
        np.testing.assert_array_equal(inputs[:, size:6], 0.0)
        np.testing.assert_array_equal(inputs[:, 6:], np.eye(2)[np.full(per_task, k)])
        np.testing.assert_allclose(inputs[:TINY.num_envs, :size], first_obs[k], rtol=1e-6)
        np.testing.assert_array_equal(probs[:, n:], 0.0)
        np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)
        expected = jax.vmap(distill.teacher_probs, in_axes=(None, 0, None))(
            tasks[k], first_obs[k], TINY.temperature)
        np.testing.assert_allclose(probs[:TINY.num_envs, :n], expected, rtol=1e-5, atol=1e-7)


# ----------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    "changes, match",
    [
        (dict(hidden=()), "hidden"),
        (dict(batch_size=0), "batch_size=0"),
        (dict(batch_size=512, buffer_size=256), "batch_size=512 is larger than buffer_size"),
        (dict(total_steps=4, num_envs=2, rollout_steps=4), "less than one iteration"),
        (dict(temperature=0.0), r"temperature=0 is out of range; allowed: \(0, inf\)"),
        (dict(beta_start=1.5), r"beta_start=1.5 is out of range; allowed: \[0, 1\]"),
        (dict(learning_rate=float("nan")), "learning_rate"),
        (dict(behaviour="teacher"), "behaviour='teacher' is not allowed"),
        (dict(learning_starts=-1), "learning_starts=-1"),
    ],
)
def test_bad_config_is_a_config_error_naming_field_and_value(changes, match):
    with pytest.raises(ConfigError, match=match):
        distill.Config(**changes)


def test_bad_tasks_network_and_task_index_are_config_errors(tasks):
    with pytest.raises(ConfigError, match="non-empty tuple"):
        distill.init(jax.random.PRNGKey(0), TINY, ())
    with pytest.raises(ConfigError, match="not a distill.Task"):
        distill.init(jax.random.PRNGKey(0), TINY, ("CartPole-v1",))
    small = dataclasses.replace(TINY, buffer_size=12, batch_size=8)  # 2 tasks × 8 steps
    with pytest.raises(ConfigError, match="buffer_size=12 is smaller than one iteration"):
        distill.init(jax.random.PRNGKey(0), small, tasks)
    wrong = eqx.nn.Linear(8, 2, key=jax.random.PRNGKey(0))  # 2 outputs; 3 needed
    with pytest.raises(ConfigError, match=r"network \(student input → logits\) returns shape"):
        distill.init(jax.random.PRNGKey(0), TINY, tasks, network=wrong)
    state = jax.eval_shape(lambda k: distill.init(k, TINY, tasks), jax.random.PRNGKey(0))
    with pytest.raises(ConfigError, match="task=2 is out of range; allowed: integers 0 … 1"):
        distill.for_task(state.learner.params, 2)


def test_continuous_or_unknown_teachers_are_config_errors():
    env, env_params = envs.make("Pendulum-v1")
    config = ppo.Config(total_steps=1_024)
    params = jax.eval_shape(lambda k: ppo.init(k, config, env, env_params),
                            jax.random.PRNGKey(0)).learner.params
    with pytest.raises(ConfigError, match="continuous actions; policy distillation here needs "
                                          "discrete-action teachers"):
        distill.make_task(env, env_params, ppo, params, config)
    cartpole, cartpole_params = envs.make("CartPole-v1")
    with pytest.raises(ConfigError, match="teacher='sac' cannot be distilled; allowed"):
        distill.make_task(cartpole, cartpole_params, sac, params, sac.Config())


def fake_run(path, **meta):
    """A run directory whose checkpoint holds only metadata (enough for the checks made
    before any array is read)."""
    path.mkdir()
    metadata = {"algo": "ppo", "env": "Pendulum-v1", "env_overrides": {}, "config": {},
                "seeds": 1, "seed": 0, "chunks": [1], "history": [], **meta}
    checkpoint.save(path / runner.CHECKPOINT, {"x": np.zeros(1)}, metadata)
    return str(path)


def test_bad_run_directories_are_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="'.*nowhere' does not exist"):
        distill.load_teacher(str(tmp_path / "nowhere"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="holds no checkpoint.npz: give run directories "
                                          "written by `minirl train`"):
        distill.load_teacher(str(tmp_path / "empty"))
    with pytest.raises(ConfigError, match=r"\(ppo on Pendulum-v1\) has continuous actions"):
        distill.load_teacher(fake_run(tmp_path / "pendulum"))
    with pytest.raises(ConfigError, match=r"\(sac on Pendulum-v1\) has continuous actions"):
        distill.load_teacher(fake_run(tmp_path / "sac", algo="sac"))
    with pytest.raises(ConfigError, match="distilled student, not a teacher run"):
        distill.load_teacher(fake_run(tmp_path / "student", algo="distill"))
    with pytest.raises(ConfigError, match="trained on a user's environment"):
        distill.load_teacher(fake_run(tmp_path / "own", algo="dqn", env=None, env_name="Mine"))
    with pytest.raises(ConfigError, match="unknown algorithm 'nope'"):
        distill.load_teacher(fake_run(tmp_path / "nope", algo="nope"))
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / runner.CHECKPOINT).write_bytes(b"not a zip file")
    with pytest.raises(checkpoint.CheckpointError, match="corrupt or truncated"):
        distill.load_teacher(str(tmp_path / "broken"))


# ----------------------------------------------------------------------------- transformations


def test_same_key_same_bits_and_jit_equals_eager(tasks):
    key = jax.random.PRNGKey(3)
    train = jax.jit(distill.train)
    (a, am), (b, bm) = train(key, TINY, tasks), train(key, TINY, tasks)
    for x, y in zip(jax.tree.leaves((a, am)), jax.tree.leaves((b, bm))):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    assert float(am["loss"][-1]) > 0 and np.asarray(am["episodes"]).shape == (8, 2)

    # One step that collects and updates (no warm-up), small enough to run op by op.
    config = dataclasses.replace(TINY, rollout_steps=1, batch_size=4, learning_starts=0)
    state = jax.jit(distill.init)(key, config, tasks)
    jitted, jm = jax.jit(distill.step)(state, config, tasks)
    with jax.disable_jit():
        eager, em = distill.step(state, config, tasks)
    for x, y in zip(jax.tree.leaves((jitted, jm)), jax.tree.leaves((eager, em))):
        x, y = np.asarray(x), np.asarray(y)
        if np.issubdtype(x.dtype, np.floating):
            np.testing.assert_allclose(x, y, rtol=1e-3, atol=1e-4)
        else:
            np.testing.assert_array_equal(x, y)
    assert float(jm["loss"]) > 0 and int(jitted.learner.updates) == 1


def test_learn_needs_only_a_batch_and_lowers_the_kl(tasks):
    state = jax.jit(distill.init)(jax.random.PRNGKey(0), TINY, tasks)
    state, _ = jax.jit(distill.step)(state, TINY, tasks)
    batch = jax.tree.map(lambda x: x[:16], state.buffer.data)
    config = dataclasses.replace(TINY, learning_rate=1e-2, learning_rate_end_factor=1.0)
    learner, kls = state.learner, []
    learn = jax.jit(distill.learn)
    for _ in range(50):
        learner, metrics = learn(learner, batch, config)
        kls.append(float(metrics["kl"]))  # the loss less the teacher's entropy, its floor
    assert kls[-1] < 0.5 * kls[0]
    assert int(learner.updates) == 50


# ----------------------------------------------------------------------------- command line


TEACHER_FLAGS = ["--steps", "1200", "--seeds", "2", "--chunks", "2", "--set", "hidden=16",
                 "--set", "buffer_size=1000", "--set", "learning_starts=200",
                 "--set", "batch_size=16"]


@pytest.fixture(scope="module")
def teacher_runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("teachers")
    dirs = []
    for env_id in ("CartPole-v1", "Acrobot-v1"):
        out = str(root / env_id)
        assert cli.main(["train", "dqn", "--env", env_id, "--out", out, *TEACHER_FLAGS]) == 0
        dirs.append(out)
    return dirs


def test_cli_distill_writes_summary_curve_metrics_and_a_student_eval_reads(
        teacher_runs, tmp_path, capsys):
    out = str(tmp_path / "student")
    flags = ["--steps", "320", "--episodes", "3", "--chunks", "2", "--seed", "5",
             "--set", "num_envs=4", "--set", "learning_starts=64", "--set", "batch_size=32",
             "--set", "buffer_size=1000", "--set", "hidden=16,16"]
    assert cli.main(["distill", *teacher_runs, "--out", out, *flags]) == 0
    printed = capsys.readouterr()
    assert "distilling 2 teacher(s)" in printed.err and "env steps/task" in printed.err
    assert "(s − r) / (t − r)" in printed.out
    summary = json.loads((tmp_path / "student" / "summary.json").read_text())
    assert summary["algo"] == "distill" and summary["steps"] == 320 and summary["seed"] == 5
    assert summary["config"]["hidden"] == [16, 16]
    assert summary["student_checkpoint"] == f"{out}/checkpoint.npz"
    assert [t["env"] for t in summary["tasks"]] == ["CartPole-v1", "Acrobot-v1"]
    for entry, run_dir in zip(summary["tasks"], teacher_runs):
        assert entry["teacher_run"] == run_dir and entry["teacher_algo"] == "dqn"
        assert entry["teacher_seed"] in (0, 1)
        for name in ("teacher_return", "student_return", "random_return"):
            assert math.isfinite(entry[name])
        gap = entry["teacher_return"] - entry["random_return"]
        if gap:
            assert entry["normalised_return"] == pytest.approx(
                (entry["student_return"] - entry["random_return"]) / gap)
    assert (tmp_path / "student" / "curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    lines = (tmp_path / "student" / "metrics.csv").read_text().splitlines()
    assert lines[0].startswith("chunk,task,env,env_steps") and len(lines) == 1 + 2 * 2

    assert cli.main(["eval", out, "--episodes", "2"]) == 0
    printed = capsys.readouterr().out
    assert "CartPole-v1: mean" in printed and "Acrobot-v1: mean" in printed
    meta, returns = distill.evaluate_run(out, 2)
    assert returns.shape == (2, 2) and meta["num_actions"] == [2, 3]

    # one-line errors, exit status 2
    assert cli.main(["distill", *teacher_runs, "--out", out]) == 2  # already holds a run
    assert cli.main(["distill", str(tmp_path / "nowhere"), "--out", str(tmp_path / "x")]) == 2
    assert cli.main(["distill", out, "--out", str(tmp_path / "y")]) == 2  # a student
    assert cli.main(["distill", *teacher_runs, "--out", str(tmp_path / "z"),
                     "--set", "env.gravity=3"]) == 2
    assert cli.main(["eval", out, "--gif", str(tmp_path / "a.gif")]) == 2
    err = capsys.readouterr().err
    assert "already holds a run" in err and "does not exist" in err
    assert "distilled student, not a teacher run" in err and "--gif is not available" in err
