"""Properties of minirl.core.config: validators raise ValueError naming the field and the
offending value, accept batched (sweep) values element-wise, and skip tracers; stack
builds one sweepable config."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from minirl.core import config

pytestmark = pytest.mark.timeout(120)

FINITE = st.floats(-1e6, 1e6, allow_nan=False, allow_subnormal=False)


@given(FINITE, st.floats(0.0, 1.0), st.booleans(), st.booleans())
def test_check_range_is_the_interval(value, width, low_inclusive, high_inclusive):
    low, high = -width, width
    inside = (value > low or (low_inclusive and value == low)) and (
        value < high or (high_inclusive and value == high)
    )
    kwargs = dict(low_inclusive=low_inclusive, high_inclusive=high_inclusive)
    if inside:
        config.check_range("gamma", value, low, high, **kwargs)
    else:
        with pytest.raises(ValueError, match=r"gamma=") as info:
            config.check_range("gamma", value, low, high, **kwargs)
        assert f"{value:g}" in str(info.value)
        assert ("[" if low_inclusive else "(") in str(info.value)


def test_check_range_messages_and_open_ends():
    with pytest.raises(ValueError, match=r"gamma=1\.5 is out of range; allowed: \(0, 1\]"):
        config.check_range("gamma", 1.5, 0.0, 1.0, low_inclusive=False)
    with pytest.raises(ValueError, match=r"tau=-0\.1 .*\[0, inf\)"):
        config.check_range("tau", -0.1, 0.0)
    with pytest.raises(ValueError, match=r"lr=nan"):
        config.check_range("lr", float("nan"), 0.0)
    with pytest.raises(ValueError, match=r"lr=nan"):
        config.check_range("lr", float("nan"))  # NaN is never in range, even unbounded
    config.check_range("anything", 1e30)
    config.check_range("x", 0.0, 0.0, 0.0)


def test_check_range_checks_every_element_of_a_sweep():
    config.check_range("gamma", np.asarray([0.9, 0.99, 1.0]), 0.0, 1.0)
    with pytest.raises(ValueError, match=r"gamma=\[1\.5, 2\]"):
        config.check_range("gamma", np.asarray([0.9, 1.5, 2.0]), 0.0, 1.0)


def test_check_range_skips_tracers():
    jax.jit(lambda g: config.check_range("gamma", g, 0.0, 1.0) or g)(jnp.float32(5.0))


@given(st.integers(-5, 5), st.integers(0, 3))
def test_check_positive_int(value, minimum):
    if value >= minimum:
        config.check_positive_int("num_envs", value, minimum)
    else:
        with pytest.raises(ValueError, match=rf"num_envs={value} .*≥ {minimum}"):
            config.check_positive_int("num_envs", value, minimum)


@pytest.mark.parametrize("value", [2.0, True, "3", None, np.float32(4.0)])
def test_check_positive_int_rejects_non_integers(value):
    with pytest.raises(ValueError, match=r"batch_size=.*must be an integer"):
        config.check_positive_int("batch_size", value)


def test_check_choice():
    config.check_choice("loss", "huber", ("huber", "squared"))
    with pytest.raises(
        ValueError, match=r"loss='l1' is not allowed; choose one of 'huber', 'squared'"
    ):
        config.check_choice("loss", "l1", ("huber", "squared"))


def test_stack_and_its_errors():
    a = {"gamma": 0.9, "steps": 3}
    b = {"gamma": 0.99, "steps": 4}
    stacked = config.stack([a, b])
    assert stacked["gamma"].dtype == np.float32 and stacked["steps"].dtype == np.int32
    np.testing.assert_allclose(stacked["gamma"], [0.9, 0.99], rtol=1e-6)
    with pytest.raises(ValueError, match="configs is empty"):
        config.stack([])
    with pytest.raises(ValueError, match="static fields"):
        config.stack([a, {"gamma": 0.9}])
