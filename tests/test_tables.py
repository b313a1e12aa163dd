"""Tests for mde.tables: tables written as CSV and Markdown (round trip, columns, formats, errors), pivot, and the
heat map and line plot; and that importing the module loads no plotting library."""
import csv
import json
import subprocess
import sys

import matplotlib
matplotlib.use('Agg')
import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402

from mde.scenarios import scenario_name  # noqa: E402
from mde.tables import heatmap, line_plot, pivot, write_table  # noqa: E402


def rows_for_table():
    return [{'model': 'a|b', 'scenario': 'RE@0.25', 'S': 0.25, 'n': 10, 'psnr': 21.23456, 'ssim': 0.876543,
             'psnr_missing': 1 / 3, 'fid': None, 'kid': 0.0123456},
            {'model': 'c', 'scenario': 'Col1', 'S': None, 'n': 10, 'psnr': 100.0, 'ssim': 1.0, 'psnr_missing': 99.5,
             'extra': 'x', 'psnr_std': 1.23456}]


def test_write_table_round_trip(tmp_path):
    rows = rows_for_table()
    info = {'protocol': 'a record of how the numbers were made', 'test_seed': 2024}
    paths = write_table(rows, tmp_path / 'sub', 'grid', title='A title', notes=['made by a test', 'second'], info=info)
    assert paths['csv'] == tmp_path / 'sub' / 'grid.csv' and paths['md'].exists()
    assert json.loads(paths['json'].read_text()) == info
    with open(paths['csv'], newline='') as f:
        back = list(csv.DictReader(f))
    assert list(back[0]) == ['model', 'scenario', 'S', 'n', 'psnr', 'ssim', 'psnr_missing', 'fid', 'kid', 'extra',
                             'psnr_std']
    assert back[0]['model'] == 'a|b' and float(back[0]['psnr_missing']) == 1 / 3 and back[0]['fid'] == ''
    assert back[1]['S'] == '' and back[1]['extra'] == 'x' and back[0]['extra'] == '' and int(back[0]['n']) == 10
    md = paths['md'].read_text().splitlines()
    assert md[0] == '### A title' and md[1] == ''
    header, sep, r0 = md[2], md[3], md[4]
    assert header.startswith('| model | scenario |') and 'pSNR (dB)' in header and 'pSNR (dB) std' in header
    assert sep.count('|') == header.count('|') and '---:' in sep
    cells = [c.strip() for c in r0.strip('|').split(' | ')]
    assert 'a\\|b' in r0 and '21.23' in cells and '0.877' in cells and '0.33' in cells and '0.0123' in cells
    assert '0.25' in cells
    assert md[-2:] == ['- made by a test', '- second']
    assert len([line for line in md if line.startswith('| ')]) == 3          # header + 2 rows


def test_write_table_columns_formats_and_errors(tmp_path):
    rows = rows_for_table()
    p = write_table(rows, tmp_path, 't', columns=['model', 'psnr'], formats={'psnr': '.1f'}, labels={'psnr': 'P'})
    md = p['md'].read_text()
    assert '| model | P |' in md and '| 21.2 |' in md and 'json' not in p
    with open(p['csv'], newline='') as f:
        assert next(csv.reader(f)) == ['model', 'psnr']
    with pytest.raises(ValueError, match='in no row'):
        write_table(rows, tmp_path, 't', columns=['model', 'psnr_typo'])
    with pytest.raises(ValueError, match='non-empty'):
        write_table([], tmp_path, 't')
    with pytest.raises(ValueError, match='plain file name'):
        write_table(rows, tmp_path, 'a/b')


def test_pivot():
    rows = [{'model': m, 'scenario': s, 'psnr': i * 10 + j} for i, m in enumerate(['A', 'B'])
            for j, s in enumerate(['RE@0.25', 'Col1', 'CE']) if (m, s) != ('B', 'Col1')]
    p = pivot(rows, 'model', 'scenario', 'psnr')
    rl, cl, vals = p
    assert rl == ['A', 'B'] and cl == ['RE@0.25', 'Col1', 'CE']
    assert vals == [[0, 1, 2], [10, None, 12]]
    assert p.row_labels == rl and p.values == vals and (p.index_name, p.columns_name, p.value_name) == ('model', 'scenario', 'psnr')
    assert list(p.to_rows()[0])[0] == 'model \\ scenario'
    assert p.to_rows('model \\ test')[1] == {'model \\ test': 'B', 'RE@0.25': 10, 'Col1': None, 'CE': 12}
    with pytest.raises(ValueError, match='two rows'):
        pivot(rows + rows[:1], 'model', 'scenario', 'psnr')
    with pytest.raises(ValueError, match='in no row'):
        pivot(rows, 'model', 'scenario', 'fid')


def test_heatmap_and_line_plot(tmp_path):
    rows = [{'model': m, 'scenario': scenario_name(k, S), 'kind': k, 'S': S, 'psnr': 10 + i + 20 * (S or 0)}
            for i, m in enumerate(['A', 'B', 'C']) for k, S in [('rec', 0.1), ('rec', 0.3), ('rec', 0.5), ('color1', None)]]
    rows = [r for r in rows if (r['model'], r['scenario']) != ('C', 'Col1')]
    p = pivot(rows, 'model', 'scenario', 'psnr')
    fig, ax = heatmap(p, 'pSNR', fmt='.1f')
    texts = [t.get_text() for t in ax.texts]
    assert len(texts) == 11 and '12.0' in texts and ax.get_title() == 'pSNR'
    assert [t.get_text() for t in ax.get_xticklabels()] == ['REC@0.1', 'REC@0.3', 'REC@0.5', 'Col1']
    fig.savefig(tmp_path / 'h.png')
    assert (tmp_path / 'h.png').stat().st_size > 1000
    plt.close(fig)
    fig, axs = plt.subplots(1, 2)
    f2, ax2 = heatmap(p, ax=axs[0], colorbar=True)
    assert f2 is fig and ax2 is axs[0] and ax2.get_title() == 'psnr'
    f3, ax3 = line_plot(rows, 'S', 'psnr', 'model', ax=axs[1])
    assert f3 is fig and len(ax3.get_lines()) == 3                     # Col1 (S None) is left out
    xs, ys = ax3.get_lines()[0].get_data()
    assert list(xs) == [0.1, 0.3, 0.5] and list(ys) == pytest.approx([12, 16, 20])
    plt.close(fig)
    dup = rows + [{'model': 'A', 'kind': 'random', 'S': 0.1, 'psnr': 1.0}]
    with pytest.raises(ValueError, match='same'):
        line_plot(dup, 'S', 'psnr', 'model')
    fig, ax = line_plot(dup, 'S', 'psnr', ('model', 'kind'))
    assert len(ax.get_lines()) == 4
    plt.close(fig)
    std = [dict(r, psnr_std=0.5) for r in rows]
    fig, ax = line_plot(std, 'S', 'psnr', 'model', err=True)
    assert len(ax.containers) == 3
    plt.close(fig)
    with pytest.raises(ValueError, match='no row'):
        line_plot(rows, 'S', 'fid', 'model')


def test_module_import_is_light():
    code = "import sys, mde.tables; print('matplotlib' in sys.modules, 'pandas' in sys.modules)"
    out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ['False', 'False']
