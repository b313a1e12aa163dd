"""Tests of mde.files: torch files written atomically and reproducibly (write_synced, atomic_save) and read back
safely (safe_load: pickled Python objects refused unrun, damaged files named with what to do)."""
import hashlib
import os

import pytest
import torch

import mde.files as F
from mde.files import atomic_save, safe_load, write_synced

OBJ = {'w': torch.arange(6.).reshape(2, 3), 'step': 3, 'name': 'REC10', 'rows': [(1, 0.5)]}


def digest(path): return hashlib.sha256(path.read_bytes()).hexdigest()


def test_the_same_object_makes_the_same_bytes_whatever_the_file_name(tmp_path):
    a, b = atomic_save(OBJ, tmp_path / 'a.pt'), atomic_save(OBJ, tmp_path / 'sub' / 'deeper' / 'b.pt')
    write_synced(OBJ, tmp_path / 'c.pt')
    assert a == tmp_path / 'a.pt' and b.parent.is_dir()                     # returns the path, makes its folders
    assert digest(a) == digest(b) == digest(tmp_path / 'c.pt')
    assert sorted(p.name for p in tmp_path.rglob('*') if p.is_file()) == ['a.pt', 'b.pt', 'c.pt']   # no .tmp left
    atomic_save({**OBJ, 'step': 4}, a)
    assert digest(a) != digest(b)                                          # a different object: other bytes


def test_round_trip_through_safe_load(tmp_path):
    back = safe_load(atomic_save(OBJ, tmp_path / 'a.pt'), 'test file', 'rewrite it')
    assert torch.equal(back['w'], OBJ['w']) and back['step'] == 3 and back['name'] == 'REC10'
    assert back['rows'] == [(1, 0.5)] and back['w'].device.type == 'cpu'


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path, monkeypatch):
    f = atomic_save(OBJ, tmp_path / 'model.pt')
    before = digest(f)

    def dies_half_way(obj, path):
        path.write_bytes(b'half a file')
        raise OSError(28, 'No space left on device')
    monkeypatch.setattr(F, 'write_synced', dies_half_way)
    with pytest.raises(OSError, match='No space left'):
        atomic_save({'other': 1}, f)
    assert digest(f) == before and [p.name for p in tmp_path.iterdir()] == ['model.pt']
    monkeypatch.setattr(F, 'write_synced', lambda obj, path: (_ for _ in ()).throw(KeyboardInterrupt()))
    with pytest.raises(KeyboardInterrupt):                                  # interrupted: cleaned up too
        atomic_save({'other': 1}, tmp_path / 'new.pt')
    assert [p.name for p in tmp_path.iterdir()] == ['model.pt']


class _Payload:                                  # what a tampered file carries: a call made on unpickling
    def __reduce__(self): return (os.system, ('echo this must never run',))


def test_a_file_carrying_pickled_objects_is_refused_unrun(tmp_path, capfd):
    torch.save({'kind': 'mde-model', 'nets': _Payload()}, tmp_path / 'crafted.pt')
    with pytest.raises(ValueError) as e:
        safe_load(tmp_path / 'crafted.pt', 'mde model file', 're-train it')
    msg = str(e.value)
    assert 'carries pickled Python objects' in msg and 'system' in msg and 'no mde model file holds' in msg
    assert 'refused without running them' in msg and msg.endswith('re-train it')
    assert 'must never run' not in capfd.readouterr().out


@pytest.mark.parametrize('damage', ['truncated', 'text', 'empty'])
def test_a_damaged_file_is_named_with_what_to_do(tmp_path, damage):
    good = atomic_save(OBJ, tmp_path / 'good.pt').read_bytes()
    bad = tmp_path / 'bad.pt'
    bad.write_bytes({'truncated': good[:200], 'text': b'not a torch file', 'empty': b''}[damage])
    with pytest.raises(ValueError) as e:
        safe_load(bad, 'mde checkpoint', 'delete it to start afresh')
    msg = str(e.value)
    assert msg.startswith(f'{bad} is not a readable mde checkpoint (truncated or corrupt?')
    assert msg.endswith('; delete it to start afresh') and 'pickled' not in msg


def test_a_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match=r'nowhere\.pt is not a readable model file .*FileNotFoundError.*; train it'):
        safe_load(tmp_path / 'nowhere.pt', 'model file', 'train it')
