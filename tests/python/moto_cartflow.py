"""moto's server with the behaviours cartflow's AWS tests need and moto 5.2.5 does not model.

Started by the test harness (`Moto::start` in tests/src/lib.rs) instead of `moto_server`:

    python moto_cartflow.py -H 127.0.0.1 -p PORT

The emulated services do their work with engines that are not cartflow's (see each module's
docstring for what is modelled and what is not; tests/python/README.md has the summary):

- Athena executes (emu_athena.py): each statement parsed as Trino SQL by sqlglot, the SELECT
  transpiled to DuckDB and run over the Parquet/JSON objects the Glue tables point at; a CTAS
  writes real Parquet and registers the table and its partitions; Athena's errors and rules
  (HIVE_PATH_ALREADY_EXISTS, partition columns last, 100 partitions, Trino's function list).
  ClientRequestToken is honoured (the same token returns the same query execution).
  StateChangeReason and AthenaError are reported for failed queries, DataScannedInBytes for
  finished ones.
- Glue crawlers crawl (emu_crawler.py): the S3 targets are listed, Parquet schemas read with
  pyarrow and JSON records sampled, and the table and its partitions created or updated with
  Glue type names. The last crawl's status uses the API's names (SUCCEEDED/FAILED/CANCELLED;
  moto says COMPLETED). A crawler whose Description starts with `emulator-fail:` ends its
  crawls in FAILED with the rest of the description as ErrorMessage (and crawls nothing).
- Glue job runs run the script (emu_glue_job.py) under local Spark with a staged copy of the
  S3 locations in the arguments. A job tagged `emulator: orchestration-only` runs no script
  (its runs only move through their states); a job created with the default argument
  `--emulator-fail` ends its runs in FAILED with that argument's value as ErrorMessage.
  BatchStopJobRun (not implemented by moto): the runs end in STOPPED.
- DataBrew job runs (moto has jobs but no runs): StartJobRun, DescribeJobRun, ListJobRuns and
  StopJobRun, paced through the state manager (model `databrew::job_run`, STARTING -> RUNNING
  -> SUCCEEDED), one run at a time per job; the run interprets the recipe over the dataset and
  writes the outputs (emu_databrew.py). A job tagged `emulator: orchestration-only` does no
  work; one tagged `emulator-fail` ends its runs in FAILED with the tag's value as ErrorMessage.
- Every working job (query, crawl, run) stays RUNNING until its work is done, and its output
  (objects, tables) appears when it ends (emu_common.Work).
- Managed Service for Apache Flink (kinesisanalyticsv2): timestamps are epoch seconds (moto
  answers ISO strings, which the Rust SDK rejects), a created application is READY (moto
  leaves it STARTING), DescribeApplication of an unknown one is ResourceNotFoundException (moto
  answers 500), and StartApplication (READY -> STARTING -> RUNNING, paced by the state manager
  model `kinesisanalyticsv2::application`), StopApplication and UpdateApplication (code
  location and property groups, with CurrentApplicationVersionId checked) are implemented.
  The Flink SQL itself does not run here (tests/python/flink_conformance.py runs it).
- CloudFormation's AWS::S3::Bucket applies PublicAccessBlockConfiguration,
  LifecycleConfiguration and VersioningConfiguration (moto applies only encryption and tags),
  and AWS::Kinesis::Stream applies StreamModeDetails and StreamEncryption, so the deployed
  infra/ template can be checked setting by setting.
- Throttling on demand: `POST /_cartflow/throttle` with `{"target": "AWSGlue.StartJobRun",
  "count": 2}` (an X-Amz-Target) or `{"path": "regex", "method": "POST", "count": 2}` makes the
  next `count` matching requests answer 400 ThrottlingException. `GET /_cartflow/calls` returns
  how many requests each target / method+path received (throttled ones included).
"""

import json
import re
import sys
import threading
import uuid
from collections import Counter
from datetime import datetime

from moto.moto_api._internal.managed_state_model import ManagedState
from werkzeug.serving import run_simple

