"""hdfs:// run roots: the namespace (listings, renames, deletes) through hdfs-native's NameNode RPC, file
contents over WebHDFS. A WebHDFS DataNode reads and writes blocks with Hadoop's own client, which routes
around a failed DataNode; on top of that, a request that a DataNode does not answer is retried on another.
"""
from __future__ import annotations

import getpass
import io
import json
import os
import posixpath
import socket
import time
import uuid
import xml.etree.ElementTree as ET
from http.client import HTTPException
from urllib.error import HTTPError, URLError
from urllib.parse import quote, urlencode, urlsplit
from urllib.request import Request, urlopen

from hdfs_native.fsspec import HdfsFileSystem as NativeHdfsFileSystem

from pipeline.errors import RunError

HTTP_ADDRESS = "dfs.namenode.http-address"
WEBHDFS_ENV = "SPARKCNN_WEBHDFS"
DEFAULT_HTTP_PORT = 9870
REQUEST_TIMEOUT_S = 60
RETRY_BUDGET_S = 180
NAMENODE_BUDGET_S = 10
DEFAULT_RPC_PORT = 8020


class WebHdfsError(OSError):
    """A WebHDFS request that failed for good (after retries, or with an error retrying cannot fix)."""


class NameNodeUnreachable(RunError):
    """No NameNode answers at the address a run root names."""

    resumable = True


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


def namenode_http_address(host: str) -> str:
    """host:port of the NameNode's web server: $SPARKCNN_WEBHDFS, else dfs.namenode.http-address in
    $HADOOP_CONF_DIR/hdfs-site.xml, else port 9870 (Hadoop's default) on the NameNode's host."""
    if os.environ.get(WEBHDFS_ENV):
        return os.environ[WEBHDFS_ENV].split("://")[-1].rstrip("/")
    site = os.path.join(os.environ.get("HADOOP_CONF_DIR", ""), "hdfs-site.xml")
    if os.environ.get("HADOOP_CONF_DIR") and os.path.exists(site):
        for prop in ET.parse(site).getroot().iter("property"):
            if prop.findtext("name") == HTTP_ADDRESS:
                return prop.findtext("value").strip()
    return f"{host}:{DEFAULT_HTTP_PORT}"


class WebHdfs:
    """File contents over WebHDFS, each request retried (on another DataNode where one failed)."""

    def __init__(self, http_address: str):
        self.base = f"http://{http_address}/webhdfs/v1"
        self.jmx = f"http://{http_address}/jmx?qry=Hadoop:service=NameNode,name=NameNodeInfo"
        self.user = os.environ.get("HADOOP_USER_NAME") or getpass.getuser()

    def read(self, path: str) -> bytes:
        return self._with_retries(f"read {path}", lambda exclude: self._read_once(path, exclude))

    def write(self, path: str, data: bytes) -> None:
        """Create (or overwrite) a file with this content. Each attempt writes a fresh hidden file and
        renames it into place, so a DataNode that dies mid-write leaves nothing under `path`."""
        self._with_retries(f"write {path}", lambda exclude: self._write_once(path, data, exclude))

    def _read_once(self, path: str, exclude: set[str]) -> bytes:
        location = self._locate(path, "GET", "OPEN", exclude)
        with self._datanode(location, exclude, Request(location)) as response:
            return response.read()

    def _write_once(self, path: str, data: bytes, exclude: set[str]) -> None:
        tmp = posixpath.join(posixpath.dirname(path), f".tmp-{uuid.uuid4().hex}")
        try:
            location = self._locate(tmp, "PUT", "CREATE", exclude, overwrite="false")
            put = Request(location, data=data, method="PUT", headers={"Content-Type": "application/octet-stream"})
            with self._datanode(location, exclude, put):
                pass
            self._namenode("PUT", tmp, "RENAME", destination=path, renameoptions="OVERWRITE")
        except BaseException:
            try:
                self._namenode("DELETE", tmp, "DELETE")
            except OSError:
                pass
            raise

    def _locate(self, path: str, method: str, op: str, exclude: set[str], **params) -> str:
        """The DataNode URL the NameNode redirects this operation to."""
        if exclude:
            params["excludedatanodes"] = ",".join(sorted(exclude))
        with self._namenode(method, path, op, noredirect="true", **params) as response:
            return json.load(response)["Location"]

    def _namenode(self, method: str, path: str, op: str, **params):
        query = urlencode({"op": op, "user.name": self.user, **params})
        request = Request(f"{self.base}{quote(path)}?{query}", method=method)
        try:
            return urlopen(request, timeout=REQUEST_TIMEOUT_S)
        except HTTPError as e:
            raise _remote_error(e, path) from None
        except URLError as e:
            if isinstance(e.reason, ConnectionRefusedError):
                raise _NameNodeRefused(f"the NameNode's WebHDFS at {urlsplit(self.base).netloc} refused the "
                                       f"connection") from None
            raise

    def _datanode(self, location: str, exclude: set[str], request: Request):
        try:
            return urlopen(request, timeout=REQUEST_TIMEOUT_S)
        except HTTPError as e:
            raise _remote_error(e, location) from None
        except (URLError, HTTPException, OSError) as e:
            exclude.update(self._transfer_addresses().get(urlsplit(location).netloc, ()))
            raise _Retryable(f"DataNode {urlsplit(location).netloc}: {e}") from None

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
        delay = 0.5
        while True:
            try:
                return attempt(exclude)
            except (_Retryable, URLError, HTTPException, socket.timeout, ConnectionError) as e:
                budget = NAMENODE_BUDGET_S if isinstance(e, _NameNodeRefused) else RETRY_BUDGET_S
                if time.monotonic() + delay > start + budget:
                    raise WebHdfsError(f"WebHDFS {what}: gave up after {budget} s: {e}") from None
                time.sleep(delay)
                delay = min(delay * 2, 8.0)


class _Retryable(Exception):
    """A DataNode failed this attempt; another attempt may succeed."""


class _NameNodeRefused(_Retryable):
    """The NameNode's web server refused a connection: retried for seconds, not minutes."""


def _remote_error(error: HTTPError, where: str) -> Exception:
    """The exception a WebHDFS error response stands for (its RemoteException when it has one)."""
    try:
        remote = json.loads(error.read())["RemoteException"]
        name, message = remote["exception"], remote["message"]
    except (ValueError, KeyError, TypeError):
        name, message = f"HTTP {error.code}", error.reason
    if name == "FileNotFoundException" or error.code == 404:
        return FileNotFoundError(f"{where}: {message}")
    if error.code >= 500 or name in ("RetriableException", "StandbyException", "SafeModeException"):
        return _Retryable(f"{name}: {message}")
    return WebHdfsError(f"{where}: {name}: {message}")


class HdfsFileSystem(NativeHdfsFileSystem):
    """fsspec's hdfs:// with hdfs-native for the namespace and WebHDFS for what files hold."""

    def __init__(self, host=None, port=None, *args, **storage_options):
        address = storage_options.pop(HTTP_ADDRESS, None) or namenode_http_address(host or "localhost")
        check_namenode(host or "localhost", port or DEFAULT_RPC_PORT)
        super().__init__(host, port, *args, **storage_options)
        self.http_address = address
        self.webhdfs = WebHdfs(address)

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
