"""What the emulator's working services share: moto's S3 as files, and background work.

The emulated services (emu_athena, emu_crawler, emu_glue_job, emu_databrew) read and write the
objects of moto's own S3 backend, so what cartflow wrote through the S3 API is what they read,
and what they write is what cartflow (and a test's boto3 check) reads back.
"""

import threading
import traceback

from moto.s3.models import FakeKey, s3_backends

# Athena, Glue and Hive skip files and folders whose name starts with `_` or `.` (markers such
# as `_SUCCESS`, Spark's `.crc` files, temporary folders).
HIDDEN = ("_", ".")


def split_s3(uri):
    """`s3://bucket/key` -> (bucket, key)."""
    if not uri.startswith("s3://"):
        raise ValueError(f"not an s3:// location: {uri}")
    bucket, _, key = uri[len("s3://"):].partition("/")
    return bucket, key


def folder(key):
    """A key prefix that names a folder: `a/b` -> `a/b/`, `` -> ``."""
    return key if not key or key.endswith("/") else key + "/"


def s3(account):
    return s3_backends[account]["aws"]


def objects(account, bucket, prefix, visible_only=True):
    """[(key, size)] under `prefix` (a folder), sorted by key. With `visible_only`, objects
    with a hidden path segment below the prefix are left out, as Athena and Glue do."""
    try:
        b = s3(account).get_bucket(bucket)
    except Exception as e:
        raise FileNotFoundError(f"s3://{bucket}/: {e}") from e
    out = []
    for name in list(b.keys.keys()):
        if not name.startswith(prefix) or name.endswith("/"):
            continue
        k = b.keys.get(name)
        if not isinstance(k, FakeKey):
            continue  # a delete marker
        rel = name[len(prefix):]
        if visible_only and any(seg.startswith(HIDDEN) for seg in rel.split("/")):
            continue
        out.append((name, k.size))
    out.sort()
    return out


def read(account, bucket, key):
    return s3(account).get_object(bucket, key).value


def write(account, bucket, key, data):
    s3(account).put_object(bucket, key, data)


def delete(account, bucket, key):
    s3(account).delete_object(bucket, key)


class Work:
    """A service's real work, run on a thread when the job (query, crawl, run) starts. Its
    outcome is made visible once, by `commit()`, when the job's state machine reaches its end:
    until the work is done the job reports RUNNING; then the job succeeds (the work's `apply`
    callable runs first: tables and objects appear at the end, as on AWS) or fails with the
    work's error message."""

    def __init__(self, what, fn):
        self.what = what
        self.error = None
        self._apply = None
        self._done = threading.Event()
        self._lock = threading.Lock()
        self._committed = False
        self.cancelled = False
        threading.Thread(target=self._run, args=(fn,), daemon=True, name=what).start()

    def _run(self, fn):
        try:
            self._apply = fn()
        except EmulatedFailure as e:
            self.error = str(e)
        except Exception as e:  # the emulator's own bug: say where
            self.error = f"emulator error in {self.what}: {type(e).__name__}: {e}"
            traceback.print_exc()
        finally:
            self._done.set()

    def done(self):
        return self._done.is_set()

    def wait(self, timeout=None):
        return self._done.wait(timeout)

    def commit(self):
        """Applies the outcome once; returns the error message, or None on success."""
        with self._lock:
            if not self._committed and self.error is None and not self.cancelled and self._apply is not None:
                try:
                    self._apply()
                except EmulatedFailure as e:
                    self.error = str(e)
                except Exception as e:
                    self.error = f"emulator error in {self.what}: {type(e).__name__}: {e}"
                    traceback.print_exc()
            self._committed = True
            return self.error


def state(work, base, succeeded="SUCCEEDED", failed="FAILED", running="RUNNING"):
    """The state a job reports: its state machine's (`base`), held at RUNNING while the work
    runs, and FAILED when the work failed."""
    if work is None or base != succeeded:
        return base
    if not work.done():
        return running
    return failed if work.commit() is not None else succeeded


class EmulatedFailure(Exception):
    """A failure the emulated service reports as the job's error (its message is the text
    AWS would give)."""
