"""The SQL prompt on a terminal of its own: Ctrl-C stops a query and the prompt goes on; a JVM that ended
is named and the prompt stops."""
from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from tests.conftest import start_run

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def trained(spark, tmp_path_factory):
    run = start_run(["train.images=200", "train.batch_size=100", "train.shard_size=50"],
                    tmp_path_factory.mktemp("prompt") / "run")
    run.train(spark, 1)
    return run


# Run in the new process before `sparkcnn sql`: a session of its own whose controlling terminal is the pty
# (so that Ctrl-C there is SIGINT to it), then the command itself in the same process.
CONTROLLING_TTY = ("import fcntl, os, sys, termios; os.setsid(); fcntl.ioctl(0, termios.TIOCSCTTY, 0); "
                   "os.execv(sys.executable, [sys.executable, *sys.argv[1:]])")


class SqlPrompt:
    """`sparkcnn sql` on a terminal of its own (a pty), so that Ctrl-C reaches it as from a keyboard.
    Started by subprocess (fork and exec with no Python in between), not pty.fork: a fork of this
    many-threaded test process could hang in the child before its exec."""

    def __init__(self, run_root: str):
        import pty

        self.fd, terminal = pty.openpty()
        try:
            self.proc = subprocess.Popen(
                [sys.executable, "-c", CONTROLLING_TTY, "-m", "sparkcnn", "sql", "--run-root", run_root],
                stdin=terminal, stdout=terminal, stderr=terminal)
        finally:
            os.close(terminal)
        self.pid = self.proc.pid
        self.screen = bytearray()

    def read(self, until: bytes, count: int = 1, timeout: float = 120) -> None:
        """Read the terminal until `until` has appeared `count` times in all."""
        import select

        deadline = time.monotonic() + timeout
        while self.screen.count(until) < count and time.monotonic() < deadline:
            if select.select([self.fd], [], [], 0.2)[0]:
                try:
                    self.screen.extend(os.read(self.fd, 65536))
                except OSError:
                    break
        if self.screen.count(until) < count:
            logs = [log.read_text(errors="replace")[-20000:]
                    for log in Path(tempfile.gettempdir()).glob(f"sparkcnn-{self.pid}-*")]
            state = "running" if self.proc.poll() is None else f"ended with exit code {self.proc.returncode}"
            pytest.fail(f"the prompt is {state}; its terminal shows:\n{self.screen.decode(errors='replace')}"
                        f"\n--- Spark's log ---\n{''.join(logs)}")

    def type(self, text: bytes) -> None:
        os.write(self.fd, text)

    def exit_code(self, timeout: float = 60) -> int:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError("the prompt did not end") from None

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        os.close(self.fd)


def test_ctrl_c_in_the_sql_prompt_stops_the_query_and_the_prompt_goes_on(trained):
    prompt = SqlPrompt(trained.storage.url)
    try:
        prompt.read(b"sparkcnn> ")
        # a tensor function on every row of a long cross join, on small rows (so that it runs long, not out of
        # memory); stopped while it is planned and while its job runs
        for stopped, wait in enumerate((0.2, 3.0), start=1):
            prompt.type(b"SELECT SUM(tensor_element(out, 'float32', 0)) FROM (SELECT substr(out, 1, 4) AS out "
                        b"FROM relu1_fwd) CROSS JOIN range(100000000);\n")
            time.sleep(wait)
            prompt.type(b"\x03")
            prompt.read(b"query stopped", stopped)
            prompt.read(b"sparkcnn> ", 1 + stopped)
        prompt.type(b"SELECT COUNT(*) AS n FROM conv1_fwd;\n")
        prompt.read(b"(1 row)")
        prompt.read(b"sparkcnn> ", 4)
        prompt.type(b"half a statement")
        time.sleep(0.5)
        prompt.type(b"\x03")
        prompt.read(b"sparkcnn> ", 5)
        prompt.type(b"quit\n")
        assert prompt.exit_code() == 0
    finally:
        prompt.close()
    assert b"Traceback" not in prompt.screen and b"error" not in prompt.screen


def test_the_sql_prompt_says_when_sparks_jvm_has_ended_and_stops(trained):
    import signal

    prompt = SqlPrompt(trained.storage.url)
    try:
        prompt.read(b"sparkcnn> ")
        children = Path(f"/proc/{prompt.pid}/task/{prompt.pid}/children").read_text().split()
        (jvm,) = [int(c) for c in children if b"SparkSubmit" in Path(f"/proc/{c}/cmdline").read_bytes()]
        os.kill(jvm, signal.SIGKILL)
        prompt.type(b"SELECT COUNT(*) FROM conv1_fwd;\n")
        prompt.read(b"the prompt cannot go on")
        assert prompt.exit_code() == 1
    finally:
        prompt.close()
    assert b"error: Spark's JVM ended (exit code -9)" in prompt.screen
    assert b"Traceback" not in prompt.screen