import emu_common
import emu_crawler
import emu_glue_job
import emu_databrew

# --------------------------------------------------------------------------------------------
# Glue
# --------------------------------------------------------------------------------------------
import moto.glue.models as glue_models
import moto.glue.responses as glue_responses

_base_status = ManagedState.status


def _job_run_status(self):
    if getattr(self, "_cf_stopped", False):
        return "STOPPED"
    s = _base_status.fget(self)
    if s == "SUCCEEDED" and (self.arguments or {}).get("--emulator-fail"):
        return "FAILED"
    return emu_common.state(getattr(self, "_cf_work", None), s)


glue_models.FakeJobRun.status = property(_job_run_status, _base_status.fset)
_job_run_as_dict = glue_models.FakeJobRun.as_dict


def _job_run_dict(self):
    d = _job_run_as_dict(self)
    if d.get("JobRunState") == "FAILED":
        work = getattr(self, "_cf_work", None)
        d["ErrorMessage"] = work.error if work is not None else self.arguments["--emulator-fail"]
    return d


glue_models.FakeJobRun.as_dict = _job_run_dict
_start_job_run = glue_models.GlueBackend.start_job_run


def _start_job_run_running_the_script(self, name, arguments, *rest, **kw):
    run_id = _start_job_run(self, name, arguments, *rest, **kw)
    job = self.get_job(name)
    run = job.get_job_run(run_id)
    if not emu_glue_job.orchestration_only(job, self.get_tags(job.arn)):
        account = self.account_id
        run._cf_work = emu_common.Work(f"glue job run {run_id}",
                                       lambda: emu_glue_job.run(account, job, run_id, run.arguments))
    return run_id


glue_models.GlueBackend.start_job_run = _start_job_run_running_the_script


def _batch_stop_job_run(self):
    name = self._get_param("JobName")
    ids = self._get_param("JobRunIds") or []
    job = self.glue_backend.get_job(name)
    ok, errors = [], []
    for run_id in ids:
        run = next((r for r in job.job_runs if r.job_run_id == run_id), None)
        if run is None:
            errors.append({"JobName": name, "JobRunId": run_id,
                           "ErrorDetail": {"ErrorCode": "EntityNotFoundException",
                                           "ErrorMessage": f"Job run {run_id} not found"}})
        elif run.status in ("STARTING", "RUNNING", "STOPPING"):
            run._cf_stopped = True
            ok.append({"JobName": name, "JobRunId": run_id})
        else:
            errors.append({"JobName": name, "JobRunId": run_id,
                           "ErrorDetail": {"ErrorCode": "InvalidInputException",
                                           "ErrorMessage": f"Job run {run_id} is {run.status}"}})
    return json.dumps({"SuccessfulSubmissions": ok, "Errors": errors})


glue_responses.GlueResponse.batch_stop_job_run = _batch_stop_job_run

_crawler_as_dict = glue_models.FakeCrawler.as_dict


def _crawler_dict(self):
    d = _crawler_as_dict(self)
    last = d.get("LastCrawl")
    if last:
        desc = self.description or ""
        work = getattr(self.crawls[-1], "_cf_work", None)
        if last["Status"] == "COMPLETED" and desc.startswith("emulator-fail:"):
            last["Status"] = "FAILED"
            last["ErrorMessage"] = desc[len("emulator-fail:"):].strip()
        elif last["Status"] == "FAILED" and work is not None:
            last["ErrorMessage"] = work.error
        else:
            last["Status"] = {"COMPLETED": "SUCCEEDED", "STOPPED": "CANCELLED"}.get(last["Status"], last["Status"])
    return d


glue_models.FakeCrawler.as_dict = _crawler_dict
_start_crawler = glue_models.FakeCrawler.start_crawler


def _start_crawler_crawling(self):
    _start_crawler(self)
    if not (self.description or "").startswith("emulator-fail:"):
        account, region = self.backend.account_id, self.backend.region_name
        self.crawls[-1]._cf_work = emu_common.Work(f"crawl of {self.name}",
                                                   lambda: emu_crawler.crawl(account, region, self))


