"""Host reads per training update (Tensor.item / tolist / __bool__ / __float__ / __int__ / __index__: each one is a
wait for the GPU on a GPU), in `train_step` and in the whole trainer loop, over 200 updates of the tiny three-player
MDE on the CPU:  python scripts/host_syncs.py   (docs/speed.md; tests/test_step.py asserts none in an update)"""
import sys, tempfile, torch
from pathlib import Path
import mde, mde.trainer as T
from mde.params import smoke_params
SYNCS = ('item', 'tolist', '__bool__', '__float__', '__int__', '__index__')
calls = {'n': 0, 'step': 0}
for name in SYNCS:
    real = getattr(torch.Tensor, name)
    def counted(self, *a, _real=real, **k):
        calls['n'] += 1; return _real(self, *a, **k)
    setattr(torch.Tensor, name, counted)
real_step = T.train_step
def step(*a, **k):
    n0 = calls['n']; out = real_step(*a, **k); calls['step'] += calls['n'] - n0; return out
T.train_step = step
T.heldout_metrics = lambda *a, **k: {}                   # evaluation and sample grids are not per update
T.sample_grid = lambda *a, **k: None
tmp = tempfile.mkdtemp()
over = {'data.root': tmp + '/data', 'losses.adversarial': 0.01, 'losses.hns': 10.0, 'train.steps': 200,
        'train.log_every': 25, 'train.ckpt_every': 100, 'train.eval_every': 200, 'train.sample_every': 200}
p = smoke_params(over)
import time
calls['n'] = calls['step'] = 0
T.train(p, Path(tmp) / 'run', progress=False)
print(f"{mde.__file__}: train_step {calls['step'] / 200:.2f} host reads/update; whole run (incl. build, final files) {calls['n'] / 200:.2f}")
