"""Monte Carlo tree search with the UCT tree policy and a rollout default policy.

Each simulation (Kocsis & Szepesvári, 2006, "Bandit based Monte-Carlo planning"; Browne et
al., 2012, "A survey of MCTS methods", Algorithm 2 "UCT") has four phases:

1. *Selection*: from the root, while the node is fully expanded, non-terminal and above
   ``max_depth``, descend to the child maximising

       Score(j) = W_j / N_j + 2C √(2 ln N(parent) / N_j),

   where N_j counts the simulations through child j and W_j sums their returns. This is
   the form of Browne et al. (2012, eq. 2); Kocsis & Szepesvári write the bonus
   2C_p √(ln N(parent) / N_j), the same score with C_p = √2 C. So C = 1/2 gives UCB1's
   √(2 ln N / N_j) (Auer et al., 2002), and the default C = 1/√2 (the constant Kocsis &
   Szepesvári give for returns in [0, 1], in their form) explores √2 times more. A child
   never visited scores +∞, so every action is tried once before any is tried twice (UCB1's
   initialisation); during the search this rule acts through expansion below.
2. *Expansion*: an untried action of the node reached, drawn uniformly, is tried once in
   the model, creating a child. Untried actions are therefore expanded before any sibling
   is revisited.
3. *Default policy*: the new leaf is valued by one rollout of ``rollout_depth`` steps of
   ``rollout_policy`` (uniform by default), G_leaf = Σ_k γᵏ r_k, stopped at termination
   (averaged over ``num_rollouts`` independent rollouts when more than one); a
   terminal leaf is worth 0 and a revisited leaf at ``max_depth`` gets a fresh rollout.
4. *Backup*: along the path back to the root, each node receives the return from its own
   incoming edge, G_j = r_j + γ G_child (the root receives G_child, the return from its
   state), so W_j / N_j is the mean of the returns backed up through j.

The tree is a handful of fixed-shape arrays with ``num_simulations + 1`` nodes (node 0 is
the root, simulation i writes node i + 1), and the model's states are stored per node, so
:func:`search` jits and vmaps over root states. A gymnax environment serves as the model
through :func:`gymnax_model` (``step_env``: no auto-reset; the state is copied by value).
"""

from collections.abc import Callable
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp

from ..core.config import check_positive_int, check_range

Model = Callable[[jax.Array, Any, jax.Array], tuple[Any, jax.Array, jax.Array]]
"""``model(key, state, action) -> (next_state, reward, terminated)``."""
RolloutPolicy = Callable[[jax.Array, Any], jax.Array]
"""``rollout_policy(key, state) -> action``."""

UNEXPANDED = -1


class Tree(eqx.Module):
    """A search tree of ``num_nodes = num_simulations + 1`` nodes; node 0 is the root."""

    visits: jax.Array  # [num_nodes] int: N_j
    value_sum: jax.Array  # [num_nodes]: W_j, the sum of returns backed up through j
    reward: jax.Array  # [num_nodes]: r_j, the reward on the edge into j
    terminal: jax.Array  # [num_nodes] bool: the edge into j terminated the episode
    parent: jax.Array  # [num_nodes] int (-1 for the root and unused nodes)
    action: jax.Array  # [num_nodes] int: the action on the edge into j
    depth: jax.Array  # [num_nodes] int
    children: jax.Array  # [num_nodes, num_actions] int (UNEXPANDED where untried)
    state: Any  # model states, leaves [num_nodes, ...]
    num_used: jax.Array  # int: nodes written so far

    @property
    def num_actions(self) -> int:
        return self.children.shape[-1]


class SearchResult(eqx.Module):
    """The chosen root action, the root statistics and the whole tree."""

    action: jax.Array  # int: argmax of root visit counts (ties: the higher mean value)
    visits: jax.Array  # [num_actions]: N of the root's children
    q_values: jax.Array  # [num_actions]: W/N of the root's children (−inf where unvisited)
    tree: Tree


def gymnax_model(env: Any, env_params: Any) -> Model:
    """A planning model from a gymnax environment: ``env.step_env`` (no auto-reset).

    The returned state is the environment's next state, the reward its reward, and
    ``terminated`` its natural termination (time limits are not a planning concern).
    """

    def model(key, state, action):
        _, next_state, reward, terminated, _ = env.step_env(key, state, action, env_params)
        return next_state, jnp.asarray(reward, jnp.float32), jnp.asarray(terminated, bool)

    return model


