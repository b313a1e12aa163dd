"""The demo notebook (nbs/demo.ipynb) in a real browser: JupyterLab served locally on the repository, opened in
headless Chromium and driven through the Chrome DevTools Protocol; Run > Run All Cells renders the sliders and draws
the completions, and the notebook's button draws new ones. Skips where no Chromium or no JupyterLab is installed
(`MDE_BROWSER` names another Chromium-like executable; `MDE_BROWSER=none` skips)."""
import base64
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
NOTEBOOK = 'nbs/demo.ipynb'
SETTINGS = {                                   # JupyterLab settings for the served lab (its own folder, not ~/.jupyter)
    '@jupyterlab/docmanager-extension/plugin': {'autosave': False},   # never write the notebook's outputs back
    '@jupyterlab/notebook-extension/tracker': {'windowingMode': 'none'},   # every cell in the DOM
    '@jupyterlab/apputils-extension/notification': {'checkForUpdates': False, 'fetchNews': 'false'},
}


def browser():
    "The Chromium executable: $MDE_BROWSER if set, else chromium or chromium-browser on PATH (None: none found)."
    name = os.environ.get('MDE_BROWSER')
    return shutil.which(name) if name else shutil.which('chromium') or shutil.which('chromium-browser')


def free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def until(check, timeout, what, every=0.5):
    "Poll `check()` until it returns something truthy; fail after `timeout` seconds."
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if v := check(): return v
        time.sleep(every)
    pytest.fail(f'timed out after {timeout} s waiting for {what}')


def http(url, data=None, headers={}):
    try:
        with urllib.request.urlopen(urllib.request.Request(url, data=data, headers=headers), timeout=5) as r:
            return r.status, r.read()
    except OSError: return None, b''


class Page:
    "One browser tab over the DevTools Protocol (websocket-client, a jupyter_server dependency)."
    def __init__(self, url):
        import websocket
        self.ws, self.n = websocket.create_connection(url, timeout=60, suppress_origin=True), 0

    def __call__(self, method, **params):
        self.n += 1
        self.ws.send(json.dumps({'id': self.n, 'method': method, 'params': params}))
        while (m := json.loads(self.ws.recv())).get('id') != self.n: pass   # events: not needed
        if 'error' in m: raise RuntimeError(f'{method}: {m["error"]}')
        return m['result']

    def js(self, expr):
        r = self('Runtime.evaluate', expression=expr, returnByValue=True, awaitPromise=True)
        if 'exceptionDetails' in r: raise RuntimeError(f'{expr}: {r["exceptionDetails"]}')
        return r['result'].get('value')

    def click(self, element):
        "Click the centre of the element the JS expression `element` finds, with real mouse events."
        x, y = self.js(f'(() => {{ const e = {element}; e.scrollIntoView({{block: "nearest"}}); '
                       'const r = e.getBoundingClientRect(); return [r.x + r.width / 2, r.y + r.height / 2]; })()')
        self('Input.dispatchMouseEvent', type='mouseMoved', x=x, y=y)
        for t in ('mousePressed', 'mouseReleased'):
            self('Input.dispatchMouseEvent', type=t, x=x, y=y, button='left', clickCount=1)

    def screenshot(self, path):
        path.write_bytes(base64.b64decode(self('Page.captureScreenshot', format='png')['data']))
        return path.read_bytes()


def by_text(selector, text):
    return f'[...document.querySelectorAll({json.dumps(selector)})].find(e => e.textContent.trim() === {json.dumps(text)})'


def lab(tmp, port, token):
    "Start JupyterLab on the repository, with its own settings, workspaces and runtime folders."
    for plugin, values in SETTINGS.items():
        f = tmp / 'settings' / f'{plugin}.jupyterlab-settings'
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_text(json.dumps(values))
    env = {**os.environ, 'JUPYTER_RUNTIME_DIR': str(tmp / 'runtime')}
    return subprocess.Popen(
        [sys.executable, '-m', 'jupyterlab', '--no-browser', '--allow-root', f'--port={port}',
         '--ServerApp.port_retries=0', '--ServerApp.ip=127.0.0.1', f'--IdentityProvider.token={token}',
         f'--ServerApp.root_dir={REPO}', f'--LabApp.user_settings_dir={tmp / "settings"}',
         f'--LabApp.workspaces_dir={tmp / "workspaces"}'],
        cwd=REPO, env=env, stdout=open(tmp / 'lab.log', 'wb'), stderr=subprocess.STDOUT, start_new_session=True)


def chromium(exe, tmp):
    "Start headless Chromium with a DevTools port of its choosing; return the process and its tab."
    profile = tmp / 'chromium'
    args = [exe, '--headless=new', '--disable-gpu', '--disable-dev-shm-usage', '--no-first-run',
            '--remote-debugging-port=0', f'--user-data-dir={profile}', '--window-size=1400,1000', 'about:blank']
    if os.geteuid() == 0: args.insert(1, '--no-sandbox')
    proc = subprocess.Popen(args, stdout=open(tmp / 'chromium.log', 'wb'), stderr=subprocess.STDOUT,
                            start_new_session=True)
    port_file = profile / 'DevToolsActivePort'
    port = until(lambda: port_file.is_file() and port_file.read_text().split('\n')[0], 30, 'Chromium to start')
    tabs = until(lambda: http(f'http://127.0.0.1:{port}/json/list')[1], 10, "Chromium's tab list")
    return proc, Page(next(t for t in json.loads(tabs) if t['type'] == 'page')['webSocketDebuggerUrl'])


