"""Why the trained encoders do (not) transfer: two diagnostics on a finished faces-cpu run (docs/faces.md).

1. Does the decoder use the FC representation z? Completion pSNR over the missing region of held-out faces, masks of
   each run's own kind, with each image's own z, with z replaced by the batch mean of z (the FC path's image-specific
   information removed, the skip connections intact), and with z = 0; plus the share of FC units that never fire.
2. Where does a frozen linear probe find face structure? The paper's probe point (the FC output z) against the deepest
   skip feature map (the last encoder block's output, which the decoder reads directly; average-pooled to 3x3), for
   trained encoders, random weights and the image-blind predictor.

    python scripts/faces_diagnostics.py [--runs-dir outputs/runs] [--params params.yaml] [--out results/faces-cpu]

Models trained outside the pipeline (the levers of scripts/faces_levers.sh) join both tables with
`--extra NAME=PATH/model.pt,...`; `--prefix` names the two tables (default `diagnostics`).
"""
import argparse, sys, time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from mde.tables import write_table
from mde.inference import load_model
from mde.probing import RANDOM, fit_head, predict_head, probe_data, probe_scores, random_model, trivial_row
from mde.studies import data_split, load_run

ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
ap.add_argument('--runs-dir', default='outputs/runs'); ap.add_argument('--params', default='params.yaml')
ap.add_argument('--out', default='results/faces-cpu'); ap.add_argument('--images', type=int, default=256)
ap.add_argument('--usage-runs', default='I,RI,Col1,Col2,RE25,RE33,RE50,REC10,REC30,REC50,REC10-pa,REC10-coord,'
                'REC10-rec,REC10-alt,REC10-rec-bce,REC10-alt-bce,SQ25')
ap.add_argument('--probe-runs', default='I,RI,REC10,REC10-alt'); ap.add_argument('--fit-images', type=int, default=2000)
ap.add_argument('--probe-steps', type=int, default=3000)
ap.add_argument('--extra', default='', help='NAME=PATH,...: model.pt files trained outside the pipeline, added to both tables')
ap.add_argument('--prefix', default='diagnostics', help='table names: <prefix>_fc_usage, <prefix>_probe_point')
a = ap.parse_args()
t0 = time.time()
extra = dict(e.split('=', 1) for e in a.extra.split(',') if e)
models = {r: load_run(r, a.params, a.runs_dir) for r in a.usage_runs.split(',') if r}
for name, path in extra.items():
    models[name] = load_model(path)
    models[name].name = name
first = next(iter(models.values()))
Z = data_split(first.params['data'], 'test', a.images).images.float().div(255)

def decode(G, z, skips):
    h = G.defc(z)
    for stage, skip in zip(G.dec, reversed(skips)): h = stage(h, skip)
    return G.out(h)

def psnr_missing(Y, M):
    miss = (1 - M).expand_as(Z)
    err = ((Y - Z) ** 2 * miss).sum((1, 2, 3)) / miss.sum((1, 2, 3)).clamp_min(1)
    return (10 * torch.log10(1 / err.clamp_min(1e-10))).mean().item()

usage = []
for name, m in models.items():
    G = m.net.eval()
    M = m.masks(Z, generator=torch.Generator().manual_seed(2024)).float()
    with torch.no_grad():
        z, skips = G._encode(M * Z)
        own, mean, zero = (psnr_missing(decode(G, zz, skips), M) for zz in
                           (z, z.mean(0, keepdim=True).expand_as(z), torch.zeros_like(z)))
    mp = m.params['model']
    usage.append({'run': name, 'mask': m.params['mask'], 'S': m.params['S'], 'steps': m.step, 'fc_dim': mp['fc_dim'],
                  'skips': len(mp['widths']) if mp.get('skips') is None else mp['skips'],
                  'pSNR own z': own,
                  'pSNR batch-mean z': mean, 'pSNR z = 0': zero, 'own - mean (dB)': own - mean,
                  'units firing per image': (z > 0).float().mean().item(),
                  'units never firing': ((z > 0).float().mean(0) == 0).float().mean().item()})
    print(usage[-1], flush=True)
img = first.img_size
write_table(usage, a.out, f'{a.prefix}_fc_usage', title="Does the decoder use the FC representation? (held-out faces, "
            f"{a.images} test images, masks of each run's own kind, seed 2024)",
            notes=["pSNR over the missing region; 'batch-mean z': every image's FC code replaced by the mean code of the "
                   "batch, so only the skip connections carry that image", "a difference near 0 dB means the decoder "
                   "completes from the skips alone: nothing forces z to describe the face"])

d = first.params['data']
data = probe_data(d, 0.2, fit_images=a.fit_images)
keys = ('landmark_error', 'attr_error', 'attr_balanced_error')
rows = [{'model': 'image-blind (mean shape, majority)', 'features': '-', 'dims': 0,
         **{k: v for k, v in trivial_row(data).items() if k in keys}}]
probe = {RANDOM: random_model(first.params, seed=first.params['seed'])}
probe.update({r: models[r] if r in models else load_run(r, a.params, a.runs_dir) for r in a.probe_runs.split(',') if r})
probe.update({name: models[name] for name in extra})

def feats(G, X, where):
    out = []
    with torch.no_grad():
        for i in range(0, len(X), 256):
            z, skips = G._encode(X[i:i + 256].float().div(255))
            out.append(z if where == 'fc' else F.adaptive_avg_pool2d(skips[-1], 3).flatten(1))
    return torch.cat(out)

for name, m in probe.items():
    G = m.net.eval()
    for where in ('fc', 'skip'):
        Ff, Fe = feats(G, data['fit'][0], where), feats(G, data['eval'][0], where)
        row = {'model': name, 'features': 'FC output z (the paper)' if where == 'fc' else 'deepest skip, pooled 3x3',
               'dims': Ff.shape[1]}
        for t in data['tasks']:
            fitted = fit_head(Ff, data['fit'][1][t], t, a.probe_steps, 16, 1e-3)
            row.update({k: v for k, v in probe_scores(predict_head(fitted, Fe), data['eval'][1][t], t, img).items() if k in keys})
        rows.append(row); print(row, flush=True)
write_table(rows, a.out, f'{a.prefix}_probe_point', title="Frozen linear probes at two points of the encoder",
            notes=[data['how'], *data['notes'], f"heads as the frozen probe: Adam 1e-3, {a.probe_steps} updates at batch 16",
                   "landmarks: pt-to-pt error in pixels of the 48 px input; attributes: % error (100 - accuracy) and "
                   "balanced error (the mean of the two per-class error rates; 50 = chance)"])
print(f"diagnostics written to {a.out} in {time.time() - t0:.0f} s")
