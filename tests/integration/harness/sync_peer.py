"""A data plane's end of the sync protocol, in Python, for tests that need to say exactly what
a data plane says (or what a broken or hostile one would): TLS with a client certificate, the
websocket handshake and framing written out by hand, and the protocol's messages compiled from
proto/tollgate_sync.proto with protoc at first use."""
import base64
import importlib
import os
import socket
import ssl
import struct
import subprocess
import sys
import tempfile

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
    pass


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
        body = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        self.sock.sendall(head + mask + body)

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
                raise Closed("close frame")
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

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass
