"""Seed 004 (the Kong tutorial applied with decK: four versions of key-auth.yaml) for the tests
that apply it through a client and check it through a real data plane: the files, the local
stand-in for the tutorial's upstream, and a control plane with one enrolled data plane."""
import os
import re
import tempfile

import pytest

from .dp import enroll_dp
from .procs import wait_for
from .upstream import EchoUpstream

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
SEED_004 = "/work/shared/seeds/004_5a18fee121b1cdee.txt"


def seed_004_files():
    """The four key-auth.yaml versions of seed 004, in the tutorial's order."""
    path = SEED_004
    if not os.path.exists(path):
        path = os.path.join(REPO, "..", "shared", "seeds", os.path.basename(SEED_004))
    if not os.path.exists(path):
        pytest.skip("seed 004 is not available on this machine")
    with open(path) as f:
        text = f.read()
    blocks = re.findall(r"cat > key-auth\.yaml << 'EOF'\n(.*?)\nEOF\n", text, re.S)
    assert len(blocks) == 4, f"seed 004 should hold four files, found {len(blocks)}"
    return [b + "\n" for b in blocks]


def with_local_upstream(text, port):
    """The tutorial's upstream is httpbin in Kubernetes; ours is the local echo server."""
    return text.replace("host: httpbin.kong.svc.cluster.local\n  port: 8000",
                        f"host: 127.0.0.1\n  port: {port}")


class HybridDp:
    """A control plane, one data plane enrolled with `tollgate dp join`, and an echo upstream;
    stop() ends the data plane and the upstream (the control plane is cp_factory's)."""

    def __init__(self, cp_factory, tollgate_bin, workdir, name):
        self.up = EchoUpstream().start()
        self.cp = cp_factory(start=False)
        self.cp.env["TOLLGATE_CLUSTER_ADVERTISE"] = self.cp.cluster_address
        self.cp.start()
        prefix = tempfile.mkdtemp(prefix=f"{name}-", dir=workdir)
        self.dp = enroll_dp(self.cp, tollgate_bin, prefix, os.path.join(workdir, "logs"),
                            name).start()

    def stop(self):
        self.dp.cleanup()
        self.up.stop()

    def status(self, key=None):
        """The seed's route with `key` (None: no key); None while the DP does not answer."""
        try:
            return self.dp.get("/key-auth-route/get", headers={"apikey": key} if key else {},
                               timeout=5)
        except Exception:  # noqa: BLE001 - not serving yet
            return None

    def wait_status(self, code, key=None):
        """Waits until the seed's route answers `code` for `key`; returns that answer."""
        got = []
        wait_for(lambda: (r := self.status(key)) is not None and r.status_code == code and
                 not got.append(r), 60, interval=0.1,
                 what=f"the data plane to answer {code} for key {key!r}")
        return got[-1]
