"""Tests of mde.results: DVC's stage lines timed as the output passes through (time_stages, write_times), a run's
tables, provenance and claims kept in the repository (collect), and its command line."""
import io
import json
import subprocess
import sys
from pathlib import Path

import pytest

from mde.results import STUDIES, collect, main, time_stages, write_times

REPO = Path(__file__).resolve().parents[1]
LOG = b"Running stage 'data':\nbar\r50%\rRunning stage 'train@I':\nStage 'x' didn't change\n"


class Chunks(io.BytesIO):
    "A stream that hands out `n` bytes at a time (a stage line is cut between two reads)."
    def __init__(self, data, n): super().__init__(data); self.n = n
    def read1(self, size=-1): return super().read1(self.n)


def test_time_stages_passes_every_byte_through_and_times_each_stage():
    ticks = iter(range(100))
    dst = io.BytesIO()
    assert time_stages(io.BytesIO(LOG), dst, clock=lambda: next(ticks)) == [('data', 0, 1), ('train@I', 1, 2)]
    assert dst.getvalue() == LOG
    assert time_stages(io.BytesIO(b''), io.BytesIO(), clock=lambda: 0) == []
    assert time_stages(io.BytesIO(b"Stage 'data' didn't change\n"), io.BytesIO(), clock=lambda: 0) == []


@pytest.mark.parametrize('n', [1, 7, 16, 65536])
def test_a_stage_line_cut_between_reads_is_seen_once(n):
    dst = io.BytesIO()
    stages = time_stages(Chunks(LOG * 3, n), dst, clock=lambda: 0)
    assert [s for s, *_ in stages] == ['data', 'train@I'] * 3 and dst.getvalue() == LOG * 3


def test_a_stream_without_read1_is_read_too():
    class Plain:
        def __init__(self): self.b = io.BytesIO(LOG)
        def read(self, n): return self.b.read(n)
    assert [s for s, *_ in time_stages(Plain(), io.BytesIO(), clock=lambda: 0)] == ['data', 'train@I']


def test_write_times_writes_json_and_a_table_with_the_total(tmp_path):
    rows = write_times([('data', 0, 60), ('train@I', 60, 300.04)], tmp_path / 'sub' / 'stage_times')
    assert rows == [{'stage': 'data', 'seconds': 60}, {'stage': 'train@I', 'seconds': 240.0}]
    t = json.loads((tmp_path / 'sub' / 'stage_times.json').read_text())
    assert t == {'stages': rows, 'total_seconds': 300.0}
    md = (tmp_path / 'sub' / 'stage_times.md').read_text().splitlines()
    assert md[0] == '### Time of each DVC stage (s)' and '| data | 60 | 1.0 |' in md
    assert '| train@I | 240 | 4.0 |' in md and md[-1] == '| **total** | 300 | 5.0 |'


def _outputs(tmp_path):
    out = tmp_path / 'outputs'
    (out / 'grid').mkdir(parents=True)
    (out / 'grid' / 'grid.md').write_text('### t\n')
    (out / 'grid' / 'grid.csv').write_text('a,b\n1,2\n')
    (out / 'grid' / 'fig7_grid.png').write_bytes(b'png')
    (out / 'grid' / 'provenance.json').write_text('{}')
    (out / 'grid' / 'notes.txt').write_text('not kept')
    (out / 'classifier').mkdir()
    (out / 'classifier' / 'classifier.json').write_text('{"accuracy": 0.9}')
    (out / 'classifier' / 'classifier.pt').write_bytes(b'weights')
    (out / 'runs' / 'I').mkdir(parents=True)                # not a study: not kept
    (out / 'runs' / 'I' / 'run.md').write_text('run')
    return out


def test_collect_keeps_tables_and_provenance_not_images(tmp_path):
    out = _outputs(tmp_path)
    write_times([('data', 0, 60), ('train@I', 60, 300)], tmp_path / 'times')
    dest = collect(out, tmp_path / 'kept', times=tmp_path / 'times.json', data='digits 32 px')
    assert dest == tmp_path / 'kept'
    assert sorted(p.name for p in (dest / 'grid').iterdir()) == ['grid.csv', 'grid.md', 'provenance.json']
    assert sorted(p.name for p in (dest / 'classifier').iterdir()) == ['classifier.json']
    assert not (dest / 'runs').exists() and 'runs' not in STUDIES
    assert "The paper's claims, tested on digits 32 px" in (dest / 'claims.md').read_text()
    assert (dest / 'claims.csv').is_file()
    t = json.loads((dest / 'stage_times.json').read_text())
    assert t['total_seconds'] == 300 and [r['stage'] for r in t['stages']] == ['data', 'train@I']
    assert '| **total** | 300 | 5.0 |' in (dest / 'stage_times.md').read_text()


def test_collect_without_times_and_without_studies(tmp_path):
    dest = collect(_outputs(tmp_path), tmp_path / 'kept', times=tmp_path / 'no_such.json')
    assert not (dest / 'stage_times.json').exists() and (dest / 'claims.md').is_file()
    (tmp_path / 'empty').mkdir()
    with pytest.raises(FileNotFoundError, match='no study folder in .*empty.*grid, ablation.*run the pipeline first'):
        collect(tmp_path / 'empty', tmp_path / 'kept2')
    assert not (tmp_path / 'kept2').exists()


def test_main_collect(tmp_path, capsys):
    out = _outputs(tmp_path)
    main(['--collect', str(tmp_path / 'kept'), '--outputs', str(out), '--data', 'toy'])
    assert f"results kept in {tmp_path / 'kept'}" in capsys.readouterr().out
    assert (tmp_path / 'kept' / 'grid' / 'grid.md').read_text() == '### t\n'


def test_stage_times_pass_the_output_through(tmp_path):
    text = b"Running stage 'data':\n\r 50%|#####     |\rRunning stage 'train@I':\ndone\n"
    out = subprocess.run([sys.executable, '-m', 'mde.results', '--time', str(tmp_path / 't.json')], input=text,
                         capture_output=True, cwd=REPO, timeout=120)
    assert out.returncode == 0 and out.stdout == text
    t = json.loads((tmp_path / 't.json').read_text())
    assert [s['stage'] for s in t['stages']] == ['data', 'train@I'] and t['total_seconds'] >= 0
    assert '| **total** |' in (tmp_path / 't.md').read_text()
