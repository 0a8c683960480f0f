"""A DuckDB connection that sees the lake the way the insight SQL expects: the enriched events as
`ecommerce.enriched_events` (Hive-partitioned by dt), plus the Trino functions DuckDB spells
differently. Shared by the insight conformance test and the insight benchmark."""

import duckdb


def connect(lake):
    con = duckdb.connect()
    con.execute("CREATE SCHEMA ecommerce")
    con.execute(f"""CREATE VIEW ecommerce.enriched_events AS
      SELECT * FROM read_parquet('{lake}/enriched/events/*/*.parquet', hive_partitioning = true,
                                 hive_types = {{'dt': 'VARCHAR'}})""")
    con.execute("CREATE MACRO day_of_week(t) AS isodow(t)")
    return con
