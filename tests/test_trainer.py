"""Tests of the training side: every loss variant, the update (mde.step), resumption (mde.checkpoint), DDP, logging
(mde.runlog), the loop and CLI (mde.trainer), the notebook, real data. The parameters themselves: test_params.py."""
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
import torch
from helpers import assert_same_weights

from mde.data import shared_data_dir
from mde.build import build
from mde.checkpoint import read_checkpoint
from mde.params import SMOKE, load_params, set_param, validate_params
from mde.runlog import read_history
from mde.step import BatchSource, loss_balance, make_batch, train_step
from mde.trainer import train

REPO = Path(__file__).resolve().parents[1]


def tiny(tmp_path, **over):
    "params.yaml with SMOKE and `over` applied; data and outputs under tmp_path."
    p = load_params(REPO / 'params.yaml')
    for k, v in {**SMOKE, 'data.root': str(tmp_path / 'data'), **over}.items(): set_param(p, k, v)
    return validate_params(p)


def weights(path):
    return torch.load(path, map_location='cpu', weights_only=False)['nets']


ALL_PLAYERS = {'losses.adversarial': 0.01, 'losses.hns': 10.0, 'losses.hns_variant': 'alt'}

# --- the CLI refuses bad parameters before training (the parameters themselves: test_params.py) -----------

def test_cli_refuses_an_unknown_run_before_training(tmp_path):
    r = subprocess.run([sys.executable, '-m', 'mde.trainer', '--run', 'nope', '--out', str(tmp_path / 'x')],
                       cwd=REPO, capture_output=True, text=True, timeout=120)
    assert r.returncode != 0 and "unknown run 'nope'" in r.stderr and not (tmp_path / 'x').exists()


# --- every network and loss variant trains -------------------------------------------------------------

@pytest.mark.parametrize('over', [
    {'mask': 'rec'}, {'mask': 'inpaint'}, {'mask': 'reverse'}, {'mask': 'color1'}, {'mask': 'color2'},
    {**ALL_PLAYERS, 'losses.hns_variant': 'rec'}, {**ALL_PLAYERS, 'losses.hns_variant': 'alt'},
    {**ALL_PLAYERS, 'losses.hns_variant': 'coord', 'losses.hns': 0.1}, {'losses.perceptual': 2e-5},
    {'arch': 'ce', 'data.img_size': 32},
])
def test_variants_train_and_log(tmp_path, over):
    p = tiny(tmp_path, **{'train.steps': 2, 'train.ckpt_every': 2, **over})
    s = train(p, tmp_path / 'run')
    assert s['step'] == 2
    assert s['loss'] and all(math.isfinite(v) for v in s['loss'].values())
    nets = set(weights(tmp_path / 'run' / 'model.pt'))
    if p['arch'] == 'ce': assert nets == {'CE'}
    else:
        want = {'G'} | ({'D'} if p['losses']['adversarial'] else set())
        want |= {'rec': {'R'}, 'alt': {'R'}, 'coord': {'C'}}[p['losses']['hns_variant']] if p['losses']['hns'] else set()
        assert nets == want
    run = json.loads((tmp_path / 'run' / 'run.json').read_text())
    bal = json.loads((tmp_path / 'run' / 'loss_balance.json').read_text())
    if p['arch'] == 'mde': assert set(bal['start']) == set(bal['end']) and 'completion' in bal['end']
    if p['losses']['perceptual']: assert 'substitute' in run['perceptual_vgg'] or 'imagenet' in run['perceptual_vgg']
    card = (tmp_path / 'run' / 'README.md').read_text()                 # the model card, read off the run's own files
    front = yaml.safe_load(card.split('---')[1])
    assert front['datasets'] == ['digits'] and front['license'] == 'cc-by-4.0'
    assert f"updates at batch {p['train']['batch_size']}" in card and 'mde.complete' in card
    if p['losses']['perceptual'] and 'imagenet' not in run['perceptual_vgg']: assert 'standing in for the ImageNet weights' in card


def test_training_lowers_heldout_completion_loss(tmp_path):
    # the smoke-size model with a raised learning rate, so 100 updates (about 10 s) show learning;
    # `dvc repro` checks the real default (1500 updates: 0.117 -> 0.017 on this machine)
    p = tiny(tmp_path, **{'train.steps': 100, 'train.eval_every': 100, 'train.ckpt_every': 100,
                          'train.sample_every': 100, 'train.log_every': 50, 'data.limit': None,
                          'data.eval_images': 128, 'train.batch_size': 16, 'train.lr_g': 2e-3})
    s = train(p, tmp_path / 'run')
    assert s['eval']['completion'] < 0.8 * s['initial']['completion']
    assert s['eval']['psnr_missing'] > s['initial']['psnr_missing'] + 1