glue_models.FakeCrawler.start_crawler = _start_crawler_crawling


def _crawl_status(self):
    return emu_common.state(getattr(self, "_cf_work", None), _base_status.fget(self), succeeded="COMPLETED")


glue_models.FakeCrawl.status = property(_crawl_status, _base_status.fset)

# --------------------------------------------------------------------------------------------
# Athena
# --------------------------------------------------------------------------------------------
import moto.athena.models as athena_models
import moto.athena.responses as athena_responses

import emu_athena

_tokens = {}
_tokens_lock = threading.Lock()
_start_query = athena_models.AthenaBackend.start_query_execution


def _start_query_execution(self, query, context, config, workgroup, execution_parameters, token=None):
    with _tokens_lock:
        if token and (self.account_id, token) in _tokens:
            return _tokens[(self.account_id, token)]
        exec_id = _start_query(self, query, context, config, workgroup, execution_parameters)
        execution = self.executions[exec_id]
        execution._cf_work = emu_athena.start(self.account_id, self.region_name, query, context, config)
        if token:
            _tokens[(self.account_id, token)] = exec_id
        return exec_id


athena_models.AthenaBackend.start_query_execution = _start_query_execution


def _execution_status(self):
    if getattr(self, "_cf_cancelled", False):
        return "CANCELLED"
    return emu_common.state(getattr(self, "_cf_work", None), _base_status.fget(self))


athena_models.Execution.status = property(_execution_status, _base_status.fset)
_stop_query = athena_models.AthenaBackend.stop_query_execution


def _stop_query_execution(self, exec_id):
    execution = self.get_query_execution(exec_id)
    if execution.status in ("QUEUED", "RUNNING"):
        execution._cf_cancelled = True
        work = getattr(execution, "_cf_work", None)
        if work is not None:
            work.cancelled = True


athena_models.AthenaBackend.stop_query_execution = _stop_query_execution


def _start_query_response(self):
    query = self._get_param("QueryString")
    context = self._get_param("QueryExecutionContext")
    config = self._get_param("ResultConfiguration")
    workgroup = self._get_param("WorkGroup")
    params = self._get_param("ExecutionParameters")
    token = self._get_param("ClientRequestToken")
    if workgroup and not self.athena_backend.get_work_group(workgroup):
        return self.error("WorkGroup does not exist", 400)
    exec_id = self.athena_backend.start_query_execution(query, context, config, workgroup, params, token)
    return json.dumps({"QueryExecutionId": exec_id})


athena_responses.AthenaResponse.start_query_execution = _start_query_response
_get_query_response = athena_responses.AthenaResponse.get_query_execution


def _get_query_execution_response(self):
    body = json.loads(_get_query_response(self))
    execution = self.athena_backend.get_query_execution(self._get_param("QueryExecutionId"))
    status = body["QueryExecution"]["Status"]
    work = getattr(execution, "_cf_work", None)
    if status["State"] == "FAILED" and work is not None and work.error:
        status["StateChangeReason"] = work.error
        # Category 1 is a system error (the emulator's own), 2 a user error (the query's).
        category = 1 if work.error.startswith("emulator error") else 2
        status["AthenaError"] = {"ErrorCategory": category, "ErrorMessage": work.error}
    if status["State"] == "CANCELLED":
        status["StateChangeReason"] = "Query cancelled by user"
    if work is not None and status["State"] in ("SUCCEEDED", "FAILED"):
        body["QueryExecution"].setdefault("Statistics", {})["DataScannedInBytes"] = work.query.scanned
    return json.dumps(body)


athena_responses.AthenaResponse.get_query_execution = _get_query_execution_response
_get_query_results = athena_models.AthenaBackend.get_query_results


