"""hdfs:// run roots: the namespace (listings, renames, deletes) through hdfs-native's NameNode RPC, file
contents over WebHDFS, one HTTP request per file to a DataNode. A WebHDFS DataNode reads and writes blocks
with Hadoop's own client, which routes around a failed DataNode; on top of that, a request that a DataNode
does not answer is retried on another.
"""
from __future__ import annotations

import getpass
import io
import json
import os
import socket
import threading
import time
import xml.etree.ElementTree as ET
from collections import Counter
from concurrent.futures import Future, ThreadPoolExecutor
from http.client import HTTPConnection, HTTPException
from urllib.parse import parse_qsl, quote, urlencode, urlsplit
from urllib.request import urlopen

from hdfs_native.fsspec import HdfsFileSystem as NativeHdfsFileSystem

from sparkcnn.pipeline.errors import NameNodeUnreachable

HTTP_ADDRESS = "dfs.namenode.http-address"
REPLICATION = "dfs.replication"
WEBHDFS_ENV = "SPARKCNN_WEBHDFS"
DEFAULT_HTTP_PORT = 9870
REQUEST_TIMEOUT_S = 60
RETRY_BUDGET_S = 180
NAMENODE_BUDGET_S = 10
DEFAULT_RPC_PORT = 8020
IN_FLIGHT = 4  # files a process sends at once with write_later


class WebHdfsError(OSError):
    """A WebHDFS request that failed for good (after retries, or with an error retrying cannot fix)."""


def check_namenode(host: str, port: int, budget_s: float = NAMENODE_BUDGET_S) -> None:
    """Fail within seconds when nothing listens at the NameNode's RPC address (the client library
    would retry for minutes); the long retries are for DataNodes that die during a run."""
    deadline = time.monotonic() + budget_s
    delay = 0.5
    while True:
        try:
            socket.create_connection((host, port), timeout=min(5.0, budget_s)).close()
            return
        except OSError as e:
            if time.monotonic() + delay > deadline:
                raise NameNodeUnreachable(f"cannot reach the HDFS NameNode at {host}:{port} "
                                          f"({e.strerror or e}); is HDFS running there?") from None
            time.sleep(delay)
            delay = min(delay * 2, 4.0)


def client_setting(name: str) -> str | None:
    """A setting of the client's Hadoop configuration ($HADOOP_CONF_DIR/hdfs-site.xml), if it has one."""
    site = os.path.join(os.environ.get("HADOOP_CONF_DIR", ""), "hdfs-site.xml")
    if os.environ.get("HADOOP_CONF_DIR") and os.path.exists(site):
        for prop in ET.parse(site).getroot().iter("property"):
            if prop.findtext("name") == name:
                return prop.findtext("value").strip()
    return None


def namenode_http_address(host: str) -> str:
    """host:port of the NameNode's web server: $SPARKCNN_WEBHDFS, else dfs.namenode.http-address in
    $HADOOP_CONF_DIR/hdfs-site.xml, else port 9870 (Hadoop's default) on the NameNode's host."""
    if os.environ.get(WEBHDFS_ENV):
        return os.environ[WEBHDFS_ENV].split("://")[-1].rstrip("/")
    return client_setting(HTTP_ADDRESS) or f"{host}:{DEFAULT_HTTP_PORT}"


