"""`sidrec data download` against a small file served on loopback: cache, sha256, resume."""

import hashlib
import http.server
import threading
from functools import partial

import pytest

from sidrec.data.download import Remote, fetch
from sidrec.errors import SidrecError


class RangeHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *a):
        pass

    def do_GET(self):  # minimal Range support for resume
        path = self.translate_path(self.path)
        data = open(path, "rb").read()
        rng = self.headers.get("Range")
        if rng:
            start = int(rng.split("=")[1].split("-")[0])
            self.send_response(206)
            data = data[start:]
        else:
            self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


@pytest.fixture
def server(tmp_path):
    root = tmp_path / "www"
    root.mkdir()
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), partial(RangeHandler, directory=str(root)))
    t = threading.Thread(target=httpd.serve_forever, daemon=True)
    t.start()
    yield root, f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


def test_fetch_verifies_and_resumes(server, tmp_path):
    root, base = server
    payload = bytes(range(256)) * 400
    (root / "f.bin").write_bytes(payload)
    sha = hashlib.sha256(payload).hexdigest()
    dest = tmp_path / "cache"
    dest.mkdir()
    (dest / "f.bin.part").write_bytes(payload[:1000])  # an interrupted download
    p = fetch(Remote(f"{base}/f.bin", sha), dest, show_progress=False)
    assert p.read_bytes() == payload and not (dest / "f.bin.part").exists()
    assert fetch(Remote(f"{base}/f.bin", sha), dest, show_progress=False) == p  # cached
    with pytest.raises(SidrecError, match="sha256 mismatch"):
        fetch(Remote(f"{base}/f.bin", "0" * 64), tmp_path / "other", show_progress=False)
    with pytest.raises(SidrecError, match="download failed"):
        fetch(Remote(f"{base}/missing.bin"), tmp_path / "x", show_progress=False)


def test_unknown_dataset(cli):
    code, _, se = cli("data", "download", "nope")
    assert code == 2 and "unknown dataset" in se
