"Thorough checks of mde.losses (Eqs. 1-8 of the MDE paper)."
import math, warnings

import pytest
import torch
import torch.nn.functional as F

import mde.losses as L
from mde.losses import (completion_loss, reconstruction_loss, PerceptualLoss, d_adv_loss, g_adv_loss,
                        hns_seek_loss, hns_hide_loss, hns_alt_loss, hns_coord_loss)
from helpers import rec_like_masks


def _rand(*shape, seed=0):
    return torch.rand(*shape, generator=torch.Generator().manual_seed(seed))


def _mask(n=2, size=16, seed=0):
    return rec_like_masks(n, size, seed)


@pytest.fixture(scope='module')
def ploss():
    return PerceptualLoss(vgg_weights='random')


# ---------------------------------------------------------------- completion / reconstruction
def test_l2_zero_when_equal():
    Z, M = _rand(3, 3, 16, 16), _mask(3)
    assert completion_loss(Z, Z, M).item() == 0 and reconstruction_loss(Z, Z, M).item() == 0


def test_l2_region_and_normalisation():
    Z, M = _rand(2, 3, 16, 16), _mask(2)
    pred = _rand(2, 3, 16, 16, seed=1)
    # explicit formula: per-image sum over the region / (C*H*W), averaged over the batch
    exp_c = (((1 - M) * (pred - Z)) ** 2).sum((1, 2, 3)).mean() / (3 * 16 * 16)
    exp_r = ((M * (pred - Z)) ** 2).sum((1, 2, 3)).mean() / (3 * 16 * 16)
    assert torch.allclose(completion_loss(pred, Z, M), exp_c, atol=1e-7)
    assert torch.allclose(reconstruction_loss(pred, Z, M), exp_r, atol=1e-7)
    assert torch.allclose(completion_loss(pred, Z, M) + reconstruction_loss(pred, Z, M), F.mse_loss(pred, Z))


def test_l2_counts_only_its_region():
    Z, M = _rand(2, 3, 16, 16), _mask(2)
    pred = _rand(2, 3, 16, 16, seed=1)
    pred_kept_changed = pred + 0.3 * M          # change only the kept region
    pred_miss_changed = pred + 0.3 * (1 - M)    # change only the missing region
    assert completion_loss(pred_kept_changed, Z, M) == completion_loss(pred, Z, M)
    assert reconstruction_loss(pred_kept_changed, Z, M) != reconstruction_loss(pred, Z, M)
    assert reconstruction_loss(pred_miss_changed, Z, M) == reconstruction_loss(pred, Z, M)
    assert completion_loss(pred_miss_changed, Z, M) != completion_loss(pred, Z, M)


def test_l2_gradients_masked():
    Z, M = _rand(2, 3, 16, 16), _mask(2)
    pred = _rand(2, 3, 16, 16, seed=1).requires_grad_(True)
    completion_loss(pred, Z, M).backward()
    assert (pred.grad[M == 1] == 0).all() and (pred.grad[M == 0] != 0).all()
    pred.grad = None
    reconstruction_loss(pred, Z, M).backward()
    assert (pred.grad[M == 0] == 0).all() and (pred.grad[M == 1] != 0).all()


def test_l2_scalar_dtype():
    Z, M = _rand(2, 3, 8, 8).double(), _mask(2, 8).double()
    out = completion_loss(Z + 1, Z, M)
    assert out.shape == () and out.dtype == torch.float64


@pytest.mark.parametrize('fn', [completion_loss, reconstruction_loss])
def test_l2_bad_input(fn):
    Z, M = _rand(2, 3, 8, 8), _mask(2, 8)
    with pytest.raises(ValueError, match=r'mask=\(2, 1, 8, 8\)'): fn(Z, Z, M[:, :1])      # no broadcast
    with pytest.raises(ValueError, match=r'target=\(2, 3, 8, 4\)'): fn(Z, Z[..., :4], M)
    with pytest.raises(ValueError, match='4-D'): fn(Z[0], Z[0], M[0])
    with pytest.raises(ValueError, match='torch.Tensor'): fn(Z.numpy(), Z, M)


# ---------------------------------------------------------------- perceptual
def test_perceptual_zero_and_monotone(ploss):
    Z = _rand(2, 3, 32, 32)
    assert ploss(Z, Z).item() == 0
    noise = torch.randn(Z.shape, generator=torch.Generator().manual_seed(1))
    vals = [ploss((Z + s * noise).clamp(0, 1), Z).item() for s in (0.02, 0.1, 0.3)]
    assert vals[0] < vals[1] < vals[2]
    assert ploss(Z, 1 - Z) > vals[0]


