"""Sampling and editing a trained export: the `sample` command, image-to-image and inpainting."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from distdiff.diffusion import ddgan_sample, ddim_sample, ddpm_sample, ddpm_schedule, ddgan_schedule
from distdiff.diffusion.edit import keep_known, latent_keep_mask, noise_to, strength_start
from distdiff.sample import Request, SampleError, generate, main, prepare
from distdiff.testing.toy import write_tiny_export


@pytest.fixture(scope="module")
def export(tmp_path_factory):
    return write_tiny_export(tmp_path_factory.mktemp("export"), space="latent", num_classes=10,
                             models=("ldm", "ddgan"))


@pytest.fixture(scope="module")
def pictures(tmp_path_factory):
    folder = tmp_path_factory.mktemp("pictures")
    digit = np.zeros((32, 32), np.uint8)
    digit[6:26, 12:20] = 255
    Image.fromarray(digit).save(folder / "init.png")
    mask = np.zeros((32, 32), np.uint8)
    mask[:, 16:] = 255  # generate the right half
    Image.fromarray(mask).save(folder / "mask.png")
    Image.fromarray(np.zeros((20, 20), np.uint8)).save(folder / "small.png")
    return folder


def _reconstruction(export, image_path):
    from distdiff.eval.checkpoint import EvalCheckpoint
    from distdiff.sample import read_init_image
    from distdiff.tasks import LatentSource

    source = LatentSource(EvalCheckpoint(str(export), "ldm").load_vae())
    image = read_init_image(str(image_path), (1, 32, 32))
    return image, source.encode(image), source.decode(source.encode(image))


def test_strength_names_the_last_steps():
    assert strength_start(list(range(999, -1, -1)), 0.6) == 599
    assert strength_start(list(range(999, -1, -1)), 1.0) == 999
    assert strength_start([3, 2, 1, 0], 0.5) == 1  # DDGAN with T = 4: the last two of its steps
    assert strength_start([3, 2, 1, 0], 0.1) is None  # rounds to no step: the init is the result
    with pytest.raises(ValueError, match="strength"):
        strength_start([3, 2, 1, 0], 1.5)


@pytest.mark.parametrize("sampler", ["ddpm", "ddim", "ddgan"])
def test_start_step_at_the_top_changes_nothing(sampler):
    """Starting from x_T at step T-1 explicitly gives the samples of the plain sampler."""
    torch.manual_seed(0)
    x_T = torch.randn(2, 1, 4, 4)
    if sampler == "ddgan":
        schedule = ddgan_schedule(4)
        net = lambda x, t, z: 0.5 * x + z[:, :1, None, None]  # noqa: E731

        def run(**kw):
            return ddgan_sample(net, schedule, x_T.shape, 2, rng=torch.Generator().manual_seed(1), x_T=x_T, **kw)
    else:
        schedule = ddpm_schedule(20)
        net = lambda x, t: 0.1 * x  # noqa: E731
        fn = ddpm_sample if sampler == "ddpm" else ddim_sample
        extra = {} if sampler == "ddpm" else {"steps": 5, "eta": 1.0}

        def run(**kw):
            return fn(net, schedule, x_T.shape, generator=torch.Generator().manual_seed(1), x_T=x_T, **extra, **kw)
    top = schedule.num_steps - 1
    torch.testing.assert_close(run(), run(start_step=top, after_step=lambda x, step: x))


def test_keep_known_holds_the_region_at_each_noise_level():
    schedule = ddpm_schedule(10)
    x0 = torch.randn(1, 2, 4, 4)
    keep = torch.zeros(1, 1, 4, 4)
    keep[..., :2] = 1
    hook = keep_known(schedule, x0, keep, torch.Generator().manual_seed(3))
    x = torch.full_like(x0, 7.0)
    out = hook(x, 4)
    expected = noise_to(schedule, x0, 4, torch.Generator().manual_seed(3))
    torch.testing.assert_close(out[..., :2], expected[..., :2])
    assert torch.all(out[..., 2:] == 7.0)
    torch.testing.assert_close(hook(x, -1)[..., :2], x0[..., :2])  # clean after the last step


def test_latent_keep_mask_never_keeps_a_masked_pixel():
    mask = torch.zeros(1, 1, 8, 8)
    mask[0, 0, 3, 3] = 1  # one pixel to generate
    keep = latent_keep_mask(mask, [4, 4])  # f = 2
    assert keep.shape == (1, 1, 4, 4)
    assert keep[0, 0, 1, 1] == 0 and keep.sum() == 15


def test_guidance_scale_one_equals_the_conditional_prediction(export):
    from distdiff.eval.checkpoint import EvalCheckpoint

    sampler = EvalCheckpoint(str(export), "ldm:ddim").build_sampler()
    model, settings = EvalCheckpoint(str(export), "ldm:ddim").selection[0]
    labels = torch.tensor([3, 7])
    guided = sampler.sample(model, settings, [0, 1], labels, guidance=1.0)
    net = sampler.networks["ldm"]
    x = torch.randn(2, *sampler.spec.latent_shape)
    t = torch.tensor([5, 5])
    from distdiff.diffusion import classifier_free_guidance

    torch.testing.assert_close(classifier_free_guidance(net, 1.0, 10)(x, t, y=labels), net(x, t, y=labels))
    again = sampler.sample(model, settings, [0, 1], labels, guidance=1.0)
    torch.testing.assert_close(guided, again)
    assert not torch.allclose(guided, sampler.sample(model, settings, [0, 1], labels, guidance=4.0))


@pytest.mark.parametrize("sampler", ["ddpm", "ddim", "ddgan"])
def test_strength_zero_returns_the_vae_reconstruction(export, pictures, sampler):
    _, _, reconstruction = _reconstruction(export, pictures / "init.png")
    images = generate(Request(str(export), sampler=sampler, num=2, label=None, init_image=str(pictures / "init.png"),
                              strength=0.0))
    torch.testing.assert_close(images, reconstruction.expand(2, -1, -1, -1))


def test_image_to_image_depends_on_strength(export, pictures):
    request = dict(checkpoint=str(export), sampler="ddgan", num=2, init_image=str(pictures / "init.png"))
    weak, strong = generate(Request(**request, strength=0.25)), generate(Request(**request, strength=1.0))
    image, _, reconstruction = _reconstruction(export, pictures / "init.png")
    assert (weak - reconstruction).abs().mean() < (strong - reconstruction).abs().mean()


class _Latents:
    """A decoder that returns the latents themselves, to look at what the sampler ends with."""

    def decode(self, z):
        return z


@pytest.mark.parametrize("sampler", ["ddpm", "ddim", "ddgan"])
def test_inpainting_keeps_the_unmasked_latents_exactly(export, pictures, sampler):
    _, latent, _ = _reconstruction(export, pictures / "init.png")
    net, model, settings, seeds, kwargs = prepare(Request(str(export), sampler=sampler, num=3,
                                                          init_image=str(pictures / "init.png"),
                                                          mask=str(pictures / "mask.png")))
    net.decoder = _Latents()
    z = net.sample(model, settings, seeds, **kwargs)  # (3, c, 16, 16): f = 2
    torch.testing.assert_close(z[..., :8], latent[..., :8].expand(3, -1, -1, -1), rtol=0, atol=0)
    assert (z[..., 8:] - latent[..., 8:]).abs().mean() > 1e-2  # the masked half was generated


def test_inpainting_leaves_the_unmasked_pixels_within_the_reconstruction_error(export, pictures):
    """Decoded, the unmasked pixels differ from the VAE's reconstruction only through the decoder's
    reach across the mask border, far less than the generated half does."""
    image, _, reconstruction = _reconstruction(export, pictures / "init.png")
    images = generate(Request(str(export), sampler="ddpm", num=3, init_image=str(pictures / "init.png"),
                              mask=str(pictures / "mask.png")))
    kept, generated = (images - reconstruction)[..., :16].abs(), (images - reconstruction)[..., 16:].abs()
    assert kept.mean() < 0.5 * generated.mean()


def test_cli_writes_a_grid_and_one_png_per_sample(export, tmp_path, capsys):
    assert main(["--checkpoint", str(export), "--label", "4", "--guidance", "2", "--sampler", "ddim",
                 "--steps", "2", "--num", "3", "--seed", "5", "--out", str(tmp_path)]) == 0
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["grid.png", "sample-000005.png", "sample-000006.png", "sample-000007.png"]
    assert Image.open(tmp_path / "sample-000005.png").size == (32, 32)


def test_samples_depend_on_their_seed_only(export):
    both = generate(Request(str(export), sampler="ddgan", num=2, seed=10))
    alone = generate(Request(str(export), sampler="ddgan", num=1, seed=11))
    torch.testing.assert_close(both[1:], alone)


@pytest.mark.parametrize("args, message", [
    (["--init-image", "{d}/missing.png"], "init image {d}/missing.png does not exist"),
    (["--init-image", "{d}/init.png", "--mask", "{d}/small.png"], "mask {d}/small.png is 20x20 pixels"),
    (["--init-image", "{d}/small.png"], "init image {d}/small.png is 20x20 pixels"),
    (["--prompt", "a handwritten seven"], "is not text-conditioned"),
    (["--sampler", "ddgan", "--label", "3"], "is not class-conditional"),
    (["--label", "12"], "--label 12 is outside [0, 10)"),
    (["--mask", "{d}/mask.png"], "give --init-image too"),
    (["--sampler", "ddpm", "--steps", "5"], "--steps applies to ddim only"),
    (["--init-image", "{d}/init.png", "--strength", "2"], "--strength must be in [0, 1]"),
])
def test_bad_inputs_give_one_clear_error(export, pictures, capsys, args, message):
    args = [a.format(d=pictures) for a in args]
    assert main(["--checkpoint", str(export), "--num", "1", *args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message.format(d=pictures) in err[0], err


def test_unknown_checkpoint_is_named(tmp_path):
    with pytest.raises(SampleError, match="does not exist"):
        generate(Request(str(tmp_path / "nothing")))


def test_sampling_an_export_on_s3(export, pictures, s3_bucket):
    from distdiff.data import storage

    for path in export.iterdir():
        storage.write_bytes(f"s3://{s3_bucket}/run/ldm/export/{path.name}", path.read_bytes())
    request = dict(sampler="ddim", label=2, num=2, init_image=str(pictures / "init.png"), strength=0.5)
    remote = generate(Request(f"s3://{s3_bucket}/run", **request))
    torch.testing.assert_close(remote, generate(Request(str(export), **request)))