class WebHdfs:
    """File contents over WebHDFS, each request retried (on another DataNode where one failed).

    The NameNode's redirect is asked for once: later requests go straight to the DataNode it named (with the
    NameNode's RPC address, as its redirects carry it), one HTTP request per file; a DataNode that fails is
    dropped and the next attempt asks the NameNode again, excluding it. Requests to the NameNode reuse one
    connection per thread (DataNodes close theirs after each request)."""

    def __init__(self, http_address: str, replication: str | None = None):
        self.base = f"http://{http_address}/webhdfs/v1"
        self.replication = replication  # the client's dfs.replication; None: the DataNode's
        self.jmx = f"http://{http_address}/jmx?qry=Hadoop:service=NameNode,name=NameNodeInfo"
        self.user = os.environ.get("HADOOP_USER_NAME") or getpass.getuser()
        self.datanodes: list[str] = []  # web addresses of DataNodes that answered, first preferred
        self.rpc_address = ""  # the NameNode's RPC address, as its redirects name it to DataNodes
        self.requests = Counter()  # HTTP requests sent, by "namenode" and "datanode"
        self._local = threading.local()
        self._pool: ThreadPoolExecutor | None = None
        self._slots = threading.BoundedSemaphore(IN_FLIGHT)
        self._pending: list[Future] = []

    def read(self, path: str) -> bytes:
        return self._with_retries(f"read {path}", lambda exclude, again: self._read_once(path, exclude))

    def write(self, path: str, data: bytes) -> None:
        """Create (or overwrite) a file with this content. Not atomic: until a write succeeds, a part of it
        may be under `path` (a failed attempt's part is deleted before the next); callers that commit by
        name write a fresh name and rename it (Storage.write_bytes) or commit through the manifest."""
        self._with_retries(f"write {path}", lambda exclude, again: self._write_once(path, data, exclude, again))

    def write_later(self, path: str, data: bytes) -> None:
        """write() in a background thread, so that a file's round trips overlap the next file's work (at
        most IN_FLIGHT at once; the caller blocks beyond that); wait() reports how they went."""
        self._slots.acquire()
        if self._pool is None:
            self._pool = ThreadPoolExecutor(IN_FLIGHT, thread_name_prefix="webhdfs-write")
        future = self._pool.submit(self.write, path, data)
        future.add_done_callback(lambda _: self._slots.release())
        self._pending.append(future)

    def wait(self) -> None:
        """Wait for every write_later; raise the first failure."""
        pending, self._pending = self._pending, []
        errors = [f.exception() for f in pending]
        if any(errors):
            raise next(e for e in errors if e)

    def _read_once(self, path: str, exclude: set[str]) -> bytes:
        location = self._direct(path, "OPEN", offset="0") or self._locate(path, "GET", "OPEN", exclude)
        return self._datanode("GET", location, exclude)

    def _write_once(self, path: str, data: bytes, exclude: set[str], again: bool) -> None:
        if again:
            try:
                self._namenode("DELETE", path, "DELETE")
            except OSError:
                pass
        params = {"createparent": "true", "overwrite": "true", **({"replication": self.replication}
                                                                   if self.replication else {})}
        location = self._direct(path, "CREATE", **params) or self._locate(path, "PUT", "CREATE", exclude, **params)
        self._datanode("PUT", location, exclude, data)

    def _direct(self, path: str, op: str, **params) -> str | None:
        """The URL of this operation at the preferred DataNode, once one is known."""
        if not self.datanodes:
            return None
        query = urlencode({"op": op, "user.name": self.user, "namenoderpcaddress": self.rpc_address, **params})
        return f"http://{self.datanodes[0]}/webhdfs/v1{quote(path)}?{query}"

    def _locate(self, path: str, method: str, op: str, exclude: set[str], **params) -> str:
        """The DataNode URL the NameNode redirects this operation to (that DataNode is remembered)."""
        if exclude:
            params["excludedatanodes"] = ",".join(sorted(exclude))
        location = json.loads(self._namenode(method, path, op, noredirect="true", **params))["Location"]
        parts = urlsplit(location)
        self.rpc_address = dict(parse_qsl(parts.query)).get("namenoderpcaddress", self.rpc_address)
        if self.rpc_address and parts.netloc not in self.datanodes:
            self.datanodes.append(parts.netloc)
        return location

    def _namenode(self, method: str, path: str, op: str, **params) -> bytes:
        query = urlencode({"op": op, "user.name": self.user, **params})
        try:
            return self._http(method, f"{self.base}{quote(path)}?{query}", "namenode", keep=True)
        except ConnectionRefusedError:
            raise _NameNodeRefused(f"the NameNode's WebHDFS at {urlsplit(self.base).netloc} refused the "
                                   f"connection") from None

    def _datanode(self, method: str, location: str, exclude: set[str], data: bytes | None = None) -> bytes:
        netloc = urlsplit(location).netloc
        try:
            return self._http(method, location, "datanode", data=data)
        except (HTTPException, OSError, _Retryable) as e:
            if isinstance(e, (FileNotFoundError, WebHdfsError)):
                raise
            if netloc in self.datanodes:
                self.datanodes.remove(netloc)
            exclude.update(self._transfer_addresses().get(netloc, ()))
            raise _Retryable(f"DataNode {netloc}: {e}") from None

    def _http(self, method: str, url: str, kind: str, keep: bool = False, data: bytes | None = None) -> bytes:
        """One request; a kept connection that the server closed meanwhile is replaced once."""
        parts = urlsplit(url)
        kept = self._local.__dict__.setdefault("connections", {})
        headers = {"Content-Type": "application/octet-stream"} if data is not None else {}
        while True:
            reused = keep and parts.netloc in kept
            connection = kept.pop(parts.netloc, None) or HTTPConnection(parts.netloc, timeout=REQUEST_TIMEOUT_S)
            try:
                self.requests[kind] += 1
                connection.request(method, f"{parts.path}?{parts.query}", body=data, headers=headers)
                response = connection.getresponse()
                body = response.read()
            except (HTTPException, OSError):
                connection.close()
                if reused:
                    continue
                raise
            if keep and not response.will_close:
                kept[parts.netloc] = connection
            else:
                connection.close()
            if response.status >= 400:
                raise _remote_error(response.status, response.reason, body, url if kind == "datanode" else parts.path)
            return body

    def _transfer_addresses(self) -> dict[str, list[str]]:
        """DataNode web address -> its data transfer address (what excludedatanodes names)."""
        try:
            with urlopen(self.jmx, timeout=REQUEST_TIMEOUT_S) as response:
                live = json.loads(json.load(response)["beans"][0]["LiveNodes"])
        except (OSError, ValueError, KeyError, IndexError):
            return {}
        return {node["infoAddr"]: [node["xferaddr"]] for node in live.values() if "infoAddr" in node}

    def _with_retries(self, what: str, attempt):
        exclude: set[str] = set()
        start = time.monotonic()
        delay, again = 0.5, False
        while True:
            try:
                return attempt(exclude, again)
            except (_Retryable, HTTPException, socket.timeout, ConnectionError) as e:
                budget = NAMENODE_BUDGET_S if isinstance(e, _NameNodeRefused) else RETRY_BUDGET_S
                if time.monotonic() + delay > start + budget:
                    raise WebHdfsError(f"WebHDFS {what}: gave up after {budget} s: {e}") from None
                time.sleep(delay)
                delay, again = min(delay * 2, 8.0), True


