"""Tests of mde.runlog: scalars per update in dvclive's layout without dvclive (RunLog), restored from a checkpoint's
state, read back (read_history) and drawn (plot_history, save_history_png)."""
import json
import shutil
import warnings

import matplotlib
import pytest
import torch

matplotlib.use('Agg')

from mde.runlog import RunLog, _in_dvc_repo, plot_history, read_history, save_history_png  # noqa: E402


def _logged(run, steps=(1, 2, 3)):
    log = RunLog(run / 'dvclive', use_dvclive=False)
    for step in steps: log.log({'loss/g_total': 1 / step, 'lr/G': 0.1, 'eval/psnr': 10 + step}, step)
    log.write_summary({'initial': {'psnr': 9.0}})
    return log


def test_the_plain_writer_writes_dvclives_layout(tmp_path):
    log = _logged(tmp_path)
    assert log.backend == 'plain' and log.live is None
    tsv = (tmp_path / 'dvclive' / 'plots' / 'metrics' / 'loss' / 'g_total.tsv').read_text()
    assert tsv == 'step\tg_total\n1\t1.0\n2\t0.5\n3\t0.3333333333333333\n'
    m = json.loads((tmp_path / 'dvclive' / 'metrics.json').read_text())
    assert m == {'loss': {'g_total': 1 / 3}, 'lr': {'G': 0.1}, 'eval': {'psnr': 13.0}, 'step': 3, 'initial': {'psnr': 9.0}}
    log.close()


def test_values_are_stored_as_floats(tmp_path):
    log = RunLog(tmp_path / 'dvclive', use_dvclive=False)
    log.log({'loss/d': torch.tensor(0.25), 'eval/n': 3}, 7)
    assert log.rows == {'loss/d': [(7, 0.25)], 'eval/n': [(7, 3.0)]}
    assert type(log.summary['eval']['n']) is float and log.summary['step'] == 7


def test_read_history_returns_steps_and_values(tmp_path):
    _logged(tmp_path)
    h = read_history(tmp_path)
    assert set(h) == {'loss/g_total', 'lr/G', 'eval/psnr'}
    assert h['eval/psnr'] == ([1, 2, 3], [11.0, 12.0, 13.0]) and h['loss/g_total'][0] == [1, 2, 3]
    assert read_history(tmp_path / 'nothing') == {}


def test_a_state_restores_the_history_even_after_the_files_were_deleted(tmp_path):
    log = _logged(tmp_path)
    state = log.state()
    log.rows['loss/g_total'].append((99, 0.0))                  # a copy: later logging does not change the state
    assert state['rows']['loss/g_total'][-1] == (3, 1 / 3)
    shutil.rmtree(tmp_path / 'dvclive')                         # `dvc repro` deletes outputs before re-running
    again = RunLog(tmp_path / 'dvclive', state=state, use_dvclive=False)
    assert read_history(tmp_path)['eval/psnr'] == ([1, 2, 3], [11.0, 12.0, 13.0])
    assert json.loads((tmp_path / 'dvclive' / 'metrics.json').read_text())['initial'] == {'psnr': 9.0}
    again.log({'eval/psnr': 14.0}, 4)
    assert read_history(tmp_path)['eval/psnr'] == ([1, 2, 3, 4], [11.0, 12.0, 13.0, 14.0])   # continues, in order


def test_a_fresh_log_clears_the_curves_of_an_earlier_run(tmp_path):
    _logged(tmp_path)
    log = RunLog(tmp_path / 'dvclive', use_dvclive=False)       # no state: a run started afresh
    assert read_history(tmp_path) == {} and not (tmp_path / 'dvclive' / 'metrics.json').exists()
    log.log({'eval/psnr': 5.0}, 1)
    assert read_history(tmp_path) == {'eval/psnr': ([1], [5.0])}


def test_the_backend_follows_the_dvc_repository(tmp_path):
    assert not _in_dvc_repo(tmp_path / 'run' / 'dvclive')
    (tmp_path / '.dvc').mkdir()
    assert _in_dvc_repo(tmp_path / 'run' / 'dvclive') and _in_dvc_repo(tmp_path)
    assert RunLog(tmp_path / 'elsewhere' / 'dvclive', use_dvclive=False).backend == 'plain'   # asked for plain


def test_a_log_outside_a_dvc_repo_is_plain_by_default(tmp_path):
    assert RunLog(tmp_path / 'run' / 'dvclive').backend == 'plain'


def test_plot_history_draws_losses_rates_and_each_metric(tmp_path):
    import matplotlib.pyplot as plt
    _logged(tmp_path)
    fig = plot_history(tmp_path)
    assert [ax.get_title() for ax in fig.axes] == ['loss', 'lr', 'eval/psnr']
    assert fig.axes[0].get_yscale() == 'log' and list(fig.axes[2].lines[0].get_xdata()) == [1, 2, 3]
    plt.close(fig)
    with pytest.raises(FileNotFoundError, match='no logged metrics under .*has the run started'):
        plot_history(tmp_path / 'nothing')


def test_save_history_png_writes_a_picture_or_warns(tmp_path):
    _logged(tmp_path / 'run')
    save_history_png(tmp_path / 'run')
    assert (tmp_path / 'run' / 'history.png').read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'
    (tmp_path / 'empty').mkdir()
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter('always')
        save_history_png(tmp_path / 'empty')
    assert any('no history.png' in str(x.message) for x in w) and not (tmp_path / 'empty' / 'history.png').exists()
