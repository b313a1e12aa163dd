"""Tests for mde.networks: shapes, ranges, gradient paths, initialisation, reproducibility and bad input."""
import pytest
import torch
from torch import nn

from mde.networks import (Generator, Discriminator, MaskReconstructor, CoordDiscriminator, ContextEncoder,
                          count_parameters, layer_shapes)

TINY = dict(img_size=16, widths=(8, 16), fc_dim=32)


@pytest.fixture(scope='module')
def paper():
    "The paper-size 96x96 networks (built once: G alone has ~172 M parameters)."
    torch.manual_seed(0)
    return dict(G=Generator(), D=Discriminator(), R=MaskReconstructor(), C=CoordDiscriminator())


@pytest.fixture(scope='module')
def x96():
    return torch.rand(2, 3, 96, 96, generator=torch.Generator().manual_seed(1))


# ---------------------------------------------------------------- paper-size models
def test_paper_generator_forward(paper, x96):
    G = paper['G'].eval()                                     # eval: encode and forward see the same BN statistics
    try:
        with torch.no_grad():
            y, z = G(x96, return_features=True)
            z2 = G.encode(x96)
    finally:
        G.train()
    assert y.shape == x96.shape and y.dtype == torch.float32
    assert y.min() >= 0 and y.max() <= 1
    assert z.shape == (2, 4000) and (z >= 0).all()          # post-ReLU 4000-d code
    assert torch.equal(z2, z)
    assert G.fc[1].in_features == 512 * 6 * 6                # 96 / 2**4 = 6


def test_paper_discriminator_R_coord(paper, x96):
    with torch.no_grad():
        logits = paper['D'](x96)
        masks = paper['R'](x96)
        boxes = paper['C'](x96)
    assert logits.shape == (2,)
    assert masks.shape == (2, 3, 96, 96)
    assert boxes.shape == (2, 3, 4) and boxes.min() >= 0 and boxes.max() <= 1


def test_paper_parameter_counts(paper):
    G, D, R, C = (paper[k] for k in 'GDRC')
    nG, nD, nR = count_parameters(G), count_parameters(D), count_parameters(R)
    assert nG == sum(p.numel() for p in G.parameters())
    assert nD < nG and nR < nG                                # "D shall have fewer parameters", R is lighter
    assert count_parameters(G.fc) + count_parameters(G.defc) == 2 * 18432 * 4000 + 4000 + 18432
    assert count_parameters(C) - nD == 2 * 64 * 9 + 11 * 512 + 11   # 2 coord input channels + 12-way head
    assert (nG, nD, nR) == (171_654_179, 4_687_745, 5_667_180)       # pins the documented architecture
    for p in G.parameters(): p.requires_grad_(False)
    try:
        assert count_parameters(G, trainable_only=True) == 0
    finally:
        for p in G.parameters(): p.requires_grad_(True)


def test_paper_R_has_13_layers(paper):
    R = paper['R']
    convs = [m for m in R.modules() if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))]
    assert len(convs) == 13
    assert R.strides == [2, 2, 2, 2, 2, 1]                    # 96 -> 3 after 5 halvings
    assert convs[-1].kernel_size == (1, 1) and convs[-1].out_channels == 3


def test_dcgan_init(paper):
    G = paper['G']
    w = G.enc[1][0][0].weight
    assert abs(w.std().item() - 0.02) < 0.002 and abs(w.mean().item()) < 0.002
    assert abs(G.fc[1].weight.std().item() - 0.02) < 0.001    # the big FC (skip_init + normal)
    bn = G.enc[1][0][1]
    assert abs(bn.weight.mean().item() - 1) < 0.01 and bn.bias.abs().max() == 0
    assert G.fc[1].bias.abs().max() == 0 and G.out[0].bias.abs().max() == 0


# ---------------------------------------------------------------- generator details
def _first_conv_grad(G, x):
    G.zero_grad()
    G(x).square().mean().backward()
    return G.enc[0][0][0].weight.grad.abs().sum().item()


