"""Properties of minirl.core.nets: output shapes, the network choice, vmap == loop,
dtype handling, the final-layer scale and ensembles."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from minirl.core import nets

pytestmark = pytest.mark.timeout(120)

OBS_SHAPES = st.sampled_from([(4,), (2, 3), (5, 5, 2)])
OUTS = st.sampled_from([3])
HIDDENS = st.sampled_from([(), (8, 4)])
SEEDS = st.integers(0, 2**31 - 1)

call = eqx.filter_jit(lambda net, x: net(x))
batched_call = eqx.filter_jit(lambda net, xs: jax.vmap(net)(xs))


@given(OBS_SHAPES, OUTS, HIDDENS, SEEDS)
def test_auto_network_shape_and_vmap_equals_loop(obs_shape, out, hidden, seed):
    key = jax.random.PRNGKey(seed)
    net = nets.make_network(obs_shape, out, hidden, "auto", key)
    assert isinstance(net, nets.CNN if len(obs_shape) == 3 else nets.MLP)
    xs = jax.random.normal(jax.random.PRNGKey(seed + 1), (3, *obs_shape))
    batched = np.asarray(batched_call(net, xs))
    assert batched.shape == (3, out)
    for i in range(3):
        single = np.asarray(call(net, xs[i]))
        assert single.shape == (out,)
        np.testing.assert_allclose(batched[i], single, rtol=1e-5, atol=1e-6)


@given(OBS_SHAPES, SEEDS)
def test_mlp_flattens_any_observation(obs_shape, seed):
    key = jax.random.PRNGKey(seed)
    net = nets.make_network(obs_shape, 2, (8,), "mlp", key)
    assert isinstance(net, nets.MLP)
    x = jax.random.normal(jax.random.PRNGKey(seed + 1), obs_shape)
    np.testing.assert_allclose(call(net, x), call(net, x.reshape(-1)), rtol=1e-6)


def test_mlp_is_the_layers_composed():
    key = jax.random.PRNGKey(0)
    net = nets.MLP(3, 2, (5,), key, activation=jnp.tanh)
    x = jnp.asarray([0.3, -1.0, 2.0])
    first, last = net.layers
    expected = last.weight @ jnp.tanh(first.weight @ x + first.bias) + last.bias
    np.testing.assert_allclose(net(x), expected, rtol=1e-5, atol=1e-6)
    assert len(nets.MLP(3, 2, (), key).layers) == 1


def test_cnn_shapes_and_boolean_observations():
    key = jax.random.PRNGKey(0)
    net = nets.make_network((5, 6, 4), 6, (16,), "cnn", key)
    assert net.conv.out_channels == 16
    assert net.head.layers[0].in_features == 16 * 3 * 4  # valid 3×3 convolution
    obs = jax.random.bernoulli(key, 0.3, (5, 6, 4))  # MinAtar observations are booleans
    out = net(obs)
    assert out.shape == (6,) and out.dtype == jnp.float32
    np.testing.assert_allclose(out, net(obs.astype(jnp.float32)), rtol=1e-6)


def test_final_scale_scales_the_last_layer():
    key = jax.random.PRNGKey(1)
    plain = nets.MLP(4, 2, (8,), key)
    scaled = nets.MLP(4, 2, (8,), key, final_scale=0.01)
    x = jnp.arange(4.0)
    np.testing.assert_allclose(scaled(x), 0.01 * plain(x), rtol=1e-5, atol=1e-8)


def test_make_network_rejects_bad_choices():
    key = jax.random.PRNGKey(0)
    with pytest.raises(ValueError, match="network='cnn'.*\\(4,\\)"):
        nets.make_network((4,), 2, (8,), "cnn", key)
    with pytest.raises(ValueError, match="network='rnn'"):
        nets.make_network((4,), 2, (8,), "rnn", key)


def test_ensemble_members_differ_and_vmap_equals_loop():
    members = nets.ensemble(lambda k: nets.MLP(3, 2, (8,), k), jax.random.PRNGKey(0), 4)
    x = jnp.asarray([0.5, -0.2, 1.0])
    outs = eqx.filter_vmap(lambda m, x: m(x), in_axes=(eqx.if_array(0), None))(members, x)
    assert outs.shape == (4, 2)
    params, static = eqx.partition(members, eqx.is_array)
    for i in range(4):
        member = eqx.combine(jax.tree.map(lambda p, i=i: p[i], params), static)
        np.testing.assert_allclose(outs[i], member(x), rtol=1e-5, atol=1e-6)
    assert len({tuple(np.round(np.asarray(o), 6)) for o in outs}) == 4
