"""A TCP relay on 127.0.0.1 that tests put between data planes and a control plane node, to
break the network between them without root (no iptables, no network namespace).

The relay forwards bytes both ways unchanged (TLS passes through: the data plane still
verifies the CP's certificate and presents its own), so the processes see what they would see
on a real network that fails:

  cut(pids)          the connections of those processes are closed at once (both sides see
                     the peer close, as after a reset middlebox or a rebooted router)
  stall(pids, secs)  their connections stop carrying bytes for `secs` seconds, then are closed:
                     a black hole, which only the heartbeat timeouts can detect
  refuse(secs)       every connection is cut and new ones are closed on accept for `secs`
                     seconds: the node is unreachable

A connection is attributed to a process by its client port: the relay knows the peer port of
each connection it accepted, and pid_ports() reads which local TCP ports a process holds from
/proc (the socket inodes under /proc/<pid>/fd, matched in /proc/net/tcp and tcp6).
"""
import os
import selectors
import socket
import threading
import time

from .procs import LOOPBACK, free_port


def pid_ports(pid):
    """Local TCP ports of the sockets process `pid` holds (empty when it is gone)."""
    inodes = set()
    try:
        for fd in os.listdir(f"/proc/{pid}/fd"):
            try:
                link = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if link.startswith("socket:["):
                inodes.add(link[8:-1])
    except OSError:
        return set()
    ports = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as f:
                next(f)
                for line in f:
                    cols = line.split()
                    if cols[9] in inodes:
                        ports.add(int(cols[1].rsplit(":", 1)[1], 16))
        except OSError:
            continue
    return ports


class _Conn:
    def __init__(self, client, upstream, client_port):
        self.client, self.upstream, self.client_port = client, upstream, client_port
        self.stalled_until = 0.0
        self.closed = False
        self.lock = threading.Lock()

    def close(self):
        with self.lock:
            if self.closed:
                return
            self.closed = True
        for s in (self.client, self.upstream):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()


class Relay:
    """start() / stop(); .address ("127.0.0.1:port") is what the data planes dial."""

    def __init__(self, target_host, target_port, name="relay"):
        self.target = (target_host, int(target_port))
        self.name = name
        self.port = free_port()
        self.address = f"{LOOPBACK}:{self.port}"
        self.refuse_until = 0.0
        self.accepted = 0
        self._conns = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._listener = None
        self._thread = None

    # -- lifecycle --------------------------------------------------------------------------

    def start(self):
        self._listener = socket.socket()
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind((LOOPBACK, self.port))
        self._listener.listen(64)
        self._listener.settimeout(0.2)
        self._thread = threading.Thread(target=self._accept_loop, name=self.name, daemon=True)
        self._thread.start()
        return self

    def stop(self):
        self._stop.set()
        if self._thread:
            self._thread.join(5)
        if self._listener:
            self._listener.close()
        for c in self._snapshot():
            c.close()

    # -- faults -----------------------------------------------------------------------------

    def connections_of(self, pids):
        ports = set()
        for pid in pids:
            ports |= pid_ports(pid)
        return [c for c in self._snapshot() if c.client_port in ports]

    def cut(self, pids=None):
        """Closes the connections of `pids` (all connections when None); returns how many."""
        victims = self._snapshot() if pids is None else self.connections_of(pids)
        for c in victims:
            c.close()
        return len(victims)

    def stall(self, pids, seconds):
        """Stops forwarding on the connections of `pids` for `seconds`, then closes them."""
        victims = self.connections_of(pids)
        until = time.monotonic() + seconds
        for c in victims:
            c.stalled_until = until
        return len(victims)

    def refuse(self, seconds):
        """Unreachable for `seconds`: current connections cut, new ones closed on accept."""
        self.refuse_until = time.monotonic() + seconds
        return self.cut()

    def heal(self):
        self.refuse_until = 0.0
        for c in self._snapshot():
            c.stalled_until = 0.0

    # -- forwarding -------------------------------------------------------------------------

    def _snapshot(self):
        with self._lock:
            return [c for c in self._conns if not c.closed]

    def _accept_loop(self):
        while not self._stop.is_set():
            try:
                client, peer = self._listener.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            if time.monotonic() < self.refuse_until:
                client.close()
                continue
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()  # the node itself is down: the dialer sees a closed connection
                continue
            self.accepted += 1
            conn = _Conn(client, upstream, peer[1])
            with self._lock:
                self._conns = {c for c in self._conns if not c.closed}
                self._conns.add(conn)
            threading.Thread(target=self._pump, args=(conn,), name=f"{self.name}-pump",
                             daemon=True).start()

    def _pump(self, conn):
        sel = selectors.DefaultSelector()
        try:
            sel.register(conn.client, selectors.EVENT_READ, conn.upstream)
            sel.register(conn.upstream, selectors.EVENT_READ, conn.client)
        except (ValueError, OSError):
            conn.close()
            return
        try:
            while not conn.closed and not self._stop.is_set():
                if conn.stalled_until:
                    # a black hole: nothing moves (the kernel buffers fill), then it breaks
                    if time.monotonic() < conn.stalled_until:
                        time.sleep(0.05)
                        continue
                    break
                for key, _ in sel.select(0.1):
                    try:
                        data = key.fileobj.recv(65536)
                    except OSError:
                        data = b""
                    if not data:
                        return
                    try:
                        key.data.sendall(data)
                    except OSError:
                        return
        except (ValueError, OSError):
            pass  # a socket closed under select() by cut()
        finally:
            sel.close()
            conn.close()
