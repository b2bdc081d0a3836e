"""Text conditioning: the caption tokenizer, captions in shards, the text encoder, cross-attention and guidance."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from distdiff.data import PoolEncoder, build_stream, describe_shards, encode_latent_shards, read_manifest
from distdiff.data import formats, write_image_shards
from distdiff.data.captions import cifar_captioner, mnist_caption, stacked_mnist_caption
from distdiff.diffusion import classifier_free_guidance
from distdiff.models import build_model
from distdiff.models.text_encoder import TextEncoder
from distdiff.nn import CrossAttentionBlock
from distdiff.text import BEGIN, END, PAD, Tokenizer, caption_record

MNIST_RECORD = caption_record([mnist_caption(d) for d in range(10)], [mnist_caption(d) for d in range(10)])


# ---- tokenizer and captions -------------------------------------------------------------------
def test_tokenizer_ids_and_null_caption():
    tok = Tokenizer.from_record(MNIST_RECORD)
    assert tok.max_length == 5 and tok.size == len(MNIST_RECORD["vocabulary"]) + 3
    ids = tok.encode(["A handwritten seven.", ""])
    seven = 3 + MNIST_RECORD["vocabulary"].index("seven")
    assert ids[0].tolist() == [BEGIN, 3 + MNIST_RECORD["vocabulary"].index("a"),
                               3 + MNIST_RECORD["vocabulary"].index("handwritten"), seven, END]
    assert ids[1].tolist() == [BEGIN, END, PAD, PAD, PAD] == tok.null().tolist()


def test_tokenizer_names_unknown_words_and_long_captions():
    tok = Tokenizer.from_record(MNIST_RECORD)
    with pytest.raises(ValueError, match="'eleven'"):
        tok.encode(["a handwritten eleven"])
    with pytest.raises(ValueError, match="at most 3"):
        tok.encode(["a handwritten seven seven"])


def test_captions_of_the_converters():
    assert mnist_caption(7) == "a handwritten seven"
    assert stacked_mnist_caption(314) == "a red three, a green one and a blue four"
    cifar = cifar_captioner(["airplane", "automobile"])
    assert cifar(1, 0) == "a photo of a automobile" and cifar(0, 2) == "a blurry photo of a airplane"


# ---- captions in shards -----------------------------------------------------------------------
def _digits(n: int = 40):
    images = np.random.default_rng(0).integers(0, 256, (n, 1, 8, 8), dtype=np.uint8)
    return images, np.arange(n, dtype=np.int64) % 10


def test_captions_survive_the_image_and_latent_shard_round_trip(tmp_path):
    images, labels = _digits()
    source = formats._array_source("digits", images, labels, [str(i) for i in range(10)], captioner=mnist_caption)
    write_image_shards(source, str(tmp_path / "img"), shard_size=16)
    manifest = read_manifest(str(tmp_path / "img"))
    assert manifest.meta["captions"]["class_prompts"][7] == "a handwritten seven"
    assert describe_shards(str(tmp_path / "img")).captions == manifest.meta["captions"]
    encode_latent_shards(str(tmp_path / "img"), str(tmp_path / "lat"), PoolEncoder(factor=2, channels=4),
                         batch_size=16)
    assert describe_shards(str(tmp_path / "lat")).captions == manifest.meta["captions"]
    for root, key, workers in (("img", "image", 0), ("lat", "latent_mean", 0), ("img", "image", 1)):
        batch = next(iter(build_stream(str(tmp_path / root), batch_size=8, rank=0, world_size=1, seed=0,
                                       num_workers=workers)))  # 1: the captions cross a loader process
        assert key in batch and len(batch["txt"]) == 8
        assert batch["txt"] == [mnist_caption(int(label)) for label in batch["label"]]


def test_shards_without_captions_have_no_txt(tmp_path):
    images, labels = _digits()
    write_image_shards(formats._array_source("digits", images, labels, None, 10), str(tmp_path / "img"),
                       shard_size=16)
    assert "captions" not in read_manifest(str(tmp_path / "img")).meta
    assert "txt" not in next(iter(build_stream(str(tmp_path / "img"), batch_size=8, rank=0, world_size=1, seed=0)))


def test_image_folders_take_the_caption_file_beside_an_image(tmp_path):
    for name, caption in (("a", "a red square"), ("b", None)):
        Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / f"{name}.png")
        if caption:
            (tmp_path / f"{name}.txt").write_text(caption + "\n")
    extras = [extra for _, _, _, extra in formats.image_folder(tmp_path).samples()]
    assert extras[0]["caption"] == "a red square" and "caption" not in extras[1]


def test_embedded_mnist_batches_carry_captions():
    batch = next(iter(build_stream("embedded-mnist", batch_size=4, rank=0, world_size=1, seed=0)))
    assert batch["txt"] == [mnist_caption(int(label)) for label in batch["label"]]


# ---- text encoder and cross-attention ---------------------------------------------------------
def test_cross_attention_shapes_and_masking():
    torch.manual_seed(0)
    block = CrossAttentionBlock(16, context_dim=8, num_heads=4)
    torch.nn.init.normal_(block.proj.weight)  # the zero-initialised output would hide everything
    x, context = torch.randn(2, 16, 4, 4), torch.randn(2, 5, 8)
    mask = torch.tensor([[True, True, True, False, False], [True] * 5])
    out = block(x, context, mask)
    assert out.shape == x.shape
    changed = context.clone()
    changed[0, 3:] = 100.0  # masked tokens of sample 0
    torch.testing.assert_close(block(x, changed, mask)[0], out[0])
    changed[0, 1] = 100.0  # an attended token
    assert not torch.allclose(block(x, changed, mask)[0], out[0])


def test_text_encoder_ignores_padding():
    torch.manual_seed(0)
    encoder = TextEncoder(vocab_size=15, max_length=8, width=16, layers=2, heads=4).eval()
    short = torch.tensor([[1, 5, 6, 2]])
    padded = torch.tensor([[1, 5, 6, 2, 0, 0, 0, 0]])
    features, mask = encoder(short)
    features_padded, mask_padded = encoder(padded)
    assert features.shape == (1, 4, 16) and mask_padded.tolist() == [[True] * 4 + [False] * 4]
    torch.testing.assert_close(features_padded[:, :4], features, atol=1e-5, rtol=1e-5)


def _text_unet():
    tok = Tokenizer.from_record(MNIST_RECORD)
    unet = build_model("unet", "tiny", in_channels=4, cross_attention_levels=(1,),
                       text_encoder=dict(vocab_size=tok.size, max_length=tok.max_length, width=32, layers=1, heads=4))
    for p in unet.parameters():  # leave the zero-initialised outputs
        p.data.add_(torch.randn_like(p) * 0.05)
    return unet.eval(), tok


def test_text_unet_shapes_and_refusals():
    unet, tok = _text_unet()
    x, t = torch.randn(2, 4, 8, 8), torch.tensor([3, 9])
    tokens = tok.encode(["a handwritten one", "a handwritten two"])
    assert unet(x, t, text=tokens).shape == x.shape
    assert not torch.allclose(unet(x, t, text=tokens), unet(x, t, text=tok.null().expand(2, -1)))
    with pytest.raises(ValueError, match="needs caption tokens"):
        unet(x, t)
    with pytest.raises(ValueError, match="without a text_encoder"):
        build_model("unet", "tiny", in_channels=4)(x, t, text=tokens)
    assert unet.model_config["kwargs"]["cross_attention_levels"] == [1]


def test_guidance_scale_one_equals_the_conditional_text_prediction():
    unet, tok = _text_unet()
    x, t = torch.randn(2, 4, 8, 8), torch.tensor([3, 9])
    tokens = tok.encode(["a handwritten one", "a handwritten two"])
    with torch.no_grad():
        torch.testing.assert_close(classifier_free_guidance(unet, 1.0, tok.null(), "text")(x, t, text=tokens),
                                   unet(x, t, text=tokens), atol=1e-5, rtol=1e-5)
        uncond = unet(x, t, text=tok.null().expand(2, -1))
        guided = classifier_free_guidance(unet, 3.0, tok.null(), "text")(x, t, text=tokens)
        torch.testing.assert_close(guided, uncond + 3.0 * (unet(x, t, text=tokens) - uncond), atol=1e-4, rtol=1e-4)


def test_caption_dropout_replaces_captions_by_the_null_one():
    from distdiff.diffusion import ddpm_schedule
    from distdiff.tasks import LDMTask

    tok = Tokenizer.from_record(MNIST_RECORD)
    captions = ["a handwritten one"] * 6
    everything = LDMTask(ddpm_schedule(10), tokenizer=tok, caption_dropout=1.0)._captions(captions, "cpu", None)
    assert (everything == tok.null()).all()
    nothing = LDMTask(ddpm_schedule(10), tokenizer=tok, caption_dropout=0.0)._captions(captions, "cpu", None)
    assert (nothing == tok.encode(captions)).all()


# ---- sampling a text-conditioned export -------------------------------------------------------
@pytest.fixture(scope="module")
def text_export(tmp_path_factory):
    from distdiff.testing.toy import write_tiny_export

    return write_tiny_export(tmp_path_factory.mktemp("text"), space="latent", models=("ldm", "ddgan"),
                             captions=MNIST_RECORD)


def test_prompt_sampling_and_labels_as_class_prompts(text_export):
    from distdiff.sample import Request, generate

    by_prompt = generate(Request(str(text_export), prompt="a handwritten seven", guidance=2.0, num=2))
    by_label = generate(Request(str(text_export), label=7, guidance=2.0, num=2))
    torch.testing.assert_close(by_prompt, by_label)
    other = generate(Request(str(text_export), prompt="a handwritten one", guidance=2.0, num=2))
    assert not torch.allclose(by_prompt, other)


@pytest.mark.parametrize("args, message", [
    (["--prompt", "a handwritten eleven"], "'eleven' are not in the vocabulary"),
    (["--sampler", "ddgan", "--prompt", "a handwritten one"], "is not text-conditioned"),
    (["--label", "10"], "--label 10 is outside [0, 10)"),
])
def test_bad_prompts_give_one_clear_error(text_export, capsys, args, message):
    from distdiff.sample import main

    assert main(["--checkpoint", str(text_export), "--num", "1", *args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err


def test_export_record_keeps_the_captions(text_export):
    from distdiff.eval.checkpoint import read_export_spec

    assert read_export_spec(str(text_export)).text == MNIST_RECORD


def test_grids_and_evaluation_draw_the_class_prompts(text_export):
    """What training grids and the evaluator call: balanced labels, which a text model reads as prompts."""
    from distdiff.eval.checkpoint import EvalCheckpoint

    checkpoint = EvalCheckpoint(str(text_export), "ldm:ddim")
    sampler = checkpoint.build_sampler()
    model, settings = checkpoint.selection[0]
    labels = sampler.class_labels(range(12))
    assert labels.tolist() == [i % 10 for i in range(12)]
    sampler.warm_up(model, 3)
    by_label = sampler.sample(model, settings, [0, 1], labels[:2])
    by_prompt = sampler.sample(model, settings, [0, 1], prompts=["a handwritten zero", "a handwritten one"])
    torch.testing.assert_close(by_label, by_prompt)


# ---- wiring: config, stage 2, one training step -----------------------------------------------
def _text_config(**ldm):
    from distdiff.config import RunConfig, from_dict

    return from_dict(RunConfig, {"ldm": {"preset": "tiny", "text": {"enabled": True, "width": 32}, **ldm},
                                 "ddgan": {"enabled": False}})


def test_text_and_class_conditioning_exclude_each_other():
    from distdiff.config import ConfigError

    with pytest.raises(ConfigError, match="exclude each other"):
        _text_config(class_conditional=True)


def test_stage2_builds_a_text_unet_that_learns_from_captions():
    from distdiff.config import OptimConfig
    from distdiff.tasks import LatentSource, build_stage2
    from distdiff.train.engines import EngineSet, TorchEngine

    cfg = _text_config()
    with pytest.raises(ValueError, match="no captions"):
        build_stage2(cfg, LatentSource(None), (4, 8, 8), (4, 8, 8), None)
    torch.manual_seed(0)
    setup = build_stage2(cfg, LatentSource(None), (4, 8, 8), (4, 8, 8), None, captions=MNIST_RECORD)
    assert setup.spec.text == MNIST_RECORD
    unet = setup.members["ldm"].networks["unet"].module
    assert unet.text is not None and unet.model_config["kwargs"]["text_encoder"]["width"] == 32
    updater = EngineSet({"unet": TorchEngine(unet, OptimConfig(lr=2e-3, grad_clip=1.0), "adamw")})
    task = setup.members["ldm"].task
    z0 = torch.randn(4, 4, 8, 8, generator=torch.Generator().manual_seed(1))
    batch = {"label": torch.arange(4), "txt": [mnist_caption(d) for d in range(4)]}
    g = torch.Generator().manual_seed(2)
    losses = [task.step(z0, batch, updater, i, g)["ldm/loss"] for i in range(60)]
    assert np.mean(losses[-10:]) < np.mean(losses[:10])
