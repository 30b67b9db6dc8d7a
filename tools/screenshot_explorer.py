"""Screenshot of the cyclegan_nb explorer rendered live in JupyterLab by headless Chromium.

Writes a small notebook that opens `cyclegan_nb.explorer.Explorer` (on a run folder you name, or on a tiny run it
trains on toy data), starts JupyterLab on 127.0.0.1 with a random token, opens the notebook in headless Chromium,
runs all its cells through JupyterLab's own "Run All" command, waits until the widget shows a translated image, and
saves a PNG of the browser window. Everything runs locally; nothing is downloaded.

Needs the dev extras (JupyterLab) and Debian's chromium; `tools/screenshot_explorer.sh` installs chromium with apt
when it is missing and then runs this script.

    python tools/screenshot_explorer.py docs/explorer.png [--run RUN_DIR --photos PHOTO_DIR] [--photo 3]
"""
import argparse, asyncio, base64, io, json, os, secrets, shutil, signal, socket, subprocess, sys, tempfile, time
import urllib.request
from pathlib import Path

NOTEBOOK = {
    'cells': [
        {'cell_type': 'code', 'id': 'build-run', 'metadata': {}, 'execution_count': None, 'outputs': [], 'source': '''\
from cyclegan_nb.data import make_toy_dataset
from cyclegan_nb.training import fit, get_config
from cyclegan_nb.explorer import Explorer

RUN, PHOTOS = {run!r}, {photos!r}
if RUN is None:   # a tiny run on toy data, trained here in a few seconds
    PHOTOS = make_toy_dataset('toy', n_photos=8, n_paintings=8, size=48)
    RUN = 'run'
    fit(get_config('demo', ngf=4, ndf=4, crop_size=32, load_size=36, epoch_length=4, n_epochs=2, n_epochs_decay=0,
                   out=RUN, wandb='disabled'), PHOTOS, progress=False)'''},
        {'cell_type': 'code', 'id': 'show-explorer', 'metadata': {}, 'execution_count': None, 'outputs': [], 'source': '''\
explorer = Explorer(RUN, photos=PHOTOS, display_height=256)
explorer.photo.value = {photo}
explorer'''},
    ],
    'metadata': {'kernelspec': {'display_name': 'Python 3 (ipykernel)', 'language': 'python', 'name': 'python3'}},
    'nbformat': 4, 'nbformat_minor': 5,
}

RENDERED_IMAGE = "document.querySelector('.jupyter-widgets-output-area img, .widget-output img')"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0)); return s.getsockname()[1]


def wait_for(url: str, what: str, timeout: float, process: subprocess.Popen):
    "Poll `url` until it answers, failing early if `process` exits."
    deadline = time.time() + timeout
    while time.time() < deadline:
        if process.poll() is not None: raise RuntimeError(f'{what} exited with code {process.returncode} before it was ready.')
        try:
            with urllib.request.urlopen(url, timeout=2) as r: return json.load(r)
        except OSError: time.sleep(0.5)
    raise TimeoutError(f'{what} did not answer at {url} within {timeout:.0f} s.')


class DevTools:
    "A minimal Chrome DevTools Protocol client over tornado's websocket client (installed with JupyterLab)."
    def __init__(self, ws): self.ws, self.last_id = ws, 0

    @classmethod
    async def connect(cls, port: int):
        from tornado.websocket import websocket_connect
        with urllib.request.urlopen(f'http://127.0.0.1:{port}/json/list') as r:
            page = next(t for t in json.load(r) if t['type'] == 'page')
        return cls(await websocket_connect(page['webSocketDebuggerUrl'], max_message_size=256 << 20))

    async def send(self, method: str, **params):
        self.last_id += 1
        await self.ws.write_message(json.dumps({'id': self.last_id, 'method': method, 'params': params}))
        while True:
            raw = await self.ws.read_message()
            if raw is None: raise RuntimeError('Chromium closed the DevTools connection.')
            msg = json.loads(raw)
            if msg.get('id') == self.last_id:
                if 'error' in msg: raise RuntimeError(f"{method} failed: {msg['error']}")
                return msg['result']

    async def evaluate(self, expression: str):
        result = await self.send('Runtime.evaluate', expression=expression, awaitPromise=True, returnByValue=True)
        if 'exceptionDetails' in result:
            raise RuntimeError(f"JavaScript failed: {result['exceptionDetails'].get('exception', {}).get('description')}")
        return result['result'].get('value')

    async def poll(self, expression: str, timeout: float, what: str):
        deadline = time.time() + timeout
        while time.time() < deadline:
            if await self.evaluate(expression): return
            await asyncio.sleep(1)
        raise TimeoutError(f'Timed out after {timeout:.0f} s waiting for {what}.')

    async def screenshot(self, path: Path, **params):
        data = (await self.send('Page.captureScreenshot', format='png', **params))['data']
        path.write_bytes(base64.b64decode(data))


