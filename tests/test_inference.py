"Tests of mde.inference: a trained model loaded by one function and used without any training state."
import pickle
from pathlib import Path

import pytest
import torch

from mde.build import build
from mde.inference import MODEL_FORMAT, Completer, heldout_metrics, load_model, model_state, save_model
from mde.params import smoke_params
from mde.trainer import train

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope='module')
def trained(tmp_path_factory):
    "A tiny MDE-REC and a tiny Context Encoder, trained for a few updates by the real trainer."
    tmp = tmp_path_factory.mktemp('inference')
    out = {}
    for name, over in {'mde': {'mask': 'rec', 'S': 0.1}, 'ce': {'arch': 'ce', 'data.img_size': 32}}.items():
        p = smoke_params({'data.root': str(tmp / 'data'), 'train.steps': 3, **over}, path=REPO / 'params.yaml')
        train(p, tmp / name)
        out[name] = tmp / name / 'model.pt'
    return out


def test_load_model_completes_with_my_own_masks(trained):
    m = load_model(trained['mde'])
    assert m.arch == 'mde' and m.step == 3 and m.img_size == 16 and not any(n.training for n in m.nets.values())
    Z = torch.rand(7, 3, 16, 16)
    M = torch.ones_like(Z)
    M[:, :, 4:12, 4:12] = 0                      # my own mask: a centre hole
    M[:, 1] = 0                                   # and the green channel dropped
    Y = m.complete(Z, M, batch_size=3)
    assert Y.shape == Z.shape and Y.dtype == torch.float32 and 0 <= Y.min() and Y.max() <= 1
    assert torch.allclose(Y, m.complete(Z, M, batch_size=64), atol=1e-6)      # batching does not change results
    assert torch.equal(m.complete(Z, M), m.complete(Z, M))                     # deterministic (eval mode)
    assert m.encode(M * Z).shape == (7, 32)


def test_model_holds_no_training_state(trained):
    state = torch.load(trained['mde'], map_location='cpu', weights_only=True)
    assert state['kind'] == 'mde-model' and state['format'] == MODEL_FORMAT
    assert not {'opts', 'scheds', 'rng'} & set(state)


def test_context_encoder_pastes_its_centre(trained):
    m = load_model(trained['ce'])
    Z = torch.rand(4, 3, 32, 32)
    M = m.masks(Z)
    Y = m.complete(Z, M)
    assert torch.equal(Y * M, Z * M)                             # the context is the input's
    assert not torch.allclose(Y[..., 8:24, 8:24], torch.zeros(1))  # the hole is filled
    with pytest.raises(ValueError, match='needs an MDE'):
        m.encode(Z)


@pytest.mark.parametrize('bad, words', [
    (lambda Z, M: (Z * 255, M), r'\[0, 1\]'), (lambda Z, M: (Z[:, :1], M[:, :1]), r'\(n, 3, 16, 16\)'),
    (lambda Z, M: (Z, M[:1]), "mask of Z's shape"), (lambda Z, M: (Z.to(torch.uint8), M), 'float images'),
    (lambda Z, M: (Z[:0], M[:0]), 'no images'),
])
def test_bad_input_is_refused_with_what_to_do(trained, bad, words):
    m = load_model(trained['mde'])
    Z = torch.rand(2, 3, 16, 16)
    with pytest.raises(ValueError, match=words):
        m.complete(*bad(Z, torch.ones_like(Z)))


def test_bad_model_files_are_refused_naming_the_file(trained, tmp_path):
    with pytest.raises(FileNotFoundError, match='nothing.pt.*train'):
        load_model(tmp_path / 'nothing.pt')
    junk = tmp_path / 'junk.pt'
    junk.write_bytes(b'not a model')
    with pytest.raises(ValueError, match='junk.pt is not a readable'):
        load_model(junk)
    state = torch.load(trained['mde'], map_location='cpu', weights_only=True)
    newer = tmp_path / 'newer.pt'
    torch.save({**state, 'format': MODEL_FORMAT + 1}, newer)
    with pytest.raises(ValueError, match='newer.pt has model format.*update mde'):
        load_model(newer)
    other = tmp_path / 'other.pt'
    torch.save({**state, 'kind': 'mde-classifier'}, other)
    with pytest.raises(ValueError, match="other.pt holds a 'mde-classifier'"):
        load_model(other)
    ckpt = trained['mde'].parent / 'checkpoints' / 'last.ckpt'
    with pytest.raises(ValueError, match='training checkpoint, not a model'):
        load_model(ckpt)
    shapes = tmp_path / 'shapes.pt'
    p = dict(state['params']); p['model'] = {**p['model'], 'fc_dim': 64}
    torch.save({**state, 'params': p}, shapes)
    with pytest.raises(ValueError, match='do not fit'):
        load_model(shapes)


class _Payload:
    def __reduce__(self): return (print, ('this code ran',))


def test_a_file_carrying_a_pickled_object_is_refused(trained, tmp_path, capsys):
    state = torch.load(trained['mde'], map_location='cpu', weights_only=True)
    evil = tmp_path / 'evil.pt'
    torch.save({**state, 'extra': _Payload()}, evil, pickle_module=pickle)
    with pytest.raises(ValueError, match=r'evil.pt carries pickled Python objects \(print\)'):
        load_model(evil)
    assert 'this code ran' not in capsys.readouterr().out


def test_live_and_loaded_models_agree(tmp_path):
    s = build(smoke_params({'mask': 'random'}, path=REPO / 'params.yaml'))
    save_model(tmp_path / 'model.pt', s.params, {n: s.net(n) for n in s.nets}, 0)
    images = torch.randint(0, 256, (20, 3, 16, 16), dtype=torch.uint8)
    live, loaded = Completer.from_setup(s), load_model(tmp_path / 'model.pt')
    assert heldout_metrics(live, images, seed=1) == pytest.approx(heldout_metrics(loaded, images, seed=1), rel=1e-6)
    assert s.net('G').training          # the live network is back in training mode


@pytest.mark.skipif(not torch.cuda.is_available(), reason='no CUDA device on this machine')
def test_gpu_completion_matches_cpu(trained):
    cpu, gpu = load_model(trained['mde']), load_model(trained['mde'], device='cuda')
    Z = torch.rand(4, 3, 16, 16)
    M = cpu.masks(Z, torch.Generator().manual_seed(0))
    assert torch.allclose(cpu.complete(Z, M), gpu.complete(Z.cuda(), M.cuda()).cpu(), atol=1e-4)
