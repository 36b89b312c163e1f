"""speed.models.conditional: the null label, label dropout, guidance and the checkpointing switch
shared by every backbone, on a toy backbone whose outputs are known, and on DiT and the UNet."""

import pytest
import torch
from torch import nn

from speed.models import ConditionalBackbone, UNetModel, build_dit


class Toy(ConditionalBackbone):
    """eps(x, t, y) = x * (1 + y): one 'block' that scales by the label, counting its calls."""

    def __init__(self, num_classes=3, class_dropout_prob=0.5, grad_checkpointing=False):
        super().__init__(
            num_classes=num_classes,
            class_dropout_prob=class_dropout_prob,
            in_channels=2,
            cfg_channels="all",
            grad_checkpointing=grad_checkpointing,
        )
        self.weight = nn.Parameter(torch.ones(()))
        self.calls = 0

    def block(self, x, scale):
        self.calls += 1
        return self.weight * x * scale

    def forward(self, x, t, y=None, force_drop_ids=None):
        labels = self.labels(y, t, force_drop_ids)
        scale = torch.ones(len(x)) if labels is None else 1.0 + labels.float()
        return self.run_block(self.block, x, scale[:, None])


def test_null_label_and_forced_drops():
    model = Toy().eval()
    t, y = torch.zeros(3), torch.tensor([0, 1, 2])
    assert model.has_null_label and model.label_rows == 4
    assert model.labels(y, t).tolist() == [0, 1, 2]  # eval: no dropout
    assert model.labels(None, t).tolist() == [3, 3, 3]
    forced = model.labels(y, t, force_drop_ids=torch.tensor([1, 0, 1]))
    assert forced.tolist() == [3, 1, 3]
    assert model.train().labels(y, t, torch.tensor([0, 0, 0])).tolist() == [0, 1, 2]


def test_dropout_in_training_at_the_configured_rate():
    model = Toy(num_classes=1, class_dropout_prob=0.25).train()
    torch.manual_seed(0)
    dropped = model.labels(torch.zeros(20000, dtype=torch.long), torch.zeros(20000))
    assert abs(dropped.float().mean().item() - 0.25) < 0.01  # null label is 1


def test_without_a_null_label():
    model = Toy(class_dropout_prob=0.0).train()
    t, y = torch.zeros(2), torch.tensor([1, 2])
    assert not model.has_null_label and model.label_rows == 3
    assert model.labels(y, t).tolist() == [1, 2]  # no dropout even in training
    assert model.labels(y, t, torch.tensor([0, 0])).tolist() == [1, 2]
    with pytest.raises(ValueError, match="y=None needs a null label"):
        model.labels(None, t)
    with pytest.raises(ValueError, match="force_drop_ids needs a null label"):
        model.labels(y, t, torch.tensor([1, 0]))
    with pytest.raises(ValueError, match="class-conditional Toy"):
        model.forward_with_cfg(torch.ones(2, 2), t, y, 2.0)
    assert Toy(num_classes=0).labels(y, t) is None
    with pytest.raises(ValueError, match="class_dropout_prob"):
        Toy(class_dropout_prob=1.5)


def test_forward_with_cfg_mixes_cond_and_null():
    model = Toy().eval()
    x = torch.ones(4, 2)
    y = torch.tensor([1, 2, 3, 3])  # [cond; uncond] with the null label 3
    out = model.forward_with_cfg(x, torch.zeros(4), y, 1.5)
    # eps_cond = 1 + y, eps_uncond = 4: 4 + 1.5 (1 + y - 4)
    expected = torch.tensor([4 + 1.5 * (2 - 4), 4 + 1.5 * (3 - 4)])
    torch.testing.assert_close(out[:, 0], torch.cat([expected, expected]))


def test_grad_checkpointing_recomputes_blocks_only_when_training_with_gradients():
    for flag, calls in ((False, 1), (True, 2)):
        model = Toy(class_dropout_prob=0.0, grad_checkpointing=flag).train()
        model(torch.ones(2, 2), torch.zeros(2), torch.tensor([0, 1])).sum().backward()
        assert model.calls == calls
        assert model.weight.grad.item() == pytest.approx(2 * 1 + 2 * 2)
    model = Toy(class_dropout_prob=0.0, grad_checkpointing=True).eval()
    model(torch.ones(2, 2), torch.zeros(2), torch.tensor([0, 1])).sum().backward()
    assert model.calls == 1


def test_both_backbones_share_one_switch_and_the_label_attributes():
    dit = build_dit("DiT-S/8", input_size=8, num_classes=5, depth=1, grad_checkpointing=True)
    unet = UNetModel(
        image_size=8,
        in_channels=4,
        model_channels=32,
        num_res_blocks=1,
        attention_resolutions=(),
        channel_mult=(1,),
        num_classes=5,
        class_dropout_prob=0.1,
        grad_checkpointing=True,
    )
    for model in (dit, unet):
        assert isinstance(model, ConditionalBackbone)
        assert model.grad_checkpointing and model.has_null_label and model.label_rows == 6
        assert model.class_dropout_prob == 0.1
    assert dit.y_embedder.embedding_table.weight.shape[0] == unet.label_emb.weight.shape[0] == 6


def test_shard_units_are_the_blocks_of_each_backbone():
    dit = build_dit("DiT-S/8", input_size=8, num_classes=5, depth=3)
    assert dit.shard_units() == list(dit.blocks)
    unet = UNetModel(
        image_size=8,
        in_channels=4,
        model_channels=32,
        num_res_blocks=1,
        attention_resolutions=(1,),
        channel_mult=(1, 2),
    )
    units = unet.shard_units()
    assert {type(u).__name__ for u in units} == {"ResBlock", "AttentionBlock"}
    resblocks = [m for m in unet.modules() if type(m).__name__ == "ResBlock"]
    assert [u for u in units if type(u).__name__ == "ResBlock"] == resblocks
    assert not Toy().shard_units()  # no declared block types: the root unit holds everything
