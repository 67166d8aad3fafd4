"""`make lab`: JupyterLab starts in the book's environment and offers the book's kernel.

The server is started headless on a free loopback port with a random token, asked for
its status and kernel specs over its REST API, and stopped.
"""
import json
import os
import secrets
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from dlbook import lab

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get(url, token):
    request = urllib.request.Request(url, headers={"Authorization": f"token {token}"})
    with urllib.request.urlopen(request, timeout=5) as answer:
        return json.loads(answer.read())


@pytest.mark.slow
def test_jupyterlab_serves_the_book_with_its_kernel(tmp_path):
    prefix = tmp_path / "prefix"
    lab.install_kernel(str(prefix))
    port, token = free_port(), secrets.token_hex(16)
    env = dict(os.environ, JUPYTER_PATH=str(prefix / "share" / "jupyter"),
               JUPYTER_RUNTIME_DIR=str(tmp_path / "runtime"), JUPYTER_CONFIG_DIR=str(tmp_path / "config"))
    server = subprocess.Popen(
        [sys.executable, "-m", "jupyterlab", "--no-browser", "--ip=127.0.0.1", f"--port={port}",
         f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={ROOT / 'chapters'}",
         "--allow-root"],   # this project's machines and CI run as root
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(120):
            try:
                status = get(f"{base}/api/status", token)
                break
            except OSError:
                if server.poll() is not None:
                    pytest.fail(f"jupyter lab exited:\n{server.stdout.read()[-3000:]}")
                time.sleep(0.5)
        else:
            pytest.fail("jupyter lab did not answer within 60 s")
        assert "started" in status
        specs = get(f"{base}/api/kernelspecs", token)["kernelspecs"]
        assert lab.KERNEL_NAME in specs, f"the book's kernel is not listed: {sorted(specs)}"
        argv = specs[lab.KERNEL_NAME]["spec"]["argv"]
        probe = subprocess.run([argv[0], "-c", "import dlbook, ipywidgets, torch, tqdm.auto"],
                               capture_output=True, text=True)
        assert probe.returncode == 0, probe.stderr
        contents = get(f"{base}/api/contents/01_mlp", token)
        assert any(item["name"] == "mlp_forward.ipynb" for item in contents["content"])
        with urllib.request.urlopen(f"{base}/lab?token={token}", timeout=5) as page:
            assert page.status == 200 and b"JupyterLab" in page.read()
    finally:
        server.terminate()
        server.wait(timeout=20)
