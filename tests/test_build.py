"""mde.build: what `build` makes from parameters; here the precision choice `train.amp` (true | false | auto)."""
import json
from pathlib import Path

import pytest
import torch

import mde.build as B
from mde.params import SMOKE, load_params, set_param, smoke_params
from mde.build import build

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize('amx,bf16,gain,use', [(True, True, 0.5, True), (False, True, 2.5, True), (False, True, 0.56, False),
                                              (False, False, 2.5, False)])
def test_auto_takes_bf16_on_a_cpu_only_where_it_pays(monkeypatch, amx, bf16, gain, use):
    # AMX: always; avx512_bf16 without AMX: where bf16 matmuls measured fast enough (an AMD EPYC 2.5x: yes; a Xeon
    # 0.56x: no); neither: never (the CPU would emulate bf16)
    monkeypatch.setattr(B, 'cpu_has_amx', lambda: amx)
    monkeypatch.setattr(B, 'cpu_has_avx512_bf16', lambda: bf16)
    monkeypatch.setattr(B, 'cpu_bf16_gain', lambda: gain)
    got, why = B.amp_choice('auto', 'cpu')
    assert got is use and why.startswith('auto: this CPU has ' + ('AMX' if amx else 'avx512_bf16' if bf16 else 'neither'))
    assert (f'at least {B.BF16_MIN_GAIN}x' in why) == (use and not amx)
    assert B.channels_last_choice('auto', 'cpu')[0] is (amx or bf16)
    assert B.channels_last_choice('auto', 'cuda')[0] and B.channels_last_choice(False, 'cuda')[0] is False
    assert B.amp_choice('auto', 'cuda') == (True, 'auto: a CUDA GPU')          # a GPU: always bf16 under auto
    assert B.amp_choice(True, 'cpu')[0] is True and B.amp_choice(False, 'cpu')[0] is False   # forced either way


def test_setup_autocasts_as_amp_choice_decides(monkeypatch):
    p = load_params(REPO / 'params.yaml')
    for k, v in SMOKE.items(): set_param(p, k, v)
    assert p['train']['amp'] == 'auto'                                          # the default
    for amx in (True, False):
        monkeypatch.setattr(B, 'cpu_has_amx', lambda: amx)
        monkeypatch.setattr(B, 'cpu_has_avx512_bf16', lambda: False)
        setup = B.build(p)
        assert setup.amp is amx and setup.channels_last is amx
        assert next(setup.net('G').parameters()).is_contiguous(memory_format=torch.channels_last) or not amx
        with setup.autocast():
            y = torch.nn.functional.linear(torch.ones(2, 3), torch.ones(4, 3))
        assert y.dtype == (torch.bfloat16 if amx else torch.float32)


def test_a_bad_amp_setting_is_refused():
    with pytest.raises(ValueError, match="train.amp must be true, false or 'auto'"):
        B.amp_choice('yes', 'cpu')
    with pytest.raises(ValueError, match="train.amp must be true, false or 'auto'"):
        load_params(REPO / 'params.yaml', {'train.amp': 'fast'})


def test_a_compiled_model_saves_and_loads_without_compile_prefixes(tmp_path):
    # torch.compile wraps each network in an OptimizedModule whose state_dict keys start with `_orig_mod.`; the
    # saved model must hold the bare network's keys so that it loads without compile (wrapping is lazy: no compiler runs)
    from mde.inference import load_model, save_model
    from mde.networks import Generator
    s = build(smoke_params({'train.compile': True}))
    assert type(s.nets['G']).__name__ == 'OptimizedModule' and isinstance(s.net('G'), Generator)
    save_model(tmp_path / 'model.pt', s.params, {n: s.net(n) for n in s.nets}, step=1)
    state = torch.load(tmp_path / 'model.pt', weights_only=True)
    assert not any(k.startswith('_orig_mod.') for k in state['nets']['G'])
    m = load_model(tmp_path / 'model.pt')
    for k, v in s.net('G').state_dict().items(): assert torch.equal(m.net.state_dict()[k], v)


def test_a_cpu_compiled_run_trains_and_its_model_loads(tmp_path):
    "A real torch.compile (inductor on the CPU) of a few updates, then load_model on the model.pt the trainer wrote."
    import shutil
    from mde.inference import load_model
    from mde.trainer import train
    if not (shutil.which('gcc') or shutil.which('cc') or shutil.which('clang')):
        pytest.skip('torch.compile on the CPU needs a C compiler (gcc, cc or clang) on PATH; none here')
    p = smoke_params({'data.root': str(tmp_path / 'data'), 'train.compile': True, 'train.steps': 2,
                      'train.eval_every': 2, 'train.sample_every': 2, 'train.ckpt_every': 2})
    train(p, tmp_path / 'run')
    run = json.loads((tmp_path / 'run' / 'run.json').read_text())
    assert run['optimizations']['compile'] is True
    state = torch.load(tmp_path / 'run' / 'model.pt', weights_only=True)
    assert not any(k.startswith('_orig_mod.') for net in state['nets'].values() for k in net)
    m = load_model(tmp_path / 'run' / 'model.pt')
    assert m.complete(torch.rand(1, 3, 16, 16), torch.ones(1, 3, 16, 16)).shape == (1, 3, 16, 16)
