"""`mde-complete` (`python -m mde.complete`): your own image files completed at their own size, the mask conventions,
and a user's mistakes as one line with the right exit status."""
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image

from mde.build import build
from mde.complete import main, read_image, read_mask
from mde.inference import save_model
from mde.params import smoke_params

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope='module')
def files(tmp_path_factory):
    "A tiny REC model, three photos of different sizes and modes (RGB, grayscale, RGBA), a mask folder, a corrupt file."
    tmp = tmp_path_factory.mktemp('complete')
    s = build(smoke_params({'mask': 'rec', 'S': 0.25}))
    save_model(tmp / 'model.pt', s.params, {k: s.net(k) for k in s.nets}, step=6)
    g = torch.Generator().manual_seed(0)
    rnd = lambda *shape: torch.randint(0, 256, shape, dtype=torch.uint8, generator=g).numpy()
    (tmp / 'photos' / 'sub').mkdir(parents=True)
    Image.fromarray(rnd(37, 53, 3)).save(tmp / 'photos' / 'wide.png')
    Image.fromarray(rnd(64, 20)).save(tmp / 'photos' / 'sub' / 'gray.png')
    Image.fromarray(rnd(25, 25, 4), 'RGBA').save(tmp / 'photos' / 'rgba.png')
    Image.fromarray(rnd(40, 40, 3)).save(tmp / 'photos' / 'face.jpg', quality=95)
    (tmp / 'masks' / 'sub').mkdir(parents=True)
    for name, (h, w) in {'wide': (37, 53), 'sub/gray': (32, 10), 'rgba': (25, 25)}.items():   # gray's mask: half size
        m = torch.zeros(h, w, dtype=torch.uint8); m[h // 4:h // 2, w // 4:w // 2] = 255
        Image.fromarray(m.numpy()).save(tmp / 'masks' / f'{name}.png')
    (tmp / 'bad').mkdir()
    (tmp / 'bad' / 'corrupt.png').write_bytes(b'\x89PNG\r\n\x1a\n truncated')
    Image.fromarray(rnd(20, 20, 3)).save(tmp / 'bad' / 'ok.png')
    (tmp / 'empty').mkdir()
    return tmp


def cli(*args, cwd=ROOT):
    env = {**os.environ, 'OMP_NUM_THREADS': '1'}
    return subprocess.run([sys.executable, '-m', 'mde.complete', *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, env=env, timeout=300)


def test_outputs_keep_the_inputs_size_and_pixels(files):
    out = files / 'out_folder'
    r = cli(files / 'model.pt', files / 'photos', '--out', out, '--mask', files / 'masks', '--no-progress')
    assert r.returncode == 1, r.stderr          # face.jpg has no mask in the folder: named, counted, the others done
    assert 'skipped' in r.stderr and 'face.jpg' in r.stderr and 'no mask face.png' in r.stderr
    assert 'Traceback' not in r.stderr
    assert 'sub/gray.png' in r.stderr and 'resized with nearest neighbour' in r.stderr   # the half-size mask, said so
    for name in ('wide', 'sub/gray', 'rgba'):
        src, got = read_image(files / 'photos' / f'{name}.png'), read_image(out / f'{name}.png')
        assert got.shape == src.shape                                         # the input's own size, as RGB
        keep, _ = read_mask(files / 'masks' / f'{name}.png', src.shape[-2:])
        assert torch.equal(got[keep.bool()], src[keep.bool()])               # kept pixels: the input's own
        assert (got != src)[~keep.bool()].float().mean() > 0.5                # the hole: the model's
    assert not (out / 'face.png').exists()


def test_rgb_mask_hides_each_channel_where_it_is_white(files, tmp_path):
    m = torch.zeros(37, 53, 3, dtype=torch.uint8); m[:18, :, 0] = 255; m[18:, :, 1] = 255
    Image.fromarray(m.numpy()).save(tmp_path / 'rgb.png')
    assert main([str(files / 'model.pt'), str(files / 'photos' / 'wide.png'), '--out', str(tmp_path / 'o'),
                 '--mask', str(tmp_path / 'rgb.png'), '--no-progress']) == 0
    src, got = read_image(files / 'photos' / 'wide.png'), read_image(tmp_path / 'o' / 'wide.png')
    assert torch.equal(got[2], src[2]) and torch.equal(got[0, 18:], src[0, 18:]) and torch.equal(got[1, :18], src[1, :18])
    assert not torch.equal(got[0, :18], src[0, :18]) and not torch.equal(got[1, 18:], src[1, 18:])


def test_scenarios_samples_and_panel(files, tmp_path):
    args = [str(files / 'model.pt'), str(files / 'photos' / 'face.jpg'), '--out', str(tmp_path / 'o'), '--no-progress']
    assert main([*args, '--scenario', 'RE@0.25', '--samples', '2', '--panel']) == 0
    a, b = (read_image(tmp_path / 'o' / f'face_sample{k}.png') for k in (1, 2))
    src = read_image(files / 'photos' / 'face.jpg')
    assert a.shape == src.shape and not torch.equal(a, b)                     # two masks, two completions
    p = read_image(tmp_path / 'o' / 'face_panel.png')
    assert p.shape == (3, 2 * 40 + 4, 3 * 40 + 8)                             # a row per sample: input | completion | original
    assert main([*args, '--scenario', 'RE@0.25', '--samples', '2']) == 0    # the same seed: the same masks
    assert torch.equal(read_image(tmp_path / 'o' / 'face_sample1.png'), a)
    assert main(args) == 0                                                   # default: the model's own kind (REC)
    assert (tmp_path / 'o' / 'face.png').is_file()


@pytest.mark.parametrize('args, said', [
    (['{model}', '{empty}', '--out', '{out}'], 'no image'),
    (['{photo}', '{photo}', '--out', '{out}'], 'not a readable mde model file'),                 # a PNG given as the model
    (['{model}', '{photo}', '--out', '{out}', '--scenario', 'XY@2'], 'unknown test scenario'),
    (['{model}', '{photo}', '--out', '{out}', '--mask', '{nothing}'], 'no mask file or folder'),
    (['{model}', '{nothing}', '--out', '{out}'], 'no image file or folder'),
    (['{model}', '{photo}', '--out', '{out}', '--samples', '0'], 'must be at least 1'),
])
def test_mistakes_stop_with_one_line_and_status_2(files, tmp_path, args, said):
    where = {'model': files / 'model.pt', 'empty': files / 'empty', 'photo': files / 'photos' / 'wide.png',
             'out': tmp_path / 'o', 'nothing': files / 'nothing.png'}
    r = cli(*[a.format(**where) for a in args])
    assert r.returncode == 2 and said in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and 'Traceback' not in r.stderr
    assert not (tmp_path / 'o').exists()


def test_corrupt_file_is_skipped_named_and_counted(files, tmp_path):
    r = cli(files / 'model.pt', files / 'bad', '--out', tmp_path / 'o', '--scenario', 'RE@0.5')
    assert r.returncode == 1 and 'skipped' in r.stderr and 'corrupt.png' in r.stderr and 'not a readable image' in r.stderr
    assert '1 image(s) completed' in r.stderr and '1 skipped' in r.stderr and 'Traceback' not in r.stderr
    assert (tmp_path / 'o' / 'ok.png').is_file()


def test_a_mask_that_hides_nothing_is_refused_for_that_image(files, tmp_path):
    Image.fromarray(torch.zeros(37, 53, dtype=torch.uint8).numpy()).save(tmp_path / 'black.png')
    r = cli(files / 'model.pt', files / 'photos' / 'wide.png', '--out', tmp_path / 'o', '--mask', tmp_path / 'black.png')
    assert r.returncode == 1 and 'hides nothing' in r.stderr and 'white marks the region to fill' in r.stderr


def test_help_states_the_mask_convention():
    r = cli('--help')
    assert r.returncode == 0 and 'WHITE marks the region to fill' in r.stdout and 'nearest neighbour' in r.stdout
