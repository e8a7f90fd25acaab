"""Models: backbone and method output shapes, the text tower, DINO's EMA teacher, parameter
groups, offline weight loading and the embedding model loaded back from a checkpoint."""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import pytest
import torch

from tauray_trainers.config import build_config
from tauray_trainers.data import ByteTokenizer
from tauray_trainers.models import (
    build_backbone,
    build_model,
    dino_student_temperature_config,
    load_embedding_model,
    load_pretrained_weights,
)
from tauray_trainers.models.checkpoint import read_checkpoint, write_checkpoint
from tauray_trainers.models.dino import teacher_momentum
from tauray_trainers.models.text import TextTransformer

# The cluttered digits' statistics: an exported model subtracts and divides by them itself.
MEAN, STD = 0.2765, 0.1586


class Spec:
    """The data facts a model needs (a DataBundle has the same attributes)."""

    def __init__(self, channels: int = 1, image_size: int = 32) -> None:
        self.channels = channels
        self.image_size = image_size


def images(n: int, channels: int = 1, size: int = 32, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, channels, size, size, generator=torch.Generator().manual_seed(seed))


def make(method: str, steps_per_epoch: int = 5, **sections: object):
    torch.manual_seed(0)
    config = build_config({"method": method, "epochs": 2, **sections})
    return build_model(config, Spec(), steps_per_epoch=steps_per_epoch), config


# ---- backbones ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "channels", "size", "feature_dim"),
    [
        ("small_cnn", 1, 32, 128),
        ("small_cnn", 3, 8, 128),
        ("resnet18", 1, 32, 512),
        ("resnet18", 3, 96, 512),
        ("resnet50", 3, 8, 2048),
        ("vit_tiny", 1, 32, 192),
        ("vit_tiny", 3, 8, 192),
    ],
)
def test_backbone_output_shapes(name: str, channels: int, size: int, feature_dim: int) -> None:
    torch.manual_seed(0)
    backbone = build_backbone(name, in_channels=channels, image_size=size)
    out = backbone(images(3, channels, size))
    assert backbone.feature_dim == feature_dim
    assert out.shape == (3, feature_dim)
    assert torch.isfinite(out).all()


def test_resnet_stem_follows_the_image_size() -> None:
    small = build_backbone("resnet18", in_channels=1, image_size=32).net
    large = build_backbone("resnet18", in_channels=3, image_size=224).net
    assert small.conv1.kernel_size == (3, 3) and small.conv1.stride == (1, 1)
    assert small.conv1.in_channels == 1
    assert isinstance(small.maxpool, torch.nn.Identity)
    assert large.conv1.kernel_size == (7, 7) and large.conv1.stride == (2, 2)
    assert isinstance(large.maxpool, torch.nn.MaxPool2d)


def test_vit_takes_smaller_crops_through_interpolated_positions() -> None:
    torch.manual_seed(0)
    vit = build_backbone("vit_tiny", in_channels=1, image_size=32)
    assert vit(images(2, 1, 16)).shape == (2, 192)
    with pytest.raises(ValueError, match="divisible by patch size 4"):
        vit(images(2, 1, 18))


def test_unknown_backbone_names_the_choices() -> None:
    with pytest.raises(ValueError, match="small_cnn, resnet18, resnet50, vit_tiny"):
        build_backbone("resnet7", in_channels=3, image_size=32)


# ---- methods ------------------------------------------------------------------------------------


def test_simclr_loss_and_embeddings() -> None:
    model, _ = make("simclr")
    loss, stats = model.training_loss((images(4), images(4, seed=1)), step=0)
    loss.backward()
    assert loss.ndim == 0 and torch.isfinite(loss)
    assert float(stats["temperature"]) == pytest.approx(0.1)
    assert model.backbone.features[0][0].weight.grad.abs().sum() > 0
    assert model.head.net[-1].weight.grad.abs().sum() > 0
    embedded = model.embed_images(images(5))
    assert embedded.shape == (5, 128)
    assert torch.allclose(embedded.norm(dim=1), torch.ones(5), atol=1e-5)


def test_text_tower_reads_byte_tokens_and_ignores_padding() -> None:
    torch.manual_seed(0)
    tokenizer = ByteTokenizer(context_length=24)
    tower = TextTransformer(
        vocab_size=tokenizer.vocab_size, context_length=24, width=32, layers=2, heads=4
    ).eval()
    tokens = tokenizer(["a photo of the digit seven", "handwritten 7", "3"])
    out = tower(tokens)
    assert out.shape == (3, 32)
    # Padding is masked out of attention and pooling: cutting trailing pads changes nothing.
    short = tokenizer(["3"])
    width = int((short != tokenizer.pad_id).sum())
    assert torch.allclose(tower(short[:, :width]), out[2:3], atol=1e-5)
    # ...while a different caption does change the output.
    assert not torch.allclose(out[0], out[1], atol=1e-3)


