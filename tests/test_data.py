"Tests of mde.data: the digits default always; fake folders for every layout; the shared real data when present."
import gzip, hashlib, http.server, io, json, os, pickle, shutil, subprocess, sys, tarfile, tempfile, threading, time, warnings, zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import mde.data as D
from mde.data import (CELEBA_CROP, CIFAR10_CLASSES, ImageDataset, celeba_crop_box, celeba_to_crop,
                      load_dataset, minibatches, prepare_dataset, shared_data_dir)
from mde.params import load_params

ROOT = Path(__file__).resolve().parents[1]
PARAMS = ROOT / 'params.yaml'

SHARED = shared_data_dir()
needs_shared = pytest.mark.skipif(SHARED is None, reason="../shared/data (the shared working copies of the real "
                                  "data sets) is not here; real-data tests need it")
MEAN_LM = [69, 111, 108, 111, 89, 135, 72, 152, 106, 152]


def _quiet_load(*args, **kw):
    "load_dataset with its warnings captured; returns (dataset, list of warning messages)."
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always')
        ds = load_dataset(*args, **kw)
    return ds, [str(w.message) for w in caught]


# ---------------------------------------------------------------- digits (always available)

def test_digits_shapes_range_labels(tmp_path):
    ds = load_dataset('digits', root=tmp_path)
    test = load_dataset('digits', 'test', root=tmp_path)
    assert (len(ds), len(test)) == (1500, 297)
    assert ds.images.shape == (1500, 3, 32, 32) and ds.images.dtype == torch.uint8
    item = ds[5]
    assert set(item) == {'image', 'label'}
    assert item['image'].shape == (3, 32, 32) and item['image'].dtype == torch.float32
    assert 0 <= item['image'].min() and item['image'].max() <= 1 and item['image'].max() > 0.9
    assert torch.equal(item['image'][0], item['image'][1]) and torch.equal(item['image'][0], item['image'][2])
    assert item['label'].dtype == torch.int64
    assert sorted(ds.labels.unique().tolist()) == list(range(10))
    assert sorted(test.labels.unique().tolist()) == list(range(10))
    batch = next(iter(torch.utils.data.DataLoader(ds, batch_size=16)))
    assert batch['image'].shape == (16, 3, 32, 32) and batch['label'].shape == (16,)


def test_digits_values_match_sklearn(tmp_path):
    from sklearn.datasets import load_digits
    d = load_digits()
    ds = load_dataset('digits', root=tmp_path, img_size=8, cache=False)      # no resize: only quantised
    expect = torch.from_numpy(np.round(d.images[:1500] / 16 * 255).astype(np.uint8))
    assert torch.equal(ds.images[:, 0], expect)
    assert torch.equal(ds.labels, torch.from_numpy(d.target[:1500]).long())
    test = load_dataset('digits', 'test', root=tmp_path, img_size=8, cache=False)
    assert torch.equal(test.labels, torch.from_numpy(d.target[-297:]).long())   # disjoint, deterministic split
    big = load_dataset('digits', root=tmp_path, img_size=64, cache=False)
    assert big.images.shape == (1500, 3, 64, 64)
    assert abs(big.images.float().mean() - ds.images.float().mean()) < 3        # upscaling keeps the grey level


def test_digits_limit_is_evenly_spaced(tmp_path):
    full = load_dataset('digits', root=tmp_path, cache=False)
    part = load_dataset('digits', root=tmp_path, limit=10, cache=False)
    idx = (np.arange(10) * 1500) // 10
    assert len(part) == 10 and torch.equal(part.images, full.images[idx]) and torch.equal(part.labels, full.labels[idx])
    assert part.info['n_available'] == 1500 and part.info['n'] == 10
    assert len(load_dataset('digits', root=tmp_path, limit=10_000, cache=False)) == 1500


def test_digits_cache(tmp_path, monkeypatch):
    t0 = time.perf_counter(); first = load_dataset('digits', root=tmp_path); t1 = time.perf_counter()
    cache = Path(first.info['cache'])
    assert cache.is_file() and cache.parent == tmp_path / 'cache' and not first.info['from_cache']
    calls = []
    def no_decode(*a, **k):
        calls.append(a); raise AssertionError('decoded again instead of reading the cache')
    monkeypatch.setitem(D._BUILDERS, 'digits', no_decode)
    t2 = time.perf_counter(); second = load_dataset('digits', root=tmp_path); t3 = time.perf_counter()
    assert not calls and second.info['from_cache'] and torch.equal(second.images, first.images)
    assert torch.equal(second.labels, first.labels) and second.info['n'] == first.info['n']
    assert t3 - t2 < max(t1 - t0, 0.5)
    # another size, limit or split is another cache entry; cache=False never reads it
    with pytest.raises(AssertionError, match='decoded again'): load_dataset('digits', root=tmp_path, img_size=16)
    with pytest.raises(AssertionError, match='decoded again'): load_dataset('digits', root=tmp_path, limit=5)
    with pytest.raises(AssertionError, match='decoded again'): load_dataset('digits', root=tmp_path, cache=False)
    assert len(calls) == 3


def test_unreadable_cache_is_rebuilt(tmp_path):
    ds = load_dataset('digits', root=tmp_path, limit=20)
    Path(ds.info['cache']).write_bytes(b'not a torch file')
    again, msgs = _quiet_load('digits', root=tmp_path, limit=20)
    assert any('unreadable cache' in m for m in msgs) and torch.equal(again.images, ds.images)
    assert not again.info['from_cache']


# ---------------------------------------------------------------- bad input

@pytest.mark.parametrize('kw, needle', [
    (dict(name='imagenet'), "'celeba'"),
    (dict(name='digits', split='valid'), "'test'"),
    (dict(name='flowers102', split='val'), "'valid'"),
    (dict(name='celeba', split='eval'), "'all'"),
    (dict(name='digits', img_size=0), 'img_size'),
    (dict(name='digits', img_size=4), 'img_size'),
    (dict(name='digits', img_size=-32), 'img_size'),
    (dict(name='digits', img_size=32.0), 'img_size'),
    (dict(name='digits', img_size='32'), 'img_size'),
    (dict(name='digits', img_size=True), 'img_size'),
    (dict(name='digits', limit=0), 'limit'),
    (dict(name='digits', limit=-1), 'limit'),
    (dict(name='digits', limit=2.5), 'limit'),
])
def test_bad_inputs(tmp_path, kw, needle):
    with pytest.raises(ValueError, match=needle): load_dataset(root=tmp_path, **kw)
    assert not (tmp_path / 'cache').exists()


def test_bad_name_in_prepare(tmp_path):
    with pytest.raises(ValueError, match="valid names"): prepare_dataset('MNIST', root=tmp_path)


def test_image_dataset_checks():
    with pytest.raises(ValueError, match='uint8'): ImageDataset(torch.zeros(2, 3, 4, 4), [0, 1])
    with pytest.raises(ValueError, match='uint8'): ImageDataset(torch.zeros(2, 2, 4, 4, dtype=torch.uint8), [0, 1])
    with pytest.raises(ValueError, match='rows'): ImageDataset(torch.zeros(2, 3, 4, 4, dtype=torch.uint8), [0])
    with pytest.raises(ValueError, match='attrs'):
        ImageDataset(torch.zeros(2, 3, 4, 4, dtype=torch.uint8), [0, 1], extras={'attrs': torch.zeros(3, 40)})


# ---------------------------------------------------------------- missing data: the error says what and how

@pytest.mark.parametrize('name, files', [
    ('mnist', ['mnist.npz', 'train-images-idx3-ubyte', 't10k-labels-idx1-ubyte']),
    ('cifar10', ['cifar-10-batches-py', 'train/<class>', 'cifar10-jpg.tar.gz']),
    ('celeba', ['img_align_celeba', 'list_eval_partition.txt', 'list_attr_celeba.txt', 'celeba-subset.tar.gz']),
    ('flowers102', ['imagelabels.mat', 'setid.mat', 'jpg/image_NNNNN.jpg', 'flowers102-128.tar.gz']),
])
def test_missing_folder_message(tmp_path, name, files):
    with pytest.raises(FileNotFoundError) as e: load_dataset(name, root=tmp_path)
    msg = str(e.value)
    for f in files: assert f in msg, f
    assert str(tmp_path / 'raw' / name) in msg
    assert 'download=True' in msg and 'source=' in msg
    empty = tmp_path / 'empty'; empty.mkdir()
    with pytest.raises(FileNotFoundError, match='Searched source'): load_dataset(name, root=tmp_path, source=empty)
    with pytest.raises(FileNotFoundError, match='does not exist'):
        load_dataset(name, root=tmp_path, source=tmp_path / 'nowhere')


def test_download_failure_message(tmp_path, monkeypatch):
    import torchvision.datasets as tvd
    def refuse(*a, **k): raise OSError('Too many users have viewed or downloaded this file recently')
    monkeypatch.setattr(tvd, 'CelebA', refuse)
    with pytest.raises(RuntimeError) as e: load_dataset('celeba', root=tmp_path, download=True)
    msg = str(e.value)
    assert 'Google Drive' in msg and 'Too many users' in msg and 'source=' in msg and 'mmlab' in msg


