"""Tests of mde.provenance: the code hashes (function_hash, code_fingerprint), the commit of the mde code (git_commit),
the device's name and the environment recorded next to a result."""
import importlib
import json
import os
import platform
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import mde
import mde.data as D
from mde.data import DATASETS
from mde.provenance import code_fingerprint, device_name, environment, function_hash, git_commit, write_provenance

GIT_ENV = {'GIT_AUTHOR_NAME': 't', 'GIT_AUTHOR_EMAIL': 't@t', 'GIT_COMMITTER_NAME': 't', 'GIT_COMMITTER_EMAIL': 't@t'}

MODULE = '''
LIMIT = 3
NAMES = {'b', 'a'}
lower_case = 1

def helper(x): return x + LIMIT

def unused(x): return x

def top(x):
    f = lambda y: helper(y)          # a helper named only inside a lambda
    return f(x) + lower_case

def alone(x): return x
'''


def _module(tmp_path, monkeypatch, text, name='fh_mod'):
    (tmp_path / f'{name}.py').write_text(text)
    monkeypatch.syspath_prepend(str(tmp_path))
    sys.modules.pop(name, None)
    importlib.invalidate_caches()
    return importlib.import_module(name)


def test_function_hash_follows_the_helpers_and_constants_it_names(tmp_path, monkeypatch):
    m = _module(tmp_path, monkeypatch, MODULE)
    h, a = function_hash(m.top), function_hash(m.alone)
    assert re.fullmatch('[0-9a-f]{10}', h) and h == function_hash(m.top) and h != a
    monkeypatch.setattr(m, 'LIMIT', 4)                    # a constant its helper uses, named in a lambda
    assert function_hash(m.top) != h
    monkeypatch.setattr(m, 'LIMIT', 3)
    assert function_hash(m.top) == h
    monkeypatch.setattr(m, 'lower_case', 2)               # not an UPPER_CASE constant: not part of the hash
    monkeypatch.setattr(m, 'unused', lambda x: x)         # a function it does not name
    assert function_hash(m.top) == h
    m2 = _module(tmp_path, monkeypatch, MODULE.replace('x + LIMIT', 'x - LIMIT'), 'fh_mod2')
    assert function_hash(m2.top) != h and function_hash(m2.alone) == a     # the helper's source changed
    m3 = _module(tmp_path, monkeypatch, MODULE.replace("{'b', 'a'}", "{'a', 'b'}"), 'fh_mod3')
    assert function_hash(m3.top) == h                     # a set hashes the same in any order


def test_function_hash_of_code_without_a_source_file():
    ns = {}
    exec('def f(x): return x + 1', ns)
    h = function_hash(ns['f'])
    exec('def f(x): return x + 2', ns)
    assert re.fullmatch('[0-9a-f]{10}', h) and function_hash(ns['f']) != h


def test_code_hash_is_stable_and_follows_helpers(monkeypatch):
    "The data caches' key: each builder's hash follows the constants and helpers it uses, and only those."
    h = {n: function_hash(getattr(D, f'_build_{n}')) for n in DATASETS}
    assert h == {n: function_hash(getattr(D, f'_build_{n}')) for n in DATASETS} and len(set(h.values())) == len(DATASETS)
    monkeypatch.setattr(D, 'CELEBA_CROP', (40, 25, 128))     # a constant it uses
    assert function_hash(D._build_celeba) != h['celeba'] and function_hash(D._build_cifar10) == h['cifar10']
    monkeypatch.setattr(D, '_resize_grey', lambda x, size: None)                      # a helper it uses
    assert function_hash(D._build_digits) != h['digits'] and function_hash(D._build_mnist) != h['mnist']
    assert function_hash(D._build_flowers102) == h['flowers102']


def test_code_fingerprint_is_computed_once_from_the_package_files(tmp_path, monkeypatch):
    f = code_fingerprint()
    assert re.fullmatch('[0-9a-f]{16}', f) and code_fingerprint() is f
    pkg = tmp_path / 'copy'
    pkg.mkdir()
    for p in sorted(Path(mde.__file__).parent.glob('*.py')):
        (pkg / p.name).write_bytes(p.read_bytes())
    monkeypatch.setattr(mde, '__file__', str(pkg / '__init__.py'))
    code_fingerprint.cache_clear()
    try:
        assert code_fingerprint() == f                   # the same files: the same fingerprint
        code_fingerprint.cache_clear()
        (pkg / 'masks.py').write_bytes((pkg / 'masks.py').read_bytes() + b'\n# changed\n')
        assert code_fingerprint() != f                   # any file of the package changes it
    finally:
        monkeypatch.undo()
        code_fingerprint.cache_clear()
    assert code_fingerprint() == f


def _git(cwd, *args):
    return subprocess.run(['git', *args], cwd=cwd, check=True, capture_output=True, text=True,
                          env={**os.environ, **GIT_ENV}).stdout.strip()


def test_git_commit_is_the_last_commit_of_the_package_not_head(tmp_path, monkeypatch):
    monkeypatch.setenv('GIT_CEILING_DIRECTORIES', str(tmp_path))
    pkg = tmp_path / 'repo' / 'mde'
    pkg.mkdir(parents=True)
    (pkg / '__init__.py').write_text('__version__ = "0"\n')
    monkeypatch.setattr(mde, '__file__', str(pkg / '__init__.py'))
    assert git_commit() is None                                          # outside git
    repo = tmp_path / 'repo'
    _git(repo, 'init', '-q'); _git(repo, 'add', '-A'); _git(repo, 'commit', '-qm', 'code')
    code = _git(repo, 'rev-parse', 'HEAD')
    assert git_commit() == code
    (repo / 'README.md').write_text('words\n')
    _git(repo, 'add', '-A'); _git(repo, 'commit', '-qm', 'readme')
    assert _git(repo, 'rev-parse', 'HEAD') != code and git_commit() == code   # a commit outside the code: unchanged
    (repo / 'other.txt').write_text('untracked, outside the package\n')
    assert git_commit() == code
    (pkg / '__init__.py').write_text('__version__ = "1"\n')
    assert git_commit() == code + '+dirty'                               # uncommitted changes to the code


def test_device_name_and_environment():
    assert device_name('cpu') == f"cpu ({platform.processor() or platform.machine()})"
    assert device_name(torch.device('cpu')).startswith('cpu (')
    env = environment()
    assert set(env) == {'code', 'git_commit', 'mde_version', 'torch_version', 'python', 'device'}
    assert env['code'] == code_fingerprint() and env['mde_version'] == mde.__version__
    assert env['torch_version'] == torch.__version__ and env['python'] == platform.python_version()
    assert env['device'].startswith('cpu (') and env['git_commit'] == git_commit()


@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a CUDA GPU')
def test_device_name_of_a_gpu():
    assert device_name('cuda:0') == f'cuda:0 ({torch.cuda.get_device_name(0)})'


def test_write_provenance_writes_the_bytes_the_studies_wrote_by_hand(tmp_path):
    prov = {'params': tmp_path / 'params.yaml', 'study': 'x', 'dtype': torch.float32, 'n': [1, 2.5, None], **environment()}
    path = write_provenance(tmp_path, prov)
    assert path == tmp_path / 'provenance.json'
    assert path.read_bytes() == json.dumps(prov, indent=2, default=str).encode()
    assert write_provenance(str(tmp_path), {'a': 1}).read_text() == '{\n  "a": 1\n}'     # a str folder too; overwrites
