"""Glue job runs that run the job's script: the script (the job's Command.ScriptLocation, read
from the emulator's S3) runs under the test venv's Python and its local Spark (PyPI pyspark;
Glue 5.0 runs Spark 3.5), with the job's DefaultArguments overridden by the run's Arguments,
as `script.py --JOB_NAME name --JOB_RUN_ID id --k v ...` like Glue passes them.

S3 is a staged copy in and out: every argument whose value is an `s3://` location is downloaded
to a local folder before the run and the argument is pointed there; after a successful run,
what the script changed under those folders is written back (new and changed objects uploaded,
objects the script removed deleted), so an `overwrite` write replaces the partition's objects
as on S3. Spark's local `.crc` files are not uploaded (S3A writes none); `_SUCCESS` is.

The script runs in one local Spark driver kept warm across runs (emu_spark_worker.py: Glue
starts a fresh one per run; only the time differs), one run at a time.

A run fails with the script's error (the last `...Exception: ...` / `...Error: ...` line of its
output, as Glue's ErrorMessage shows it) when the script exits non-zero; a missing script fails
as on Glue. The run stays RUNNING while the script runs.

Not modelled: awsglue (GlueContext, DynamicFrames, bookmarks, getResolvedOptions: the script's
plain-PySpark path runs), worker types and capacity, Spark's S3A committers, job timeouts,
retries (MaxRetries), concurrent-run limits, continuous logging. A job tagged
`emulator: orchestration-only` (or with the `--emulator-fail` default argument) runs no script:
its runs only move through their states (see moto_cartflow.py).
"""

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading

import emu_common
from emu_common import EmulatedFailure

def orchestration_only(job, tags):
    return tags.get("emulator") == "orchestration-only" or "--emulator-fail" in (job.default_arguments or {})


def _local(work, uri):
    bucket, key = emu_common.split_s3(uri)
    return os.path.join(work, "s3", bucket, key.rstrip("/")), bucket, emu_common.folder(key)


def run(account, job, run_id, run_arguments):
    """The run's work: stage in, run the script, stage out; returns the (empty) commit."""
    args = dict(job.default_arguments or {})
    args.update(run_arguments or {})
    script = (job.command or {}).get("ScriptLocation", "")
    work = tempfile.mkdtemp(prefix="emu-glue-")
    staged = []  # (local dir, bucket, prefix, {key: bytes before})
    try:
        try:
            bucket, key = emu_common.split_s3(script)
            code = emu_common.read(account, bucket, key)
        except Exception:
            raise EmulatedFailure(
                f"Error downloading script: fatal error: An error occurred (404) when calling the HeadObject "
                f"operation: Key \"{script}\" does not exist")
        script_path = os.path.join(work, os.path.basename(key) or "script.py")
        with open(script_path, "wb") as f:
            f.write(code)
        argv = [sys.executable, script_path, "--JOB_NAME", job.name, "--JOB_RUN_ID", run_id]
        for k, v in sorted(args.items()):
            if isinstance(v, str) and v.startswith("s3://"):
                local, b, prefix = _local(work, v)
                before = {}
                os.makedirs(local, exist_ok=True)
                for obj, _ in emu_common.objects(account, b, prefix, visible_only=False):
                    data = emu_common.read(account, b, obj)
                    path = os.path.join(local, obj[len(prefix):])
                    os.makedirs(os.path.dirname(path), exist_ok=True)
                    with open(path, "wb") as f:
                        f.write(data)
                    before[obj] = data
                staged.append((local, b, prefix, before))
                v = local + ("/" if v.endswith("/") else "")
            argv += [k, v]
        code, stdout, stderr = _run_script(script_path, argv[1:], work)
        if code != 0:
            raise EmulatedFailure(_error_of(stdout, stderr, code))
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise

    def commit():
        try:
            for local, b, prefix, before in staged:
                after = set()
                for root, _, files in os.walk(local):
                    for name in files:
                        if name.startswith(".") and name.endswith(".crc"):
                            continue
                        path = os.path.join(root, name)
                        obj = prefix + os.path.relpath(path, local).replace(os.sep, "/")
                        after.add(obj)
                        with open(path, "rb") as f:
                            data = f.read()
                        if before.get(obj) != data:
                            emu_common.write(account, b, obj, data)
                for obj in before:
                    if obj not in after:
                        emu_common.delete(account, b, obj)
        finally:
            shutil.rmtree(work, ignore_errors=True)

    return commit


_worker = None
_worker_lock = threading.Lock()
WORKER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "emu_spark_worker.py")


def _run_script(script, argv, cwd):
    """Runs the script in the warm Spark driver (emu_spark_worker.py), one run at a time;
    returns (exit code, standard output, standard error)."""
    global _worker
    with _worker_lock:
        if _worker is None or _worker.poll() is not None:
            env = dict(os.environ, PYSPARK_PYTHON=sys.executable, PYSPARK_DRIVER_PYTHON=sys.executable,
                       SPARK_LOCAL_IP="127.0.0.1")
            env.pop("AWS_ENDPOINT_URL", None)  # the script sees local files only
            _worker = subprocess.Popen([sys.executable, WORKER], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                       text=True, env=env)
            if not _worker.stdout.readline():
                raise EmulatedFailure("the emulator's Spark driver did not start")
        out, err = os.path.join(cwd, "_stdout.txt"), os.path.join(cwd, "_stderr.txt")
        _worker.stdin.write(json.dumps({"script": script, "argv": argv, "cwd": cwd, "out": out, "err": err}) + "\n")
        _worker.stdin.flush()
        answer = _worker.stdout.readline()
        code = json.loads(answer)["code"] if answer else -1

    def text(path):
        try:
            with open(path) as f:
                return f.read()
        except OSError:
            return ""
    return code, text(out), text(err) or ("" if answer else "the emulator's Spark driver died")


def _error_of(stdout, stderr, code):
    """What Glue's ErrorMessage would say: the script's last exception line, else the last line
    it wrote to standard error."""
    lines = [line.strip() for line in (stdout + "\n" + stderr).splitlines() if line.strip()]
    for line in reversed(lines):
        if re.match(r"^[\w.]+(Exception|Error)\b.*:", line):
            return line
    err = [line.strip() for line in stderr.splitlines() if line.strip()]
    return f"the script exited with code {code}: {(err or lines or [''])[-1]}"