def test_text_tower_rejects_bad_shapes() -> None:
    with pytest.raises(ValueError, match=r"divisible by model\.text_heads"):
        TextTransformer(vocab_size=259, context_length=8, width=30, layers=1, heads=4)
    tower = TextTransformer(vocab_size=259, context_length=8, width=16, layers=1, heads=4)
    with pytest.raises(ValueError, match=r"exceed model\.context_length"):
        tower(torch.ones(2, 9, dtype=torch.long))


@pytest.mark.parametrize("loss_name", ["infonce", "sigmoid"])
def test_clip_shared_space_and_zero_shot_classes(loss_name: str) -> None:
    model, config = make("clip", loss={"name": loss_name}, model={"context_length": 32})
    tokenizer = ByteTokenizer(context_length=32)
    groups = torch.tensor([1, 1, 3, 4])  # two captions of one class
    batch = (images(4), tokenizer(["one", "a one", "three", "four"]), groups)
    loss, stats = model(batch, 0)
    loss.backward()
    # The batch's groups reach the loss by default (loss.positives=groups); pairs ignores them.
    pairs_model, _ = make(
        "clip", loss={"name": loss_name, "positives": "pairs"}, model={"context_length": 32}
    )
    pairs_loss, _ = pairs_model(batch, 0)
    assert not torch.allclose(pairs_loss, loss)
    assert torch.allclose(pairs_loss, pairs_model(batch[:2], 0)[0])
    assert torch.allclose(pairs_loss, model((*batch[:2], torch.arange(4)), 0)[0])
    with pytest.raises(ValueError, match=r"loss\.positives='groups' needs .*this batch has 2"):
        model(batch[:2], 0)
    assert torch.isfinite(loss)
    assert model.text.token_embedding.weight.grad.abs().sum() > 0
    assert model.image_projection.weight.grad.abs().sum() > 0
    if loss_name == "sigmoid":
        assert model.logit_bias.grad is not None and model.logit_bias.grad.abs() > 0
        assert float(stats["sigmoid_bias"]) == config.loss.sigmoid_bias
    else:
        assert model.logit_bias is None
    dim = config.model.embedding_dim
    assert model.embed_images(images(3)).shape == (3, dim)
    classes = model.class_text_embeddings([["zero", "the digit 0"], "one", ("two",)], "cpu")
    assert classes.shape == (3, dim)
    assert torch.allclose(classes.norm(dim=1), torch.ones(3), atol=1e-5)


def test_dino_teacher_sees_global_crops_and_follows_the_student_by_ema() -> None:
    model, config = make("dino", model={"dino_out_dim": 64}, dino={"num_local_crops": 3})
    assert all(not p.requires_grad for p in model.teacher.parameters())
    pairs = zip(model.student.parameters(), model.teacher.parameters(), strict=True)
    assert all(torch.equal(student, teacher) for student, teacher in pairs)
    seen: dict[str, list[tuple[int, ...]]] = {"student": [], "teacher": []}
    model.student.backbone.register_forward_hook(
        lambda _m, inputs, _o: seen["student"].append(tuple(inputs[0].shape))
    )
    model.teacher.backbone.register_forward_hook(
        lambda _m, inputs, _o: seen["teacher"].append(tuple(inputs[0].shape))
    )
    crops = [images(4, seed=0), images(4, seed=1)] + [images(4, 1, 16, seed=i) for i in (2, 3, 4)]
    loss, _ = model(crops, 0)
    # Same-size crops run as one batch; the teacher gets the two global crops only.
    assert seen["student"] == [(8, 1, 32, 32), (12, 1, 16, 16)]
    assert seen["teacher"] == [(8, 1, 32, 32)]
    before = [p.detach().clone() for p in model.teacher.parameters()]
    optimizer = torch.optim.SGD(model.parameter_groups(0.5, 0.0), lr=0.5)
    loss.backward()
    optimizer.step()
    model.after_optimizer_step(3)
    m = model.momentum(3)
    assert config.dino.teacher_momentum < m < 1
    moved = 0
    for old, teacher, student in zip(
        before, model.teacher.parameters(), model.student.parameters(), strict=True
    ):
        assert torch.allclose(teacher, m * old + (1 - m) * student, atol=1e-6)
        moved += int(not torch.equal(teacher, old))
    assert moved > 0
    assert model.schedule_stats(0) == {"teacher_temperature": pytest.approx(0.04)}
    # kNN uses the teacher's features.
    assert model.embed_images(images(2)).shape == (2, 128)


