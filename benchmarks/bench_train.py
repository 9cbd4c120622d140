"""Training step time, images/s, FLOPs and peak memory per variant; the ndm/ddpm step ratio per F option.

Shapes: `digits` (1x8x8, the x_hat network of configs/default.yaml, F of the same size) and `cifar10` (3x32x32, the
paper's U-Net of configs/paper.yaml: channels 128, mult [1,2,2,2], 2 res blocks, attention
at 16, dropout 0.1, Fourier features; --ci shrinks it to channels 32, mult [1,2], 1 block).
A step is what ndm.pipeline.train does per step: training_loss, backward, grad-norm clip, AdamW, EMA.

Rows (variant/option): every variant of the shape's config, plus for `ndm` the ways to get
F and dF/dt (docs/performance.md):
    ndm/jvp               the default: F = x + t NN(x,t), one forward-mode pass in t at x
                          (also gives z_t's F) and one at x_hat, by the hand-written tangent
                          pass of the U-Net/MLP; F(x,0) = x costs nothing
    ndm/jvp-functorch     the same loss with torch.func.jvp for the tangent
    ndm/original          the baseline (first version): F(x,t) forward, then torch.func.jvp over the
                          batch [x; x_hat] (the forward at x twice), plus F passes at t = 0, 1
    ndm/separable         F = x + t sum_k cos(k pi t) G_k(x): one G pass at x and one at x_hat
                          give F, dF/dt and the prior's F(x, 1)
    ndm/separable-small-F the same with F's channels / sqrt(2) (about half the FLOPs and
                          parameters of x_hat)
    ndm/separable-patch2  the separable F with x_hat's architecture run on 2x2 patches folded
                          into channels (network.patch_size 2): the same parameters as x_hat
                          (up to the first and last convolution), about 1/4 of its FLOPs
    ndm/jvp-patch2        the paper's F = x + t NN(x,t) with that patched NN
    ndm/jvp-config-F      the paper's F with the config's own F network (digits: the MLP F of
                          configs/default.yaml and the study)
Every ndm row has an F network with x_hat's parameter count except separable-small-F and jvp-config-F; the
jvp, jvp-functorch, original and separable rows have x_hat's architecture as well.

Timing: rounds over all rows, interleaved (one step of each row per round), after warm-up
steps; a row's ratio to ddpm is the median over rounds of (its step / ddpm's step in the
same round), so load from other jobs on a shared machine hits both alike. FLOPs: counted
by torch.utils.flop_counter for one step (matmul and convolution FLOPs, forward and backward;
machine independent). Peak memory: CUDA max_memory_allocated; on CPU the peak RSS above the
pre-step level during one step (after a warm-up step, so optimizer state is not counted),
sampled every 0.5 ms by a thread, in a subprocess started with MALLOC_MMAP_THRESHOLD_=4096 so
that glibc returns every freed tensor to the OS and the RSS follows the live tensors.

Precision: the training loss (bits/dim) of ddpm, ndm and ndm/separable with randomised last
layers on one fixed batch (same t, same noise) in fp32, under bf16 autocast of the whole loss,
and with bf16 autocast for the x_hat network only (what train.precision bf16 does), with the
relative error of the gradient; on CUDA, or on the CPU's bf16 autocast.

    python benchmarks/bench_train.py                 # digits + paper CIFAR-10 U-Net (batch 4)
    python benchmarks/bench_train.py --ci            # tiny: a few rounds, small batches
    python benchmarks/bench_train.py --shapes cifar10 --batch-size 8 --rounds 7
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import torch
from _common import machine_info, write_report  # noqa: E402  (benchmarks/ is on sys.path: scripts run from it)
from torch import nn

from ndm.pipeline.config import ConfigError, load_yaml, resolve_run_config
from ndm.model.diffusion import bits_per_dim
from ndm.model.specs import VARIANTS, ModelConfig, NetworkConfig, get_variant
from ndm.model.variants import build_model

ROOT = Path(__file__).resolve().parents[1]
SHAPES = {
    # name: (config file, dataset section, event shape, levels, default batch size (full, --ci))
    "digits": ("configs/default.yaml", "digits", (1, 8, 8), 17, (128, 32)),
    "cifar10": ("configs/paper.yaml", "cifar10", (3, 32, 32), 256, (4, 2)),
}
CI_NETWORKS = {
    "cifar10": NetworkConfig(kind="unet", channels=32, channel_mult=[1, 2], num_res_blocks=1, attn_resolutions=[16], dropout=0.1, fourier_features=[7, 8]),
}
NDM_OPTIONS = ("jvp", "jvp-functorch", "original", "separable", "separable-small-F", "separable-patch2", "jvp-patch2", "jvp-config-F")
TARGET_RATIO = 2.0


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ci", action="store_true", help="tiny run: rows ddpm, ndm/jvp, ndm/separable, ndm/separable-patch2; small CIFAR U-Net; small batches; 2 rounds")
    p.add_argument("--shapes", default="digits,cifar10", help="comma-separated from " + ",".join(SHAPES))
    p.add_argument("--variants", default=None, help="comma-separated variants (default: the config's variants; --ci: ddpm,ndm)")
    p.add_argument("--options", default=None, help="ndm options, comma-separated from " + ",".join(NDM_OPTIONS) + " (default: all; --ci: jvp,separable,separable-patch2)")
    p.add_argument("--batch-size", type=int, default=None, help="override every shape's batch size")
    p.add_argument("--rounds", type=int, default=None, help="timed rounds (default 5; --ci 3)")
    p.add_argument("--warmup", type=int, default=1, help="untimed steps per row before the rounds")
    p.add_argument("--device", default="auto", help="cpu | cuda | auto")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1; 0 = torch's choice)")
    p.add_argument("--precision", default="fp32", choices=["fp32", "bf16"], help="bf16: autocast for the x_hat network, as train.precision bf16")
    p.add_argument("--channels-last", action="store_true", help="models in channels_last memory format (as train.channels_last)")
    p.add_argument("--compile", action="store_true", help="torch.compile the networks (as train.compile); the first step's time is reported")
    p.add_argument("--no-memory", action="store_true", help="skip the peak-memory step")
    p.add_argument("--no-precision-check", action="store_true", help="skip the fp32 vs bf16 loss comparison")
    p.add_argument("--out", type=Path, default=None, help="JSON path (default results/benchmarks/bench_train[_ci].json)")
    p.add_argument("--memory-worker", action="store_true", help=argparse.SUPPRESS)  # internal: the CPU memory subprocess
    return p.parse_args()


# ------------------------------------------------------------------ models


def _small(cfg: NetworkConfig) -> NetworkConfig:
    """The same network with channels / sqrt(2) (rounded to a multiple of 4): about half the FLOPs."""
    small = copy.deepcopy(cfg)
    if cfg.kind == "unet":
        small.channels = max(4, 4 * round(cfg.channels / math.sqrt(2) / 4))
    else:
        small.hidden = max(4, 4 * round(cfg.hidden / math.sqrt(2) / 4))
    return small


def _patched(cfg: NetworkConfig, patch_size: int) -> NetworkConfig:
    """The same U-Net on patch_size x patch_size patches folded into channels: the same
    parameters (but for the first and last convolution), about 1 / patch_size^2 of the FLOPs.
    Attention stays at the same depth of the U-Net (its resolutions are divided too)."""
    if cfg.kind != "unet":
        raise SystemExit(f"the -patch2 options need a U-Net F, got {cfg.kind}")
    patched = copy.deepcopy(cfg)
    patched.patch_size = patch_size
    patched.attn_resolutions = [r // patch_size for r in cfg.attn_resolutions]
    return patched


def model_config(shape: str, variant: str, option: str, ci: bool) -> tuple[ModelConfig, dict]:
    """The shape's config for this variant (network, parameterization), with the option applied."""
    path, dataset, *_ = SHAPES[shape]
    config = load_yaml(ROOT / path)
    try:
        run = resolve_run_config(config, dataset, variant, 0)
    except ConfigError:  # e.g. paper.yaml's 'eps' for a variant with a learned F: use 'x' as for ndm
        section = config["datasets"][dataset].setdefault("variant_overrides", {})
        section[variant] = {"model": {"parameterization": "x"}}
        run = resolve_run_config(config, dataset, variant, 0)
    cfg = run.model
    # The comparison is with an F network of the same size as x_hat (as configs/paper.yaml runs it), whatever the
    # config runs (configs/default.yaml gives digits a small MLP F to fit a CPU); jvp-config-F keeps the config's F.
    configured_f = cfg.transform_network
    cfg.transform_network = configured_f if option == "jvp-config-F" else None
    if ci and shape in CI_NETWORKS:
        cfg.network = copy.deepcopy(CI_NETWORKS[shape])
    if option.startswith("separable"):
        cfg.transform_time = "separable"
    if option == "separable-small-F":
        cfg.transform_network = _small(cfg.transform_network or cfg.network)
    if option.endswith("-patch2"):
        cfg.transform_network = _patched(cfg.transform_network or cfg.network, 2)
    return cfg, {"batch_size": run.train.batch_size, "time_sampling": run.train.time_sampling, "loss": run.train.loss, "loss_steps": run.train.loss_steps}


