"""The commands that read a run's tables: sql (a query, the prompt, the server) and report."""
from __future__ import annotations

import sys
from pathlib import Path

from sparkcnn.pipeline.spark import session as spark_mod, signals
from sparkcnn.pipeline.training.run import Run, RunError


def cmd_sql(args, run: Run) -> int:
    from sparkcnn.pipeline.query import sql, sql_guard, sql_output
    from sparkcnn.pipeline.spark.session import session

    if args.views_sql:
        Path(args.views_sql).write_text(sql_output.views_sql(run, Path.cwd().as_uri()))
        print(f"wrote {args.views_sql}")
        return 0
    if args.serve:
        from sparkcnn.pipeline.query import sql_server

        if args.query:
            raise RunError("--serve takes no query: connect a JDBC client to the server and query there")
        secret = sql_server.password(args.host, args.password_file)
        keystore_secret = sql_server.keystore_password(args.tls_keystore)
        sql_server.check_port(args.host, args.port)
        spark = session(run.cfg, conf=sql_server.settings(), querying=True)
        return sql_server.serve(spark, sql.RunViews(spark, run, shared=True), args.host, args.port, secret,
                                args.tls_keystore, keystore_secret, on_ready=lambda line: print(line, flush=True))
    if args.out and Path(args.out).exists() and not args.overwrite:
        raise RunError(f"{args.out} exists; add --overwrite to replace it")
    spark = session(run.cfg, conf=sql_guard.SESSION, querying=True)
    views = sql.RunViews(spark, run)
    if args.query is None:
        return sql_prompt(spark, run, views)
    for note in views.prepare(args.query):
        print(note, file=sys.stderr)
    try:
        result = spark.sql(args.query).toArrow()
    except Exception as e:
        print(f"error: {sql.sql_error(e)}", file=sys.stderr)
        return 2
    return write_result(args, result)


def write_result(args, result) -> int:
    """A query's result on stdout or in --out."""
    from sparkcnn.pipeline.query import sql_output

    if args.format == "parquet":
        if not args.out:
            raise RunError("--format parquet needs --out FILE")
        import pyarrow.parquet as pq

        pq.write_table(result, args.out)
        print(f"wrote {args.out}: {result.num_rows} rows")
        return 0
    text = sql_output.aligned(result) + "\n" if args.format == "table" else sql_output.render(result, args.format)
    if args.out:
        Path(args.out).write_text(text)
        print(f"wrote {args.out}: {result.num_rows} rows")
    else:
        sys.stdout.write(text)
    return 0


def sql_prompt(spark, run: Run, views) -> int:
    """An interactive prompt: statements end with ';', history is kept in ~/.sparkcnn_sql_history."""
    from sparkcnn.pipeline.query import sql_output
    from sparkcnn.pipeline.query.sql import sql_error

    history = Path.home() / ".sparkcnn_sql_history"
    try:
        import readline

        if history.exists():
            readline.read_history_file(history)
    except (ImportError, OSError):
        readline = None
    print(f"run {run.storage.url}; views: {', '.join(views.names())}")
    print("end statements with ';', leave with \\q; Ctrl-C drops the statement (or stops the query) under way")
    buffer: list[str] = []
    while True:
        try:
            line = input("sparkcnn> " if not buffer else "      ...> ")
        except EOFError:
            break
        except (signals.Interrupted, KeyboardInterrupt):
            print()
            buffer = []
            signals.clear()
            continue
        if not buffer and line.strip().lower() in ("\\q", "quit", "exit", "quit;", "exit;"):
            break
        buffer.append(line)
        if line.rstrip().endswith(";"):
            query = "\n".join(buffer).rstrip().rstrip(";")
            buffer = []
            try:
                for note in views.prepare(query):
                    print(note)
                print(sql_output.aligned(spark.sql(query).toArrow()))
            except (Exception, signals.Interrupted) as e:
                if ended := spark_mod.jvm_ended(e):
                    print(f"error: {ended}; the prompt cannot go on")
                    return 1
                print("query stopped" if signals.settle() else f"error: {sql_error(e)}")
                signals.clear()
    if readline is not None:
        readline.write_history_file(history)
    return 0


def cmd_report(args, run: Run) -> int:
    from sparkcnn.pipeline.query.report import write_report

    if run.storage.exists("trials") and not run.manifest.committed("init"):
        from sparkcnn.pipeline.ml.sweep import compare

        compare(run.storage.url, Path(args.out))
        print(f"wrote {Path(args.out) / 'report.html'} comparing the trials of {run.storage.url}")
        return 0
    figures = write_report(run, Path(args.out))
    accuracy = figures["curves"]["test_accuracy"]
    print(f"wrote {Path(args.out) / 'report.html'} and its charts"
          + (f"; last test accuracy {accuracy[max(accuracy)]:.4f}" if accuracy else ""))
    return 0
