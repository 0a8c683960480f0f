"""clean_events: the Glue job that types, validates, de-duplicates and quarantines one day of
staged events. Exactly the semantics of the local job (`jobs/src/clean.rs`); a test runs both
on the same fixture and compares the outputs row for row.

Rules, in the order they are checked (the first that fails is the row's reason):

1. every field is trimmed (Unicode white space); an empty field is null;
2. `unparsable_record`: the raw line was not a JSON object (`_raw` is set);
3. `missing_event_time`, `bad_event_time` (not `YYYY-MM-DD HH:MM:SS` with a space or `T`,
   optionally followed by ` UTC` or `Z`, and a real calendar time), `implausible_event_time`
   (not within a day of the partition's date);
4. `missing_event_type`, `unknown_event_type` (not view, cart, remove_from_cart, purchase);
5. `missing_product_id`, `bad_product_id`; `missing_category_id`, `bad_category_id`;
   `missing_user_id`, `bad_user_id` (64-bit integers: an optional sign and ASCII digits);
6. `missing_price`, `bad_price` (not a finite decimal number), `negative_price`.

The real files' quirks are data, not errors: an empty `user_session` (a view by a known user,
with product and price) is a null session, an empty `category_code` or `brand` is null, a price
of 0 is a price (docs/lake.md says why each reason makes a row unusable).

Valid rows that are exact duplicates of an earlier valid row (all nine typed fields equal;
0.0 and -0.0 are different prices) are dropped and counted. rows in = clean + quarantined +
duplicates is checked before anything is written.

On AWS Glue (5.0, Spark 3.5) the arguments come from Glue: `--date`, and `--lake` (the lake
root, `s3://bucket/`) or the three locations `--staged`, `--clean`, `--quarantine`. Without
`awsglue` (plain PySpark, e.g. `spark-submit clean_events.py --date 2019-10-01 --lake /lake`)
the same arguments are read with argparse.
"""

import argparse
import json
import sys

from pyspark.sql import SparkSession
from pyspark.sql import functions as F

COLUMNS = ["event_time", "event_type", "product_id", "category_id", "category_code", "brand", "price",
           "user_id", "user_session"]
EVENT_TYPES = ["view", "cart", "remove_from_cart", "purchase"]
# Rust's `str::trim`: Unicode White_Space at both ends; (?U) makes Java's \s Unicode-aware.
TRIM = r"(?U)^\s+|\s+$"
TIME = r"^([0-9]{4})-([0-9]{2})-([0-9]{2})[ T]([0-9]{2}):([0-9]{2}):([0-9]{2})( UTC|Z)?$"
INT64 = r"^[+-]?[0-9]+$"
# What Rust's f64 parser accepts, finite values only (no hex, no `d`/`f` suffixes).
DECIMAL = r"^[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?$"


def arguments(argv):
    names = ["date", "lake", "staged", "clean", "quarantine"]
    try:
        from awsglue.utils import getResolvedOptions  # noqa: F401 (only on Glue)

        present = [n for n in names if f"--{n}" in argv]
        opts = getResolvedOptions(argv, present)
        return {n: opts.get(n) for n in names}
    except ImportError:
        p = argparse.ArgumentParser(description="clean one staged partition")
        for n in names:
            p.add_argument(f"--{n}", required=(n == "date"))
        known, _ = p.parse_known_args(argv[1:])
        return vars(known)


def field(c):
    t = F.regexp_replace(F.col(c), TRIM, "")
    return F.when(t == "", None).otherwise(t)


