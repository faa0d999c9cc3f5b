"""The next interval as a distribution: when will a customer come back, if at all.

The survival head outputs three numbers per window, (m, s, g). The next interval T in days is
  never, with probability pi = sigmoid(g) (the customer is gone), and otherwise
  log1p(T) ~ Normal(mu, sigma), with mu = m + centre and sigma = softplus(s) + SIGMA_MIN.
The survival function is S(t) = P(T > t) = pi + (1 - pi) * Q((log1p(t) - mu) / sigma), with Q
the standard normal upper tail.

Why a log-normal on log1p(days): the point head already works on log1p(days), so both heads share
one centre and one set of inputs. log1p(interval) of real customers is roughly symmetric. The
log-normal hazard rises and then falls, so a customer well past their usual gap becomes less likely
to return each day, as happens in real logs.

Why a "gone" share: without it every customer returns eventually, and a customer long overdue
would look "due any moment". With it, Bayes turns elapsed time into evidence: P(gone | no visit
in e days) = pi / S(e), which goes to 1 once e is well past the customer's usual gaps.

Loss, per window:
  an observed interval t:     -log(1 - pi) - log phi(z) + log sigma   (the density of log1p(T))
  an open (censored) one, e days and counting:   -log S(e)
with z = (log1p(t) - mu) / sigma.

Training and prediction run in float32 under JAX; the conditional answers are computed in float64
numpy (scipy's ndtr family).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.stats import norm
from scipy import special

SIGMA_MIN = 0.02  # days-level jitter floor: a perfectly regular history must not give sigma -> 0


def survival_nll(out: jax.Array, y: jax.Array, censored: jax.Array) -> jax.Array:
    """[B] negative log-likelihood of the head's outputs out [B, 3] for targets y [B] (log1p(days)
    minus the centre), censored [B] (1: the interval is still open at y, 0: observed)."""
    mu, sigma, g = out[:, 0], jax.nn.softplus(out[:, 1]) + SIGMA_MIN, out[:, 2]
    z = (y - mu) / sigma
    log_density = jax.nn.log_sigmoid(-g) + norm.logpdf(z) - jnp.log(sigma)
    log_survival = jnp.logaddexp(jax.nn.log_sigmoid(g), jax.nn.log_sigmoid(-g) + norm.logsf(z))
    return -jnp.where(censored > 0, log_survival, log_density)


def head_params(out: np.ndarray, center: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(mu, sigma, logit of gone) in float64 from head outputs [P, 3]."""
    out = np.asarray(out, np.float64)
    return out[:, 0] + center, np.logaddexp(0.0, out[:, 1]) + SIGMA_MIN, out[:, 2]


def _log_sigmoid(g: np.ndarray) -> np.ndarray:
    return -np.logaddexp(0.0, -g)


def log_survival(days: np.ndarray, mu: np.ndarray, sigma: np.ndarray, g: np.ndarray) -> np.ndarray:
    """log S(days) = log P(T > days)."""
    z = (np.log1p(np.maximum(days, 0.0)) - mu) / sigma
    return np.logaddexp(_log_sigmoid(g), _log_sigmoid(-g) + special.log_ndtr(-z))


def p_back_within(elapsed: np.ndarray, k: float, mu: np.ndarray, sigma: np.ndarray, g: np.ndarray) -> np.ndarray:
    """P(a visit within k days | no visit in the `elapsed` days since the last one) = 1 - S(e + k) / S(e)."""
    return -np.expm1(log_survival(elapsed + k, mu, sigma, g) - log_survival(elapsed, mu, sigma, g))


def remaining_median(elapsed: np.ndarray, mu: np.ndarray, sigma: np.ndarray, g: np.ndarray) -> np.ndarray:
    """Days from now (`elapsed` days after the last visit) until P(back) reaches one half, given no
    visit so far: the t - e with S(t) = S(e) / 2. Infinite where the customer is more likely gone
    than back (pi >= S(e) / 2)."""
    pi = np.exp(_log_sigmoid(g))
    s_e = np.exp(log_survival(elapsed, mu, sigma, g))
    tail = (s_e / 2 - pi) / np.maximum(1 - pi, 1e-300)  # = Q(z_t) of the returning part
    out = np.full(len(np.atleast_1d(elapsed)), np.inf)
    ok = tail > 0
    z = -special.ndtri(np.clip(tail[ok], 1e-300, 1.0))
    out[ok] = np.maximum(np.expm1(mu[ok] + sigma[ok] * z) - elapsed[ok], 0.0)
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
