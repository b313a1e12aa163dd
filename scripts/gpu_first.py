"""The first lent GPU: everything worth measuring on it, in one run of under 8 minutes, each result written the moment
it exists, so that a timeout loses only the step it cut (docs/speed.md, "The first GPU").

Steps, in order (each writes <out>/<step>.json; <out>/summary.json says which ran, how long, and what failed):
  env      torch/CUDA versions, the device, bf16 support, every `mde` module imported (the device image has torch,
           torchvision, numpy, pillow, pyyaml, tqdm and matplotlib; no nbdev, DVC or papermill)
  profile  the paper-size MDE-REC (96 px, batch 24, every loss) as the trainer runs it: ms per update with no
           instrumentation (one sync at the end), kernels (on a CPU: aten ops) and device busy time per update from
           torch.profiler, and the time to save and to read a checkpoint
  bench    `python -m mde.bench` (plain against optimized, fraction of the matmul peak, losses compared)
  train    a short real-data run of MDE-REC (REC10-alt) at the paper's size on CelebA (`--data`: the folder holding
           celeba-subset.tar.gz), as many updates as the budget leaves
  eval     the model from `train` evaluated on the device and on the CPU: pSNR/SSIM per scenario, and the largest
           difference against the stated tolerance (EVAL_TOL_DB)
  tests    the CUDA tests of the suite (pytest -k cuda), where pytest is installed

    python scripts/gpu_first.py --out $OUT --data gpu_data          # on the lent GPU (the device tool's $OUT)
    python scripts/gpu_first.py --device cpu --smoke --out /tmp/g   # the CPU rehearsal at toy sizes (tests, CI)
"""
import argparse, importlib, json, os, platform, subprocess, sys, time, traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch

from mde.bench import bench_params, run_bench
from mde.build import build, pick_device
from mde.checkpoint import CheckpointWriter, read_checkpoint, save_checkpoint
from mde.provenance import device_name
from mde.step import BatchSource, make_batch, step_schedulers, train_step

EVAL_TOL_DB = 0.05         # device and CPU evaluation of one model agree within this pSNR (dB); SSIM within 1e-3
STEPS = ('env', 'profile', 'bench', 'train', 'eval', 'tests')
SMOKE_TRAIN = {'data.name': 'digits', 'data.img_size': 16, 'data.limit': 64, 'data.eval_images': 16,
               'model.widths': [8, 16], 'model.d_widths': [8, 16], 'model.convs_per_block': 1, 'model.fc_dim': 32,
               'model.r_base': 4, 'model.perceptual_layers': 2, 'train.batch_size': 8, 'losses.vgg_weights': 'random'}


def sync(dev):
    if dev.type == 'cuda': torch.cuda.synchronize(dev)


def env(a, dev):
    mods = sorted(p.stem for p in (ROOT / 'mde').glob('*.py') if not p.stem.startswith('_'))
    failed = {}
    for m in mods:
        try: importlib.import_module(f'mde.{m}')
        except Exception as e: failed[m] = f'{type(e).__name__}: {e}'
    cuda = dev.type == 'cuda'
    return {'device': device_name(dev), 'torch': torch.__version__, 'cuda': torch.version.cuda,
            'cudnn': torch.backends.cudnn.version() if cuda else None,
            'capability': list(torch.cuda.get_device_capability(dev)) if cuda else None,
            'memory_gib': round(torch.cuda.get_device_properties(dev).total_memory / 2**30, 1) if cuda else None,
            'bf16': torch.cuda.is_bf16_supported() if cuda else None, 'python': platform.python_version(),
            'cpu_count': os.cpu_count(), 'modules': len(mods), 'imports_failed': failed}