def uniform_policy(num_actions: int) -> RolloutPolicy:
    """The default policy: a uniformly random action."""
    return lambda key, state: jax.random.randint(key, (), 0, num_actions)


def rollout_return(
    key: jax.Array,
    model: Model,
    policy: RolloutPolicy,
    state: Any,
    depth: int,
    gamma: float,
) -> jax.Array:
    """Σ_{k<depth} γᵏ r_k of one rollout of ``policy`` from ``state``, stopped at termination."""

    def one(carry, key):
        state, discount, alive, total = carry
        policy_key, model_key = jax.random.split(key)
        action = policy(policy_key, state)
        state, reward, terminated = model(model_key, state, action)
        total = total + jnp.where(alive, discount * reward, 0.0)
        return (state, discount * gamma, alive & ~terminated, total), None

    if depth == 0:
        return jnp.zeros((), jnp.float32)
    init = (state, jnp.ones((), jnp.float32), jnp.array(True), jnp.zeros((), jnp.float32))
    (_, _, _, total), _ = jax.lax.scan(one, init, jax.random.split(key, depth))
    return total


def init_tree(root_state: Any, num_actions: int, num_simulations: int) -> Tree:
    """An empty tree holding ``root_state`` at node 0."""
    n = num_simulations + 1
    state = jax.tree.map(lambda x: jnp.zeros((n, *jnp.shape(x)), jnp.asarray(x).dtype), root_state)
    state = jax.tree.map(lambda s, x: s.at[0].set(x), state, root_state)
    return Tree(
        visits=jnp.zeros(n, jnp.int32),
        value_sum=jnp.zeros(n, jnp.float32),
        reward=jnp.zeros(n, jnp.float32),
        terminal=jnp.zeros(n, bool),
        parent=jnp.full(n, -1, jnp.int32),
        action=jnp.full(n, -1, jnp.int32),
        depth=jnp.zeros(n, jnp.int32),
        children=jnp.full((n, num_actions), UNEXPANDED, jnp.int32),
        state=state,
        num_used=jnp.array(1, jnp.int32),
    )


def uct_scores(tree: Tree, node: jax.Array, c: float) -> jax.Array:
    """UCT score of every action at ``node`` (Kocsis & Szepesvári, 2006, in the form of
    Browne et al., 2012, eq. 2, see the module doc), with N_j and W_j of child j:

        Score(j) = W_j / N_j + 2c √(2 ln N(node) / N_j),     +∞ where N_j = 0,

    the +∞ covering untried actions (no child yet) and children with no visit recorded.
    Returns [num_actions]."""
    children = tree.children[node]
    n = tree.visits[jnp.maximum(children, 0)].astype(jnp.float32)
    w = tree.value_sum[jnp.maximum(children, 0)]
    parent_n = tree.visits[node].astype(jnp.float32)
    safe_n = jnp.maximum(n, 1.0)
    score = w / safe_n + 2.0 * c * jnp.sqrt(2.0 * jnp.log(jnp.maximum(parent_n, 1.0)) / safe_n)
    return jnp.where((children == UNEXPANDED) | (n == 0), jnp.inf, score)