def _get_query_results_with_rows(self, exec_id):
    """A plain query's result set as the emulator computed it, unless one was seeded."""
    results = _get_query_results(self, exec_id)
    work = getattr(self.executions.get(exec_id), "_cf_work", None)
    computed = getattr(getattr(work, "query", None), "result", None)
    if results.rows or results.column_info or computed is None:
        return results
    columns, rows = computed

    def datum(v):
        return {} if v is None else {"VarCharValue": v}

    info = [{"Name": c, "Label": c, "Type": "varchar"} for c in columns]
    data = [{"Data": [datum(c) for c in columns]}] + [{"Data": [datum(v) for v in r]} for r in rows]
    return athena_models.QueryResults(rows=data, column_info=info)


athena_models.AthenaBackend.get_query_results = _get_query_results_with_rows

# --------------------------------------------------------------------------------------------
# DataBrew job runs
# --------------------------------------------------------------------------------------------
import moto.databrew.responses as brew_responses
import moto.databrew.urls as brew_urls


class FakeBrewRun(ManagedState):
    def __init__(self, job):
        ManagedState.__init__(self, model_name="databrew::job_run",
                              transitions=[("STARTING", "RUNNING"), ("RUNNING", "SUCCEEDED")])
        self.job = job
        self.run_id = "db_" + uuid.uuid4().hex
        self.started = datetime.now().timestamp()
        self.stopped = False

    @property
    def state(self):
        if self.stopped:
            return "STOPPED"
        s = self.status
        if s == "SUCCEEDED" and (self.job.tags or {}).get("emulator-fail"):
            return "FAILED"
        return emu_common.state(getattr(self, "work", None), s)

    def as_dict(self):
        d = {"RunId": self.run_id, "JobName": self.job.name, "State": self.state, "StartedOn": self.started,
             "Attempt": 0, "DatasetName": getattr(self.job, "dataset_name", None)}
        if d["State"] == "FAILED":
            work = getattr(self, "work", None)
            d["ErrorMessage"] = work.error if work is not None else self.job.tags["emulator-fail"]
        if d["State"] in ("SUCCEEDED", "FAILED", "STOPPED"):
            d["CompletedOn"] = datetime.now().timestamp()
        return {k: v for k, v in d.items() if v is not None}


_brew_runs = {}


def _runs_of(response, name):
    job = response.databrew_backend.describe_job(name)
    return job, _brew_runs.setdefault((response.current_account, name), [])


def _path_name(response):
    return response.path.split("/jobs/")[1].split("/")[0]


def _brew_error(kind, msg, status):
    return status, {"x-amzn-ErrorType": kind}, json.dumps({"message": msg, "Message": msg})


def _start_brew_run(self):
    job, runs = _runs_of(self, _path_name(self))
    # One run at a time per job, as DataBrew allows.
    running = [r for r in runs if r.state in ("STARTING", "RUNNING")]
    if running:
        return _brew_error("ConflictException", f"Job {job.name} already has a running job run", 409)
    run = FakeBrewRun(job)
    tags = job.tags or {}
    if not tags.get("emulator-fail") and tags.get("emulator") != "orchestration-only":
        backend, account, region = self.databrew_backend, self.current_account, self.region
        ref = getattr(job, "recipe_reference", None) or {}

        def work():
            name, version = ref.get("Name"), ref.get("RecipeVersion")
            recipe = None
            for v in ([version] if version else ["LATEST_PUBLISHED", "LATEST_WORKING"]):
                try:
                    recipe = backend.describe_recipe(name, v)
                    break
                except Exception:
                    continue
            if recipe is None:
                raise emu_common.EmulatedFailure(f"Recipe {name} not found")
            dataset = backend.describe_dataset(job.dataset_name)
            return emu_databrew.run(account, region, job, recipe.steps or [], dataset)

        run.work = emu_common.Work(f"databrew run {run.run_id}", work)
    runs.append(run)
    return 200, {}, json.dumps({"RunId": run.run_id})