def profile(a, dev):
    "The trainer's update at the paper's size (toy sizes with --smoke), timed without instrumentation."
    p = bench_params('mde-rec-96', ROOT / 'params.yaml', smoke=a.smoke)
    size, bs = p['data']['img_size'], p['train']['batch_size']
    setup = build(p, dev)
    images = torch.randint(0, 256, (max(4 * bs, 64), 3, size, size), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    source = BatchSource(images, bs, p['seed'], device=dev)
    updates = 3 if a.smoke else 30 if dev.type == 'cuda' else 4
    s = 0
    for _ in range(3 if dev.type == 'cuda' else 1):                  # warm-up: kernels chosen, caches filled
        train_step(setup, make_batch(setup, source, s)); step_schedulers(setup); s += 1
    sync(dev); t0 = time.perf_counter()
    for _ in range(updates):
        train_step(setup, make_batch(setup, source, s)); step_schedulers(setup); s += 1
    sync(dev); ms = (time.perf_counter() - t0) / updates * 1e3
    from torch.profiler import ProfilerActivity, profile as tprofile
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if dev.type == 'cuda' else [])
    with tprofile(activities=acts) as prof:
        train_step(setup, make_batch(setup, source, s)); step_schedulers(setup); sync(dev)
    ev = prof.events()
    if dev.type == 'cuda':
        kern = [e for e in ev if e.device_type == torch.autograd.DeviceType.CUDA]
        busy_ms = sum(e.time_range.elapsed_us() for e in kern) / 1e3
    else:
        kern = [e for e in ev if e.name.startswith('aten::') and e.cpu_parent is None]   # top-level ops
        busy_ms = None
    ck = Path(a.out) / 'profile.ckpt'
    t0 = time.perf_counter(); save_checkpoint(setup, s, ck, keep_previous=False); save_s = time.perf_counter() - t0
    t0 = time.perf_counter(); read_checkpoint(ck); read_s = time.perf_counter() - t0
    writer = CheckpointWriter(background=True)        # the trainer's way on a GPU: the update waits for the snapshot only
    t0 = time.perf_counter(); writer.save(setup, s, ck, keep_previous=False); snap_s = time.perf_counter() - t0
    writer.wait(); bg_s = time.perf_counter() - t0
    mb = ck.stat().st_size / 2**20
    ck.unlink()
    r = {'img_size': size, 'batch_size': bs, 'images_placement': source.placement, 'amp_bf16': setup.amp,
         'ms_per_update': round(ms, 2), 'timed_updates': updates, 'images_per_s': round(bs / ms * 1e3, 1),
         'kernels_per_update' if dev.type == 'cuda' else 'top_level_ops_per_update': len(kern),
         'device_busy_ms_per_update': None if busy_ms is None else round(busy_ms, 2),
         'device_busy_fraction': None if busy_ms is None else round(busy_ms / ms, 3),
         'checkpoint_mib': round(mb, 1), 'checkpoint_save_s': round(save_s, 3), 'checkpoint_read_s': round(read_s, 3),
         'checkpoint_background_blocks_s': round(snap_s, 3), 'checkpoint_background_total_s': round(bg_s, 3),
         'paper_schedule_hours': round(300_000 * ms / 1e3 / 3600, 2) if not a.smoke else None}
    return r


def bench(a, dev):
    r = run_bench(device=str(dev), out=Path(a.out) / 'bench', path=ROOT / 'params.yaml', smoke=a.smoke,
                  steps=3 if a.smoke else None, progress=lambda s: print('  bench:', s, flush=True),
                  compiled=a.compile)
    return {k: r[k] for k in ('device', 'peak_tflops', 'seconds', 'speedup', 'losses_match') if k in r} | {
        'models': [{k: m.get(k) for k in ('model', 'speedup', 'losses_match', 'paper_schedule_hours')} |
                   {c: {k: m[c].get(k) for k in ('images_per_s', 'fraction_of_peak', 'peak_memory_gib')}
                    for c in ('plain', 'optimized', 'compiled') if c in m}
                   for m in r['models']]}


def _set(k, v): return ['--set', f'{k}={json.dumps(v) if isinstance(v, list) else v}']


