"""Properties of minirl.core.buffer against a Python model of a FIFO queue: eviction,
size/position arithmetic, sampling only written items, sequence windows that follow
one environment through time, and in-place (donated) adds."""

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from minirl.core import buffer

pytestmark = pytest.mark.timeout(120)

CAPACITIES = st.sampled_from([1, 3, 8])
BATCH_SIZES = st.sampled_from([1, 3])
KEYS = st.integers(0, 2**31 - 1)

add = jax.jit(buffer.add)
sample = jax.jit(buffer.sample, static_argnums=2)
sample_sequences = jax.jit(buffer.sample_sequences, static_argnums=(2, 3))
donated_add = jax.jit(buffer.add, donate_argnums=0)


def item(item_id):
    """A pytree item whose every leaf is determined by its id (ids start at 1; 0 = unwritten)."""
    ids = jnp.asarray(item_id, jnp.int32)
    return {"id": ids, "x": jnp.stack([ids * 2.0, ids * 3.0], axis=-1).astype(jnp.float32)}


def filled(capacity, batch_sizes):
    """The buffer after adding batches of consecutive ids 1, 2, 3, ...; and the ids added."""
    buf = buffer.init(capacity, item(0))
    next_id = 1
    for size in batch_sizes:
        size = min(size, capacity)
        buf = add(buf, item(np.arange(next_id, next_id + size)))
        next_id += size
    return buf, list(range(1, next_id))


def check_consistent(store):
    ids = np.asarray(store["id"])
    np.testing.assert_array_equal(np.asarray(store["x"]), np.stack([ids * 2.0, ids * 3.0], -1))


@given(CAPACITIES, st.lists(BATCH_SIZES, max_size=8))
def test_fifo_eviction_and_arithmetic(capacity, batch_sizes):
    buf, added = filled(capacity, batch_sizes)
    total = len(added)
    assert buf.capacity == capacity
    assert int(buf.size) == min(total, capacity)
    assert int(buf.position) == total % capacity
    assert int(buffer.oldest_slot(buf)) == (total - min(total, capacity)) % capacity
    check_consistent(buf.data)
    ids = np.asarray(buf.data["id"])
    # Item i (0-based add order) lives in slot i mod capacity; the live items are exactly
    # the newest min(total, capacity); unwritten slots are still zero.
    live = added[-capacity:] if total else []
    expected = np.zeros(capacity, np.int32)
    for item_id in live:
        expected[(item_id - 1) % capacity] = item_id
    np.testing.assert_array_equal(ids, expected)
    assert sorted(ids[ids > 0].tolist()) == live


@given(CAPACITIES, st.lists(BATCH_SIZES, min_size=1, max_size=8), KEYS)
def test_sample_returns_only_live_items_and_all_of_them(capacity, batch_sizes, seed):
    buf, added = filled(capacity, batch_sizes)
    live = set(added[-capacity:])
    batch = sample(buf, jax.random.PRNGKey(seed), 256)
    check_consistent(batch)
    drawn = set(np.asarray(batch["id"]).tolist())
    assert 0 not in drawn  # never an unwritten slot, even while size < capacity
    assert drawn <= live
    assert drawn == live  # ≤ 8 live items: missing one in 256 draws has odds < 1e-13


@given(
    st.sampled_from([1, 3]),  # envs E
    st.sampled_from([2, 5]),  # steps per env that fit
    st.integers(0, 10),  # steps added
    KEYS,
)
def test_sample_sequences_follow_one_env_through_time(num_envs, steps_fit, steps, seed):
    length = 3
    capacity = num_envs * steps_fit
    buf = buffer.init(capacity, {"t": jnp.int32(0), "env": jnp.int32(0)})
    for t in range(1, steps + 1):
        buf = add(buf, {"t": jnp.full(num_envs, t, jnp.int32), "env": jnp.arange(num_envs)})
    windows, valid = sample_sequences(buf, jax.random.PRNGKey(seed), 64, length, num_envs)
    t, env, valid = (np.asarray(a) for a in (windows["t"], windows["env"], valid))
    assert t.shape == env.shape == valid.shape == (64, length)
    if steps == 0:
        return
    oldest = max(1, steps - steps_fit + 1)
    assert valid[:, 0].all()
    assert ((t[:, 0] >= oldest) & (t[:, 0] <= steps)).all()
    # A valid window item is the same env one step later each time.
    expected_t = t[:, :1] + np.arange(length)
    assert (np.where(valid, t, expected_t) == expected_t).all()
    assert (np.where(valid, env, env[:, :1]) == env[:, :1]).all()
    # valid is False exactly for the items past the newest step.
    np.testing.assert_array_equal(valid, expected_t <= steps)


@given(CAPACITIES, st.lists(BATCH_SIZES, max_size=6), BATCH_SIZES)
def test_donated_add_equals_plain_add(capacity, batch_sizes, new):
    buf, added = filled(capacity, batch_sizes)
    new = min(new, capacity)
    batch = item(np.arange(len(added) + 1, len(added) + 1 + new))
    plain = buffer.add(buf, batch)
    copy = jax.tree.map(jnp.copy, buf)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # CPU may decline the donation
        donated = donated_add(copy, batch)
    for a, b in zip(jax.tree.leaves(plain), jax.tree.leaves(donated)):
        np.testing.assert_array_equal(a, b)


def test_scan_carried_buffer_equals_python_loop():
    buf0 = buffer.init(5, item(0))
    batches = item(np.arange(1, 13).reshape(6, 2))

    def body(buf, batch):
        return buffer.add(buf, batch), None

    scanned, _ = jax.lax.scan(body, buf0, batches)
    looped, _ = filled(5, [2] * 6)
    for a, b in zip(jax.tree.leaves(scanned), jax.tree.leaves(looped)):
        np.testing.assert_array_equal(a, b)


def test_bad_sizes_raise():
    with pytest.raises(ValueError, match="capacity=0"):
        buffer.init(0, item(0))
    buf = buffer.init(2, item(0))
    with pytest.raises(ValueError, match="3 items"):
        buffer.add(buf, item(np.arange(1, 4)))
