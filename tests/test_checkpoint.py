"""Tests of mde.checkpoint: the full training state written atomically with the previous one kept, checked when read
(digest, kind, format), the newest intact one found, and restored only into the same model; on a tiny model built
from smoke parameters, without training."""
import errno
import os
import random
import warnings

import numpy as np
import pytest
import torch
from helpers import assert_same_weights

import mde.checkpoint as C
from mde.build import build
from mde.checkpoint import (CKPT_FORMAT, CKPT_KIND, CheckpointWriteError, find_checkpoint, load_checkpoint,
                            previous_path, read_checkpoint, save_checkpoint, state_digest)
from mde.params import smoke_params
from mde.provenance import code_fingerprint


@pytest.fixture(scope='module')
def setup(tmp_path_factory):
    """A smoke-size MDE after one optimizer update (so the optimizer and scheduler have a state to restore); built once:
    a test that changes it restores it by loading a checkpoint."""
    s = build(smoke_params({'data.root': str(tmp_path_factory.mktemp('data'))}))
    G, opt = s.net('G'), s.opts['G']
    G(torch.rand(2, 3, 16, 16)).mean().backward()
    opt.step(); opt.zero_grad(); s.scheds['G'].step()
    return s


def nets(s): return {n: {k: v.clone() for k, v in s.net(n).state_dict().items()} for n in s.nets}


def test_state_digest_sees_every_bit_but_not_key_order():
    s0 = {'w': torch.arange(6.).reshape(2, 3), 'step': 3, 'rows': [(1, 0.5)], 'e': torch.zeros(0)}
    s1 = {'e': torch.zeros(0), 'rows': [(1, 0.5)], 'step': 3, 'w': torch.arange(6.).reshape(2, 3)}
    assert state_digest(s0) == state_digest(s1) and len(state_digest(s0)) == 64
    s1['w'].view(torch.int32)[0, 0] ^= 1                                  # one flipped bit
    assert state_digest(s0) != state_digest(s1)
    same_bytes = {**s0, 'w': torch.arange(6.).reshape(3, 2)}              # same bytes, other shape
    assert state_digest(same_bytes) != state_digest(s0)
    assert state_digest({**s0, 'w': s0['w'].double()}) != state_digest(s0)   # other dtype
    assert state_digest({**s0, 'step': '3'}) != state_digest(s0)         # 3 is not '3'
    assert state_digest({**s0, 'w': s0['w'].t().contiguous().t()}) == state_digest(s0)   # the layout does not matter


def test_random_states_round_trip():
    st = C._rng_state()
    a = (torch.rand(3), np.random.rand(3), random.random())
    C._set_rng_state(st)
    b = (torch.rand(3), np.random.rand(3), random.random())
    assert torch.equal(a[0], b[0]) and (a[1] == b[1]).all() and a[2] == b[2]


def test_gpu_random_states_restored_for_the_gpus_present():
    got = []
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter('always')
        C._set_cuda_rng(['s0', 's1', 's2', 's3'], count=2, set_one=lambda s, i: got.append((i, s)))
        C._set_cuda_rng(['s0'], count=2, set_one=lambda s, i: got.append((i, s)))
        C._set_cuda_rng(['s0', 's1'], count=2, set_one=lambda s, i: got.append((i, s)))
    assert got == [(0, 's0'), (1, 's1'), (0, 's0'), (0, 's0'), (1, 's1')]
    assert len(w) == 2 and 'holds random states of 4 GPU(s), this machine has 2: restored 2' in str(w[0].message)
    assert 'of 1 GPU(s), this machine has 2: restored 1' in str(w[1].message)


def test_save_and_load_restore_the_whole_training_state(setup, tmp_path):
    f = tmp_path / 'ck' / 'last.ckpt'
    before, opt_before = nets(setup), setup.opts['G'].state_dict()
    lr = setup.scheds['G'].get_last_lr()
    assert save_checkpoint(setup, 5, f, log_state={'rows': {'a': [(1, 2.0)]}, 'summary': {}}) == f
    st = read_checkpoint(f)
    assert st['step'] == 5 and st['log']['rows'] == {'a': [(1, 2.0)]} and st['code'] == code_fingerprint()
    assert st['params'] == setup.params and not list(f.parent.glob('*.tmp'))
    r = torch.rand(4)                                        # the random numbers after the save ...
    with torch.no_grad():
        for p in setup.net('G').parameters(): p.add_(1.0)
    setup.opts['G'].state.clear()
    setup.scheds['G'].step(); setup.scheds['G'].step()
    assert load_checkpoint(setup, f) == 5
    assert_same_weights(before, nets(setup))
    after = setup.opts['G'].state_dict()
    assert after['state'].keys() == opt_before['state'].keys()
    assert all(torch.equal(after['state'][k]['exp_avg'], opt_before['state'][k]['exp_avg']) for k in after['state'])
    assert setup.scheds['G'].get_last_lr() == lr
    assert torch.equal(torch.rand(4), r)                     # ... come again: the generators were restored


def test_the_previous_checkpoint_is_kept(setup, tmp_path):
    f = tmp_path / 'last.ckpt'
    assert previous_path(f) == tmp_path / 'last.prev.ckpt'
    save_checkpoint(setup, 3, f)
    save_checkpoint(setup, 6, f)
    assert read_checkpoint(f)['step'] == 6 and read_checkpoint(previous_path(f))['step'] == 3
    save_checkpoint(setup, 9, f, keep_previous=False)
    assert read_checkpoint(f)['step'] == 9 and read_checkpoint(previous_path(f))['step'] == 3


