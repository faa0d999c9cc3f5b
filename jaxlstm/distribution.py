"""The next interval as a distribution: when will a customer come back, if at all.

The survival head outputs three numbers per window, (m, s, g). The next interval T in days is
  never, with probability pi = sigmoid(g) (the customer is gone), and otherwise
  log1p(T) ~ Normal(mu, sigma) truncated to log1p(T) >= 0 (T >= 0 days), with mu = m + centre and
  sigma = softplus(s) + SIGMA_MIN.
With z_t = (log1p(t) - mu) / sigma, Q the standard normal upper tail and z_0 = -mu / sigma (t = 0),
the survival function is
  S(t) = P(T > t) = pi + (1 - pi) * Q(z_t) / Q(z_0),   so S(0) = 1,
and the returning part's density of log1p(T) is phi(z) / (sigma * Q(z_0)).

Why truncated: an interval is never negative. The untruncated normal puts (1 - pi) * Q(-z_0) of
its mass below 0 days, which matters where mu is near 0 (customers who come back within a day or
two): the training loss then fits a distribution whose returning part partly lies at impossible
gaps, and every answer, which conditions on T > e >= 0, would be computed from the wrong shape.

Why a log-normal on log1p(days): the point head already works on log1p(days), so both heads share
one centre and one set of inputs. log1p(interval) of real customers is roughly symmetric. The
log-normal hazard rises and then falls, so a customer well past their usual gap becomes less likely
to return each day, as happens in real logs.

Why a "gone" share: without it every customer returns eventually, and a customer long overdue
would look "due any moment". With it, Bayes turns elapsed time into evidence: P(gone | no visit
in e days) = pi / S(e), which goes to 1 once e is well past the customer's usual gaps.

Loss, per window (targets and bounds in log1p days minus the centre, as the head's m):
  an observed interval t:     -log(1 - pi) - log phi(z_t) + log sigma + log Q(z_0)
  an open (censored) one, e days and counting:   -log S(e)
Every log Q is computed as a log tail (log_ndtr), so a mu far below 0, where Q(z_0) underflows,
stays finite.

Training and prediction run in float32 under JAX; the conditional answers are computed in float64
numpy (scipy's ndtr family).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import log_ndtr
from jax.scipy.stats import norm
from scipy import special

SIGMA_MIN = 0.02  # days-level jitter floor: a perfectly regular history must not give sigma -> 0


def survival_nll(out: jax.Array, y: jax.Array, censored: jax.Array, lower: jax.Array) -> jax.Array:
    """[B] negative log-likelihood of the head's outputs out [B, 3] for targets y [B] (log1p(days)
    minus the centre), censored [B] (1: the interval is still open at y, 0: observed) and lower [B],
    where 0 days lies on the same scale (minus the centre): the returning part is truncated there."""
    mu, sigma, g = out[:, 0], jax.nn.softplus(out[:, 1]) + SIGMA_MIN, out[:, 2]
    z, z0 = (y - mu) / sigma, (lower - mu) / sigma
    log_q0 = log_ndtr(-z0)  # log Q(z_0): the returning part's mass at T >= 0
    log_density = jax.nn.log_sigmoid(-g) + norm.logpdf(z) - jnp.log(sigma) - log_q0
    log_survival = jnp.logaddexp(jax.nn.log_sigmoid(g), jax.nn.log_sigmoid(-g) + log_ndtr(-z) - log_q0)
    return -jnp.where(censored > 0, log_survival, log_density)


def head_params(out: np.ndarray, center: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(mu, sigma, logit of gone) in float64 from head outputs [P, 3]."""
    out = np.asarray(out, np.float64)
    return out[:, 0] + center, np.logaddexp(0.0, out[:, 1]) + SIGMA_MIN, out[:, 2]


def _log_sigmoid(g: np.ndarray) -> np.ndarray:
    return -np.logaddexp(0.0, -g)


def _log_returning_tail(days: np.ndarray, mu: np.ndarray, sigma: np.ndarray) -> np.ndarray:
    """log P(T > days | the customer returns) = log Q(z_t) - log Q(z_0)."""
    z = (np.log1p(np.maximum(days, 0.0)) - mu) / sigma
    return special.log_ndtr(-z) - special.log_ndtr(mu / sigma)