def train(a, dev, seconds):
    out = Path(a.out) / 'train'
    if a.smoke: sets = {**SMOKE_TRAIN, 'train.steps': 4, 'data.root': str((Path(a.out) / 'data').resolve())}   # not the repository's data/
    else:
        data = Path(a.data)
        if not (data / 'celeba-subset.tar.gz').is_file() and not (data / 'img_align_celeba').is_dir():
            raise FileNotFoundError(f"no CelebA in {data} (celeba-subset.tar.gz or img_align_celeba/): copy "
                                    "../shared/data/celeba-subset.tar.gz and its landmark file into it and name it in carry")
        prof = Path(a.out) / 'profile.json'      # the measured update time, when the profile step ran and succeeded
        ms = (json.loads(prof.read_text()) if prof.is_file() else {}).get('ms_per_update') or 100
        steps = a.train_steps or int(max(50, min(5000, (seconds - 90) / (ms / 1e3))) // 50 * 50)   # ~90 s to decode the data
        sets = {'profile': 'paper-celeba', 'data.source': str(data.resolve()), 'train.steps': steps,
                'train.ckpt_every': max(1, steps // 2), 'train.eval_every': steps, 'train.sample_every': steps,
                'train.log_every': 50, 'losses.vgg_weights': 'random'}
    sets['train.device'] = str(dev)
    cmd = [sys.executable, '-m', 'mde.trainer', '--run', 'REC10-alt', '--out', str(out), '--no-progress',
           *[x for k, v in sets.items() for x in _set(k, v)]]
    t0 = time.perf_counter()
    log = lambda o, e: (Path(a.out) / 'train.log').write_text(f"{' '.join(cmd)}\n{o or ''}"[-20000:] + '\n--- stderr ---\n' + (e or '')[-20000:])
    try: p = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=max(30, seconds),
                            env={**os.environ, 'PYTHONPATH': str(ROOT)})
    except subprocess.TimeoutExpired as e:       # what it printed says how far it got
        log(*(x.decode(errors='replace') if isinstance(x, bytes) else x for x in (e.stdout, e.stderr))); raise
    wall = time.perf_counter() - t0
    log(p.stdout, p.stderr)
    if p.returncode: raise RuntimeError(f"the trainer exited {p.returncode}: {p.stderr.strip().splitlines()[-1] if p.stderr.strip() else ''}")
    run = json.loads((out / 'run.json').read_text())
    timing = json.loads((out / 'timing.json').read_text()) if (out / 'timing.json').is_file() else {}
    return {'settings': sets, 'wall_s': round(wall, 1), 'steps': sets['train.steps'], 'amp_bf16': run.get('amp_bf16'),
            'amp_reason': run.get('amp_reason'), 'timing': timing,
            'metrics': json.loads(m.read_text()) if (m := out / 'dvclive' / 'metrics.json').is_file() else None}


def evaluate_both(a, dev):
    from mde.data import load_dataset
    from mde.evaluation import evaluate
    from mde.inference import load_model
    f = Path(a.out) / 'train' / 'model.pt'
    on_dev, on_cpu = load_model(f, device=dev), load_model(f, device='cpu')
    d = on_cpu.params['data']
    ds = load_dataset(d['name'], 'test', root=ROOT / d.get('root', 'data'), img_size=d['img_size'], source=d.get('source'),
                      limit=64 if a.smoke else 128)
    tests = ['REC@0.1', 'I@0.25', 'RE@0.25']
    t0 = time.perf_counter(); g = evaluate(on_dev, ds.images, tests, progress=False, device=dev); tg = time.perf_counter() - t0
    t0 = time.perf_counter(); c = evaluate(on_cpu, ds.images, tests, progress=False, device='cpu'); tc = time.perf_counter() - t0
    diff = max(abs(x['psnr'] - y['psnr']) for x, y in zip(g, c))
    dssim = max(abs(x['ssim'] - y['ssim']) for x, y in zip(g, c))
    return {'images': len(ds), 'scenarios': tests, 'device_s': round(tg, 2), 'cpu_s': round(tc, 2),
            'psnr_device': [round(x['psnr'], 4) for x in g], 'psnr_cpu': [round(x['psnr'], 4) for x in c],
            'max_psnr_diff_db': diff, 'max_ssim_diff': dssim, 'tolerance_db': EVAL_TOL_DB,
            'within_tolerance': diff <= EVAL_TOL_DB and dssim <= 1e-3}


def tests(a, dev, seconds):
    try: import pytest  # noqa: F401
    except ImportError: return {'skipped': 'pytest is not installed on this machine'}
    p = subprocess.run([sys.executable, '-m', 'pytest', '-q', '-p', 'no:cacheprovider', '-k', 'cuda or gpu',
                        'tests/test_evaluation.py', 'tests/test_inference.py', 'tests/test_masks.py', 'tests/test_build.py'],
                       cwd=ROOT, capture_output=True, text=True, timeout=max(30, seconds))
    return {'returncode': p.returncode, 'tail': p.stdout.strip().splitlines()[-15:]}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--out', default=os.environ.get('OUT', 'outputs/gpu_first'))
    ap.add_argument('--device', default='auto', help="auto (the GPU when there is one), cuda or cpu")
    ap.add_argument('--data', default='gpu_data', help='the folder holding celeba-subset.tar.gz (carried to the device)')
    ap.add_argument('--budget', type=float, default=450, help='seconds for the whole run (default 450: under 8 minutes)')
    ap.add_argument('--smoke', action='store_true', help='toy sizes, digits: checks every step runs, measures nothing')
    ap.add_argument('--compile', action='store_true', help='the benchmark also times torch.compile (a third configuration; '
                    'compiling adds a minute or more per model)')
    ap.add_argument('--train-steps', type=int, default=None, help='updates of the train step (default: what the budget allows)')
    ap.add_argument('--steps', default=','.join(STEPS), help=f'comma-separated subset of {",".join(STEPS)}')
    a = ap.parse_args(argv)
    dev, start = pick_device(a.device), time.perf_counter()
    out = Path(a.out); out.mkdir(parents=True, exist_ok=True)
    left = lambda: a.budget - (time.perf_counter() - start)
    runs = {'env': lambda: env(a, dev), 'profile': lambda: profile(a, dev), 'bench': lambda: bench(a, dev),
            'train': lambda: train(a, dev, min(left() - 60, 180)), 'eval': lambda: evaluate_both(a, dev),
            'tests': lambda: tests(a, dev, left() - 5)}
    need = {'bench': 120, 'train': 90, 'eval': 60, 'tests': 20} if not a.smoke else {}
    summary = {'device': device_name(dev), 'smoke': a.smoke, 'budget_s': a.budget, 'steps': {}}
    for name in a.steps.split(','):
        if name not in runs: ap.error(f"unknown step {name!r}; steps: {', '.join(STEPS)}")
        if left() < need.get(name, 0):
            summary['steps'][name] = {'skipped': f'{left():.0f} s left of the budget, {need[name]} s needed'}
        else:
            t0 = time.perf_counter()
            try: r, ok = runs[name](), True
            except Exception as e:
                r, ok = {'error': f'{type(e).__name__}: {e}', 'traceback': traceback.format_exc()[-4000:]}, False
            (out / f'{name}.json').write_text(json.dumps(r, indent=1, default=str))
            summary['steps'][name] = {'ok': ok, 'seconds': round(time.perf_counter() - t0, 1)}
            print(f"gpu_first: {name} {'ok' if ok else 'FAILED: ' + r['error']} ({summary['steps'][name]['seconds']} s)", flush=True)
        summary['seconds'] = round(time.perf_counter() - start, 1)
        (out / 'summary.json').write_text(json.dumps(summary, indent=1))
    return 0 if all(s.get('ok', True) for s in summary['steps'].values()) else 1


if __name__ == '__main__':
    sys.exit(main())