def test_perceptual_frozen_but_differentiable(ploss):
    Z = _rand(2, 3, 32, 32)
    pred = _rand(2, 3, 32, 32, seed=1).requires_grad_(True)
    ploss(pred, Z).backward()
    assert pred.grad is not None and pred.grad.abs().sum() > 0 and torch.isfinite(pred.grad).all()
    assert all(not p.requires_grad and p.grad is None for p in ploss.parameters())
    ploss.train()
    assert ploss.training and not ploss.vgg.training


def test_perceptual_layers_built_and_formula():
    p = PerceptualLoss(vgg_weights='random')
    assert p.layers == ('relu1_2', 'relu2_2', 'relu3_3', 'relu4_3', 'relu5_3')
    assert len(p.vgg) == 30                                     # up to relu5_3, no pool5, no classifier
    assert sum(x.numel() for x in p.parameters()) == 14_714_688  # the 13 convs of VGG-16
    Z, pred = _rand(1, 3, 32, 32), _rand(1, 3, 32, 32, seed=1)
    fp, ft = p.features(pred), p.features(Z)
    w = torch.tensor([1, .5, .25, .125, .0625])
    expected = sum(wi * F.mse_loss(a, b) for wi, a, b in zip(w, fp, ft)) / w.sum()
    assert torch.allclose(p(pred, Z), expected)
    assert [f.shape[1:] for f in fp] == [(64, 32, 32), (128, 16, 16), (256, 8, 8), (512, 4, 4), (512, 2, 2)]


def test_perceptual_custom_layers_cheap():
    p = PerceptualLoss(weights=(1, 1), layers=('relu1_2', 'relu2_2'), vgg_weights='random')
    assert len(p.vgg) == 9
    Z = _rand(1, 3, 16, 16)
    assert p(Z, Z).item() == 0 and p(Z, 1 - Z).item() > 0


def test_perceptual_deterministic_substitute_and_rng_untouched():
    torch.manual_seed(123); before = torch.rand(3)
    torch.manual_seed(123)
    a = PerceptualLoss(vgg_weights='random')
    after = torch.rand(3)
    b = PerceptualLoss(vgg_weights='random')
    assert torch.equal(before, after)                               # global RNG untouched
    for (ka, va), (kb, vb) in zip(a.state_dict().items(), b.state_dict().items()):
        assert ka == kb and torch.equal(va, vb)
    assert a.source.startswith('substitute') and 'seed 0' in a.source


def test_perceptual_imagenet_unavailable_is_an_error(tmp_path, monkeypatch):
    "An empty TORCH_HOME and no network: a clear error naming the file and where to put it, never a random VGG."
    import urllib.error
    monkeypatch.setenv('TORCH_HOME', str(tmp_path))
    def offline(*a, **k): raise urllib.error.URLError('no network')
    monkeypatch.setattr(torch.hub, 'download_url_to_file', offline)
    with pytest.raises(FileNotFoundError) as e:
        PerceptualLoss(weights=(1,), layers=('relu1_2',))
    msg = str(e.value)
    assert 'vgg16-397923af.pth' in msg and str(tmp_path / 'hub' / 'checkpoints') in msg and "'random'" in msg
    assert '\n' not in msg


def test_imagenet_error_stops_the_trainer_before_training(tmp_path, monkeypatch):
    "mde-train with losses.perceptual > 0 and imagenet VGG that cannot be had: a one-line error, no output folder."
    import urllib.error
    from mde.trainer import main
    monkeypatch.setenv('TORCH_HOME', str(tmp_path / 'home'))
    def offline(*a, **k): raise urllib.error.URLError('no network')
    monkeypatch.setattr(torch.hub, 'download_url_to_file', offline)
    out = tmp_path / 'run'
    with pytest.raises(SystemExit) as e:
        main(['--out', str(out), '--no-progress', '--set', 'losses.perceptual=0.1', '--set', 'losses.vgg_weights=imagenet',
              '--set', 'train.steps=2', '--set', 'data.limit=64', '--set', 'model.widths=[8, 16]',
              '--set', f'data.root={tmp_path}/data'])     # never the repository's data/cache (a DVC output)
    assert 'losses.vgg_weights: imagenet' in str(e.value) and not out.exists()
    with pytest.raises(SystemExit) as e:        # a weights path that does not exist: refused with the parameters
        main(['--out', str(out), '--set', 'losses.perceptual=0.1', '--set', f'losses.vgg_weights={tmp_path}/no.pth'])
    assert e.value.code == 2 and not out.exists()