def test_teacher_momentum_goes_from_start_to_one_on_a_cosine() -> None:
    values = [teacher_momentum(s, start=0.99, total_steps=100) for s in range(0, 101, 10)]
    assert values[0] == pytest.approx(0.99)
    assert values[-1] == pytest.approx(1.0)
    assert values[5] == pytest.approx(0.995)
    assert all(a < b for a, b in itertools.pairwise(values))
    with pytest.raises(ValueError, match="teacher_momentum"):
        teacher_momentum(0, start=1.0, total_steps=10)


def test_dino_student_temperature_alias() -> None:
    plain = build_config({"method": "dino"})
    assert dino_student_temperature_config(plain).value == 0.1
    alias = build_config({"method": "dino", "dino": {"student_temperature": 0.2}})
    assert dino_student_temperature_config(alias).value == 0.2
    both = build_config(
        {"method": "dino", "dino": {"student_temperature": 0.2}, "temperature": {"value": 0.3}}
    )
    with pytest.raises(ValueError, match=r"dino\.student_temperature=0\.2 conflicts"):
        dino_student_temperature_config(both)


def test_parameter_groups_cover_every_trainable_parameter_once() -> None:
    model, _ = make(
        "clip",
        loss={"name": "sigmoid"},
        temperature={"mode": "learnable", "value": 0.07, "lr_multiplier": 10.0},
    )
    groups = model.parameter_groups(1e-3, 0.05)
    ids = [id(p) for group in groups for p in group["params"]]
    trainable = [p for p in model.parameters() if p.requires_grad]
    assert sorted(ids) == sorted(id(p) for p in trainable)
    by_name = {group["name"]: group for group in groups}
    (tau,) = by_name["temperature"]["params"]
    assert tau is model.temperature.log_temperature
    assert by_name["temperature"]["lr"] == pytest.approx(1e-2)
    assert by_name["temperature"]["weight_decay"] == 0.0
    no_decay = {id(p) for p in by_name["no_decay"]["params"]}
    assert id(model.logit_bias) in no_decay
    assert id(model.text.positional_embedding) in no_decay
    assert all(p.ndim >= 2 for p in by_name["weights"]["params"])
    assert by_name["weights"]["weight_decay"] == 0.05


def test_frozen_learnable_temperature_asks_ddp_for_unused_parameters() -> None:
    frozen, _ = make("simclr", temperature={"mode": "learnable", "frozen_epochs": 1.0})
    free, _ = make("simclr", temperature={"mode": "learnable"})
    fixed, _ = make("simclr")
    assert frozen.may_leave_parameters_unused
    assert not free.may_leave_parameters_unused
    assert not fixed.may_leave_parameters_unused


# ---- weights and checkpoints --------------------------------------------------------------------


def test_pretrained_weights_load_from_a_local_file(tmp_path: Path) -> None:
    torch.manual_seed(1)
    source = build_backbone("resnet18", in_channels=3, image_size=32)
    path = tmp_path / "weights.pt"
    wrapped = {"state_dict": {f"module.{k}": v for k, v in source.state_dict().items()}}
    torch.save(wrapped, path)
    torch.manual_seed(2)
    target = build_backbone("resnet18", in_channels=3, image_size=32)
    load_pretrained_weights(target, path)
    for key, value in source.state_dict().items():
        assert torch.equal(target.state_dict()[key], value), key
    # Through the config, the model's backbone gets them too.
    config = build_config({"model": {"backbone": "resnet18", "pretrained_weights": str(path)}})
    model = build_model(config, Spec(3, 32), steps_per_epoch=1)
    assert torch.equal(model.backbone.net.conv1.weight, source.net.conv1.weight)


def test_pretrained_weights_errors(tmp_path: Path) -> None:
    backbone = build_backbone("small_cnn", in_channels=1, image_size=32)
    with pytest.raises(FileNotFoundError, match="no such file"):
        load_pretrained_weights(backbone, tmp_path / "missing.pt")
    other = tmp_path / "other.pt"
    torch.save({"fc.weight": torch.zeros(3, 3)}, other)
    with pytest.raises(ValueError, match="none of its 1 tensors match"):
        load_pretrained_weights(backbone, other)


def _checkpoint(tmp_path: Path, method: str, **sections: object) -> tuple[Path, object]:
    model, config = make(method, **sections)
    model.eval()
    state = {
        "config": config.to_dict(),
        "data": {
            "channels": 1,
            "image_size": 32,
            "num_classes": 10,
            "class_names": [],
            "name": "digits-cluttered",
            "mean": [MEAN],
            "std": [STD],
            "examples": torch.randint(0, 256, (4, 1, 32, 32), dtype=torch.uint8),
        },
        "steps_per_epoch": 5,
        "epoch": 1,
        "global_step": 5,
        "sampler_epoch": 1,
        "world_size": 1,
        "model": model.state_dict(),
        "temperature": model.temperature.state_dict(),
        "optimizer": {},
        "lr_schedule": {},
        "grad_scaler": None,
        "rng": {},
        "cost": {},
        "metrics": {"epoch": 1},
    }
    return write_checkpoint(tmp_path / method, state), model


