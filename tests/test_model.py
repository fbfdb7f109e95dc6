import pytest
import torch

from radiofm.config import ModelConfig, preset
from radiofm.model import (
    MaskedAutoencoder,
    build_model,
    encoder_param_count,
    patchify,
    random_masking,
    sincos_pos_embed,
    unpatchify,
)


@pytest.mark.parametrize("name, expected_m", [("vit-s", 38), ("vit-m", 85), ("vit-l", 303)])
def test_paper_sizes_have_the_paper_parameter_counts(name, expected_m):
    count = encoder_param_count(preset(name))
    assert abs(count / 1e6 - expected_m) / expected_m < 0.02, count


def test_encoder_count_matches_the_architecture_formula():
    c = preset("vit-s")
    d, hidden, p = c.embed_dim, int(c.embed_dim * c.mlp_ratio), c.patch_size
    per_block = 2 * 2 * d + (3 * d * d + 3 * d) + (d * d + d) + (d * hidden + hidden) + (hidden * d + d)
    expected = c.depth * per_block + (d * p * p + d) + d + 2 * d  # blocks, patch proj, cls token, final norm
    assert encoder_param_count(c) == expected


def test_config_json_round_trip_and_newer_format_is_refused():
    c = preset("vit-nano", task="classify", num_classes=3, labels=["a", "b", "c"])
    assert ModelConfig.from_json(c.to_json()) == c
    newer = c.to_dict() | {"format_version": 99}
    with pytest.raises(ValueError, match="newer"):
        ModelConfig.from_dict(newer)


@pytest.mark.parametrize("bad, match", [
    (dict(img_size=(100, 128)), "divisible"),
    (dict(task="classify", num_classes=1), "num_classes"),
    (dict(task="detect"), "task"),
    (dict(num_heads=5), "num_heads"),
])
def test_bad_config_is_refused(bad, match):
    with pytest.raises(ValueError, match=match):
        preset("vit-nano", **bad)


def test_sincos_matches_mae_layout():
    table = sincos_pos_embed(8, 2, 3)
    assert table.shape == (6, 8)
    # token 1 is row 0, column 1: the first half (w coordinate) changes, the second half (h) does not
    assert not torch.allclose(torch.tensor(table[0, :4]), torch.tensor(table[1, :4]))
    assert torch.allclose(torch.tensor(table[0, 4:]), torch.tensor(table[1, 4:]))
    assert torch.allclose(torch.tensor(table[0, 4:]), torch.tensor(table[2, 4:]))
    assert not torch.allclose(torch.tensor(table[0, 4:]), torch.tensor(table[3, 4:]))


@pytest.mark.parametrize("ratio", [0.5, 0.7, 0.75, 0.8])
def test_masking_keeps_round_l_times_one_minus_ratio_and_differs_per_sample(ratio):
    torch.manual_seed(0)
    ids_keep, mask, ids_restore = random_masking(8, 196, ratio)
    keep = round(196 * (1 - ratio))
    assert ids_keep.shape == (8, keep)
    assert torch.all(mask.sum(1) == 196 - keep)
    for row, m in zip(ids_keep, mask):  # kept ids are exactly the unmasked positions
        assert torch.all(m[row] == 0) and len(set(row.tolist())) == keep
    assert len({tuple(sorted(r.tolist())) for r in ids_keep}) == 8
    assert torch.equal(torch.gather(torch.argsort(ids_restore, 1), 1, torch.arange(196).expand(8, -1))[:, :keep].sort(1)[0],
                       ids_keep.sort(1)[0])


def test_patchify_round_trip():
    x = torch.randn(2, 3, 32, 48)
    assert torch.equal(unpatchify(patchify(x, 8), 8, (4, 6), 3), x)


def test_mae_loss_falls_on_a_fixed_batch():
    torch.manual_seed(0)
    model = MaskedAutoencoder(preset("vit-micro"))
    x = torch.randn(4, 1, 32, 32).cumsum(-1) / 8  # smooth, learnable structure
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3)
    gen = torch.Generator().manual_seed(1)
    losses = []
    for _ in range(40):
        loss, pred, mask = model(x, generator=gen)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert pred.shape == (4, 16, 64) and mask.shape == (4, 16)
    assert sum(losses[-5:]) / 5 < 0.5 * sum(losses[:5]) / 5, losses


def test_mae_loss_is_on_masked_patches_only():
    torch.manual_seed(0)
    model = MaskedAutoencoder(preset("vit-micro"))
    x = torch.randn(2, 1, 32, 32)
    loss, pred, mask = model(x)
    target = patchify(x, 8)
    expected = (((pred - target) ** 2).mean(-1) * mask).sum() / mask.sum()
    assert torch.allclose(loss, expected)
    model_norm = MaskedAutoencoder(preset("vit-micro", norm_pix_loss=True))
    model_norm.load_state_dict(model.state_dict())
    gen = torch.Generator().manual_seed(3)
    assert not torch.allclose(model_norm(x, generator=gen)[0], model(x, generator=torch.Generator().manual_seed(3))[0])


@pytest.mark.parametrize("chans", [1, 3])
def test_head_output_shapes(chans):
    c = preset("vit-micro", in_chans=chans)
    x = torch.randn(2, chans, 32, 32)
    for pool in ("avg", "cls"):
        assert build_model(c.replace(task="classify", num_classes=6, pool=pool))(x).shape == (2, 6)
    seg = build_model(c.replace(task="segment", num_classes=3))
    assert seg(x).shape == (2, 3, 32, 32)
    assert seg(torch.randn(1, chans, 32, 64)).shape == (1, 3, 32, 64)  # any size the patch divides
    tokens, pooled = build_model(c.replace(task="encode"))(x)
    assert tokens.shape == (2, 16, 64) and pooled.shape == (2, 64)


def test_wrong_channels_or_size_is_a_clear_error():
    model = build_model(preset("vit-micro", task="classify", num_classes=2))
    with pytest.raises(ValueError, match=r"\(B, 1, H, W\)"):
        model(torch.randn(2, 3, 32, 32))
    with pytest.raises(ValueError, match="divisible"):
        model(torch.randn(2, 1, 30, 32))


def test_key_padding_makes_padded_patches_irrelevant():
    torch.manual_seed(0)
    model = build_model(preset("vit-micro", task="classify", num_classes=4)).eval()
    x = torch.randn(1, 1, 32, 32)
    valid = torch.ones(1, 4, 4, dtype=torch.bool)
    valid[..., 2:] = False  # the right half of the time axis is padding
    y = x.clone()
    y[..., 16:] = torch.randn(1, 1, 32, 16) * 10
    kp = valid.flatten(1)
    with torch.no_grad():
        assert torch.allclose(model.pooled(x, kp), model.pooled(y, kp), atol=1e-5)
        assert not torch.allclose(model.pooled(x), model.pooled(y), atol=1e-2)
