"""GoogLeNet and DenseNet nets: torchvision mirrors, paper variant, tiny builds, memory-efficient path."""

from __future__ import annotations

import copy

import pytest
import torch
import torchvision
from torch import nn

from lit_models.nets import densenet as densenet_mod
from lit_models.nets.densenet import DenseNet
from lit_models.nets.googlenet import GoogLeNet, GoogLeNetOutputs


def n_params(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


def key_shapes(m: nn.Module) -> list[tuple[str, tuple[int, ...]]]:
    return [(k, tuple(v.shape)) for k, v in m.state_dict().items()]


# ---------------------------------------------------------------- (a) torchvision mirrors


@pytest.mark.parametrize("aux", [False, True])
def test_googlenet_torchvision_keys_shapes_params(aux: bool) -> None:
    ref = torchvision.models.googlenet(weights=None, aux_logits=aux, init_weights=True, num_classes=10)
    ours = GoogLeNet(num_classes=10, aux_logits=aux, variant="torchvision")
    assert key_shapes(ours) == key_shapes(ref)
    assert n_params(ours) == n_params(ref)
    ours.load_state_dict(ref.state_dict(), strict=True)


def test_googlenet_param_anchor() -> None:
    assert n_params(GoogLeNet(num_classes=10, aux_logits=False, variant="torchvision")) == 5_610_154


@pytest.mark.parametrize("depth", [121, 161, 169, 201])
def test_densenet_torchvision_keys_shapes_params(depth: int) -> None:
    ref = getattr(torchvision.models, f"densenet{depth}")(weights=None, num_classes=10)
    ours = DenseNet(depth=depth, num_classes=10)
    assert key_shapes(ours) == key_shapes(ref)
    assert n_params(ours) == n_params(ref)


def test_densenet_param_anchor() -> None:
    assert n_params(DenseNet(depth=121, num_classes=10)) == 6_964_106


@pytest.mark.parametrize(("depth", "millions"), [(100, 0.8), (250, 15.3), (190, 25.6)])
def test_cifar_densenet_bc_matches_table_2(depth: int, millions: float) -> None:
    """The CIFAR DenseNet-BC: three blocks of (L - 4) / 6 layers, a 2k-wide 3x3 stem, Table 2's sizes."""
    net = DenseNet(depth=depth, num_classes=10)
    blocks = [m for name, m in net.features.named_children() if name.startswith("denseblock")]
    assert [len(block) for block in blocks] == [(depth - 4) // 6] * 3
    assert net.features.conv0.kernel_size == (3, 3) and net.torchvision_name is None
    assert round(n_params(net) / 1e6, 1) == millions
    if depth == 100:
        assert net(torch.zeros(2, 3, 32, 32)).shape == (2, 10)


def test_googlenet_without_reductions_reads_the_whole_input() -> None:
    """reductions=False: the 3x3 and 5x5 convolutions take the block's input, the output width is unchanged."""
    reduced, naive = (GoogLeNet(10, aux_logits=False, width_mult=0.25, reductions=r) for r in (True, False))
    block = naive.inception3a
    assert len(block.branch2) == len(block.branch3) == 1
    block_input = reduced.inception3a.branch1.conv.in_channels
    assert block.branch2[0].conv.in_channels == block.branch3[0].conv.in_channels == block_input
    assert block.out_channels == reduced.inception3a.out_channels
    assert n_params(naive) > 3 * n_params(reduced)
    assert naive(torch.zeros(1, 3, 64, 64)).logits.shape == (1, 10)


def _randomize_bn_stats(m: nn.Module) -> None:
    # Fresh BNs are identity-ish in eval; random stats make the output comparison meaningful.
    for mod in m.modules():
        if isinstance(mod, nn.BatchNorm2d):
            mod.running_mean.uniform_(-0.5, 0.5)
            mod.running_var.uniform_(0.5, 2.0)
            mod.weight.data.uniform_(0.5, 1.5)
            mod.bias.data.uniform_(-0.2, 0.2)


@pytest.mark.parametrize("aux", [False, True])
def test_googlenet_loads_torchvision_weights_same_eval_output(aux: bool) -> None:
    torch.manual_seed(0)
    ref = torchvision.models.googlenet(weights=None, aux_logits=aux, init_weights=True, num_classes=10)
    _randomize_bn_stats(ref)
    ref.eval()
    ours = GoogLeNet(num_classes=10, aux_logits=aux, variant="torchvision").eval()
    ours.load_state_dict(ref.state_dict(), strict=True)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        expected = ref(x)
        out = ours(x)
    expected = expected.logits if isinstance(expected, tuple) else expected
    assert isinstance(out, GoogLeNetOutputs)
    torch.testing.assert_close(out.logits, expected)


def test_densenet121_loads_torchvision_weights_same_eval_output() -> None:
    torch.manual_seed(0)
    ref = torchvision.models.densenet121(weights=None, num_classes=10)
    _randomize_bn_stats(ref)
    ref.eval()
    ours = DenseNet(depth=121, num_classes=10).eval()
    ours.load_state_dict(ref.state_dict(), strict=True)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), ref(x))