def test_faces_cpu_profile_without_data(tmp_path):
    "`--prepare-only` with the faces-cpu profile and no CelebA: one error, naming the files and the folders searched."
    import subprocess, sys
    repo = Path(__file__).resolve().parents[1]
    env = {k: v for k, v in os.environ.items() if k != 'MDE_DEBUG'}
    def prepare(*sets):
        cmd = [sys.executable, '-m', 'mde.trainer', '--prepare-only', '--set', 'profile=faces-cpu',
               '--set', f'data.root={tmp_path / "root"}', *[a for s in sets for a in ('--set', s)]]
        return subprocess.run(cmd, cwd=repo, env=env, capture_output=True, text=True, timeout=300)
    r = prepare()
    err = r.stderr
    assert r.returncode == 2 and r.stdout == '', (r.returncode, r.stdout, err)
    assert 'Traceback' not in err and err.count('error:') == 1 and 'mde-train: error: no \'celeba\' data found.' in err
    assert 'img_align_celeba' in err and str(tmp_path / 'root' / 'raw' / 'celeba') in err
    assert 'celeba-subset.tar.gz' in err and 'source=' in err and 'Searched source' not in err
    if SHARED is not None: assert f"try source={str(SHARED)!r}" in err           # the shared copy is only suggested
    assert not (tmp_path / 'root').exists()                                         # nothing written
    empty = tmp_path / 'empty'; empty.mkdir()
    r = prepare(f'data.source={empty}')
    err = r.stderr
    assert r.returncode == 2 and 'Traceback' not in err and err.count('error:') == 1, (r.returncode, err)
    assert f'Searched source={empty}: neither the official files nor an archive found' in err
    assert 'img_align_celeba' in err and str(tmp_path / 'root' / 'raw' / 'celeba') in err
    assert 'Shared working copies' not in err and not list(empty.iterdir())


# ---------------------------------------------------------------- CIFAR-10 layouts (fake files)

def _cifar_batches(d, n=4, seed=0):
    rng = np.random.default_rng(seed)
    d.mkdir(parents=True, exist_ok=True)
    data = {}
    for f in [f'data_batch_{i}' for i in range(1, 6)] + ['test_batch']:
        data[f] = {'data': rng.integers(0, 256, (n, 3072), dtype=np.uint8), 'labels': list(range(n))}
        with open(d / f, 'wb') as fh: pickle.dump(data[f], fh)
    with open(d / 'batches.meta', 'wb') as fh: pickle.dump({'label_names': list(CIFAR10_CLASSES)}, fh)
    return data


def test_cifar_download_path_and_python_batches(tmp_path, monkeypatch):
    import torchvision.datasets as tvd
    made = {}
    class FakeCIFAR10:       # stands in for torchvision's downloader: writes the official python batches
        def __init__(self, root, train=True, download=False):
            assert download
            made.update(_cifar_batches(Path(root) / 'cifar-10-batches-py'))
    monkeypatch.setattr(tvd, 'CIFAR10', FakeCIFAR10)
    ds = load_dataset('cifar10', root=tmp_path, download=True)
    assert len(ds) == 20 and ds.images.shape == (20, 3, 32, 32)
    expect = np.concatenate([made[f'data_batch_{i}']['data'] for i in range(1, 6)]).reshape(-1, 3, 32, 32)
    assert torch.equal(ds.images, torch.from_numpy(expect))                  # exact pixels, official layout
    assert ds.info['classes'] == list(CIFAR10_CLASSES) and ds.labels.tolist() == [0, 1, 2, 3] * 5
    assert (tmp_path / 'raw' / 'cifar10' / 'cifar-10-batches-py' / 'test_batch').is_file()
    test = load_dataset('cifar10', 'test', root=tmp_path, img_size=16)        # found without download now
    assert test.images.shape == (4, 3, 16, 16)


def _jpeg_bytes(color, size=(32, 32), mode='RGB', fmt='JPEG'):
    buf = io.BytesIO(); Image.new(mode, size, color).save(buf, fmt); return buf.getvalue()


def _cifar_jpg_folder(src):
    "train/<class>/NNNN.jpg for 3 classes (2 images each) plus odd files; test/ with one image."
    for c, cls in enumerate(('airplane', 'bird', 'truck')):
        (src / 'train' / cls).mkdir(parents=True)
        for i in range(2): (src / 'train' / cls / f'{i:04d}.jpg').write_bytes(_jpeg_bytes((80 * c, 20, 200)))
    (src / 'test' / 'cat').mkdir(parents=True)
    (src / 'test' / 'cat' / '0000.jpg').write_bytes(_jpeg_bytes((10, 200, 10)))
    return src


