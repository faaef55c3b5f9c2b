"""UCT on small deterministic trees: visit counts add up, the backup identity holds, enough
simulations find the exhaustive-search argmax, batch elements are independent."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from minirl.planning import mcts

pytestmark = pytest.mark.timeout(300)

SHAPES = st.sampled_from([(1, 2), (2, 2), (2, 3), (3, 2), (3, 3)])  # (depth, actions)


def tree_model(rewards: jax.Array, depth: int, num_actions: int) -> mcts.Model:
    """A complete ``num_actions``-ary tree of ``depth`` levels; the state is (node id, level);
    taking a at node i gives reward rewards[i, a] and leads to node i·A + a + 1."""

    def model(key, state, action):
        node, level = state
        reward = rewards[node, action]
        return (node * num_actions + action + 1, level + 1), reward, level + 1 >= depth

    return model


def random_rewards(seed: int, depth: int, num_actions: int) -> np.ndarray:
    num_nodes = sum(num_actions**d for d in range(depth + 1))
    return np.random.default_rng(seed).uniform(size=(num_nodes, num_actions)).astype(np.float32)


def exhaustive(rewards, depth, num_actions, gamma=1.0) -> np.ndarray:
    """Q*(root, a) by enumerating every action sequence."""
    q = np.full(num_actions, -np.inf)
    for sequence in itertools.product(range(num_actions), repeat=depth):
        node, total = 0, 0.0
        for level, action in enumerate(sequence):
            total += gamma**level * rewards[node, action]
            node = node * num_actions + action + 1
        q[sequence[0]] = max(q[sequence[0]], total)
    return q


def first_action_policy(key, state):
    return jnp.array(0)


def make_search(depth, num_actions, num_simulations, c=0.5, gamma=1.0, deterministic=False):
    def run(key, rewards):
        return mcts.search(
            key,
            tree_model(rewards, depth, num_actions),
            (jnp.array(0), jnp.array(0)),
            num_actions=num_actions,
            num_simulations=num_simulations,
            c=c,
            gamma=gamma,
            rollout_depth=depth,
            rollout_policy=first_action_policy if deterministic else None,
        )

    return jax.jit(run)


SEARCHES = {}


def cached_search(*args, **kwargs):
    key = (args, tuple(sorted(kwargs.items())))
    if key not in SEARCHES:
        SEARCHES[key] = make_search(*args, **kwargs)
    return SEARCHES[key]


@given(st.integers(0, 2**31 - 1), SHAPES, st.sampled_from([5, 20, 40]))
def test_visit_counts_add_up(seed, shape, num_simulations):
    depth, num_actions = shape
    rewards = jnp.asarray(random_rewards(seed, depth, num_actions))
    result = cached_search(depth, num_actions, num_simulations)(jax.random.PRNGKey(seed), rewards)
    tree = jax.tree.map(np.asarray, result.tree)
    used = int(tree.num_used)
    assert tree.visits[0] == num_simulations
    assert result.visits.sum() == num_simulations  # the root is never a leaf here
    assert used <= num_simulations + 1
    for node in range(used):
        children = tree.children[node][tree.children[node] >= 0]
        ended_here = tree.visits[node] - tree.visits[children].sum()
        assert ended_here >= (0 if node == 0 else 1)  # every node was once a new leaf
    assert np.all(tree.visits[used:] == 0)


@given(st.integers(0, 2**31 - 1), SHAPES, st.sampled_from([0.9, 1.0]))
def test_backup_identity(seed, shape, gamma):
    """W_j = N_j r_j + γ (Σ_children W_c + L_j v_j): each node's value sum is the sum of the
    returns from its edge, with L_j the simulations that ended at j and v_j its rollout value
    (deterministic rollouts and model make v_j a function of the node)."""
    depth, num_actions = shape
    rewards = jnp.asarray(random_rewards(seed, depth, num_actions))
    search = cached_search(depth, num_actions, 30, gamma=gamma, deterministic=True)
    tree = jax.tree.map(np.asarray, search(jax.random.PRNGKey(seed), rewards).tree)
    model = tree_model(rewards, depth, num_actions)
    for node in range(int(tree.num_used)):
        children = tree.children[node][tree.children[node] >= 0]
        ended_here = tree.visits[node] - tree.visits[children].sum()
        state = jax.tree.map(lambda s, node=node: s[node], tree.state)
        value = mcts.rollout_return(
            jax.random.PRNGKey(0), model, first_action_policy, state, depth, gamma
        )
        value = 0.0 if tree.terminal[node] else float(value)
        inner = tree.value_sum[children].sum() + ended_here * value
        expected = inner if node == 0 else tree.visits[node] * tree.reward[node] + gamma * inner
        np.testing.assert_allclose(tree.value_sum[node], expected, rtol=1e-5, atol=1e-5)
    # the root's children's values are means of returns: bounded by the best and worst paths
    q = result_q = tree.value_sum[tree.children[0]] / tree.visits[tree.children[0]]
    assert np.all(np.isfinite(result_q)) and np.all(q <= depth + 1e-5)


@settings(max_examples=15)
@given(st.integers(0, 2**31 - 1), SHAPES)
def test_enough_simulations_find_the_exhaustive_argmax(seed, shape):
    depth, num_actions = shape
    rewards = random_rewards(seed, depth, num_actions)
    q = np.sort(exhaustive(rewards, depth, num_actions))
    assume(q[-1] - q[-2] > 0.05)  # a unique best first action
    result = cached_search(depth, num_actions, 400)(jax.random.PRNGKey(seed), jnp.asarray(rewards))
    assert int(result.action) == int(np.argmax(exhaustive(rewards, depth, num_actions)))


def test_batch_elements_are_independent():
    depth, num_actions = 3, 3
    rewards = jnp.stack([jnp.asarray(random_rewards(s, depth, num_actions)) for s in range(3)])
    keys = jax.random.split(jax.random.PRNGKey(0), 3)
    search = cached_search(depth, num_actions, 30)
    batched = jax.vmap(search)(keys, rewards)
    for i in range(3):
        single = search(keys[i], rewards[i])
        for got, want in zip(jax.tree.leaves(batched), jax.tree.leaves(single)):
            np.testing.assert_array_equal(got[i], want)
    # a different element in the batch does not change element 0
    other = jax.vmap(search)(keys, rewards.at[1].set(0.0))
    np.testing.assert_array_equal(other.tree.value_sum[0], batched.tree.value_sum[0])


def test_gymnax_model_copies_state():
    import gymnax

    env, params = gymnax.make("CartPole-v1")
    _, state = env.reset(jax.random.PRNGKey(0), params)
    result = jax.jit(
        lambda key, s: mcts.search(
            key, mcts.gymnax_model(env, params), s, num_actions=2, num_simulations=16
        )
    )(jax.random.PRNGKey(1), state)
    assert int(result.tree.visits[0]) == 16
    # the root state in the tree is the state given (search does not advance it)
    np.testing.assert_array_equal(result.tree.state.x[0], state.x)


def test_bad_options_raise():
    model = tree_model(jnp.zeros((3, 2)), 1, 2)
    root = (jnp.array(0), jnp.array(0))
    key = jax.random.PRNGKey(0)
    with pytest.raises(ValueError, match="num_simulations"):
        mcts.search(key, model, root, num_actions=2, num_simulations=0)
    with pytest.raises(ValueError, match="gamma"):
        mcts.search(key, model, root, num_actions=2, num_simulations=4, gamma=1.5)
    with pytest.raises(ValueError, match="c="):
        mcts.search(key, model, root, num_actions=2, num_simulations=4, c=-1.0)
