"""Helpers for the cluster trust tests (DESIGN.md §6): running `tollgate dp join`, the CA pin,
and a fake join server.

run_dp_join(binary, prefix, *args)  `tollgate dp join ...` with TOLLGATE_PREFIX=prefix
spki_hash(cert_pem)                 "sha256:<hex>" of a certificate's SubjectPublicKeyInfo
FakeCa                              a CA of our own (python3-cryptography): issue_server(names),
                                    sign_csr(csr_pem, node_id, cp_id)
FakeJoinServer                      plays the CP's /v1/join/cluster-info and /v1/join/csr on
                                    127.0.0.1 over TLS, so the DP side of join is tested on its
                                    own; knobs make it misbehave (wrong signature, other CA,
                                    refusals), and .requests records what it was asked.
Tests that need FakeCa/FakeJoinServer skip when `cryptography` is not installed.
"""
import datetime
import hashlib
import hmac
import ipaddress
import json
import os
import ssl
import subprocess
import tempfile
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

from .cp import clean_env
from .procs import LOOPBACK

try:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
    HAVE_CRYPTOGRAPHY = True
except ImportError:  # pragma: no cover - python3-cryptography is a Debian package
    HAVE_CRYPTOGRAPHY = False

TOKEN_ALPHABET = "abcdefghijklmnopqrstuvwxyz0123456789"


def run_dp_join(binary, prefix, *args, timeout=60, env=None):
    """Runs `tollgate dp join <args>` for a DP whose state lives in `prefix`."""
    full_env = clean_env()
    full_env.update({"TOLLGATE_PREFIX": str(prefix), "TOLLGATE_LOG_LEVEL": "info"})
    full_env.update(env or {})
    os.makedirs(prefix, exist_ok=True)
    return subprocess.run([str(binary), "dp", "join", *map(str, args)], env=full_env, cwd=prefix,
                          capture_output=True, text=True, timeout=timeout)


def spki_hash(cert_pem):
    cert = x509.load_pem_x509_certificate(cert_pem.encode())
    der = cert.public_key().public_bytes(serialization.Encoding.DER,
                                         serialization.PublicFormat.SubjectPublicKeyInfo)
    return "sha256:" + hashlib.sha256(der).hexdigest()


def _pem(obj):
    if isinstance(obj, x509.Certificate):
        return obj.public_bytes(serialization.Encoding.PEM).decode()
    return obj.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption()).decode()


class FakeCa:
    def __init__(self, cn="fake cluster CA"):
        self.key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
        now = datetime.datetime.utcnow()
        self.cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
                     .public_key(self.key.public_key()).serial_number(x509.random_serial_number())
                     .not_valid_before(now - datetime.timedelta(minutes=5))
                     .not_valid_after(now + datetime.timedelta(days=30))
                     .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
                     .add_extension(x509.KeyUsage(False, False, False, False, False, True, True,
                                                  False, False), critical=True)
                     .sign(self.key, hashes.SHA256()))
        self.pem = _pem(self.cert)
        self.hash = spki_hash(self.pem)

    def _leaf(self, subject, public_key, sans, eku):
        now = datetime.datetime.utcnow()
        return (x509.CertificateBuilder().subject_name(subject).issuer_name(self.cert.subject)
                .public_key(public_key).serial_number(x509.random_serial_number())
                .not_valid_before(now - datetime.timedelta(minutes=5))
                .not_valid_after(now + datetime.timedelta(days=7))
                .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                .add_extension(x509.SubjectAlternativeName(sans), critical=False)
                .add_extension(x509.ExtendedKeyUsage([eku]), critical=False)
                .sign(self.key, hashes.SHA256()))

    def issue_server(self, names):
        """(cert_pem, key_pem) for a TLS server answering to `names` (IPs or DNS names)."""
        key = ec.generate_private_key(ec.SECP256R1())
        sans = []
        for n in names:
            try:
                sans.append(x509.IPAddress(ipaddress.ip_address(n)))
            except ValueError:
                sans.append(x509.DNSName(n))
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])])
        cert = self._leaf(subject, key.public_key(), sans, ExtendedKeyUsageOID.SERVER_AUTH)
        return _pem(cert), _pem(key)

    def sign_csr(self, csr_pem, node_id, cp_id):
        csr = x509.load_pem_x509_csr(csr_pem.encode())
        assert csr.is_signature_valid
        subject = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "tollgate-dp"),
                             x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, cp_id),
                             x509.NameAttribute(NameOID.COMMON_NAME, node_id)])
        cert = self._leaf(subject, csr.public_key(),
                          [x509.UniformResourceIdentifier(f"urn:tollgate:dp:{node_id}")],
                          ExtendedKeyUsageOID.CLIENT_AUTH)
        return _pem(cert)