# ---------------------------------------------------------------- (b) paper GoogLeNet

_INCEPTIONS = ["3a", "3b", "4a", "4b", "4c", "4d", "4e", "5a", "5b"]


def test_googlenet_paper_structure() -> None:
    paper = GoogLeNet(num_classes=10, aux_logits=False, variant="paper", width_mult=0.125)
    tv = GoogLeNet(num_classes=10, aux_logits=False, variant="torchvision", width_mult=0.125)
    for name in _INCEPTIONS:
        assert getattr(paper, f"inception{name}").branch3[1].conv.kernel_size == (5, 5)
        assert getattr(tv, f"inception{name}").branch3[1].conv.kernel_size == (3, 3)
    assert sum(isinstance(m, nn.LocalResponseNorm) for m in paper.modules()) == 2
    assert not any(isinstance(m, nn.LocalResponseNorm) for m in tv.modules())
    assert not any(isinstance(m, nn.BatchNorm2d) for m in paper.modules())
    assert all(m.bias is not None for m in paper.modules() if isinstance(m, nn.Conv2d))
    assert all(m.bias is None for m in tv.modules() if isinstance(m, nn.Conv2d))


def test_googlenet_paper_param_counts() -> None:
    # Paper, Table 1: ~6.8M parameters (weights only, rounded per row); ours adds biases and real 5x5s.
    no_aux = n_params(GoogLeNet(num_classes=1000, aux_logits=False, variant="paper"))
    with_aux = n_params(GoogLeNet(num_classes=1000, aux_logits=True, variant="paper"))
    assert 6_500_000 < no_aux < 7_200_000
    assert no_aux == 6_998_552
    assert with_aux == 13_378_280


def test_googlenet_paper_spatial_sizes_224() -> None:
    torch.manual_seed(0)
    net = GoogLeNet(num_classes=10, variant="paper", width_mult=0.125).eval()
    sizes: dict[str, tuple[int, int]] = {}
    for name in ["maxpool1", "maxpool2", "inception3b", "inception4a", "inception4e", "inception5b"]:
        getattr(net, name).register_forward_hook(
            lambda _m, _i, o, name=name: sizes.__setitem__(name, tuple(o.shape[-2:]))
        )
    with torch.no_grad():
        net(torch.randn(1, 3, 224, 224))
    assert sizes == {
        "maxpool1": (56, 56),
        "maxpool2": (28, 28),
        "inception3b": (28, 28),
        "inception4a": (14, 14),
        "inception4e": (14, 14),
        "inception5b": (7, 7),
    }


# ---------------------------------------------------------------- (c) tiny builds


@pytest.mark.parametrize("variant", ["paper", "torchvision"])
@pytest.mark.parametrize("aux", [True, False])
@pytest.mark.parametrize("size", [32, 64])
def test_googlenet_tiny_forward_backward(variant: str, aux: bool, size: int) -> None:
    torch.manual_seed(0)
    net = GoogLeNet(num_classes=7, aux_logits=aux, variant=variant, width_mult=0.125)
    x = torch.randn(2, 3, size, size)
    for train in (True, False):
        net.train(train)
        out = net(x)
        assert isinstance(out, GoogLeNetOutputs)
        assert out.logits.shape == (2, 7)
        if aux:
            assert out.aux_logits1 is not None and out.aux_logits2 is not None
            assert out.aux_logits1.shape == (2, 7) and out.aux_logits2.shape == (2, 7)
        else:
            assert out.aux_logits1 is None and out.aux_logits2 is None
    net.train()
    out = net(x)
    loss = out.logits.square().mean()
    if aux:
        loss = loss + 0.3 * (out.aux_logits1.square().mean() + out.aux_logits2.square().mean())
    loss.backward()
    for name, p in net.named_parameters():
        assert p.grad is not None, name
        assert torch.isfinite(p.grad).all(), name


def test_googlenet_width_mult_rounds_to_at_least_one() -> None:
    net = GoogLeNet(num_classes=3, width_mult=0.01, variant="torchvision").eval()
    assert net.conv1.conv.out_channels == 1
    assert net.inception3a.branch1.conv.out_channels == 1
    assert net(torch.randn(1, 3, 32, 32)).logits.shape == (1, 3)


