"""UCT on small deterministic trees: visit counts add up, the backup identity holds, enough
simulations find the exhaustive-search argmax, batch elements are independent."""

import itertools
import math

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from minirl.core.config import ConfigError
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


VALUES = {}


def node_values(depth, num_actions):
    """The deterministic rollout value v_j of every node's state, jitted once per shape."""
    if (depth, num_actions) not in VALUES:

        def values(rewards, states, gamma):
            model = tree_model(rewards, depth, num_actions)
            one = lambda state: mcts.rollout_return(
                jax.random.PRNGKey(0), model, first_action_policy, state, depth, gamma
            )
            return jax.vmap(one)(states)

        VALUES[depth, num_actions] = jax.jit(values)
    return VALUES[depth, num_actions]


@given(st.integers(0, 2**31 - 1), SHAPES, st.sampled_from([0.9, 1.0]))
def test_backup_identity(seed, shape, gamma):
    """W_j = N_j r_j + γ (Σ_children W_c + L_j v_j): each node's value sum is the sum of the
    returns from its edge, with L_j the simulations that ended at j and v_j its rollout value
    (deterministic rollouts and model make v_j a function of the node)."""
    depth, num_actions = shape
    rewards = jnp.asarray(random_rewards(seed, depth, num_actions))
    search = cached_search(depth, num_actions, 30, gamma=gamma, deterministic=True)
    tree = jax.tree.map(np.asarray, search(jax.random.PRNGKey(seed), rewards).tree)
    values = node_values(depth, num_actions)(rewards, tree.state, gamma)
    for node in range(int(tree.num_used)):
        children = tree.children[node][tree.children[node] >= 0]
        ended_here = tree.visits[node] - tree.visits[children].sum()
        value = 0.0 if tree.terminal[node] else float(values[node])
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


# ----------------------------------------------------------------------------- the UCT score


def hand_built_tree() -> mcts.Tree:
    """Root (N = 10) with children 1 (N = 3, W = 1.5), 2 (N = 6, W = 4.2), an untried action
    and child 3 (N = 0); node 2 has children 4 (N = 2, W = −1) and 5 (N = 4, W = 2)."""
    tree = mcts.init_tree((jnp.array(0), jnp.array(0)), num_actions=4, num_simulations=5)
    U = mcts.UNEXPANDED
    children = np.full((6, 4), U)
    children[0] = [1, 2, U, 3]
    children[2] = [4, U, 5, U]
    return eqx.tree_at(
        lambda t: (t.visits, t.value_sum, t.children),
        tree,
        (
            jnp.array([10, 3, 6, 0, 2, 4], jnp.int32),
            jnp.array([0.0, 1.5, 4.2, 0.0, -1.0, 2.0], jnp.float32),
            jnp.asarray(children, jnp.int32),
        ),
    )


@pytest.mark.parametrize("c", [0.0, 0.5, 2.0**-0.5, 3.0])
def test_uct_scores_by_hand(c):
    """W/N + 2c √(2 ln N(parent) / N), +∞ for untried and unvisited children."""
    tree = hand_built_tree()
    bonus = lambda parent, n: 2 * c * math.sqrt(2 * math.log(parent) / n)
    root = [1.5 / 3 + bonus(10, 3), 4.2 / 6 + bonus(10, 6), math.inf, math.inf]
    np.testing.assert_allclose(mcts.uct_scores(tree, jnp.array(0), c), root, rtol=1e-6)
    inner = [-1.0 / 2 + bonus(6, 2), math.inf, 2.0 / 4 + bonus(6, 4), math.inf]
    np.testing.assert_allclose(mcts.uct_scores(tree, jnp.array(2), c), inner, rtol=1e-6)


UCT_SCORES = jax.jit(mcts.uct_scores)


