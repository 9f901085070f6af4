"""Real processes for integration tests: free loopback ports, managed children, log capture.

Every process the harness starts is a ManagedProcess: its output goes to a log file, it is
registered so a failing test can show what it logged meanwhile, and it is stopped by the
fixture that started it (and, as a last resort, when the session ends). Children get a
parent-death signal, so even a killed pytest leaves nothing running.
"""
import ctypes
import errno
import os
import signal
import socket
import subprocess
import time

LOOPBACK = "127.0.0.1"

_handed_out = set()
_registry = []  # every ManagedProcess ever started in this session

_PR_SET_PDEATHSIG = 1
try:
    _libc = ctypes.CDLL(None, use_errno=True)
except OSError:  # pragma: no cover - always present on Linux
    _libc = None


def free_port():
    """A TCP port on 127.0.0.1 that nothing listens on now and that we have not handed out."""
    for _ in range(200):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind((LOOPBACK, 0))
            port = s.getsockname()[1]
        if port not in _handed_out:
            _handed_out.add(port)
            return port
    raise RuntimeError("no free loopback port")


def wait_for(predicate, timeout, interval=0.1, what="condition"):
    """Polls predicate() until it returns a truthy value (returned) or raises TimeoutError."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


def tail(path, lines=200, start=0):
    """The last `lines` lines of a file from byte offset `start` ('' when missing)."""
    try:
        with open(path, "rb") as f:
            f.seek(start)
            data = f.read()
    except OSError:
        return ""
    text = data.decode("utf-8", "replace").splitlines()
    cut = len(text) - lines
    head = [f"... ({cut} earlier lines in {path})"] if cut > 0 else []
    return "\n".join(head + text[max(cut, 0):])


def processes_under(path):
    """Pids (other than ours) whose working directory or any argument lies under `path`."""
    path = os.path.realpath(path)
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            cwd = os.readlink(f"/proc/{entry}/cwd")
        except OSError:
            cwd = ""
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                args = f.read().decode("utf-8", "replace").split("\0")
        except OSError:
            args = []
        if any(a == path or a.startswith(path + "/") for a in [cwd] + args):
            found.append(int(entry))
    return found


def kill_processes_under(path, grace=10.0):
    """Stops every process still running under `path`: SIGQUIT/SIGTERM, then SIGKILL."""
    pids = processes_under(path)
    for pid in pids:
        _signal(pid, signal.SIGTERM)
    try:
        wait_for(lambda: not processes_under(path), grace, what=f"processes under {path}")
    except TimeoutError:
        for pid in processes_under(path):
            _signal(pid, signal.SIGKILL)
    return pids


def _signal(pid, sig):
    try:
        os.kill(pid, sig)
    except OSError as e:
        if e.errno != errno.ESRCH:
            raise


def _death_signal(sig):
    """preexec_fn: deliver `sig` to the child when pytest's main thread dies (runs after setuid)."""
    def set_it():
        if _libc is not None:
            _libc.prctl(_PR_SET_PDEATHSIG, int(sig), 0, 0, 0)
    return set_it


class ManagedProcess:
    """One long-running child with its output in `log_path`."""

    def __init__(self, name, argv, log_path, env=None, cwd=None, user=None,
                 stop_signal=signal.SIGTERM, death_signal=signal.SIGTERM):
        self.name = name
        self.argv = [str(a) for a in argv]
        self.log_path = str(log_path)
        self.env = env
        self.cwd = cwd
        self.user = user  # (uid, gid) to run as, or None
        self.stop_signal = stop_signal
        self.death_signal = death_signal
        self.proc = None
        self.returncode = None
        _registry.append(self)

    @property
    def pid(self):
        return self.proc.pid if self.proc else None

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def start(self):
        if self.running():
            raise RuntimeError(f"{self.name} is already running")
        extra = {}
        if self.user is not None and os.geteuid() == 0:
            extra = {"user": self.user[0], "group": self.user[1], "extra_groups": []}
        with open(self.log_path, "ab") as log:
            log.write(f"==== {time.strftime('%H:%M:%S')} starting: {' '.join(self.argv)}\n"
                      .encode())
            log.flush()
            self.proc = subprocess.Popen(
                self.argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                env=self.env, cwd=self.cwd, start_new_session=True,
                preexec_fn=_death_signal(self.death_signal), **extra)
        self.returncode = None
        return self

    def stop(self, sig=None, timeout=30.0):
        """Signals the process, waits (bounded, then SIGKILL); returns its exit code."""
        if self.proc is None:
            return self.returncode
        if self.proc.poll() is None:
            _signal(self.proc.pid, sig or self.stop_signal)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self._note(f"did not exit {timeout:.0f}s after signal {sig or self.stop_signal};"
                           " sending SIGKILL")
                self.proc.kill()
                self.proc.wait()
        self.returncode = self.proc.returncode
        self._note(f"exited with {self.returncode}")
        self.proc = None
        return self.returncode

    def log_size(self):
        try:
            return os.path.getsize(self.log_path)
        except OSError:
            return 0

    def log_text(self):
        try:
            with open(self.log_path, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def _note(self, text):
        with open(self.log_path, "ab") as log:
            log.write(f"==== {time.strftime('%H:%M:%S')} {self.name} {text}\n".encode())


def log_offsets():
    """Current size of every registered log, keyed by log path (taken when a test starts)."""
    return {p.log_path: p.log_size() for p in _registry}


def failure_sections(offsets, lines=200):
    """(title, text) per process that logged since `offsets` or is running, for a failed test."""
    sections, seen = [], set()
    for p in _registry:
        if p.log_path in seen:
            continue
        seen.add(p.log_path)
        start = offsets.get(p.log_path, 0)
        text = tail(p.log_path, lines, start)
        if not text:
            if not p.running():
                continue
            text = "(nothing logged during this test; its last lines:)\n" + tail(p.log_path, 20)
        state = f"running, pid {p.pid}" if p.running() else f"exited {p.returncode}"
        sections.append((f"{p.name} log ({state}) {p.log_path}", text))
    return sections


def stop_all():
    """Session end: stop whatever a fixture did not."""
    for p in reversed(_registry):
        if p.running():
            p.stop(timeout=15)


SANITIZER_MARKERS = ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:",
                     "WARNING: ThreadSanitizer")


def sanitizer_report(text):
    """The first sanitizer finding in a log, or None."""
    for marker in SANITIZER_MARKERS:
        i = text.find(marker)
        if i >= 0:
            return text[max(0, text.rfind("\n", 0, i) + 1):][:4000]
    return None