def randomize_zero_layers(model: nn.Module, seed: int = 0, scale: float = 0.1) -> None:
    """Give the zero-initialised last layers small random weights, N(0, scale^2 / fan_in) (a fresh
    model's F is the identity and its x_hat the linear skip: a trained model's are not)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() > 1 and not p.any():
                fan_in = p[0].numel()
                p.copy_(torch.randn(p.shape, generator=g, dtype=torch.float32).to(p) * (scale / math.sqrt(fan_in)))


# ---------------------------------------------------- the baseline: the first implementation's loss


def legacy_training_loss(model, x: torch.Tensor, time_sampling: str) -> torch.Tensor:
    """The continuous-time training loss exactly as ndm.model.diffusion first computed it:
    F(x, 0) and F(x, 1) passes, F(x, t) forward, then one torch.func.jvp over [x; x_hat]
    (which repeats the forward at x), and the reconstruction window read off the device."""
    from ndm.model.diffusion import discretized_nll
    from ndm.model.time_sampling import draw_times

    b = x.shape[0]
    box: dict = {}
    eps0, eps_t = torch.randn_like(x), torch.randn_like(x)
    t0 = torch.zeros(b, dtype=x.dtype, device=x.device)
    v0 = model.values(t0)
    z0 = model._bc(v0.alpha) * model.transform(x, t0) + model._bc(v0.sigma) * eps0
    mean = z0 / model._bc(v0.alpha) if model.transform.identity_at_zero else model.x_hat(z0, t0, v0)
    recon = model._sum(discretized_nll(x, mean, model._bc(v0.sigma / v0.alpha), model.levels))
    t1 = torch.ones(b, dtype=x.dtype, device=x.device)
    v1 = model.values(t1)
    s2 = model._bc(v1.sigma**2)
    prior = model._sum(0.5 * (s2 + model._bc(v1.alpha**2) * model.transform(x, t1) ** 2 - 1.0 - torch.log(s2)))
    t, weight = draw_times(model.schedule, b, sampling=time_sampling, device=x.device, dtype=x.dtype)
    v = model.schedule.values(t, box)
    z = model._bc(v.alpha) * model.transform(x, t) + model._bc(v.sigma) * eps_t
    x_hat = model.x_hat(z, t, v)
    if model.transform.is_identity:
        diff = 0.5 * v.snr * v.dgamma * model._sum((x - x_hat) ** 2)
    else:
        both, tt = torch.cat([x, x_hat]), torch.cat([t, t])
        f, df = torch.func.jvp(lambda s: model.transform(both, s), (tt,), (torch.ones_like(tt),))
        resid = model._bc(v.dgamma) * (f[:b] - f[b:]) - (df[:b] - df[b:])
        diff = 0.5 * v.snr / v.dgamma * model._sum(resid**2)
    diff = diff * weight
    scale = bits_per_dim(1.0, model.dims)
    box["weight"] = 2.0 * diff.detach() * scale
    return (recon + diff + prior).mean() * scale


# ------------------------------------------------------------------ one row


class Row:
    """One (variant, option): model, optimizer, EMA copy, and the step the training loop takes."""

    def __init__(self, shape: str, variant: str, option: str, args, device: torch.device):
        self.shape, self.variant, self.option = shape, variant, option
        self.name = variant if option == "default" else f"{variant}/{option}"
        cfg, train = model_config(shape, variant, option, args.ci)
        self.cfg, self.train = cfg, train
        _, _, event_shape, levels, _ = SHAPES[shape]
        torch.manual_seed(0)
        self.model = build_model(cfg, event_shape, levels).to(device)
        if option == "jvp-functorch":
            self.model.transform.tangent = "functorch"
        if args.channels_last and len(event_shape) == 3:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.ema = copy.deepcopy(self.model).requires_grad_(False)
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=1e-4, betas=(0.9, 0.99))
        self.params = list(self.model.parameters())
        self.ema_params = list(self.ema.parameters())
        self.compile_s = None
        if args.compile:
            self.model.net.compile()
            if self.model.transform.learned:
                self.model.transform.net.compile()
        self.device = device
        if args.precision == "bf16":  # as train.precision bf16: autocast for the x_hat network only
            self.model.x_hat_autocast = torch.bfloat16
        self.n_steps = None if train["loss"] == "continuous" else train["loss_steps"]
        self.times: list[float] = []

    def step(self, x: torch.Tensor) -> None:
        if self.option == "original":
            loss = legacy_training_loss(self.model, x, self.train["time_sampling"])
        else:
            loss, _ = self.model.training_loss(x, self.n_steps, self.train["time_sampling"])
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(self.params, float("inf"))
        self.opt.step()
        with torch.no_grad():
            torch._foreach_lerp_(self.ema_params, self.params, 1.0 - 0.999)

    def timed_step(self, x: torch.Tensor) -> float:
        sync(self.device)
        start = time.perf_counter()
        self.step(x)
        sync(self.device)
        return time.perf_counter() - start

    def n_params(self) -> tuple[int, int]:
        return sum(p.numel() for p in self.model.net.parameters()), sum(p.numel() for p in self.model.transform.parameters())


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# ------------------------------------------------------------------ memory


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def peak_memory_mb(row: Row, x: torch.Tensor) -> float | None:
    """Peak memory of one step above the level before it, in MiB."""
    if row.device.type == "cuda":
        sync(row.device)
        torch.cuda.reset_peak_memory_stats(row.device)
        base = torch.cuda.memory_allocated(row.device)
        row.step(x)
        sync(row.device)
        return (torch.cuda.max_memory_allocated(row.device) - base) / 2**20
    if not os.path.exists("/proc/self/statm"):
        return None
    row.opt.zero_grad(set_to_none=True)  # grads count in the step, as after zero_grad in the loop
    base = _rss_bytes()
    peak = [base]
    done = threading.Event()

    def poll() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], _rss_bytes())
            time.sleep(0.0005)

    thread = threading.Thread(target=poll, daemon=True)
    thread.start()
    try:
        row.step(x)
    finally:
        done.set()
        thread.join()
    peak[0] = max(peak[0], _rss_bytes())
    return (peak[0] - base) / 2**20


def step_flops(row: Row, x: torch.Tensor) -> float | None:
    """Matmul/conv FLOPs of one step (forward + backward), counted by torch's FlopCounterMode."""
    try:
        from torch.utils.flop_counter import FlopCounterMode

        with FlopCounterMode(display=False) as counter:
            row.step(x)
        return float(counter.get_total_flops())
    except Exception as exc:  # a counter that cannot see through an op must not stop the benchmark
        print(f"  (FLOP count failed for {row.name}: {type(exc).__name__}: {str(exc)[:120]})")
        return None