def test_another_model_is_refused_and_names_what_differs(setup, tmp_path):
    save_checkpoint(setup, 3, tmp_path / 'last.ckpt')
    other = build(smoke_params({'data.root': str(tmp_path / 'data'), 'model.fc_dim': 16}))
    w = nets(other)
    with pytest.raises(ValueError, match=r"from another model.*differ in \{'model'.*--resume never"):
        load_checkpoint(other, tmp_path / 'last.ckpt')
    assert_same_weights(w, nets(other))                      # nothing was loaded


def _rewrite(f, change):
    "Load checkpoint file `f` as it is, apply `change` to it, write it back."
    ck = torch.load(f, weights_only=True)
    change(ck)
    torch.save(ck, f)


@pytest.mark.parametrize('change, words', [
    (lambda ck: ck['state'].update(step=4), 'is corrupt: its contents do not match the SHA-256'),
    (lambda ck: ck.update(format=CKPT_FORMAT + 1), f'newer than this code reads \\(<= {CKPT_FORMAT}\\): update mde'),
    (lambda ck: ck.update(format='2'), 'has checkpoint format'),
    (lambda ck: ck.update(kind='mde-model'), f"not an mde training checkpoint \\(no kind '{CKPT_KIND}'"),
    (lambda ck: ck.update(state=[1, 2]), 'not an mde training checkpoint'),
])
def test_a_checkpoint_that_is_not_right_is_refused(setup, tmp_path, change, words):
    f = save_checkpoint(setup, 3, tmp_path / 'last.ckpt')
    _rewrite(f, change)
    with pytest.raises(ValueError, match=words):
        read_checkpoint(f)


def test_other_files_are_refused_with_what_to_do(tmp_path):
    f = tmp_path / 'x.ckpt'
    torch.save({'signature': {}, 'nets': {}, 'step': 1}, f)             # the format before `kind`
    with pytest.raises(ValueError, match=r'older format \(1\).*delete it to start afresh'):
        read_checkpoint(f)
    torch.save({'weights': 1}, f)
    with pytest.raises(ValueError, match='not an mde training checkpoint'):
        read_checkpoint(f)
    f.write_bytes(b'not a checkpoint')
    with pytest.raises(ValueError, match='not a readable mde checkpoint.*delete it to start afresh'):
        read_checkpoint(f)


def _flip_a_bit(ck):
    w = ck['state']['nets']['G']['out.0.weight'].view(torch.int32).view(-1)
    w[0] ^= 1


@pytest.mark.parametrize('damage', ['truncate', 'flip'])
def test_a_damaged_last_checkpoint_falls_back_to_the_previous(setup, tmp_path, damage):
    f = tmp_path / 'last.ckpt'
    save_checkpoint(setup, 3, f); save_checkpoint(setup, 6, f)
    if damage == 'truncate': f.write_bytes(f.read_bytes()[:len(f.read_bytes()) // 2])
    else: _rewrite(f, _flip_a_bit)
    said = []
    got, st = find_checkpoint(f, report=said.append)
    assert got == previous_path(f) and st['step'] == 3
    assert (tmp_path / 'last.ckpt.corrupt').exists() and not f.exists()          # moved aside, never kept as previous
    assert len(said) == 1 and 'last.ckpt is unusable' in said[0] and 'moved to last.ckpt.corrupt' in said[0]


def test_no_intact_checkpoint_means_none(setup, tmp_path):
    f = tmp_path / 'last.ckpt'
    assert find_checkpoint(f, report=lambda m: pytest.fail(m)) == (None, None)
    save_checkpoint(setup, 3, f); save_checkpoint(setup, 6, f)
    for p in (f, previous_path(f)): p.write_bytes(b'junk')
    said = []
    assert find_checkpoint(f, report=said.append) == (None, None)
    assert len(said) == 2 and sorted(p.name for p in tmp_path.iterdir()) == ['last.ckpt.corrupt', 'last.prev.ckpt.corrupt']


@pytest.mark.parametrize('err, words', [(errno.ENOSPC, 'the disk is full'), (errno.EACCES, 'the folder is not writable'),
                                        (errno.EIO, 'Input/output')])
def test_a_failed_write_is_a_clear_error_and_keeps_the_previous(setup, tmp_path, monkeypatch, err, words):
    f = tmp_path / 'last.ckpt'
    save_checkpoint(setup, 3, f); save_checkpoint(setup, 6, f)

    def fails_half_way(obj, path):
        path.write_bytes(b'half')
        raise OSError(err, os.strerror(err), str(path))
    monkeypatch.setattr(C, '_write', fails_half_way)
    with pytest.raises(CheckpointWriteError) as e:
        save_checkpoint(setup, 9, f)
    msg = str(e.value)
    assert isinstance(e.value, OSError) and e.value.errno == err
    assert 'could not write the checkpoint of update 9' in msg and words in msg
    assert f'Previous checkpoints, intact: {f}, {previous_path(f)}' in msg and 'resumes from the newest intact one' in msg
    assert read_checkpoint(f)['step'] == 6 and read_checkpoint(previous_path(f))['step'] == 3
    assert not list(tmp_path.glob('*.tmp'))
