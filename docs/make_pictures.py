"""Make the README's pictures from the real thing:

    python3 docs/make_pictures.py

- docs/terminal.png: the demo (``python -m parallelbar_clone.demo``) run in a tmux
  window; the screen is read with ``tmux capture-pane -e`` (text and colours), turned
  into HTML and photographed by headless Chromium.
- docs/jupyterlab.png: JupyterLab served on 127.0.0.1, a notebook cell run in it by
  headless Chromium (driven by playwright-core), and the cell with its widget bars
  photographed once the run has finished.

Needs tmux, Chromium, Node.js and npm (Debian: ``apt-get install tmux chromium
nodejs npm fonts-dejavu-core``; installed here when missing and running as root),
and sets up, on first use, ``.venv-docs`` (this package with the ``notebook`` extra
and JupyterLab, from PyPI) with playwright-core (from npm) inside it. Nothing is
downloaded while the pictures are taken: Chromium runs with its background
networking off, on pages served from this machine.
"""
from __future__ import annotations

import html
import json
import os
import re
import secrets
import shlex
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from typing import List, Optional

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOCS = os.path.join(ROOT, "docs")
VENV = os.path.join(ROOT, ".venv-docs")
PY = os.path.join(VENV, "bin", "python")
NODE_MODULES = os.path.join(VENV, "node", "node_modules")
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
COLUMNS, ROWS = 120, 32


def say(message: str) -> None:
    print(f"make_pictures: {message}", flush=True)


def run(*cmd: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, check=True, **kwargs)


# ------------------------------------------------------------------------- set-up
def system_tools() -> None:
    missing = [pkg for tool, pkg in (("tmux", "tmux"), ("chromium", "chromium"),
                                      ("node", "nodejs"), ("npm", "npm"))
               if shutil.which(tool) is None]
    if not os.path.exists("/usr/share/fonts/truetype/dejavu/DejaVuSansMono.ttf"):
        missing.append("fonts-dejavu-core")
    if not missing:
        return
    if os.geteuid() == 0 and shutil.which("apt-get"):
        say("installing " + " ".join(missing) + " with apt-get")
        run("apt-get", "update", "-qq")
        run("apt-get", "install", "-y", "-qq", *missing)
    else:
        sys.exit("make_pictures: please install " + " ".join(missing)
                 + " (Debian: apt-get install " + " ".join(missing) + ")")


def docs_env() -> None:
    if not os.path.exists(os.path.join(VENV, ".installed")):
        say("setting up .venv-docs (JupyterLab, ipywidgets, this package)")
        run(sys.executable, "-m", "venv", VENV)
        run(PY, "-m", "pip", "install", "-q", "--upgrade", "pip")
        run(PY, "-m", "pip", "install", "-q", "-e", f"{ROOT}[notebook]", "jupyterlab")
        open(os.path.join(VENV, ".installed"), "w").close()
    if not os.path.isdir(os.path.join(NODE_MODULES, "playwright-core")):
        say("installing playwright-core from npm into .venv-docs/node")
        run("npm", "install", "--silent", "--no-package-lock", "--no-audit", "--no-fund",
            "--prefix", os.path.dirname(NODE_MODULES), "playwright-core@1")


# ----------------------------------------------------------------- chromium, driven
BROWSER_JS = r"""
const { chromium } = require('playwright-core');
const [job] = process.argv.slice(2).map(JSON.parse);
(async () => {
  const context = await chromium.launchPersistentContext(job.profile, {
    executablePath: job.chromium, args: job.args, headless: true,
    viewport: job.viewport, deviceScaleFactor: job.scale });
  const page = context.pages()[0] || await context.newPage();
  page.setDefaultTimeout(120000);
  await page.goto(job.url);
  if (job.kind === 'terminal') {
    await page.locator('#screen').screenshot({ path: job.out });
  } else {
    const cell = page.locator('.jp-CodeCell').first();
    await cell.waitFor();
    await page.getByText('Idle', { exact: false }).first()
      .waitFor({ timeout: 60000 }).catch(() => {});
    await page.waitForTimeout(1500);               // let the kernel finish starting
    await cell.locator('.jp-InputArea-editor').click();
    await page.keyboard.press('Control+Enter');    // run the cell, stay on it
    // finished: the cell's last line has printed, and both bars are drawn
    await cell.locator('.jp-OutputArea-output', { hasText: job.waitFor }).waitFor();
    await cell.locator('.widget-hprogress').nth(1).waitFor();
    await page.waitForTimeout(800);
    await page.locator('.jp-Notebook').first().evaluate(e => e.focus());
    await cell.screenshot({ path: job.out });
  }
  await context.close();
})().catch(e => { console.error(e); process.exit(1); });
"""