@pytest.mark.parametrize("small_input,size", [(False, 32), (False, 64), (True, 32)])
def test_densenet_tiny_forward_backward(small_input: bool, size: int) -> None:
    torch.manual_seed(0)
    net = DenseNet(depth=121, num_classes=7, growth_rate=4, num_init_features=8, small_input=small_input)
    out = net(torch.randn(2, 3, size, size))
    assert isinstance(out, torch.Tensor) and out.shape == (2, 7)
    out.square().mean().backward()
    for name, p in net.named_parameters():
        assert p.grad is not None, name
        assert torch.isfinite(p.grad).all(), name
    net.eval()
    with torch.no_grad():
        assert net(torch.randn(2, 3, size, size)).shape == (2, 7)


def test_densenet_small_input_stem_keys() -> None:
    small = DenseNet(depth=121, num_classes=10, growth_rate=4, num_init_features=8, small_input=True)
    big = DenseNet(depth=121, num_classes=10, growth_rate=4, num_init_features=8)
    assert small.features.conv0.kernel_size == (3, 3) and small.features.conv0.stride == (1, 1)
    assert small.features.conv0.out_channels == 8
    removed = set(big.state_dict()) - set(small.state_dict())
    assert set(small.state_dict()) <= set(big.state_dict())
    assert removed and all(k.startswith("features.norm0.") for k in removed)
    assert not hasattr(small.features, "pool0")


def test_densenet_defaults_per_depth_and_compression() -> None:
    net = DenseNet(depth=161, num_classes=10)
    assert net.features.conv0.out_channels == 96
    assert net.features.denseblock1.denselayer1.conv2.out_channels == 48
    # theta = 0.3: floor(0.3 * (8 + 6*4)) = floor(9.6) = 9.
    net = DenseNet(depth=121, num_classes=3, growth_rate=4, num_init_features=8, compression=0.3)
    assert net.features.transition1.conv.out_channels == 9
    assert net(torch.randn(2, 3, 32, 32)).shape == (2, 3)


# ---------------------------------------------------------------- (d) memory-efficient DenseNet


@pytest.mark.parametrize("drop_rate", [0.0, 0.2])
def test_densenet_memory_efficient_equivalence(drop_rate: float, monkeypatch: pytest.MonkeyPatch) -> None:
    torch.manual_seed(0)
    kwargs = dict(depth=121, num_classes=5, growth_rate=4, num_init_features=8, drop_rate=drop_rate)
    plain = DenseNet(**kwargs)
    efficient = DenseNet(**kwargs, memory_efficient=True)
    efficient.load_state_dict(plain.state_dict())

    calls = [0]
    real_checkpoint = densenet_mod.cp.checkpoint

    def counting_checkpoint(*args, **kw):
        calls[0] += 1
        return real_checkpoint(*args, **kw)

    monkeypatch.setattr(densenet_mod.cp, "checkpoint", counting_checkpoint)
    x = torch.randn(2, 3, 32, 32)
    outs = []
    for net in (plain, efficient):
        torch.manual_seed(1)  # same dropout masks
        y = net(x)
        y.square().mean().backward()
        outs.append(y)
    assert calls[0] == 6 + 12 + 24 + 16  # every dense layer's bottleneck was checkpointed
    torch.testing.assert_close(outs[1], outs[0], rtol=0, atol=0)
    for (name, p), q in zip(plain.named_parameters(), efficient.parameters(), strict=True):
        torch.testing.assert_close(q.grad, p.grad, rtol=0, atol=0, msg=name)
    # Running stats must be updated once, not again during the recompute in backward.
    for (name, b), c in zip(plain.named_buffers(), efficient.buffers(), strict=True):
        torch.testing.assert_close(c, b, rtol=0, atol=0, msg=name)

    # No checkpointing when nothing needs gradients.
    calls[0] = 0
    efficient.eval()
    with torch.no_grad():
        efficient(x)
    assert calls[0] == 0


# ---------------------------------------------------------------- (e) bad arguments


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(depth=101), r"100, 121, 161, 169, 190, 201, 250"),
        (dict(compression=0.0), r"\(0, 1\]"),
        (dict(compression=1.5), r"\(0, 1\]"),
        (dict(num_classes=0), "num_classes"),
        (dict(drop_rate=1.0), "drop_rate"),
        (dict(growth_rate=0), "growth_rate"),
    ],
)
def test_densenet_bad_args(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        DenseNet(**kwargs)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(variant="resnet"), r"'paper', 'torchvision'"),
        (dict(width_mult=0.0), "width_mult"),
        (dict(num_classes=0), "num_classes"),
        (dict(dropout=1.0), "dropout"),
        (dict(aux_dropout=-0.1), "aux_dropout"),
    ],
)
def test_googlenet_bad_args(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        GoogLeNet(**kwargs)


def test_googlenet_state_dict_roundtrip_between_instances() -> None:
    torch.manual_seed(0)
    a = GoogLeNet(num_classes=4, variant="paper", width_mult=0.125).eval()
    b = copy.deepcopy(a)
    b.load_state_dict(a.state_dict(), strict=True)
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(a(x).logits, b(x).logits)