def _describe_brew_run(self):
    name = _path_name(self)
    run_id = self.path.rstrip("/").split("/jobRun/")[1].split("/")[0]
    _, runs = _runs_of(self, name)
    for r in runs:
        if r.run_id == run_id:
            return 200, {}, json.dumps(r.as_dict())
    return _brew_error("ResourceNotFoundException", f"Job run {run_id} of job {name} not found", 404)


def _list_brew_runs(self):
    _, runs = _runs_of(self, _path_name(self))
    return 200, {}, json.dumps({"JobRuns": [r.as_dict() for r in reversed(runs)]})


def _stop_brew_run(self):
    name = _path_name(self)
    run_id = self.path.split("/jobRun/")[1].split("/")[0]
    _, runs = _runs_of(self, name)
    for r in runs:
        if r.run_id == run_id:
            if r.state in ("STARTING", "RUNNING"):
                r.stopped = True
            return 200, {}, json.dumps({"RunId": run_id})
    return _brew_error("ResourceNotFoundException", f"Job run {run_id} of job {name} not found", 404)


def _brew_dispatch(request, full_url, headers):
    response = brew_responses.DataBrewResponse()
    response.setup_class(request, full_url, headers)
    path, method = response.path.rstrip("/"), request.method
    if method == "POST" and path.endswith("/startJobRun"):
        return _start_brew_run(response)
    if method == "POST" and path.endswith("/stopJobRun"):
        return _stop_brew_run(response)
    if method == "GET" and path.endswith("/jobRuns"):
        return _list_brew_runs(response)
    return _describe_brew_run(response)


brew_urls.url_paths.update({
    "{0}/jobs/(?P<job_name>[^/]+)/startJobRun$": _brew_dispatch,
    "{0}/jobs/(?P<job_name>[^/]+)/jobRuns$": _brew_dispatch,
    "{0}/jobs/(?P<job_name>[^/]+)/jobRun/(?P<run_id>[^/]+)$": _brew_dispatch,
    "{0}/jobs/(?P<job_name>[^/]+)/jobRun/(?P<run_id>[^/]+)/stopJobRun$": _brew_dispatch,
})

# --------------------------------------------------------------------------------------------
# Managed Service for Apache Flink
# --------------------------------------------------------------------------------------------
import moto.kinesisanalyticsv2.models as kda_models
import moto.kinesisanalyticsv2.responses as kda_responses


class FlinkRun(ManagedState):
    def __init__(self, first):
        ManagedState.__init__(self, model_name="kinesisanalyticsv2::application",
                              transitions=[(first, "RUNNING")])


def _app_status(self):
    run = getattr(self, "_cf_run", None)
    if run is None:
        return "READY"
    return run.status


def _set_app_status(self, value):
    pass  # derived from the start/stop/update calls below


kda_models.Application.application_status = property(_app_status, _set_app_status)


def _epoch_times(detail):
    # moto answers ISO strings; the API (and the Rust SDK) use epoch seconds.
    for key in ("CreateTimestamp", "LastUpdateTimestamp", "ApplicationVersionCreateTimestamp"):
        v = detail.get(key)
        if isinstance(v, str):
            try:
                detail[key] = datetime.fromisoformat(v).timestamp()
            except ValueError:
                detail.pop(key)
    return detail


for _name in ("create_application", "describe_application"):
    def _wrap(orig):
        return lambda self, *a, **k: _epoch_times(orig(self, *a, **k))
    setattr(kda_models.KinesisAnalyticsV2Backend, _name, _wrap(getattr(kda_models.KinesisAnalyticsV2Backend, _name)))


def _kda_error(kind, msg, status=400):
    # moto's call_action takes the status from the headers' "status".
    return status, {"status": status, "x-amzn-ErrorType": kind}, json.dumps({"__type": kind, "message": msg, "Message": msg})


def _kda_app(response):
    name = response._get_param("ApplicationName")
    app = response.kinesisanalyticsv2_backend.applications.get(name)
    return name, app


_kda_describe = kda_responses.KinesisAnalyticsV2Response.describe_application


def _describe_application(self):
    name, app = _kda_app(self)
    if app is None:
        return _kda_error("ResourceNotFoundException", f"Application {name} not found")
    return _kda_describe(self)


