"Tests of mde.scores: IS, FID and KID of fake images with the in-domain classifier (Scorer), standard Inception."
import math, socket, sys, urllib.request

import pytest
import torch

from helpers import fake_celeba
from mde.classifier import train_classifier
from mde.data import load_dataset, shared_data_dir
from mde.metrics import inception_score
from mde.scores import Scorer, find_inception_weights, standard_scores, standard_scores_available

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


def test_scorer_on_attributes():
    "A multi-label classifier's score: the geometric mean of its attributes' two-class inception scores (mde.metrics)."
    train, test = fake_celeba(n=160, seed=0), fake_celeba(n=60, seed=1)
    model, _ = train_classifier(train, steps=40, batch_size=32, width=8, progress=False)
    with torch.no_grad(): p = model.probs(model(test.images.float() / 255))
    sc = Scorer(model, test.images, kid_subset_size=20, kid_subsets=5)
    r = sc(test.images)
    assert 1 <= r['is'] <= 2 and abs(r['fid']) < 1e-6
    per = [inception_score(torch.stack([1 - p[:, j], p[:, j]], 1))[0] for j in range(40)]
    assert math.isclose(r['is'], math.exp(sum(map(math.log, per)) / 40), rel_tol=1e-5)


def test_torch_fallback_without_torchmetrics(monkeypatch, trained, digits):
    model, _ = trained
    test = digits[1]
    fake = (test.images[:150].float() / 255 * 0.7).clamp(0, 1)
    with_tm = Scorer(model, test.images, backend='auto')
    a = with_tm(fake)
    monkeypatch.setitem(sys.modules, 'torchmetrics', None)       # `import torchmetrics` now raises ImportError
    without = Scorer(model, test.images, backend='auto')
    assert with_tm.backend == 'torchmetrics' and without.backend == 'torch'
    b = without(fake)
    assert math.isclose(a['fid'], b['fid'], rel_tol=1e-6) and math.isclose(a['kid'], b['kid'], rel_tol=1e-9)
    assert a['is'] == b['is']


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


# ---------------------------------------------------------------- real data (shared copies)

@needs_shared
def test_mnist_on_shared_data(tmp_path):
    train = load_dataset('mnist', 'train', root=tmp_path, source=SHARED, img_size=28, limit=2000)
    test = load_dataset('mnist', 'test', root=tmp_path, source=SHARED, img_size=28, limit=300)
    model, info = train_classifier(train, steps=80, width=8, progress=False, held_out=test)
    assert info['accuracy'] > 0.8
    r = Scorer(model, test.images, kid_subsets=10)(torch.full((50, 3, 28, 28), 0.5))
    assert r['is'] == pytest.approx(1.0) and r['fid'] > 0
