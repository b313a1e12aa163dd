"""Reliability, tested by breaking things on purpose: kills at random points (also mid-checkpoint), damaged and
tampered checkpoints, failed writes, diverging losses. Every resume must end with the weights of a run that was
never interrupted."""
import errno
import json
import os
import random
import shutil
import subprocess
import sys
import types
from pathlib import Path

import pytest
import torch
from helpers import assert_same_weights

import mde.checkpoint as C
import mde.trainer as T
from mde.checkpoint import CheckpointWriteError, find_checkpoint, previous_path, read_checkpoint, save_checkpoint
from mde.params import SMOKE, load_params, set_param, validate_params
from mde.trainer import DivergenceError, train

REPO = Path(__file__).resolve().parents[1]
ALL_PLAYERS = {'losses.adversarial': 0.01, 'losses.hns': 10.0, 'losses.hns_variant': 'alt'}


def tiny(tmp_path, **over):
    p = load_params(REPO / 'params.yaml')
    # on the CPU, where resuming is bit-identical (asserted below); a GPU's atomics make it so only within a
    # tolerance, tested apart (test_a_resumed_cuda_run_matches_within_a_stated_tolerance)
    for k, v in {**SMOKE, 'data.root': str(tmp_path / 'data'), **ALL_PLAYERS, 'train.steps': 8, 'train.device': 'cpu',
                 'train.ckpt_every': 2, 'train.eval_every': 4, 'train.sample_every': 8, **over}.items():
        set_param(p, k, v)
    return validate_params(p)


def model_weights(path):
    return torch.load(path, map_location='cpu', weights_only=True)['nets']


@pytest.fixture(scope='module')
def whole(tmp_path_factory):
    "The reference: the same run, never interrupted."
    tmp = tmp_path_factory.mktemp('whole')
    summary = train(tiny(tmp), tmp / 'run')
    return summary, model_weights(tmp / 'run' / 'model.pt')


class Killed(BaseException):
    "Stands in for SIGKILL: nothing catches it, no cleanup code runs."


class Killer:
    """Dies at the `at`-th event of kind `kind`: 'update' (train_step), 'write' (a checkpoint file, cut at
    `fraction` of its length as a kill mid-write leaves it) or 'rename' (in mde.checkpoint: 'last -> prev',
    'tmp -> last', 'damaged -> .corrupt')."""
    def __init__(self, monkeypatch, kind, at, fraction=0.5):
        self.kind, self.n, self.at, self.fired = kind, 0, at, False
        real_step, real_write, real_replace = T.train_step, C._write, os.replace

        def tick(kind):
            if kind != self.kind: return False
            self.n += 1
            self.fired = self.n == self.at
            return self.fired

        def step(*a, **k):
            if tick('update'): raise Killed
            return real_step(*a, **k)

        def write(obj, path):
            real_write(obj, path)
            if tick('write'):
                data = Path(path).read_bytes()
                Path(path).write_bytes(data[:int(len(data) * fraction)])
                raise Killed

        def replace(src, dst):
            if tick('rename'): raise Killed
            real_replace(src, dst)

        monkeypatch.setattr(T, 'train_step', step)
        monkeypatch.setattr(C, '_write', write)
        monkeypatch.setattr(C, 'os', types.SimpleNamespace(**{**vars(os), 'replace': replace}))


def test_kills_at_random_points_resume_to_the_same_weights(tmp_path, monkeypatch, whole):
    "Kill the run again and again at random events (updates, mid-write, between renames); resume each time."
    p = tiny(tmp_path)
    rng = random.Random(2024)
    plan = ['update', 'write', 'rename'] * 2
    rng.shuffle(plan)
    out, killed = tmp_path / 'cut', []
    for kind in plan:
        with monkeypatch.context() as m:
            killer = Killer(m, kind, at=rng.randint(1, {'update': 5, 'write': 2, 'rename': 3}[kind]),
                            fraction=rng.random())
            try: train(p, out)
            except Killed: killed.append((kind, killer.at))
        shutil.rmtree(out / 'dvclive', ignore_errors=True)  # `dvc repro` deletes non-persistent outputs
    summary = train(p, out)
    assert {k for k, _ in killed} == {'update', 'write', 'rename'} and len(killed) >= 4, killed
    assert summary['step'] == 8 and summary['eval'] == whole[0]['eval']
    assert_same_weights(whole[1], model_weights(out / 'model.pt'))


