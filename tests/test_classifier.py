"Tests of mde.classifier: the labels per data set, the network, training, evaluation, save/load, the DVC stage's CLI."
import json, math, os, subprocess, sys, warnings
from pathlib import Path

import pytest
import torch

import mde.classifier as C
from helpers import fake_celeba
from mde.data import ImageDataset, load_dataset, shared_data_dir
from mde.classifier import (LABEL_KINDS, STANDS_IN_FOR, Classifier, build_classifier, check_images, dataset_targets,
                            evaluate_classifier, load_classifier, main, predict, save_classifier, train_classifier)

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
    return tmp_path_factory.mktemp('classifier-data')


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


# ---------------------------------------------------------------- labels

def test_dataset_targets(digits):
    train, test = digits
    y, kind, k, names = dataset_targets(train)
    assert (kind, k, len(y), names[:3]) == ('class', 10, 1500, ['0', '1', '2'])
    assert torch.equal(y, train.labels) and y is not train.labels
    assert set(LABEL_KINDS) == {'digits', 'mnist', 'cifar10', 'flowers102', 'celeba'}
    a, kind, k, names = dataset_targets(fake_celeba())
    assert (kind, k, a.shape, names[0]) == ('attributes', 40, (120, 40), 'a0')


def test_dataset_targets_errors(digits):
    train, _ = digits
    empty = ImageDataset(torch.zeros(0, 3, 32, 32, dtype=torch.uint8), torch.zeros(0), info={'name': 'digits', 'split': 'x'})
    with pytest.raises(ValueError, match='no images'): dataset_targets(empty)
    with pytest.raises(ValueError, match="'svhn'"):
        dataset_targets(ImageDataset(train.images[:4], train.labels[:4], info={'name': 'svhn'}))
    with pytest.raises(ValueError, match='outside 0..9'):
        dataset_targets(ImageDataset(train.images[:4], torch.tensor([0, 1, 10, 2]), info={'name': 'digits'}))
    with pytest.raises(ValueError, match="split='train'"): dataset_targets(fake_celeba(with_attrs=False, split='test'))
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
    a = C._augment(x, g)
    assert set(a.unique().tolist()) <= set(x.unique().tolist())               # nearest, integer shifts: no new values
    assert not torch.equal(a, x)
    assert torch.equal(C._augment(x, torch.Generator().manual_seed(0)), a)   # reproducible


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
    train, test = fake_celeba(n=160, seed=0), fake_celeba(n=60, seed=1)
    model, info = train_classifier(train, steps=40, batch_size=32, width=8, progress=False, held_out=test)
    assert model.multilabel and info['label_kind'] == 'attributes' and info['n_train'] == 159   # the all-NaN face dropped
    ev = evaluate_classifier(model, test)
    assert 0.4 < ev['accuracy'] <= 1 and 0.5 <= ev['baseline'] <= 1
    with torch.no_grad(): p = model.probs(model(test.images.float() / 255))
    a = test.extras['attrs']
    known = ~torch.isnan(a[:, 0])
    assert (((p[:, 0] > .5) == (a[:, 0] > .5))[known]).float().mean() > 0.8   # the learnable attribute is learnt


def test_predict_batches_and_checks_images(trained, digits):
    model, _ = trained
    test = digits[1]
    f, logits = predict(model, test.images[:10], batch_size=3)
    assert f.shape == (10, model.num_features) and logits.shape == (10, 10) and f.dtype == logits.dtype == torch.float32
    with torch.no_grad(): ref = model(test.images[:10].float() / 255)
    assert torch.allclose(logits, ref, atol=1e-5)
    assert all(torch.equal(a, b) for a, b in zip(predict(model, test.images[:10, :1], batch_size=3), (f, logits)))   # one channel
    assert check_images(test.images[:2], 32) is not None
    with pytest.raises(ValueError, match='16, 16'): check_images(test.images[:2], 16)
    with pytest.raises(ValueError, match='no images'): check_images(test.images[:0], 32)


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


# ---------------------------------------------------------------- the command line (the DVC stage)

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
    fake = {'train': fake_celeba(n=200, seed=0), 'test': fake_celeba(n=40, seed=1, split='test', with_attrs=False)}
    monkeypatch.setattr(C, 'load_dataset', lambda name, split, limit=None, **kw: fake[split])
    params = {'seed': 0, 'data': {'name': 'celeba', 'root': str(tmp_path), 'img_size': 16}}
    summary = build_classifier(params, tmp_path / 'out', {'steps': 20, 'width': 8, 'kid_subsets': 5}, progress=False)
    assert 'held out' in summary['accuracy_on'] and summary['n_held_out'] == 20 and summary['n_train'] == 179
    assert summary['label_kind'] == 'attributes' and 0 < summary['accuracy'] <= 1 and summary['n_test'] == 40
    assert 1 <= summary['reference']['is_real_test'] <= 2
    bad = {'seed': 0, 'data': {'name': 'svhn', 'root': str(tmp_path)}}
    with pytest.raises(ValueError, match="'svhn'"): build_classifier(bad, tmp_path / 'o2', progress=False)


def test_python_dash_m(tmp_path, data_root):
    "`python -m mde.classifier` runs main() (the guard) and exits cleanly."
    env = {**os.environ, 'PYTHONPATH': str(REPO), 'OMP_NUM_THREADS': '1'}
    r = subprocess.run([sys.executable, '-m', 'mde.classifier', '--params', str(REPO / 'params.yaml'), '--out',
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