# --------------------------------------------------------------- precision


def precision_check(shape: str, variants: list[tuple[str, str]], args, device: torch.device, batch: int) -> dict:
    """Training loss in bits/dim and its gradient in fp32, under bf16 autocast of the whole loss,
    and with bf16 for the x_hat network only (train.precision bf16): same batch, t and noise."""
    out = {}
    _, _, event_shape, levels, _ = SHAPES[shape]
    g = torch.Generator().manual_seed(123)
    x = (2.0 * (torch.randint(0, levels, (batch, *event_shape), generator=g).float() + 0.5) / levels - 1.0).to(device)
    for variant, option in variants:
        cfg, train = model_config(shape, variant, option, args.ci)
        torch.manual_seed(0)
        model = build_model(cfg, event_shape, levels).to(device).eval()  # eval: no dropout, same function
        randomize_zero_layers(model)
        results = {}
        for mode in ("fp32", "bf16_all", "bf16_x_hat"):
            ctx = torch.autocast(device.type, dtype=torch.bfloat16) if mode == "bf16_all" else contextlib.nullcontext()
            model.x_hat_autocast = torch.bfloat16 if mode == "bf16_x_hat" else None
            torch.manual_seed(7)
            model.zero_grad(set_to_none=True)
            with ctx:
                loss, terms = model.training_loss(x, None, train["time_sampling"])
            loss.backward()
            grad = torch.cat([p.grad.flatten().float() for p in model.parameters() if p.grad is not None])
            per_example = bits_per_dim(terms.total.detach().float(), model.dims)
            results[mode] = (float(loss.detach()), per_example, grad)
        model.x_hat_autocast = None
        l32, e32, g32 = results["fp32"]
        name = variant if option == "default" else f"{variant}/{option}"
        rec = {"loss_bpd_fp32": l32}
        line = f"  {shape:8s} {name:16s} fp32 {l32:10.5f} bits/dim"
        for mode in ("bf16_all", "bf16_x_hat"):
            lm, em, gm = results[mode]
            rec[mode] = {
                "loss_bpd": lm,
                "abs_diff_bpd": abs(lm - l32),
                "max_abs_diff_bpd_per_example": float((em - e32).abs().max()),
                "grad_rel_error": float((gm - g32).norm() / g32.norm().clamp_min(1e-30)),
            }
            line += f" | {mode}: |diff| {abs(lm - l32):.1e} (per example max {rec[mode]['max_abs_diff_bpd_per_example']:.1e}), grad rel err {rec[mode]['grad_rel_error']:.1e}"
        out[name] = rec
        print(line)
    return out


