"""Reading a run: SQL views, the JDBC server, the Python API and the HTML report."""
