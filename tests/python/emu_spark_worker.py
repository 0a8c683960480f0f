"""The emulated Glue's Spark driver, kept warm: one local Spark (PyPI pyspark) started once and
reused by every job run, so a run does not pay the JVM's start-up (Glue starts a fresh Spark per
run; the difference is only the time it takes).

Started by emu_glue_job.py as `python emu_spark_worker.py`; reads one JSON request per line on
standard input, `{"script": PATH, "argv": [...], "cwd": DIR, "out": FILE, "err": FILE}`, runs
the script as `__main__` with `sys.argv = argv` (its output to `out` and `err`), and answers
`{"code": N}` on standard output. The first script's `SparkSession.builder...getOrCreate()`
starts Spark (local[2]); later scripts get the same session; `spark.stop()` is a no-op; the
cache is cleared after each run. A script that does not use Spark starts none. It exits
when its standard input closes (the emulator is gone), and its JVM with it.
"""

import json
import os
import runpy
import sys
import traceback


SPARK_ARGS = ("--master local[2] --driver-memory 1g --conf spark.ui.enabled=false "
              "--conf spark.sql.shuffle.partitions=4 --conf spark.default.parallelism=2 pyspark-shell")


def main():
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    # The first script that asks for a session starts Spark with these settings; a script that
    # does not use Spark starts none.
    os.environ["PYSPARK_SUBMIT_ARGS"] = SPARK_ARGS
    from pyspark.sql import SparkSession

    SparkSession.stop = lambda self: None
    answer = sys.stdout
    sys.stdout = sys.stderr  # nothing but answers on the answer channel
    print(json.dumps({"ready": True}), file=answer, flush=True)
    for line in sys.stdin:
        req = json.loads(line)
        code = 0
        with open(req["out"], "w") as out, open(req["err"], "w") as err:
            saved = sys.stdout, sys.stderr, sys.argv, os.getcwd()
            sys.stdout, sys.stderr, sys.argv = out, err, req["argv"]
            os.chdir(req["cwd"])
            try:
                runpy.run_path(req["script"], run_name="__main__")
            except SystemExit as e:
                if e.code not in (None, 0):
                    code = e.code if isinstance(e.code, int) else 1
                    if not isinstance(e.code, int):
                        print(e.code, file=err)
            except BaseException:
                code = 1
                traceback.print_exc(file=err)
            finally:
                sys.stdout, sys.stderr, sys.argv = saved[0], saved[1], saved[2]
                os.chdir(saved[3])
                active = SparkSession.getActiveSession()
                if active is not None:
                    active.catalog.clearCache()
        print(json.dumps({"code": code}), file=answer, flush=True)


if __name__ == "__main__":
    main()