# --------------------------------------------------------------------- main


def rows_for(shape: str, args) -> list[tuple[str, str]]:
    path, dataset, *_ = SHAPES[shape]
    if args.variants:
        variants = [v for v in args.variants.split(",") if v]
    elif args.ci:
        variants = ["ddpm", "ndm"]
    else:
        variants = list(load_yaml(ROOT / path).get("variants") or VARIANTS)
    if "ddpm" not in variants:
        variants.insert(0, "ddpm")  # the reference of every ratio
    options = [o for o in (args.options or ("jvp,separable,separable-patch2" if args.ci else ",".join(NDM_OPTIONS))).split(",") if o]
    for o in options:
        if o not in NDM_OPTIONS:
            raise SystemExit(f"unknown option {o!r}; choose from {NDM_OPTIONS}")
    out = []
    for v in variants:
        get_variant(v)
        if v == "ndm":
            out += [("ndm", o) for o in options]
        else:
            out.append((v, "default"))
    return out


def run_shape(shape: str, args, device: torch.device) -> tuple[list[Row], torch.Tensor, dict]:
    _, _, event_shape, levels, (batch_full, batch_ci) = SHAPES[shape]
    batch = args.batch_size or (batch_ci if args.ci else batch_full)
    rounds = args.rounds or (2 if args.ci else 5)
    g = torch.Generator().manual_seed(0)
    x = (2.0 * (torch.randint(0, levels, (batch, *event_shape), generator=g).float() + 0.5) / levels - 1.0).to(device)
    if args.channels_last and len(event_shape) == 3:
        x = x.contiguous(memory_format=torch.channels_last)
    rows = [Row(shape, v, o, args, device) for v, o in rows_for(shape, args)]
    print(f"\n== {shape} {tuple(event_shape)}, batch {batch}, x_hat network {rows[0].cfg.network}")

    # the baseline loss and the current one agree (same model, same RNG draws; eval: no dropout)
    check = {}
    if any(r.option == "original" for r in rows):
        cfg, train = model_config(shape, "ndm", "jvp", args.ci)
        torch.manual_seed(0)
        m = build_model(cfg, event_shape, levels).to(device).eval()
        randomize_zero_layers(m)
        torch.manual_seed(3)
        new, _ = m.training_loss(x, None, train["time_sampling"])
        torch.manual_seed(3)
        old = legacy_training_loss(m, x, train["time_sampling"])
        check = {"loss_bpd_current": float(new), "loss_bpd_original": float(old), "abs_diff": abs(float(new) - float(old))}
        print(f"   original vs current ndm loss, one batch, randomised weights: {float(old):.6f} vs {float(new):.6f} bits/dim")

    for row in rows:
        row.model.train()
        for i in range(args.warmup):
            t = row.timed_step(x)
            if i == 0 and args.compile:
                row.compile_s = t
    for _ in range(rounds):
        for row in rows:
            row.times.append(row.timed_step(x))

    ddpm = next(r for r in rows if r.variant == "ddpm")
    results = []
    print(f"{'row':<24} {'params x_hat':>12} {'params F':>10} {'median s':>9} {'min s':>8} {'img/s':>8} {'ratio':>6} {'GFLOP':>8} {'FLOP ratio':>10}")
    flops_ddpm = None
    for row in rows:
        px, pf = row.n_params()
        med = statistics.median(row.times)
        ratio = statistics.median(t / d for t, d in zip(row.times, ddpm.times))
        flops = step_flops(row, x)
        if row is ddpm:
            flops_ddpm = flops
        rec = {
            "row": row.name,
            "variant": row.variant,
            "option": row.option,
            "transform_time": row.cfg.transform_time,
            "params_x_hat": px,
            "params_F": pf,
            "F_network": str(row.cfg.transform_network or row.cfg.network) if pf else None,
            "step_s_median": med,
            "step_s_min": min(row.times),
            "step_s_all": row.times,
            "images_per_s": batch / med,
            "ratio_to_ddpm": ratio,
            "ratio_of_medians": med / statistics.median(ddpm.times),
            "flops_per_step": flops,
            "flop_ratio_to_ddpm": (flops / flops_ddpm) if flops and flops_ddpm else None,
            "peak_memory_mib": None,  # measured after all timing (main)
            "compile_first_step_s": row.compile_s,
        }
        results.append(rec)
        print(
            f"{row.name:<24} {px:>12,} {pf:>10,} {med:>9.4f} {min(row.times):>8.4f} {batch / med:>8.1f} {ratio:>6.2f} "
            f"{(flops or 0) / 1e9:>8.2f} {rec['flop_ratio_to_ddpm'] or float('nan'):>10.2f}",
            flush=True,
        )
    ratios = {r["option"]: r["ratio_to_ddpm"] for r in results if r["variant"] == "ndm"}
    for option, ratio in ratios.items():
        verdict = "meets" if ratio <= TARGET_RATIO else "misses"
        print(f"   ndm/{option} / ddpm step time: {ratio:.2f}x ({verdict} the {TARGET_RATIO}x target)")
    return rows, x, {
        "event_shape": list(event_shape),
        "batch_size": batch,
        "rounds": rounds,
        "network": str(rows[0].cfg.network),
        "rows": results,
        "ndm_ddpm_ratio": ratios,
        "ndm_ddpm_flop_ratio": {r["option"]: r["flop_ratio_to_ddpm"] for r in results if r["variant"] == "ndm"},
        "original_vs_current_loss": check,
    }