def main(argv):
    args = arguments(argv)
    date = args["date"]
    lake = (args.get("lake") or "").rstrip("/")
    staged = args.get("staged") or f"{lake}/staged/events"
    clean_out = args.get("clean") or f"{lake}/clean/events"
    quarantine_out = args.get("quarantine") or f"{lake}/quarantine/events"

    spark = SparkSession.builder.appName(f"clean_events {date}").getOrCreate()
    spark.conf.set("spark.sql.session.timeZone", "UTC")
    spark.conf.set("spark.sql.ansi.enabled", "false")
    spark.conf.set("spark.sql.parquet.outputTimestampType", "TIMESTAMP_MICROS")

    df = spark.read.parquet(f"{staged.rstrip('/')}/dt={date}")
    for c in COLUMNS + ["_raw", "_source"]:
        if c not in df.columns:
            df = df.withColumn(c, F.lit(None).cast("string"))
    df = df.select(*[F.col(c).cast("string") for c in COLUMNS + ["_raw", "_source"]])
    for c in COLUMNS:
        df = df.withColumn(f"f_{c}", field(c))

    # event_time: shape, calendar, epoch seconds (exact integer arithmetic, no time zone).
    df = df.withColumn("t", F.regexp_replace(F.col("f_event_time"), r" UTC$|Z$", ""))
    shaped = F.col("t").rlike(r"^[0-9]{4}-[0-9]{2}-[0-9]{2}[ T][0-9]{2}:[0-9]{2}:[0-9]{2}$")
    part = lambda i: F.regexp_extract(F.col("t"), TIME, i).cast("int")  # noqa: E731
    day_of = F.make_date(part(1), part(2), part(3))
    calendar = day_of.isNotNull() & (part(4) <= 23) & (part(5) <= 59) & (part(6) <= 59)
    epoch = (F.datediff(day_of, F.lit("1970-01-01").cast("date")).cast("long") * 86400
             + part(4) * 3600 + part(5) * 60 + part(6))
    df = df.withColumn("epoch", F.when(shaped & calendar, epoch))
    partition_day = F.datediff(F.lit(date).cast("date"), F.lit("1970-01-01").cast("date"))

    def int64(c):
        return F.when(F.col(c).rlike(INT64), F.col(c).cast("long"))

    df = (df.withColumn("product", int64("f_product_id"))
            .withColumn("category", int64("f_category_id"))
            .withColumn("user", int64("f_user_id"))
            .withColumn("p", F.when(F.col("f_price").rlike(DECIMAL), F.col("f_price").cast("double"))))
    finite = F.col("p").isNotNull() & ~F.isnan("p") & (F.abs(F.col("p")) != float("inf"))
    reason = (
        F.when(F.col("_raw").isNotNull(), "unparsable_record")
        .when(F.col("f_event_time").isNull(), "missing_event_time")
        .when(F.col("epoch").isNull(), "bad_event_time")
        .when(F.abs(F.floor(F.col("epoch") / 86400) - partition_day) > 1, "implausible_event_time")
        .when(F.col("f_event_type").isNull(), "missing_event_type")
        .when(~F.col("f_event_type").isin(EVENT_TYPES), "unknown_event_type")
        .when(F.col("f_product_id").isNull(), "missing_product_id")
        .when(F.col("product").isNull(), "bad_product_id")
        .when(F.col("f_category_id").isNull(), "missing_category_id")
        .when(F.col("category").isNull(), "bad_category_id")
        .when(F.col("f_user_id").isNull(), "missing_user_id")
        .when(F.col("user").isNull(), "bad_user_id")
        .when(F.col("f_price").isNull(), "missing_price")
        .when(~finite, "bad_price")
        .when(F.col("p") < 0, "negative_price")
    )
    df = df.withColumn("reason", reason).cache()

    quarantine = df.where(F.col("reason").isNotNull()).select(*COLUMNS, "_raw", "_source", "reason")
    valid = df.where(F.col("reason").isNull()).select(
        F.timestamp_seconds(F.col("epoch")).alias("event_time"),
        F.col("f_event_type").alias("event_type"),
        F.col("product").alias("product_id"),
        F.col("category").alias("category_id"),
        F.col("f_category_code").alias("category_code"),
        F.col("f_brand").alias("brand"),
        F.col("p").alias("price"),
        F.col("user").alias("user_id"),
        F.col("f_user_session").alias("user_session"),
        # The price compares by its text: Spark's grouping treats -0.0 and 0.0 as equal (and
        # outputs its keys normalized), the local job keeps them apart.
        F.col("p").cast("string").alias("price_key"),
    )
    key = [c for c in COLUMNS if c != "price"] + ["price_key"]
    clean = valid.dropDuplicates(key).drop("price_key").cache()

    rows_in = df.count()
    n_clean = clean.count()
    reasons = {r["reason"]: r["count"] for r in quarantine.groupBy("reason").count().collect()}
    n_quarantined = sum(reasons.values())
    duplicates = valid.count() - n_clean
    if rows_in != n_clean + n_quarantined + duplicates:
        raise SystemExit(f"dt={date}: rows in {rows_in} != clean {n_clean} + quarantined {n_quarantined} "
                         f"+ duplicates {duplicates}; nothing was written")

    quarantine.coalesce(1).write.mode("overwrite").parquet(f"{quarantine_out.rstrip('/')}/dt={date}")
    clean.coalesce(1).write.mode("overwrite").parquet(f"{clean_out.rstrip('/')}/dt={date}")
    print(json.dumps({"rows_in": rows_in, "clean": n_clean, "quarantined": n_quarantined,
                      "duplicates": duplicates, "reasons": dict(sorted(reasons.items()))}))
    spark.stop()


if __name__ == "__main__":
    main(sys.argv)