def browse(job: dict, scratch: str) -> None:
    script = os.path.join(scratch, "browse.js")
    with open(script, "w") as f:
        f.write(BROWSER_JS)
    profile = tempfile.mkdtemp(prefix="chromium-profile-", dir=scratch)  # fresh each time
    job = dict(job, chromium=CHROMIUM, args=CHROMIUM_ARGS, profile=profile)
    env = dict(os.environ, NODE_PATH=NODE_MODULES)
    run("node", script, json.dumps(job), env=env)


# ------------------------------------------------------------------ terminal picture
PALETTE = ["#2e3436", "#ef2929", "#8ae234", "#fce94f", "#729fcf", "#ad7fa8", "#34e2e2",
           "#d3d7cf", "#555753", "#ff6b6b", "#9ff35f", "#fff68f", "#97c4f5", "#d7a6d0",
           "#6ff5f5", "#eeeeec"]
FOREGROUND, BACKGROUND = "#d3d7cf", "#1e1e1e"


def _colour_256(n: int) -> str:
    if n < 16:
        return PALETTE[n]
    if n < 232:
        n -= 16
        levels = [0, 95, 135, 175, 215, 255]
        return "#%02x%02x%02x" % (levels[n // 36], levels[n // 6 % 6], levels[n % 6])
    grey = 8 + (n - 232) * 10
    return "#%02x%02x%02x" % (grey, grey, grey)


def ansi_to_html(text: str) -> str:
    """The screen tmux captured (SGR colour codes only) as HTML spans."""
    out: List[str] = []
    style = {"fg": None, "bg": None, "bold": False}
    open_span = False
    for piece in re.split(r"(\x1b\[[0-9;]*m)", text):
        if not piece.startswith("\x1b["):
            for run_ in re.split("(\u2588+)", piece):   # full blocks: one solid box
                if run_.startswith("\u2588"):
                    colour = style["fg"] or FOREGROUND
                    out.append(f'<span class="blocks" style="--c:{colour}">{run_}</span>')
                elif run_:
                    out.append(html.escape(run_))
            continue
        codes = [int(c) if c else 0 for c in piece[2:-1].split(";")]
        i = 0
        while i < len(codes):
            c = codes[i]
            if c == 0:
                style = {"fg": None, "bg": None, "bold": False}
            elif c == 1:
                style["bold"] = True
            elif c == 22:
                style["bold"] = False
            elif 30 <= c <= 37 or 90 <= c <= 97:
                style["fg"] = PALETTE[c - 30 if c < 90 else c - 90 + 8]
            elif 40 <= c <= 47 or 100 <= c <= 107:
                style["bg"] = PALETTE[c - 40 if c < 100 else c - 100 + 8]
            elif c == 39:
                style["fg"] = None
            elif c == 49:
                style["bg"] = None
            elif c in (38, 48) and i + 1 < len(codes):
                if codes[i + 1] == 5 and i + 2 < len(codes):
                    colour, i = _colour_256(codes[i + 2]), i + 2
                elif codes[i + 1] == 2 and i + 4 < len(codes):
                    colour, i = "#%02x%02x%02x" % tuple(codes[i + 2:i + 5]), i + 4
                else:
                    colour = None
                style["fg" if c == 38 else "bg"] = colour
            i += 1
        if open_span:
            out.append("</span>")
            open_span = False
        css = []
        if style["fg"]:
            css.append(f"color:{style['fg']}")
        if style["bg"]:
            css.append(f"background:{style['bg']}")
        if style["bold"]:
            css.append("font-weight:bold")
        if css:
            out.append(f'<span style="{";".join(css)}">')
            open_span = True
    if open_span:
        out.append("</span>")
    return "".join(out)


def terminal_page(screen: str) -> str:
    return f"""<!doctype html><meta charset="utf-8">
<style>
  body {{ margin: 0; background: white; }}
  #screen {{ display: inline-block; margin: 0; padding: 14px 18px; border-radius: 8px;
            background: {BACKGROUND}; color: {FOREGROUND};
            font: 13px/1.25 "DejaVu Sans Mono", monospace; white-space: pre; }}
  /* a run of full-block characters drawn as one box: glyph by glyph leaves seams */
  .blocks {{ color: transparent;
            background: linear-gradient(var(--c), var(--c)) center / 100% 1.05em no-repeat; }}
</style>
<pre id="screen">{ansi_to_html(screen)}</pre>
"""


def terminal_picture(scratch: str) -> None:
    session = f"pictures-{os.getpid()}"
    say(f"running the demo in tmux ({COLUMNS}x{ROWS})")
    demo = f"{shlex.quote(PY)} -m parallelbar_clone.demo; sleep 600"
    env = dict(os.environ, TERM="xterm-256color")
    run("tmux", "new-session", "-d", "-s", session, "-x", str(COLUMNS), "-y", str(ROWS),
        "sh", "-c", f"cd {shlex.quote(ROOT)} && {demo}", env=env)
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            shown = subprocess.run(["tmux", "capture-pane", "-p", "-t", session],
                                   capture_output=True, text=True, check=True).stdout
            if "sum of squares" in shown:
                break
            time.sleep(1)
        else:
            sys.exit("make_pictures: the demo did not finish in 180 s")
        screen = subprocess.run(["tmux", "capture-pane", "-e", "-p", "-t", session],
                                capture_output=True, text=True, check=True).stdout
    finally:
        subprocess.run(["tmux", "kill-session", "-t", session], check=False)
    screen = "\n".join(screen.rstrip("\n").splitlines()).rstrip() + "\n"
    page = os.path.join(scratch, "terminal.html")
    with open(page, "w", encoding="utf-8") as f:
        f.write(terminal_page(screen))
    out = os.path.join(DOCS, "terminal.png")
    browse({"kind": "terminal", "url": "file://" + page, "out": out,
            "viewport": {"width": 1100, "height": 800}, "scale": 1.5}, scratch)
    say(f"wrote {os.path.relpath(out, ROOT)}")


# ------------------------------------------------------------------- widget picture
NOTEBOOK_CELL = """\
import time
from parallelbar_clone import progress_map

def parse(row):
    time.sleep(0.02)
    if row % 37 == 5:
        raise ValueError(f"row {row}: could not parse")
    return row * 2

results = progress_map(parse, range(400), error_behavior="coerce")
print(sum(isinstance(r, ValueError) for r in results), "rows failed")"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def widget_picture(scratch: str) -> None:
    lab_dir = os.path.join(scratch, "lab")
    os.makedirs(lab_dir)
    notebook = {"cells": [{"cell_type": "code", "execution_count": None, "metadata": {},
                           "outputs": [], "source": NOTEBOOK_CELL}],
                "metadata": {"kernelspec": {"display_name": "Python 3", "language": "python",
                                            "name": "python3"}},
                "nbformat": 4, "nbformat_minor": 5}
    with open(os.path.join(lab_dir, "bars.ipynb"), "w") as f:
        json.dump(notebook, f)
    port, token = _free_port(), secrets.token_hex(16)
    env = dict(os.environ, JUPYTER_CONFIG_DIR=os.path.join(scratch, "jupyter-config"),
               JUPYTER_RUNTIME_DIR=os.path.join(scratch, "jupyter-runtime"),
               JUPYTERLAB_SETTINGS_DIR=os.path.join(scratch, "lab-settings"),
               JUPYTERLAB_WORKSPACES_DIR=os.path.join(scratch, "lab-workspaces"))
    settings = os.path.join(scratch, "lab-settings", "@jupyterlab", "apputils-extension")
    os.makedirs(settings)
    with open(os.path.join(settings, "notification.jupyterlab-settings"), "w") as f:
        json.dump({"fetchNews": "false", "checkForUpdates": False}, f)
    say(f"starting JupyterLab on 127.0.0.1:{port}")
    log = open(os.path.join(scratch, "jupyterlab.log"), "w")
    lab = subprocess.Popen([PY, "-m", "jupyterlab", "--no-browser", "--ip=127.0.0.1",
                            f"--port={port}", f"--IdentityProvider.token={token}",
                            f"--ServerApp.root_dir={lab_dir}",
                            "--LabApp.news_url=None", "--LabApp.extension_manager=readonly",
                            "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate"]
                           + (["--allow-root"] if os.geteuid() == 0 else []),
                           env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(f"{base}/api/status?token={token}", timeout=2)
                break
            except OSError:
                if time.monotonic() > deadline or lab.poll() is not None:
                    log.flush()
                    with open(os.path.join(scratch, "jupyterlab.log")) as f:
                        tail = f.read()[-3000:]
                    sys.exit("make_pictures: JupyterLab did not start:\n" + tail)
                time.sleep(0.5)
        out = os.path.join(DOCS, "jupyterlab.png")
        say("running the cell in headless Chromium")
        browse({"kind": "lab", "url": f"{base}/lab/tree/bars.ipynb?token={token}",
                "out": out, "waitFor": "rows failed",
                "viewport": {"width": 1000, "height": 700}, "scale": 2}, scratch)
        say(f"wrote {os.path.relpath(out, ROOT)}")
    finally:
        lab.terminate()
        try:
            lab.wait(10)
        except subprocess.TimeoutExpired:
            lab.kill()
        log.close()


def main(argv: Optional[List[str]] = None) -> None:
    which = set(argv or sys.argv[1:]) or {"terminal", "jupyterlab"}
    system_tools()
    docs_env()
    with tempfile.TemporaryDirectory(prefix="pictures-") as scratch:
        if "terminal" in which:
            terminal_picture(scratch)
        if "jupyterlab" in which:
            widget_picture(scratch)


if __name__ == "__main__":
    main()
