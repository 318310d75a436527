"""WebHDFS: where hdfs:// run roots find it, and which of its errors are retried (the live HDFS is in
test_hdfs_cluster)."""
from __future__ import annotations

import json

from sparkcnn.pipeline.runroot import hdfs


def test_webhdfs_address_from_env_then_hadoop_conf_then_default(tmp_path, monkeypatch):
    monkeypatch.delenv(hdfs.WEBHDFS_ENV, raising=False)
    monkeypatch.delenv("HADOOP_CONF_DIR", raising=False)
    assert hdfs.namenode_http_address("nn.example") == f"nn.example:{hdfs.DEFAULT_HTTP_PORT}"
    (tmp_path / "hdfs-site.xml").write_text(
        "<configuration><property><name>dfs.replication</name><value>2</value></property>"
        f"<property><name>{hdfs.HTTP_ADDRESS}</name><value> nn1:50070 </value></property></configuration>")
    monkeypatch.setenv("HADOOP_CONF_DIR", str(tmp_path))
    assert hdfs.namenode_http_address("nn.example") == "nn1:50070"
    monkeypatch.setenv(hdfs.WEBHDFS_ENV, "http://nn2:9871/")
    assert hdfs.namenode_http_address("nn.example") == "nn2:9871"


def remote(code: int, exception: str) -> tuple:
    body = json.dumps({"RemoteException": {"exception": exception, "message": "m"}}).encode()
    return code, "reason", body, "/x"


def test_webhdfs_errors_map_to_what_retrying_can_fix():
    assert isinstance(hdfs._remote_error(*remote(404, "FileNotFoundException")), FileNotFoundError)
    assert isinstance(hdfs._remote_error(*remote(403, "AccessControlException")), hdfs.WebHdfsError)
    assert isinstance(hdfs._remote_error(*remote(403, "RetriableException")), hdfs._Retryable)
    assert isinstance(hdfs._remote_error(*remote(500, "IOException")), hdfs._Retryable)
    assert isinstance(hdfs._remote_error(502, "Bad Gateway", b"<html>", "http://dn/x"), hdfs._Retryable)
