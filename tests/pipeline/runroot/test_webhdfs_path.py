"""The WebHDFS client's request path against a stand-in NameNode and DataNodes (plain HTTP servers): one
request per file once a DataNode is known, kept NameNode connections, a failed DataNode dropped."""
from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import pytest

from sparkcnn.pipeline.runroot import hdfs


class Cluster:
    """A NameNode that redirects every operation to its first live DataNode, and DataNodes holding files."""

    def __init__(self, datanodes: int = 2):
        self.files: dict[str, bytes] = {}
        self.calls: list[tuple[str, str, str]] = []  # (server, method, op)
        self.datanodes = [self._serve(f"dn{n}") for n in range(datanodes)]
        self.namenode = self._serve("nn")

    def _serve(self, name: str) -> ThreadingHTTPServer:
        cluster = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def _answer(self, code: int, body: bytes = b"", close: bool = False):
                self.send_response(code)
                self.send_header("Content-Length", str(len(body)))
                if close:
                    self.send_header("Connection", "close")
                self.end_headers()
                self.wfile.write(body)

            def _handle(self, method: str):
                parts = urlsplit(self.path)
                query = {k: v[0] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
                path = parts.path.removeprefix("/webhdfs/v1")
                data = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                cluster.calls.append((name, method, query["op"]))
                if name == "nn":
                    if query["op"] == "DELETE":
                        cluster.files.pop(path, None)
                        return self._answer(200, b'{"boolean": true}')
                    excluded = query.get("excludedatanodes", "")
                    live = [d for d in cluster.datanodes if f"127.0.0.1:{d.server_port}" not in excluded]
                    location = (f"http://127.0.0.1:{live[0].server_port}{parts.path}?op={query['op']}"
                                f"&namenoderpcaddress=127.0.0.1:8020")
                    return self._answer(200, json.dumps({"Location": location}).encode())
                if query["op"] == "CREATE":
                    cluster.files[path] = data
                    return self._answer(201, close=True)
                if path not in cluster.files:
                    return self._answer(404, b'{"RemoteException": {"exception": "FileNotFoundException", '
                                             b'"message": "no such file"}}', close=True)
                return self._answer(200, cluster.files[path], close=True)

            def do_GET(self):
                self._handle("GET")

            def do_PUT(self):
                self._handle("PUT")

            def do_DELETE(self):
                self._handle("DELETE")

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        return server

    def stop(self):
        for server in [self.namenode, *self.datanodes]:
            server.shutdown()
            server.server_close()


@pytest.fixture
def cluster():
    c = Cluster()
    yield c
    c.stop()


def client(cluster: Cluster) -> hdfs.WebHdfs:
    webhdfs = hdfs.WebHdfs(f"127.0.0.1:{cluster.namenode.server_port}")
    webhdfs._transfer_addresses = lambda: {f"127.0.0.1:{d.server_port}": [f"xfer{i}"]
                                           for i, d in enumerate(cluster.datanodes)}
    return webhdfs


def test_the_namenode_is_asked_once_then_each_file_is_one_datanode_request(cluster):
    webhdfs = client(cluster)
    for n in range(5):
        webhdfs.write(f"/run/f{n}", b"x" * n)
    assert [webhdfs.read(f"/run/f{n}") for n in range(5)] == [b"x" * n for n in range(5)]
    assert webhdfs.requests == {"namenode": 1, "datanode": 10}
    assert [c[0] for c in cluster.calls] == ["nn"] + ["dn0"] * 10
    with pytest.raises(FileNotFoundError):
        webhdfs.read("/run/missing")


def test_a_failed_datanode_is_dropped_and_the_namenode_asked_again_without_it(cluster, monkeypatch):
    monkeypatch.setattr(hdfs.time, "sleep", lambda s: None)
    webhdfs = client(cluster)
    webhdfs.write("/run/a", b"a")
    dead = cluster.datanodes.pop(0)
    dead.shutdown()
    dead.server_close()
    webhdfs.write("/run/b", b"b")
    assert cluster.files["/run/b"] == b"b" and webhdfs.datanodes == [f"127.0.0.1:{cluster.datanodes[0].server_port}"]
    assert ("nn", "DELETE", "DELETE") in cluster.calls  # the failed attempt's part, if any, removed first


def test_writes_later_overlap_and_wait_reports_a_failure(cluster, monkeypatch):
    webhdfs = client(cluster)
    for n in range(10):
        webhdfs.write_later(f"/run/f{n}", bytes([n]))
    webhdfs.wait()
    assert all(cluster.files[f"/run/f{n}"] == bytes([n]) for n in range(10))
    monkeypatch.setattr(hdfs, "NAMENODE_BUDGET_S", 0)
    failing = hdfs.WebHdfs("127.0.0.1:1")  # nothing listens there: refused, given up at once
    failing.write_later("/run/x", b"x")
    with pytest.raises(hdfs.WebHdfsError, match="refused"):
        failing.wait()
