"""A data plane's end of the sync protocol, in Python, for tests that need to say exactly what
a data plane says (or what a broken or hostile one would): TLS with a client certificate, the
websocket handshake and framing written out by hand, and the protocol's messages compiled from
proto/tollgate_sync.proto with protoc at first use."""
import base64
import importlib
import os
import select
import socket
import ssl
import struct
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
_pb = None


def messages():
    """The generated module (tollgate_sync_pb2)."""
    global _pb
    if _pb is None:
        out = tempfile.mkdtemp(prefix="tg-pb-")
        subprocess.run(["protoc", f"--python_out={out}", "-I", os.path.join(ROOT, "proto"),
                        os.path.join(ROOT, "proto", "tollgate_sync.proto")], check=True)
        sys.path.insert(0, out)
        _pb = importlib.import_module("tollgate_sync_pb2")
    return _pb


class Closed(Exception):
    """The connection ended; .code and .reason come from the peer's close frame (or None)."""

    def __init__(self, msg, code=None, reason=""):
        super().__init__(msg if code is None else f"{msg} {code}: {reason}")
        self.code, self.reason = code, reason


def _mask(payload, mask):
    """Websocket client masking, fast enough for 16 MiB (one big-integer XOR)."""
    n = len(payload)
    if n == 0:
        return b""
    m = (mask * (n // 4 + 1))[:n]
    return (int.from_bytes(payload, "big") ^ int.from_bytes(m, "big")).to_bytes(n, "big")


class SyncPeer:
    def __init__(self, host, port, cert=None, key=None, ca=None, server_name=None, timeout=10,
                 path="/v1/sync"):
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        if ca:
            ctx.load_verify_locations(ca)
            ctx.check_hostname = True
        else:
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        if cert:
            ctx.load_cert_chain(cert, key)
        raw = socket.create_connection((host, port), timeout=timeout)
        self.sock = ctx.wrap_socket(raw, server_hostname=server_name or host)
        self.sock.settimeout(timeout)
        self.buf = b""
        self._handshake(host, port, path)

    def _handshake(self, host, port, path):
        key = base64.b64encode(os.urandom(16)).decode()
        req = (f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
               f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
               f"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: tollgate.sync.v1\r\n\r\n")
        self.sock.sendall(req.encode())
        while b"\r\n\r\n" not in self.buf:
            chunk = self.sock.recv(4096)
            if not chunk:
                raise Closed("closed during the handshake")
            self.buf += chunk
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        self.status = int(head.split(b" ")[1])
        if self.status != 101:
            raise Closed(f"upgrade refused: {head.splitlines()[0].decode()}")

    def _recv_exact(self, n):
        while len(self.buf) < n:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise Closed("connection closed")
            self.buf += chunk
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def send_raw(self, payload, opcode=2):
        head = bytes([0x80 | opcode])
        n = len(payload)
        if n < 126:
            head += bytes([0x80 | n])
        elif n < 65536:
            head += bytes([0x80 | 126]) + struct.pack("!H", n)
        else:
            head += bytes([0x80 | 127]) + struct.pack("!Q", n)
        mask = os.urandom(4)
        self.sock.sendall(head + mask + _mask(payload, mask))

    def send(self, **body):
        """send(hello=pb.Hello(...)) — one Envelope."""
        env = messages().Envelope(**body)
        self.send_raw(env.SerializeToString())

    def recv_frame(self):
        data = b""
        while True:
            b0, b1 = self._recv_exact(2)
            opcode, n = b0 & 0x0F, b1 & 0x7F
            if n == 126:
                n = struct.unpack("!H", self._recv_exact(2))[0]
            elif n == 127:
                n = struct.unpack("!Q", self._recv_exact(8))[0]
            if b1 & 0x80:
                mask = self._recv_exact(4)
                payload = bytes(b ^ mask[i % 4] for i, b in enumerate(self._recv_exact(n)))
            else:
                payload = self._recv_exact(n)
            if opcode == 8:
                code = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else None
                raise Closed("close frame", code, payload[2:].decode("utf-8", "replace"))
            if opcode == 9:
                self._pong(payload)
                continue
            if opcode == 10:
                continue
            data += payload
            if b0 & 0x80:
                return data

    def _pong(self, payload):
        self.send_raw(payload, opcode=10)

    def recv(self, skip_heartbeats=True):
        """The next Envelope (heartbeats skipped unless asked for)."""
        while True:
            env = messages().Envelope()
            env.ParseFromString(self.recv_frame())
            if skip_heartbeats and env.WhichOneof("body") == "heartbeat":
                continue
            return env

    def readable(self, timeout):
        """Whether a frame (or its start) is waiting, within `timeout` seconds."""
        if self.buf or self.sock.pending():
            return True
        return bool(select.select([self.sock], [], [], timeout)[0])

    def recv_for(self, seconds, beat_every=None, version=0):
        """Every Envelope (heartbeats included) received for `seconds`, sending a Heartbeat at
        `version` every `beat_every` seconds meanwhile (a live data plane). Stops early when the
        connection ends: then the last element is the Closed exception."""
        out, deadline, next_beat = [], time.monotonic() + seconds, time.monotonic()
        while time.monotonic() < deadline:
            if beat_every is not None and time.monotonic() >= next_beat:
                next_beat = time.monotonic() + beat_every
                try:
                    self.send(heartbeat=messages().Heartbeat(version=version))
                except OSError as e:
                    out.append(Closed(f"send failed: {e!r}"))
                    return out
            if not self.readable(0.05):
                continue
            try:
                env = messages().Envelope()
                env.ParseFromString(self.recv_frame())
                out.append(env)
            except (Closed, OSError) as e:
                out.append(e if isinstance(e, Closed) else Closed(repr(e)))
                return out
        return out

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


class HealthyPeer(threading.Thread):
    """A well-behaved data plane on its own thread: Hello (fresh store), ACKs every delta and
    snapshot, heartbeats every 0.3 s. .acked is the last version it acknowledged; .error what
    ended it unexpectedly. Used to show that another data plane's misbehaviour disturbs no one."""

    def __init__(self, connect, hello):
        super().__init__(daemon=True)
        self.connect, self.hello_fields = connect, hello
        self.acked, self.error, self.welcomed = -1, None, threading.Event()
        self.stop_flag = threading.Event()

    def run(self):
        pb = messages()
        try:
            peer = self.connect()
            peer.send(hello=pb.Hello(**self.hello_fields))
            while not self.stop_flag.is_set():
                for env in peer.recv_for(0.3, beat_every=0.3, version=max(self.acked, 0)):
                    if isinstance(env, Closed):
                        raise env
                    kind = env.WhichOneof("body")
                    if kind == "welcome":
                        self.welcomed.set()
                    elif kind == "delta":
                        peer.send(ack=pb.Ack(nonce=env.delta.nonce,
                                             applied_version=env.delta.to_version))
                        self.acked = env.delta.to_version
                    elif kind == "snapshot_end":
                        peer.send(ack=pb.Ack(nonce=env.snapshot_end.nonce,
                                             applied_version=env.snapshot_end.version,
                                             config_digest=env.snapshot_end.config_digest))
                        self.acked = env.snapshot_end.version
                    elif kind == "error":
                        raise Closed(f"error from the control plane: {env.error.message}")
            peer.close()
        except Exception as e:  # noqa: BLE001 - reported to the test through .error
            self.error = e

    def wait_acked(self, version, timeout=15):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.error is None:
            if self.acked >= version:
                return True
            time.sleep(0.02)
        return False

    def stop(self):
        self.stop_flag.set()
        self.join(10)
