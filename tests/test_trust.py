"""FLTrust: trust from direction alone, magnitudes normalised, and the trust-weighted aggregate."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import example, given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from fedlearn.errors import ScoringError
from fedlearn.scoring.trust import delta, flatten, fltrust, fltrust_arrays, unflatten

SERVER = np.array([3.0, 4.0, 0.0, 0.0])  # norm 5


def test_a_client_equal_to_the_server_update_is_fully_trusted() -> None:
    result = fltrust(SERVER, [SERVER.copy()])
    assert result.trust[0] == pytest.approx(1.0)
    assert result.weights[0] == pytest.approx(1.0)
    np.testing.assert_allclose(result.aggregate, SERVER)


def test_opposite_and_orthogonal_updates_get_no_trust() -> None:
    result = fltrust(SERVER, [-SERVER, np.array([-4.0, 3.0, 0.0, 0.0]), np.array([0.0, 0.0, 2.0, -7.0])])
    np.testing.assert_allclose(result.trust, 0.0, atol=1e-12)
    np.testing.assert_array_equal(result.aggregate, np.zeros(4))
    np.testing.assert_array_equal(result.weights, np.zeros(3))


def test_trust_is_the_cosine_clipped_at_zero() -> None:
    half = np.array([1.0, 0.0])
    at_60_degrees = np.array([np.cos(np.pi / 3), np.sin(np.pi / 3)])
    at_120_degrees = np.array([np.cos(2 * np.pi / 3), np.sin(2 * np.pi / 3)])
    result = fltrust(half, [at_60_degrees, at_120_degrees])
    np.testing.assert_allclose(result.trust, [0.5, 0.0], atol=1e-12)


def test_a_boosted_copy_contributes_exactly_what_the_original_does() -> None:
    g = np.random.default_rng(0)
    honest = SERVER + g.normal(scale=0.5, size=4)
    other = SERVER + g.normal(scale=0.5, size=4)
    plain = fltrust(SERVER, [honest, other])
    boosted = fltrust(SERVER, [100.0 * honest, other])
    np.testing.assert_allclose(boosted.trust, plain.trust)
    np.testing.assert_allclose(boosted.weights, plain.weights)
    np.testing.assert_allclose(boosted.aggregate, plain.aggregate)


def test_every_client_is_rescaled_to_the_server_norm() -> None:
    clients = [np.array([0.03, 0.04, 0.0, 0.0]), np.array([300.0, 400.0, 1.0, 0.0])]
    result = fltrust(SERVER, clients)
    # Both nearly parallel to the server update: whatever their norms, the aggregate has the server's norm.
    assert np.linalg.norm(result.aggregate) == pytest.approx(5.0, rel=1e-4)


def test_aggregate_is_the_trust_weighted_mean_of_rescaled_updates() -> None:
    a = np.array([6.0, 8.0, 0.0, 0.0])  # parallel, norm 10 → rescaled to SERVER, trust 1
    b = np.array([0.0, 1.0, 0.0, 0.0])  # cos = 0.8, rescaled to (0, 5, 0, 0)
    result = fltrust(SERVER, [a, b, -a])
    np.testing.assert_allclose(result.trust, [1.0, 0.8, 0.0])
    np.testing.assert_allclose(result.weights, [1 / 1.8, 0.8 / 1.8, 0.0])
    np.testing.assert_allclose(result.aggregate, (SERVER + 0.8 * np.array([0.0, 5.0, 0.0, 0.0])) / 1.8)


def test_all_zero_trust_gives_the_zero_update() -> None:
    result = fltrust(SERVER, [-SERVER, -2 * SERVER])
    np.testing.assert_array_equal(result.aggregate, np.zeros(4))
    np.testing.assert_array_equal(result.weights, np.zeros(2))


def test_zero_updates_are_trusted_by_nobody_and_trust_nobody() -> None:
    result = fltrust(SERVER, [np.zeros(4), SERVER])
    np.testing.assert_allclose(result.trust, [0.0, 1.0])
    result = fltrust(np.zeros(4), [SERVER])
    np.testing.assert_array_equal(result.trust, [0.0])
    np.testing.assert_array_equal(result.aggregate, np.zeros(4))


def test_no_clients_gives_the_zero_update() -> None:
    result = fltrust(SERVER, [])
    assert result.trust.shape == (0,)
    np.testing.assert_array_equal(result.aggregate, np.zeros(4))


@given(
    arrays(np.float64, 6, elements=st.floats(-10, 10)),
    st.lists(arrays(np.float64, 6, elements=st.floats(-10, 10)), min_size=1, max_size=5),
)
# Found by randomized runs: squaring entries this small underflows into subnormals, so the client's norm came out
# ppm off and its rescaled copy ended longer than the server update (by 2e-8 relative at 3.6e-159).
@example(np.array([3.0, 4.0, 0.0, 0.0, 0.0, 0.0]), [np.array([3.6e-159, 0.0, 0.0, 0.0, 0.0, 0.0])])
@example(-np.ones(6), [np.full(6, -2.37807502e-161)])
def test_trust_lies_in_0_1_and_the_aggregate_is_no_longer_than_the_server_update(
    server: np.ndarray, clients: list[np.ndarray]
) -> None:
    result = fltrust(server, clients)
    assert ((result.trust >= 0) & (result.trust <= 1)).all()
    assert result.weights.sum() == pytest.approx(1.0) or not result.weights.any()
    # A convex combination of vectors of norm ‖g₀‖ is no longer than ‖g₀‖.
    assert np.linalg.norm(result.aggregate) <= np.linalg.norm(server) * (1 + 1e-9) + 1e-12


@pytest.mark.parametrize("scale", [1e-320, 3.6e-159, 1e-150, 1.0, 1e150, 1e300])
def test_norms_are_exact_at_every_scale(scale: float) -> None:
    client = scale * np.array([3.0, 4.0, 0.0, 0.0])
    result = fltrust(SERVER, [client, -client])
    np.testing.assert_allclose(result.trust, [1.0, 0.0], rtol=1e-12)
    assert np.linalg.norm(result.aggregate) <= 5.0
    np.testing.assert_allclose(result.aggregate, SERVER, rtol=1e-12)
    # A tiny server update is a direction like any other: the aggregate takes its (tiny) norm.
    tiny = fltrust(scale * SERVER, [SERVER, 1e6 * SERVER])
    np.testing.assert_allclose(tiny.trust, [1.0, 1.0], rtol=1e-12)
    np.testing.assert_allclose(tiny.aggregate, scale * SERVER, rtol=1e-12 if scale > 1e-300 else 1e-2)


def test_bad_inputs_raise_scoring_errors() -> None:
    with pytest.raises(ScoringError, match="client update 1 has 3 values"):
        fltrust(SERVER, [SERVER, np.ones(3)])
    with pytest.raises(ScoringError, match="client update 0 holds NaN"):
        fltrust(SERVER, [np.array([np.nan, 0, 0, 0])])
    with pytest.raises(ScoringError, match="server update holds NaN"):
        fltrust(np.array([np.inf, 0, 0, 0]), [SERVER])
    with pytest.raises(ScoringError, match="server update is too large"):
        fltrust(np.array([1.5e308, 1.5e308, 0, 0]), [SERVER])  # every entry finite, the norm is not


def test_results_are_read_only() -> None:
    result = fltrust(SERVER, [SERVER])
    with pytest.raises(ValueError):
        result.trust[0] = 0.5


# --- named arrays -----------------------------------------------------------------------------------------------


def test_flatten_uses_sorted_names_and_unflatten_inverts_it() -> None:
    like = {"w": np.arange(6, dtype=np.float32).reshape(2, 3), "b": np.array([10.0, 11.0], dtype=np.float32)}
    flat = flatten(like)
    np.testing.assert_array_equal(flat, [10, 11, 0, 1, 2, 3, 4, 5])  # "b" sorts before "w"
    back = unflatten(flat, like)
    assert list(back) == ["w", "b"]
    for name in like:
        assert back[name].dtype == like[name].dtype
        np.testing.assert_array_equal(back[name], like[name])
    assert flatten({"b": like["b"], "w": like["w"]}).tolist() == flat.tolist()  # insertion order is irrelevant
    with pytest.raises(ScoringError, match="7 values"):
        unflatten(flat[:7], like)


def test_fltrust_arrays_moves_the_global_model_by_the_aggregate() -> None:
    start = {"w": np.zeros((2, 2)), "b": np.zeros(2)}
    server = {"w": np.array([[1.0, 0.0], [0.0, 0.0]]), "b": np.array([0.0, 1.0])}
    honest = {k: 3.0 * v for k, v in server.items()}  # boosted but aligned: trust 1, rescaled to the server's norm
    flipped = {k: -v for k, v in server.items()}
    result, new = fltrust_arrays(start, server, [honest, flipped])
    np.testing.assert_allclose(result.trust, [1.0, 0.0])
    for k in start:
        np.testing.assert_allclose(new[k], server[k])
    with pytest.raises(ScoringError, match="different arrays"):
        delta({"w": start["w"]}, start)
