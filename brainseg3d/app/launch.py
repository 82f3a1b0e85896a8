"""Start the web demo: ``streamlit run brainseg3d/app/streamlit_app.py`` on localhost.

``brainseg3d app [--port N]`` calls :func:`launch`. The address goes to stdout (one line,
``http://127.0.0.1:8501``); Streamlit's own log goes to stderr. The server is headless (opens no
browser), sends no usage statistics, listens on 127.0.0.1 only, watches no files, and caps an
upload at :data:`brainseg3d.app.core.MAX_UPLOAD_MB` MB.

Also runnable as ``python -m brainseg3d.app.launch --port N`` (``--port 0``: a free port).
"""

from __future__ import annotations

import importlib.util
import os
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path

from brainseg3d.app.core import MAX_UPLOAD_MB

__all__ = ["APP_SCRIPT", "build_command", "free_port", "launch", "main"]

APP_SCRIPT = Path(__file__).resolve().with_name("streamlit_app.py")


def free_port(address: str = "127.0.0.1") -> int:
    """A TCP port that is free on ``address`` now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((address, 0))
        return int(s.getsockname()[1])


def build_command(port: int, address: str = "127.0.0.1", max_upload_mb: int = MAX_UPLOAD_MB, python: str | None = None) -> list[str]:
    """The ``streamlit run`` command line."""
    return [
        python or sys.executable, "-m", "streamlit", "run", str(APP_SCRIPT),
        "--server.port", str(int(port)),
        "--server.address", address,
        "--server.headless", "true",
        "--browser.gatherUsageStats", "false",
        "--server.maxUploadSize", str(int(max_upload_mb)),
        "--server.fileWatcherType", "none",
        "--server.runOnSave", "false",
        "--global.developmentMode", "false",
        "--client.toolbarMode", "viewer",
    ]  # fmt: skip


def launch(port: int = 8501, address: str = "127.0.0.1", max_upload_mb: int = MAX_UPLOAD_MB, wait: bool = True):
    """Start the app; print its address to stdout.

    Args:
        port: TCP port (0: pick a free one).
        address: listen address (localhost by default: the demo is not meant to be exposed).
        max_upload_mb: upload cap in MB (all files of one upload together).
        wait: block until the server stops (Ctrl-C or SIGTERM stops it cleanly) and return its exit status;
            ``False`` returns the ``subprocess.Popen`` at once.

    Returns:
        The exit status (2 when Streamlit is not installed), or the process when ``wait=False``.
    """
    if importlib.util.find_spec("streamlit") is None:
        print("error: the web app needs Streamlit: pip install 'brainseg3d[web]' (or pip install streamlit)", file=sys.stderr)
        return 2
    if importlib.util.find_spec("niivue_component") is None:
        print("note: niivue-streamlit is not installed: the app shows plain slice images "
              "(pip install niivue-streamlit for the interactive NiiVue viewer)", file=sys.stderr)
    port = int(port) or free_port(address)
    env = dict(os.environ, STREAMLIT_BROWSER_GATHER_USAGE_STATS="false", STREAMLIT_SERVER_HEADLESS="true")
    proc = subprocess.Popen(build_command(port, address, max_upload_mb), stdout=sys.stderr, stdin=subprocess.DEVNULL, env=env)
    print(f"http://{address}:{port}", flush=True)
    if not wait:
        return proc

    def stop(signum, frame):  # SIGTERM: let Streamlit shut down cleanly (its sessions' temp folders go)
        proc.send_signal(signal.SIGTERM)

    previous = signal.signal(signal.SIGTERM, stop) if threading.current_thread() is threading.main_thread() else None
    try:
        return proc.wait()
    except KeyboardInterrupt:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
        return 0
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def main(argv=None) -> int:
    """``python -m brainseg3d.app.launch [--port N]``: the same options as ``brainseg3d app``."""
    from brainseg3d.cli import main as cli_main

    return cli_main(["app", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