def log_survival(days: np.ndarray, mu: np.ndarray, sigma: np.ndarray, g: np.ndarray) -> np.ndarray:
    """log S(days) = log P(T > days); 0 at 0 days."""
    return np.logaddexp(_log_sigmoid(g), _log_sigmoid(-g) + _log_returning_tail(days, mu, sigma))


def p_back_within(elapsed: np.ndarray, k: float, mu: np.ndarray, sigma: np.ndarray, g: np.ndarray) -> np.ndarray:
    """P(a visit within k days | no visit in the `elapsed` days since the last one) = 1 - S(e + k) / S(e)."""
    return -np.expm1(log_survival(elapsed + k, mu, sigma, g) - log_survival(elapsed, mu, sigma, g))


def remaining_median(elapsed: np.ndarray, mu: np.ndarray, sigma: np.ndarray, g: np.ndarray) -> np.ndarray:
    """Days from now (`elapsed` days after the last visit) until P(back) reaches one half, given no
    visit so far: the t - e with S(t) = S(e) / 2. Infinite where the customer is more likely gone
    than back (pi >= S(e) / 2).

    With R(t) = Q(z_t) / Q(z_0) the returning part's tail, S(t) = S(e) / 2 solves to
    R(t) = (R(e) - e^g) / 2 (e^g = pi / (1 - pi)); that is solved for z_t in log space, so a tail
    far below float64's smallest number still gives a finite day count."""
    elapsed = np.broadcast_to(np.asarray(elapsed, np.float64), np.shape(mu))
    log_r_e = _log_returning_tail(elapsed, mu, sigma)
    out = np.full(np.shape(mu), np.inf)
    ok = g < log_r_e  # R(e) > e^g, i.e. pi < S(e) / 2
    with np.errstate(divide="ignore"):  # log of 0 where R(e) == e^g exactly: excluded by ok
        log_gap = log_r_e + np.log(-np.expm1(np.minimum(g - log_r_e, 0.0)))  # log(R(e) - e^g)
    log_q_t = special.log_ndtr(mu / sigma) + log_gap - np.log(2.0)  # log Q(z_t)
    z = -special.ndtri_exp(np.where(ok, log_q_t, -1.0))
    out[ok] = np.maximum(np.expm1(mu[ok] + sigma[ok] * z[ok]) - elapsed[ok], 0.0)
    return out


def expected_wait(elapsed: np.ndarray, horizon: float, mu: np.ndarray, sigma: np.ndarray, g: np.ndarray,
                  steps: int = 180) -> np.ndarray:
    """E[min(days until the next visit, horizon) | no visit in `elapsed` days], the restricted mean:
    the integral of S(e + u) / S(e) over u in [0, horizon] (trapezoids). Always finite, so it ranks
    everyone, those likely gone included (at the horizon when surely gone), where the median is
    infinite for most customers of a log where few come back."""
    u = np.linspace(0.0, horizon, steps + 1)
    base = log_survival(elapsed, mu, sigma, g)
    total = np.zeros(np.shape(elapsed))
    for i, x in enumerate(u):  # summed as it goes: [N] memory, not [N, steps]
        weight = 0.5 if i in (0, steps) else 1.0
        total += weight * np.exp(log_survival(elapsed + x, mu, sigma, g) - base)
    return total * (u[1] - u[0])


def gone_and_wait(elapsed: np.ndarray, mu: np.ndarray, sigma: np.ndarray, g: np.ndarray) -> dict[str, np.ndarray]:
    """{p_gone: P(never back | no visit in `elapsed` days) = pi / S(e); remaining_days_if_back: the median
    days from then to the next visit given the customer comes back (the returning part alone, pi = 0)}."""
    return {"p_gone": np.exp(_log_sigmoid(g) - log_survival(elapsed, mu, sigma, g)),
            "remaining_days_if_back": remaining_median(elapsed, mu, sigma, np.full_like(g, -np.inf))}
