"""Schedules: monotonicity, end points, derivatives against finite differences."""

import math

import pytest
import torch

from ndm.model.schedules import (
    CosineSchedule,
    DDPMSchedule,
    FlowSchedule,
    LearnedSchedule,
    LinearSchedule,
    invert_gamma,
)

ALL = {
    "linear": lambda: LinearSchedule(),
    "ddpm": lambda: DDPMSchedule(),
    "cosine": lambda: CosineSchedule(),
    "flow": lambda: FlowSchedule(),
    "learned": lambda: LearnedSchedule().double(),
}
T_GRID = torch.linspace(0.0, 1.0, 1001, dtype=torch.float64)


@pytest.mark.parametrize("name", ALL)
def test_gamma_increasing_and_derivatives_match_finite_differences(name):
    sched = ALL[name]()
    v = sched.values(T_GRID)
    assert torch.all(v.gamma[1:] > v.gamma[:-1]), "gamma must increase in t"
    assert torch.all(v.dgamma > 0)
    t = torch.linspace(0.02, 0.98, 49, dtype=torch.float64)
    h = 1e-6
    vp, vm = sched.values(t + h), sched.values(t - h)
    v = sched.values(t)
    for field, deriv in [("gamma", "dgamma"), ("alpha", "dalpha"), ("sigma", "dsigma")]:
        fd = (getattr(vp, field) - getattr(vm, field)) / (2 * h)
        torch.testing.assert_close(getattr(v, deriv), fd, rtol=1e-6, atol=1e-8)
    # gamma = log(sigma^2 / alpha^2) for every schedule
    torch.testing.assert_close(v.gamma, torch.log(v.sigma**2 / v.alpha**2), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("name", ["linear", "ddpm", "cosine", "learned"])
def test_variance_preserving(name):
    v = ALL[name]().values(T_GRID)
    torch.testing.assert_close(v.alpha**2 + v.sigma**2, torch.ones_like(T_GRID), rtol=0, atol=1e-12)


def test_linear_and_cosine_end_points():
    for sched in (LinearSchedule(-13.3, 5.0), CosineSchedule(-13.3, 5.0)):
        g = sched.values(torch.tensor([0.0, 1.0], dtype=torch.float64)).gamma
        torch.testing.assert_close(g, torch.tensor([-13.3, 5.0], dtype=torch.float64))


def test_ddpm_schedule_matches_discrete_product():
    """alpha_bar_i = prod_{j<=i}(1 - beta_j) of DDPM vs our continuous gamma at the same step."""
    sched = DDPMSchedule()
    n = 1000
    betas = torch.linspace(1e-4, 0.02, n, dtype=torch.float64)
    alpha_bar = torch.cumprod(1 - betas, 0)
    steps = torch.tensor([1, 10, 100, 500, 1000])
    t = (steps - 1).double() / (n - 1)  # t = 0 is DDPM's step 1, t = 1 its step N
    v = sched.values(t)
    ours = v.alpha**2
    ref = alpha_bar[steps - 1]
    # first step exactly beta_1; later steps agree to the continuous approximation's O(beta)
    assert abs(v.gamma[0].item() - math.log(1e-4 / (1 - 1e-4))) < 1e-6
    # -log alpha_bar agrees up to sum beta^3 / 3 < 1e-3 (absolute, in the log)
    assert torch.all((torch.log(ours) - torch.log(ref)).abs() < 1e-3)


def test_flow_schedule_is_the_linear_path():
    v = FlowSchedule(eps=1e-3).values(torch.tensor([0.0, 0.5, 1.0], dtype=torch.float64))
    torch.testing.assert_close(v.alpha, torch.tensor([1.0, 1 - 0.999 / 2, 1e-3], dtype=torch.float64))
    torch.testing.assert_close(v.sigma, torch.tensor([1e-3, 1e-3 + 0.999 / 2, 1.0], dtype=torch.float64))


def test_learned_schedule_initial_end_points():
    sched = LearnedSchedule().double()
    g = sched.values(torch.tensor([0.0, 1.0], dtype=torch.float64)).gamma
    torch.testing.assert_close(g, torch.tensor([-13.3, 5.0], dtype=torch.float64), rtol=0, atol=1e-5)  # float32 init


def test_learned_schedule_stays_monotone_under_adversarial_training():
    """Push gamma's interior towards a decreasing shape; it must stay increasing."""
    sched = LearnedSchedule(n_features=64)
    opt = torch.optim.Adam(sched.parameters(), lr=0.1)
    t = torch.linspace(0, 1, 64)
    for _ in range(200):
        v = sched.values(t)
        loss = ((v.gamma - (5.0 - 18.0 * t)) ** 2).mean()  # a decreasing target
        opt.zero_grad()
        loss.backward()
        opt.step()
    g = sched.values(torch.linspace(0, 1, 2001)).gamma
    assert torch.all(g[1:] > g[:-1])
    assert loss.item() > 1.0  # it could not follow the decreasing target


@pytest.mark.parametrize("name", ALL)
def test_invert_gamma(name):
    sched = ALL[name]()
    t = torch.rand(100, dtype=torch.float64)
    g = sched.values(t).gamma.detach()
    torch.testing.assert_close(invert_gamma(sched, g), t, rtol=0, atol=1e-9)