def test_perceptual_imagenet_from_cache(tmp_path, monkeypatch):
    "A checkpoint in the hub cache is used (no download); full torchvision-style keys 'features.N.*'."
    src = PerceptualLoss(weights=(1,), layers=('relu2_2',), vgg_weights='random')
    sd = {f'features.{k}': v + 1 for k, v in src.vgg.state_dict().items()}
    sd['classifier.0.weight'] = torch.zeros(2, 2)                     # extra keys are ignored
    (tmp_path / 'checkpoints').mkdir()
    torch.save(sd, tmp_path / 'checkpoints' / 'vgg16-397923af.pth')
    monkeypatch.setattr(torch.hub, 'get_dir', lambda: str(tmp_path))
    monkeypatch.setattr(torch.hub, 'download_url_to_file', lambda *a, **k: pytest.fail('downloaded'))
    monkeypatch.setattr(L, '_IMAGENET_FILE', 'vgg16-397923af.pth')
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        p = PerceptualLoss(weights=(1,), layers=('relu2_2',))
    assert p.source == 'imagenet (torchvision IMAGENET1K_V1)'
    assert torch.equal(p.vgg[2].weight, src.vgg[2].weight + 1)


def test_perceptual_from_file(tmp_path):
    src = PerceptualLoss(weights=(1,), layers=('relu1_2',), vgg_weights='random')
    f = tmp_path / 'vgg.pth'
    torch.save({k: v * 2 for k, v in src.vgg.state_dict().items()}, f)  # features-only keys
    p = PerceptualLoss(weights=(1,), layers=('relu1_2',), vgg_weights=f)
    assert str(f) in p.source and torch.equal(p.vgg[0].weight, 2 * src.vgg[0].weight)
    with pytest.raises(ValueError, match='not a VGG-16 state dict'):
        PerceptualLoss(weights=(1, 1), layers=('relu1_2', 'relu2_2'), vgg_weights=f)  # too few layers in file
    with pytest.raises(FileNotFoundError, match='no file at .*missing.pth'):
        PerceptualLoss(weights=(1,), layers=('relu1_2',), vgg_weights=tmp_path / 'missing.pth')


def test_perceptual_bad_input(ploss):
    with pytest.raises(ValueError, match='unknown VGG-16 layer'): PerceptualLoss(layers=('relu9_9',), weights=(1,))
    with pytest.raises(ValueError, match='one weight per layer'): PerceptualLoss(weights=(1, 1), vgg_weights='random')
    with pytest.raises(ValueError, match='>= 0'): PerceptualLoss(weights=(0,) * 5, vgg_weights='random')
    with pytest.raises(ValueError, match="'imagenet', 'random' or a path"): PerceptualLoss(vgg_weights=3)
    Z = _rand(1, 3, 16, 16)
    with pytest.raises(ValueError, match='shapes must be equal'): ploss(Z, Z[..., :8])
    with pytest.raises(ValueError, match='3-channel'): ploss(Z[:, :1], Z[:, :1])


# ---------------------------------------------------------------- adversarial
def test_adv_values():
    z = torch.zeros(5)
    assert math.isclose(d_adv_loss(z, z).item(), 2 * math.log(2), rel_tol=1e-6)
    assert math.isclose(g_adv_loss(z).item(), math.log(2), rel_tol=1e-6)
    real, fake = torch.randn(7), torch.randn(5)       # batches may differ in size
    ref = F.binary_cross_entropy(torch.sigmoid(real), torch.ones(7)) + \
        F.binary_cross_entropy(torch.sigmoid(fake), torch.zeros(5))
    assert torch.allclose(d_adv_loss(real, fake), ref, atol=1e-5)
    assert torch.allclose(g_adv_loss(fake), -torch.log(torch.sigmoid(fake)).mean(), atol=1e-5)  # Eq. 2 exactly
    assert d_adv_loss(torch.full((3,), 30.), torch.full((3,), -30.)) < 1e-10


