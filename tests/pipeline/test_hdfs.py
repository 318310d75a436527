"""Where hdfs:// run roots find the NameNode's WebHDFS address (the live HDFS is in test_hdfs_cluster)."""
from __future__ import annotations

from pipeline import hdfs


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
