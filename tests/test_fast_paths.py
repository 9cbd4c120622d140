"""The fast paths of issue 8 against their references, in float64.

- The hand-written forward-mode pass net(x, t, time_derivative=True) (U-Net, MLP) equals
  torch.func.jvp in value and tangent, and its parameter gradients equal finite differences
  (torch 2.14's backward through torch.func.jvp of LayerNorm does not: shown here).
- The restructured continuous loss (one forward-mode pass at x, one at x_hat, no F pass at
  t = 0) equals the original batched-JVP form to 1e-12.
- The time-separable F (transform_time: separable): dF/dt against central finite differences,
  F(x, 0) = x, a fresh one is the identity, its continuous loss against the drift form with an
  independent dF/dt, and the prior term from the shared pass equals a direct F(x, 1).
- discretized_nll's sync-free window (max_scale) gives the same loss as the synced one.
- A new option at its default leaves the run config hash unchanged.
"""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from ndm.pipeline.config import ConfigError, RunConfig, DataConfig, TrainConfig, validate_values
from ndm.model.diffusion import discretized_nll, levels_to_data
from ndm.model.networks import build_network
from ndm.model.specs import ModelConfig, NetworkConfig
from ndm.model.transforms import NeuralTransform, SeparableTransform
from ndm.model.variants import build_model

F64 = torch.float64
# channels 64: 32 groups of 2 channels, so the time embedding survives GroupNorm (with one
# channel per group a per-channel constant is normalised away and the U-Net ignores t).
UNET = NetworkConfig(kind="unet", channels=64, channel_mult=[1, 2], num_res_blocks=1, attn_resolutions=[4], fourier_features=[6, 8])
UNET_DEEP = NetworkConfig(kind="unet", channels=8, channel_mult=[1, 2, 2], num_res_blocks=2, attn_resolutions=[8, 4])
MLP = NetworkConfig(kind="mlp", hidden=32, depth=2, fourier_features=[1, 2])
UNET_PATCHED = NetworkConfig(kind="unet", channels=64, channel_mult=[1, 2], num_res_blocks=1, attn_resolutions=[4], fourier_features=[6, 8], patch_size=2)


def randomize(module: torch.nn.Module, std: float = 0.1, seed: int = 0) -> torch.nn.Module:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=p.dtype) * std)
    return module


def _flat(grads) -> torch.Tensor:
    return torch.cat([g.flatten() for g in grads])