def memory_in_subprocess() -> dict:
    """Run this script's memory worker (same arguments) with glibc returning freed memory."""
    argv = [a for a in sys.argv[1:]] + ["--memory-worker"]
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "4096"}
    proc = subprocess.run([sys.executable, str(Path(__file__).resolve()), *argv], env=env, capture_output=True, text=True, cwd=os.getcwd())
    if proc.returncode != 0:
        print(f"  (memory worker failed: {proc.stderr.strip()[-500:]})")
        return {}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def memory_worker(args, device: torch.device) -> int:
    """Peak memory of one step per row (after one warm-up step), printed as one JSON line."""
    out: dict = {}
    for shape in [s for s in args.shapes.split(",") if s]:
        _, _, event_shape, levels, (batch_full, batch_ci) = SHAPES[shape]
        batch = args.batch_size or (batch_ci if args.ci else batch_full)
        g = torch.Generator().manual_seed(0)
        x = (2.0 * (torch.randint(0, levels, (batch, *event_shape), generator=g).float() + 0.5) / levels - 1.0).to(device)
        out[shape] = {}
        for variant, option in rows_for(shape, args):
            row = Row(shape, variant, option, args, device)
            row.step(x)
            out[shape][row.name] = peak_memory_mb(row, x)
            del row
    print(json.dumps(out))
    return 0