def test_corrupt_and_odd_images_in_cifar_jpg_layout(tmp_path):
    src = _cifar_jpg_folder(tmp_path / 'src')
    good = (src / 'train' / 'bird' / '0000.jpg').read_bytes()
    (src / 'train' / 'bird' / '0001.jpg').write_bytes(good[:len(good) // 2])            # truncated JPEG
    (src / 'train' / 'truck' / '0002.jpg').write_bytes(b'this is not an image')
    (src / 'train' / 'truck' / '0003.png').write_bytes(_jpeg_bytes(128, (40, 36), 'L', 'PNG'))  # grey, 40x36
    (src / 'train' / 'truck' / '0004.png').write_bytes(_jpeg_bytes((9, 9, 9, 128), mode='RGBA', fmt='PNG'))
    (src / 'train' / 'airplane' / '0002.jpg').write_bytes(_jpeg_bytes((0, 0, 0, 0), mode='CMYK'))
    (src / 'train' / 'bird' / '0002.jpg').write_bytes(_jpeg_bytes((1, 2, 3), (32, 40)))      # RGB, 32x40
    ds, msgs = _quiet_load('cifar10', root=tmp_path / 'root', source=src)
    assert any('unreadable' in m and 'bird/0001.jpg' in m and 'truck/0002.jpg' in m for m in msgs)
    assert len(ds) == 9 and ds.info['n_corrupt'] == 2 and ds.info['corrupt'] == ['bird/0001.jpg', 'truck/0002.jpg']
    assert ds.labels.tolist() == [0, 0, 0, 2, 2, 9, 9, 9, 9]
    # odd but readable files: kept, listed, and named in ONE warning
    assert ds.info['converted'] == ['airplane/0002.jpg', 'truck/0003.png', 'truck/0004.png'] and ds.info['n_converted'] == 3
    assert ds.info['resized'] == ['bird/0002.jpg', 'truck/0003.png'] and ds.info['n_resized'] == 2
    assert ds.info['native_size'] == [32, 32]
    odd = [m for m in msgs if 'odd images' in m]
    assert len(odd) == 1 and all(f in odd[0] for f in ('airplane/0002.jpg', 'truck/0003.png', 'truck/0004.png',
                                                       'bird/0002.jpg', '32x32'))
    assert not any('bird/0000.jpg' in m for m in msgs)
    assert ds.info['source'] == str(src)                       # a folder of official files is used in place
    assert not (tmp_path / 'root' / 'raw').exists()
    grey = ds.images[-2]                                       # the 40x36 grey PNG: RGB, centre crop, 32x32
    assert grey.shape == (3, 32, 32) and torch.equal(grey[0], grey[1]) and (grey.float() - 128).abs().max() <= 1
    assert ds.images[0, 2].float().mean() > 180                # blue-ish airplane kept its colour
    again, msgs = _quiet_load('cifar10', root=tmp_path / 'root', source=src)   # from cache: still reported
    assert again.info['from_cache'] and any('bird/0001.jpg' in m for m in msgs) and len(again) == 9
    assert sum('truck/0003.png' in m for m in msgs) == 1 and again.info['resized'] == ds.info['resized']
    test, msgs = _quiet_load('cifar10', 'test', root=tmp_path / 'root', source=src)
    assert len(test) == 1 and test.labels.tolist() == [3] and test.info['n_converted'] == test.info['n_resized'] == 0
    assert not msgs                                            # a clean split: no warning at all


def test_cache_follows_the_image_tree_and_the_code(tmp_path, monkeypatch):
    src, root = _cifar_jpg_folder(tmp_path / 'src'), tmp_path / 'root'
    calls, build = [], D._BUILDERS['cifar10']
    monkeypatch.setitem(D._BUILDERS, 'cifar10', lambda *a: calls.append(a) or build(*a))
    first = load_dataset('cifar10', root=root, source=src)
    same = load_dataset('cifar10', root=root, source=src)                  # unchanged folder: reused
    assert len(calls) == 1 and same.info['from_cache'] and same.info['cache'] == first.info['cache']
    (src / 'train' / 'bird' / '0002.jpg').write_bytes(_jpeg_bytes((5, 5, 5)))   # a subset grows in place
    grown = load_dataset('cifar10', root=root, source=src)
    assert len(calls) == 2 and not grown.info['from_cache'] and len(grown) == 7
    assert grown.info['cache'] != first.info['cache']
    f = src / 'train' / 'truck' / '0001.jpg'                                   # rewritten, same size
    f.write_bytes(_jpeg_bytes((250, 250, 250))); os.utime(f, ns=(time.time_ns() + 10 ** 9,) * 2)
    touched = load_dataset('cifar10', root=root, source=src)
    assert len(calls) == 3 and not touched.info['from_cache'] and touched.images[-1].float().mean() > 240
    assert load_dataset('cifar10', root=root, source=src).info['from_cache'] and len(calls) == 3
    # a change to the decoding code (here: `_square`, used by the builder) is a new entry, no version bump
    monkeypatch.setattr(D, '_square', lambda im, size: Image.new('RGB', (size, size), (7, 7, 7)))
    recoded = load_dataset('cifar10', root=root, source=src)
    assert len(calls) == 4 and not recoded.info['from_cache'] and (recoded.images == 7).all()
    assert D._CACHE_VERSION == 2
    # the cache folder inside the data folder does not change the key
    inside = load_dataset('cifar10', root=src, source=src)
    assert len(calls) == 5 and len(inside) == 7 and load_dataset('cifar10', root=src, source=src).info['from_cache']


def test_tree_summary(tmp_path):
    d = tmp_path / 'd'; (d / 'a' / 'b').mkdir(parents=True)
    for i in range(2000): (d / 'a' / 'b' / f'{i:05d}.jpg').write_bytes(b'x' * 3)
    (d / 'top.txt').write_bytes(b'12345')
    (d / 'a' / 'loop').symlink_to(d, target_is_directory=True)                 # a link back up: visited once
    (tmp_path / 'ext').mkdir(); (tmp_path / 'ext' / 'e.jpg').write_bytes(b'yy')
    (d / 'linked').symlink_to(tmp_path / 'ext', target_is_directory=True)      # a linked image folder counts
    (d / 'broken').symlink_to(tmp_path / 'nowhere')
    t0 = time.perf_counter(); n, size, latest = D._tree_summary(d); dt = time.perf_counter() - t0
    assert (n, size) == (2002, 2000 * 3 + 5 + 2) and latest > 0 and dt < 2
    assert D._tree_summary(d, skip=[d / 'a'])[:2] == (2, 7)
    os.utime(d / 'a' / 'b' / '00007.jpg', ns=(latest + 5, latest + 5))
    assert D._tree_summary(d)[2] == latest + 5


def test_digits_key_follows_the_code(tmp_path, monkeypatch):
    first = load_dataset('digits', root=tmp_path, limit=5)
    assert '-sklearn-' in Path(first.info['cache']).name
    real = D._resize_grey
    monkeypatch.setattr(D, '_resize_grey', lambda x, size: real(x, size) // 2)
    again = load_dataset('digits', root=tmp_path, limit=5)
    assert not again.info['from_cache'] and torch.equal(again.images, first.images // 2)


def test_unknown_class_folder(tmp_path):
    src = _cifar_jpg_folder(tmp_path / 'src')
    (src / 'train' / 'dragon').mkdir()
    with pytest.raises(ValueError, match='dragon'): load_dataset('cifar10', root=tmp_path / 'root', source=src)


def _tar_gz(path, folder=None, members=()):
    with tarfile.open(path, 'w:gz') as t:
        if folder is not None: t.add(folder, arcname='.')
        for name, data in members:
            info = tarfile.TarInfo(name); info.size = len(data); t.addfile(info, io.BytesIO(data))


def test_archive_extracted_once_with_checksum(tmp_path, monkeypatch):
    src = tmp_path / 'source'; src.mkdir()
    arch = src / 'cifar10-jpg.tar.gz'
    _tar_gz(arch, _cifar_jpg_folder(tmp_path / 'tree'))
    (src / 'SHA256SUMS').write_text(f"{'0' * 64}  cifar10-jpg.tar.gz\n")
    with pytest.raises(ValueError, match='SHA-256'): prepare_dataset('cifar10', root=tmp_path / 'root', source=src)
    digest = hashlib.sha256(arch.read_bytes()).hexdigest()
    (src / 'SHA256SUMS').write_text(f"{digest}  cifar10-jpg.tar.gz\n")
    where = prepare_dataset('cifar10', root=tmp_path / 'root', source=src)
    assert where == tmp_path / 'root' / 'raw' / 'cifar10' and (where / 'train' / 'bird' / '0001.jpg').is_file()
    assert not list((tmp_path / 'root' / 'raw').glob('.*partial'))
    monkeypatch.setattr(D, '_extract', lambda *a: pytest.fail('extracted twice'))
    ds = load_dataset('cifar10', root=tmp_path / 'root', source=src)
    assert len(ds) == 6 and ds.info['source'] == str(where)


def test_unsafe_archive_refused(tmp_path):
    src = tmp_path / 'source'; src.mkdir()
    _tar_gz(src / 'cifar10-jpg.tar.gz', members=[('../evil.txt', b'x')])
    with pytest.raises(ValueError, match='unsafe'): prepare_dataset('cifar10', root=tmp_path / 'root', source=src)
    assert not (tmp_path / 'root' / 'evil.txt').exists() and not (tmp_path / 'evil.txt').exists()


# ---------------------------------------------------------------- MNIST idx files (fake)

def _idx(path, arr):
    arr = np.asarray(arr, dtype=np.uint8)
    header = bytes([0, 0, 8, arr.ndim]) + b''.join(int(s).to_bytes(4, 'big') for s in arr.shape)
    with gzip.open(path, 'wb') as f: f.write(header + arr.tobytes())


def test_mnist_idx_files(tmp_path):
    rng = np.random.default_rng(1)
    x, y = rng.integers(0, 256, (5, 28, 28), dtype=np.uint8), np.array([3, 1, 4, 1, 5])
    raw = tmp_path / 'root' / 'raw' / 'mnist' / 'MNIST' / 'raw'; raw.mkdir(parents=True)   # torchvision's layout
    _idx(raw / 'train-images-idx3-ubyte.gz', x); _idx(raw / 'train-labels-idx1-ubyte.gz', y)
    _idx(raw / 't10k-images-idx3-ubyte.gz', x[:2]); _idx(raw / 't10k-labels-idx1-ubyte.gz', y[:2])
    ds = load_dataset('mnist', root=tmp_path / 'root', img_size=28)
    assert torch.equal(ds.images[:, 1], torch.from_numpy(x)) and ds.labels.tolist() == y.tolist()
    big = load_dataset('mnist', 'test', root=tmp_path / 'root')              # default: 96x96
    assert big.images.shape == (2, 3, 96, 96) and big.info['n_available'] == 2 and big.info['format'] == 'idx files'
    (raw / 't10k-images-idx3-ubyte.gz').write_bytes(gzip.compress(b'\x00\x00\x0d\x03garbage'))
    with pytest.raises(ValueError, match='idx'): load_dataset('mnist', 'test', root=tmp_path / 'root', cache=False)


# ---------------------------------------------------------------- CelebA (fake official files)

def test_celeba_crop_geometry():
    top, left, h, w = celeba_crop_box()
    assert (top, left, h, w) == (CELEBA_CROP[0], CELEBA_CROP[1], CELEBA_CROP[2], CELEBA_CROP[2])
    assert left + w / 2 == 89 and top + h / 2 == 109 and w == 128       # centred; 96 / 0.75 = 128
    lm = celeba_to_crop(MEAN_LM, 96)
    assert ((lm > 5) & (lm < 90)).all()
    assert torch.allclose(celeba_to_crop(MEAN_LM, 128), torch.tensor(MEAN_LM, dtype=torch.float32)
                          - torch.tensor([left, top] * 5, dtype=torch.float32))
    assert celeba_to_crop(torch.zeros(7, 10), 96).shape == (7, 10)
    with pytest.raises(ValueError, match='pairs'): celeba_to_crop([1, 2, 3], 96)


def test_celeba_crop_has_one_home():
    import mde.masks as masks
    assert CELEBA_CROP is masks.CELEBA_CROP and CELEBA_CROP == (45, 25, 128)


def _png(arr): buf = io.BytesIO(); Image.fromarray(arr).save(buf, 'PNG'); return buf.getvalue()


def _fake_celeba(d, partition=True):
    "img_align_celeba with 4 train images (one listed but absent), one valid, one test; partial annotations."
    img = d / 'img_align_celeba'; img.mkdir(parents=True)
    top, left, side, _ = celeba_crop_box()
    inside = np.zeros((218, 178, 3), np.uint8); inside[top:top + side, left:left + side] = 255
    (img / '000001.jpg').write_bytes(_png(inside))                 # PNG bytes under .jpg: lossless geometry check
    (img / '000002.jpg').write_bytes(_png(255 - inside))
    (img / '000003.jpg').write_bytes(_jpeg_bytes((200, 100, 50), (178, 218)))
    (img / '000004.jpg').write_bytes(_jpeg_bytes(90, (89, 109), 'L'))            # grey, half size
    (img / '162771.jpg').write_bytes(_jpeg_bytes((0, 0, 255), (178, 218)))
    (img / '182638.jpg').write_bytes(_jpeg_bytes((0, 255, 0), (178, 218)))
    names = ['000001.jpg', '000002.jpg', '000003.jpg', '000004.jpg', '000005.jpg', '162771.jpg', '182638.jpg']
    if partition:
        (d / 'list_eval_partition.txt').write_text(''.join(f'{n} {p}\n' for n, p in zip(names, [0] * 5 + [1, 2])))
    attr_names = [f'attr{i}' for i in range(40)]
    rows = [f"{n} {' '.join('1' if (i + k) % 3 == 0 else '-1' for i in range(40))}" for k, n in enumerate(names[:2])]
    (d / 'list_attr_celeba.txt').write_text('\n'.join(['202599', ' '.join(attr_names), *rows]) + '\n')
    lm = ' '.join(map(str, MEAN_LM))
    (d / 'list_landmarks_align_celeba.txt').write_text(
        '202599\nlefteye_x lefteye_y righteye_x righteye_y nose_x nose_y leftmouth_x leftmouth_y rightmouth_x '
        'rightmouth_y\n' + ''.join(f'{n} {lm}\n' for n in names))
    (d / 'identity_CelebA.txt').write_text(''.join(f'{n} {100 + k}\n' for k, n in enumerate(names)))
    return d


def test_celeba_fake_official_files(tmp_path):
    src = _fake_celeba(tmp_path / 'CelebA')
    ds, msgs = _quiet_load('celeba', root=tmp_path / 'root', source=src)
    assert any('1 of 5 images listed' in m for m in msgs) and any('attributes missing' in m for m in msgs)
    assert len(ds) == 4 and ds.info['n_listed'] == 5 and ds.info['n_missing_files'] == 1
    assert ds.images.shape == (4, 3, 96, 96)
    assert ds.images[0].float().mean() > 250 and ds.images[1].float().mean() < 5     # exactly the crop box
    assert torch.equal(ds.images[3, 0], ds.images[3, 2])                              # grey -> RGB, resized
    item = ds[0]
    assert set(item) == {'image', 'label', 'attrs', 'landmarks', 'identity'}
    assert item['attrs'].shape == (40,) and set(item['attrs'].tolist()) == {0.0, 1.0}
    assert item['attrs'][0] == 1 and item['attrs'][1] == 0                           # -1/1 -> 0/1
    assert ds.extras['attrs'][2:].isnan().all()                                       # rows absent from the file
    assert any('attributes missing for 2 of 4' in m for m in ds.info['missing'])
    assert torch.allclose(ds.extras['landmarks'], celeba_to_crop(MEAN_LM, 96).expand(4, 10))
    assert ds.extras['identity'].tolist() == [100, 101, 102, 103] and torch.equal(ds.labels, ds.extras['identity'])
    assert ds.info['attr_names'] == [f'attr{i}' for i in range(40)]
    valid, msgs = _quiet_load('celeba', 'valid', root=tmp_path / 'root', source=src, img_size=32)
    assert len(valid) == 1 and 'attrs' not in valid[0] and valid[0]['landmarks'].shape == (10,)
    assert any('no attributes' in m for m in msgs) and valid.images[0, 2].float().mean() > 200
    everything, _ = _quiet_load('celeba', 'all', root=tmp_path / 'root', source=src, img_size=32)
    assert len(everything) == 6


def test_celeba_odd_size_warns_about_alignment(tmp_path):
    src = _fake_celeba(tmp_path / 'CelebA', partition=False)                    # split by the official ranges
    (src / 'img_align_celeba' / '000006.jpg').write_bytes(_jpeg_bytes((30, 60, 90), (200, 200)))
    ds, msgs = _quiet_load('celeba', root=tmp_path / 'root', source=src)
    assert len(ds) == 5 and ds.images.shape == (5, 3, 96, 96)                 # still loaded
    assert ds.info['resized'] == ['000004.jpg', '000006.jpg'] and ds.info['converted'] == ['000004.jpg']
    assert ds.info['native_size'] == [178, 218]
    odd = [m for m in msgs if 'odd images' in m]
    assert len(odd) == 1 and '000006.jpg' in odd[0] and '178x218' in odd[0] and 'alignment is not guaranteed' in odd[0]
    assert not any(n in odd[0] for n in ('000001.jpg', '000002.jpg', '000003.jpg'))
    assert (ds.images[4].float().mean((1, 2)) - torch.tensor([30., 60., 90.])).abs().max() < 6
    _, msgs = _quiet_load('celeba', root=tmp_path / 'root', source=src)                 # from the cache too
    assert sum('000006.jpg' in m and 'alignment' in m for m in msgs) == 1


def _fake_flowers(d, sizes_modes):
    from scipy.io import savemat
    (d / 'jpg').mkdir(parents=True)
    for i, (size, mode) in enumerate(sizes_modes, 1):
        color = {'RGB': (200, 30, 30), 'L': 90, 'CMYK': (0, 0, 0, 0)}[mode]
        (d / 'jpg' / f'image_{i:05d}.jpg').write_bytes(_jpeg_bytes(color, size, mode))
    n = len(sizes_modes)
    savemat(d / 'imagelabels.mat', {'labels': np.arange(n) % 102 + 1})
    savemat(d / 'setid.mat', {'trnid': np.arange(1, n - 1), 'tstid': np.array([n - 1]), 'valid': np.array([n - 1, n])})
    return d


def test_flowers_odd_modes_only_and_capped_names(tmp_path):
    specs = [((500, 375), 'RGB'), ((375, 500), 'RGB'), ((640, 480), 'CMYK')] + [((100 + i, 90), 'L') for i in range(22)]
    src = _fake_flowers(tmp_path / 'flowers', specs)
    ds, msgs = _quiet_load('flowers102', root=tmp_path / 'root', source=src, img_size=32)
    assert len(ds) == 24 and ds.images.shape == (24, 3, 32, 32)
    assert ds.info['n_converted'] == 22 and len(ds.info['converted']) == 20      # capped names, exact count
    assert ds.info['converted'][:2] == ['image_00003.jpg', 'image_00004.jpg']
    assert ds.info['resized'] == [] and ds.info['n_resized'] == 0 and ds.info['native_size'] is None
    odd = [m for m in msgs if 'odd images' in m]
    assert len(odd) == 1 and '22 image file(s) not RGB' in odd[0] and 'image_00003.jpg' in odd[0]
    assert 'and 17 more' in odd[0] and 'image_00001.jpg' not in odd[0]
    test, msgs = _quiet_load('flowers102', 'test', root=tmp_path / 'root', source=src, img_size=32)
    assert len(test) == 2 and test.info['converted'] == ['image_00024.jpg', 'image_00025.jpg']
    assert torch.equal(test.images[0, 0], test.images[0, 1])                   # grey -> RGB


def test_celeba_without_partition_and_landmarks(tmp_path):
    src = _fake_celeba(tmp_path / 'CelebA', partition=False)
    (src / 'list_landmarks_align_celeba.txt').unlink()
    ds, msgs = _quiet_load('celeba', 'test', root=tmp_path / 'root', source=src)
    assert len(ds) == 1 and ds.images[0, 1].float().mean() > 200                     # 182638: the official range
    assert any('list_eval_partition' in m for m in msgs) and any('no landmarks' in m for m in msgs)
    assert 'landmarks' not in ds[0] and 'landmarks' in ' '.join(ds.info['missing'])
    train, _ = _quiet_load('celeba', 'train', root=tmp_path / 'root', source=src, limit=2)
    assert len(train) == 2 and train.info['n_available'] == 4


_LM_HEADER = ('lefteye_x lefteye_y righteye_x righteye_y nose_x nose_y leftmouth_x leftmouth_y rightmouth_x '
              'rightmouth_y')


def _write_landmarks(path, rows):
    "A landmark file in the official format: a count line, the header, then `name v1 ... v10` ({name: values or text})."
    body = ''.join(f"{n} {v if isinstance(v, str) else ' '.join(map(str, v))}\n" for n, v in rows.items())
    path.write_text(f'{len(rows)}\n{_LM_HEADER}\n{body}')


def test_celeba_detected_landmarks_stand_in(tmp_path):
    src = _fake_celeba(tmp_path / 'CelebA')
    names = ['000001.jpg', '000002.jpg', '000003.jpg', '000004.jpg', '000005.jpg', '162771.jpg', '182638.jpg']
    shifted = {n: [v + 3 * k for v in MEAN_LM] for k, n in enumerate(names)}        # row k: MEAN_LM + 3k
    (src / 'list_landmarks_align_celeba.txt').rename(src / 'list_landmarks_align_celeba_mtcnn.txt')
    _write_landmarks(src / 'list_landmarks_align_celeba_mtcnn.txt', shifted)
    ds, msgs = _quiet_load('celeba', root=tmp_path / 'root', source=src)
    assert ds.info['landmarks'] == {'file': 'list_landmarks_align_celeba_mtcnn.txt', 'kind': 'detected'}
    assert len(ds) == 4 and not any('no landmarks' in m or 'landmarks missing' in m for m in msgs)
    assert 'bad_rows' not in ds.info
    assert torch.allclose(ds.extras['landmarks'], celeba_to_crop(torch.tensor([shifted[n] for n in names[:4]]), 96))
    assert ds[2]['landmarks'].shape == (10,)
    again, _ = _quiet_load('celeba', root=tmp_path / 'root', source=src)               # the record survives the cache
    assert again.info['from_cache'] and again.info['landmarks'] == ds.info['landmarks']
    # both files: the official (annotated) one wins, whatever the stand-in says
    _write_landmarks(src / 'list_landmarks_align_celeba.txt', {n: MEAN_LM for n in names})
    both, msgs = _quiet_load('celeba', root=tmp_path / 'root', source=src)
    assert not both.info['from_cache']
    assert both.info['landmarks'] == {'file': 'list_landmarks_align_celeba.txt', 'kind': 'annotated'}
    assert torch.allclose(both.extras['landmarks'], celeba_to_crop(MEAN_LM, 96).expand(4, 10))
    assert D.LANDMARK_FILES == {'list_landmarks_align_celeba.txt': 'annotated',
                                'list_landmarks_align_celeba_mtcnn.txt': 'detected'}
    # no landmark file at all: no record of one
    for f in D.LANDMARK_FILES: (src / f).unlink()
    none, msgs = _quiet_load('celeba', root=tmp_path / 'root', source=src)
    assert 'landmarks' not in none.info and 'landmarks' not in none.extras and any('no landmarks' in m for m in msgs)


def test_celeba_malformed_annotation_rows(tmp_path):
    src = _fake_celeba(tmp_path / 'CelebA')
    names = ['000001.jpg', '000002.jpg', '000003.jpg', '000004.jpg', '000005.jpg', '162771.jpg', '182638.jpg']
    rows = {n: MEAN_LM for n in names}
    rows['000002.jpg'] = MEAN_LM[:9]                                                    # 9 numbers
    rows['000003.jpg'] = ' '.join(map(str, MEAN_LM[:4] + ['x'] + MEAN_LM[5:]))          # 10 columns, one not a number
    _write_landmarks(src / 'list_landmarks_align_celeba.txt', rows)
    attr = (src / 'list_attr_celeba.txt').read_text().splitlines()
    assert attr[3].startswith('000002.jpg ')
    attr[3] += ' 1'                                                                     # 41 values: one too many
    (src / 'list_attr_celeba.txt').write_text('\n'.join(attr) + '\n')
    ds, msgs = _quiet_load('celeba', root=tmp_path / 'root', source=src)
    assert len(ds) == 4
    lm = ds.extras['landmarks']
    assert lm[1].isnan().all() and lm[2].isnan().all()                                  # the bad rows: NaN
    assert torch.allclose(lm[[0, 3]], celeba_to_crop(MEAN_LM, 96).expand(2, 10))        # the others intact
    bad = ds.info['bad_rows']
    assert bad['landmarks'] == {'file': 'list_landmarks_align_celeba.txt', 'n': 2, 'names': ['000002.jpg', '000003.jpg']}
    assert bad['attributes'] == {'file': 'list_attr_celeba.txt', 'n': 1, 'names': ['000002.jpg']}
    said = [m for m in ds.info['missing'] if 'list_landmarks_align_celeba.txt' in m and 'skipped' in m]
    assert len(said) == 1 and '2 row(s)' in said[0] and '000002.jpg' in said[0] and '000003.jpg' in said[0]
    assert '000001.jpg' not in said[0] and '000004.jpg' not in said[0]
    said = [m for m in ds.info['missing'] if 'list_attr_celeba.txt' in m and 'skipped' in m]
    assert len(said) == 1 and '1 row(s)' in said[0] and '000002.jpg' in said[0] and '000001.jpg' not in said[0]
    assert any('000002.jpg' in m and '000003.jpg' in m and 'skipped' in m for m in msgs)   # and it is warned
    attrs = ds.extras['attrs']
    assert attrs[1].isnan().all() and attrs[2:].isnan().all()                           # bad row; rows absent
    assert set(attrs[0].tolist()) == {0.0, 1.0} and attrs[0, 0] == 1 and attrs[0, 1] == 0   # the good row intact
    assert ds.extras['identity'].tolist() == [100, 101, 102, 103]
    again, msgs = _quiet_load('celeba', root=tmp_path / 'root', source=src)             # from the cache: the same
    assert again.info['from_cache'] and again.info['bad_rows'] == bad
    assert any('000002.jpg' in m and '000003.jpg' in m and 'skipped' in m for m in msgs)


def test_loose_file_beside_the_archive_reaches_the_data(tmp_path):
    tree = tmp_path / 'tree'
    fake = _fake_celeba(tree / 'celeba')                                   # the shared archive's layout: celeba/...
    (fake / 'list_landmarks_align_celeba.txt').unlink()
    names = ['000001.jpg', '000002.jpg', '000003.jpg', '000004.jpg']
    src = tmp_path / 'source'; src.mkdir()
    _tar_gz(src / 'celeba-subset.tar.gz', tree)
    root = tmp_path / 'root'
    first, msgs = _quiet_load('celeba', root=root, source=src)
    assert 'landmarks' not in first.extras and 'landmarks' not in first.info and any('no landmarks' in m for m in msgs)
    where = root / 'raw' / 'celeba' / 'celeba'
    assert first.info['source'] == str(where) and not (where / 'list_landmarks_align_celeba_mtcnn.txt').exists()
    assert _quiet_load('celeba', root=root, source=src)[0].info['from_cache']
    # the stand-in landmark file is put beside the archive later: the next load brings it in, and decodes again
    _write_landmarks(src / 'list_landmarks_align_celeba_mtcnn.txt', {n: MEAN_LM for n in names})
    second, msgs = _quiet_load('celeba', root=root, source=src)
    assert not second.info['from_cache'] and second.info['cache'] != first.info['cache']
    assert second.info['landmarks'] == {'file': 'list_landmarks_align_celeba_mtcnn.txt', 'kind': 'detected'}
    assert torch.allclose(second.extras['landmarks'], celeba_to_crop(MEAN_LM, 96).expand(4, 10))
    assert not any('no landmarks' in m or 'landmarks missing' in m for m in msgs)
    assert torch.equal(second.images, first.images)
    assert (where / 'list_landmarks_align_celeba_mtcnn.txt').read_bytes() == \
        (src / 'list_landmarks_align_celeba_mtcnn.txt').read_bytes()
    assert _quiet_load('celeba', root=root, source=src)[0].info['from_cache']
    # a file already there is never overwritten by the one beside the archive
    _write_landmarks(src / 'list_landmarks_align_celeba_mtcnn.txt', {n: [v + 1 for v in MEAN_LM] for n in names})
    third, _ = _quiet_load('celeba', root=root, source=src)
    assert third.info['from_cache'] and torch.allclose(third.extras['landmarks'], second.extras['landmarks'])
    # a folder of official files used in place inside `source` is never written to
    inplace = tmp_path / 'inplace'; shutil.copytree(tree, inplace)
    shutil.copy(src / 'list_landmarks_align_celeba_mtcnn.txt', inplace)
    before = sorted(p.name for p in (inplace / 'celeba').iterdir())
    used, msgs = _quiet_load('celeba', root=tmp_path / 'root2', source=inplace)
    assert used.info['source'] == str(inplace / 'celeba') and sorted(p.name for p in (inplace / 'celeba').iterdir()) == before
    assert 'landmarks' not in used.extras and any('no landmarks' in m for m in msgs)
    assert not (tmp_path / 'root2' / 'raw').exists()


# ---------------------------------------------------------------- download from a mirror (a loopback HTTP server)

class _Mirror:
    """A loopback HTTP server over `folder` that can misbehave: `faults[file name]` is 'truncate' (half the body
    with the full Content-Length), 'hang' (headers, then silence) or an HTTP status code to answer with."""
    def __init__(self, folder):
        self.folder, self.faults, self.requests, self.release = Path(folder), {}, [], threading.Event()
        self.folder.mkdir(parents=True, exist_ok=True)
        mirror = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args): pass

            def do_GET(self):
                name = self.path.lstrip('/')
                mirror.requests.append(name)
                fault, f = mirror.faults.get(name), mirror.folder / name
                if isinstance(fault, int): return self.send_error(fault)
                if not f.is_file(): return self.send_error(404)
                data = f.read_bytes()
                self.send_response(200)
                self.send_header('Content-Length', str(len(data)))
                self.end_headers()
                if fault == 'hang': mirror.release.wait(10); return
                self.wfile.write(data[:len(data) // 2] if fault == 'truncate' else data)
                self.close_connection = True

        self.server = http.server.ThreadingHTTPServer(('127.0.0.1', 0), Handler)
        threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True).start()
        self.url = f'http://127.0.0.1:{self.server.server_port}/'

    def put(self, name, data, listed=True, digest=None):
        "Serve `data` as `name`; `listed`: with its SHA-256 (or `digest`) in SHA256SUMS."
        (self.folder / name).write_bytes(data)
        sums = self.folder / 'SHA256SUMS'
        lines = [l for l in (sums.read_text().splitlines() if sums.is_file() else []) if not l.endswith(f'  {name}')]
        if listed: lines.append(f"{digest or hashlib.sha256(data).hexdigest()}  {name}")
        sums.write_text(''.join(l + '\n' for l in lines))

    def close(self):
        self.release.set(); self.server.shutdown(); self.server.server_close()


@pytest.fixture
def mirror(tmp_path):
    m = _Mirror(tmp_path / 'mirror')
    yield m
    m.close()


def _tgz_bytes(members):
    "A .tar.gz in memory from (name, bytes) regular-file members, or ready TarInfo members (data None)."
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode='w:gz') as t:
        for name, data in members:
            if isinstance(name, tarfile.TarInfo): t.addfile(name); continue
            info = tarfile.TarInfo(name); info.size = len(data); t.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _cifar_python_tgz(tmp_path, n=4):
    "A tiny `cifar-10-python.tar.gz` (the official python batches, n images each) and the batches written."
    data = _cifar_batches(tmp_path / 'batches' / 'cifar-10-batches-py', n)
    folder = tmp_path / 'batches' / 'cifar-10-batches-py'
    return _tgz_bytes([(f'cifar-10-batches-py/{f.name}', f.read_bytes()) for f in sorted(folder.iterdir())]), data


def _nothing_left(root, name):
    "No data folder, no temporary extraction folder, no .part file anywhere under `root`."
    assert not (root / 'raw' / name).exists(), sorted(map(str, (root / 'raw' / name).rglob('*')))
    assert not list(root.rglob('*.part')) and not list(root.rglob('.*partial'))


def test_mirror_download_cifar_python_batches(tmp_path, mirror):
    tgz, made = _cifar_python_tgz(tmp_path)
    mirror.put('cifar-10-python.tar.gz', tgz)
    root = tmp_path / 'root'
    ds = load_dataset('cifar10', 'train', root=root, download=mirror.url)
    assert len(ds) == 20 and ds.images.shape == (20, 3, 32, 32)
    expect = np.concatenate([made[f'data_batch_{i}']['data'] for i in range(1, 6)]).reshape(-1, 3, 32, 32)
    assert torch.equal(ds.images, torch.from_numpy(expect))
    # the shared copy's name is tried first (404 is fine), the SHA256SUMS beside it is read
    assert mirror.requests == ['SHA256SUMS', 'cifar10-jpg.tar.gz', 'cifar-10-python.tar.gz']
    where = root / 'raw' / 'cifar10'
    assert ds.info['source'] == str(where / 'cifar-10-batches-py')
    assert sorted(os.listdir(where)) == ['cifar-10-batches-py']               # no archive, no .download left
    n = len(mirror.requests)
    test = load_dataset('cifar10', 'test', root=root, download=mirror.url)   # extracted once: no new request
    assert len(test) == 4 and len(mirror.requests) == n


def test_mirror_url_forms_and_bad_values(tmp_path, mirror):
    tgz, _ = _cifar_python_tgz(tmp_path, n=2)
    mirror.put('cifar-10-python.tar.gz', tgz)
    no_slash = mirror.url.rstrip('/')
    assert len(load_dataset('cifar10', root=tmp_path / 'a', download=no_slash)) == 10
    local = tmp_path / 'local mirror'; local.mkdir()                              # file:// (a space in the path)
    shutil.copy(mirror.folder / 'cifar-10-python.tar.gz', local)
    shutil.copy(mirror.folder / 'SHA256SUMS', local)
    assert len(load_dataset('cifar10', root=tmp_path / 'b', download=local.as_uri())) == 10
    for bad in ('yes', 'ftp://host/data/', 'http://', str(local), 3):
        with pytest.raises(ValueError, match='mirror URL'): load_dataset('cifar10', root=tmp_path / 'c', download=bad)
    with pytest.raises(ValueError, match='mirror URL'): prepare_dataset('digits', download='nope')


def test_mirror_truncated_download_then_retry(tmp_path, mirror):
    tgz, _ = _cifar_python_tgz(tmp_path)
    mirror.put('cifar-10-python.tar.gz', tgz)
    mirror.faults['cifar-10-python.tar.gz'] = 'truncate'
    root = tmp_path / 'root'
    with pytest.raises(RuntimeError) as e: load_dataset('cifar10', root=root, download=mirror.url)
    msg = str(e.value)
    assert 'truncated' in msg and 'retry' in msg and f'{mirror.url}cifar-10-python.tar.gz' in msg
    assert f'got {len(tgz) // 2:,} of {len(tgz):,} bytes' in msg
    _nothing_left(root, 'cifar10')
    del mirror.faults['cifar-10-python.tar.gz']                              # the mirror recovers: a retry works
    assert len(load_dataset('cifar10', root=root, download=mirror.url)) == 20


def test_mirror_server_error_and_timeout(tmp_path, mirror, monkeypatch):
    tgz, _ = _cifar_python_tgz(tmp_path, n=2)
    mirror.put('cifar-10-python.tar.gz', tgz)
    root = tmp_path / 'root'
    mirror.faults['cifar-10-python.tar.gz'] = 503
    with pytest.raises(RuntimeError, match='HTTP 503'): prepare_dataset('cifar10', root=root, download=mirror.url)
    _nothing_left(root, 'cifar10')
    mirror.faults['cifar-10-python.tar.gz'] = 'hang'
    monkeypatch.setattr(D, '_TIMEOUT', 0.3)
    t0 = time.perf_counter()
    with pytest.raises(RuntimeError, match='timed out.*retry'): prepare_dataset('cifar10', root=root, download=mirror.url)
    assert time.perf_counter() - t0 < 5
    _nothing_left(root, 'cifar10')
    mirror.faults.clear()
    assert prepare_dataset('cifar10', root=root, download=mirror.url).name == 'cifar-10-batches-py'


def test_mirror_wrong_checksum_then_retry(tmp_path, mirror):
    tgz, _ = _cifar_python_tgz(tmp_path)
    root = tmp_path / 'root'
    mirror.put('cifar-10-python.tar.gz', tgz, digest='0' * 64)                  # the mirror's SHA256SUMS is wrong
    with pytest.raises(ValueError) as e: load_dataset('cifar10', root=root, download=mirror.url)
    assert 'checksum mismatch' in str(e.value) and 'SHA-256' in str(e.value) and mirror.url in str(e.value)
    _nothing_left(root, 'cifar10')
    mirror.put('cifar-10-python.tar.gz', tgz, listed=False)      # no SHA256SUMS line: the official MD5 applies
    with pytest.raises(ValueError, match='official MD5'): load_dataset('cifar10', root=root, download=mirror.url)
    _nothing_left(root, 'cifar10')
    mirror.put('cifar-10-python.tar.gz', tgz)                                   # fixed: the retry succeeds
    assert len(load_dataset('cifar10', root=root, download=mirror.url)) == 20


@pytest.mark.parametrize('kind', ['tar ..', 'tar absolute', 'tar symlink', 'tar hardlink', 'zip ..', 'zip symlink'])
def test_mirror_unsafe_archive_refused(tmp_path, mirror, kind):
    good = [('train/cat/0000.jpg', _jpeg_bytes((1, 2, 3)))]
    if kind.startswith('tar'):
        if kind == 'tar ..': bad = ('../../evil.txt', b'x')
        elif kind == 'tar absolute': bad = (str(tmp_path / 'evil.txt'), b'x')
        else:
            link = tarfile.TarInfo('train/cat/0001.jpg')
            link.type, link.linkname = ((tarfile.SYMTYPE, '../../../evil.txt') if kind == 'tar symlink'
                                        else (tarfile.LNKTYPE, 'train/cat/0000.jpg'))
            bad = (link, None)
        name, data = 'cifar10-jpg.tar.gz', _tgz_bytes(good + [bad])
        dataset = 'cifar10'
    else:
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, 'w') as z:
            z.writestr('img_align_celeba/000001.jpg', _jpeg_bytes((1, 2, 3), (178, 218)))
            if kind == 'zip ..': z.writestr('img_align_celeba/../../../evil.txt', b'x')
            else:
                info = zipfile.ZipInfo('img_align_celeba/000002.jpg'); info.external_attr = (0o120777 << 16)
                z.writestr(info, '../../../evil.txt')
        name, data, dataset = 'img_align_celeba.zip', buf.getvalue(), 'celeba'
    mirror.put(name, data)
    root = tmp_path / 'root'
    words = 'unsafe path' if '..' in kind or 'absolute' in kind else 'link'
    with pytest.raises(ValueError, match=words) as e: prepare_dataset(dataset, root=root, download=mirror.url)
    assert name in str(e.value) and 'refusing' in str(e.value)
    _nothing_left(root, dataset)
    assert not list(tmp_path.rglob('evil.txt'))


def test_mirror_damaged_archive_then_retry(tmp_path, mirror):
    tgz, _ = _cifar_python_tgz(tmp_path, n=200)          # big enough that a cut lands inside the compressed tar
    cut = tgz[:len(tgz) // 2]
    mirror.put('cifar-10-python.tar.gz', cut)            # a damaged copy whose SHA256SUMS matches it (mirrored badly)
    root = tmp_path / 'root'
    with pytest.raises(ValueError) as e: load_dataset('cifar10', root=root, download=mirror.url)
    msg = str(e.value)
    assert 'cifar-10-python.tar.gz is not a readable archive' in msg and 'fetch it again' in msg
    assert not isinstance(e.value.__cause__, ValueError)            # wraps the tarfile / EOFError / zlib error
    _nothing_left(root, 'cifar10')
    mirror.put('cifar-10-python.tar.gz', tgz)
    assert len(load_dataset('cifar10', root=root, download=mirror.url)) == 1000
    # a damaged .npz (cut short), and one without MNIST's arrays: clear errors too
    buf = io.BytesIO(); np.savez(buf, x_train=np.zeros((2, 28, 28), np.uint8)); npz = buf.getvalue()
    mirror.put('mnist.npz', npz[:len(npz) - 30])
    with pytest.raises(ValueError, match='mnist.npz is not a readable archive'):
        load_dataset('mnist', root=root, download=mirror.url)
    mirror.put('mnist.npz', npz)
    with pytest.raises(ValueError, match=r"lacks the arrays \['y_train', 'x_test', 'y_test'\]"):
        load_dataset('mnist', root=root, download=mirror.url)
    _nothing_left(root, 'mnist')


def test_damaged_source_archive_leaves_nothing(tmp_path):
    src = tmp_path / 'source'; src.mkdir()
    _tar_gz(src / 'cifar10-jpg.tar.gz', _cifar_jpg_folder(tmp_path / 'tree'))
    data = (src / 'cifar10-jpg.tar.gz').read_bytes()
    (src / 'cifar10-jpg.tar.gz').write_bytes(data[:len(data) * 2 // 3])
    with pytest.raises(ValueError, match='cifar10-jpg.tar.gz is not a readable archive'):
        prepare_dataset('cifar10', root=tmp_path / 'root', source=src)
    _nothing_left(tmp_path / 'root', 'cifar10')
    (src / 'cifar10-jpg.tar.gz').write_bytes(b'not a gzip file at all')
    with pytest.raises(ValueError, match='not a readable archive'): prepare_dataset('cifar10', root=tmp_path / 'root', source=src)
    _nothing_left(tmp_path / 'root', 'cifar10')


def test_mirror_without_the_archive(tmp_path, mirror):
    root = tmp_path / 'root'
    with pytest.raises(FileNotFoundError) as e: prepare_dataset('cifar10', root=root, download=mirror.url)
    msg = str(e.value)
    for a in D.ARCHIVES['cifar10']: assert f'{mirror.url}{a} (HTTP 404)' in msg
    assert 'SHA256SUMS' in msg
    _nothing_left(root, 'cifar10')
    with pytest.raises(FileNotFoundError, match='no archive'):                      # file:// with no such file
        prepare_dataset('cifar10', root=root, download=(tmp_path / 'nowhere').as_uri())


def test_mirror_loose_files_and_optional_404(tmp_path, mirror):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, 'w') as z:
        for i in (1, 2, 182638):
            z.writestr(f'img_align_celeba/{i:06d}.jpg', _jpeg_bytes((i % 255, 100, 100), (178, 218)))
    mirror.put('img_align_celeba.zip', buf.getvalue())
    mirror.put('list_eval_partition.txt', b'000001.jpg 0\n000002.jpg 0\n182638.jpg 2\n')
    mirror.put('identity_CelebA.txt', b'000001.jpg 7\n000002.jpg 9\n182638.jpg 3\n', digest='f' * 64)
    root = tmp_path / 'root'
    with pytest.raises(ValueError, match='checksum mismatch.*identity_CelebA.txt'):   # a listed loose file is checked
        load_dataset('celeba', root=root, download=mirror.url)
    _nothing_left(root, 'celeba')
    mirror.put('identity_CelebA.txt', b'000001.jpg 7\n000002.jpg 9\n182638.jpg 3\n')
    ds, msgs = _quiet_load('celeba', root=root, download=mirror.url, img_size=16)
    assert len(ds) == 2 and ds.labels.tolist() == [7, 9]                           # partition + identities used
    where = root / 'raw' / 'celeba'
    assert sorted(os.listdir(where)) == ['identity_CelebA.txt', 'img_align_celeba', 'list_eval_partition.txt']
    assert {'list_attr_celeba.txt', 'list_landmarks_align_celeba.txt', 'list_bbox_celeba.txt'} <= set(mirror.requests)
    assert any('no attributes' in m for m in msgs)                                 # the 404'd ones: reported missing


def test_mirror_without_checksum_warns(tmp_path, mirror):
    buf = io.BytesIO()
    np.savez(buf, x_train=np.zeros((3, 28, 28), np.uint8), y_train=np.arange(3), x_test=np.zeros((1, 28, 28), np.uint8),
             y_test=np.arange(1))
    (mirror.folder / 'mnist.npz').write_bytes(buf.getvalue())                      # no SHA256SUMS at all
    with pytest.warns(UserWarning, match='only its length was checked'):
        ds = load_dataset('mnist', root=tmp_path / 'root', download=mirror.url, img_size=16)
    assert len(ds) == 3


@needs_shared
def test_shared_folder_as_a_file_mirror(tmp_path):
    ds = load_dataset('mnist', root=tmp_path, download=SHARED.as_uri(), img_size=16, limit=8)
    assert len(ds) == 8 and ds.info['n_available'] == 60000
    assert sorted(os.listdir(tmp_path / 'raw' / 'mnist')) == ['mnist.npz']


# ---------------------------------------------------------------- a data folder with bad images trains

def _cifar_folder_with_bad_images(src):
    "CIFAR-10 JPEG layout: 10 classes x 3 good images in train, 1 in test, plus damaged and odd files."
    for c, cls in enumerate(CIFAR10_CLASSES):
        for split, n in (('train', 3), ('test', 1)):
            (src / split / cls).mkdir(parents=True)
            for i in range(n): (src / split / cls / f'{i:04d}.jpg').write_bytes(_jpeg_bytes((25 * c, 40 * i, 90)))
    good = (src / 'train' / 'cat' / '0000.jpg').read_bytes()
    (src / 'train' / 'cat' / '0100.jpg').write_bytes(good[:len(good) // 2])             # truncated JPEG
    (src / 'train' / 'dog' / '0100.jpg').write_bytes(b'')                                # empty
    (src / 'train' / 'frog' / '0100.jpg').write_bytes(_jpeg_bytes(90, mode='L'))          # grayscale
    (src / 'train' / 'ship' / '0100.jpg').write_bytes(_jpeg_bytes((9, 99, 199), (48, 40)))  # wrongly sized
    (src / 'test' / 'bird' / '0100.png').write_bytes(b'')                                 # empty, in test
    return src


def test_training_on_a_folder_with_bad_images(tmp_path):
    import json
    from mde.params import smoke_params
    from mde.trainer import train
    src = _cifar_folder_with_bad_images(tmp_path / 'src')
    repo = Path(__file__).resolve().parents[1]
    p = smoke_params({'data.name': 'cifar10', 'data.source': str(src), 'data.root': str(tmp_path / 'data'),
                      'data.img_size': 16, 'data.limit': None, 'data.eval_images': 16}, path=repo / 'params.yaml')
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always')
        train(p, tmp_path / 'out')
    msgs = [str(w.message) for w in caught]
    assert (tmp_path / 'out' / 'model.pt').is_file()
    run = json.loads((tmp_path / 'out' / 'run.json').read_text())
    tr, ev = run['train_data'], run['eval_data']
    assert tr['corrupt'] == ['cat/0100.jpg', 'dog/0100.jpg'] and tr['n_corrupt'] == 2 and tr['n'] == 32
    assert tr['converted'] == ['frog/0100.jpg'] and tr['resized'] == ['ship/0100.jpg']
    assert ev['corrupt'] == ['bird/0100.png'] and ev['n'] == 10 and ev['n_available'] == 11
    assert any('skipped 2 unreadable' in m and 'cat/0100.jpg' in m and 'dog/0100.jpg' in m for m in msgs)
    assert any('odd images kept' in m and 'frog/0100.jpg' in m and 'ship/0100.jpg' in m for m in msgs)


def test_a_split_with_no_usable_image_is_an_error(tmp_path):
    src = tmp_path / 'src'
    (src / 'train' / 'cat').mkdir(parents=True); (src / 'test' / 'dog').mkdir(parents=True)
    (src / 'train' / 'cat' / '0000.jpg').write_bytes(b'')
    (src / 'train' / 'cat' / '0001.jpg').write_bytes(b'\xff\xd8\xff garbage')
    with pytest.raises(ValueError, match=r"cifar10/train: no usable image .*all 2 image file\(s\).*cat/0000.jpg"):
        load_dataset('cifar10', root=tmp_path / 'root', source=src)
    with pytest.raises(ValueError, match='cifar10/test: no usable image .*no image file'):
        load_dataset('cifar10', 'test', root=tmp_path / 'root', source=src)
    assert not (tmp_path / 'root' / 'cache').exists() or not list((tmp_path / 'root' / 'cache').iterdir())


# ---------------------------------------------------------------- the shared real data

def _scratch_root(tmp_path_factory):
    shm = Path('/dev/shm')   # extracting ~80k small files is far faster on tmpfs than on a busy disk
    if shm.is_dir() and os.access(shm, os.W_OK) and shutil.disk_usage(shm).free > 2 ** 30:
        return Path(tempfile.mkdtemp(prefix='mde-test-data-', dir=shm))
    return tmp_path_factory.mktemp('data')


@pytest.fixture(scope='session')
def shared_root(tmp_path_factory):
    "A root shared by the real-data tests: each archive is extracted into it once per session."
    if SHARED is None: pytest.skip('../shared/data not here')
    root = _scratch_root(tmp_path_factory)
    yield root
    shutil.rmtree(root, ignore_errors=True)


@needs_shared
def test_shared_data_dir():
    assert SHARED.is_dir() and (SHARED / 'mnist.npz').is_file()


@needs_shared
def test_mnist_npz(shared_root):
    ds = load_dataset('mnist', root=shared_root, source=SHARED, limit=200)
    assert ds.images.shape == (200, 3, 96, 96) and ds.info['n_available'] == 60000
    assert ds.info['source'] == str(SHARED) and not (shared_root / 'raw' / 'mnist').exists()   # read in place
    with np.load(SHARED / 'mnist.npz') as z: x, y = z['x_train'], z['y_train']
    idx = (np.arange(200) * 60000) // 200
    assert ds.labels.tolist() == y[idx].tolist() and len(set(ds.labels.tolist())) == 10
    small = load_dataset('mnist', root=shared_root, source=SHARED, limit=200, img_size=28)
    assert torch.equal(small.images[:, 0], torch.from_numpy(x[idx]))
    down = torch.nn.functional.avg_pool2d(ds.images[:8, :1].float(), 3, ceil_mode=True)   # 96 -> 32
    up = torch.nn.functional.interpolate(small.images[:8, :1].float(), size=32, mode='bilinear')
    assert (down - up).abs().mean() < 12                            # the 96x96 images are the upscaled digits
    test = load_dataset('mnist', 'test', root=shared_root, source=SHARED, limit=50)
    assert len(test) == 50 and test.info['n_available'] == 10000


@needs_shared
def test_cifar10_archive(shared_root):
    ds = load_dataset('cifar10', root=shared_root, source=SHARED, limit=100)
    assert ds.images.shape == (100, 3, 32, 32) and ds.info['n_available'] == 50000
    assert ds.info['classes'] == list(CIFAR10_CLASSES)
    assert torch.bincount(ds.labels, minlength=10).tolist() == [10] * 10
    assert ds.info['source'] == str(shared_root / 'raw' / 'cifar10') and ds.info['n_corrupt'] == 0
    x = ds[0]['image']
    assert x.dtype == torch.float32 and 0 <= x.min() and x.max() <= 1 and x.std() > 0.05
    test = load_dataset('cifar10', 'test', root=shared_root, source=SHARED, limit=20)
    assert len(test) == 20 and test.info['n_available'] == 10000
    again = load_dataset('cifar10', root=shared_root, source=SHARED, limit=100)
    assert again.info['from_cache'] and torch.equal(again.images, ds.images)


@pytest.fixture(scope='session')
def celeba_archive_alone(tmp_path_factory):
    "(source, root): a folder holding only the shared CelebA archive (and SHA256SUMS), and a fresh root extracted from it."
    if SHARED is None: pytest.skip('../shared/data not here')
    alone = tmp_path_factory.mktemp('celeba-alone')
    for f in ('celeba-subset.tar.gz', 'SHA256SUMS'): (alone / f).symlink_to(SHARED / f)
    root = _scratch_root(tmp_path_factory)
    yield alone, root
    shutil.rmtree(root, ignore_errors=True)


@needs_shared
def test_celeba_subset(celeba_archive_alone):
    "The archive alone (no landmark file beside it): attributes, identities, no landmarks."
    alone, root = celeba_archive_alone
    ds, msgs = _quiet_load('celeba', root=root, source=alone, limit=64)
    assert any('no landmarks' in m for m in msgs) and any('158211 of 162770 images listed' in m for m in msgs)
    assert ds.images.shape == (64, 3, 96, 96)
    assert ds.info['n_listed'] == 162770 and ds.info['n_available'] == 4559
    assert ds.info['n_missing_files'] == 162770 - 4559
    item = ds[0]
    assert item['attrs'].shape == (40,) and set(ds.extras['attrs'].unique().tolist()) == {0.0, 1.0}
    assert 'landmarks' not in item and any('landmarks' in m for m in ds.info['missing'])
    assert 'landmarks' not in ds.info and 'bad_rows' not in ds.info
    assert ds.info['attr_names'][:2] == ['5_o_Clock_Shadow', 'Arched_Eyebrows'] and len(ds.info['attr_names']) == 40
    assert (ds.extras['identity'] >= 1).all() and torch.equal(ds.labels, ds.extras['identity'])
    face = ds.images.float().mean(0)                   # the mean face: the centre is brighter than the corners
    assert face[:, 40:60, 35:60].mean() > face[:, :10, :10].mean() + 20
    test, msgs = _quiet_load('celeba', 'test', root=root, source=alone, limit=16)
    assert len(test) == 16 and 'attrs' not in test[0] and any('no attributes' in m for m in msgs)
    assert test.info['n_available'] == 4640
    assert not (root / 'raw' / 'celeba' / 'celeba' / 'list_landmarks_align_celeba_mtcnn.txt').exists()


@needs_shared
def test_celeba_subset_detected_landmarks(shared_root):
    "The shared folder: the archive and, beside it, MTCNN's detected landmarks for all but 7 of its faces."
    lm_name = 'list_landmarks_align_celeba_mtcnn.txt'
    ds, msgs = _quiet_load('celeba', root=shared_root, source=SHARED, limit=256)
    where = Path(ds.info['source'])
    assert where == shared_root / 'raw' / 'celeba' / 'celeba'
    assert (where / lm_name).read_bytes() == (SHARED / lm_name).read_bytes()
    assert ds.info['landmarks'] == {'file': lm_name, 'kind': 'detected'}
    assert not any('no landmarks' in m for m in msgs) and 'bad_rows' not in ds.info
    rows, _ = D._read_table(SHARED / lm_name)
    on_disk = set(os.listdir(where / 'img_align_celeba'))
    assert set(rows) <= on_disk and len(on_disk) == 9199 and len(on_disk - set(rows)) <= 7   # all but at most 7 faces
    lm, size = ds.extras['landmarks'], ds.images.shape[-1]
    assert lm.shape == (256, 10) and ds.info['n_corrupt'] == 0
    # NaN exactly for the loaded faces the file lacks (at most 7): the others hold the file's points, in crop pixels
    part, _ = D._read_table(where / 'list_eval_partition.txt')
    names = [n for n, v in part.items() if v.strip() == '0' and n in on_disk]
    names = [names[i] for i in (np.arange(256) * len(names)) // 256]
    absent = torch.tensor([n not in rows for n in names])
    assert len(names) == 256 and absent.sum() <= 7 and torch.equal(lm.isnan().any(1), absent)
    assert torch.equal(lm.isnan().all(1), absent)
    have = ~absent
    expect = celeba_to_crop(torch.tensor([[float(v) for v in rows[n].split()] for n in names if n in rows]), size)
    assert torch.allclose(lm[have], expect)
    assert ((lm[have] >= 0) & (lm[have] <= size)).all()                                 # inside the image
    mean = lm[have].mean(0)
    assert mean[0] < mean[2] and mean[6] < mean[8]                          # left eye / mouth x < right eye / mouth x
    assert mean[1] < mean[5] < mean[7]                                                    # eyes above nose above mouth
    if absent.any(): assert any(f'absent from {lm_name}' in m for m in ds.info['missing'])
    test, msgs = _quiet_load('celeba', 'test', root=shared_root, source=SHARED, limit=32)
    assert test.info['landmarks']['kind'] == 'detected' and test.extras['landmarks'].shape == (32, 10)
    assert (~test.extras['landmarks'].isnan().any(1)).sum() >= 32 - 7


@needs_shared
def test_flowers102(shared_root):
    ds = load_dataset('flowers102', root=shared_root, source=SHARED, limit=40)
    assert ds.images.shape == (40, 3, 96, 96) and ds.info['n_listed'] == 7169 and ds.info['n_missing_files'] == 0
    assert 0 <= ds.labels.min() and ds.labels.max() <= 101 and len(set(ds.labels.tolist())) > 10
    test = load_dataset('flowers102', 'test', root=shared_root, source=SHARED, limit=20)
    valid = load_dataset('flowers102', 'valid', root=shared_root, source=SHARED, limit=20)
    assert test.info['n_listed'] == 1020 and torch.equal(test.images, valid.images)
    from scipy.io import loadmat
    data = next((shared_root / 'raw' / 'flowers102').rglob('setid.mat')).parent
    ids = np.sort(loadmat(data / 'setid.mat', squeeze_me=True)['valid'])[(np.arange(20) * 1020) // 20]
    labels = loadmat(data / 'imagelabels.mat', squeeze_me=True)['labels'][ids - 1] - 1
    assert test.labels.tolist() == labels.tolist()


# --- your own images: data.name 'folder' -------------------------------------------------------------------------

def _own_images(folder, names, seed=0):
    g = np.random.default_rng(seed)
    for n in names:
        f = folder / n
        f.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(g.integers(0, 256, (20 + len(n), 33, 3), dtype=np.uint8)).save(f)


def test_folder_split_is_stable_when_images_are_added(tmp_path):
    src = tmp_path / 'photos'
    _own_images(src, [f'a/{i:03d}.png' for i in range(60)])
    before = load_dataset('folder', 'test', root=tmp_path / 'data', img_size=16, source=src, test_share=0.2)
    _own_images(src, [f'b/{i:03d}.jpg' for i in range(60)], seed=1)
    after = load_dataset('folder', 'test', root=tmp_path / 'data', img_size=16, source=src, test_share=0.2)
    train = load_dataset('folder', 'train', root=tmp_path / 'data', img_size=16, source=src, test_share=0.2)
    assert 0 < len(before) < 60 and len(after) + len(train) == 120
    # the first folder's test images are the same ones (in the same order) after adding the second folder
    assert torch.equal(after.images[:len(before)], before.images)
    assert after.info['split_rule'].startswith("by a hash of each file's relative path: 0.2")
    with pytest.raises(ValueError, match=r'test_share must be a number in \(0, 1\)'):
        load_dataset('folder', 'test', root=tmp_path / 'data', source=src, test_share=1.5)


def test_folder_needs_a_source_and_images(tmp_path):
    with pytest.raises(FileNotFoundError, match='set data.source to their folder'):
        load_dataset('folder', 'train', root=tmp_path / 'data')
    (tmp_path / 'empty').mkdir()
    with pytest.raises(FileNotFoundError, match='no image file'):
        load_dataset('folder', 'train', root=tmp_path / 'data', source=tmp_path / 'empty')
    with pytest.raises(ValueError, match="data.name 'folder' trains on your own images"):
        load_params(PARAMS, {'data.name': 'folder'})


def test_trainer_trains_on_your_own_folder(tmp_path):
    src = tmp_path / 'photos'
    _own_images(src, [f'{i:03d}.png' for i in range(48)])
    (src / 'broken.jpg').write_bytes(b'nope')
    sets = ['data.name=folder', f'data.source={src}', f'data.root={tmp_path}/data', 'data.img_size=16',
            'data.eval_images=4', 'data.test_share=0.1', 'model.widths=[8,16]', 'model.d_widths=[8,16]',
            'model.fc_dim=16', 'model.convs_per_block=1', 'train.steps=2', 'train.batch_size=4', 'train.ckpt_every=2',
            'train.eval_every=2', 'train.sample_every=2', 'train.log_every=1']
    r = subprocess.run([sys.executable, '-m', 'mde.trainer', '--run', 'REC10', '--out', str(tmp_path / 'run'),
                        '--no-progress', *[a for s in sets for a in ('--set', s)]], capture_output=True, text=True,
                       cwd=ROOT, env={**os.environ, 'OMP_NUM_THREADS': '1'}, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    assert 'broken.jpg' in r.stderr                                    # skipped and named
    run = json.loads((tmp_path / 'run' / 'run.json').read_text())
    assert run['train_data']['name'] == 'folder' and run['train_data']['n'] + run['eval_data']['n_available'] == 48
    assert 'your own images' in (tmp_path / 'run' / 'README.md').read_text()


def test_folder_data_what_needs_labels_says_so_and_the_rest_runs(tmp_path):
    "Your own folder has no labels: the classifier and probing stop with a sentence that says so; completion metrics run."
    from mde.evaluation import evaluate
    from mde.probing import probe_targets
    from mde.classifier import build_classifier
    from mde.studies import make_scorer
    src = tmp_path / 'photos'
    _own_images(src, [f'{i:03d}.png' for i in range(20)])
    ds = load_dataset('folder', 'test', root=tmp_path / 'data', img_size=16, source=src, test_share=0.5)
    p = load_params(PARAMS, {'data.name': 'folder', 'data.source': str(src), 'data.root': str(tmp_path / 'data'),
                             'data.img_size': 16})
    with pytest.raises(ValueError, match="'folder' has no labels.*learns from labels"):
        build_classifier(p, tmp_path / 'clf', progress=False)
    with pytest.raises(ValueError, match='none of the labels a probe needs.*no labels known for data set .folder.'):
        probe_targets(ds)
    scorer, why = make_scorer(ds.images, tmp_path / 'clf' / 'classifier.pt')
    assert scorer is None and 'no IS/FID/KID columns' in why
    from mde.inference import Completer
    from mde.build import build_networks
    p2 = load_params(PARAMS, {'data.img_size': 16, 'model.widths': [8, 16], 'model.d_widths': [8, 16],
                              'model.fc_dim': 16, 'model.convs_per_block': 1})
    m = Completer(p2, build_networks(p2))
    rows = evaluate(m, ds.images, ['REC@0.1'], progress=False)
    assert rows[0]['psnr'] > 0 and 'ssim' in rows[0]


def _hand_written_batches(n, b, steps, g):
    "The loop `minibatches` replaced in the probes (mde.probing) and the classifier's training."
    perm, pos, out = torch.randperm(n, generator=g), 0, []
    for _ in range(steps):
        if pos + b > n: perm, pos = torch.randperm(n, generator=g), 0
        idx = perm[pos:pos + b]; pos += b
        out.append(idx)
        torch.rand(2, generator=g)                       # another use of the generator between batches (augmentation)
    return out


@pytest.mark.parametrize('n, b', [(10, 3), (12, 4), (5, 5), (7, 1), (3, 8), (64, 16)])
def test_minibatches_equal_the_hand_written_loop(n, b):
    g1, g2 = torch.Generator().manual_seed(n + b), torch.Generator().manual_seed(n + b)
    want = _hand_written_batches(n, b, 25, g1)
    batches, got = minibatches(n, b, g2), []
    for _ in range(25):
        got.append(next(batches))
        torch.rand(2, generator=g2)
    assert all(torch.equal(x, y) for x, y in zip(got, want)) and torch.equal(g1.get_state(), g2.get_state())


def test_minibatches_cover_an_epoch_and_drop_the_tail():
    batches = minibatches(10, 3, torch.Generator().manual_seed(0))
    first = torch.cat([next(batches) for _ in range(3)])
    assert len(first) == 9 == len(first.unique())                       # one epoch: 3 disjoint batches, one item left out
    g = torch.Generator().manual_seed(1)
    state = g.get_state(); minibatches(10, 3, g)
    assert not torch.equal(state, g.get_state())                         # the first permutation is drawn at the call