def test_adv_stable_and_directions():
    a = torch.tensor([-500., -50., 0., 50., 500.], requires_grad=True)
    b = torch.tensor([-500., 500.], requires_grad=True)
    loss = d_adv_loss(a, b) + g_adv_loss(b)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(a.grad).all() and torch.isfinite(b.grad).all()
    a2 = torch.zeros(3, requires_grad=True)
    d_adv_loss(a2, torch.zeros(3)).backward(); assert (a2.grad < 0).all()    # D pushes real logits up
    f = torch.zeros(3, requires_grad=True)
    g_adv_loss(f).backward(); assert (f.grad < 0).all()                      # G pushes fake logits up
    f2 = torch.zeros(3, requires_grad=True)
    d_adv_loss(torch.zeros(3), f2).backward(); assert (f2.grad > 0).all()    # D pushes fake logits down


def test_adv_bad_input():
    with pytest.raises(ValueError, match='floating-point'): g_adv_loss(torch.zeros(3, dtype=torch.long))
    with pytest.raises(ValueError, match='non-empty'): d_adv_loss(torch.zeros(0), torch.zeros(2))
    with pytest.raises(ValueError): g_adv_loss([0.0, 1.0])


# ---------------------------------------------------------------- hide-and-seek
def test_seek_minimal_for_perfect_R():
    M = _mask(2)
    perfect = 12 * (2 * M - 1)
    assert hns_seek_loss(perfect, M) < 1e-5
    assert hns_seek_loss(-perfect, M) > 11
    assert hns_seek_loss(torch.full_like(M, 20.), M) > 5       # the trivial all-ones R is penalised (Eq. 6 as BCE)
    assert math.isclose(hns_seek_loss(torch.zeros_like(M), M).item(), math.log(2), rel_tol=1e-6)


def test_seek_is_bce_with_both_terms():
    M, r = _mask(2), torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    R = torch.sigmoid(r)
    ref = -(M * torch.log(R) + (1 - M) * torch.log(1 - R)).mean()
    assert torch.allclose(hns_seek_loss(r, M), ref, atol=1e-5)
    assert torch.allclose(hns_hide_loss(r, M, form='bce'), hns_seek_loss(r, 1 - M))


def test_hide_bce_bounded_and_minimal_when_R_fooled():
    M = _mask(2)
    fooled = 12 * (1 - 2 * M)                                      # R says the complement of the mask
    assert 0 <= hns_hide_loss(fooled, M, form='bce') < 1e-5
    extreme = 1e4 * (1 - 2 * M)
    assert hns_hide_loss(extreme, M, form='bce') >= 0              # bounded below (no -inf)
    assert hns_hide_loss(12 * (2 * M - 1), M, form='bce') > 11     # R found the mask: large hide loss


def test_seek_and_hide_opposite_gradients():
    M = _mask(3, seed=2)
    for seed in range(3):
        r = (3 * torch.randn(3, 3, 16, 16, generator=torch.Generator().manual_seed(seed))).requires_grad_(True)
        gs, = torch.autograd.grad(hns_seek_loss(r, M), r)
        gh, = torch.autograd.grad(hns_hide_loss(r, M, form='bce'), r)
        assert (gs * gh < 0).all()
        assert F.cosine_similarity(gs.flatten(), gh.flatten(), dim=0) < 0


def test_alt_loss():
    M, Mt = _mask(2, seed=0), _mask(2, seed=5)
    assert not torch.equal(M, Mt)
    towards_other = 12 * (2 * Mt - 1)
    for form in ('paper', 'bce'):
        assert hns_alt_loss(towards_other, Mt, form=form) < 1e-5
        assert hns_alt_loss(towards_other, Mt, form=form) < hns_alt_loss(12 * (2 * M - 1), Mt, form=form)
    r = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(3))
    assert torch.allclose(hns_alt_loss(r, Mt, form='bce'), F.binary_cross_entropy_with_logits(r, Mt))


def test_hns_gradient_reaches_generator_output():
    "G's hide loss must back-propagate through R to the completed image (R's parameters are not updated here)."
    R = torch.nn.Conv2d(3, 3, 3, padding=1)
    img = _rand(2, 3, 16, 16).requires_grad_(True)
    M = _mask(2)
    hns_hide_loss(R(img), M).backward()
    assert img.grad is not None and img.grad.abs().sum() > 0


@pytest.mark.parametrize('fn', [hns_seek_loss, hns_hide_loss, hns_alt_loss])
def test_hns_bad_input(fn):
    M = _mask(2)
    with pytest.raises(ValueError, match=r'\(2, 1, 16, 16\)'): fn(torch.zeros(2, 1, 16, 16), M)
    with pytest.raises(ValueError, match='4-D'): fn(torch.zeros(3, 16, 16), M[0])