def _cut(G, path):
    with torch.no_grad():
        if path == 'fc':
            G.fc[1].weight.zero_()
        else:                                                  # decoder conv slices reading the skips
            for stage in G.dec:
                conv = stage.convs[0][0]
                conv.weight[:, conv.in_channels // 2:].zero_()


@pytest.mark.parametrize('cut', [(), ('fc',), ('skip',), ('fc', 'skip')])
def test_gradient_paths(cut):
    "The first encoder conv gets gradient through the FC path alone and through the skip path alone."
    torch.manual_seed(0)
    G = Generator(**TINY)
    x = torch.rand(4, 3, 16, 16)
    for path in cut: _cut(G, path)
    g = _first_conv_grad(G, x)
    if len(cut) == 2: assert g == 0                            # both roads cut: the test can detect a missing road
    else: assert g > 0


def test_encode_only_uses_encoder():
    torch.manual_seed(0)
    G = Generator(**TINY)
    G.encode(torch.rand(3, 3, 16, 16)).sum().backward()
    assert G.enc[0][0][0].weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in G.dec.parameters()) and G.defc[0].weight.grad is None


def test_all_generator_parameters_get_gradient():
    torch.manual_seed(0)
    G = Generator(**TINY)
    x = torch.rand(4, 3, 16, 16)
    ((G(x) - torch.rand_like(x)) ** 2).mean().backward()
    missing = [n for n, p in G.named_parameters() if p.grad is None or p.grad.abs().sum() == 0]
    assert not missing


@pytest.mark.parametrize('img_size,widths', [(16, (8, 16)), (24, (8, 16)), (32, (4, 8, 16)), (8, (4,))])
def test_generator_sizes(img_size, widths):
    G = Generator(img_size=img_size, widths=widths, fc_dim=10, convs_per_block=1)
    x = torch.rand(2, 3, img_size, img_size)
    y, z = G(x, return_features=True)
    assert y.shape == x.shape and z.shape == (2, 10)


def test_generator_channels():
    G = Generator(img_size=8, in_channels=1, out_channels=2, widths=(4,), fc_dim=8)
    assert G(torch.rand(2, 1, 8, 8)).shape == (2, 2, 8, 8)


def test_reproducible_init():
    torch.manual_seed(3); a = Generator(**TINY).state_dict()
    torch.manual_seed(3); b = Generator(**TINY).state_dict()
    torch.manual_seed(4); c = Generator(**TINY).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a['fc.1.weight'], c['fc.1.weight'])


def test_eval_deterministic_and_double():
    G = Generator(**TINY).eval()
    x = torch.rand(2, 3, 16, 16)
    assert torch.equal(G(x), G(x))
    assert G.double()(x.double()).dtype == torch.float64


# ---------------------------------------------------------------- discriminators and R
@pytest.mark.parametrize('n', [1, 3])
def test_discriminator_logits_shape(n):
    D = Discriminator(img_size=16, widths=(8, 16))
    out = D(torch.rand(n, 3, 16, 16))
    assert out.shape == (n,)
    assert D.features[0][0].stride == (1, 1) and D.features[1][0].stride == (2, 2)
    assert not any(isinstance(m, nn.MaxPool2d) for m in D.modules())
    assert any(isinstance(m, nn.LeakyReLU) and m.negative_slope == 0.2 for m in D.modules())


def test_coord_discriminator():
    C = CoordDiscriminator(img_size=16, widths=(8, 16))
    boxes = C(torch.rand(5, 3, 16, 16))
    assert boxes.shape == (5, 3, 4) and boxes.min() >= 0 and boxes.max() <= 1
    xx, yy = C.coords[0]
    assert xx.min() == -1 and xx.max() == 1 and yy.min() == -1 and yy.max() == 1
    assert torch.equal(xx[0], xx[-1]) and (xx[:, 1:] > xx[:, :-1]).all()     # x varies along the width
    assert torch.equal(yy[:, 0], yy[:, -1]) and (yy[1:] > yy[:-1]).all()     # y along the height
    assert 'coords' not in C.state_dict()
    # the coordinate channels are read: zeroing their input weights changes the output
    # (train mode: batch norm rescales the small DCGAN-initialised activations)
    x = torch.ones(2, 3, 16, 16)
    with torch.no_grad():
        before = C.train()(x)
        C.features[0][0].weight[:, 3:].zero_()
        assert (before - C(x)).abs().max() > 1e-4


@pytest.mark.parametrize('img_size', [32, 24, 12, 15])
def test_mask_reconstructor_sizes(img_size):
    R = MaskReconstructor(img_size=img_size, base=4)
    logits = R(torch.rand(2, 3, img_size, img_size))
    assert logits.shape == (2, 3, img_size, img_size)
    assert (logits < 0).any() and (logits > 0).any()          # logits, not probabilities
    assert sum(isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)) for m in R.modules()) == 13


