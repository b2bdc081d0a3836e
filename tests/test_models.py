"""Tests of distdiff.nn layers and distdiff.models networks and presets (CPU, tiny shapes)."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch.nn import functional as F

from distdiff.models import (
    FAMILIES,
    KLVAE,
    DDGANDiscriminator,
    DDGANGenerator,
    UNet,
    build_model,
    ddgan_num_timesteps,
    minibatch_stddev,
    model_from_config,
    preset_kwargs,
    preset_names,
)
from distdiff.nn.embeddings import positional_embedding
from distdiff.nn.resample import FIRDownsampleConv, FIRResample
from distdiff.nn import (
    AdaptiveGroupNorm,
    AttentionBlock,
    Downsample,
    PixelNorm,
    ResBlock,
    Upsample,
    timestep_embedding,
    valid_num_groups,
)


pytestmark = pytest.mark.usefixtures("one_thread")


def randomize_zero_params(model: torch.nn.Module, std: float = 0.05) -> torch.nn.Module:
    """Give (almost) zero-initialised parameters random values, so outputs depend on every input at init.

    The DDGAN networks start residual branches at 1e-10-scale weights rather than exact zeros.
    """
    gen = torch.Generator().manual_seed(1234)
    with torch.no_grad():
        for p in model.parameters():
            if p.abs().max() < 1e-4:
                p.copy_(torch.randn(p.shape, generator=gen) * std)
    return model


def num_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# ----------------------------------------------------------------------------- nn layers


def test_timestep_embedding_values_and_shapes():
    t = torch.tensor([0, 1, 999])
    emb = timestep_embedding(t, 64)
    assert emb.shape == (3, 64) and emb.dtype == torch.float32
    # t = 0: cos part is 1 and sin part 0.
    assert torch.allclose(emb[0, :32], torch.ones(32)) and torch.allclose(emb[0, 32:], torch.zeros(32))
    # The first frequency is 1: cos(t), sin(t).
    assert math.isclose(emb[1, 0].item(), math.cos(1.0), rel_tol=1e-5)
    assert math.isclose(emb[1, 32].item(), math.sin(1.0), rel_tol=1e-5)
    assert not torch.allclose(emb[1], emb[2])
    # Float timesteps and odd widths.
    emb_odd = timestep_embedding(torch.tensor([0.5, 2.5]), 7)
    assert emb_odd.shape == (2, 7) and torch.all(emb_odd[:, -1] == 0)
    assert torch.allclose(timestep_embedding(torch.tensor([3]), 16), timestep_embedding(torch.tensor([3.0]), 16))


def test_valid_num_groups_divides_channels():
    assert valid_num_groups(128) == 32
    assert valid_num_groups(16) == 16
    assert valid_num_groups(48) == 24
    assert valid_num_groups(3) == 3
    for ch in range(1, 70):
        g = valid_num_groups(ch)
        assert ch % g == 0 and 1 <= g <= 32


def test_adaptive_group_norm_starts_as_plain_group_norm_then_modulates():
    norm = AdaptiveGroupNorm(32, 16, style_dim=8)
    x = torch.randn(2, 16, 4, 4)
    style = torch.randn(2, 8)
    expected = F.group_norm(x, valid_num_groups(16), eps=1e-6)
    # At init gamma = 1 + W s, beta = W' s; with W zeroed it is exactly a GroupNorm.
    with torch.no_grad():
        norm.style.weight.zero_()
    assert torch.allclose(norm(x, style), expected, atol=1e-5)
    with torch.no_grad():
        norm.style.weight.normal_()
    assert not torch.allclose(norm(x, style), expected, atol=1e-3)


def test_pixel_norm_unit_rms():
    z = torch.randn(5, 100) * 7
    out = PixelNorm()(z)
    assert torch.allclose(out.pow(2).mean(dim=1), torch.ones(5), atol=1e-4)


def test_resblock_shapes_identity_at_init_and_embedding_effect():
    block = ResBlock(16, 32, emb_dim=8, dropout=0.0)
    x, emb = torch.randn(2, 16, 8, 8), torch.randn(2, 8)
    out = block(x, emb)
    assert out.shape == (2, 32, 8, 8)
    # The residual branch ends in a zero-initialised conv, so the block starts as its skip path.
    assert torch.allclose(out, block.skip(x))
    randomize_zero_params(block)
    assert not torch.allclose(block(x, emb), block(x, torch.randn(2, 8)))
    same = ResBlock(16, 16, emb_dim=None, groups=4)
    assert same.norm1.num_groups == 4 and isinstance(same.skip, torch.nn.Identity)
    assert same(x).shape == x.shape
    with pytest.raises(ValueError, match="embedding"):
        block(x, None)


def test_positional_embedding_is_sine_first_with_exact_lowest_frequency():
    emb = positional_embedding(torch.tensor([0, 3]), 8)
    assert emb.shape == (2, 8)
    assert torch.equal(emb[0], torch.tensor([0.0] * 4 + [1.0] * 4))  # sin(0) then cos(0)
    freqs = 10000.0 ** (-torch.arange(4) / 3.0)  # the last one is exactly 1 / 10000
    assert torch.allclose(emb[1], torch.cat([torch.sin(3 * freqs), torch.cos(3 * freqs)]), atol=1e-6)


def test_fir_downsample_pins_the_kernel_and_keeps_constants():
    x = torch.zeros(1, 1, 4, 4)
    x[..., 1, 1] = 1.0
    down = FIRResample("down")(x)
    assert torch.allclose(down[0, 0], torch.tensor([[9.0, 3.0], [3.0, 1.0]]) / 64)  # [1,3,3,1]^2 / 64
    ones = torch.ones(2, 3, 16, 16)
    assert torch.allclose(FIRResample("down")(ones)[..., 1:-1, 1:-1], torch.ones(2, 3, 6, 6))
    up = FIRResample("up")(ones)
    assert up.shape == (2, 3, 32, 32) and torch.allclose(up[..., 2:-2, 2:-2], torch.ones(2, 3, 28, 28))
    conv = FIRDownsampleConv(3, 5)
    assert conv(torch.randn(2, 3, 16, 16)).shape == (2, 5, 8, 8)
    with pytest.raises(ValueError, match="up' or 'down"):
        FIRResample("sideways")


def test_attention_block_matches_naive_attention():
    torch.manual_seed(0)
    block = randomize_zero_params(AttentionBlock(16, num_heads=2))
    x = torch.randn(2, 16, 4, 4)
    # Naive multi-head attention reference.
    tokens = block.norm(x).reshape(2, 16, 16).permute(0, 2, 1)  # (B, L, C)
    q, k, v = block.qkv(tokens).reshape(2, 16, 3, 2, 8).permute(2, 0, 3, 1, 4)  # each (B, heads, L, hd)
    weights = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(8), dim=-1)  # (B, heads, L, L)
    attended = (weights @ v).permute(0, 2, 1, 3).reshape(2, 16, 16)  # (B, L, C)
    expected = x + block.proj(attended).permute(0, 2, 1).reshape(2, 16, 4, 4)
    assert torch.allclose(block(x), expected, atol=1e-5)
    with pytest.raises(ValueError, match="num_heads"):
        AttentionBlock(10, num_heads=3)


def test_down_and_upsample_shapes():
    x = torch.randn(2, 8, 16, 16)
    assert Downsample(8)(x).shape == (2, 8, 8, 8)
    assert Upsample(8)(x).shape == (2, 8, 32, 32)


# ----------------------------------------------------------------------------- presets: shapes


# Spatial sizes that keep the large presets fast while respecting each one's downsampling.
_IMAGE_SIZES = {
    ("vae", "tiny"): 16, ("vae", "mnist-f4"): 32, ("vae", "mnist-f8"): 32, ("vae", "stacked-f4"): 32,
    ("vae", "kl-f4"): 16, ("vae", "kl-f8"): 16,
    ("unet", "tiny"): 16, ("unet", "small"): 8, ("unet", "trilemma"): 8, ("unet", "ddpm-cifar10"): 32,
    ("unet", "ldm-latent32"): 16, ("unet", "ldm-celebahq256"): 8,
    ("ddgan_generator", "tiny"): 8, ("ddgan_generator", "small"): 8, ("ddgan_generator", "trilemma"): 8,
    ("ddgan_generator", "ddgan-cifar10"): 16, ("ddgan_generator", "ddgan-stackedmnist"): 16,
    ("ddgan_generator", "ddgan-celebahq256"): 32,
    ("ddgan_discriminator", "tiny"): 16, ("ddgan_discriminator", "small"): 8,
    ("ddgan_discriminator", "trilemma"): 8,
    ("ddgan_discriminator", "ddgan-cifar10"): 32, ("ddgan_discriminator", "ddgan-stackedmnist"): 32,
    ("ddgan_discriminator", "ddgan-celebahq256"): 64,
    ("seg_unet", "tiny"): 48, ("seg_unet", "small"): 100, ("seg_unet", "unet-seg-paper"): 188,  # valid sides
}

# The DDGAN paper's networks, counted with the official NVlabs/denoising-diffusion-gan modules built
# from the same arguments (48.43 M is the paper's CIFAR-10 generator). distdiff's layers also give the
# official outputs when loaded with the same weights (checked once, outside the suite).
PAPER_PARAMETER_COUNTS = {
    ("ddgan_generator", "ddgan-cifar10"): 48_432_515,
    ("ddgan_discriminator", "ddgan-cifar10"): 12_741_633,
    ("ddgan_generator", "ddgan-stackedmnist"): 48_432_515,
    ("ddgan_discriminator", "ddgan-stackedmnist"): 12_741_633,
    ("ddgan_generator", "ddgan-celebahq256"): 39_726_979,
    ("ddgan_discriminator", "ddgan-celebahq256"): 27_737_217,
}


def test_every_preset_has_a_test_size():
    listed = {(family, name) for family in FAMILIES for name in preset_names(family)}
    assert listed == set(_IMAGE_SIZES)


@pytest.mark.parametrize("family,name", sorted(_IMAGE_SIZES))
@torch.no_grad()
def test_preset_forward_shapes(family, name):
    torch.manual_seed(0)
    model = build_model(family, name).eval()
    size = _IMAGE_SIZES[(family, name)]
    cin = model.model_config["kwargs"]["in_channels"]
    x = torch.randn(2, cin, size, size)
    if family == "vae":
        f = model.downsample_factor
        raw, mean, logvar = model(x)
        assert raw.shape == x.shape
        assert mean.shape == logvar.shape == (2, model.latent_channels, size // f, size // f)
    elif family == "unet":
        out = model(x, torch.tensor([0, 999]))
        assert out.shape == (2, model.out_channels, size, size)
    elif family == "seg_unet":  # valid convolutions: smaller by the margin on each side
        out = model(x)
        side = size - 2 * model.margin
        assert out.shape == (2, model.num_classes, side, side)
    elif family == "ddgan_generator":
        t = torch.tensor([0, ddgan_num_timesteps(name) - 1])
        out = model(x, t, torch.randn(2, model.nz))
        assert out.shape == (2, model.out_channels, size, size)
    else:
        out = model(x, torch.tensor([0, 1]), torch.randn_like(x))
        assert out.shape == (2,)
    assert torch.isfinite(out if family != "vae" else raw).all()


@pytest.mark.parametrize("family,name", sorted(PAPER_PARAMETER_COUNTS))
def test_ddgan_paper_presets_have_the_official_parameter_counts(family, name):
    count = num_params(build_model(family, name))
    print(f"{family} {name}: {count:,} parameters")
    assert count == PAPER_PARAMETER_COUNTS[(family, name)]


def test_ddpm_cifar10_parameter_count_matches_paper():
    model = build_model("unet", "ddpm-cifar10")
    assert abs(num_params(model) - 35.7e6) / 35.7e6 < 0.05
    assert model.total_downsampling == 8


def test_vae_downsample_factors_and_decode():
    f4 = build_model("vae", "mnist-f4", likelihood="bernoulli")
    f8 = build_model("vae", "kl-f8", base_channels=16)  # narrower for speed; f depends on channel_mult only
    assert (f4.downsample_factor, f8.downsample_factor) == (4, 8)
    for vae, cin, size in ((f4, 1, 32), (f8, 3, 32)):
        x = torch.rand(2, cin, size, size) * 2 - 1
        mean, logvar = vae.encode(x)
        h = size // vae.downsample_factor
        assert mean.shape == (2, 4, h, h)
        assert vae.decode(mean).shape == x.shape and vae.decode_raw(mean).shape == x.shape
    # Bernoulli decoders map logits to [-1, 1].
    with torch.no_grad():
        f4.decoder.layers[-1].bias.fill_(50.0)
    assert f4.likelihood == "bernoulli"
    assert torch.allclose(f4.decode(torch.randn(1, 4, 8, 8)), torch.ones(1, 1, 32, 32))


def test_vae_logvar_clamped_and_sampling_reproducible():
    vae = KLVAE(in_channels=3, latent_channels=2, base_channels=8, channel_mult=(1, 2), attn_mid=False)
    with torch.no_grad():
        vae.encoder.layers[-1].bias[2:].fill_(1000.0)  # the logvar half
    mean, logvar = vae.encode(torch.randn(1, 3, 8, 8))
    assert torch.all(logvar == 20.0)
    mean, logvar = torch.zeros(2, 2, 4, 4), torch.full((2, 2, 4, 4), math.log(4.0))
    z1 = vae.sample_latent(mean, logvar, torch.Generator().manual_seed(3))
    z2 = vae.sample_latent(mean, logvar, torch.Generator().manual_seed(3))
    assert torch.equal(z1, z2) and 1.5 < z1.std().item() < 2.5
    with pytest.raises(ValueError, match="likelihood"):
        KLVAE(likelihood="poisson")


def test_vae_scale_factor_is_a_persistent_buffer():
    vae = build_model("vae", "tiny")
    assert vae.scale_factor.dtype == torch.float32 and vae.scale_factor.item() == 1.0
    vae.scale_factor.fill_(0.18)
    state = vae.state_dict()
    assert "scale_factor" in state
    other = build_model("vae", "tiny")
    other.load_state_dict(state)
    assert math.isclose(other.scale_factor.item(), 0.18, rel_tol=1e-6)


def test_class_conditional_unet_uses_null_label():
    torch.manual_seed(0)
    model = randomize_zero_params(build_model("unet", "tiny", num_classes=10)).eval()
    assert model.label_embed.num_embeddings == 11
    x, t = torch.randn(2, 3, 8, 8), torch.tensor([5, 5])
    out_none = model(x, t)
    out_null = model(x, t, torch.full((2,), 10))
    out_class = model(x, t, torch.tensor([0, 3]))
    assert torch.allclose(out_none, out_null)
    assert not torch.allclose(out_none, out_class, atol=1e-4)
    with pytest.raises(ValueError, match="num_classes"):
        build_model("unet", "tiny")(x, t, torch.tensor([0, 1]))


def test_unet_depends_on_timestep():
    model = randomize_zero_params(build_model("unet", "tiny")).eval()
    x = torch.randn(1, 3, 8, 8)
    assert not torch.allclose(model(x, torch.tensor([1])), model(x, torch.tensor([500])), atol=1e-4)
    assert torch.allclose(model(x, torch.tensor(7)), model(x, torch.tensor([7])))


def test_generator_output_range_and_z_dependence():
    torch.manual_seed(0)
    gen = randomize_zero_params(build_model("ddgan_generator", "tiny"))
    with torch.no_grad():
        gen.conv_out.weight.normal_(0.0, 10.0)  # push pre-activations far outside [-1, 1]
    x, t = torch.randn(4, 3, 8, 8), torch.tensor([0, 1, 2, 3])
    out = gen(x, t, torch.randn(4, 8))
    assert out.abs().max() <= 1.0 and out.abs().max() > 0.9
    assert not torch.allclose(out, gen(x, t, torch.randn(4, 8)), atol=1e-4)
    linear = build_model("ddgan_generator", "tiny", output_activation="none")
    linear.load_state_dict(gen.state_dict())
    assert linear(x, t, torch.randn(4, 8)).abs().max() > 1.0
    with pytest.raises(ValueError, match="output_activation"):
        build_model("ddgan_generator", "tiny", output_activation="relu")
    with pytest.raises(ValueError, match=r"\(B, 8\)"):
        gen(x, t, torch.randn(4, 9))


def test_minibatch_stddev_channel():
    h = torch.randn(8, 3, 2, 2)
    out = minibatch_stddev(h, group_size=4)
    assert out.shape == (8, 4, 2, 2) and torch.equal(out[:, :3], h)
    # Sample 0 is grouped with samples 2, 4, 6 (stride B / g).
    expected = torch.sqrt(h[[0, 2, 4, 6]].var(dim=0, unbiased=False) + 1e-8).mean()
    assert torch.allclose(out[0, 3], expected.expand(2, 2))
    assert torch.allclose(out[6, 3], out[0, 3]) and not torch.allclose(out[1, 3], out[0, 3])
    # Batch sizes that 4 does not divide use the largest divisor.
    assert minibatch_stddev(torch.randn(6, 3, 2, 2)).shape == (6, 4, 2, 2)


def test_discriminator_logit_depends_on_t():
    torch.manual_seed(0)
    disc = randomize_zero_params(build_model("ddgan_discriminator", "tiny")).eval()
    x_t, x_tp1 = torch.randn(4, 3, 16, 16), torch.randn(4, 3, 16, 16)
    with torch.no_grad():
        logits = {step: disc(x_t, torch.full((4,), step), x_tp1) for step in range(4)}
    for a in range(4):
        for b in range(a + 1, 4):
            assert not torch.allclose(logits[a], logits[b], atol=1e-5), (a, b)


def test_generator_depends_on_t_and_takes_the_input_pyramid():
    torch.manual_seed(0)
    gen = randomize_zero_params(build_model("ddgan_generator", "tiny")).eval()
    x, z = torch.randn(2, 3, 8, 8), torch.randn(2, 8)
    with torch.no_grad():
        assert not torch.allclose(gen(x, torch.tensor([0, 0]), z), gen(x, torch.tensor([3, 3]), z), atol=1e-5)
    assert [type(m).__name__ for m in gen.down[0].values()] == ["ModuleList", "ModuleList", "BigGANResBlock",
                                                                "FIRDownsampleConv"]


def test_discriminator_logit_depends_on_rest_of_batch():
    torch.manual_seed(0)
    disc = randomize_zero_params(build_model("ddgan_discriminator", "tiny")).eval()
    x_t, x_tp1, t = torch.randn(4, 3, 16, 16), torch.randn(4, 3, 16, 16), torch.tensor([0, 1, 2, 3])
    logits = disc(x_t, t, x_tp1)
    assert logits.shape == (4,)
    changed = x_t.clone()
    changed[1:] = torch.randn(3, 3, 16, 16) * 3
    assert not torch.isclose(disc(changed, t, x_tp1)[0], logits[0], atol=1e-6)
    # Without the minibatch channel the logit of sample 0 would only depend on sample 0.
    assert not torch.isclose(disc(x_t, t + 0, x_tp1)[0], disc(x_t[:1], t[:1], x_tp1[:1])[0], atol=1e-6)


# ----------------------------------------------------------------------------- registry


def test_unknown_preset_and_family_errors_list_valid_names():
    with pytest.raises(ValueError, match="unknown unet preset 'foo'; valid presets: tiny, small, trilemma, ddpm-cifar10, ldm-celebahq256"):
        build_model("unet", "foo")
    with pytest.raises(ValueError, match="mnist-f4"):
        preset_kwargs("vae", "nope")
    with pytest.raises(ValueError, match="ddgan-celebahq256"):
        ddgan_num_timesteps("nope")
    with pytest.raises(ValueError, match="valid families"):
        preset_names("gan")


def test_unknown_override_is_named():
    with pytest.raises(TypeError, match="num_clases"):
        build_model("unet", "tiny", num_clases=10)


def test_preset_kwargs_is_a_copy_and_ddgan_tables():
    kwargs = preset_kwargs("unet", "tiny")
    kwargs["model_channels"] = 999
    assert preset_kwargs("unet", "tiny")["model_channels"] == 32
    assert preset_names("ddgan_generator") == preset_names("ddgan_discriminator")
    assert ddgan_num_timesteps("ddgan-cifar10") == 4 and ddgan_num_timesteps("ddgan-celebahq256") == 2
    assert preset_kwargs("ddgan_generator", "small")["output_activation"] == "none"
    assert build_model("vae", "kl-f4", base_channels=8).downsample_factor == 4


@pytest.mark.parametrize("family", FAMILIES)
def test_model_from_config_round_trip(family):
    torch.manual_seed(0)
    overrides = {"unet": {"num_classes": 3, "dropout": 0.2}}.get(family, {})
    model = build_model(family, "tiny", **overrides)
    config = json.loads(json.dumps(model.model_config))  # must be JSON-serialisable
    assert config["family"] == family
    assert set(config["kwargs"]) == set(model_from_config(config).model_config["kwargs"])
    clone = model_from_config(config)
    assert clone.model_config == model.model_config
    clone.load_state_dict(model.state_dict(), strict=True)
    for name, value in overrides.items():
        assert config["kwargs"][name] == value
    with pytest.raises(TypeError, match="bogus"):
        model_from_config({"family": family, "kwargs": {**config["kwargs"], "bogus": 1}})


def test_direct_constructors_record_resolved_config():
    assert UNet(in_channels=4, model_channels=32, channel_mult=(1, 2)).model_config["kwargs"]["out_channels"] == 4
    gen = DDGANGenerator(nf=16, channel_mult=(1,), num_res_blocks=1, attention_levels=())
    assert gen.model_config["kwargs"]["n_mlp"] == 4 and gen.out_channels == 3
    assert DDGANDiscriminator(nf=8).model_config["family"] == "ddgan_discriminator"
    with pytest.raises(ValueError, match="attention_levels"):
        UNet(model_channels=32, channel_mult=(1, 2), attention_levels=(2,))


# ----------------------------------------------------------------------------- learning sanity


def test_tiny_unet_overfits_fixed_noise():
    torch.manual_seed(0)
    model = build_model("unet", "tiny")
    x0 = torch.rand(4, 3, 16, 16) * 2 - 1
    eps = torch.randn(4, 3, 16, 16)
    t = torch.tensor([10, 200, 500, 900])
    alpha_bar = torch.cos(t.float() / 1000 * math.pi / 2).pow(2)[:, None, None, None]
    x_t = alpha_bar.sqrt() * x0 + (1 - alpha_bar).sqrt() * eps
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    losses = []
    for _ in range(100):
        loss = F.mse_loss(model(x_t, t), eps)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] / 5, (losses[0], losses[-1])


def test_tiny_vae_learns_to_reconstruct():
    torch.manual_seed(0)
    vae = build_model("vae", "tiny")
    # Smooth structured images (random low-frequency patterns), in [-1, 1].
    x = torch.tanh(F.interpolate(torch.randn(8, 3, 4, 4) * 2, size=16, mode="bilinear", align_corners=False))
    with torch.no_grad():
        initial = F.mse_loss(vae.decode(vae.encode(x)[0]), x).item()
    opt = torch.optim.Adam(vae.parameters(), lr=2e-3)
    for _ in range(150):
        raw, mean, logvar = vae(x)
        kl = 0.5 * (mean.pow(2) + logvar.exp() - 1 - logvar).mean()
        loss = F.mse_loss(raw, x) + 1e-4 * kl
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        final = F.mse_loss(vae.decode(vae.encode(x)[0]), x).item()
    assert final < initial / 5, (initial, final)


# ----------------------------------------------------------------------------- import boundary


def test_models_import_no_heavy_frameworks():
    code = (
        "import sys, distdiff.models, distdiff.nn\n"
        "bad = [m for m in ('ray', 'deepspeed', 'webdataset', 'boto3') if m in sys.modules]\n"
        "print(','.join(bad))\n"
    )
    repo_root = str(Path(__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [repo_root, os.environ.get("PYTHONPATH")]))}
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=repo_root, env=env
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "", f"distdiff.models imported {result.stdout.strip()}"


def test_trilemma_networks_are_one_size():
    # The study compares sampling speed between a U-Net and a DDGAN generator of one size.
    unet = num_params(build_model("unet", "trilemma"))
    generator = num_params(build_model("ddgan_generator", "trilemma"))
    print(f"trilemma U-Net {unet:,} parameters, DDGAN generator {generator:,}")
    assert (unet, generator) == (1_268_572, 1_259_844)