def test_coord_loss():
    b = _rand(4, 3, 4)
    assert hns_coord_loss(b, b).item() == 0
    assert math.isclose(hns_coord_loss(b, (b + 0.2)).item(), 0.04, rel_tol=1e-5)
    p = b.clone().requires_grad_(True)
    other = _rand(4, 3, 4, seed=1)
    hns_coord_loss(p, other).backward()
    assert torch.allclose(p.grad, 2 * (b - other) / b.numel())
    assert -hns_coord_loss(torch.zeros(2, 3, 4), torch.ones(2, 3, 4)) >= -1   # rec-style negative is bounded
    with pytest.raises(ValueError, match='shapes must be equal'): hns_coord_loss(b, b[:, :1])
    with pytest.raises(ValueError, match='4 coordinates'): hns_coord_loss(b[..., :3], b[..., :3])


def test_all_public_names():
    for name in ['completion_loss', 'reconstruction_loss', 'PerceptualLoss', 'd_adv_loss', 'g_adv_loss',
                 'hns_seek_loss', 'hns_hide_loss', 'hns_alt_loss', 'hns_coord_loss']:
        assert name in L.__all__


# --- the paper's forms of G's hide terms (Eqs. 7-8) and the paper's scale (reduction='sum')
def test_paper_rec_form_is_eq7():
    M, r = _mask(2, seed=7), torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(8))
    ref = (M * F.logsigmoid(r)).flatten(1).sum(1).mean()            # (1/N) sum_i M_i log R
    assert torch.allclose(hns_hide_loss(r, M, reduction='sum'), ref, atol=1e-4)
    assert torch.allclose(hns_hide_loss(r, M), ref / M[0].numel(), atol=1e-6)
    rr = r.clone().requires_grad_(True)
    g, = torch.autograd.grad(hns_hide_loss(rr, M), rr)
    assert (g[M == 1] > 0).all() and (g[M == 0] == 0).all()        # pushes R's output down where kept, nothing else


def test_paper_alt_form_is_eq8():
    Mt, r = _mask(2, seed=9), torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(10))
    ref = -(Mt * F.logsigmoid(r)).flatten(1).sum(1).mean()
    assert torch.allclose(hns_alt_loss(r, Mt, reduction='sum'), ref, atol=1e-4)
    rr = r.clone().requires_grad_(True)
    g, = torch.autograd.grad(hns_alt_loss(rr, Mt), rr)
    assert (g[Mt == 1] < 0).all() and (g[Mt == 0] == 0).all()       # zero gradient where M~ = 0
    assert hns_alt_loss(r, Mt) >= 0


@pytest.mark.parametrize('fn', [completion_loss, reconstruction_loss])
def test_l2_reduction_sum_is_per_image_sum(fn):
    Z, P, M = _rand(3, 3, 8, 8), _rand(3, 3, 8, 8, seed=1), _mask(3, size=8)
    assert math.isclose(fn(P, Z, M, 'sum').item(), fn(P, Z, M).item() * 3 * 8 * 8, rel_tol=1e-5)
    with pytest.raises(ValueError, match='losses.reduction'): fn(P, Z, M, 'max')


def test_bad_form_and_reduction():
    M = _mask(1)
    with pytest.raises(ValueError, match='losses.hns_form'): hns_hide_loss(torch.zeros_like(M), M, form='flip')
    with pytest.raises(ValueError, match='losses.reduction'): hns_seek_loss(torch.zeros_like(M), M, reduction='avg')
    with pytest.raises(ValueError, match='losses.vgg_input'): PerceptualLoss(vgg_weights='random', vgg_input='rgb')


def test_perceptual_sum_and_caffe():
    kw = dict(weights=(1,), layers=('relu1_2',), vgg_weights='random')
    Z, P = _rand(2, 3, 16, 16), _rand(2, 3, 16, 16, seed=3)
    m, s = PerceptualLoss(**kw)(P, Z), PerceptualLoss(**kw, reduction='sum')(P, Z)
    assert math.isclose(s.item(), m.item() * 64 * 16 * 16, rel_tol=1e-4)
    c = PerceptualLoss(**kw, vgg_input='caffe')
    x = c.caffe_mean.flip(1).expand(1, 3, 4, 4) / 255                   # Caffe's mean pixel (as RGB in [0, 1]) -> input 0
    feats = c.features(x)[0]
    assert torch.allclose(feats, c.vgg[:2](torch.zeros(1, 3, 4, 4)), atol=1e-3)
