"""The detector on Managed Service for Apache Flink: runs the Flink SQL cartflow generated
from the rules (`statements.sql`, next to this file in the application bundle).

`cartflow` builds the bundle (this file, statements.sql and, when configured, the Kinesis SQL
connector jar under lib/) and deploys it with the `streaming_stage` task on the aws backend.
Managed Flink starts it through the property group `kinesis.analytics.flink.run.options`
(`python: main.py`, `jarfile: lib/...`).
"""

import os
import re

from pyflink.table import EnvironmentSettings, TableEnvironment


def statements(sql):
    """SET / CREATE statements, and the statement set (one job with every INSERT)."""
    sql = "\n".join(line for line in sql.splitlines() if not line.strip().startswith("--"))
    head, _, block = sql.partition("EXECUTE STATEMENT SET")
    plain = [s.strip() for s in head.split(";") if s.strip()]
    body = block.strip()
    if not (body.startswith("BEGIN") and body.rstrip(";").rstrip().endswith("END")):
        raise ValueError("statements.sql: expected EXECUTE STATEMENT SET BEGIN ... END")
    body = body[len("BEGIN"):].rstrip().rstrip(";").rstrip()[: -len("END")]
    return plain, [s.strip() for s in body.split(";") if s.strip()]


def prepare(env, plain):
    """Applies the SET statements to the configuration and runs the CREATE TABLEs."""
    conf = env.get_config()
    for st in plain:
        m = re.match(r"SET\s+'([^']+)'\s*=\s*'([^']*)'", st, re.I)
        if m:
            conf.set(m.group(1), m.group(2))
        else:
            env.execute_sql(st)


def main():
    here = os.path.dirname(os.path.realpath(__file__))
    with open(os.path.join(here, "statements.sql")) as f:
        plain, inserts = statements(f.read())
    env = TableEnvironment.create(EnvironmentSettings.in_streaming_mode())
    prepare(env, plain)
    statement_set = env.create_statement_set()
    for ins in inserts:
        statement_set.add_insert_sql(ins)
    statement_set.execute()


if __name__ == "__main__":
    main()