def test_discriminator_sees_real_and_fake_as_separate_batches(tmp_path):
    p = tiny(tmp_path, **{'losses.adversarial': 0.01})
    s = build(p)
    seen = []
    s.net('D').register_forward_pre_hook(lambda m, a: seen.append(a[0].detach().clone()))
    batch = make_batch(s, BatchSource(torch.randint(0, 256, (16, 3, 16, 16), dtype=torch.uint8), 8, 0), 0)
    train_step(s, batch)
    assert len(seen) == 3 and all(len(x) == 8 for x in seen)     # real, fake (D step), fake (G step): never mixed
    assert torch.equal(seen[0], batch['Z']) and not torch.equal(seen[1], batch['Z'])


def test_loss_balance_measures_every_term_and_changes_nothing(tmp_path):
    p = tiny(tmp_path, **{**ALL_PLAYERS, 'losses.perceptual': 0.1})
    s = build(p)
    batch = make_batch(s, BatchSource(torch.randint(0, 256, (16, 3, 16, 16), dtype=torch.uint8), 8, 0), 0)
    state = {n: {k: v.clone() for k, v in s.net(n).state_dict().items()} for n in s.nets}
    bal = loss_balance(s, batch)
    assert set(bal) == {'completion', 'reconstruction', 'perceptual', 'adversarial', 'hns'}
    assert all(v['grad_norm'] > 0 and math.isfinite(v['value']) for v in bal.values())
    assert_same_weights(state, {n: s.net(n).state_dict() for n in s.nets})   # BatchNorm statistics included
    # the gradient norm scales with the weight
    s.params['losses']['adversarial'] = 0.02
    assert loss_balance(s, batch)['adversarial']['grad_norm'] == pytest.approx(2 * bal['adversarial']['grad_norm'], rel=1e-4)


# --- resumption ----------------------------------------------------------------------------------------

def test_interrupted_run_resumes_to_identical_weights(tmp_path, monkeypatch):
    p = tiny(tmp_path, **{**ALL_PLAYERS, 'train.steps': 6, 'train.ckpt_every': 2})
    whole = train(p, tmp_path / 'whole')

    import mde.trainer as T
    real_step, calls = T.train_step, {'n': 0}
    def dying_step(*a, **k):
        calls['n'] += 1
        if calls['n'] == 4: raise KeyboardInterrupt  # after the checkpoint at update 2, during update 4
        return real_step(*a, **k)
    monkeypatch.setattr(T, 'train_step', dying_step)
    with pytest.raises(KeyboardInterrupt):
        train(p, tmp_path / 'cut')
    assert read_checkpoint(tmp_path / 'cut' / 'checkpoints' / 'last.ckpt')['step'] == 2
    shutil.rmtree(tmp_path / 'cut' / 'dvclive')  # `dvc repro` deletes non-persistent outputs before re-running
    monkeypatch.setattr(T, 'train_step', real_step)
    s = train(p, tmp_path / 'cut')
    assert json.loads((tmp_path / 'cut' / 'run.json').read_text())['resumed_from_step'] == 2
    assert s['step'] == 6
    assert s['initial'] == whole['initial'] and s['eval'] == whole['eval']  # the untrained baseline survives
    assert_same_weights(weights(tmp_path / 'whole' / 'model.pt'), weights(tmp_path / 'cut' / 'model.pt'))
    # the curves do not double back: each logged step appears once, in order
    steps, _ = read_history(tmp_path / 'cut')['loss/g_total']
    assert steps == sorted(set(steps)) == [1, 2, 3, 4, 5, 6]


def _cli(args, **kw):
    return subprocess.Popen([sys.executable, '-m', 'mde.trainer', '--params', str(REPO / 'params.yaml'), *args],
                            cwd=kw.pop('cwd', REPO), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **kw)


def _sets(tmp_path, **over):
    items = {**SMOKE, 'data.root': str(tmp_path / 'data'), **over}
    return [a for k, v in items.items() for a in ('--set', f'{k}={json.dumps(v)}')]