@pytest.mark.parametrize("cfg,shape", [(UNET, (1, 8, 8)), (UNET_DEEP, (3, 16, 16)), (UNET_PATCHED, (3, 16, 16)), (MLP, (4,)), (NetworkConfig(kind="mlp", hidden=16, depth=2), (1, 4, 4))])
def test_manual_time_tangent_equals_functorch_jvp(cfg, shape):
    net = randomize(build_network(cfg, shape, 17).double().eval())
    g = torch.Generator().manual_seed(1)
    x = torch.randn(5, *shape, generator=g, dtype=F64)
    t = torch.rand(5, generator=g, dtype=F64)
    f_ref, d_ref = torch.func.jvp(lambda tt: net(x, tt), (t,), (torch.ones_like(t),))
    f, d = net(x, t, time_derivative=True)
    torch.testing.assert_close(f, f_ref, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(d, d_ref, rtol=1e-10, atol=1e-12)
    if cfg.kind == "unet":  # LayerNorm's JVP backward is wrong in torch (next test); GroupNorm's is right
        cf, cd = torch.randn(f.shape, generator=g, dtype=F64), torch.randn(d.shape, generator=g, dtype=F64)
        params = list(net.parameters())
        g_ref = _flat(torch.autograd.grad((f_ref * cf).sum() + (d_ref * cd).sum(), params))
        g_new = _flat(torch.autograd.grad((f * cf).sum() + (d * cd).sum(), params))
        assert (g_new - g_ref).norm() <= 1e-10 * g_ref.norm()


def test_patched_unet_is_the_unet_on_folded_patches():
    """patch_size p: the U-Net on pixel_unshuffle(x) (C p^2 channels at H/p), unfolded again;
    same parameters but for the first and last convolution, about 1/p^2 of the FLOPs."""
    from torch.utils.flop_counter import FlopCounterMode

    shape = (3, 16, 16)
    # attention at the same depth: at 8 x 8 in the 16 x 16 U-Net, at 4 x 4 in the patched one
    plain = build_network(dataclasses.replace(UNET_PATCHED, patch_size=1, attn_resolutions=[8]), shape, 17)
    patched = randomize(build_network(UNET_PATCHED, shape, 17).double().eval())
    x, t = torch.randn(2, *shape, dtype=F64), torch.rand(2, dtype=F64)
    inner = patched.net  # the U-Net itself, built for (12, 8, 8)
    assert inner.conv_in.in_channels == 12 + inner.n_fourier and inner.conv_out.out_channels == 12
    torch.testing.assert_close(patched(x, t), torch.nn.functional.pixel_shuffle(inner(torch.nn.functional.pixel_unshuffle(x, 2), t), 2))
    n_plain, n_patched = (sum(p.numel() for p in n.parameters()) for n in (plain, patched))
    assert abs(n_patched / n_plain - 1) < 0.05
    flops = []
    for net in (plain, patched.float()):
        with FlopCounterMode(display=False) as counter:
            net(x.float(), t.float())
        flops.append(counter.get_total_flops())
    assert 0.2 < flops[1] / flops[0] < 0.35
    with pytest.raises(ValueError, match="divide the image side"):
        build_network(NetworkConfig(kind="unet", patch_size=3), shape)
    with pytest.raises(ValueError, match="patch_size is for the U-Net"):
        build_network(NetworkConfig(kind="mlp", patch_size=2), (4,))


def test_config_rejects_patch_size_on_an_mlp():
    run = RunConfig("digits", DataConfig(), ModelConfig(variant="ndm", transform_network=NetworkConfig(kind="mlp", patch_size=2)), TrainConfig())
    with pytest.raises(ConfigError, match="transform_network.patch_size"):
        validate_values(run, "datasets.digits")


@pytest.mark.parametrize("cfg,shape", [(MLP, (4,)), (UNET, (1, 8, 8))])
def test_manual_time_tangent_gradients_equal_finite_differences(cfg, shape):
    """d/dtheta of <c_f, NN> + <c_d, dNN/dt> through the manual pass, against central differences
    along a random parameter direction. (torch.func.jvp's backward through LayerNorm misses
    the gradient through its mean and rstd: a 1e-3 relative error for this MLP.)"""
    net = randomize(build_network(cfg, shape, 17).double().eval(), seed=2)
    g = torch.Generator().manual_seed(3)
    x = torch.randn(4, *shape, generator=g, dtype=F64)
    t = torch.rand(4, generator=g, dtype=F64)
    cf, cd = torch.randn(4, *shape, generator=g, dtype=F64), torch.randn(4, *shape, generator=g, dtype=F64)
    params = list(net.parameters())
    direction = [torch.randn(p.shape, generator=g, dtype=F64) for p in params]

    def objective() -> torch.Tensor:
        f, d = net(x, t, time_derivative=True)
        return (f * cf).sum() + (d * cd).sum()

    analytic = sum((gr * v).sum() for gr, v in zip(torch.autograd.grad(objective(), params), direction))
    h = 1e-6
    with torch.no_grad():
        for p, v in zip(params, direction):
            p.add_(h * v)
        plus = objective()
        for p, v in zip(params, direction):
            p.sub_(2 * h * v)
        minus = objective()
        for p, v in zip(params, direction):
            p.add_(h * v)
    numeric = (plus - minus) / (2 * h)
    assert abs(float(analytic - numeric)) <= 1e-6 * max(1.0, abs(float(numeric)))


def _original_diffusion_loss(m, x, t, eps):
    """The pre-issue-8 code: F(x, t) forward, then one torch.func.jvp over the batch [x; x_hat]."""
    v = m.values(t)
    z = m._bc(v.alpha) * m.transform(x, t) + m._bc(v.sigma) * eps
    x_hat = m.x_hat(z, t, v)
    cat = torch.cat([x, x_hat])
    tt = torch.cat([t, t])
    both_f, both_df = torch.func.jvp(lambda s: m.transform(cat, s), (tt,), (torch.ones_like(tt),))
    n = x.shape[0]
    resid = m._bc(v.dgamma) * (both_f[:n] - both_f[n:]) - (both_df[:n] - both_df[n:])
    return 0.5 * v.snr / v.dgamma * m._sum(resid**2)


@pytest.mark.parametrize("variant,cfg,shape", [("ndm", UNET, (1, 8, 8)), ("ndm", MLP, (4,)), ("ndm-vdm", MLP, (4,)), ("ndm-blur", MLP, (4,)), ("ndm-latent", MLP, (4,))])
def test_restructured_continuous_loss_equals_original(variant, cfg, shape):
    m = build_model(ModelConfig(variant=variant, network=cfg, parameterization="x", blur_sigma_max=2.0), shape, 17).double().eval()
    randomize(m.net, seed=4)
    if m.transform.learned:
        randomize(m.transform, seed=5)
    g = torch.Generator().manual_seed(6)
    x = torch.randn(6, *shape, generator=g, dtype=F64) * 0.5
    eps = torch.randn(6, *shape, generator=g, dtype=F64)
    t = torch.rand(6, generator=g, dtype=F64) * 0.98 + 0.01
    new, _ = m.diffusion_loss(x, t, eps)
    torch.testing.assert_close(new, _original_diffusion_loss(m, x, t, eps), rtol=1e-11, atol=1e-12)
    # the reconstruction term without the F pass at t = 0 (F(x, 0) = x) equals the one with it
    if m.transform.identity_at_zero:
        t0 = torch.zeros(6, dtype=F64)
        torch.testing.assert_close(m.transform(x, t0), x, rtol=0, atol=1e-15)


def separable_model(shape=(4,), cfg=MLP, rank=3, variant="ndm"):
    m = build_model(ModelConfig(variant=variant, network=cfg, transform_time="separable", transform_rank=rank, parameterization="x"), shape, 17).double()
    assert isinstance(m.transform, SeparableTransform)
    return m


def test_separable_transform_boundary_identity_and_finite_differences():
    m = separable_model()
    g = torch.Generator().manual_seed(7)
    x = torch.randn(8, 4, generator=g, dtype=F64)
    t = torch.rand(8, generator=g, dtype=F64)
    f, df = m.transform.with_time_derivative(x, t)
    torch.testing.assert_close(f, x, rtol=0, atol=0)  # fresh: zero last layer, F = identity
    torch.testing.assert_close(df, torch.zeros_like(x), rtol=0, atol=0)
    randomize(m.transform, seed=8)
    torch.testing.assert_close(m.transform(x, torch.zeros(8, dtype=F64)), x, rtol=0, atol=1e-15)
    f, df = m.transform.with_time_derivative(x, t)
    torch.testing.assert_close(f, m.transform(x, t), rtol=1e-14, atol=1e-14)
    h = 1e-5
    fd = (m.transform(x, t + h) - m.transform(x, t - h)) / (2 * h)
    torch.testing.assert_close(df, fd, rtol=1e-7, atol=1e-8)
    # and against forward-mode AD through its forward
    _, df_jvp = torch.func.jvp(lambda tt: m.transform(x, tt), (t,), (torch.ones_like(t),))
    torch.testing.assert_close(df, df_jvp, rtol=1e-12, atol=1e-12)
    assert not torch.allclose(df, torch.zeros_like(df))


@pytest.mark.parametrize("variant,cfg,shape", [("ndm", MLP, (4,)), ("ndm-vdm", MLP, (4,)), ("ndm", UNET, (1, 8, 8))])
def test_separable_continuous_loss_equals_drift_form(variant, cfg, shape):
    """L_diff = 1/2 ||b(z,t,x) - b(z,t,x_hat)||^2 / g^2 with the drifts built from F and a
    finite-difference dF/dt (independent of the separable code's own derivative)."""
    m = separable_model(shape, cfg, variant=variant)
    randomize(m.net, seed=9)
    randomize(m.transform, seed=10)
    g = torch.Generator().manual_seed(11)
    x = torch.randn(8, *shape, generator=g, dtype=F64) * 0.5
    eps = torch.randn(8, *shape, generator=g, dtype=F64)
    t = torch.rand(8, generator=g, dtype=F64) * 0.98 + 0.01
    loss, x_hat = m.diffusion_loss(x, t, eps)
    v = m.values(t)
    z = m._bc(v.alpha) * m.transform(x, t) + m._bc(v.sigma) * eps

    def reverse_drift(xx):
        h = 1e-5
        f = m.transform(xx, t)
        df = (m.transform(xx, t + h) - m.transform(xx, t - h)) / (2 * h)
        mu, dmu = m._bc(v.alpha) * f, m._bc(v.dalpha) * f + m._bc(v.alpha) * df
        return dmu + (m._bc(v.dsigma / v.sigma) + m._bc(0.5 * v.dgamma)) * (z - mu)

    from_drifts = 0.5 * m._sum((reverse_drift(x) - reverse_drift(x_hat)) ** 2) / v.g2
    torch.testing.assert_close(loss, from_drifts, rtol=1e-6, atol=1e-9)
    # the drift code path of the model (used by the samplers) agrees with the same loss
    b_x, b_hat = m.drifts(z, t, x), m.drifts(z, t, x_hat)
    torch.testing.assert_close(loss, 0.5 * m._sum((b_x["reverse"] - b_hat["reverse"]) ** 2) / b_x["g2"], rtol=1e-9, atol=1e-12)


def test_separable_prior_from_shared_pass_equals_direct():
    m = separable_model()
    randomize(m.transform, seed=12)
    randomize(m.net, seed=13)
    x = torch.randn(6, 4, dtype=F64, generator=torch.Generator().manual_seed(14))
    t1 = torch.ones(6, dtype=F64)
    _, _, f1 = m.transform.with_time_derivative_and_value(x, torch.rand(6, dtype=F64), t1)
    torch.testing.assert_close(m.prior_loss(x, f1), m.prior_loss(x), rtol=1e-14, atol=0)
    torch.manual_seed(0)
    shared = m.nelbo(x)
    torch.manual_seed(0)
    terms = m.nelbo(x)
    torch.testing.assert_close(shared.prior, m.prior_loss(x), rtol=1e-14, atol=0)
    torch.testing.assert_close(shared.total, terms.total, rtol=0, atol=0)


@pytest.mark.parametrize("variant,kw", [("ndm", {}), ("ndm", {"transform_time": "separable"}), ("ndm-latent", {}), ("ndm-blur", {}), ("vdm", {})])
def test_nelbo_with_shared_passes_equals_separate_terms(variant, kw):
    """nelbo reuses F passes (F(x, 0) = x, a separable or time-independent F's one pass for the
    prior and reconstruction terms); each term equals the one computed on its own."""
    from ndm.model.time_sampling import draw_times

    m = build_model(ModelConfig(variant=variant, network=MLP, parameterization="x", blur_sigma_max=2.0, **kw), (4,), 17).double().eval()
    randomize(m.net, seed=16)
    if m.transform.learned:
        randomize(m.transform, seed=17)
    x = torch.randn(6, 4, dtype=F64, generator=torch.Generator().manual_seed(18)) * 0.5
    torch.manual_seed(0)
    terms = m.nelbo(x)
    torch.manual_seed(0)
    eps0, eps_t = torch.randn_like(x), torch.randn_like(x)
    t, _ = draw_times(m.schedule, 6, dtype=F64)
    torch.testing.assert_close(terms.reconstruction, m.reconstruction_loss(x, eps0), rtol=1e-13, atol=1e-13)
    torch.testing.assert_close(terms.diffusion, m.diffusion_loss(x, t, eps_t)[0], rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(terms.prior, m.prior_loss(x), rtol=1e-13, atol=1e-13)


def test_discretized_nll_window_without_sync_matches():
    g = torch.Generator().manual_seed(15)
    levels = 256
    x = levels_to_data(torch.randint(0, levels, (4, 3, 4, 4), generator=g), levels, dtype=F64)
    scale = torch.full((4, 1, 1, 1), math.exp(-13.3 / 2) / math.sqrt(1 / (1 + math.exp(-13.3))), dtype=F64)
    mean = x + torch.randn(x.shape, generator=g, dtype=F64) * 0.01
    synced = discretized_nll(x, mean, scale, levels)
    torch.testing.assert_close(discretized_nll(x, mean, scale, levels, max_scale=float(scale.max())), synced, rtol=0, atol=0)
    m = build_model(ModelConfig(variant="vdm-fixed", network=UNET_DEEP), (3, 4, 4), levels).double()
    bound = m.reconstruction_scale_bound()
    v0 = m.values(torch.zeros(1, dtype=F64))
    assert bound == pytest.approx(float(v0.sigma / v0.alpha), rel=1e-5) and bound >= float(v0.sigma / v0.alpha)
    assert build_model(ModelConfig(variant="vdm", network=UNET_DEEP), (3, 4, 4), levels).reconstruction_scale_bound() is None


def test_transform_time_option_validated_and_hash_stable_at_default():
    run = RunConfig("digits", DataConfig(), ModelConfig(variant="ndm"), TrainConfig())
    d = run.to_dict()
    from ndm.pipeline.config import HASH_OMIT_AT_DEFAULT, config_hash

    # Every option added after results existed, at its default, is left out of the hash.
    for *parents, key in HASH_OMIT_AT_DEFAULT:
        node = d
        for name in parents:
            node = node.get(name) if isinstance(node, dict) else None
        if isinstance(node, dict):  # transform_network is None here: nothing to leave out
            node.pop(key)

    assert run.hash() == config_hash(d)  # adding the options did not change existing hashes
    sep = RunConfig("digits", DataConfig(), ModelConfig(variant="ndm", transform_time="separable"), TrainConfig())
    assert sep.hash() != run.hash()
    patched = RunConfig("digits", DataConfig(), ModelConfig(variant="ndm", transform_network=NetworkConfig(patch_size=2)), TrainConfig())
    assert patched.hash() != RunConfig("digits", DataConfig(), ModelConfig(variant="ndm", transform_network=NetworkConfig()), TrainConfig()).hash()
    bad = RunConfig("digits", DataConfig(), ModelConfig(variant="ndm", transform_time="finite-difference"), TrainConfig())
    with pytest.raises(ConfigError, match="transform_time"):
        validate_values(bad, "datasets.digits")
    assert isinstance(build_model(ModelConfig(variant="ndm", network=MLP), (4,), None).transform, NeuralTransform)