def _start_application(self):
    name, app = _kda_app(self)
    if app is None:
        return _kda_error("ResourceNotFoundException", f"Application {name} not found")
    if app.application_status != "READY":
        return _kda_error("ResourceInUseException", f"Application {name} is {app.application_status}")
    app._cf_run = FlinkRun("STARTING")
    return json.dumps({"OperationId": uuid.uuid4().hex})


def _stop_application(self):
    name, app = _kda_app(self)
    if app is None:
        return _kda_error("ResourceNotFoundException", f"Application {name} not found")
    app._cf_run = None
    return json.dumps({"OperationId": uuid.uuid4().hex})


def _update_application(self):
    name, app = _kda_app(self)
    if app is None:
        return _kda_error("ResourceNotFoundException", f"Application {name} not found")
    version = self._get_param("CurrentApplicationVersionId")
    if version is not None and int(version) != app.application_version_id:
        return _kda_error("ConcurrentModificationException",
                          f"version {version} is not the current version {app.application_version_id}")
    update = self._get_param("ApplicationConfigurationUpdate") or {}
    desc = app.app_config_description or {}
    code = (update.get("ApplicationCodeConfigurationUpdate") or {}).get("CodeContentUpdate") or {}
    loc = code.get("S3ContentLocationUpdate")
    if loc:
        d = desc.setdefault("ApplicationCodeConfigurationDescription", {}).setdefault("CodeContentDescription", {})
        d = d.setdefault("S3ApplicationCodeLocationDescription", {})
        if "BucketARNUpdate" in loc:
            d["BucketARN"] = loc["BucketARNUpdate"]
        if "FileKeyUpdate" in loc:
            d["FileKey"] = loc["FileKeyUpdate"]
    env = update.get("EnvironmentPropertyUpdates")
    if env:
        desc["EnvironmentPropertyDescriptions"] = {"PropertyGroupDescriptions": env.get("PropertyGroups", [])}
    app.app_config_description = desc
    app.application_version_id += 1
    if app.application_status == "RUNNING":
        app._cf_run = FlinkRun("UPDATING")
    return json.dumps({"ApplicationDetail": self.kinesisanalyticsv2_backend.describe_application(name)})


kda_responses.KinesisAnalyticsV2Response.describe_application = _describe_application
kda_responses.KinesisAnalyticsV2Response.start_application = _start_application
kda_responses.KinesisAnalyticsV2Response.stop_application = _stop_application
kda_responses.KinesisAnalyticsV2Response.update_application = _update_application

# --------------------------------------------------------------------------------------------
# CloudFormation: the S3 bucket settings moto's template support leaves out
# --------------------------------------------------------------------------------------------
import moto.s3.models as s3_models
from moto.s3.models import s3_backends

_bucket_from_cfn = s3_models.FakeBucket.create_from_cloudformation_json.__func__


def _cfn_rule(r):
    rule = {"ID": r.get("Id"), "Status": r.get("Status", "Enabled"), "Filter": {"Prefix": r.get("Prefix", "")}}
    if "ExpirationInDays" in r:
        rule["Expiration"] = {"Days": str(r["ExpirationInDays"])}
    if r.get("Transitions"):
        rule["Transition"] = [{"Days": str(t["TransitionInDays"]), "StorageClass": t["StorageClass"]}
                              for t in r["Transitions"]]
    if r.get("NoncurrentVersionExpiration"):
        rule["NoncurrentVersionExpiration"] = {"NoncurrentDays": str(r["NoncurrentVersionExpiration"]["NoncurrentDays"])}
    if r.get("AbortIncompleteMultipartUpload"):
        rule["AbortIncompleteMultipartUpload"] = {
            "DaysAfterInitiation": str(r["AbortIncompleteMultipartUpload"]["DaysAfterInitiation"])}
    return rule


