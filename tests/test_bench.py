"""The benchmark (`python -m mde.bench`) at toy sizes: it runs the trainer's own update, plain and optimized, and
reports what it promises; and the trainer takes the optimized path by default (run.json says which)."""
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from mde.bench import BENCH_MODELS, OPTIMIZATIONS, PLAIN, bench_params, main, run_bench
from mde.build import BF16_MIN_GAIN, amp_choice, cpu_bf16_gain, cpu_has_amx, cpu_has_avx512_bf16
from mde.params import SMOKE, load_params, set_param
from mde.trainer import train

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope='module')
def result(tmp_path_factory):
    out = tmp_path_factory.mktemp('bench')
    return run_bench(device='cpu', steps=3, out=out, path=REPO / 'params.yaml', smoke=True, progress=lambda s: None), out


def test_the_benchmark_reports_every_figure(result):
    r, out = result
    assert [m['model'] for m in r['models']] == list(BENCH_MODELS)
    assert r['peak_tflops']['fp32'] > 0 and r['peak_tflops']['bf16'] > 0
    for m in r['models']:
        assert m['flops_per_update'] > 0 and m['data_headroom'] > 0 and m['timed_steps'] == 2
        for cfg in ('plain', 'optimized'):
            s = m[cfg]
            assert s['images_per_s'] > 0 and 0 < s['fraction_of_peak'] and s['peak_memory_gib'] > 0
            assert sum(s['split'].values()) == pytest.approx(1) and all(v >= 0 for v in s['split'].values())
        assert len(m['losses_plain']) == len(m['losses_optimized']) == 3
    assert r['speedup'] == r['models'][0]['speedup'] and isinstance(r['losses_match'], bool)
    saved = json.loads((out / 'bench.json').read_text())
    assert saved['models'][0]['flops_per_update'] == r['models'][0]['flops_per_update']
    table = (out / 'bench.md').read_text()
    assert table.count('| plain |') == table.count('| optimized |') == 3 and 'GFLOP per update' in table


def test_plain_and_optimized_start_from_the_same_weights_and_batches(result):
    "The first update's losses are computed before any weight moves: they differ only by bf16 rounding."
    r, _ = result
    for m in r['models']:
        first_plain, first_opt = m['losses_plain'][0], m['losses_optimized'][0]
        assert first_plain.keys() == first_opt.keys()
        for k in first_plain:
            assert first_opt[k] == pytest.approx(first_plain[k], rel=0.05, abs=2e-3), (m['model'], k)


def test_plain_switches_every_optimization_off_and_optimized_is_the_trainers_default():
    plain = bench_params('mde-rec-96', REPO / 'params.yaml', plain=True)
    opt = bench_params('mde-rec-96', REPO / 'params.yaml')
    default = load_params(REPO / 'params.yaml')
    assert not any(plain['train'][k] for k in OPTIMIZATIONS)
    assert {k: opt['train'][k] for k in OPTIMIZATIONS} == {k: default['train'][k] for k in OPTIMIZATIONS}
    assert default['train']['amp'] == 'auto' and default['train']['fused_optimizer']   # bf16 where it pays; fused on
    assert opt['model']['fc_dim'] == 4000 and opt['data']['img_size'] == 96 and opt['train']['batch_size'] == 24
    assert all(opt['losses'][k] > 0 for k in ('completion', 'reconstruction', 'perceptual', 'adversarial', 'hns'))
    assert set(PLAIN) == {f'train.{k}' for k in OPTIMIZATIONS}


def test_run_json_says_which_path_the_trainer_took(tmp_path):
    p = load_params(REPO / 'params.yaml')
    for k, v in {**SMOKE, 'data.root': str(tmp_path / 'data'), 'train.steps': 2}.items(): set_param(p, k, v)
    train(p, tmp_path / 'run')
    run = json.loads((tmp_path / 'run' / 'run.json').read_text())
    amx, bf16 = cpu_has_amx(), cpu_has_avx512_bf16()
    fast_bf16 = amx or (bf16 and cpu_bf16_gain() >= BF16_MIN_GAIN)   # auto: bf16 autocast where the CPU does it fast
    assert p['train']['channels_last'] == 'auto'                      # auto: channels-last on a CPU with bf16 units
    assert run['optimizations'] == {'amp_bf16': fast_bf16, 'channels_last': amx or bf16,
                                    'compile': False, 'fused_optimizer': True, 'deterministic': False}
    assert run['amp_bf16'] is fast_bf16 and run['amp_reason'] == amp_choice('auto', 'cpu')[1]
    assert run['amp_reason'].startswith('auto: this CPU has ' + ('AMX' if amx else 'avx512_bf16' if bf16 else 'neither'))
    assert run['channels_last_reason'].startswith('auto: ' + ('this CPU has' if amx or bf16 else 'no gain measured'))
    set_param(p, 'train.amp', True); set_param(p, 'train.channels_last', True)    # forced, whatever the CPU
    train(p, tmp_path / 'bf16')
    run = json.loads((tmp_path / 'bf16' / 'run.json').read_text())
    assert run['amp_bf16'] is True and run['amp_reason'] == 'train.amp: true (set)'
    assert run['optimizations']['channels_last'] is True and run['channels_last_reason'] == 'train.channels_last: true (set)'
    set_param(p, 'train.amp', False); set_param(p, 'train.fused_optimizer', False)
    train(p, tmp_path / 'plain')
    run = json.loads((tmp_path / 'plain' / 'run.json').read_text())
    assert run['optimizations']['amp_bf16'] is False and not run['optimizations']['fused_optimizer']


def test_the_command_line(tmp_path):
    r = subprocess.run([sys.executable, '-m', 'mde.bench', '--smoke', '--steps', '2', '--models', 'ce-32',
                        '--out', str(tmp_path), '--device', 'cpu', '--params', str(REPO / 'params.yaml')],
                       capture_output=True, text=True, cwd=REPO, timeout=600)
    assert r.returncode == 0, r.stderr
    assert 'ce-32' in r.stdout and (tmp_path / 'bench.json').exists()
    bad = subprocess.run([sys.executable, '-m', 'mde.bench', '--models', 'vgg'], capture_output=True, text=True,
                         cwd=REPO, timeout=120)
    assert bad.returncode == 2 and 'invalid choice' in bad.stderr


def test_the_completion_benchmark_completes_every_image_and_says_how(tmp_path):
    from mde.bench import COMPLETE_TARGET_S, bench_complete
    r = bench_complete(n=3, size=64, out=tmp_path, path=REPO / 'params.yaml', batch_size=2)
    assert r['images'] == 3 and r['seconds'] > 0 and r['images_per_s'] == pytest.approx(3 / r['seconds'], rel=0.01)
    assert r['target_s'] == COMPLETE_TARGET_S and r['model'].startswith('the embedded default')
    assert json.loads((tmp_path / 'complete.json').read_text())['images'] == 3
    assert '3 JPEGs of 64x64' in (tmp_path / 'complete.md').read_text()
