"""Ctrl-C: SIGINT to the whole foreground process group, as a terminal sends it."""
import os
import signal
import subprocess
import sys
import time

import psutil
import pytest

HERE = os.path.dirname(__file__)


def _session_processes(sid):
    out = []
    for proc in psutil.process_iter(["pid"]):
        try:
            if os.getsid(proc.pid) == sid and proc.status() != psutil.STATUS_ZOMBIE:
                out.append(proc.pid)
        except (OSError, psutil.Error):
            pass
    return out


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["python", "c"])
def test_ctrl_c_stops_within_seconds_and_leaves_nothing(tmp_path, start_method, kind):
    proc = subprocess.Popen([sys.executable, os.path.join(HERE, "interrupt_script.py"),
                             str(tmp_path), start_method, kind],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while len(os.listdir(tmp_path)) < 2:  # both workers are inside a task
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "tasks never started"
            time.sleep(0.05)
        sent = time.monotonic()
        os.killpg(proc.pid, signal.SIGINT)
        out, err = proc.communicate(timeout=30)
        took = time.monotonic() - sent
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    text = err.decode()
    assert proc.returncode != 0 and b"finished?!" not in out
    assert text.count("Traceback (most recent call last)") == 1, text
    assert "KeyboardInterrupt" in text
    assert took < 3, took  # "within a second" (here ~50 ms); the tasks would sleep 60 s
    time.sleep(0.5)
    assert _session_processes(proc.pid) == [], "processes left behind"