@pytest.mark.parametrize('kind', ['write', 'rename'])
def test_a_kill_during_a_checkpoint_write_loses_at_most_one_interval(tmp_path, monkeypatch, whole, kind):
    p = tiny(tmp_path)
    # die in the middle of the checkpoint of update 4: while writing it, or between its two renames
    with monkeypatch.context() as m:
        Killer(m, kind, at={'write': 2, 'rename': 2}[kind], fraction=0.3)   # rename 2: 'last -> prev' of update 4
        with pytest.raises(Killed): train(p, tmp_path / 'cut')
    ck = tmp_path / 'cut' / 'checkpoints'
    found, state = find_checkpoint(ck / 'last.ckpt')
    assert state['step'] == 2                            # the checkpoint before the interrupted one is whole
    summary = train(p, tmp_path / 'cut')
    assert json.loads((tmp_path / 'cut' / 'run.json').read_text())['resumed_from_step'] == 2
    assert summary['eval'] == whole[0]['eval']
    assert_same_weights(whole[1], model_weights(tmp_path / 'cut' / 'model.pt'))
    assert not list(ck.glob('*.tmp')) or kind == 'write'  # a kill leaves its .tmp; the next save replaces it


def _cut_at(tmp_path, monkeypatch, p, update):
    "Run `p` into tmp/cut and kill it during `update`."
    with monkeypatch.context() as m:
        real = T.train_step
        calls = {'n': 0}
        def dying(*a, **k):
            calls['n'] += 1
            if calls['n'] == update: raise Killed
            return real(*a, **k)
        m.setattr(T, 'train_step', dying)
        with pytest.raises(Killed): train(p, tmp_path / 'cut')
    return tmp_path / 'cut' / 'checkpoints' / 'last.ckpt'


