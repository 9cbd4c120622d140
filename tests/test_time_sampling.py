"""ndm.model.time_sampling: the one sampler of the NELBO's times and steps, and nelbo's use of it."""

from __future__ import annotations

import pytest
import torch

from ndm.model.schedules import build_schedule
from ndm.model.specs import ModelConfig, NetworkConfig
from ndm.model.time_sampling import draw_steps, draw_times, gamma_uniform_times
from ndm.model.variants import build_model

F64 = torch.float64


def test_uniform_times_are_one_stratified_row_per_batch():
    sched = build_schedule("linear")
    g = torch.Generator().manual_seed(0)
    t, w = draw_times(sched, 8, generator=g, dtype=F64)
    assert t.shape == (8,) and torch.equal(w, torch.ones_like(t))
    gaps = torch.diff(torch.sort(t).values)
    torch.testing.assert_close(gaps, torch.full_like(gaps, 1 / 8), rtol=0, atol=1e-12)
    # one uniform for the whole batch: the generator's next draw is its second number
    g2 = torch.Generator().manual_seed(0)
    torch.rand(1, generator=g2, dtype=F64)
    assert torch.rand(1, generator=g, dtype=F64).item() == torch.rand(1, generator=g2, dtype=F64).item()


def test_times_per_example_are_stratified_rows():
    sched = build_schedule("linear")
    t, _ = draw_times(sched, 5, 4, generator=torch.Generator().manual_seed(1), dtype=F64)
    rows = torch.sort(t.view(5, 4), dim=1).values
    torch.testing.assert_close(torch.diff(rows, dim=1), torch.full((5, 3), 0.25, dtype=F64), rtol=0, atol=1e-12)
    assert rows[:, 0].unique().numel() == 5  # each example its own offset


@pytest.mark.parametrize("name", ["ddpm", "flow", "cosine"])
def test_gamma_sampling_is_uniform_in_gamma_and_its_weight_integrates_dt(name):
    sched = build_schedule(name)
    t, w = draw_times(sched, 4000, sampling="gamma", generator=torch.Generator().manual_seed(2), dtype=F64)
    gamma = sched.values(t).gamma
    ends = sched.values(torch.tensor([0.0, 1.0], dtype=F64)).gamma
    gaps = torch.diff(torch.sort(gamma).values)
    torch.testing.assert_close(gaps, torch.full_like(gaps, float(ends[1] - ends[0]) / 4000), rtol=1e-6, atol=1e-9)
    torch.testing.assert_close(w, (ends[1] - ends[0]) / sched.values(t).dgamma, rtol=1e-12, atol=0)
    # E_u[w] = int_0^1 dt = 1: the weight makes the estimate of any integral over t unbiased
    assert abs(w.mean().item() - 1.0) < 1e-3
    assert (w > 0).all() and w.std() > 0.1  # a real importance weight, not a constant


def test_gamma_uniform_times_on_a_grid_hits_the_end_points():
    sched = build_schedule("ddpm")
    t, _ = gamma_uniform_times(sched, torch.linspace(0.0, 1.0, 5, dtype=F64))
    torch.testing.assert_close(t[[0, -1]], torch.tensor([0.0, 1.0], dtype=F64), rtol=0, atol=1e-9)


def test_unknown_time_sampling_is_refused():
    with pytest.raises(ValueError, match="time sampling must be one of"):
        draw_times(build_schedule("linear"), 4, sampling="antithetic")


def test_steps():
    g = torch.Generator().manual_seed(3)
    one = draw_steps(10, 64, generator=g)
    assert one.shape == (64,) and one.min() >= 1 and one.max() <= 10
    assert torch.equal(draw_steps(5, 2, 7), torch.tensor([1, 2, 3, 4, 5] * 2))
    strat = draw_steps(100, 3, 4, generator=g).view(3, 4)
    # k strata of width T / k: one step in each quarter of 1..100, in some rotation
    quarters = torch.sort((strat - 1) // 25, dim=1).values
    assert torch.equal(quarters, torch.arange(4).expand(3, 4))


@pytest.mark.parametrize("time_sampling", ["uniform", "gamma"])
def test_nelbo_draws_eps0_eps_t_then_times(time_sampling):
    """nelbo's diffusion term is w(t) L_diff(t) at the times draw_times gives after the two noise draws."""
    m = build_model(ModelConfig(variant="ndm", network=NetworkConfig(kind="mlp", hidden=16, depth=1), parameterization="x"), (4,), None).double()
    x = torch.randn(6, 4, dtype=F64, generator=torch.Generator().manual_seed(4))
    torch.manual_seed(0)
    terms = m.nelbo(x, time_sampling=time_sampling)
    torch.manual_seed(0)
    _, eps_t = torch.randn_like(x), torch.randn_like(x)
    t, w = draw_times(m.schedule, 6, sampling=time_sampling, dtype=F64)
    torch.testing.assert_close(terms.diffusion, m.diffusion_loss(x, t, eps_t)[0] * w, rtol=1e-12, atol=1e-12)
