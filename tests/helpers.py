"Shared test helpers (pytest puts tests/ on sys.path, so test files `from helpers import ...`)."
from pathlib import Path

import torch
import yaml

REPO = Path(__file__).resolve().parents[1]


def rec_like_masks(n=2, size=16, seed=0):
    "Per-channel random kept rectangles of side size/2 (1 = kept), like REC masks, built without mde.masks."
    g = torch.Generator().manual_seed(seed)
    M = torch.zeros(n, 3, size, size)
    for i in range(n):
        for c in range(3):
            t, l = torch.randint(0, size // 2, (2,), generator=g).tolist()
            M[i, c, t:t + size // 2, l:l + size // 2] = 1
    return M


def assert_same_weights(a, b):
    "Two {net: state_dict} mappings hold exactly equal tensors."
    assert a.keys() == b.keys()
    for net in a:
        for k in a[net]: assert torch.equal(a[net][k], b[net][k]), f'{net}.{k} differs'


def shrink_ce_runs(conf, sweep=2, steps=3):
    """Make the CE report's runs of a parameters mapping (`params.yaml` as read) tiny: `steps` updates on 48 digits,
    and only the first `sweep` runs of its optimizer sweep kept."""
    st = conf['studies']['ce_report']
    for name in st['sweep'][sweep:]: conf['sweep_runs'].pop(name)
    st['sweep'] = st['sweep'][:sweep]
    st['train_images'] = 16
    for name in [*st['runs'].values(), *st['sweep']]:
        (conf['runs'] if name in conf['runs'] else conf['sweep_runs'])[name]['embedded'] = {
            'data': {'name': 'digits', 'limit': 48, 'eval_images': 16},
            'train': {'steps': steps, 'batch_size': 8, 'eval_every': 1, 'log_every': 1, 'ckpt_every': steps,
                      'sample_every': steps}}
    return conf


def runs_file(folder, runs, studies=None):
    """`folder/params.yaml`: the repository's params.yaml with `runs` as its only named runs (no sweep runs) and
    `studies` as its studies section (none when None: the repository's name runs this file lacks); the repository's
    profiles linked beside it. Returns its path."""
    doc = yaml.safe_load((REPO / 'params.yaml').read_text())
    doc['runs'] = runs
    doc.pop('sweep_runs', None)
    doc.pop('studies', None)
    if studies is not None: doc['studies'] = studies
    f = Path(folder) / 'params.yaml'
    f.write_text(yaml.safe_dump(doc, sort_keys=False))
    if not (Path(folder) / 'profiles').exists(): (Path(folder) / 'profiles').symlink_to(REPO / 'profiles')
    return f


def untrained_runs(path, overrides, root, names=None):
    """Write `<root>/<name>/model.pt` for each named run of params file `path` (with dotted `overrides`): its networks
    as built, untrained, at step 0; what the studies load as the run's model, without training. Returns `root`."""
    from mde.build import build_networks
    from mde.inference import save_model
    from mde.params import load_params, run_names
    for name in names or run_names(path):
        p = load_params(path, overrides, run=name)
        nets = build_networks(p)
        save_model(Path(root) / name / 'model.pt', p, {n: nets[n] for n in ('G', 'CE') if n in nets}, 0)
    return Path(root)


def fake_celeba(n=120, size=16, split='train', with_attrs=True, seed=0):
    "A CelebA-like ImageDataset: attribute 0 = bright, 1 = reddish, the other 38 random; some NaN."
    from mde.data import ImageDataset
    g = torch.Generator().manual_seed(seed)
    a = (torch.rand(n, 40, generator=g) < 0.5).float()
    x = torch.rand(n, 3, size, size, generator=g) * 0.3
    x += 0.4 * a[:, 0, None, None, None]
    x[:, 0] += 0.3 * a[:, 1, None, None]
    a[torch.rand(n, 40, generator=g) < 0.05] = float('nan')
    a[0] = float('nan')                                           # one face without any attribute
    extras = {'attrs': a if with_attrs else torch.full((n, 40), float('nan'))}
    return ImageDataset((x * 255).round().to(torch.uint8), -torch.ones(n), extras,
                        {'name': 'celeba', 'split': split, 'attr_names': [f'a{i}' for i in range(40)]})