@pytest.mark.parametrize('damage', ['truncate', 'flip', 'empty', 'garbage'])
def test_a_damaged_last_checkpoint_falls_back_to_the_previous(tmp_path, monkeypatch, capsys, whole, damage):
    p = tiny(tmp_path)
    last = _cut_at(tmp_path, monkeypatch, p, update=7)      # checkpoints at updates 2, 4, 6: last = 6, prev = 4
    assert read_checkpoint(last)['step'] == 6 and read_checkpoint(previous_path(last))['step'] == 4
    data = bytearray(last.read_bytes())
    if damage == 'truncate': data = data[:len(data) * 2 // 3]
    elif damage == 'flip': data[len(data) // 2] ^= 0x10     # inside a tensor: only the checksum can tell
    elif damage == 'empty': data = b''
    else: data = os.urandom(len(data))
    last.write_bytes(bytes(data))
    with pytest.raises(ValueError, match='corrupt|not a readable'): read_checkpoint(last)
    capsys.readouterr()
    summary = train(p, tmp_path / 'cut')
    out = capsys.readouterr().out
    assert 'is unusable' in out and f'resuming from {previous_path(last)} at update 4' in out
    assert (last.parent / 'last.ckpt.corrupt').exists()     # kept for inspection, never becomes "previous"
    assert summary['eval'] == whole[0]['eval']
    assert_same_weights(whole[1], model_weights(tmp_path / 'cut' / 'model.pt'))


def test_both_checkpoints_damaged_starts_afresh_and_still_matches(tmp_path, monkeypatch, capsys, whole):
    p = tiny(tmp_path)
    last = _cut_at(tmp_path, monkeypatch, p, update=5)
    for f in (last, previous_path(last)): f.write_bytes(f.read_bytes()[:100])
    summary = train(p, tmp_path / 'cut')
    assert capsys.readouterr().out.count('is unusable') == 2
    assert json.loads((tmp_path / 'cut' / 'run.json').read_text())['resumed_from_step'] == 0
    assert_same_weights(whole[1], model_weights(tmp_path / 'cut' / 'model.pt'))
    assert summary['eval'] == whole[0]['eval']


@pytest.mark.parametrize('err, words', [(errno.ENOSPC, 'the disk is full'), (errno.EACCES, 'not writable'),
                                        (errno.EROFS, 'not writable')])
def test_a_failed_checkpoint_write_is_a_clear_error_and_keeps_the_previous(tmp_path, monkeypatch, whole, err, words):
    p = tiny(tmp_path)
    real, calls = C._write, {'n': 0}
    def failing(obj, path):
        calls['n'] += 1
        if calls['n'] == 2:                                 # the checkpoint of update 4: half written, then the error
            Path(path).write_bytes(b'\0' * 1000)
            raise OSError(err, os.strerror(err), str(path))
        real(obj, path)
    monkeypatch.setattr(C, '_write', failing)
    with pytest.raises(CheckpointWriteError, match=words) as e:
        train(p, tmp_path / 'cut')
    assert 'update 4' in str(e.value) and 'intact' in str(e.value)
    ck = tmp_path / 'cut' / 'checkpoints'
    assert read_checkpoint(ck / 'last.ckpt')['step'] == 2 and not list(ck.glob('*.tmp'))
    monkeypatch.setattr(C, '_write', real)                  # space freed: the run resumes from update 2
    summary = train(p, tmp_path / 'cut')
    assert json.loads((tmp_path / 'cut' / 'run.json').read_text())['resumed_from_step'] == 2
    assert_same_weights(whole[1], model_weights(tmp_path / 'cut' / 'model.pt'))


def test_the_cli_reports_a_full_disk_in_one_line(tmp_path):
    "A failed write through the command line: exit status 1 and the message, not a traceback."
    code = ("import errno, sys, mde.checkpoint as C\n"
            "def full(obj, path): raise OSError(errno.ENOSPC, 'No space left on device', str(path))\n"
            "C._write = full\n"
            "from mde.trainer import main\n"
            f"main(sys.argv[1:])\n")
    sets = [a for k, v in {**SMOKE, 'data.root': str(tmp_path / 'data')}.items() for a in ('--set', f'{k}={json.dumps(v)}')]
    r = subprocess.run([sys.executable, '-c', code, '--params', str(REPO / 'params.yaml'), '--out', str(tmp_path / 'o'),
                        *sets], capture_output=True, text=True, cwd=REPO, timeout=300)
    assert r.returncode == 1 and 'the disk is full' in r.stderr and 'Traceback' not in r.stderr, r.stderr


# --- safe loading -------------------------------------------------------------------------------------------

class _Payload:
    def __init__(self, marker): self.marker = marker
    def __reduce__(self): return (Path.touch, (Path(self.marker),))


def test_a_checkpoint_carrying_a_pickled_object_is_refused_unrun(tmp_path, monkeypatch, capsys, whole):
    p = tiny(tmp_path)
    last = _cut_at(tmp_path, monkeypatch, p, update=5)      # last = 4, prev = 2
    marker = tmp_path / 'payload-ran'
    ck = torch.load(last, weights_only=True)
    ck['state']['log'] = _Payload(marker)                   # a tampered checkpoint
    torch.save(ck, last)
    with pytest.raises(ValueError, match='pickled Python objects') as e: read_checkpoint(last)
    assert 'getattr' in str(e.value)                          # the global its pickle would have called
    assert not marker.exists()
    with pytest.raises(ValueError, match='pickled'):          # an explicit --resume FILE is refused outright
        train(p, tmp_path / 'other', resume=str(last))
    capsys.readouterr()
    train(p, tmp_path / 'cut')                              # auto-resume sets it aside and takes the previous one
    assert 'pickled Python objects' in capsys.readouterr().out and not marker.exists()
    assert json.loads((tmp_path / 'cut' / 'run.json').read_text())['resumed_from_step'] == 2
    assert_same_weights(whole[1], model_weights(tmp_path / 'cut' / 'model.pt'))


def test_checkpoints_hold_only_tensors_and_plain_values(tmp_path, whole):
    "What torch.load(weights_only=True) reads: the RNG states of torch, numpy and Python are stored as tensors."
    p = tiny(tmp_path, **{'train.steps': 2})
    train(p, tmp_path / 'run')
    raw = torch.load(tmp_path / 'run' / 'checkpoints' / 'last.ckpt', weights_only=True)
    assert raw['kind'] == 'mde-checkpoint' and raw['format'] == C.CKPT_FORMAT and len(raw['sha256']) == 64
    rng = raw['state']['rng']
    assert rng['numpy']['keys'].dtype == torch.int64 and rng['numpy']['keys'].shape == (624,)
    assert rng['python']['words'].shape == (625,)


def test_an_old_format_checkpoint_says_so(tmp_path):
    old = tmp_path / 'last.ckpt'
    torch.save({'signature': {}, 'nets': {}, 'step': 1}, old)
    with pytest.raises(ValueError, match='older format'): read_checkpoint(old)


# --- divergence ---------------------------------------------------------------------------------------------

def test_a_nan_loss_stops_the_run_and_keeps_the_last_good_checkpoint(tmp_path):
    p = tiny(tmp_path, **{'train.lr_g': 1.0e+12, 'train.steps': 50, 'train.ckpt_every': 1,
                          'train.eval_every': 50, 'train.sample_every': 50})
    with pytest.raises(DivergenceError, match=r'diverged at update (\d+): .*(nan|inf)') as e:
        train(p, tmp_path / 'run')
    msg = str(e.value)
    bad_update = int(msg.split('update ')[1].split(':')[0])
    assert 'loss/' in msg and 'last good checkpoint is kept' in msg
    state = read_checkpoint(tmp_path / 'run' / 'checkpoints' / 'last.ckpt')
    assert state['step'] == bad_update - 1                   # nothing of the diverged update was saved
    assert all(torch.isfinite(v).all() for v in state['nets']['G'].values() if v.is_floating_point())
    assert not (tmp_path / 'run' / 'model.pt').exists()


def test_the_cli_stops_a_diverging_run_with_a_message(tmp_path):
    sets = [a for k, v in {**SMOKE, 'data.root': str(tmp_path / 'data'), 'train.steps': 50,
                           'train.eval_every': 50, 'train.sample_every': 50}.items()
            for a in ('--set', f'{k}={json.dumps(v)}')]
    r = subprocess.run([sys.executable, '-m', 'mde.trainer', '--params', str(REPO / 'params.yaml'),
                        '--out', str(tmp_path / 'o'), *sets, '--set', 'train.lr_g=1.0e+12'],
                       capture_output=True, text=True, cwd=REPO, timeout=300)
    assert r.returncode == 1 and 'training diverged at update' in r.stderr and 'Traceback' not in r.stderr, r.stderr


@pytest.mark.parametrize('bad_update, caught_at, saved', [(4, 5, 3), (7, 9, 6)])
def test_a_nan_between_divergence_checks_is_caught_before_anything_is_saved(tmp_path, monkeypatch, bad_update,
                                                                            caught_at, saved):
    "check_every 5, ckpt_every 3: checks at 3, 5, 6, 9, 10; a NaN at update 4 is caught at 5, one at 7 at 9."
    p = tiny(tmp_path, **{'train.steps': 12, 'train.check_every': 5, 'train.ckpt_every': 3, 'train.log_every': 12,
                          'train.eval_every': 12, 'train.sample_every': 12})
    real, seen = T.train_step, {'n': 0, 'done': []}
    def poisoned(setup, batch):
        seen['n'] += 1
        out = real(setup, batch)
        if seen['n'] == bad_update:      # the weights diverge: every parameter of G becomes NaN from here on
            with torch.no_grad():
                for q in setup.net('G').parameters(): q.fill_(float('nan'))
            out = {**out, 'loss/g_total': torch.tensor(float('nan'))}
        return out
    monkeypatch.setattr(T, 'train_step', poisoned)
    with pytest.raises(DivergenceError, match=rf'diverged at update {bad_update}: loss/g_total = nan'):
        train(p, tmp_path / 'run')
    assert seen['n'] == caught_at                            # updates after the NaN ran, up to the next check
    state = read_checkpoint(tmp_path / 'run' / 'checkpoints' / 'last.ckpt')
    assert state['step'] == saved
    assert all(torch.isfinite(v).all() for v in state['nets']['G'].values() if v.is_floating_point())
    assert not (tmp_path / 'run' / 'model.pt').exists()


def test_background_checkpoint_writes_survive_kills_and_resume_to_the_same_weights(tmp_path, monkeypatch, whole):
    "train.ckpt_background: true on the CPU: a kill mid-write (in the writing thread) and one between updates."
    p = tiny(tmp_path, **{'train.ckpt_background': True})
    out = tmp_path / 'cut'
    for kind, at in (('write', 2), ('update', 5)):     # the checkpoint of 4 cut; then a kill in update 7
        with monkeypatch.context() as m:
            Killer(m, kind, at=at, fraction=0.4)
            with pytest.raises(Killed): train(p, out)
        shutil.rmtree(out / 'dvclive', ignore_errors=True)
    assert find_checkpoint(out / 'checkpoints' / 'last.ckpt')[1]['step'] == 6
    summary = train(p, out)
    run = json.loads((out / 'run.json').read_text())
    assert run['checkpoint_writes']['background'] is True and run['resumed_from_step'] == 6
    assert summary['eval'] == whole[0]['eval']
    assert_same_weights(whole[1], model_weights(out / 'model.pt'))


def test_a_timed_checkpoint_is_written_between_update_intervals(tmp_path, monkeypatch):
    "train.ckpt_minutes: with the clock moved on 10 minutes an update, every check (check_every 2) saves."
    p = tiny(tmp_path, **{'train.ckpt_every': 8, 'train.check_every': 2, 'train.ckpt_minutes': 5,
                          'train.eval_every': 8, 'train.sample_every': 8, 'train.log_every': 8})
    clock = {'t': 1000.0}
    def tick():
        clock['t'] += 600.0
        return clock['t']
    monkeypatch.setattr(T, 'time', types.SimpleNamespace(time=tick))
    steps = []
    real = C.write_checkpoint
    monkeypatch.setattr(C, 'write_checkpoint', lambda state, *a, **k: (steps.append(state['step']), real(state, *a, **k))[1])
    train(p, tmp_path / 'run')
    assert steps == [2, 4, 6, 8]


CUDA_RESUME_TOL = 1e-3     # |resumed - unbroken| <= 1e-3 * (1 + |unbroken|) per weight after 8 updates


@pytest.mark.skipif(not torch.cuda.is_available(), reason='no CUDA device on this machine (the CPU tests above assert '
                    'bit-identical resumes)')
def test_a_resumed_cuda_run_matches_within_a_stated_tolerance(tmp_path, monkeypatch):
    "On a GPU, with train.deterministic, a killed and resumed run ends within CUDA_RESUME_TOL of an unbroken one."
    p = tiny(tmp_path, **{'train.device': 'cuda', 'train.deterministic': True})
    train(p, tmp_path / 'whole')
    _cut_at(tmp_path, monkeypatch, p, 5)
    train(p, tmp_path / 'cut')
    a, b = model_weights(tmp_path / 'whole' / 'model.pt'), model_weights(tmp_path / 'cut' / 'model.pt')
    for net in a:
        for k, v in a[net].items():
            if v.is_floating_point():
                assert (b[net][k] - v).abs().le(CUDA_RESUME_TOL * (1 + v.abs())).all(), f'{net}.{k}'