def test_mask_reconstructor_gradient():
    R = MaskReconstructor(img_size=32, base=4)
    x = torch.rand(2, 3, 32, 32, requires_grad=True)
    R(x).sum().backward()
    assert R.enc[0][0].weight.grad.abs().sum() > 0 and x.grad.abs().sum() > 0


# ---------------------------------------------------------------- context encoder
@pytest.mark.parametrize('img_size,hole', [(32, 16), (128, 32)])
def test_context_encoder(img_size, hole):
    torch.manual_seed(0)
    ce = ContextEncoder(img_size)
    assert ce.hole_size == hole
    n = 2 if img_size == 32 else 1                            # keep the 128 model's backward cheap
    y = ce(torch.rand(n, 3, img_size, img_size))
    assert y.shape == (n, 3, hole, hole) and y.min() >= 0 and y.max() <= 1
    y.mean().backward()
    assert ce.enc[0][0].weight.grad.abs().sum() > 0


def test_context_encoder_structure():
    ce32, ce128 = ContextEncoder(32), ContextEncoder(128)
    assert ce32.fc[1].in_features == 4096 and ce32.fc[1].out_features == 4096
    assert [b[0].out_channels for b in ce32.enc] == [64, 128, 256]
    assert [b[0].out_channels for b in ce128.enc] == [64, 128, 256, 512]
    assert ce128.bottleneck[0].out_channels == 512
    assert [b[0].in_channels for b in ce128.dec] == [1024, 512]   # concatenated skips


# ---------------------------------------------------------------- bad input
@pytest.mark.parametrize('make,size', [
    (lambda: Generator(**TINY), 16), (lambda: Discriminator(img_size=16, widths=(8,)), 16),
    (lambda: CoordDiscriminator(img_size=16, widths=(8,)), 16), (lambda: MaskReconstructor(img_size=16, base=2), 16),
    (lambda: ContextEncoder(32), 32)])
def test_bad_input(make, size):
    net = make()
    with pytest.raises(ValueError, match='expected 3 input channels, got 1'):
        net(torch.rand(2, 1, size, size))
    with pytest.raises(ValueError, match=f'expected {size}x{size} images.*got {size * 2}x{size * 2}'):
        net(torch.rand(2, 3, size * 2, size * 2))
    with pytest.raises(ValueError, match=f'got {size}x{size + 1}'):
        net(torch.rand(2, 3, size, size + 1))
    with pytest.raises(ValueError, match='4-d input'):
        net(torch.rand(3, size, size))
    with pytest.raises(ValueError, match='torch.Tensor'):
        net([[0.0]])


def test_generator_encode_checks_input():
    with pytest.raises(ValueError, match='expected 3 input channels'):
        Generator(**TINY).encode(torch.rand(1, 4, 16, 16))


@pytest.mark.parametrize('kwargs,msg', [
    (dict(img_size=100), 'divisible by 16'), (dict(img_size=18, widths=(8, 16)), 'divisible by 4'),
    (dict(img_size=0), 'img_size must be an int >= 1'), (dict(img_size=96.0), 'img_size must be an int'),
    (dict(img_size=True), 'img_size must be an int'), (dict(widths=()), 'widths must be a non-empty'),
    (dict(fc_dim=0), 'fc_dim'), (dict(convs_per_block=0), 'convs_per_block'), (dict(in_channels=0), 'in_channels')])
def test_generator_bad_args(kwargs, msg):
    with pytest.raises(ValueError, match=msg):
        Generator(**kwargs)


@pytest.mark.parametrize('cls', [Discriminator, CoordDiscriminator, MaskReconstructor])
@pytest.mark.parametrize('img_size', [0, -4, 2.5])
def test_other_bad_img_size(cls, img_size):
    with pytest.raises(ValueError, match='img_size'):
        cls(img_size=img_size)


@pytest.mark.parametrize('img_size', [64, 96, 16, 32.0, True])
def test_context_encoder_bad_size(img_size):
    with pytest.raises(ValueError, match=r'one of \(32, 128\)'):
        ContextEncoder(img_size)


def test_layer_shapes_restores_mode():
    G = Generator(**TINY).train()
    rows = layer_shapes(G, torch.rand(1, 3, 16, 16), show=False)
    assert G.training
    assert ('fc.1', 'Linear 256->32', (1, 32)) in rows
    assert rows[-1][2] == (1, 3, 16, 16)
