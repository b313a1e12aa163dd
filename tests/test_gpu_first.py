"""scripts/gpu_first.py, the prepared run for the first lent GPU, rehearsed on the CPU at toy sizes: every step runs,
writes its JSON the moment it is done, and a step that fails or has no time left is said so without stopping the rest."""
import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def run(*args, timeout=600):
    return subprocess.run([sys.executable, str(REPO / 'scripts' / 'gpu_first.py'), '--device', 'cpu', *args],
                          cwd=REPO, capture_output=True, text=True, timeout=timeout)


def test_every_step_runs_on_the_cpu_and_writes_its_result(tmp_path):
    r = run('--smoke', '--steps', 'env,profile,train,eval', '--out', str(tmp_path))
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    summary = json.loads((tmp_path / 'summary.json').read_text())
    assert list(summary['steps']) == ['env', 'profile', 'train', 'eval'] and all(s['ok'] for s in summary['steps'].values())
    env = json.loads((tmp_path / 'env.json').read_text())
    assert env['imports_failed'] == {} and env['modules'] > 20          # mde imports with the device image's packages
    prof = json.loads((tmp_path / 'profile.json').read_text())
    assert prof['images_placement'] == 'host'                          # on a GPU: 'device' or 'pinned host'
    assert prof['ms_per_update'] > 0 and prof['top_level_ops_per_update'] > 50 and prof['checkpoint_save_s'] > 0
    train = json.loads((tmp_path / 'train.json').read_text())
    assert train['steps'] == 4 and train['metrics']['step'] == 4 and (tmp_path / 'train' / 'model.pt').is_file()
    ev = json.loads((tmp_path / 'eval.json').read_text())
    assert ev['within_tolerance'] and ev['max_psnr_diff_db'] == 0 and len(ev['psnr_cpu']) == 3   # cpu vs cpu: equal


def test_a_failed_step_is_recorded_and_the_run_goes_on(tmp_path):
    r = run('--steps', 'eval,env', '--out', str(tmp_path))            # eval without a trained model: it fails
    assert r.returncode == 1 and 'eval FAILED: FileNotFoundError' in r.stdout
    summary = json.loads((tmp_path / 'summary.json').read_text())
    assert summary['steps']['eval']['ok'] is False and summary['steps']['env']['ok'] is True
    assert 'no model file' in json.loads((tmp_path / 'eval.json').read_text())['error']
    r = run('--steps', 'bench', '--budget', '10', '--out', str(tmp_path / 'b'))
    assert r.returncode == 0 and 'skipped' in json.loads((tmp_path / 'b' / 'summary.json').read_text())['steps']['bench']