def simulate(
    key: jax.Array,
    tree: Tree,
    model: Model,
    rollout_policy: RolloutPolicy,
    *,
    c: float,
    gamma: float,
    max_depth: int,
    rollout_depth: int,
    num_rollouts: int = 1,
) -> Tree:
    """One simulation: selection, expansion, rollout and backup (see the module doc)."""
    model_key, rollout_key, order_key = jax.random.split(key, 3)

    def can_descend(node):
        expanded = jnp.all(tree.children[node] != UNEXPANDED)
        return expanded & ~tree.terminal[node] & (tree.depth[node] < max_depth)

    def descend(node):
        return tree.children[node, jnp.argmax(uct_scores(tree, node, c))]

    leaf = jax.lax.while_loop(can_descend, descend, jnp.array(0, jnp.int32))

    # expansion
    expand = ~tree.terminal[leaf] & (tree.depth[leaf] < max_depth)
    untried = tree.children[leaf] == UNEXPANDED
    # a uniformly random untried action (a fixed order would bias the search towards it)
    order = jax.random.uniform(order_key, untried.shape)
    action = jnp.argmax(jnp.where(untried, order, -1.0)).astype(jnp.int32)
    new = tree.num_used
    leaf_state = jax.tree.map(lambda s: s[leaf], tree.state)
    next_state, reward, terminated = model(model_key, leaf_state, action)

    def write(t: Tree) -> Tree:
        return eqx.tree_at(
            lambda t: (
                t.reward,
                t.terminal,
                t.parent,
                t.action,
                t.depth,
                t.children,
                t.state,
                t.num_used,
            ),
            t,
            (
                t.reward.at[new].set(reward),
                t.terminal.at[new].set(terminated),
                t.parent.at[new].set(leaf),
                t.action.at[new].set(action),
                t.depth.at[new].set(t.depth[leaf] + 1),
                t.children.at[leaf, action].set(new),
                jax.tree.map(lambda s, x: s.at[new].set(x), t.state, next_state),
                new + 1,
            ),
        )

    tree = jax.lax.cond(expand, write, lambda t: t, tree)
    bottom = jnp.where(expand, new, leaf)
    bottom_state = jax.tree.map(lambda a, b: jnp.where(expand, a, b), next_state, leaf_state)
    rollout_keys = jax.random.split(rollout_key, num_rollouts)
    value = jnp.mean(
        jax.vmap(rollout_return, in_axes=(0, None, None, None, None, None))(
            rollout_keys, model, rollout_policy, bottom_state, rollout_depth, gamma
        )
    )
    value = jnp.where(tree.terminal[bottom], 0.0, value)

    def backup(carry):
        t, node, g = carry
        g = jnp.where(node == 0, g, t.reward[node] + gamma * g)
        t = eqx.tree_at(
            lambda t: (t.visits, t.value_sum),
            t,
            (t.visits.at[node].add(1), t.value_sum.at[node].add(g)),
        )
        return t, t.parent[node], g

    tree, _, _ = jax.lax.while_loop(lambda carry: carry[1] >= 0, backup, (tree, bottom, value))
    return tree


def search(
    key: jax.Array,
    model: Model,
    root_state: Any,
    *,
    num_actions: int,
    num_simulations: int,
    c: float = 2.0**-0.5,
    gamma: float = 1.0,
    max_depth: int = 1_000,
    rollout_depth: int = 20,
    num_rollouts: int = 1,
    rollout_policy: RolloutPolicy | None = None,
) -> SearchResult:
    """UCT search from ``root_state`` with ``num_simulations`` simulations.

    ``c`` is the exploration constant C of the score (for returns in [0, 1], C = 1/2 is
    UCB1's bonus and the default 1/√2 a √2 times larger one, see the module doc; scale it
    with the range of the returns). A new leaf is valued by the mean return of
    ``num_rollouts`` independent rollouts (one by default). Returns the most visited root
    action.
    """
    check_positive_int("num_actions", num_actions)
    check_positive_int("num_simulations", num_simulations)
    check_positive_int("max_depth", max_depth)
    check_positive_int("rollout_depth", rollout_depth, minimum=0)
    check_positive_int("num_rollouts", num_rollouts)
    check_range("c", c, 0.0)
    check_range("gamma", gamma, 0.0, 1.0)
    policy = uniform_policy(num_actions) if rollout_policy is None else rollout_policy
    tree = init_tree(root_state, num_actions, num_simulations)

    def one(tree, key):
        tree = simulate(
            key,
            tree,
            model,
            policy,
            c=c,
            gamma=gamma,
            max_depth=max_depth,
            rollout_depth=rollout_depth,
            num_rollouts=num_rollouts,
        )
        return tree, None

    search_key, tie_key = jax.random.split(key)
    tree, _ = jax.lax.scan(one, tree, jax.random.split(search_key, num_simulations))
    return root_result(tree, tie_key)


def root_result(tree: Tree, key: jax.Array | None = None) -> SearchResult:
    """The root's child statistics and the most visited action (ties: the higher mean value,
    then uniformly at random with ``key``, or the lowest index without one)."""
    children = tree.children[0]
    expanded = children != UNEXPANDED
    visits = jnp.where(expanded, tree.visits[jnp.maximum(children, 0)], 0)
    q = tree.value_sum[jnp.maximum(children, 0)] / jnp.maximum(visits, 1)
    q = jnp.where(visits > 0, q, -jnp.inf)
    # lexicographic argmax: visits first, then the mean value
    best_visits = visits == jnp.max(visits)
    score = jnp.where(best_visits, q, -jnp.inf)
    best = score == jnp.max(score)
    order = jnp.zeros(best.shape) if key is None else jax.random.uniform(key, best.shape)
    action = jnp.argmax(jnp.where(best, order, -1.0)).astype(jnp.int32)
    return SearchResult(action, visits, q, tree)
