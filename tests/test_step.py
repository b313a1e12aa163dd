"""mde.step: one update of every network, with no host-device synchronisation inside it."""
import math

import pytest
import torch

from mde.params import smoke_params
from mde.build import build
from mde.data import load_dataset
from mde.step import BatchSource, loss_values, make_batch, step_schedulers, train_step

SYNCS = ('item', 'tolist', '__bool__', '__float__', '__int__', '__index__', 'cpu', 'numpy')


def count_syncs(monkeypatch, fn):
    "Calls of the Tensor methods that read a value to the host (each is a wait for a GPU) made while `fn` runs."
    calls = {'n': 0}
    for name in SYNCS:
        real = getattr(torch.Tensor, name)
        def counted(self, *a, _real=real, **k):
            calls['n'] += 1
            return _real(self, *a, **k)
        monkeypatch.setattr(torch.Tensor, name, counted)
    out = fn()
    monkeypatch.undo()
    return calls['n'], out


@pytest.mark.parametrize('over', [
    {'losses.adversarial': 0.01, 'losses.hns': 10.0, 'losses.hns_variant': 'alt', 'losses.hns_real': True},
    {'losses.hns': 0.1, 'losses.hns_variant': 'coord', 'mask': 'rec'},
    {'arch': 'ce', 'data.img_size': 32},
], ids=['mde-all-players', 'mde-coord', 'ce'])
def test_an_update_reads_nothing_back_to_the_host(tmp_path, monkeypatch, over):
    p = smoke_params({'data.root': str(tmp_path / 'data'), **over})
    setup = build(p)
    src = BatchSource(load_dataset('digits', 'train', root=p['data']['root'], img_size=p['data']['img_size']).images,
                      p['train']['batch_size'], p['seed'])
    batches = [make_batch(setup, src, s) for s in range(3)]
    def updates():
        out = None
        for b in batches: out = train_step(setup, b); step_schedulers(setup)
        return out
    n, losses = count_syncs(monkeypatch, updates)
    assert n == 0, f'{n} host reads in 3 updates'
    assert all(isinstance(v, torch.Tensor) and v.ndim == 0 for v in losses.values())
    n, values = count_syncs(monkeypatch, lambda: loss_values(losses))
    assert n == 1 and all(math.isfinite(v) for v in values.values())     # read when logged: one transfer