class _Retryable(Exception):
    """A DataNode failed this attempt; another attempt may succeed."""


class _NameNodeRefused(_Retryable):
    """The NameNode's web server refused a connection: retried for seconds, not minutes."""


def _remote_error(code: int, reason: str, body: bytes, where: str) -> Exception:
    """The exception a WebHDFS error response stands for (its RemoteException when it has one)."""
    try:
        remote = json.loads(body)["RemoteException"]
        name, message = remote["exception"], remote["message"]
    except (ValueError, KeyError, TypeError):
        name, message = f"HTTP {code}", reason
    if name == "FileNotFoundException" or code == 404:
        return FileNotFoundError(f"{where}: {message}")
    if code >= 500 or name in ("RetriableException", "StandbyException", "SafeModeException"):
        return _Retryable(f"{name}: {message}")
    return WebHdfsError(f"{where}: {name}: {message}")


class HdfsFileSystem(NativeHdfsFileSystem):
    """fsspec's hdfs:// with hdfs-native for the namespace and WebHDFS for what files hold."""

    def __init__(self, host=None, port=None, *args, **storage_options):
        address = storage_options.pop(HTTP_ADDRESS, None) or namenode_http_address(host or "localhost")
        replication = storage_options.pop(REPLICATION, None) or client_setting(REPLICATION)
        check_namenode(host or "localhost", port or DEFAULT_RPC_PORT)
        super().__init__(host, port, *args, **storage_options)
        self.http_address, self.replication = address, replication
        self.webhdfs = WebHdfs(address, replication)

    def _open(self, path, mode="rb", **kwargs):
        path = self._strip_protocol(path)
        if mode == "rb":
            return io.BytesIO(self.webhdfs.read(path))
        if mode == "wb":
            return _Upload(self.webhdfs, path)
        raise ValueError(f"mode {mode!r} is not supported on hdfs:// run roots")


class _Upload(io.BytesIO):
    """A file being written: buffered, sent on a clean close, dropped when its with-block fails."""

    def __init__(self, webhdfs: WebHdfs, path: str):
        super().__init__()
        self.webhdfs, self.target = webhdfs, path

    def close(self):
        if not self.closed:
            data = self.getvalue()
            super().close()
            self.webhdfs.write(self.target, data)

    def __exit__(self, exc_type, exc, tb):
        if exc_type is not None:
            super().close()
        else:
            self.close()

    def __del__(self):
        if not self.closed:
            super().close()
