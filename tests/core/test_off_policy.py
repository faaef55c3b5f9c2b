"""The replay plumbing shared by the off-policy learners: time-major storage, minibatch
shapes, and updates that are skipped (not masked) before the warm-up ends."""

import jax
import jax.numpy as jnp
import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from minirl.core import buffer as replay
from minirl.core import off_policy
from minirl.core.rollout import Transition


def trajectory(T: int, E: int) -> Transition:
    # obs encodes (t, e) so the storage order can be read back.
    t, e = np.meshgrid(np.arange(T), np.arange(E), indexing="ij")
    obs = jnp.asarray(100 * t + e, jnp.float32)[..., None]
    zeros = jnp.zeros((T, E))
    return Transition(obs=obs, action=zeros.astype(jnp.int32), reward=zeros, next_obs=obs + 100,
                      terminated=zeros.astype(bool), truncated=zeros.astype(bool),
                      policy_info=jnp.ones((T, E)))


@given(st.integers(1, 5), st.integers(1, 4))
def test_store_is_time_major_and_drops_policy_info_unless_asked(T, E):
    example = jax.tree.map(lambda x: x[0, 0], trajectory(T, E))
    empty = replay.init(64, Transition(**{**vars(example), "policy_info": None}))
    stored = off_policy.store(empty, trajectory(T, E))
    obs = np.asarray(stored.data.obs[: T * E, 0])
    # item i + E is the same env one step later
    np.testing.assert_array_equal(obs, [100 * t + e for t in range(T) for e in range(E)])
    assert stored.data.policy_info is None and int(stored.size) == T * E
    with_info = off_policy.store(replay.init(64, example), trajectory(T, E), keep_policy_info=True)
    np.testing.assert_array_equal(np.asarray(with_info.data.policy_info[: T * E]), 1.0)


def test_minibatches_have_the_asked_shape_and_come_from_written_slots():
    buf = replay.add(replay.init(100, jnp.zeros(())), jnp.arange(1.0, 11.0))
    batches = off_policy.minibatches(buf, jax.random.PRNGKey(0), 3, 7)
    assert batches.shape == (3, 7)
    assert set(np.asarray(batches).ravel()) <= set(range(1, 11))


def test_updates_after_warmup_skips_or_scans():
    def update(total, x):
        return total + x, {"x": x}

    inputs = lambda: jnp.arange(1.0, 5.0)  # noqa: E731
    total, metrics = off_policy.updates_after_warmup(jnp.array(True), jnp.array(0.0), update,
                                                     inputs)
    assert float(total) == 10.0 and float(metrics["x"]) == 2.5  # sum, and mean over K
    total, metrics = off_policy.updates_after_warmup(jnp.array(False), jnp.array(0.0), update,
                                                     inputs)
    assert float(total) == 0.0 and float(metrics["x"]) == 0.0