NOTEBOOK_PANEL = ("(window.jupyterapp && Array.from(jupyterapp.shell.widgets('main'))"
                  ".find(w => w.sessionContext && w.content && w.content.widgets))")


async def drive(devtools_port: int, lab_url: str, out: Path, timeout: float, width: int, height: int):
    tab = await DevTools.connect(devtools_port)
    await tab.send('Emulation.setDeviceMetricsOverride', width=width, height=height, deviceScaleFactor=1, mobile=False)
    await tab.send('Page.navigate', url=lab_url)
    try:
        await tab.poll(f"!!{NOTEBOOK_PANEL}", 180, 'JupyterLab to open the notebook')
        await tab.evaluate("""(async () => {
            const panel = %s;
            await panel.context.ready; await panel.sessionContext.ready;
            jupyterapp.shell.activateById(panel.id);
            jupyterapp.shell.collapseLeft(); jupyterapp.shell.collapseRight();
            jupyterapp.commands.execute('notebook:run-all-cells');   // not awaited: polled below
            return true; })()""" % NOTEBOOK_PANEL)
        await tab.poll(f"!!{RENDERED_IMAGE} && {RENDERED_IMAGE}.complete", timeout, 'the explorer to show a translated image')
        await tab.evaluate("""(async () => {
            await jupyterapp.commands.execute('notebook:hide-all-cell-code');
            %s.closest('.jp-Cell').scrollIntoView({block: 'start'});
            return true; })()""" % RENDERED_IMAGE)
        await asyncio.sleep(2)   # let the layout settle after hiding the code
        bottom = await tab.evaluate(f"{RENDERED_IMAGE}.closest('.jp-Cell').getBoundingClientRect().bottom")
        await tab.screenshot(out, clip=dict(x=0, y=0, width=width, height=min(height, int(bottom) + 24), scale=1))
    except Exception:
        debug = out.with_name(out.stem + '.failed.png')
        await tab.screenshot(debug)
        texts = await tab.evaluate("Array.from(document.querySelectorAll('.jp-OutputArea-output')).map(e => e.innerText).join('\\n---\\n')")
        print(f'The browser window at the failure is in {debug}. Notebook outputs:\n{texts}', file=sys.stderr)
        raise


def shrink_png(path: Path, limit_kb: int):
    "Re-encode `path` with a 256-colour palette when it is larger than `limit_kb` (PNG stays lossless otherwise)."
    if path.stat().st_size <= limit_kb * 1024: return
    from PIL import Image
    with Image.open(path) as im: small = im.convert('RGB').quantize(256, method=Image.Quantize.MEDIANCUT)
    buffer = io.BytesIO(); small.save(buffer, format='PNG', optimize=True)
    path.write_bytes(buffer.getvalue())


def stop(process: subprocess.Popen):
    "Stop a process group this script started."
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try: process.wait(15)
        except subprocess.TimeoutExpired: os.killpg(process.pid, signal.SIGKILL)