@given(
    st.lists(st.integers(1, 50), min_size=3, max_size=3),
    st.lists(st.floats(-5.0, 5.0), min_size=3, max_size=3),
    st.floats(0.0, 3.0),
)
def test_uct_scores_match_the_formula(visits, returns, c):
    """A root with three visited children: the scores equal the formula evaluated in numpy."""
    visits, mean = np.array(visits), np.array(returns)
    tree = mcts.init_tree((jnp.array(0), jnp.array(0)), num_actions=3, num_simulations=3)
    tree = eqx.tree_at(
        lambda t: (t.visits, t.value_sum, t.children),
        tree,
        (
            jnp.asarray([visits.sum(), *visits], jnp.int32),
            jnp.asarray([0.0, *(mean * visits)], jnp.float32),
            tree.children.at[0].set(jnp.array([1, 2, 3])),
        ),
    )
    expected = mean + 2 * c * np.sqrt(2 * np.log(visits.sum()) / visits)
    got = UCT_SCORES(tree, jnp.array(0), jnp.float32(c))
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


SIMULATE = {}


def cached_simulate(depth, num_actions, c):
    if (depth, num_actions, c) not in SIMULATE:

        def run(key, tree, rewards):
            model = tree_model(rewards, depth, num_actions)
            policy = mcts.uniform_policy(num_actions)
            kwargs = dict(c=c, gamma=1.0, max_depth=1_000, rollout_depth=depth)
            return mcts.simulate(key, tree, model, policy, **kwargs)

        SIMULATE[depth, num_actions, c] = jax.jit(run)
    return SIMULATE[depth, num_actions, c]


@given(st.integers(0, 2**31 - 1), SHAPES)
def test_every_action_is_tried_once_before_any_twice(seed, shape):
    """Unvisited children score +∞: the first A simulations try each root action once."""
    depth, num_actions = shape
    rewards = jnp.asarray(random_rewards(seed, depth, num_actions))
    simulate = cached_simulate(depth, num_actions, 0.5)
    tree = mcts.init_tree((jnp.array(0), jnp.array(0)), num_actions, 21)
    for key in jax.random.split(jax.random.PRNGKey(seed), num_actions):
        tree = simulate(key, tree, rewards)
    np.testing.assert_array_equal(mcts.root_result(tree).visits, np.ones(num_actions))


@settings(max_examples=15)
@given(st.integers(0, 2**31 - 1), SHAPES, st.integers(0, 20))
def test_selection_descends_by_the_uct_argmax(seed, shape, before):
    """Run ``before`` simulations, then one more: at every fully expanded node on its path
    the simulation moved to the child of the highest UCT score in the tree it started from."""
    depth, num_actions = shape
    c = 0.5
    rewards = jnp.asarray(random_rewards(seed, depth, num_actions))
    simulate = cached_simulate(depth, num_actions, c)
    tree = mcts.init_tree((jnp.array(0), jnp.array(0)), num_actions, 21)
    keys = jax.random.split(jax.random.PRNGKey(seed), before + 1)
    for key in keys[:-1]:
        tree = simulate(key, tree, rewards)
    after = jax.tree.map(np.asarray, simulate(keys[-1], tree, rewards))
    tree = jax.tree.map(np.asarray, tree)
    node = 0
    while True:
        children = tree.children[node]
        if np.any(children == mcts.UNEXPANDED) or tree.terminal[node]:
            break  # the simulation expands here
        scores = np.asarray(UCT_SCORES(tree, jnp.array(node), jnp.float32(c)))
        chosen = [child for child in children if after.visits[child] == tree.visits[child] + 1]
        assert chosen == [children[int(np.argmax(scores))]], (node, scores)
        node = chosen[0]


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
    with pytest.raises(ConfigError, match="num_simulations"):
        mcts.search(key, model, root, num_actions=2, num_simulations=0)
    with pytest.raises(ConfigError, match="gamma"):
        mcts.search(key, model, root, num_actions=2, num_simulations=4, gamma=1.5)
    with pytest.raises(ConfigError, match="c="):
        mcts.search(key, model, root, num_actions=2, num_simulations=4, c=-1.0)
    with pytest.raises(ConfigError, match="c="):
        mcts.search(key, model, root, num_actions=2, num_simulations=4, c=float("inf"))