class FakeJoinServer:
    """A TLS server on 127.0.0.1 speaking the join protocol for one token.

    token         the token it accepts (Bearer on /csr, token_id on /cluster-info)
    ca            the CA it hands out and signs with (default: a new FakeCa)
    info_ca       the CA named in cluster-info (default `ca`): another one simulates a
                  man in the middle who substituted the CA
    sign_token    the token whose digest keys the signature (default `token`); a different one
                  simulates an attacker who does not hold the token
    server_names  names in the server certificate (the DP checks them on /csr)
    info_status, csr_status  answer these statuses with {"message": ...} instead of the real
                  answers when not 200/201
    """

    def __init__(self, workdir, token, ca=None, info_ca=None, sign_token=None,
                 server_names=(LOOPBACK,), info_status=200, csr_status=201):
        self.token = token
        self.ca = ca or FakeCa()
        self.info_ca = info_ca or self.ca
        self.sign_token = sign_token or token
        self.info_status, self.csr_status = info_status, csr_status
        self.node_id, self.cp_id = str(uuid.uuid4()), str(uuid.uuid4())
        self.requests = []
        cert_pem, key_pem = self.ca.issue_server(list(server_names))
        self._dir = tempfile.mkdtemp(prefix="fake-join-", dir=workdir)
        chain = os.path.join(self._dir, "server.pem")
        with open(chain, "w") as f:
            f.write(cert_pem + key_pem)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(chain)
        self.httpd = ThreadingHTTPServer((LOOPBACK, 0), self._handler())
        self.httpd.socket = ctx.wrap_socket(self.httpd.socket, server_side=True)
        self.address = f"{LOOPBACK}:{self.httpd.server_address[1]}"
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()

    def paths(self):
        return [r[1].split("?")[0] for r in self.requests]

    def _cluster_info(self, query):
        if query.get("token_id") != [self.token[:6]] or self.info_status != 200:
            return 401 if self.info_status == 200 else self.info_status, \
                {"message": "invalid or expired join token"}, {}
        body = json.dumps({"ca_certificate": self.info_ca.pem, "ca_hash": self.info_ca.hash,
                           "endpoints": [self.address], "control_plane_id": self.cp_id}).encode()
        key = hashlib.sha256(self.sign_token.encode()).digest()
        sig = hmac.new(key, body, hashlib.sha256).hexdigest()
        return 200, body, {"X-Tollgate-Signature": f"{self.token[:6]}:{sig}"}

    def _csr(self, headers, body):
        if headers.get("Authorization") != f"Bearer {self.token}":
            return 401, {"message": "invalid or expired join token"}, {}
        if self.csr_status != 201:
            return self.csr_status, {"message": "refused by the fake server"}, {}
        req = json.loads(body)
        cert = self.ca.sign_csr(req["csr"], self.node_id, self.cp_id)
        return 201, {"node_id": self.node_id, "control_plane_id": self.cp_id, "certificate": cert,
                     "ca_certificate": self.ca.pem, "endpoints": [self.address, "10.9.8.7:8005"],
                     "expires_at": 2000000000}, {}

    def _handler(self):
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def _answer(self, status, body, headers):
                data = body if isinstance(body, bytes) else json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for k, v in headers.items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):
                server.requests.append(("GET", self.path, dict(self.headers), b""))
                url = urlsplit(self.path)
                if url.path != "/v1/join/cluster-info":
                    return self._answer(404, {"message": "Not found"}, {})
                self._answer(*server._cluster_info(parse_qs(url.query)))

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                server.requests.append(("POST", self.path, dict(self.headers), body))
                if self.path != "/v1/join/csr":
                    return self._answer(404, {"message": "Not found"}, {})
                self._answer(*server._csr(self.headers, body))

        return Handler