def test_killed_cli_run_resumes_from_last_checkpoint(tmp_path):
    # long enough (600 updates) that the kill lands mid-run even when the machine is busy
    sets = _sets(tmp_path, **{'train.steps': 600, 'train.ckpt_every': 10, 'train.log_every': 10,
                              'train.eval_every': 600, 'train.sample_every': 600})
    ref = _cli(['--out', str(tmp_path / 'ref'), *sets])
    out, _ = ref.communicate(timeout=300)
    assert ref.returncode == 0, out
    proc = _cli(['--out', str(tmp_path / 'cut'), *sets])
    ckpt = tmp_path / 'cut' / 'checkpoints' / 'last.ckpt'
    deadline = time.time() + 120
    while time.time() < deadline and not (ckpt.exists() and read_checkpoint(ckpt)['step'] >= 20):
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed_at = read_checkpoint(ckpt)['step']
    assert 0 < killed_at < 600, f'not killed mid-run (checkpoint at {killed_at})'
    again = _cli(['--out', str(tmp_path / 'cut'), *sets])
    out, _ = again.communicate(timeout=300)
    assert again.returncode == 0, out
    assert f'resuming from {ckpt}' in out
    assert json.loads((tmp_path / 'cut' / 'run.json').read_text())['resumed_from_step'] == killed_at
    assert_same_weights(weights(tmp_path / 'ref' / 'model.pt'), weights(tmp_path / 'cut' / 'model.pt'))


def test_complete_run_rerun_after_logs_were_deleted(tmp_path):
    p = tiny(tmp_path, **{'train.steps': 4, 'train.ckpt_every': 2})
    first = train(p, tmp_path / 'run')
    for f in ('dvclive', 'samples'): shutil.rmtree(tmp_path / 'run' / f)
    (tmp_path / 'run' / 'history.png').unlink()
    again = train(p, tmp_path / 'run')  # nothing left to train: outputs are rebuilt from the checkpoint
    assert again['initial'] == first['initial'] and again['eval'] == first['eval']
    assert read_history(tmp_path / 'run')['eval/completion'][0] == [0, 3, 4]  # eval_every 3, and the last update
    assert (tmp_path / 'run' / 'history.png').exists()


def test_changed_parameters_start_afresh(tmp_path, capsys):
    p = tiny(tmp_path, **{'train.steps': 2, 'train.ckpt_every': 1})
    train(p, tmp_path / 'run')
    p2 = tiny(tmp_path, **{'train.steps': 2, 'train.ckpt_every': 1, 'S': 0.4})
    (tmp_path / 'run' / 'samples' / 'step_0000099.png').write_bytes(b'stale')
    train(p2, tmp_path / 'run')
    assert 'other parameters: starting afresh' in capsys.readouterr().out
    assert not (tmp_path / 'run' / 'samples' / 'step_0000099.png').exists()  # no grids of the earlier run
    assert json.loads((tmp_path / 'run' / 'run.json').read_text())['resumed_from_step'] == 0


def test_checkpoint_from_another_model_is_refused(tmp_path):
    p = tiny(tmp_path, **{'train.steps': 2, 'train.ckpt_every': 1})
    train(p, tmp_path / 'run')
    ckpt = tmp_path / 'run' / 'checkpoints' / 'last.ckpt'
    other = tiny(tmp_path, **{'model.widths': [4, 8], 'train.steps': 4})
    with pytest.raises(ValueError, match='from another model'):
        train(other, tmp_path / 'other', resume=str(ckpt))
    bad = tmp_path / 'bad.ckpt'
    bad.write_bytes(b'not a checkpoint')
    with pytest.raises(ValueError, match='not a readable mde checkpoint'):
        train(p, tmp_path / 'x', resume=str(bad))
    torch.save({'weights': 1}, bad)
    with pytest.raises(ValueError, match='not an mde training checkpoint'):
        train(p, tmp_path / 'x', resume=str(bad))


def test_missing_data_folder_fails_before_training(tmp_path):
    p = tiny(tmp_path, **{'data.name': 'mnist', 'data.source': str(tmp_path / 'nowhere'), 'data.img_size': 32})
    with pytest.raises(FileNotFoundError, match='mnist'):
        train(p, tmp_path / 'run')
    assert not (tmp_path / 'run' / 'checkpoints').exists()


# --- logging -------------------------------------------------------------------------------------------