def main():
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('out', nargs='?', default='docs/explorer.png', help='PNG to write (default docs/explorer.png)')
    p.add_argument('--run', help='run folder to explore (default: train a tiny run on toy data)')
    p.add_argument('--photos', help='photos to explore: folder or data set root (required with --run)')
    p.add_argument('--photo', type=int, default=0, help='index of the photo shown')
    p.add_argument('--timeout', type=float, default=600, help='seconds to wait for the notebook to run')
    p.add_argument('--size', default='1200x860', help='browser window WIDTHxHEIGHT')
    p.add_argument('--max-kb', type=int, default=300, help='re-encode with a palette above this size')
    args = p.parse_args()
    if args.run and not args.photos: p.error('--run needs --photos')
    chromium = shutil.which('chromium') or shutil.which('chromium-browser')
    if not chromium: sys.exit("No chromium found: install Debian's package (apt-get install -y chromium), "
                              'or run tools/screenshot_explorer.sh, which does.')
    width, height = map(int, args.size.split('x'))
    out = Path(args.out).resolve(); out.parent.mkdir(parents=True, exist_ok=True)

    with tempfile.TemporaryDirectory(prefix='explorer_screenshot_') as work:
        work = Path(work)
        nb = json.loads(json.dumps(NOTEBOOK))
        abs_or_none = lambda s: str(Path(s).resolve()) if s else None
        nb['cells'][0]['source'] = nb['cells'][0]['source'].format(run=abs_or_none(args.run), photos=abs_or_none(args.photos))
        nb['cells'][1]['source'] = nb['cells'][1]['source'].format(photo=args.photo)
        (work/'explorer_demo.ipynb').write_text(json.dumps(nb, indent=1))
        settings = work/'lab-settings'/'@jupyterlab'/'apputils-extension'
        settings.mkdir(parents=True)
        (settings/'notification.jupyterlab-settings').write_text(json.dumps({'fetchNews': 'false', 'checkForUpdates': False}))

        token, lab_port, devtools_port = secrets.token_hex(16), free_port(), free_port()
        env = dict(os.environ, JUPYTER_RUNTIME_DIR=str(work/'runtime'), JUPYTERLAB_SETTINGS_DIR=str(work/'lab-settings'),
                   JUPYTERLAB_WORKSPACES_DIR=str(work/'workspaces'))
        env.pop('IN_TEST', None)   # the notebook must see a real front end
        lab = subprocess.Popen([sys.executable, '-m', 'jupyterlab', '--no-browser', '--ip=127.0.0.1', f'--port={lab_port}',
                                f'--IdentityProvider.token={token}', f'--ServerApp.root_dir={work}',
                                '--LabApp.expose_app_in_browser=True', '--LabApp.news_url=None',
                                *(['--allow-root'] if os.geteuid() == 0 else [])],
                               cwd=work, env=env, stdout=open(work/'lab.log', 'w'), stderr=subprocess.STDOUT,
                               start_new_session=True)
        browser = None
        try:
            wait_for(f'http://127.0.0.1:{lab_port}/api/status?token={token}', 'JupyterLab', 120, lab)
            browser = subprocess.Popen([chromium, '--headless', '--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage',
                                        '--no-first-run', f'--user-data-dir={work/"chromium"}',
                                        f'--remote-debugging-port={devtools_port}', '--remote-allow-origins=*',
                                        f'--window-size={width},{height}', 'about:blank'],
                                       stdout=subprocess.DEVNULL, stderr=open(work/'chromium.log', 'w'),
                                       start_new_session=True)
            wait_for(f'http://127.0.0.1:{devtools_port}/json/version', 'Chromium', 60, browser)
            url = f'http://127.0.0.1:{lab_port}/lab/tree/explorer_demo.ipynb?reset&token={token}'
            asyncio.run(drive(devtools_port, url, out, args.timeout, width, height))
        except Exception as e:
            print((work/'lab.log').read_text()[-3000:], file=sys.stderr)
            sys.exit(f'Screenshot failed: {e}')
        finally:
            if browser is not None: stop(browser)
            stop(lab)
    shrink_png(out, args.max_kb)
    print(f'Wrote {out} ({out.stat().st_size // 1024} KB).')


if __name__ == '__main__':
    main()