def main() -> int:
    args = parse_args()
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else ("cpu" if args.device == "auto" else args.device))
    if args.memory_worker:
        return memory_worker(args, device)
    shapes = [s for s in args.shapes.split(",") if s]
    for s in shapes:
        if s not in SHAPES:
            raise SystemExit(f"unknown shape {s!r}; choose from {list(SHAPES)}")
    out_path = args.out or Path(f"results/benchmarks/bench_train{'_ci' if args.ci else ''}.json")
    load_before = os.getloadavg()
    report: dict = {
        "benchmark": "train",
        "ci": args.ci,
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else (platform.processor() or platform.machine()),
        "precision": args.precision,
        "channels_last": args.channels_last,
        "compile": args.compile,
        "target_ratio": TARGET_RATIO,
        "shapes": {},
        "ndm_ddpm_ratio": {},
    }
    kept = {}
    for shape in shapes:
        rows, x, res = run_shape(shape, args, device)
        kept[shape] = (rows, x)
        report["shapes"][shape] = res
        report["ndm_ddpm_ratio"][shape] = res["ndm_ddpm_ratio"]
    if not args.no_memory:
        print("\n== peak memory of one step above the level before it (MiB)")
        if device.type == "cuda":
            memory = {shape: {row.name: peak_memory_mb(row, x) for row in rows} for shape, (rows, x) in kept.items()}
        else:
            memory = memory_in_subprocess()
        for shape in shapes:
            for rec in report["shapes"][shape]["rows"]:
                rec["peak_memory_mib"] = memory.get(shape, {}).get(rec["row"])
                mib = rec["peak_memory_mib"]
                print(f"  {shape:8s} {rec['row']:<24} {mib if mib is not None else float('nan'):9.1f}")
    del kept
    if not args.no_precision_check:
        print("\n== bf16 autocast vs fp32: training loss on one fixed batch (randomised weights, eval mode)")
        report["bf16_vs_fp32"] = {}
        for shape in shapes:
            batch = min(report["shapes"][shape]["batch_size"], 4 if args.ci else 16)
            report["bf16_vs_fp32"][shape] = precision_check(shape, [("ddpm", "default"), ("ndm", "jvp"), ("ndm", "separable")], args, device, batch)
    report["machine"] = machine_info(load_before)
    write_report(out_path, report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