def test_outputs_and_no_dvc_side_effects_outside_a_dvc_repo(tmp_path):
    subprocess.run(['git', 'init', '-q', str(tmp_path)], check=True)
    p = tiny(tmp_path, **{'train.steps': 3})
    train(p, tmp_path / 'run')
    assert not (tmp_path / '.dvc').exists() and not (tmp_path / 'dvc.yaml').exists()
    assert not list(tmp_path.rglob('dvc.yaml'))
    run = tmp_path / 'run'
    m = json.loads((run / 'dvclive' / 'metrics.json').read_text())
    assert m['step'] == 3 and set(m['eval']) == {'completion', 'psnr_missing', 'mse_missing'} and 'initial' in m
    assert (run / 'dvclive' / 'plots' / 'metrics' / 'loss' / 'g_total.tsv').read_text().startswith('step\tg_total\n')
    from PIL import Image
    grid = Image.open(run / 'completions.png')
    assert grid.size[0] > grid.size[1] > 0  # 3 rows of 8 images
    assert Image.open(run / 'history.png').size[0] > 0
    assert json.loads((run / 'run.json').read_text())['logger'] == 'plain'


def test_dvclive_inside_a_dvc_repo_has_no_side_effects(tmp_path, monkeypatch):
    pytest.importorskip('dvclive', reason='dvclive is not installed')
    env = {**os.environ, 'GIT_AUTHOR_NAME': 't', 'GIT_AUTHOR_EMAIL': 't@t', 'GIT_COMMITTER_NAME': 't', 'GIT_COMMITTER_EMAIL': 't@t'}
    for cmd in (['git', 'init', '-q'], ['dvc', 'init', '-q'], ['git', 'add', '-A'], ['git', 'commit', '-qm', 'init']):
        subprocess.run(cmd, cwd=tmp_path, check=True, env=env, capture_output=True)
    monkeypatch.chdir(tmp_path)
    p = tiny(tmp_path, **{'train.steps': 4, 'train.ckpt_every': 2})
    s = train(p, tmp_path / 'run')
    assert json.loads((tmp_path / 'run' / 'run.json').read_text())['logger'] == 'dvclive'
    assert json.loads((tmp_path / 'run' / 'dvclive' / 'metrics.json').read_text())['step'] == 4 and 'initial' in s
    assert not list(tmp_path.rglob('dvc.yaml'))  # no stray pipeline file
    refs = subprocess.run(['git', 'for-each-ref', 'refs/exps'], cwd=tmp_path, capture_output=True, text=True).stdout
    assert refs.strip() == ''  # no accidental experiment


# --- several processes ---------------------------------------------------------------------------------

def test_torchrun_two_cpu_processes_train_and_write_one_checkpoint(tmp_path):
    cmd = [sys.executable, '-m', 'torch.distributed.run', '--nproc_per_node', '2', '--master_port', '29533',
           '-m', 'mde.trainer', '--params', str(REPO / 'params.yaml'), '--out', str(tmp_path / 'run'),
           # batch_size 8 is the global batch: with 12 images each rank holds 6, enough for 4 but not for 8
           *_sets(tmp_path, **{'train.steps': 4, 'train.ckpt_every': 4, 'data.limit': 12})]
    env = {**os.environ, 'OMP_NUM_THREADS': '1'}
    r = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300, env=env)
    assert r.returncode == 0, r.stdout + r.stderr
    ckpts = list((tmp_path / 'run').rglob('*.ckpt'))
    assert [c.name for c in ckpts] == ['last.ckpt']
    assert read_checkpoint(ckpts[0])['step'] == 4
    assert json.loads((tmp_path / 'run' / 'run.json').read_text())['world_size'] == 2


# --- GPU ------------------------------------------------------------------------------------------------

@pytest.mark.skipif(not torch.cuda.is_available(), reason='no CUDA device on this machine')
@pytest.mark.parametrize('over', [{**ALL_PLAYERS, 'losses.perceptual': 2e-5}, {'arch': 'ce', 'data.img_size': 32}])
def test_trains_on_gpu_with_bf16(tmp_path, over):
    p = tiny(tmp_path, **{'train.device': 'cuda', 'train.steps': 3, **over})
    s = train(p, tmp_path / 'run')
    run = json.loads((tmp_path / 'run' / 'run.json').read_text())
    assert run['device'].startswith('cuda') and run['amp_bf16'] is True
    assert all(math.isfinite(v) for v in s['loss'].values())


# --- the notebook --------------------------------------------------------------------------------------