def stop(proc, timeout=15):
    "End a process group started here, politely first."
    if proc is None or proc.poll() is not None: return
    for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 5)):
        try: os.killpg(proc.pid, sig)
        except ProcessLookupError: return
        try: return proc.wait(wait)
        except subprocess.TimeoutExpired: pass


IDLE = "document.querySelector('.jp-Notebook-ExecutionIndicator[data-status=\"idle\"]')"   # the toolbar's kernel status
def kernel_ready(base, auth):
    "The server's word that the notebook's kernel has started, is idle and has the page connected (the toolbar says idle sooner)."
    status, body = http(f'{base}/api/kernels', headers=auth)
    return status == 200 and any(k['execution_state'] == 'idle' and k.get('connections', 0) > 0 for k in json.loads(body))


PROMPTS = "[...document.querySelectorAll('.jp-CodeCell .jp-InputPrompt')].map(e => e.textContent.trim())"
OUTPUTS = "[...document.querySelectorAll('.jp-OutputArea')].map(e => e.innerText).join('\\n')"
IMAGES = ("[...document.querySelectorAll('.jp-OutputArea img.widget-image')]"
          ".filter(e => e.complete && e.naturalWidth > 0 && /^(blob:|data:image\\/png)/.test(e.src)).map(e => e.src)")


@pytest.mark.slow
def test_demo_in_chromium(tmp_path):
    exe = browser()
    if exe is None: pytest.skip('no chromium/chromium-browser executable on PATH (Debian: apt-get install chromium)')
    try: import jupyterlab, websocket  # noqa: F401
    except Exception as e: pytest.skip(f'JupyterLab does not import here: {e!r}')
    before = (REPO / NOTEBOOK).read_bytes()
    checkpoints = (REPO / NOTEBOOK).parent / '.ipynb_checkpoints'
    had_checkpoints = checkpoints.exists()
    port, token = free_port(), secrets.token_hex(16)
    server = browser_proc = None
    try:
        server = lab(tmp_path, port, token)
        base, auth = f'http://127.0.0.1:{port}', {'Authorization': f'token {token}'}
        until(lambda: server.poll() is not None or http(f'{base}/api/status', headers=auth)[0] == 200, 90,
              'JupyterLab to serve')
        assert server.poll() is None, (tmp_path / 'lab.log').read_text()[-3000:]
        browser_proc, page = chromium(exe, tmp_path)
        page('Page.enable')
        blank = page.screenshot(tmp_path / 'blank.png')

        page('Page.navigate', url=f'{base}/lab/tree/{NOTEBOOK}?token={token}')
        try:
            until(lambda: page.js(f"{PROMPTS}.length >= 5 && {by_text('.lm-MenuBar-item', 'Run')} !== undefined && "
                                  f"{IDLE} !== null") and kernel_ready(base, auth), 120,
                  'the notebook to open with an idle kernel')
            page.click(by_text('.lm-MenuBar-item', 'Run'))
            run_all = f"{by_text('.lm-Menu-itemLabel', 'Run All Cells')}?.closest('.lm-Menu-item')"
            until(lambda: page.js(f'{run_all} != null'), 10, 'the Run menu')
            page.click(run_all)
            # done: no cell queued or running, and every cell numbered (or a traceback: the run stopped there)
            until(lambda: page.js(f"(() => {{ const p = {PROMPTS}; return !p.some(t => t.includes('*')) && "
                                  f"(p.every(t => /\\[\\d+\\]/.test(t)) || {OUTPUTS}.includes('Traceback')); }})()"),
                  180, 'Run All Cells to finish')
            text = page.js(OUTPUTS)
            assert 'Traceback' not in text and 'TqdmWarning' not in text, text
            assert all(p[1:-2].isdigit() for p in page.js(PROMPTS)), page.js(PROMPTS)
            assert 'image ' in text                                   # the first cell's print: model and image size
            # the widgets: six range sliders, the button, and two completion panels drawn as PNGs
            images = until(lambda: len(v := page.js(IMAGES)) >= 2 and v, 60, 'the completion images')
            assert page.js("document.querySelectorAll('.jp-OutputArea .jupyter-widgets.widget-slider').length") == 6
            assert 'Error displaying widget' not in page.js(OUTPUTS)
            # the button, pressed in the browser, draws four new masks through the kernel
            page.click(by_text('.jp-OutputArea button.widget-button', '4 random masks'))
            until(lambda: (v := page.js(IMAGES)) and len(v) >= 2 and v[1] != images[1], 60,
                  'the button to draw new completions')
            page.js("document.querySelector('.jp-OutputArea img.widget-image').closest('.jp-Cell').scrollIntoView()")
            time.sleep(0.5)
        finally:
            shot = page.screenshot(tmp_path / 'demo.png')
            print(f'\nscreenshot: {tmp_path / "demo.png"}')
        assert shot[:8] == b'\x89PNG\r\n\x1a\n' and len(shot) > 4 * len(blank), (len(shot), len(blank))
        assert not page.js(f"{PROMPTS}.some(t => t.includes('*'))")
    finally:
        if server is not None and server.poll() is None:        # shuts the kernel down with it
            http(f'http://127.0.0.1:{port}/api/shutdown', data=b'', headers={'Authorization': f'token {token}'})
            try: server.wait(15)
            except subprocess.TimeoutExpired: pass
        stop(browser_proc)
        stop(server)
        if not had_checkpoints and checkpoints.is_dir(): shutil.rmtree(checkpoints)
    assert (REPO / NOTEBOOK).read_bytes() == before, 'the served notebook was written to'
