"Shared test helpers (pytest puts tests/ on sys.path, so test files `from helpers import ...`)."
import torch


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
