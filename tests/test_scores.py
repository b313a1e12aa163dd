"Tests of mde.scores: the in-domain classifier, IS/FID/KID (torchmetrics and pure torch), standard Inception, the CLI."
import json, math, os, socket, subprocess, sys, urllib.request, warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import mde.scores as S
from mde.data import ImageDataset, load_dataset, shared_data_dir
from mde.metrics import inception_score
from mde.params import SCORE_DEFAULTS
from mde.scores import (LABEL_KINDS, STANDS_IN_FOR, Classifier, Scorer, build_classifier, dataset_targets,
                        evaluate_classifier, find_inception_weights, frechet_distance, kernel_distance, load_classifier,
                        main, save_classifier, score_settings, standard_scores, standard_scores_available,
                        train_classifier)

REPO = Path(__file__).resolve().parents[1]
SHARED = shared_data_dir()
needs_shared = pytest.mark.skipif(SHARED is None, reason="../shared/data (the shared working copies of the real "
                                  "data sets) is not here; real-data tests need it")


# ---------------------------------------------------------------- fixtures

@pytest.fixture(scope='module', autouse=True)
def one_thread():
    """One intra-op thread while these tests run: on a 2-core machine shared with another torch process, two
    OpenMP threads spin-wait on each other and training runs ~20x slower (measured); one thread does not."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope='module')
def data_root(tmp_path_factory):
    return tmp_path_factory.mktemp('scores-data')


@pytest.fixture(scope='module')
def digits(data_root):
    return load_dataset('digits', 'train', root=data_root), load_dataset('digits', 'test', root=data_root)


@pytest.fixture(scope='module')
def trained(digits):
    "A classifier trained on digits for the sanity checks (150 steps, width 16: a few seconds)."
    train, test = digits
    return train_classifier(train, steps=150, batch_size=64, seed=0, progress=False, held_out=test)


def _state(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def _fake_celeba(n=120, size=16, split='train', with_attrs=True, seed=0):
    "A CelebA-like ImageDataset: attribute 0 = bright, 1 = reddish, the other 38 random; some NaN."
    g = torch.Generator().manual_seed(seed)
    a = (torch.rand(n, 40, generator=g) < 0.5).float()
    x = torch.rand(n, 3, size, size, generator=g) * 0.3
    x += 0.4 * a[:, 0, None, None, None]
    x[:, 0] += 0.3 * a[:, 1, None, None]
    a[torch.rand(n, 40, generator=g) < 0.05] = float('nan')
    a[0] = float('nan')                                           # one face without any attribute
    extras = {'attrs': a if with_attrs else torch.full((n, 40), float('nan'))}
    return ImageDataset((x * 255).round().to(torch.uint8), -torch.ones(n), extras,
                        {'name': 'celeba', 'split': split, 'attr_names': [f'a{i}' for i in range(40)]})


# ---------------------------------------------------------------- labels

def test_dataset_targets(digits):
    train, test = digits
    y, kind, k, names = dataset_targets(train)
    assert (kind, k, len(y), names[:3]) == ('class', 10, 1500, ['0', '1', '2'])
    assert torch.equal(y, train.labels) and y is not train.labels
    assert set(LABEL_KINDS) == {'digits', 'mnist', 'cifar10', 'flowers102', 'celeba'}
    a, kind, k, names = dataset_targets(_fake_celeba())
    assert (kind, k, a.shape, names[0]) == ('attributes', 40, (120, 40), 'a0')


def test_dataset_targets_errors(digits):
    train, _ = digits
    empty = ImageDataset(torch.zeros(0, 3, 32, 32, dtype=torch.uint8), torch.zeros(0), info={'name': 'digits', 'split': 'x'})
    with pytest.raises(ValueError, match='no images'): dataset_targets(empty)
    with pytest.raises(ValueError, match="'svhn'"):
        dataset_targets(ImageDataset(train.images[:4], train.labels[:4], info={'name': 'svhn'}))
    with pytest.raises(ValueError, match='outside 0..9'):
        dataset_targets(ImageDataset(train.images[:4], torch.tensor([0, 1, 10, 2]), info={'name': 'digits'}))
    with pytest.raises(ValueError, match="split='train'"): dataset_targets(_fake_celeba(with_attrs=False, split='test'))
    with pytest.raises(ValueError, match='ImageDataset'): dataset_targets(train.images)
    with pytest.raises(ValueError, match='no images'): train_classifier(empty, steps=1, progress=False)


# ---------------------------------------------------------------- classifier

@pytest.mark.parametrize('size,feat', [(8, 16), (28, 64), (32, 64), (64, 128), (96, 128)])
def test_classifier_shapes(size, feat):
    m = Classifier(size, 7)
    x = torch.rand(2, 3, size, size)
    assert m.num_features == feat and m.features(x).shape == (2, feat) and m(x).shape == (2, 7)
    assert torch.allclose(m.probs(m(x)).sum(1), torch.ones(2))
    ml = Classifier(size, 40, multilabel=True)
    p = ml.probs(ml(x))
    assert p.shape == (2, 40) and ((p > 0) & (p < 1)).all()


def test_classifier_rejects_bad_input():
    m = Classifier(32, 10)
    for bad in (torch.rand(2, 3, 16, 16), torch.rand(2, 1, 32, 32), torch.zeros(2, 3, 32, 32, dtype=torch.uint8)):
        with pytest.raises(ValueError, match=r'\(n, 3, 32, 32\)'): m(bad)
    with pytest.raises(ValueError, match='img_size'): Classifier(4, 10)
    with pytest.raises(ValueError, match='width'): Classifier(32, 10, width=0)


def test_augment_moves_pixels_only():
    g = torch.Generator().manual_seed(0)
    x = torch.arange(16 * 16.).view(1, 1, 16, 16).expand(8, 3, 16, 16).contiguous()
    a = S._augment(x, g)
    assert set(a.unique().tolist()) <= set(x.unique().tolist())               # nearest, integer shifts: no new values
    assert not torch.equal(a, x)
    assert torch.equal(S._augment(x, torch.Generator().manual_seed(0)), a)   # reproducible


def test_training_is_deterministic(digits):
    train, _ = digits
    small = ImageDataset(train.images[:256], train.labels[:256], info=train.info)
    torch.manual_seed(123); before = torch.rand(3)
    torch.manual_seed(123)
    m1, i1 = train_classifier(small, steps=12, batch_size=32, width=8, seed=5, progress=False)
    after = torch.rand(3)
    assert torch.equal(before, after)                                       # the global RNG is left alone
    m2, i2 = train_classifier(small, steps=12, batch_size=32, width=8, seed=5, progress=False)
    m3, _ = train_classifier(small, steps=12, batch_size=32, width=8, seed=6, progress=False)
    s1, s2, s3 = _state(m1), _state(m2), _state(m3)
    assert all(torch.equal(s1[k], s2[k]) for k in s1)
    assert not all(torch.equal(s1[k], s3[k]) for k in s1)
    assert i1['final_loss'] == i2['final_loss'] and i1['accuracy'] is None and not m1.training
    # augmentation is part of the determinism too
    a1, _ = train_classifier(small, steps=6, batch_size=32, width=8, seed=5, progress=False, augment=True)
    a2, _ = train_classifier(small, steps=6, batch_size=32, width=8, seed=5, progress=False, augment=True)
    assert all(torch.equal(v, _state(a2)[k]) for k, v in _state(a1).items())


def test_trained_classifier(trained):
    model, info = trained
    assert info['accuracy'] > 0.9 and info['held_out']['baseline'] < 0.2 and info['held_out']['n'] == 297
    assert info['stands_in_for'] == STANDS_IN_FOR and info['n_train'] == 1500 and info['augment'] is False
    assert info['num_features'] == model.num_features == 64 and info['torch'] == torch.__version__


def test_train_argument_errors(digits, data_root):
    train, test = digits
    with pytest.raises(ValueError, match='steps'): train_classifier(train, steps=0, progress=False)
    with pytest.raises(ValueError, match='lr'): train_classifier(train, steps=1, lr=-1, progress=False)
    with pytest.raises(ValueError, match='augment'): train_classifier(train, steps=1, augment='yes', progress=False)
    small16 = load_dataset('digits', 'test', root=data_root, img_size=16, limit=10)
    with pytest.raises(ValueError, match='held_out'): train_classifier(train, steps=1, progress=False, held_out=small16)


def test_multilabel_attributes():
    train, test = _fake_celeba(n=160, seed=0), _fake_celeba(n=60, seed=1)
    model, info = train_classifier(train, steps=40, batch_size=32, width=8, progress=False, held_out=test)
    assert model.multilabel and info['label_kind'] == 'attributes' and info['n_train'] == 159   # the all-NaN face dropped
    ev = evaluate_classifier(model, test)
    assert 0.4 < ev['accuracy'] <= 1 and 0.5 <= ev['baseline'] <= 1
    with torch.no_grad(): p = model.probs(model(test.images.float() / 255))
    a = test.extras['attrs']
    known = ~torch.isnan(a[:, 0])
    assert (((p[:, 0] > .5) == (a[:, 0] > .5))[known]).float().mean() > 0.8   # the learnable attribute is learnt
    sc = Scorer(model, test.images, kid_subset_size=20, kid_subsets=5)
    r = sc(test.images)
    assert 1 <= r['is'] <= 2 and abs(r['fid']) < 1e-6
    # the multi-label score is the geometric mean of two-class inception scores
    per = [inception_score(torch.stack([1 - p[:, j], p[:, j]], 1))[0] for j in range(40)]
    assert math.isclose(r['is'], math.exp(sum(map(math.log, per)) / 40), rel_tol=1e-5)
    assert math.isclose(S._inception(torch.full((10, 40), 0.3, dtype=torch.float64), True)[0], 1.0)


# ---------------------------------------------------------------- save / load

def test_save_load_roundtrip(trained, digits, tmp_path):
    model, info = trained
    path = save_classifier(model, info, tmp_path / 'sub' / 'clf.pt')
    blob = torch.load(path, weights_only=True)
    assert blob['kind'] == 'mde-classifier' and blob['format'] == 1 and blob['config']['img_size'] == 32
    m2, i2 = load_classifier(path)
    assert i2 == json.loads(json.dumps(info)) and not m2.training
    x = digits[1].images[:16].float() / 255
    with torch.no_grad(): assert torch.equal(m2(x), model(x))
    assert not list(tmp_path.glob('sub/.*tmp'))                          # written through a temporary name


def test_load_errors(trained, tmp_path):
    model, info = trained
    with pytest.raises(FileNotFoundError, match='nope.pt'): load_classifier(tmp_path / 'nope.pt')
    (tmp_path / 'junk.pt').write_bytes(b'\x00garbage' * 10)
    with pytest.raises(ValueError, match='junk.pt'): load_classifier(tmp_path / 'junk.pt')
    torch.save({'kind': 'mde-checkpoint', 'format': 1}, tmp_path / 'other.pt')
    with pytest.raises(ValueError, match="other.pt.*'mde-checkpoint'"): load_classifier(tmp_path / 'other.pt')
    torch.save([1, 2, 3], tmp_path / 'list.pt')
    with pytest.raises(ValueError, match='list.pt'): load_classifier(tmp_path / 'list.pt')
    good = torch.load(save_classifier(model, info, tmp_path / 'good.pt'), weights_only=True)
    torch.save({**good, 'format': 2}, tmp_path / 'future.pt')
    with pytest.raises(ValueError, match='future.pt.*format 2'): load_classifier(tmp_path / 'future.pt')
    torch.save({**good, 'config': {**good['config'], 'width': 8}}, tmp_path / 'mismatch.pt')
    with pytest.raises(ValueError, match='mismatch.pt'): load_classifier(tmp_path / 'mismatch.pt')
    torch.save({**good, 'evil': torch.nn.Linear(2, 2)}, tmp_path / 'pickled.pt')   # needs unpickling code: refused
    with pytest.raises(ValueError, match='pickled.pt'): load_classifier(tmp_path / 'pickled.pt')


# ---------------------------------------------------------------- FID / KID

def _feats(n, d, seed, scale=0.25, shift=0.0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(n, d, generator=g) @ torch.randn(d, d, generator=g)) * scale + shift


def _kid_numpy(x, y):
    "Unbiased MMD^2 with k = (x.y/d + 1)^3 over all of x and y (m each): an independent reference."
    x, y = x.numpy(), y.numpy()
    m, d = len(x), x.shape[1]
    k = lambda a, b: (a @ b.T / d + 1) ** 3
    kxx, kyy, kxy = k(x, x), k(y, y), k(x, y)
    return ((kxx.sum() - np.trace(kxx)) / (m * (m - 1)) + (kyy.sum() - np.trace(kyy)) / (m * (m - 1))
            - 2 * kxy.mean())


def test_fid_closed_forms():
    A = _feats(300, 12, 0)
    c = A - A.mean(0)
    trace = (c.T @ c / 299).trace().item()
    for backend in ('torch', 'torchmetrics'):
        assert abs(frechet_distance(A, A, backend)) < 1e-8 * trace
        assert math.isclose(frechet_distance(A, A + 0.5, backend), 12 * 0.25, rel_tol=1e-8)   # |shift|^2
        # S2 = 4 S1: Tr(S1 + 4 S1 - 2 (4 S1^2)^(1/2)) = Tr(S1)
        assert math.isclose(frechet_distance(A, 2 * c, backend), trace + (A.mean(0) ** 2).sum().item(), rel_tol=1e-7)


def test_kid_matches_reference():
    x, y = _feats(40, 8, 1), _feats(40, 8, 2, shift=0.3)
    ref = _kid_numpy(x.double(), y.double())
    for backend in ('torch', 'torchmetrics'):                  # subset = everything: the permutation does not matter
        kid, std = kernel_distance(x, y, subsets=3, subset_size=40, backend=backend)
        assert math.isclose(kid, ref, rel_tol=1e-10) and std < 1e-10 * abs(ref)


@pytest.mark.parametrize('n_real,n_fake,d', [(300, 200, 16), (120, 80, 64), (50, 30, 64)])
def test_backends_agree(n_real, n_fake, d):
    "torchmetrics and the pure-torch fallback agree: FID to 1e-10 relative (1e-6 when the covariances are singular), KID to 1e-9."
    A = _feats(n_real, d, 3)
    B = _feats(n_fake, d, 4, scale=0.3, shift=0.1)
    fid_tm, fid_pt = frechet_distance(A, B, 'torchmetrics'), frechet_distance(A, B, 'torch')
    tol = 1e-10 if min(n_real, n_fake) > d else 1e-6          # measured: ~1e-14 and ~1e-8
    assert math.isclose(fid_tm, fid_pt, rel_tol=tol), (fid_tm, fid_pt)
    (k_tm, s_tm), (k_pt, s_pt) = (kernel_distance(A, B, 20, 25, seed=7, backend=b) for b in ('torchmetrics', 'torch'))
    assert math.isclose(k_tm, k_pt, rel_tol=1e-9, abs_tol=1e-12) and math.isclose(s_tm, s_pt, rel_tol=1e-9)


def test_kid_subsets_are_seeded():
    A, B = _feats(200, 8, 5), _feats(150, 8, 6, shift=0.2)
    for backend in ('torch', 'torchmetrics'):
        torch.manual_seed(0); r0 = torch.rand(2)
        torch.manual_seed(0)
        k1 = kernel_distance(A, B, 10, 50, seed=1, backend=backend)
        assert torch.equal(torch.rand(2), r0)                   # the caller's random state is untouched
        assert k1 == kernel_distance(A, B, 10, 50, seed=1, backend=backend)
        assert k1 != kernel_distance(A, B, 10, 50, seed=2, backend=backend)


def test_torch_fallback_without_torchmetrics(monkeypatch, trained, digits):
    model, _ = trained
    test = digits[1]
    fake = (test.images[:150].float() / 255 * 0.7).clamp(0, 1)
    with_tm = Scorer(model, test.images, backend='auto')
    a = with_tm(fake)
    monkeypatch.setitem(sys.modules, 'torchmetrics', None)       # `import torchmetrics` now raises ImportError
    assert S._backend('auto') == 'torch'
    with pytest.raises(ValueError, match='not installed'): S._backend('torchmetrics')
    without = Scorer(model, test.images, backend='auto')
    assert with_tm.backend == 'torchmetrics' and without.backend == 'torch'
    b = without(fake)
    assert math.isclose(a['fid'], b['fid'], rel_tol=1e-6) and math.isclose(a['kid'], b['kid'], rel_tol=1e-9)
    assert a['is'] == b['is']


def test_distance_input_errors():
    A = _feats(20, 4, 0)
    with pytest.raises(ValueError, match='n >= 2'): frechet_distance(A, A[:1])
    with pytest.raises(ValueError, match='dimensions'): frechet_distance(A, A[:, :3])
    with pytest.raises(ValueError, match='NaN'): frechet_distance(A, A * float('nan'))
    with pytest.raises(ValueError, match='valid'): frechet_distance(A, A, backend='numpy')


# ---------------------------------------------------------------- Scorer

def test_scorer_sanity(trained, digits):
    model, _ = trained
    test = digits[1]
    sc = Scorer(model, test.images, seed=0)
    x = test.images.float() / 255
    g = torch.Generator().manual_seed(0)
    same, small = sc(test.images), sc((x + 0.03 * torch.randn(x.shape, generator=g)).clamp(0, 1))
    noise = sc((0.5 + 0.25 * torch.randn(x.shape, generator=g)).clamp(0, 1))
    grey = sc(torch.full_like(x, 0.5))
    assert set(same) >= {'is', 'is_std', 'fid', 'kid', 'kid_std', 'n_real', 'n_fake'}
    assert abs(same['fid']) < 1e-6 * noise['fid'] and abs(same['kid']) < 0.01 * grey['kid']   # overlapping subsets: KID ~0, < 0
    assert same['is'] == pytest.approx(sc.real_is) and same['is'] > 7          # ~9 of at most 10 classes
    for bad in (noise, grey):
        assert bad['is'] < same['is'] / 2
        assert bad['fid'] > 20 * small['fid'] and bad['kid'] > 20 * small['kid']
    assert grey['is'] == pytest.approx(1.0)                               # one image, one prediction
    assert sc(x) == sc(test.images)                                       # float [0, 1] and uint8 alike
    assert sc(test.images[:, :1]) == sc(test.images)                      # one channel is broadcast
    assert sc(x[:50])['n_fake'] == 50 and sc(x[:50])['kid_subset_size'] == 50


def test_scorer_uses_metrics_inception_score(trained, digits):
    model, _ = trained
    test = digits[1]
    sc = Scorer(model, test.images[:100], is_splits=4)
    fake = test.images[100:]
    with torch.no_grad(): p = torch.softmax(model(fake.float() / 255).double(), 1)
    r = sc(fake)
    ref = inception_score(p, 4)
    assert r['is'] == pytest.approx(ref[0], rel=1e-5) and r['is_std'] == pytest.approx(ref[1], rel=1e-4)


def test_scorer_input_checks_and_mode(trained, digits):
    model, _ = trained
    test = digits[1]
    sc = Scorer(model, test.images[:64], kid_subsets=3)
    x = test.images[:64].float() / 255
    with pytest.raises(ValueError, match=r'\[0, 1\]'): sc(x * 2 - 1)
    with pytest.raises(ValueError, match=r'\[0, 1\]'): sc(x * 255)
    with pytest.raises(ValueError, match='32, 32'): sc(x[..., :16, :16])
    with pytest.raises(ValueError, match='uint8'): sc(test.images[:64].long())
    with pytest.raises(ValueError, match='no images'): sc(x[:0])
    with pytest.raises(ValueError, match='Classifier'): Scorer(torch.nn.Linear(2, 2), x)
    model.train()
    try:
        sc(x)
        assert model.training                                           # its mode is given back
    finally: model.eval()


# ---------------------------------------------------------------- standard Inception (absent here)

def _no_network(monkeypatch):
    def refuse(*a, **k): raise AssertionError('network access attempted')
    monkeypatch.setattr(socket.socket, 'connect', refuse)
    monkeypatch.setattr(socket, 'create_connection', refuse)
    monkeypatch.setattr(urllib.request, 'urlopen', refuse)
    monkeypatch.setattr(torch.hub, 'load_state_dict_from_url', refuse)
    monkeypatch.setattr(torch.hub, 'download_url_to_file', refuse)


def test_standard_scores_absent_without_network(monkeypatch, tmp_path, digits):
    _no_network(monkeypatch)
    monkeypatch.setenv('TORCH_HOME', str(tmp_path / 'torch-home'))
    monkeypatch.delenv('MDE_INCEPTION_WEIGHTS', raising=False)
    assert find_inception_weights() is None and not standard_scores_available()
    imgs = digits[1].images[:8]
    with pytest.warns(UserWarning, match='no Inception weights file.*nothing is downloaded'):
        assert standard_scores(imgs, imgs) is None
    with pytest.warns(UserWarning, match='missing-weights.pth'):
        assert standard_scores(imgs, imgs, weights=tmp_path / 'missing-weights.pth') is None
    # a file in the hub cache is found (no download); this one is junk, so the scores are still unavailable
    hub = tmp_path / 'torch-home' / 'hub' / 'checkpoints'
    hub.mkdir(parents=True)
    (hub / 'pt_inception-2015-12-05-6726825d.pth').write_bytes(b'junk')
    assert find_inception_weights() == hub / 'pt_inception-2015-12-05-6726825d.pth'
    with pytest.warns(UserWarning, match='standard Inception scores unavailable'):
        assert standard_scores(imgs, imgs) is None


# ---------------------------------------------------------------- settings and the command line

def test_score_settings():
    s = score_settings({'seed': 3})
    assert s == {**SCORE_DEFAULTS, 'seed': 3}
    s = score_settings({'seed': 3, 'scores': {'steps': 10, 'seed': 9}}, {'width': 8})
    assert (s['steps'], s['seed'], s['width']) == (10, 9, 8)
    with pytest.raises(ValueError, match="'scores.stpes'"): score_settings({'seed': 0, 'scores': {'stpes': 1}})
    with pytest.raises(ValueError, match="'scores.bogus'"): score_settings({'seed': 0}, {'bogus': 1})
    for bad in ({'steps': 0}, {'lr': 0}, {'augment': 'maybe'}, {'held_out_fraction': 1.5}, {'device': 'tpu'},
                {'test_images': 1}, {'kid_subset_size': 1}):
        with pytest.raises(ValueError, match=f'scores.{next(iter(bad))}'): score_settings({'seed': 0}, bad)
    with pytest.raises(ValueError, match='mapping'): score_settings({'seed': 0, 'scores': [1]})


def _cli(tmp_path, data_root, *sets):
    args = ['--params', str(REPO / 'params.yaml'), '--out', str(tmp_path / 'out'), '--no-progress',
            '--set', f'data.root={data_root}']
    for s in sets: args += ['--set', s]
    return main(args)


def test_cli_digits(tmp_path, data_root):
    summary = _cli(tmp_path, data_root, 'scores.steps=60', 'scores.width=8')
    out = tmp_path / 'out'
    saved = json.loads((out / 'classifier.json').read_text())
    timing = json.loads((out / 'timing.json').read_text())    # kept apart: classifier.json is the same every run
    assert saved == json.loads(json.dumps({k: v for k, v in summary.items() if k not in timing}))
    assert timing['seconds'] >= timing['seconds_training'] > 0
    assert saved['stands_in_for'] == STANDS_IN_FOR and saved['dataset'] == 'digits' and saved['accuracy_on'] == 'test split'
    assert (saved['n_train'], saved['n_test'], saved['steps'], saved['seed']) == (1500, 297, 60, 0)
    assert saved['accuracy'] > 0.8 and saved['torch'] == torch.__version__
    ref = saved['reference']
    assert ref['is_real_test'] > 3 and ref['fid_test_halves'] > 0 and ref['n_half'] == 148
    model, info = load_classifier(out / 'classifier.pt')
    assert info['summary']['accuracy'] == saved['accuracy'] and model.config['width'] == 8


def test_cli_errors(tmp_path, data_root, capsys):
    with pytest.raises(SystemExit) as e: _cli(tmp_path, data_root, 'scores.bogus=1')
    assert e.value.code == 2 and "'scores.bogus'" in capsys.readouterr().err
    params = (REPO / 'params.yaml').read_text() + '\nscores:\n  steps: 5\n  colour: red\n'
    (tmp_path / 'params.yaml').write_text(params)
    with pytest.raises(SystemExit):
        main(['--params', str(tmp_path / 'params.yaml'), '--out', str(tmp_path / 'o'), '--set', f'data.root={data_root}'])
    assert "'scores.colour'" in capsys.readouterr().err
    with pytest.raises(SystemExit): _cli(tmp_path, data_root, 'data.nmae=digits')       # load_params' own check
    assert 'data.nmae' in capsys.readouterr().err


def test_build_classifier_holds_out_when_test_has_no_labels(monkeypatch, tmp_path):
    "CelebA's shared test split has no attributes: accuracy comes from train images held out of training."
    fake = {'train': _fake_celeba(n=200, seed=0), 'test': _fake_celeba(n=40, seed=1, split='test', with_attrs=False)}
    monkeypatch.setattr(S, 'load_dataset', lambda name, split, limit=None, **kw: fake[split])
    params = {'seed': 0, 'data': {'name': 'celeba', 'root': str(tmp_path), 'img_size': 16}}
    summary = build_classifier(params, tmp_path / 'out', {'steps': 20, 'width': 8, 'kid_subsets': 5}, progress=False)
    assert 'held out' in summary['accuracy_on'] and summary['n_held_out'] == 20 and summary['n_train'] == 179
    assert summary['label_kind'] == 'attributes' and 0 < summary['accuracy'] <= 1 and summary['n_test'] == 40
    assert 1 <= summary['reference']['is_real_test'] <= 2
    bad = {'seed': 0, 'data': {'name': 'svhn', 'root': str(tmp_path)}}
    with pytest.raises(ValueError, match="'svhn'"): build_classifier(bad, tmp_path / 'o2', progress=False)


def test_python_dash_m(tmp_path, data_root):
    "`python -m mde.scores` runs main() (the guard) and exits cleanly."
    env = {**os.environ, 'PYTHONPATH': str(REPO), 'OMP_NUM_THREADS': '1'}
    r = subprocess.run([sys.executable, '-m', 'mde.scores', '--params', str(REPO / 'params.yaml'), '--out',
                        str(tmp_path / 'o'), '--no-progress', '--set', f'data.root={data_root}',
                        '--set', 'scores.steps=10', '--set', 'scores.width=4', '--set', 'scores.kid_subsets=5'],
                       capture_output=True, text=True, env=env, timeout=300, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    assert json.loads(r.stdout)['dataset'] == 'digits' and (tmp_path / 'o' / 'classifier.pt').is_file()


# ---------------------------------------------------------------- real data (shared copies)

@needs_shared
def test_celeba_attributes_on_shared_subset(tmp_path):
    "The CelebA choice works on the shared subset: attributes on the train split, held-out accuracy, test split scored."
    params = {'seed': 0, 'data': {'name': 'celeba', 'root': str(tmp_path / 'data'), 'img_size': 32,
                                  'source': str(SHARED), 'download': False}}
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')                                  # the subset's missing annotations
        summary = build_classifier(params, tmp_path / 'out', {'steps': 30, 'width': 8, 'train_images': 400,
                                                               'test_images': 60, 'kid_subsets': 5}, progress=False)
    assert summary['label_kind'] == 'attributes' and 'held out' in summary['accuracy_on']
    assert summary['n_train'] + summary['n_held_out'] == 400 and summary['n_test'] == 60
    assert summary['accuracy'] > summary['baseline_accuracy'] - 0.05   # 30 steps: at least about the majority guess
    m, info = load_classifier(tmp_path / 'out' / 'classifier.pt')
    assert m.multilabel and len(info['class_names']) == 40 and info['class_names'][0] == '5_o_Clock_Shadow'


@needs_shared
def test_mnist_on_shared_data(tmp_path):
    train = load_dataset('mnist', 'train', root=tmp_path, source=SHARED, img_size=28, limit=2000)
    test = load_dataset('mnist', 'test', root=tmp_path, source=SHARED, img_size=28, limit=300)
    model, info = train_classifier(train, steps=80, width=8, progress=False, held_out=test)
    assert info['accuracy'] > 0.8
    r = Scorer(model, test.images, kid_subsets=10)(torch.full((50, 3, 28, 28), 0.5))
    assert r['is'] == pytest.approx(1.0) and r['fid'] > 0