def test_papermill_runs_the_training_notebook(tmp_path):
    pm = pytest.importorskip('papermill', reason='papermill is not installed')
    out = tmp_path / 'out.ipynb'
    pm.execute_notebook(str(REPO / 'nbs' / 'train.ipynb'), str(out), parameters={'S': 0.1, 'smoke': True},
                        cwd=str(REPO), progress_bar=False, kernel_name='python3')
    # what the notebook itself printed (papermill also records parameters in metadata, which proves nothing)
    nb = json.loads(out.read_text())
    printed = ''.join(''.join(o.get('text', '')) for c in nb['cells'] for o in c.get('outputs', []))
    assert '"S": 0.1' in printed and 'untrained' in printed and 'trained' in printed


# --- real data (../shared/data) ------------------------------------------------------------------------

needs_shared = pytest.mark.skipif(shared_data_dir() is None, reason='../shared/data (real data copies) is absent')


@needs_shared
@pytest.mark.parametrize('name, mask', [('mnist', 'random'), ('celeba', 'rec')])
def test_short_real_data_runs_at_96px(tmp_path, name, mask):
    root = Path('/dev/shm') if Path('/dev/shm').is_dir() else tmp_path
    data_root = Path(root) / f'mde-test-{name}-{os.getpid()}'
    try:
        p = tiny(tmp_path, **{'data.name': name, 'mask': mask, 'S': 0.1 if mask == 'rec' else 0.25,
                              'data.img_size': 96, 'data.source': str(shared_data_dir()), 'data.root': str(data_root),
                              'data.limit': 32, 'model.widths': [8, 16, 32], 'model.d_widths': [8, 16, 32],
                              'train.steps': 2, 'train.batch_size': 4, 'train.ckpt_every': 2, 'train.sample_every': 2,
                              'train.eval_every': 2, **ALL_PLAYERS})
        s = train(p, tmp_path / 'run')
        assert s['step'] == 2 and math.isfinite(s['eval']['completion'])
        assert (tmp_path / 'run' / 'completions.png').exists() and list((tmp_path / 'run' / 'samples').glob('step_*.png'))
        run = json.loads((tmp_path / 'run' / 'run.json').read_text())
        assert run['train_data']['n'] == 32 and run['train_data']['img_size'] == 96
    finally:
        shutil.rmtree(data_root, ignore_errors=True)


# --- hide-and-seek in the paper's form, R on real images, the paper's scale --------------------------------

def _hns_setup(**over):
    from mde.params import smoke_params
    p = smoke_params({'mask': 'rec', 'S': 0.1, 'losses.hns': 1.0, 'losses.hns_variant': 'alt', **over})
    setup = build(p)
    src = BatchSource(torch.randint(0, 256, (16, 3, 16, 16), dtype=torch.uint8), 8, p['seed'])
    return setup, make_batch(setup, src, 0)


def test_generator_hns_term_follows_hns_form():
    from mde.losses import hns_alt_loss
    from mde.step import generator_terms
    for form in ('paper', 'bce'):
        setup, batch = _hns_setup(**{'losses.hns_form': form})
        Y = torch.rand_like(batch['Z'])
        with torch.no_grad():
            got = generator_terms(setup, batch, Y)['hns']
            r = setup.net('R')(Y).float()
        assert torch.allclose(got, hns_alt_loss(r, batch['M_alt'], form=form), atol=1e-3), form


def test_R_sees_real_images_only_when_asked():
    "losses.hns_real: R's update also takes the real batch (its BatchNorm statistics see it), else not."
    calls = {}
    for real in (False, True):
        setup, batch = _hns_setup(**{'losses.hns_real': real, 'train.amp': False})
        seen = []
        h = setup.net('R').register_forward_hook(lambda m, i, o: seen.append(i[0].detach().clone()))
        train_step(setup, batch)
        h.remove()
        calls[real] = any(torch.equal(x, batch['Z']) for x in seen)
    assert calls == {False: False, True: True}


def test_reduction_sum_scales_the_l2_terms_by_the_image_size():
    from mde.step import generator_terms
    s_mean, batch = _hns_setup(**{'losses.reduction': 'mean'})
    s_sum, _ = _hns_setup(**{'losses.reduction': 'sum'})
    Y = torch.rand_like(batch['Z'])
    with torch.no_grad():
        a, b = generator_terms(s_mean, batch, Y), generator_terms(s_sum, batch, Y)
    n = batch['Z'][0].numel()
    assert math.isclose(b['completion'].item(), a['completion'].item() * n, rel_tol=1e-4)
