"""Network sizes against the published ones (issue 29, "Sizes checked"): every network of
configs/reproduce.yaml and configs/paper.yaml that names a published network is built on the
meta device (no memory) and its parameter count compared within 0.5%; a network with a block
removed fails; the counted rows of configs/published_sizes.csv are recomputed from the official
VDM module's layer shapes."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
import yaml

from ndm.model.networks import build_network
from ndm.model.specs import NetworkConfig
from ndm.pipeline.config import ConfigError, resolve_run_config, run_seeds
from ndm.pipeline.network_sizes import SIZE_TOLERANCE, load_published_sizes, network_size

REPO = Path(__file__).resolve().parents[1]
CONFIGS = {name: yaml.safe_load((REPO / f"configs/{name}.yaml").read_text()) for name in ("reproduce", "paper")}


def official_vdm_score_unet_params(n_embd: int, n_layer: int, channels: int = 3, fourier_freqs: int = 2) -> int:
    """google-research/vdm model_vdm.py ScoreUNet (with_attention=False), layer by layer: Flax
    Dense/Conv carry a bias unless use_bias=False, GroupNorm a scale and a bias per channel."""
    c4 = 4 * n_embd
    cond = (n_embd + 1) * c4 + c4 + c4 * c4 + c4  # dense0 on [temb, conditioning], dense1
    conv_in = 9 * channels * (1 + 2 * fourier_freqs) * n_embd + n_embd  # z and its sin/cos features

    def resnet_block(c_in: int, c_out: int) -> int:
        p = 2 * c_in + 9 * c_in * c_out + c_out  # GroupNorm, conv1
        p += c4 * c_out  # cond_proj (use_bias=False)
        p += 2 * c_out + 9 * c_out * c_out + c_out  # GroupNorm, conv2
        return p + (c_in * c_out + c_out if c_in != c_out else 0)  # nin_shortcut

    attn = 2 * n_embd + 4 * (n_embd * n_embd + n_embd)  # GroupNorm, q, k, v, proj_out
    down = n_layer * resnet_block(n_embd, n_embd)
    mid = 2 * resnet_block(n_embd, n_embd) + attn
    up = (n_layer + 1) * resnet_block(2 * n_embd, n_embd)
    out = 2 * n_embd + 9 * n_embd * channels + channels
    return cond + conv_in + down + mid + up + out


def test_counted_rows_are_the_official_modules_counts():
    table = load_published_sizes()
    assert table["vdm-cifar10"].params == official_vdm_score_unet_params(128, 32)
    assert table["vdm-imagenet32"].params == official_vdm_score_unet_params(256, 32)
    assert table["vdm-imagenet64"].params == official_vdm_score_unet_params(256, 64)
    assert all(table[n].counted for n in ("vdm-cifar10", "vdm-imagenet32", "vdm-imagenet64")) and not table["ddpm-cifar10"].counted


def _named_sizes(config: dict):
    for dataset in config["datasets"]:
        for variant in config["variants"]:
            if run_seeds(config, dataset, variant):
                yield network_size(config, dataset, variant)


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_every_named_network_has_its_published_size(name):
    checked = []
    for size in _named_sizes(CONFIGS[name]):
        for role, ref in size.published.items():
            err = size.relative_error(role)
            assert abs(err) < SIZE_TOLERANCE, (
                f"{name}: {size.dataset}/{size.variant} {role} has {getattr(size, role):,} parameters, {ref.name} {ref.params:,} ({err:+.2%})"
            )
            checked.append((size.dataset, size.variant, role))
    # the test must compare something: the rows that have a published network
    expected = {
        "reproduce": {("vdm-cifar10", "vdm", "x_hat"), ("vdm-imagenet32", "vdm", "x_hat"), ("vdm-imagenet64", "vdm", "x_hat"),
                      ("ddpm-cifar10", "ddpm", "x_hat"), ("ndm-cifar10", "ndm", "x_hat"), ("ndm-cifar10", "ndm", "F")},
        "paper": {("cifar10", "ddpm", "x_hat"), ("cifar10", "ndm", "x_hat"), ("cifar10", "ndm", "F")},
    }[name]  # fmt: skip
    assert expected <= set(checked), sorted(expected - set(checked))


@pytest.mark.parametrize(
    "dataset, change",
    [
        ("vdm-cifar10", {"num_res_blocks": 31}),  # one residual block fewer on each side
        ("ddpm-cifar10", {"attn_resolutions": []}),  # the attention blocks at 16x16
        ("ddpm-cifar10", {"num_res_blocks": 1}),
        ("vdm-imagenet64", {"num_res_blocks": 63}),
    ],
)
def test_a_network_with_a_block_removed_fails_the_comparison(dataset, change):
    config = copy.deepcopy(CONFIGS["reproduce"])
    config["datasets"][dataset]["model"]["network"].update(change)
    variant = config["datasets"][dataset]["variants"][0]
    size = network_size(config, dataset, variant)
    assert abs(size.relative_error("x_hat")) > SIZE_TOLERANCE


def test_vdm_kind_is_the_one_resolution_unet_and_refuses_unet_settings():
    """kind vdm: conv_in, n blocks, middle block-attention-block, n + 1 blocks on the skips; a
    forward pass (and the t-derivative pass an F needs) runs and starts at zero output."""
    cfg = NetworkConfig(kind="vdm", channels=32, num_res_blocks=2, fourier_features=[6, 7])
    net = build_network(cfg, (3, 8, 8), 256)
    assert len(net.down) == 2 and len(net.up) == 3 and len(net.mid) == 3
    assert not any(len(blocks) > 1 for blocks in [*net.down, *net.up])  # no attention outside the middle
    x, t = torch.randn(2, 3, 8, 8), torch.rand(2)
    out, dout = net(x, t, time_derivative=True)
    assert torch.equal(out, torch.zeros_like(out)) and out.shape == x.shape and dout.shape == x.shape
    config = copy.deepcopy(CONFIGS["reproduce"])
    config["datasets"]["vdm-cifar10"]["model"]["network"]["channel_mult"] = [1, 2]
    with pytest.raises(ConfigError, match="kind vdm is VDM's ResNet at one resolution .* drop channel_mult and attn_resolutions"):
        resolve_run_config(config, "vdm-cifar10", "vdm", 0)


def test_a_dataset_runs_only_its_own_variants():
    config = CONFIGS["reproduce"]
    runs = {(d, v) for d in config["datasets"] for v in config["variants"] if run_seeds(config, d, v)}
    assert runs == {(d, s["variants"][0]) for d, s in config["datasets"].items()}
    from ndm.pipeline.config_check import check_pipeline_config

    schema = yaml.safe_load((REPO / "workflow/schemas/config.schema.yaml").read_text())
    check_pipeline_config(config, schema)
    bad = copy.deepcopy(config)
    bad["datasets"]["vdm-cifar10"]["variants"] = ["flow"]
    with pytest.raises(ConfigError, match="'flow' is not in the top-level variants"):
        check_pipeline_config(bad, schema)