@pytest.mark.parametrize("method", ["simclr", "clip", "dino"])
def test_load_embedding_model_from_a_checkpoint(tmp_path: Path, method: str) -> None:
    directory, model = _checkpoint(tmp_path, method, model={"dino_out_dim": 32})
    exported, config = load_embedding_model(directory)
    embedder, example, card = exported.model, exported.example, exported.card
    assert config.method == method
    assert not embedder.training
    saved = read_checkpoint(directory)["data"]["examples"]
    torch.testing.assert_close(example, saved.float() / 255)  # the checkpoint's real images
    out = embedder(example)
    assert torch.allclose(out.norm(dim=1), torch.ones(4), atol=1e-5)
    # The model normalises itself: raw pixels in, the trained encoder's input inside.
    with torch.no_grad():
        expected = model.embed_images((example - MEAN) / STD)
    assert torch.allclose(out, expected, atol=1e-6)
    torch.testing.assert_close(embedder(saved), out)  # uint8 in [0, 255] is the same image
    assert all(not p.requires_grad for p in embedder.parameters())
    assert (card.method, card.backbone, card.data_set) == (method, "small_cnn", "digits-cluttered")
    assert (card.image_size, card.channels, card.mean, card.std) == (32, 1, (MEAN,), (STD,))
    assert card.embedding_dim == out.shape[1] and card.embeds_text == (method == "clip")


def test_only_clip_models_embed_text_with_their_tokenizer_inside(tmp_path: Path) -> None:
    directory, model = _checkpoint(tmp_path, "clip")
    clip = load_embedding_model(directory)[0].model
    prompts = ["a photo of the digit three", "a photo of the digit seven"]
    with torch.no_grad():
        expected = model.embed_texts(model.tokenizer(prompts))
    torch.testing.assert_close(clip.embed_text(prompts), expected)
    simclr = load_embedding_model(_checkpoint(tmp_path, "simclr")[0])[0].model
    with pytest.raises(ValueError, match="only CLIP models embed text"):
        simclr.embed_text(prompts)


def test_embedding_model_rejects_wrong_shapes_and_dtypes(tmp_path: Path) -> None:
    embedder = load_embedding_model(_checkpoint(tmp_path, "simclr")[0])[0].model
    with pytest.raises(ValueError, match=r"\[N, 1, 32, 32\].*got \[2, 3, 32, 32\]"):
        embedder(torch.rand(2, 3, 32, 32))
    with pytest.raises(TypeError, match=r"uint8 in \[0, 255\] or floating point.*torch.int64"):
        embedder(torch.zeros(2, 1, 32, 32, dtype=torch.long))


def test_checkpoint_without_normalisation_cannot_export(tmp_path: Path) -> None:
    directory, _ = _checkpoint(tmp_path, "simclr")
    state = read_checkpoint(directory)
    del state["data"]["mean"]
    torch.save(state, directory / "checkpoint.pt")
    with pytest.raises(ValueError, match="has no data mean"):
        load_embedding_model(directory)


def test_embedding_model_exports_with_torch_export(tmp_path: Path) -> None:
    directory, _ = _checkpoint(tmp_path, "simclr")
    exported, _ = load_embedding_model(directory)
    embedder, example = exported.model, exported.example
    program = torch.export.export(embedder, (example,))
    assert torch.allclose(program.module()(example), embedder(example), atol=1e-6)


def test_checkpoint_reader_rejects_other_files(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"no checkpoint\.pt"):
        read_checkpoint(tmp_path)
    torch.save({"format": "something-else"}, tmp_path / "checkpoint.pt")
    with pytest.raises(ValueError, match="not a tauray-checkpoint/1"):
        read_checkpoint(tmp_path)
    with pytest.raises(ValueError, match="missing keys"):
        write_checkpoint(tmp_path / "x", {"config": {}})


def test_model_state_round_trips_exactly() -> None:
    model, _ = make("dino", model={"dino_out_dim": 32})
    model.loss.center.fill_(0.5)
    clone, _ = make("dino", model={"dino_out_dim": 32})
    clone.load_state_dict(model.state_dict())
    for key, value in model.state_dict().items():
        assert torch.equal(clone.state_dict()[key], value), key
    assert math.isclose(float(clone.loss.center.mean()), 0.5)
