"""The survival distribution (distribution.py) on generated data: the truncated likelihood recovers
the parameters that generated right-censored intervals, its conditional answers are calibrated,
and its survival function is a survival function."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import special

from jaxlstm.distribution import SIGMA_MIN, log_survival, p_back_within, survival_nll

NO_TRUNCATION = -1e4  # a lower bound so far below every mu that Q(z_0) == 1: the untruncated model


def _draw(rng, n, mu, sigma, pi):
    """[n] next intervals in days from the truncated model (inf: gone)."""
    mu, sigma = np.broadcast_to(mu, n), np.broadcast_to(sigma, n)
    q0 = special.ndtr(mu / sigma)  # Q(z_0): the returning part's mass at T >= 0
    z = -special.ndtri(rng.uniform(1e-12, 1.0, n) * q0)  # Q(z) uniform on (0, Q(z_0)]: z >= z_0
    t = np.expm1(mu + sigma * z)
    return np.where(rng.random(n) < pi, np.inf, t)


def _raw(sigma):
    return np.log(np.expm1(sigma - SIGMA_MIN))  # the head output s with softplus(s) + SIGMA_MIN = sigma


def _mean_nll(p, y, censored, lower):
    return survival_nll(jnp.broadcast_to(p, (len(y), 3)), y, censored, lower).mean()


@jax.jit
def _derivatives(p, y, censored, lower):
    return _mean_nll(p, y, censored, lower), jax.grad(_mean_nll)(p, y, censored, lower), jax.hessian(_mean_nll)(p, y, censored, lower)


def _fit(y, censored, lower):
    """Maximum-likelihood (mu, sigma, pi) of one shared head output over all examples (damped
    Newton steps on jax's derivatives of survival_nll), and their standard errors from the observed
    information (the Hessian of the total negative log-likelihood)."""
    data = (jnp.asarray(y, jnp.float32), jnp.asarray(censored, jnp.float32), jnp.full(len(y), lower, jnp.float32))
    p, damping = np.array([float(np.mean(y)), 0.0, 0.0]), 1e-3
    value, grad, hess = (np.asarray(a, np.float64) for a in _derivatives(jnp.asarray(p, jnp.float32), *data))
    for _ in range(100):
        if np.abs(grad).max() < 1e-5:
            break
        trial = p - np.linalg.solve(hess + damping * np.eye(3), grad)
        t_value, t_grad, t_hess = (np.asarray(a, np.float64) for a in _derivatives(jnp.asarray(trial, jnp.float32), *data))
        if t_value <= value:
            p, value, grad, hess, damping = trial, t_value, t_grad, t_hess, damping / 10
        else:
            damping *= 10
    assert np.abs(grad).max() < 1e-4  # converged
    cov = np.linalg.inv(hess * len(y))
    m, s, g = p
    # delta method from the raw outputs (m, s, g) to (mu, sigma, pi)
    jac = np.diag([1.0, special.expit(s), special.expit(g) * (1 - special.expit(g))])
    se = np.sqrt(np.diag(jac @ cov @ jac.T))
    return np.array([m, np.logaddexp(0.0, s) + SIGMA_MIN, special.expit(g)]), se


def _censored_sample(seed, n, mu, sigma, pi):
    """Intervals observed through windows of random length (uniform up to twice the returning
    part's 97.7% quantile): log1p(observed or elapsed days), censored."""
    rng = np.random.default_rng(seed)
    t = _draw(rng, n, mu, sigma, pi)
    window = rng.uniform(0.0, 2 * np.expm1(mu + 2 * sigma), n)
    return np.log1p(np.minimum(t, window)), (t > window).astype(np.float32)


@pytest.mark.parametrize("mu, sigma, pi", [(2.0, 0.6, 0.3), (0.2, 0.9, 0.2)])
def test_the_likelihood_recovers_the_generating_parameters(mu, sigma, pi):
    y, censored = _censored_sample(0, 20_000, mu, sigma, pi)
    est, se = _fit(y, censored, lower=0.0)
    truth = np.array([mu, sigma, pi])
    # 20,000 examples: standard errors of ~0.01-0.02; four of them bound a correct fit's miss
    assert (se < 0.05).all(), se
    assert (np.abs(est - truth) < 4 * se).all(), (est, truth, se)
    if mu < 0.5:  # a third of the returning mass would lie below 0 days untruncated
        naive, naive_se = _fit(y, censored, lower=NO_TRUNCATION)
        assert (np.abs(naive - truth) > 10 * naive_se).any(), (naive, truth, naive_se)


def _s_untruncated(days, mu, sigma, g):
    """The former, untruncated survival function (mass below 0 days), to show the test's power."""
    z = (np.log1p(days) - mu) / sigma
    pi = special.expit(g)
    return pi + (1 - pi) * special.ndtr(-z)


@pytest.mark.parametrize("mu_range, elapsed_max, power", [((-1.0, 1.5), 3.0, True), ((-0.5, 3.0), 30.0, False)])
def test_p_back_within_is_calibrated_by_decile(mu_range, elapsed_max, power):
    """Customers with their true parameters, asked as of a date before which they have not come
    back: within each decile of the predicted P(back within k days), the share that came back
    matches the mean prediction within four binomial standard errors. power: short gaps (mu near
    0), where the former, untruncated answers miss by more than six."""
    rng = np.random.default_rng(1)
    n = 40_000
    mu, sigma, g = rng.uniform(*mu_range, n), rng.uniform(0.3, 1.2, n), rng.uniform(-3.0, 1.0, n)
    t = _draw(rng, n, mu, sigma, special.expit(g))
    elapsed = rng.uniform(0.0, elapsed_max, n)
    waiting = t > elapsed  # as of the date, only customers not back yet are asked about
    t, mu, sigma, g, elapsed = t[waiting], mu[waiting], sigma[waiting], g[waiting], elapsed[waiting]
    for k in (7.0, 30.0):
        back = (t <= elapsed + k).astype(float)
        p = p_back_within(elapsed, k, mu, sigma, g)
        naive = 1 - _s_untruncated(elapsed + k, mu, sigma, g) / _s_untruncated(elapsed, mu, sigma, g)
        decile = np.minimum((np.argsort(np.argsort(p)) * 10) // len(p), 9)
        miss, naive_miss = [], []
        for d in range(10):
            sel = decile == d
            se = np.sqrt(np.sum(p[sel] * (1 - p[sel]))) / sel.sum()  # of the mean of independent Bernoullis
            miss.append(abs(back[sel].mean() - p[sel].mean()) / se)
            naive_miss.append(abs(back[sel].mean() - naive[sel].mean()) / se)
        assert max(miss) < 4.0, (k, np.round(miss, 2))
        if power:
            assert max(naive_miss) > 6.0, (k, np.round(naive_miss, 2))


MU = np.array([-30.0, -3.0, -0.5, 0.0, 0.3, 2.0, 5.0, 8.0])
SIGMA = np.array([1.0, 0.5, 1.5, 1.0, 0.8, 0.5, 0.05, 3.0])
G = np.array([-3.0, -2.0, 4.0, 0.0, 1.0, -5.0, -1.0, -20.0])


def test_survival_starts_at_one_and_never_rises():
    np.testing.assert_allclose(np.exp(log_survival(np.zeros(len(MU)), MU, SIGMA, G)), 1.0, rtol=0, atol=1e-15)
    days = np.r_[0.0, np.geomspace(1e-4, 1e5, 4000)][:, None]
    s = np.exp(log_survival(days, MU, SIGMA, G))
    assert (np.diff(s, axis=0) <= 1e-15).all()
    assert np.isfinite(s).all() and (s > 0).all()
    # and the far tail is the gone share: pi = sigmoid(g)
    np.testing.assert_allclose(s[-1, MU < 5], special.expit(G[MU < 5]), rtol=1e-6)


def test_training_loss_agrees_with_the_answers():
    """The float32 loss (centred scale, lower bound = minus the centre) against the float64 answers:
    an open interval's loss is -log S(e); S(0) = 1 costs nothing; the observed density over
    log1p(days) >= 0 integrates to 1 - pi."""
    center = 1.5
    out = np.stack([MU - center, np.log(np.expm1(SIGMA - SIGMA_MIN)), G], -1).astype(np.float32)
    out = out[1:]  # mu = -30 with sigma = 1 puts its mass at 1e-13 days: past float32 in the loss's centred scale
    mu, sigma, g = MU[1:], SIGMA[1:], G[1:]
    lower = np.full(len(out), -center, np.float32)
    for days in (0.0, 0.5, 3.0, 40.0):
        y = np.full(len(out), np.log1p(days) - center, np.float32)
        got = survival_nll(jnp.asarray(out), jnp.asarray(y), jnp.ones(len(out), jnp.float32), jnp.asarray(lower))
        np.testing.assert_allclose(-np.asarray(got), log_survival(np.full(len(out), days), mu, sigma, g), rtol=2e-4, atol=2e-6)
    # the density of log1p(T) over [0, mu + 12 sigma]: 1 - pi, not (1 - pi) * Q(z_0)
    x = np.linspace(0.0, np.maximum(mu, 0) + 12 * sigma, 20_001)  # [grid, customers]
    nll = survival_nll(jnp.asarray(np.broadcast_to(out, x.shape + (3,)).reshape(-1, 3)),
                       jnp.asarray((x - center).astype(np.float32).reshape(-1)), jnp.zeros(x.size, jnp.float32),
                       jnp.asarray(np.broadcast_to(lower, x.shape).reshape(-1)))
    mass = np.trapezoid(np.exp(-np.asarray(nll, np.float64).reshape(x.shape)), x, axis=0)
    np.testing.assert_allclose(mass, 1 - special.expit(g), rtol=2e-3)