def _bucket_with_settings(cls, resource_name, cloudformation_json, account_id, region_name, **kwargs):
    bucket = _bucket_from_cfn(cls, resource_name, cloudformation_json, account_id, region_name, **kwargs)
    props = cloudformation_json.get("Properties", {})
    backend = s3_backends[account_id][s3_models.get_partition(region_name)]
    if props.get("PublicAccessBlockConfiguration"):
        backend.put_public_access_block(bucket.name, props["PublicAccessBlockConfiguration"])
    if props.get("LifecycleConfiguration"):
        backend.put_bucket_lifecycle(bucket.name, [_cfn_rule(r) for r in props["LifecycleConfiguration"]["Rules"]])
    if props.get("VersioningConfiguration"):
        backend.put_bucket_versioning(bucket.name, props["VersioningConfiguration"]["Status"])
    return bucket


s3_models.FakeBucket.create_from_cloudformation_json = classmethod(_bucket_with_settings)

import moto.kinesis.models as kinesis_models

_stream_from_cfn = kinesis_models.Stream.create_from_cloudformation_json.__func__


def _stream_with_settings(cls, resource_name, cloudformation_json, account_id, region_name, **kwargs):
    stream = _stream_from_cfn(cls, resource_name, cloudformation_json, account_id, region_name, **kwargs)
    props = cloudformation_json.get("Properties", {})
    if props.get("StreamModeDetails"):
        stream.stream_mode = dict(props["StreamModeDetails"])
    if props.get("StreamEncryption"):
        stream.encryption_type = props["StreamEncryption"]["EncryptionType"]
        stream.key_id = props["StreamEncryption"].get("KeyId")
    return stream


kinesis_models.Stream.create_from_cloudformation_json = classmethod(_stream_with_settings)

# --------------------------------------------------------------------------------------------
# Throttling on demand, and call counts
# --------------------------------------------------------------------------------------------
_rules = []
_calls = Counter()
_lock = threading.Lock()


class Middleware:
    def __init__(self, app):
        self.app = app

    def __call__(self, environ, start_response):
        path = environ.get("PATH_INFO", "")
        method = environ.get("REQUEST_METHOD", "")
        if path.startswith("/_cartflow/"):
            return self.control(environ, start_response, path, method)
        target = environ.get("HTTP_X_AMZ_TARGET")
        key = target or f"{method} {path}"
        with _lock:
            _calls[key] += 1
            for rule in _rules:
                if rule["count"] <= 0:
                    continue
                hit = (rule.get("target") and rule["target"] == target) or (
                    rule.get("path") and re.search(rule["path"], path) and rule.get("method", method) == method)
                if hit:
                    rule["count"] -= 1
                    body = json.dumps({"__type": "ThrottlingException", "message": "Rate exceeded"}).encode()
                    start_response("400 Bad Request", [("Content-Type", "application/x-amz-json-1.1"),
                                                       ("x-amzn-ErrorType", "ThrottlingException"),
                                                       ("Content-Length", str(len(body)))])
                    return [body]
        return self.app(environ, start_response)

    def control(self, environ, start_response, path, method):
        if path == "/_cartflow/throttle" and method == "POST":
            size = int(environ.get("CONTENT_LENGTH") or 0)
            rule = json.loads(environ["wsgi.input"].read(size) or b"{}")
            with _lock:
                _rules.append(rule)
            body = b"{}"
        elif path == "/_cartflow/calls":
            with _lock:
                body = json.dumps(dict(_calls)).encode()
        else:
            start_response("404 Not Found", [("Content-Length", "0")])
            return [b""]
        start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
        return [body]


def main(argv):
    import argparse

    from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app

    parser = argparse.ArgumentParser()
    parser.add_argument("-H", "--host", default="127.0.0.1")
    parser.add_argument("-p", "--port", type=int, default=5000)
    args = parser.parse_args(argv)
    app = DomainDispatcherApplication(create_backend_app)
    run_simple(args.host, args.port, Middleware(app), threaded=True, request_handler=MotoRequestHandler)


if __name__ == "__main__":
    main(sys.argv[1:])
