"""Runs cartflow's generated Flink SQL in a real local Flink (PyFlink) and prints the alerts.

    python flink_conformance.py SQL_FILE OUT_JSON

SQL_FILE is the output of `cartflow streaming sql RULES --source filesystem --path DIR
--sink filesystem --sink-path OUT` over a fixture in the raw zone's layout, or the deployed
Kinesis script (`cartflow streaming sql RULES`) whose connector clauses the test swapped for a
filesystem source over a file of events in arrival order. Every statement is
run as written: the SET, the CREATE TABLEs (sources with their watermarks, the stream2 sink),
and each INSERT of the statement set is planned against the sink (EXPLAIN); its SELECT is then
executed in streaming mode with parallelism 1 and its rows collected (a bounded filesystem
source ends with the final watermark, so every window fires). The rows go to OUT_JSON as a
list of objects with the sink's column names.
"""

import json
import os
import re
import sys
import time


def main():
    sql_file, out_file = sys.argv[1], sys.argv[2]
    from pyflink.table import EnvironmentSettings, TableEnvironment

    # The statements are split as the deployed runner splits them (streaming/flink-app/main.py).
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "streaming", "flink-app"))
    from main import prepare, statements

    started = time.time()
    env = TableEnvironment.create(EnvironmentSettings.in_streaming_mode())
    conf = env.get_config()
    conf.set("parallelism.default", "1")
    conf.set("table.exec.resource.default-parallelism", "1")
    plain, inserts = statements(open(sql_file).read())
    prepare(env, plain)
    sink_cols = [c.get_name() for c in env.from_path("stream2").get_resolved_schema().get_columns()]
    rows = []
    query_seconds = 0.0
    for ins in inserts:
        env.explain_sql(ins)  # the INSERT plans against the sink as written
        select = re.sub(r"^INSERT\s+INTO\s+stream2\s+", "", ins, flags=re.I)
        t = time.time()
        with env.execute_sql(select).collect() as results:
            for r in results:
                rows.append(dict(zip(sink_cols, [v for v in r])))
        query_seconds += time.time() - t
    with open(out_file, "w") as f:
        json.dump(rows, f)
    # The benchmark reads this line: the queries alone, without the JVM's start.
    print(f"flink: {len(inserts)} rule(s), {len(rows)} alert(s) in {time.time() - started:.1f}s; queries {query_seconds:.3f}s", file=sys.stderr)


if __name__ == "__main__":
    main()
