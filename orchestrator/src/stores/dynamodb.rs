//! The run store on DynamoDB (`state: dynamodb://TABLE` in `cartflow.yaml`): one table, so that
//! the ECS tasks an EventBridge rule starts — each with an empty disk — share their runs, leases,
//! facts and backfill jobs. Region and credentials come from the standard AWS chain.
//!
//! ## Items (single-table design; `pk` and `sk` are strings)
//!
//! | item | pk | sk | attributes |
//! |---|---|---|---|
//! | run | `RUN#<run id>` | `RUN` | `dag`, `start`, `end`, `state`, `trigger`, `created_at`, `started_at`, `ended_at`, `owner`, `lease_until`, `heartbeat_at`, `cancel_requested_at`, `cancel_requested_by`; `live` (the DAG, while running); `kind` = `run`, `start_id` |
//! | task instance | `RUN#<run id>` | `TASK#<task>` | `task`, `pos`, `state`, `state_json`, `attempts`, `failures`, `updated_at` |
//! | attempt | `RUN#<run id>` | `ATTEMPT#<task>#<attempt, 6 digits>` | `task`, `attempt`, `state`, `started_at`, `ended_at`, `error`, `exit_code`, `summary`, `log_path`, `pgid`, `leader_start`, `boot_id` |
//! | fact | `RUN#<run id>` | `FACT#<task>#<key>` | `task`, `key`, `value` |
//! | notification | `RUN#<run id>` | `NOTE#<dedupe key>#<target>` | `key`, `target`, `event`, `spec`, `body`, `state`, `tries`, `error`, `owner`, `created_at`, `sent_at`; `outbox` (while undelivered) |
//! | backfill job | `BACKFILL#<id>` | `JOB` | `dag`, `request`, `created_at`, `finished_at` |
//! | a run of a job | `BACKFILL#<id>` | `RUN#<run id>` | `run_id`, `pos`, `action`, `state` |
//! | open job of a request | `BFOPEN#<sha-256 of the request>` | `OPEN` | `backfill_id` |
//! | deadline decision | `RUN#<run id>` | `DEADLINE#<task, or empty for the run's>` | `dag`, `task`, `deadline_at`, `missed`, `reason`, `decided_at` |
//! | a DAG's deadline decisions | `DEADLINES#<dag>` | `<deadline at>#<run id>#<task>` | `run_id`, `task` |
//! | paused DAG | `PAUSE` | `<dag>` | `paused`, `paused_at`, `who`; `span_paused_at`, `unpaused_at` (the last pause that ended) |
//! | a task's last mark by hand | `RUN#<run id>` | `MARK#<task>` | `task`, `mark`, `at` |
//! | audit log entry | `AUDIT` | `<at>#<id>` | `id`, `at`, `who`, `action`, `dag_id`, `run_id`, `task_id`, `detail` |
//! | list of backfill jobs | `BACKFILLS` | `<created at>#<id>` | `backfill_id` |
//!
//! Indexes: `by_dag` (`dag`, `start`) lists a DAG's runs by interval; `live` (`live`, sparse: only
//! running runs carry it) finds the runs a DAG has in flight without reading its history;
//! `all_runs` (`kind`, `start_id`) lists every DAG's runs newest first; `outbox` (`outbox`,
//! `created_at`, sparse: only undelivered notifications carry `outbox`) finds what a crashed
//! process recorded and did not deliver, without reading the runs.
//!
//! ## Writes
//! Every state change is conditional on the state last read: a claim on the owner and lease it
//! read (or on the run not existing), every other write of an execution on the owner being this
//! process. The changes of one batch — completions and the tasks they start — go in one
//! `TransactWriteItems` (at most 100 items: a larger batch is split by task, each part checking
//! the owner), before dependents start: the rule of the SQLite store.
//!
//! The store's API is synchronous, as SQLite's; its calls run on a runtime of its own, so that
//! callers on any runtime (or none) may block on them.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::error::{DisplayErrorContext, SdkError};
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, ConditionCheck, Delete, GlobalSecondaryIndex, KeySchemaElement,
    KeyType, Projection, ProjectionType, Put, ReturnValue, ScalarAttributeType, TransactWriteItem, Update,
};
use chrono::{DateTime, Utc};

use crate::config::aws::S3Loc;
use crate::engine::state::{AttemptState, RunState, TaskState, Trigger};
use crate::engine::store::kit::{
    INTERRUPTED, apply_mark, kill_leftover, killed_note, lease_end, on_claim, owner_alive, parse_ts, ts, wait_killed,
};
use crate::engine::store::transfer::{
    AttemptRecord, BackfillRecord, FactRecord, Imported, NotificationRecord, Record, RunRecord, Sink, TaskRecord,
};
use crate::engine::store::{
    AttemptRow, AuditRow, BackfillRunRow, CancelError, CancelRequested, Claim, ClaimedRun, DeadlineRow, Delivery,
    DeliveryState, Mark, MarkError, Marked, NewAudit, NewNotification, NotificationRow, Op, RemoteStore, RunRow, Store,
    StoreError, TaskRow, describe_owner, my_token, run_id,
};
use crate::process;

type Item = HashMap<String, AttributeValue>;

/// At most this many items in one `TransactWriteItems`.
const MAX_TRANSACTION: usize = 100;

/// The runtime the store's calls run on.
fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("cartflow-dynamodb")
            .enable_all()
            .build()
            .expect("the DynamoDB store's runtime")
    })
}

/// Runs `f` on the store's runtime and waits for it: callable from any thread, inside another
/// runtime or not.
fn block<T: Send + 'static>(f: impl Future<Output = T> + Send + 'static) -> T {
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    runtime().spawn(async move {
        let _ = tx.send(f.await);
    });
    rx.recv().expect("the DynamoDB store's runtime stopped")
}

/// The table `state: dynamodb://TABLE` names; a connection per [`RemoteStore::open`], one SDK
/// client for all of them.
#[derive(Debug)]
pub struct DynamoTable {
    table: String,
    logs: Option<S3Loc>,
    client: OnceLock<Client>,
}

impl DynamoTable {
    /// The table `table`; attempt logs go under `logs` (the lake's `_logs/` folder) when given.
    pub fn new(table: &str, logs: Option<S3Loc>) -> DynamoTable {
        DynamoTable { table: table.to_string(), logs, client: OnceLock::new() }
    }
}

impl RemoteStore for DynamoTable {
    fn location(&self) -> String {
        format!("dynamodb://{}", self.table)
    }

    fn open(&self) -> Result<Box<dyn Store>, StoreError> {
        let client = self
            .client
            .get_or_init(|| {
                let config = block(crate::aws::sdk_config());
                // Every call of the store is bounded: a call that hangs fails (and is retried)
                // in time for the owner to stop its run before its lease runs out.
                let timeouts = aws_sdk_dynamodb::config::timeout::TimeoutConfig::builder()
                    .operation_attempt_timeout(Duration::from_secs(5))
                    .operation_timeout(Duration::from_secs(15))
                    .build();
                Client::from_conf(aws_sdk_dynamodb::config::Builder::from(&config).timeout_config(timeouts).build())
            })
            .clone();
        if self.logs.is_none() {
            static SAID: std::sync::Once = std::sync::Once::new();
            SAID.call_once(|| {
                tracing::warn!(
                    store = %self.location(),
                    "attempt logs stay in .cartflow/logs on this machine (gone with an ECS task's container): set `aws.lake` or `aws.zones._logs` in cartflow.yaml to keep them in S3"
                )
            });
        }
        let s3 = self.logs.as_ref().map(|_| {
            let config = block(crate::aws::sdk_config());
            aws_sdk_s3::Client::new(&config)
        });
        Ok(Box::new(DynamoStore {
            table: self.table.clone(),
            client,
            logs: self.logs.clone().zip(s3),
            logs_dir: PathBuf::from(".cartflow/logs"),
        }))
    }
}

/// One connection to the table.
#[derive(Debug)]
struct DynamoStore {
    table: String,
    client: Client,
    logs: Option<(S3Loc, aws_sdk_s3::Client)>,
    logs_dir: PathBuf,
}

fn s(v: impl Into<String>) -> AttributeValue {
    AttributeValue::S(v.into())
}

fn n(v: impl ToString) -> AttributeValue {
    AttributeValue::N(v.to_string())
}

fn text<'a>(item: &'a Item, k: &str) -> Option<&'a str> {
    item.get(k).and_then(|v| v.as_s().ok()).map(String::as_str)
}

fn num<T: std::str::FromStr>(item: &Item, k: &str) -> Option<T> {
    item.get(k).and_then(|v| v.as_n().ok()).and_then(|v| v.parse().ok())
}

fn time(item: &Item, k: &str) -> Option<DateTime<Utc>> {
    text(item, k).and_then(parse_ts)
}

fn run_pk(run_id: &str) -> String {
    format!("RUN#{run_id}")
}

fn attempt_sk(task: &str, attempt: u32) -> String {
    format!("ATTEMPT#{task}#{attempt:06}")
}

fn key(pk: &str, sk: &str) -> Item {
    HashMap::from([("pk".to_string(), s(pk)), ("sk".to_string(), s(sk))])
}

/// A failed call, as the store reports it.
fn sdk<E: std::error::Error + 'static, R: std::fmt::Debug>(call: &str, e: SdkError<E, R>) -> String {
    format!("{call}: {}", DisplayErrorContext(e))
}

/// How a transaction ended when it did not commit.
#[derive(Debug)]
enum TxError {
    /// Cancelled: the code of each item, in order (`ConditionalCheckFailed`, `None`, ...).
    Cancelled(Vec<Option<String>>),
    /// Any other failure.
    Failed(String),
}

impl std::fmt::Display for TxError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TxError::Cancelled(codes) => {
                let codes: Vec<&str> = codes.iter().map(|c| c.as_deref().unwrap_or("None")).collect();
                write!(f, "TransactWriteItems cancelled: [{}]", codes.join(", "))
            }
            TxError::Failed(message) => f.write_str(message),
        }
    }
}

impl TxError {
    /// Whether the condition of item `i` failed.
    fn condition_failed(&self, i: usize) -> bool {
        matches!(self, TxError::Cancelled(codes) if codes.get(i).and_then(|c| c.as_deref()) == Some("ConditionalCheckFailed"))
    }
}

/// The write request units this process used, counted as on-demand billing counts them for
/// items under 1 KB (all of the store's are): 1 per single write, 2 per item of a transaction
/// (a condition check included). What docs/aws.md's cost per task comes from (the engine
/// benchmark prints it).
static WRITE_UNITS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

fn used(units: usize) {
    WRITE_UNITS.fetch_add(units as u64, std::sync::atomic::Ordering::Relaxed);
}

/// The write request units this process used so far (1 per single write, 2 per item of a
/// transaction: the store's items are all under 1 KB).
pub fn write_units() -> u64 {
    WRITE_UNITS.load(std::sync::atomic::Ordering::Relaxed)
}

/// Commits `items` in one transaction, retrying a conflict with a concurrent one.
async fn transact(c: &Client, items: Vec<TransactWriteItem>) -> Result<(), TxError> {
    let mut delay = Duration::from_millis(25);
    // One token per transaction, reused by the SDK's retries of a call whose answer was lost:
    // DynamoDB applies the transaction once and answers the retry with success, where a
    // retried conditional write would fail on its own first write.
    static SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    for attempt in 0.. {
        let token = format!(
            "{:x}-{:x}-{:x}",
            std::process::id(),
            Utc::now().timestamp_nanos_opt().unwrap_or_default(),
            SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        );
        match c.transact_write_items().set_transact_items(Some(items.clone())).client_request_token(&token).send().await
        {
            Ok(_) => {
                used(2 * items.len());
                return Ok(());
            }
            Err(e) => {
                if let Some(TransactWriteItemsError::TransactionCanceledException(x)) = e.as_service_error() {
                    let codes: Vec<Option<String>> =
                        x.cancellation_reasons().iter().map(|r| r.code().map(str::to_string)).collect();
                    if attempt < 6 && codes.iter().any(|c| c.as_deref() == Some("TransactionConflict")) {
                        tokio::time::sleep(delay).await;
                        delay *= 2;
                        continue;
                    }
                    return Err(TxError::Cancelled(codes));
                }
                return Err(TxError::Failed(sdk("TransactWriteItems", e)));
            }
        }
    }
    unreachable!("the loop returns")
}

/// Every item of a query, page after page.
async fn query(
    c: &Client,
    table: &str,
    index: Option<&str>,
    condition: &str,
    values: Vec<(&'static str, AttributeValue)>,
    forward: bool,
    limit: Option<usize>,
) -> Result<Vec<Item>, String> {
    // Every attribute of a key condition is named `#<attr>` (none collides with a reserved word).
    let names: Vec<(String, String)> = ["pk", "sk", "dag", "start", "live", "kind", "outbox", "created_at"]
        .iter()
        .filter(|a| condition.contains(&format!("#{a}")))
        .map(|a| (format!("#{a}"), a.to_string()))
        .collect();
    let mut out = Vec::new();
    let mut start: Option<Item> = None;
    loop {
        let mut q = c
            .query()
            .table_name(table)
            .set_index_name(index.map(str::to_string))
            .key_condition_expression(condition)
            .scan_index_forward(forward)
            .set_exclusive_start_key(start.take())
            // Base-table reads see every committed write; an index is eventually consistent.
            .consistent_read(index.is_none());
        for (k, v) in &values {
            q = q.expression_attribute_values(*k, v.clone());
        }
        for (k, v) in &names {
            q = q.expression_attribute_names(k, v);
        }
        if let Some(l) = limit {
            q = q.limit(l.saturating_sub(out.len()).clamp(1, 1000) as i32);
        }
        let page = q.send().await.map_err(|e| sdk("Query", e))?;
        out.extend(page.items().iter().cloned());
        match page.last_evaluated_key() {
            Some(k) if !k.is_empty() && limit.is_none_or(|l| out.len() < l) => start = Some(k.clone()),
            _ => break,
        }
    }
    Ok(out)
}

/// The items of one partition whose sort key starts with `prefix`.
async fn items_of(c: &Client, table: &str, pk: &str, prefix: &str) -> Result<Vec<Item>, String> {
    query(c, table, None, "#pk = :pk AND begins_with(#sk, :p)", vec![(":pk", s(pk)), (":p", s(prefix))], true, None)
        .await
}

/// Every item of one partition.
async fn partition(c: &Client, table: &str, pk: &str) -> Result<Vec<Item>, String> {
    query(c, table, None, "#pk = :pk", vec![(":pk", s(pk))], true, None).await
}

async fn get(c: &Client, table: &str, pk: &str, sk: &str) -> Result<Option<Item>, String> {
    let out = c
        .get_item()
        .table_name(table)
        .set_key(Some(key(pk, sk)))
        .consistent_read(true)
        .send()
        .await
        .map_err(|e| sdk("GetItem", e))?;
    Ok(out.item().cloned())
}

/// Names and values of one expression: every attribute name goes through a placeholder, so
/// that none collides with DynamoDB's reserved words (`state`, `owner`, `end`, `error`...).
#[derive(Debug, Default)]
struct Expr {
    names: HashMap<String, String>,
    values: HashMap<String, AttributeValue>,
}

impl Expr {
    /// The placeholder of attribute `attr`.
    fn name(&mut self, attr: &str) -> String {
        if let Some((k, _)) = self.names.iter().find(|(_, v)| v.as_str() == attr) {
            return k.clone();
        }
        let k = format!("#n{}", self.names.len());
        self.names.insert(k.clone(), attr.to_string());
        k
    }

    /// The placeholder of value `v`.
    fn value(&mut self, v: AttributeValue) -> String {
        let k = format!(":v{}", self.values.len());
        self.values.insert(k.clone(), v);
        k
    }

    /// `attr = value`.
    fn eq(&mut self, attr: &str, v: AttributeValue) -> String {
        let (n, v) = (self.name(attr), self.value(v));
        format!("{n} = {v}")
    }

    /// `attribute_not_exists(attr)`.
    fn absent(&mut self, attr: &str) -> String {
        format!("attribute_not_exists({})", self.name(attr))
    }

    /// `SET a = :x, ... REMOVE b, ...`: the fields whose value is `None` are removed.
    fn set_remove(&mut self, fields: &[(&str, Option<AttributeValue>)]) -> String {
        let (mut set, mut remove) = (Vec::new(), Vec::new());
        for (attr, v) in fields {
            match v {
                Some(v) => set.push(self.eq(attr, v.clone())),
                None => remove.push(self.name(attr)),
            }
        }
        let mut expr = String::new();
        if !set.is_empty() {
            expr.push_str(&format!("SET {}", set.join(", ")));
        }
        if !remove.is_empty() {
            expr.push_str(&format!(" REMOVE {}", remove.join(", ")));
        }
        expr.trim().to_string()
    }

    fn names(&self) -> Option<HashMap<String, String>> {
        (!self.names.is_empty()).then(|| self.names.clone())
    }

    fn values(&self) -> Option<HashMap<String, AttributeValue>> {
        (!self.values.is_empty()).then(|| self.values.clone())
    }
}

/// Puts `item`, if `condition` (built in `e`) holds.
fn put(table: &str, item: Item, condition: Option<(&str, &Expr)>) -> TransactWriteItem {
    let mut p = Put::builder().table_name(table).set_item(Some(item));
    if let Some((cond, e)) = condition {
        p = p
            .condition_expression(cond)
            .set_expression_attribute_names(e.names())
            .set_expression_attribute_values(e.values());
    }
    TransactWriteItem::builder().put(p.build().expect("a put has its table and item")).build()
}

/// Sets (or, for `None`, removes) `fields` of an item, if `condition` holds.
fn update(
    table: &str,
    pk: &str,
    sk: &str,
    fields: &[(&str, Option<AttributeValue>)],
    condition: Option<&dyn Fn(&mut Expr) -> String>,
) -> TransactWriteItem {
    let mut e = Expr::default();
    let expr = e.set_remove(fields);
    let cond = condition.map(|c| c(&mut e));
    let u = Update::builder()
        .table_name(table)
        .set_key(Some(key(pk, sk)))
        .update_expression(expr)
        .set_condition_expression(cond)
        .set_expression_attribute_names(e.names())
        .set_expression_attribute_values(e.values());
    TransactWriteItem::builder().update(u.build().expect("an update has its table, key and expression")).build()
}

fn delete(table: &str, pk: &str, sk: &str) -> TransactWriteItem {
    let d = Delete::builder().table_name(table).set_key(Some(key(pk, sk))).build().expect("a delete has its key");
    TransactWriteItem::builder().delete(d).build()
}

/// Checks that this process owns run `run_id`.
fn owned(table: &str, run_id: &str) -> TransactWriteItem {
    let mut e = Expr::default();
    let cond = e.eq("owner", s(my_token()));
    let c = ConditionCheck::builder()
        .table_name(table)
        .set_key(Some(key(&run_pk(run_id), "RUN")))
        .condition_expression(cond)
        .set_expression_attribute_names(e.names())
        .set_expression_attribute_values(e.values())
        .build()
        .expect("a condition check has its key and condition");
    TransactWriteItem::builder().condition_check(c).build()
}

fn task_item(run_id: &str, task: &str, pos: usize, state: &TaskState, attempts: u32, failures: u32) -> Item {
    let mut item = key(&run_pk(run_id), &format!("TASK#{task}"));
    item.insert("task".into(), s(task));
    item.insert("pos".into(), n(pos));
    item.insert("state".into(), s(state.name()));
    item.insert("state_json".into(), s(serde_json::to_string(state).unwrap_or_default()));
    item.insert("attempts".into(), n(attempts));
    item.insert("failures".into(), n(failures));
    item.insert("updated_at".into(), s(ts(Utc::now())));
    item
}

fn note_item(n_: &NewNotification, now: &str) -> Item {
    let run = &n_.note.run;
    let mut item = key(&run_pk(run), &format!("NOTE#{}#{}", n_.note.dedupe_key, n_.target));
    item.insert("key".into(), s(&n_.note.dedupe_key));
    item.insert("target".into(), s(&n_.target));
    item.insert("event".into(), s(n_.note.event.name()));
    item.insert("spec".into(), s(serde_json::to_string(&n_.spec).unwrap_or_default()));
    item.insert("body".into(), s(serde_json::to_string(&n_.note).unwrap_or_default()));
    item.insert("state".into(), s(DeliveryState::Pending.name()));
    item.insert("tries".into(), n(0));
    item.insert("owner".into(), s(my_token()));
    item.insert("created_at".into(), s(now));
    item.insert(OUTBOX.into(), s(OUTBOX));
    item
}

/// The attribute (and its value) a notification carries while it is undelivered: the key of
/// the sparse index `outbox` (with `created_at`), which finds every run's undelivered
/// notifications without reading the runs.
const OUTBOX: &str = "outbox";

/// The partition listing every backfill job (sort key: created at, then id).
const BACKFILLS_PK: &str = "BACKFILLS";

/// The listing item of backfill job `id`.
fn listing(id: &str, created: DateTime<Utc>) -> Item {
    let mut item = key(BACKFILLS_PK, &format!("{}#{id}", ts(created)));
    item.insert("backfill_id".into(), s(id));
    item
}

/// The partition of the paused DAGs (one item per DAG ever paused, its sort key the DAG).
const PAUSE_PK: &str = "PAUSE";

/// The partition of the audit log (what people did by hand: low volume), newest last.
const AUDIT_PK: &str = "AUDIT";

/// A boolean attribute (`false` when absent).
fn flag(item: &Item, k: &str) -> bool {
    item.get(k).and_then(|v| v.as_bool().ok()).copied().unwrap_or(false)
}

/// An entry of the audit log; its id is its time in nanoseconds (in order, as SQLite's).
fn audit_item(a: &NewAudit<'_>, at: DateTime<Utc>) -> Item {
    let id = at.timestamp_nanos_opt().unwrap_or_default();
    let mut item = key(AUDIT_PK, &format!("{}#{id:020}", ts(at)));
    item.insert("id".into(), n(id));
    item.insert("at".into(), s(ts(at)));
    for (k, v) in [
        ("who", a.who),
        ("action", a.action),
        ("dag_id", a.dag_id),
        ("run_id", a.run_id),
        ("task_id", a.task_id),
        ("detail", a.detail),
    ] {
        item.insert(k.into(), s(v));
    }
    item
}

/// The run a notification's dedupe key belongs to (`RUN/TASK/ATTEMPT/EVENT`).
fn run_of_key(key: &str) -> &str {
    key.split('/').next().unwrap_or(key)
}

impl DynamoStore {
    fn remote(&self, message: String) -> StoreError {
        StoreError::Remote { store: format!("dynamodb://{}", self.table), message }
    }

    fn corrupt(&self, what: String) -> StoreError {
        StoreError::Corrupt { path: PathBuf::from(format!("dynamodb://{}", self.table)), what }
    }

    /// Runs `f` with a client and the table name on the store's runtime.
    fn call<T: Send + 'static, F: Future<Output = Result<T, String>> + Send + 'static>(
        &self,
        f: impl FnOnce(Client, String) -> F,
    ) -> Result<T, StoreError> {
        block(f(self.client.clone(), self.table.clone())).map_err(|m| self.remote(m))
    }

    /// Commits `items`; `Err(Some(e))` when it was cancelled (`e` says how), `Err(None)` never.
    fn commit(&self, items: Vec<TransactWriteItem>) -> Result<Result<(), TxError>, StoreError> {
        let c = self.client.clone();
        Ok(block(async move { transact(&c, items).await }))
    }

    /// The error of a write refused because this process no longer owns `run_id`.
    fn lease_lost(&self, run_id: &str) -> StoreError {
        let owner = self
            .call({
                let pk = run_pk(run_id);
                move |c, t| async move { get(&c, &t, &pk, "RUN").await }
            })
            .ok()
            .flatten()
            .and_then(|i| text(&i, "owner").map(describe_owner));
        StoreError::LeaseLost { run_id: run_id.to_string(), owner }
    }

    /// Commits the writes of an execution of `run_id`, each part checking that this process
    /// owns the run: split (by task, keeping a task's changes together) when more than a
    /// transaction holds.
    fn commit_owned(&self, run_id: &str, groups: Vec<Vec<TransactWriteItem>>) -> Result<(), StoreError> {
        let mut parts: Vec<Vec<TransactWriteItem>> = Vec::new();
        let mut part = vec![owned(&self.table, run_id)];
        for g in groups {
            if part.len() + g.len() > MAX_TRANSACTION && part.len() > 1 {
                parts.push(std::mem::replace(&mut part, vec![owned(&self.table, run_id)]));
            }
            part.extend(g);
        }
        parts.push(part);
        for items in parts {
            match self.commit(items)? {
                Ok(()) => {}
                Err(e) if e.condition_failed(0) => return Err(self.lease_lost(run_id)),
                Err(e) => return Err(self.remote(e.to_string())),
            }
        }
        Ok(())
    }

    /// The notifications of `notes` not recorded yet (a recorded one is kept as it is).
    fn new_notes<'a>(&self, notes: impl Iterator<Item = &'a NewNotification>) -> Result<Vec<Item>, StoreError> {
        let now = ts(Utc::now());
        let mut out = Vec::new();
        let mut seen = HashSet::new();
        for note in notes {
            let item = note_item(note, &now);
            let (pk, sk) = (text(&item, "pk").unwrap_or("").to_string(), text(&item, "sk").unwrap_or("").to_string());
            if !seen.insert(sk.clone()) {
                continue;
            }
            let exists = self.call(move |c, t| async move { get(&c, &t, &pk, &sk).await })?.is_some();
            if !exists {
                out.push(item);
            }
        }
        Ok(out)
    }

    fn run_row(&self, item: &Item) -> Result<RunRow, StoreError> {
        let run_id = text(item, "pk").and_then(|p| p.strip_prefix("RUN#")).unwrap_or("?").to_string();
        let bad = |what: &str| self.corrupt(format!("run {run_id}: {what}"));
        let (Some(interval_start), Some(interval_end)) = (time(item, "start"), time(item, "end")) else {
            return Err(bad("an interval bound is not a timestamp"));
        };
        let state = text(item, "state").unwrap_or("");
        let state = RunState::parse(state).ok_or_else(|| bad(&format!("unknown state `{state}`")))?;
        let trigger = text(item, "trigger").unwrap_or("");
        let trigger = Trigger::parse(trigger).ok_or_else(|| bad(&format!("unknown trigger `{trigger}`")))?;
        Ok(RunRow {
            dag_id: text(item, "dag").unwrap_or("").to_string(),
            run_id,
            interval_start,
            interval_end,
            state,
            trigger,
            started_at: time(item, "started_at"),
            ended_at: time(item, "ended_at"),
        })
    }

    fn is_live(&self, item: &Item) -> bool {
        text(item, "state") == Some(RunState::Running.name())
            && text(item, "owner").is_some_and(|o| owner_alive(o, time(item, "lease_until")))
    }

    fn notification_row(&self, item: &Item) -> Result<NotificationRow, StoreError> {
        let target = text(item, "target").unwrap_or("").to_string();
        let bad = |what: &str| self.corrupt(format!("notification to {target}: {what}"));
        let spec = serde_json::from_str(text(item, "spec").unwrap_or("")).map_err(|_| bad("unreadable target"))?;
        let note = serde_json::from_str(text(item, "body").unwrap_or("")).map_err(|_| bad("unreadable body"))?;
        let state = text(item, "state").unwrap_or("");
        let state = [DeliveryState::Pending, DeliveryState::Sending, DeliveryState::Sent, DeliveryState::Failed]
            .into_iter()
            .find(|d| d.name() == state)
            .ok_or_else(|| bad(&format!("unknown state `{state}`")))?;
        Ok(NotificationRow {
            spec,
            note,
            state,
            tries: num(item, "tries").unwrap_or(0),
            error: text(item, "error").map(str::to_string),
            created_at: time(item, "created_at").unwrap_or_default(),
            sent_at: time(item, "sent_at"),
            target,
        })
    }

    /// Whether `owner` holds run `run_id` with a lease that has not run out.
    fn holds_run(&self, owner: &str, run_id: &str) -> Result<bool, StoreError> {
        let pk = run_pk(run_id);
        let run = self.call(move |c, t| async move { get(&c, &t, &pk, "RUN").await })?;
        Ok(run.is_some_and(|r| text(&r, "owner") == Some(owner) && owner_alive(owner, time(&r, "lease_until"))))
    }

    /// A run's facts of `task` that a fresh queueing forgets (all but the `leftover.` ones), as
    /// delete actions.
    fn fact_deletes(&self, run_id: &str, task: &str) -> Result<Vec<TransactWriteItem>, StoreError> {
        let (pk, prefix) = (run_pk(run_id), format!("FACT#{task}#"));
        let facts = self.call(move |c, t| async move { items_of(&c, &t, &pk, &prefix).await })?;
        Ok(facts
            .iter()
            .filter(|f| !text(f, "key").is_some_and(crate::engine::store::survives_requeue))
            .filter_map(|f| Some(delete(&self.table, text(f, "pk")?, text(f, "sk")?)))
            .collect())
    }
}

impl Store for DynamoStore {
    fn location(&self) -> String {
        format!("dynamodb://{}", self.table)
    }

    fn logs_dir(&self) -> PathBuf {
        self.logs_dir.clone()
    }

    /// Uploads the log to `<lake>/_logs/<run>/<task>/attempt-<n>.log` (`aws.lake`, or the
    /// `_logs` zone), so that it outlives the container that ran the attempt; the store records
    /// the `s3://` URL.
    fn keep_log(&self, run_id: &str, task_id: &str, attempt: u32, local: &Path) -> Result<String, StoreError> {
        let Some((root, client)) = &self.logs else {
            return Ok(local.display().to_string());
        };
        let body = std::fs::read(local).map_err(|source| StoreError::Io { path: local.to_path_buf(), source })?;
        let key = root.join(&format!("{run_id}/{task_id}/attempt-{attempt}.log")).key;
        let (client, bucket, k) = (client.clone(), root.bucket.clone(), key.clone());
        block(async move {
            client
                .put_object()
                .bucket(bucket)
                .key(k)
                .body(body.into())
                .content_type("text/plain; charset=utf-8")
                .send()
                .await
                .map(|_| ())
                .map_err(|e| sdk("s3:PutObject", e))
        })
        .map_err(|m| self.remote(m))?;
        Ok(format!("s3://{}/{key}", root.bucket))
    }

    fn read_log(&self, log_path: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let Some(rest) = log_path.strip_prefix("s3://") else {
            return match std::fs::read(log_path) {
                Ok(b) => Ok(Some(b)),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                Err(source) => Err(StoreError::Io { path: PathBuf::from(log_path), source }),
            };
        };
        let (bucket, key) = rest.split_once('/').unwrap_or((rest, ""));
        let client = match &self.logs {
            Some((_, c)) => c.clone(),
            None => aws_sdk_s3::Client::new(&block(crate::aws::sdk_config())),
        };
        let (bucket, key) = (bucket.to_string(), key.to_string());
        block(async move {
            match client.get_object().bucket(bucket).key(key).send().await {
                Ok(o) => o
                    .body
                    .collect()
                    .await
                    .map(|b| Some(b.into_bytes().to_vec()))
                    .map_err(|e| format!("s3:GetObject: {e}")),
                Err(e) if e.as_service_error().is_some_and(|s| s.is_no_such_key()) => Ok(None),
                Err(e) => Err(sdk("s3:GetObject", e)),
            }
        })
        .map_err(|m| self.remote(m))
    }

    fn claim(&mut self, c: &Claim) -> Result<ClaimedRun, StoreError> {
        let now = Utc::now();
        let run_id = run_id(c.dag_id, c.interval.start);
        let pk = run_pk(&run_id);
        let (run, stored, attempts) = self.call({
            let pk = pk.clone();
            move |cl, t| async move {
                let run = get(&cl, &t, &pk, "RUN").await?;
                let tasks = items_of(&cl, &t, &pk, "TASK#").await?;
                let attempts = items_of(&cl, &t, &pk, "ATTEMPT#").await?;
                Ok((run, tasks, attempts))
            }
        })?;
        let owner = run.as_ref().and_then(|r| text(r, "owner")).map(str::to_string);
        let lease = run.as_ref().and_then(|r| text(r, "lease_until")).map(str::to_string);
        let existed = run.is_some();
        let taking_over = existed && owner.as_deref() != Some(my_token());
        if let Some(o) = &owner
            && o != my_token()
            && owner_alive(o, lease.as_deref().and_then(parse_ts))
        {
            return Err(StoreError::RunBusy { run_id, pid: describe_owner(o) });
        }
        if !existed && c.require_existing {
            return Err(StoreError::NoSuchRun { run_id });
        }
        let mut by_task: HashMap<String, (TaskState, u32, u32)> = HashMap::new();
        for item in &stored {
            let task = text(item, "task").unwrap_or("").to_string();
            let state: TaskState = serde_json::from_str(text(item, "state_json").unwrap_or(""))
                .map_err(|e| self.corrupt(format!("task {task} of {run_id}: {e}")))?;
            by_task.insert(task, (state, num(item, "attempts").unwrap_or(0), num(item, "failures").unwrap_or(0)));
        }
        let attempt_of =
            |task: &str, attempt: u32| attempts.iter().find(|a| text(a, "sk") == Some(&attempt_sk(task, attempt)));

        // The run item: written from what was read, or refused.
        let stamp = ts(now);
        let mut item = run.clone().unwrap_or_else(|| key(&pk, "RUN"));
        for (k, v) in [
            ("dag", s(c.dag_id)),
            ("start", s(ts(c.interval.start))),
            ("end", s(ts(c.interval.end))),
            ("state", s(RunState::Running.name())),
            ("trigger", s(c.trigger.name())),
            ("started_at", s(&stamp)),
            ("owner", s(my_token())),
            ("heartbeat_at", s(&stamp)),
            ("lease_until", s(ts(lease_end(now)))),
            ("live", s(c.dag_id)),
            ("kind", s("run")),
            ("start_id", s(format!("{}#{run_id}", ts(c.interval.start)))),
        ] {
            item.insert(k.to_string(), v);
        }
        for k in ["ended_at", "cancel_requested_at", "cancel_requested_by"] {
            item.remove(k);
        }
        item.entry("created_at".to_string()).or_insert_with(|| s(&stamp));
        // Conditional on what was read: no run, or the owner and lease this claim decided on.
        let mut e = Expr::default();
        let cond = match (&owner, &lease, existed) {
            (_, _, false) => e.absent("pk"),
            (Some(o), Some(l), true) => format!("{} AND {}", e.eq("owner", s(o)), e.eq("lease_until", s(l))),
            (Some(o), None, true) => format!("{} AND {}", e.eq("owner", s(o)), e.absent("lease_until")),
            (None, _, true) => e.absent("owner"),
        };
        let run_put = put(&self.table, item, Some((&cond, &e)));
        let mut groups: Vec<Vec<TransactWriteItem>> = Vec::new();
        let mut out = HashMap::new();
        let mut interrupted = Vec::new();
        let mut killed = Vec::new();
        for (pos, &(task, selected)) in c.tasks.iter().enumerate() {
            let (state, attempts_n, failures) = by_task.remove(task).unwrap_or((TaskState::Queued, 0, 0));
            let d = on_claim(&state, failures, selected, c.rerun)
                .map_err(|e| self.corrupt(format!("task {task} of {run_id}: {e}")))?;
            let mut g = Vec::new();
            if let Some(attempt) = d.interrupted {
                let mut error = String::from(INTERRUPTED);
                if taking_over
                    && let Some(a) = attempt_of(task, attempt)
                    && let (Some(pgid), Some(leader_start)) = (num::<i32>(a, "pgid"), num::<i64>(a, "leader_start"))
                {
                    let group = process::Group {
                        pgid,
                        leader_start,
                        boot_id: text(a, "boot_id").unwrap_or_default().to_string(),
                    };
                    if kill_leftover(&run_id, task, attempt, &group) {
                        error.push_str(&killed_note(pgid));
                        killed.push(pgid);
                    }
                }
                g.push(update(
                    &self.table,
                    &pk,
                    &attempt_sk(task, attempt),
                    &[
                        ("state", Some(s(crate::engine::state::AttemptOutcome::Interrupted.name()))),
                        ("ended_at", Some(s(&stamp))),
                        ("error", Some(s(error))),
                    ],
                    None,
                ));
                interrupted.push(task.to_string());
            }
            if d.fresh {
                g.extend(self.fact_deletes(&run_id, task)?);
            }
            g.push(put(&self.table, task_item(&run_id, task, pos, &d.state, attempts_n, d.failures), None));
            groups.push(g);
            out.insert(task.to_string(), (d.state, attempts_n, d.failures));
        }
        // The claim itself, with as many task changes as fit; the rest after it, each part
        // checking that the run is still ours.
        let mut first = vec![run_put];
        let mut rest = Vec::new();
        for g in groups {
            if rest.is_empty() && first.len() + g.len() <= MAX_TRANSACTION {
                first.extend(g);
            } else {
                rest.push(g);
            }
        }
        match self.commit(first)? {
            Ok(()) => {}
            Err(e) if e.condition_failed(0) => {
                // Another process claimed it between our read and our write.
                let now_owner = self
                    .call({
                        let pk = pk.clone();
                        move |cl, t| async move { get(&cl, &t, &pk, "RUN").await }
                    })?
                    .and_then(|i| text(&i, "owner").map(describe_owner))
                    .unwrap_or_else(|| "?".into());
                return Err(StoreError::RunBusy { run_id, pid: now_owner });
            }
            Err(e) => return Err(self.remote(e.to_string())),
        }
        if !rest.is_empty() {
            self.commit_owned(&run_id, rest)?;
        }
        cartflow_jobs::crash::point("store.claimed");
        wait_killed(&run_id, &killed);
        Ok(ClaimedRun { run_id, existed, tasks: out, interrupted })
    }

    fn record_group(
        &self,
        run_id: &str,
        task_id: &str,
        attempt: u32,
        group: &process::Group,
    ) -> Result<(), StoreError> {
        let fields = [
            ("pgid", Some(n(group.pgid))),
            ("leader_start", Some(n(group.leader_start))),
            ("boot_id", Some(s(group.boot_id.as_str()))),
        ];
        let running: &dyn Fn(&mut Expr) -> String = &|e| e.eq("state", s("running"));
        let attempt_update =
            update(&self.table, &run_pk(run_id), &attempt_sk(task_id, attempt), &fields, Some(running));
        let items = vec![owned(&self.table, run_id), attempt_update];
        match self.commit(items)? {
            Ok(()) => Ok(()),
            Err(e) if e.condition_failed(0) => Err(self.lease_lost(run_id)),
            Err(e) if e.condition_failed(1) => {
                Err(StoreError::NotRunning { run_id: run_id.to_string(), task_id: task_id.to_string(), attempt })
            }
            Err(e) => Err(self.remote(e.to_string())),
        }
    }

    fn apply(&mut self, run_id: &str, ops: &[Op]) -> Result<(), StoreError> {
        if ops.is_empty() {
            return Ok(());
        }
        let pk = run_pk(run_id);
        let now = ts(Utc::now());
        // One action per item (a transaction may not touch an item twice), in order, grouped
        // by task so that a split keeps a task's changes together.
        let mut order: Vec<String> = Vec::new();
        let mut task_of: HashMap<String, String> = HashMap::new();
        let mut puts: HashMap<String, Item> = HashMap::new();
        let mut updates: HashMap<String, Vec<(&'static str, Option<AttributeValue>)>> = HashMap::new();
        let mut notes = Vec::new();
        for op in ops {
            match op {
                Op::Task { task_id, state, attempts, failures } => {
                    let sk = format!("TASK#{task_id}");
                    let fields = vec![
                        ("state", Some(s(state.name()))),
                        ("state_json", Some(s(serde_json::to_string(state).unwrap_or_default()))),
                        ("attempts", Some(n(attempts))),
                        ("failures", Some(n(failures))),
                        ("updated_at", Some(s(&now))),
                    ];
                    if !updates.contains_key(&sk) {
                        order.push(sk.clone());
                    }
                    task_of.insert(sk.clone(), task_id.clone());
                    updates.insert(sk, fields);
                }
                Op::AttemptStarted { task_id, attempt, started_at } => {
                    let sk = attempt_sk(task_id, *attempt);
                    let mut item = key(&pk, &sk);
                    item.insert("task".into(), s(task_id));
                    item.insert("attempt".into(), n(attempt));
                    item.insert("state".into(), s("running"));
                    item.insert("started_at".into(), s(ts(*started_at)));
                    if !puts.contains_key(&sk) && !updates.contains_key(&sk) {
                        order.push(sk.clone());
                    }
                    updates.remove(&sk);
                    task_of.insert(sk.clone(), task_id.clone());
                    puts.insert(sk, item);
                }
                Op::AttemptEnded { task_id, attempt, outcome, ended_at, error, exit_code, summary, log_path } => {
                    let sk = attempt_sk(task_id, *attempt);
                    let fields = vec![
                        ("state", Some(s(outcome.name()))),
                        ("ended_at", Some(s(ts(*ended_at)))),
                        ("error", error.as_ref().map(s)),
                        ("exit_code", exit_code.map(n)),
                        ("summary", summary.as_ref().map(s)),
                        ("log_path", log_path.as_ref().map(s)),
                    ];
                    task_of.insert(sk.clone(), task_id.clone());
                    if let Some(item) = puts.get_mut(&sk) {
                        for (k, v) in fields {
                            match v {
                                Some(v) => item.insert(k.to_string(), v),
                                None => item.remove(k),
                            };
                        }
                    } else {
                        if !updates.contains_key(&sk) {
                            order.push(sk.clone());
                        }
                        updates.insert(sk, fields);
                    }
                }
                Op::Notify(note) => notes.push(note.as_ref().clone()),
            }
        }
        let mut groups: Vec<(String, Vec<TransactWriteItem>)> = Vec::new();
        for sk in order {
            let action = if let Some(item) = puts.remove(&sk) {
                put(&self.table, item, None)
            } else if let Some(fields) = updates.remove(&sk) {
                update(&self.table, &pk, &sk, &fields, None)
            } else {
                continue;
            };
            let task = task_of.get(&sk).cloned().unwrap_or_default();
            match groups.iter_mut().find(|(t, _)| *t == task) {
                Some((_, g)) => g.push(action),
                None => groups.push((task, vec![action])),
            }
        }
        let fresh_notes = self.new_notes(notes.iter())?;
        let mut groups: Vec<Vec<TransactWriteItem>> = groups.into_iter().map(|(_, g)| g).collect();
        groups.extend(fresh_notes.into_iter().map(|item| vec![put(&self.table, item, None)]));
        self.commit_owned(run_id, groups)?;
        for op in ops {
            match op {
                Op::AttemptStarted { .. } => cartflow_jobs::crash::point("store.attempt_started"),
                Op::AttemptEnded { .. } => cartflow_jobs::crash::point("store.attempt_ended"),
                Op::Task { .. } | Op::Notify(_) => {}
            }
        }
        Ok(())
    }

    fn restart_fresh(&mut self, run_id: &str, tasks: &[String]) -> Result<(), StoreError> {
        let pk = run_pk(run_id);
        let now = ts(Utc::now());
        let json = serde_json::to_string(&TaskState::Queued).unwrap_or_default();
        let mut groups = Vec::new();
        for task in tasks {
            let mut g = self.fact_deletes(run_id, task)?;
            g.push(update(
                &self.table,
                &pk,
                &format!("TASK#{task}"),
                &[
                    ("state", Some(s(TaskState::Queued.name()))),
                    ("state_json", Some(s(&json))),
                    ("failures", Some(n(0))),
                    ("updated_at", Some(s(&now))),
                ],
                None,
            ));
            groups.push(g);
        }
        self.commit_owned(run_id, groups)
    }

    fn heartbeat(&self, run_id: &str) -> Result<Option<String>, StoreError> {
        let now = Utc::now();
        let pk = run_pk(run_id);
        let (stamp, lease) = (ts(now), ts(lease_end(now)));
        let out = block({
            let (c, t) = (self.client.clone(), self.table.clone());
            async move {
                let mut e = Expr::default();
                let set = e.set_remove(&[("heartbeat_at", Some(s(stamp))), ("lease_until", Some(s(lease)))]);
                let cond = e.eq("owner", s(my_token()));
                c.update_item()
                    .table_name(t)
                    .set_key(Some(key(&pk, "RUN")))
                    .update_expression(set)
                    .condition_expression(cond)
                    .set_expression_attribute_names(e.names())
                    .set_expression_attribute_values(e.values())
                    .return_values(ReturnValue::AllNew)
                    .send()
                    .await
            }
        });
        match out {
            Ok(o) => {
                used(1);
                Ok(o.attributes().and_then(|a| text(a, "cancel_requested_by")).map(str::to_string))
            }
            Err(e) if e.as_service_error().is_some_and(|x| x.is_conditional_check_failed_exception()) => {
                Err(self.lease_lost(run_id))
            }
            Err(e) => Err(self.remote(sdk("UpdateItem", e))),
        }
    }

    fn finish_with(&mut self, run_id: &str, state: RunState, notes: &[NewNotification]) -> Result<(), StoreError> {
        let pk = run_pk(run_id);
        let now = ts(Utc::now());
        let mine: &dyn Fn(&mut Expr) -> String = &|e| e.eq("owner", s(my_token()));
        let end = update(
            &self.table,
            &pk,
            "RUN",
            &[
                ("state", Some(s(state.name()))),
                ("ended_at", Some(s(&now))),
                ("owner", None),
                ("lease_until", None),
                ("cancel_requested_at", None),
                ("cancel_requested_by", None),
                ("live", None),
            ],
            Some(mine),
        );
        let mut notes: Vec<TransactWriteItem> =
            self.new_notes(notes.iter())?.into_iter().map(|item| put(&self.table, item, None)).collect();
        // A run's end and its notifications are one transaction; those beyond what it holds
        // are written first (a crash before the end leaves them pending, and the resumed
        // run's end does not write them twice).
        if notes.len() >= MAX_TRANSACTION {
            let early = notes.split_off(MAX_TRANSACTION - 1);
            self.commit_owned(run_id, early.into_iter().map(|i| vec![i]).collect())?;
        }
        let mut items = vec![end];
        items.extend(notes);
        match self.commit(items)? {
            Ok(()) => {}
            Err(e) if e.condition_failed(0) => return Err(self.lease_lost(run_id)),
            Err(e) => return Err(self.remote(e.to_string())),
        }
        cartflow_jobs::crash::point("store.finished");
        Ok(())
    }

    fn set_fact(&self, run_id: &str, task_id: &str, key_: &str, value: &str) -> Result<(), StoreError> {
        let mut item = key(&run_pk(run_id), &format!("FACT#{task_id}#{key_}"));
        item.insert("task".into(), s(task_id));
        item.insert("key".into(), s(key_));
        item.insert("value".into(), s(value));
        // Conditional on owning the run, as every write of an execution: a process that lost
        // its lease never overwrites the job run id the new owner saved.
        self.commit_owned(run_id, vec![vec![put(&self.table, item, None)]])
    }

    fn clear_fact(&self, run_id: &str, task_id: &str, key_: &str) -> Result<(), StoreError> {
        self.commit_owned(run_id, vec![vec![delete(&self.table, &run_pk(run_id), &format!("FACT#{task_id}#{key_}"))]])
    }

    fn fact(&self, run_id: &str, task_id: &str, key_: &str) -> Result<Option<String>, StoreError> {
        let (pk, sk) = (run_pk(run_id), format!("FACT#{task_id}#{key_}"));
        let item = self.call(move |c, t| async move { get(&c, &t, &pk, &sk).await })?;
        Ok(item.and_then(|i| text(&i, "value").map(str::to_string)))
    }

    fn open_backfill(&self, request: &str) -> Result<Option<(String, Vec<BackfillRunRow>)>, StoreError> {
        let pointer = format!("BFOPEN#{}", request_hash(request));
        let open = self.call(move |c, t| async move { get(&c, &t, &pointer, "OPEN").await })?;
        let Some(id) = open.and_then(|i| text(&i, "backfill_id").map(str::to_string)) else {
            return Ok(None);
        };
        let pk = format!("BACKFILL#{id}");
        let mut runs = self.call(move |c, t| async move { items_of(&c, &t, &pk, "RUN#").await })?;
        runs.sort_by_key(|r| num::<u64>(r, "pos").unwrap_or(u64::MAX));
        let rows = runs
            .iter()
            .map(|r| {
                (
                    text(r, "run_id").unwrap_or("").to_string(),
                    text(r, "action").unwrap_or("").to_string(),
                    text(r, "state").map(str::to_string),
                )
            })
            .collect();
        Ok(Some((id, rows)))
    }

    fn create_backfill(&mut self, dag_id: &str, request: &str, runs: &[(String, &str)]) -> Result<String, StoreError> {
        let now = Utc::now();
        let id = format!("{dag_id}:{}", now.format("%Y%m%dT%H%M%S%.6fZ"));
        let pk = format!("BACKFILL#{id}");
        // The runs first (a job whose pointer was never written is never continued), then the
        // job and the pointer to it, together.
        let items: Vec<Item> = runs
            .iter()
            .enumerate()
            .map(|(pos, (run_id, action))| {
                let mut i = key(&pk, &format!("RUN#{run_id}"));
                i.insert("run_id".into(), s(run_id));
                i.insert("pos".into(), n(pos));
                i.insert("action".into(), s(*action));
                i
            })
            .collect();
        for chunk in items.chunks(MAX_TRANSACTION) {
            let actions = chunk.iter().map(|i| put(&self.table, i.clone(), None)).collect();
            if let Err(e) = self.commit(actions)? {
                return Err(self.remote(e.to_string()));
            }
        }
        let mut job = key(&pk, "JOB");
        job.insert("dag".into(), s(dag_id));
        job.insert("request".into(), s(request));
        job.insert("created_at".into(), s(ts(now)));
        let mut pointer = key(&format!("BFOPEN#{}", request_hash(request)), "OPEN");
        pointer.insert("backfill_id".into(), s(&id));
        let mut e = Expr::default();
        let new = e.absent("pk");
        let items = vec![
            put(&self.table, job, None),
            put(&self.table, pointer, Some((&new, &e))),
            put(&self.table, listing(&id, now), None),
        ];
        match self.commit(items)? {
            Ok(()) => {}
            Err(e) if e.condition_failed(1) => {
                return Err(self.remote(format!(
                    "another backfill of this request was recorded at the same time ({request}); run the command again to continue it"
                )));
            }
            Err(e) => return Err(self.remote(e.to_string())),
        }
        cartflow_jobs::crash::point("store.backfill_created");
        Ok(id)
    }

    fn backfill_run_done(&self, backfill_id: &str, run_id: &str, state: &str) -> Result<(), StoreError> {
        let item = update(
            &self.table,
            &format!("BACKFILL#{backfill_id}"),
            &format!("RUN#{run_id}"),
            &[("state", Some(s(state)))],
            None,
        );
        if let Err(e) = self.commit(vec![item])? {
            return Err(self.remote(e.to_string()));
        }
        cartflow_jobs::crash::point("store.backfill_run_done");
        Ok(())
    }

    fn finish_backfill(&self, backfill_id: &str) -> Result<(), StoreError> {
        let pk = format!("BACKFILL#{backfill_id}");
        let job = self.call({
            let pk = pk.clone();
            move |c, t| async move { get(&c, &t, &pk, "JOB").await }
        })?;
        let request = job.as_ref().and_then(|j| text(j, "request")).unwrap_or("").to_string();
        let items = vec![
            update(&self.table, &pk, "JOB", &[("finished_at", Some(s(ts(Utc::now()))))], None),
            delete(&self.table, &format!("BFOPEN#{}", request_hash(&request)), "OPEN"),
        ];
        if let Err(e) = self.commit(items)? {
            return Err(self.remote(e.to_string()));
        }
        cartflow_jobs::crash::point("store.backfill_finished");
        Ok(())
    }

    fn paused(&self) -> Result<crate::engine::store::Paused, StoreError> {
        let items = self.call(move |c, t| async move {
            query(&c, &t, None, "#pk = :pk", vec![(":pk", s(PAUSE_PK))], true, None).await
        })?;
        Ok(items
            .iter()
            .filter(|i| flag(i, "paused"))
            .map(|i| {
                (
                    text(i, "sk").unwrap_or("").to_string(),
                    (time(i, "paused_at"), text(i, "who").unwrap_or("").to_string()),
                )
            })
            .collect())
    }

    fn last_pause(&self, dag_id: &str) -> Result<Option<crate::engine::store::PauseSpan>, StoreError> {
        let sk = dag_id.to_string();
        let item = self.call(move |c, t| async move { get(&c, &t, PAUSE_PK, &sk).await })?;
        Ok(item.and_then(|i| Some((time(&i, "span_paused_at"), time(&i, "unpaused_at")?))))
    }

    fn marked_skipped(&self, run_id: &str) -> Result<HashSet<String>, StoreError> {
        let pk = run_pk(run_id);
        let marks = self.call(move |c, t| async move { items_of(&c, &t, &pk, "MARK#").await })?;
        Ok(marks
            .iter()
            .filter(|m| text(m, "mark") == Some(Mark::Skipped.name()))
            .filter_map(|m| text(m, "task").map(str::to_string))
            .collect())
    }

    fn mark(&mut self, run_id: &str, task_id: &str, mark: Mark, who: &str) -> Result<Marked, MarkError> {
        let pk = run_pk(run_id);
        let now = Utc::now();
        let (run, stored) = self.call({
            let pk = pk.clone();
            move |c, t| async move {
                let run = get(&c, &t, &pk, "RUN").await?;
                let tasks = items_of(&c, &t, &pk, "TASK#").await?;
                Ok((run, tasks))
            }
        })?;
        let Some(run) = run else {
            return Err(StoreError::NoSuchRun { run_id: run_id.to_string() }.into());
        };
        let owner = text(&run, "owner").map(str::to_string);
        if let Some(o) = &owner
            && owner_alive(o, time(&run, "lease_until"))
        {
            return Err(StoreError::RunBusy { run_id: run_id.to_string(), pid: describe_owner(o) }.into());
        }
        let current = text(&run, "state").unwrap_or("").to_string();
        let mut states: Vec<(String, TaskState, u32)> = Vec::new();
        for item in &stored {
            let task = text(item, "task").unwrap_or("").to_string();
            let state: TaskState = serde_json::from_str(text(item, "state_json").unwrap_or(""))
                .map_err(|e| self.corrupt(format!("task {task} of {run_id}: {e}")))?;
            states.push((task, state, num(item, "attempts").unwrap_or(0)));
        }
        let (_, from, new, decided) = apply_mark(run_id, task_id, mark, &mut states, now)?;
        let parsed = RunState::parse(&current)
            .ok_or_else(|| self.corrupt(format!("run {run_id}: unknown state `{current}`")))?;
        let run_state = decided.unwrap_or(parsed);
        let stamp = ts(now);
        // Conditional on the run as read: no process took it since, its state unchanged.
        let (owner_c, state_c) = (owner.clone(), current.clone());
        let cond = move |e: &mut Expr| {
            let who = match &owner_c {
                Some(o) => e.eq("owner", s(o)),
                None => e.absent("owner"),
            };
            format!("{who} AND {}", e.eq("state", s(&state_c)))
        };
        let mut fields: Vec<(&str, Option<AttributeValue>)> = Vec::new();
        if run_state != parsed {
            fields.push(("state", Some(s(run_state.name()))));
            fields.push(("ended_at", Some(s(&stamp))));
        } else {
            fields.push(("state", Some(s(&current))));
        }
        let run_write = update(&self.table, &pk, "RUN", &fields, Some(&cond));
        let task_write = update(
            &self.table,
            &pk,
            &format!("TASK#{task_id}"),
            &[
                ("state", Some(s(new.name()))),
                ("state_json", Some(s(serde_json::to_string(&new).unwrap_or_default()))),
                ("updated_at", Some(s(&stamp))),
            ],
            None,
        );
        let mut last = key(&pk, &format!("MARK#{task_id}"));
        last.insert("task".into(), s(task_id));
        last.insert("mark".into(), s(mark.name()));
        last.insert("at".into(), s(&stamp));
        let detail = format!("{from} -> {}", mark.name());
        let action = format!("mark_{}", mark.name());
        let dag_id = text(&run, "dag").unwrap_or("").to_string();
        let entry =
            audit_item(&NewAudit { who, action: &action, dag_id: &dag_id, run_id, task_id, detail: &detail }, now);
        let items = vec![run_write, task_write, put(&self.table, last, None), put(&self.table, entry, None)];
        match self.commit(items)? {
            Ok(()) => Ok(Marked { from, run_state }),
            Err(e) if e.condition_failed(0) => Err(self
                .remote(format!(
                    "run {run_id} changed while it was being marked (another process claimed it?); look and mark again"
                ))
                .into()),
            Err(e) => Err(self.remote(e.to_string()).into()),
        }
    }

    fn record_audit(&self, a: &NewAudit<'_>) -> Result<(), StoreError> {
        let item = audit_item(a, Utc::now());
        self.call(move |c, t| async move {
            c.put_item().table_name(t).set_item(Some(item)).send().await.map(|_| used(1)).map_err(|e| sdk("PutItem", e))
        })
    }

    fn audit(&self, run_id: Option<&str>, limit: usize) -> Result<Vec<AuditRow>, StoreError> {
        let items = self.call(move |c, t| async move {
            query(&c, &t, None, "#pk = :pk", vec![(":pk", s(AUDIT_PK))], false, None).await
        })?;
        Ok(items
            .iter()
            .filter(|i| run_id.is_none_or(|r| text(i, "run_id") == Some(r)))
            .take(limit)
            .map(|i| AuditRow {
                id: num(i, "id").unwrap_or(0),
                at: time(i, "at"),
                who: text(i, "who").unwrap_or("").to_string(),
                action: text(i, "action").unwrap_or("").to_string(),
                dag_id: text(i, "dag_id").unwrap_or("").to_string(),
                run_id: text(i, "run_id").unwrap_or("").to_string(),
                task_id: text(i, "task_id").unwrap_or("").to_string(),
                detail: text(i, "detail").unwrap_or("").to_string(),
            })
            .collect())
    }

    fn set_paused(&mut self, dag_id: &str, paused: bool, who: &str) -> Result<bool, StoreError> {
        let now = Utc::now();
        let sk = dag_id.to_string();
        let current = self.call(move |c, t| async move { get(&c, &t, PAUSE_PK, &sk).await })?;
        let was = current.as_ref().is_some_and(|i| flag(i, "paused"));
        if was == paused {
            return Ok(false);
        }
        let mut item = current.clone().unwrap_or_else(|| key(PAUSE_PK, dag_id));
        item.insert("paused".into(), AttributeValue::Bool(paused));
        item.insert("who".into(), s(who));
        if paused {
            item.insert("paused_at".into(), s(ts(now)));
        } else {
            // The span that ends now: what `last_pause` answers (deadlines in it are not raised).
            match current.as_ref().and_then(|i| text(i, "paused_at")) {
                Some(at) => item.insert("span_paused_at".into(), s(at)),
                None => item.remove("span_paused_at"),
            };
            item.insert("unpaused_at".into(), s(ts(now)));
        }
        // Conditional on what was read: another `pause` at the same instant changes it once.
        let mut e = Expr::default();
        let cond = if current.is_none() {
            e.absent("pk")
        } else {
            let v = e.value(AttributeValue::Bool(was));
            format!("{} = {v}", e.name("paused"))
        };
        let action = if paused { "pause" } else { "unpause" };
        let entry = audit_item(&NewAudit { who, action, dag_id, ..NewAudit::default() }, now);
        match self.commit(vec![put(&self.table, item, Some((&cond, &e))), put(&self.table, entry, None)])? {
            Ok(()) => Ok(true),
            Err(e) if e.condition_failed(0) => Ok(false),
            Err(e) => Err(self.remote(e.to_string())),
        }
    }

    fn request_cancel(&mut self, run_id: &str, who: &str) -> Result<CancelRequested, CancelError> {
        let pk = run_pk(run_id);
        for _ in 0..5 {
            let run = self.call({
                let pk = pk.clone();
                move |c, t| async move { get(&c, &t, &pk, "RUN").await }
            })?;
            let Some(run) = run else {
                return Err(StoreError::NoSuchRun { run_id: run_id.to_string() }.into());
            };
            let state = text(&run, "state").unwrap_or("").to_string();
            if state != RunState::Running.name() {
                return Err(CancelError::NotRunning { run_id: run_id.to_string(), state });
            }
            if !self.is_live(&run) {
                return Err(CancelError::Orphaned { run_id: run_id.to_string() });
            }
            let owner = text(&run, "owner").unwrap_or("").to_string();
            let pid = describe_owner(&owner);
            let already_by = text(&run, "cancel_requested_by").map(str::to_string);
            if already_by.is_some() {
                return Ok(CancelRequested { pid, already_by });
            }
            let now = Utc::now();
            let stamp = ts(now);
            let (owner_c, state_c) = (owner.clone(), state.clone());
            let cond = move |e: &mut Expr| {
                format!(
                    "{} AND {} AND {}",
                    e.eq("owner", s(&owner_c)),
                    e.eq("state", s(&state_c)),
                    e.absent("cancel_requested_by")
                )
            };
            let ask = update(
                &self.table,
                &pk,
                "RUN",
                &[("cancel_requested_at", Some(s(&stamp))), ("cancel_requested_by", Some(s(who)))],
                Some(&cond),
            );
            let dag_id = text(&run, "dag").unwrap_or("").to_string();
            let detail = format!("asked process {pid} to stop the run");
            let entry = audit_item(
                &NewAudit { who, action: "cancel", dag_id: &dag_id, run_id, detail: &detail, ..NewAudit::default() },
                now,
            );
            match self.commit(vec![ask, put(&self.table, entry, None)])? {
                Ok(()) => return Ok(CancelRequested { pid, already_by: None }),
                // The run changed between the read and the write (it ended, another cancel):
                // read it again.
                Err(e) if e.condition_failed(0) => continue,
                Err(e) => return Err(self.remote(e.to_string()).into()),
            }
        }
        Err(self.remote(format!("run {run_id} kept changing while a cancel was asked for; ask again")).into())
    }

    fn deadlines(&self, run_id: &str) -> Result<Vec<DeadlineRow>, StoreError> {
        let pk = run_pk(run_id);
        let items = self.call(move |c, t| async move { items_of(&c, &t, &pk, "DEADLINE#").await })?;
        let mut rows: Vec<DeadlineRow> = items
            .iter()
            .map(|i| {
                let task = text(i, "task").unwrap_or("");
                DeadlineRow {
                    run_id: run_id.to_string(),
                    dag_id: text(i, "dag").unwrap_or("").to_string(),
                    task_id: (!task.is_empty()).then(|| task.to_string()),
                    deadline_at: time(i, "deadline_at").unwrap_or_default(),
                    missed: flag(i, "missed"),
                    reason: text(i, "reason").map(str::to_string),
                    decided_at: time(i, "decided_at").unwrap_or_default(),
                }
            })
            .collect();
        rows.sort_by(|a, b| a.task_id.cmp(&b.task_id));
        Ok(rows)
    }

    fn decided_deadlines(&self, dag_id: &str, from: DateTime<Utc>) -> Result<HashSet<(String, String)>, StoreError> {
        let pk = format!("DEADLINES#{dag_id}");
        let items = self.call(move |c, t| async move {
            query(&c, &t, None, "#pk = :pk AND #sk >= :from", vec![(":pk", s(pk)), (":from", s(ts(from)))], true, None)
                .await
        })?;
        Ok(items
            .iter()
            .map(|i| (text(i, "run_id").unwrap_or("").to_string(), text(i, "task").unwrap_or("").to_string()))
            .collect())
    }

    fn runs_ending_between(
        &self,
        dag_id: &str,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<Vec<RunRow>, StoreError> {
        // The index is by interval start: an interval ending in the window started at most
        // a year before it (the longest interval a schedule has).
        let (dag, lo, hi) = (dag_id.to_string(), ts(from - chrono::Duration::days(366)), ts(to));
        let items = self.call(move |c, t| async move {
            query(
                &c,
                &t,
                Some("by_dag"),
                "#dag = :d AND #start BETWEEN :lo AND :hi",
                vec![(":d", s(dag)), (":lo", s(lo)), (":hi", s(hi))],
                true,
                None,
            )
            .await
        })?;
        let mut out = Vec::new();
        for i in &items {
            let row = self.run_row(i)?;
            if row.interval_end >= from && row.interval_end <= to {
                out.push(row);
            }
        }
        Ok(out)
    }

    fn record_deadlines(
        &mut self,
        decisions: &[(DeadlineRow, Vec<NewNotification>)],
    ) -> Result<Vec<DeadlineRow>, StoreError> {
        let mut new = Vec::new();
        for (d, notes) in decisions {
            let task = d.task_id.clone().unwrap_or_default();
            let mut by_run = key(&run_pk(&d.run_id), &format!("DEADLINE#{task}"));
            by_run.insert("dag".into(), s(&d.dag_id));
            by_run.insert("task".into(), s(&task));
            by_run.insert("deadline_at".into(), s(ts(d.deadline_at)));
            by_run.insert("missed".into(), AttributeValue::Bool(d.missed));
            by_run.insert("decided_at".into(), s(ts(d.decided_at)));
            if let Some(r) = &d.reason {
                by_run.insert("reason".into(), s(r));
            }
            let mut by_dag =
                key(&format!("DEADLINES#{}", d.dag_id), &format!("{}#{}#{task}", ts(d.deadline_at), d.run_id));
            by_dag.insert("run_id".into(), s(&d.run_id));
            by_dag.insert("task".into(), s(&task));
            // Decided once: a decision another process recorded first is kept, and its
            // notifications are not raised again.
            let mut e = Expr::default();
            let first = e.absent("pk");
            let mut items = vec![put(&self.table, by_run, Some((&first, &e))), put(&self.table, by_dag, None)];
            items.extend(
                self.new_notes(notes.iter())?
                    .into_iter()
                    .take(MAX_TRANSACTION - 2)
                    .map(|item| put(&self.table, item, None)),
            );
            match self.commit(items)? {
                Ok(()) => new.push(d.clone()),
                Err(e) if e.condition_failed(0) => {}
                Err(e) => return Err(self.remote(e.to_string())),
            }
        }
        Ok(new)
    }

    fn undelivered_notifications(
        &self,
        run_id: Option<&str>,
        since: Option<DateTime<Utc>>,
    ) -> Result<Vec<(String, String)>, StoreError> {
        let mut notes = match run_id {
            Some(run_id) => {
                let pk = run_pk(run_id);
                self.call(move |c, t| async move { items_of(&c, &t, &pk, "NOTE#").await })?
            }
            // Every run's, from the sparse index of the undelivered ones.
            None => {
                let since = ts(since.unwrap_or_default());
                self.call(move |c, t| async move {
                    query(
                        &c,
                        &t,
                        Some(OUTBOX),
                        "#outbox = :o AND #created_at >= :since",
                        vec![(":o", s(OUTBOX)), (":since", s(since))],
                        true,
                        None,
                    )
                    .await
                })?
            }
        };
        notes.sort_by(|a, b| text(a, "created_at").cmp(&text(b, "created_at")));
        Ok(notes
            .iter()
            .filter(|i| matches!(text(i, "state"), Some("pending" | "sending")))
            .filter(|i| since.is_none_or(|t| time(i, "created_at").is_some_and(|c| c >= t)))
            .map(|i| (text(i, "key").unwrap_or("").to_string(), text(i, "target").unwrap_or("").to_string()))
            .collect())
    }

    fn claim_notification(&mut self, key_: &str, target: &str) -> Result<Option<NotificationRow>, StoreError> {
        let (pk, sk) = (run_pk(run_of_key(key_)), format!("NOTE#{key_}#{target}"));
        let item = self.call({
            let (pk, sk) = (pk.clone(), sk.clone());
            move |c, t| async move { get(&c, &t, &pk, &sk).await }
        })?;
        let Some(item) = item else { return Ok(None) };
        let (state, owner) = (text(&item, "state").unwrap_or(""), text(&item, "owner"));
        let ours = owner == Some(my_token());
        // A process of another host (whose pid means nothing here) is alive while it holds the
        // run the notification belongs to: its lease says so.
        let dead = match owner {
            None => true,
            Some(_) if ours => false,
            Some(o) => !owner_alive(o, None) && !self.holds_run(o, run_of_key(key_))?,
        };
        let claimable = match state {
            "pending" => ours || dead,
            "sending" => dead,
            _ => false,
        };
        if !claimable {
            return Ok(None);
        }
        // From the state and owner read: a second claimer's update finds them changed.
        let (was, held) = (state.to_string(), owner.map(str::to_string));
        let read: &dyn Fn(&mut Expr) -> String = &|e| {
            let st = e.eq("state", s(&was));
            match &held {
                Some(o) => format!("{st} AND {}", e.eq("owner", s(o))),
                None => format!("{st} AND {}", e.absent("owner")),
            }
        };
        let claim = update(
            &self.table,
            &pk,
            &sk,
            &[("state", Some(s(DeliveryState::Sending.name()))), ("owner", Some(s(my_token())))],
            Some(read),
        );
        match self.commit(vec![claim])? {
            Ok(()) => {}
            Err(e) if e.condition_failed(0) => return Ok(None),
            Err(e) => return Err(self.remote(e.to_string())),
        }
        let mut row = self.notification_row(&item)?;
        row.state = DeliveryState::Sending;
        Ok(Some(row))
    }

    fn record_delivery(&self, key_: &str, target: &str, tries: u32, d: &Delivery) -> Result<(), StoreError> {
        let (state, error, sent_at) = match d {
            Delivery::Sent => (DeliveryState::Sent, None, Some(ts(Utc::now()))),
            Delivery::Retrying(e) => (DeliveryState::Sending, Some(e.clone()), None),
            Delivery::Failed(e) => (DeliveryState::Failed, Some(e.clone()), None),
        };
        let item = update(
            &self.table,
            &run_pk(run_of_key(key_)),
            &format!("NOTE#{key_}#{target}"),
            &[
                ("state", Some(s(state.name()))),
                ("tries", Some(n(tries))),
                ("error", error.map(s)),
                ("sent_at", sent_at.map(s)),
                // Sent or given up: out of the outbox index.
                (OUTBOX, matches!(state, DeliveryState::Sending).then(|| s(OUTBOX))),
            ],
            Some(&|e: &mut Expr| e.eq("owner", s(my_token()))),
        );
        match self.commit(vec![item])? {
            Ok(()) => Ok(()),
            // Another process took the delivery over (this one was thought dead): its record stands.
            Err(e) if e.condition_failed(0) => Ok(()),
            Err(e) => Err(self.remote(e.to_string())),
        }
    }

    fn notifications(&self, run_id: &str) -> Result<Vec<NotificationRow>, StoreError> {
        let pk = run_pk(run_id);
        let mut notes = self.call(move |c, t| async move { items_of(&c, &t, &pk, "NOTE#").await })?;
        notes.sort_by(|a, b| text(a, "created_at").cmp(&text(b, "created_at")));
        notes.iter().map(|i| self.notification_row(i)).collect()
    }

    fn runs_between(
        &self,
        dag_id: &str,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<Vec<(RunRow, bool)>, StoreError> {
        let values = vec![(":d", s(dag_id)), (":f", s(ts(from))), (":t", s(ts(to)))];
        let items = self.call(move |c, t| async move {
            query(&c, &t, Some("by_dag"), "#dag = :d AND #start BETWEEN :f AND :t", values, true, None).await
        })?;
        let mut out = Vec::new();
        for item in items.iter().filter(|i| time(i, "start").is_some_and(|s| s < to)) {
            out.push((self.run_row(item)?, self.is_live(item)));
        }
        Ok(out)
    }

    fn first_run_start(&self, dag_id: &str) -> Result<Option<DateTime<Utc>>, StoreError> {
        let d = s(dag_id);
        let items = self.call(move |c, t| async move {
            query(&c, &t, Some("by_dag"), "#dag = :d", vec![(":d", d)], true, Some(1)).await
        })?;
        Ok(items.first().and_then(|i| time(i, "start")))
    }

    fn last_run_start(&self, dag_id: &str) -> Result<Option<DateTime<Utc>>, StoreError> {
        let d = s(dag_id);
        let items = self.call(move |c, t| async move {
            query(&c, &t, Some("by_dag"), "#dag = :d", vec![(":d", d)], false, Some(1)).await
        })?;
        Ok(items.first().and_then(|i| time(i, "start")))
    }

    fn live_runs(&self, dag_id: &str) -> Result<Vec<String>, StoreError> {
        let d = s(dag_id);
        let items = self.call(move |c, t| async move {
            query(&c, &t, Some("live"), "#live = :d", vec![(":d", d)], true, None).await
        })?;
        Ok(items
            .iter()
            .filter(|i| self.is_live(i))
            .filter_map(|i| text(i, "pk").and_then(|p| p.strip_prefix("RUN#")).map(str::to_string))
            .collect())
    }

    fn runs(&self, dag_id: Option<&str>, limit: usize) -> Result<Vec<RunRow>, StoreError> {
        let (index, cond, v) = match dag_id {
            Some(d) => ("by_dag", "#dag = :k", s(d)),
            None => ("all_runs", "#kind = :k", s("run")),
        };
        let items = self.call(move |c, t| async move {
            query(&c, &t, Some(index), cond, vec![(":k", v)], false, Some(limit.max(1))).await
        })?;
        let mut rows = items.iter().map(|i| self.run_row(i)).collect::<Result<Vec<_>, _>>()?;
        rows.sort_by(|a, b| b.interval_start.cmp(&a.interval_start).then_with(|| a.dag_id.cmp(&b.dag_id)));
        rows.truncate(limit);
        Ok(rows)
    }

    fn run(&self, run_id: &str) -> Result<Option<RunRow>, StoreError> {
        let pk = run_pk(run_id);
        let item = self.call(move |c, t| async move { get(&c, &t, &pk, "RUN").await })?;
        item.map(|i| self.run_row(&i)).transpose()
    }

    fn tasks(&self, run_id: &str) -> Result<Vec<TaskRow>, StoreError> {
        let pk = run_pk(run_id);
        let mut items = self.call(move |c, t| async move { items_of(&c, &t, &pk, "TASK#").await })?;
        items.sort_by_key(|i| num::<u64>(i, "pos").unwrap_or(u64::MAX));
        items
            .iter()
            .map(|i| {
                let task_id = text(i, "task").unwrap_or("").to_string();
                let state = serde_json::from_str(text(i, "state_json").unwrap_or(""))
                    .map_err(|e| self.corrupt(format!("{task_id}: {e}")))?;
                Ok(TaskRow { task_id, state, attempts: num(i, "attempts").unwrap_or(0) })
            })
            .collect()
    }

    fn attempts(&self, run_id: &str, task_id: Option<&str>) -> Result<Vec<AttemptRow>, StoreError> {
        let pk = run_pk(run_id);
        let prefix = match task_id {
            Some(t) => format!("ATTEMPT#{t}#"),
            None => "ATTEMPT#".to_string(),
        };
        let items = self.call(move |c, t| async move { items_of(&c, &t, &pk, &prefix).await })?;
        let mut out = Vec::new();
        for i in &items {
            let task_id = text(i, "task").unwrap_or("").to_string();
            let attempt = num(i, "attempt").unwrap_or(0);
            let state = text(i, "state").unwrap_or("");
            let state = AttemptState::parse(state).ok_or_else(|| {
                self.corrupt(format!("attempt {attempt} of {task_id} in {run_id}: unknown state `{state}`"))
            })?;
            let started_at = time(i, "started_at")
                .ok_or_else(|| self.corrupt(format!("attempt {attempt} of {task_id} in {run_id}: no start time")))?;
            out.push(AttemptRow {
                task_id,
                attempt,
                state,
                started_at,
                ended_at: time(i, "ended_at"),
                error: text(i, "error").map(str::to_string),
                exit_code: num(i, "exit_code"),
                summary: text(i, "summary").map(str::to_string),
                log_path: text(i, "log_path").map(str::to_string),
            });
        }
        out.sort_by(|a, b| a.task_id.cmp(&b.task_id).then(a.attempt.cmp(&b.attempt)));
        Ok(out)
    }

    fn schema_version(&self) -> Result<i64, StoreError> {
        Ok(1)
    }

    fn export(&self, out: Sink<'_>) -> Result<(), StoreError> {
        let runs = self.call(move |c, t| async move {
            query(&c, &t, Some("all_runs"), "#kind = :k", vec![(":k", s("run"))], true, None).await
        })?;
        for run in &runs {
            let head = self.run_row(run)?;
            if self.is_live(run) {
                let owner = text(run, "owner").map(describe_owner).unwrap_or_default();
                return Err(StoreError::RunBusy { run_id: head.run_id, pid: owner });
            }
            let pk = run_pk(&head.run_id);
            let items = self.call(move |c, t| async move { partition(&c, &t, &pk).await })?;
            fn of<'a>(items: &'a [Item], prefix: &'static str) -> impl Iterator<Item = &'a Item> + 'a {
                items.iter().filter(move |i| text(i, "sk").is_some_and(|k| k.starts_with(prefix)))
            }
            let mut tasks: Vec<(u64, TaskRecord)> = of(&items, "TASK#")
                .map(|i| {
                    let rec = TaskRecord {
                        task_id: text(i, "task").unwrap_or("").to_string(),
                        state_json: text(i, "state_json").unwrap_or("").to_string(),
                        attempts: num(i, "attempts").unwrap_or(0),
                        failures: num(i, "failures").unwrap_or(0),
                        updated_at: text(i, "updated_at").unwrap_or("").to_string(),
                    };
                    (num::<u64>(i, "pos").unwrap_or(u64::MAX), rec)
                })
                .collect();
            tasks.sort_by_key(|t| t.0);
            let opt = |i: &Item, k: &str| text(i, k).map(str::to_string);
            let mut attempts: Vec<AttemptRecord> = of(&items, "ATTEMPT#")
                .map(|i| AttemptRecord {
                    task_id: text(i, "task").unwrap_or("").to_string(),
                    attempt: num(i, "attempt").unwrap_or(0),
                    state: text(i, "state").unwrap_or("").to_string(),
                    started_at: text(i, "started_at").unwrap_or("").to_string(),
                    ended_at: opt(i, "ended_at"),
                    error: opt(i, "error"),
                    exit_code: num(i, "exit_code"),
                    summary: opt(i, "summary"),
                    log_path: opt(i, "log_path"),
                })
                .collect();
            attempts.sort_by(|a, b| a.task_id.cmp(&b.task_id).then(a.attempt.cmp(&b.attempt)));
            let mut facts: Vec<FactRecord> = of(&items, "FACT#")
                .map(|i| FactRecord {
                    task_id: text(i, "task").unwrap_or("").to_string(),
                    key: text(i, "key").unwrap_or("").to_string(),
                    value: text(i, "value").unwrap_or("").to_string(),
                })
                .collect();
            facts.sort_by(|a, b| a.task_id.cmp(&b.task_id).then(a.key.cmp(&b.key)));
            let mut notifications: Vec<NotificationRecord> = of(&items, "NOTE#")
                .map(|i| NotificationRecord {
                    dedupe_key: text(i, "key").unwrap_or("").to_string(),
                    target: text(i, "target").unwrap_or("").to_string(),
                    event: text(i, "event").unwrap_or("").to_string(),
                    spec: text(i, "spec").unwrap_or("").to_string(),
                    body: text(i, "body").unwrap_or("").to_string(),
                    state: text(i, "state").unwrap_or("").to_string(),
                    tries: num(i, "tries").unwrap_or(0),
                    error: opt(i, "error"),
                    created_at: text(i, "created_at").unwrap_or("").to_string(),
                    sent_at: opt(i, "sent_at"),
                })
                .collect();
            notifications.sort_by(|a, b| a.dedupe_key.cmp(&b.dedupe_key).then(a.target.cmp(&b.target)));
            out(Record::Run(Box::new(RunRecord {
                run_id: head.run_id,
                dag_id: head.dag_id,
                interval_start: text(run, "start").unwrap_or("").to_string(),
                interval_end: text(run, "end").unwrap_or("").to_string(),
                state: text(run, "state").unwrap_or("").to_string(),
                trigger: text(run, "trigger").unwrap_or("").to_string(),
                created_at: text(run, "created_at").unwrap_or("").to_string(),
                started_at: opt(run, "started_at"),
                ended_at: opt(run, "ended_at"),
                tasks: tasks.into_iter().map(|(_, t)| t).collect(),
                attempts,
                facts,
                notifications,
            })))?;
        }
        // Backfill jobs, from their listing partition.
        let listed = self.call(move |c, t| async move {
            query(&c, &t, None, "#pk = :pk", vec![(":pk", s(BACKFILLS_PK))], true, None).await
        })?;
        let mut items: Vec<Item> = Vec::new();
        for l in &listed {
            let pk = format!("BACKFILL#{}", text(l, "backfill_id").unwrap_or(""));
            items.extend(self.call(move |c, t| async move { partition(&c, &t, &pk).await })?);
        }
        let mut jobs: Vec<BackfillRecord> = Vec::new();
        for job in items.iter().filter(|i| text(i, "sk") == Some("JOB")) {
            let pk = text(job, "pk").unwrap_or("");
            let mut runs: Vec<&Item> = items
                .iter()
                .filter(|i| text(i, "pk") == Some(pk) && text(i, "sk").is_some_and(|k| k.starts_with("RUN#")))
                .collect();
            runs.sort_by_key(|r| num::<u64>(r, "pos").unwrap_or(u64::MAX));
            jobs.push(BackfillRecord {
                backfill_id: pk.trim_start_matches("BACKFILL#").to_string(),
                dag_id: text(job, "dag").unwrap_or("").to_string(),
                request: text(job, "request").unwrap_or("").to_string(),
                created_at: text(job, "created_at").unwrap_or("").to_string(),
                finished_at: text(job, "finished_at").map(str::to_string),
                runs: runs
                    .iter()
                    .map(|r| {
                        (
                            text(r, "run_id").unwrap_or("").to_string(),
                            text(r, "action").unwrap_or("").to_string(),
                            text(r, "state").map(str::to_string),
                        )
                    })
                    .collect(),
            });
        }
        jobs.sort_by(|a, b| a.created_at.cmp(&b.created_at).then(a.backfill_id.cmp(&b.backfill_id)));
        for j in jobs {
            out(Record::Backfill(j))?;
        }
        Ok(())
    }

    fn import(&mut self, r: &Record) -> Result<Imported, StoreError> {
        match r {
            Record::Header { .. } => Ok(Imported::AlreadyThere),
            Record::Run(run) => self.import_run(run),
            Record::Backfill(b) => self.import_backfill(b),
        }
    }
}

impl DynamoStore {
    /// A run's items, then the run item last, conditional on the run not existing: a run
    /// whose run item is there is complete, and one an import cut off is written again whole.
    fn import_run(&self, run: &RunRecord) -> Result<Imported, StoreError> {
        run.check().map_err(|what| self.corrupt(what))?;
        let pk = run_pk(&run.run_id);
        let there = self.call({
            let pk = pk.clone();
            move |c, t| async move { get(&c, &t, &pk, "RUN").await }
        })?;
        if there.is_some() {
            return Ok(Imported::AlreadyThere);
        }
        let opt = |item: &mut Item, k: &str, v: &Option<String>| {
            if let Some(v) = v {
                item.insert(k.to_string(), s(v));
            }
        };
        let mut items: Vec<Item> = Vec::new();
        for (pos, t) in run.tasks.iter().enumerate() {
            let mut item = key(&pk, &format!("TASK#{}", t.task_id));
            item.insert("task".into(), s(&t.task_id));
            item.insert("pos".into(), n(pos));
            item.insert("state".into(), s(RunRecord::task_state(t).name()));
            item.insert("state_json".into(), s(&t.state_json));
            item.insert("attempts".into(), n(t.attempts));
            item.insert("failures".into(), n(t.failures));
            item.insert("updated_at".into(), s(&t.updated_at));
            items.push(item);
        }
        for a in &run.attempts {
            let mut item = key(&pk, &attempt_sk(&a.task_id, a.attempt));
            item.insert("task".into(), s(&a.task_id));
            item.insert("attempt".into(), n(a.attempt));
            item.insert("state".into(), s(&a.state));
            item.insert("started_at".into(), s(&a.started_at));
            opt(&mut item, "ended_at", &a.ended_at);
            opt(&mut item, "error", &a.error);
            opt(&mut item, "summary", &a.summary);
            opt(&mut item, "log_path", &a.log_path);
            if let Some(code) = a.exit_code {
                item.insert("exit_code".into(), n(code));
            }
            items.push(item);
        }
        for f in &run.facts {
            let mut item = key(&pk, &format!("FACT#{}#{}", f.task_id, f.key));
            item.insert("task".into(), s(&f.task_id));
            item.insert("key".into(), s(&f.key));
            item.insert("value".into(), s(&f.value));
            items.push(item);
        }
        for no in &run.notifications {
            let mut item = key(&pk, &format!("NOTE#{}#{}", no.dedupe_key, no.target));
            for (k, v) in [
                ("key", &no.dedupe_key),
                ("target", &no.target),
                ("event", &no.event),
                ("spec", &no.spec),
                ("body", &no.body),
                ("state", &no.state),
                ("created_at", &no.created_at),
            ] {
                item.insert(k.into(), s(v));
            }
            item.insert("tries".into(), n(no.tries));
            opt(&mut item, "error", &no.error);
            opt(&mut item, "sent_at", &no.sent_at);
            if matches!(no.state.as_str(), "pending" | "sending") {
                item.insert(OUTBOX.into(), s(OUTBOX));
            }
            items.push(item);
        }
        for chunk in items.chunks(MAX_TRANSACTION) {
            let actions = chunk.iter().map(|i| put(&self.table, i.clone(), None)).collect();
            if let Err(e) = self.commit(actions)? {
                return Err(self.remote(e.to_string()));
            }
        }
        cartflow_jobs::crash::point("store.import_children");
        let mut item = key(&pk, "RUN");
        for (k, v) in [
            ("dag", &run.dag_id),
            ("start", &run.interval_start),
            ("end", &run.interval_end),
            ("state", &run.state),
            ("trigger", &run.trigger),
            ("created_at", &run.created_at),
        ] {
            item.insert(k.into(), s(v));
        }
        opt(&mut item, "started_at", &run.started_at);
        opt(&mut item, "ended_at", &run.ended_at);
        item.insert("kind".into(), s("run"));
        item.insert("start_id".into(), s(format!("{}#{}", run.interval_start, run.run_id)));
        let mut e = Expr::default();
        let new = e.absent("pk");
        match self.commit(vec![put(&self.table, item, Some((&new, &e)))])? {
            Ok(()) => Ok(Imported::Added),
            Err(e) if e.condition_failed(0) => Ok(Imported::AlreadyThere),
            Err(e) => Err(self.remote(e.to_string())),
        }
    }

    /// A backfill job's runs, then the job item (conditional on it not existing) with the
    /// pointer of an open one.
    fn import_backfill(&self, b: &BackfillRecord) -> Result<Imported, StoreError> {
        let pk = format!("BACKFILL#{}", b.backfill_id);
        let there = self.call({
            let pk = pk.clone();
            move |c, t| async move { get(&c, &t, &pk, "JOB").await }
        })?;
        if there.is_some() {
            return Ok(Imported::AlreadyThere);
        }
        let items: Vec<Item> = b
            .runs
            .iter()
            .enumerate()
            .map(|(pos, (run_id, action, state))| {
                let mut i = key(&pk, &format!("RUN#{run_id}"));
                i.insert("run_id".into(), s(run_id));
                i.insert("pos".into(), n(pos));
                i.insert("action".into(), s(action));
                if let Some(st) = state {
                    i.insert("state".into(), s(st));
                }
                i
            })
            .collect();
        for chunk in items.chunks(MAX_TRANSACTION) {
            let actions = chunk.iter().map(|i| put(&self.table, i.clone(), None)).collect();
            if let Err(e) = self.commit(actions)? {
                return Err(self.remote(e.to_string()));
            }
        }
        let mut job = key(&pk, "JOB");
        job.insert("dag".into(), s(&b.dag_id));
        job.insert("request".into(), s(&b.request));
        job.insert("created_at".into(), s(&b.created_at));
        if let Some(f) = &b.finished_at {
            job.insert("finished_at".into(), s(f));
        }
        let mut e = Expr::default();
        let new = e.absent("pk");
        b.check().map_err(|what| self.corrupt(what))?;
        let created = parse_ts(&b.created_at).unwrap_or_default();
        let mut actions =
            vec![put(&self.table, job, Some((&new, &e))), put(&self.table, listing(&b.backfill_id, created), None)];
        if b.finished_at.is_none() {
            let mut pointer = key(&format!("BFOPEN#{}", request_hash(&b.request)), "OPEN");
            pointer.insert("backfill_id".into(), s(&b.backfill_id));
            let mut e2 = Expr::default();
            let new2 = e2.absent("pk");
            actions.push(put(&self.table, pointer, Some((&new2, &e2))));
        }
        match self.commit(actions)? {
            Ok(()) => Ok(Imported::Added),
            Err(e) if e.condition_failed(0) => Ok(Imported::AlreadyThere),
            Err(e) if e.condition_failed(2) => Err(self.remote(format!(
                "backfill job {} is open, and this table has another open job of the same request; close one first",
                b.backfill_id
            ))),
            Err(e) => Err(self.remote(e.to_string())),
        }
    }
}

/// A backfill request's key, short enough for a partition key.
fn request_hash(request: &str) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(request.as_bytes()).iter().map(|b| format!("{b:02x}")).collect()
}

fn attr(name: &str) -> AttributeDefinition {
    AttributeDefinition::builder()
        .attribute_name(name)
        .attribute_type(ScalarAttributeType::S)
        .build()
        .expect("attribute")
}

fn key_schema(name: &str, t: KeyType) -> KeySchemaElement {
    KeySchemaElement::builder().attribute_name(name).key_type(t).build().expect("key")
}

fn index(name: &str, hash: &str, range: Option<&str>) -> GlobalSecondaryIndex {
    let mut keys = vec![key_schema(hash, KeyType::Hash)];
    keys.extend(range.map(|r| key_schema(r, KeyType::Range)));
    GlobalSecondaryIndex::builder()
        .index_name(name)
        .set_key_schema(Some(keys))
        .projection(Projection::builder().projection_type(ProjectionType::All).build())
        .build()
        .expect("index")
}

/// Creates the run-store table `name` with the layout infra/cartflow.yaml gives the real one
/// (tests and the engine benchmark: a table in the emulator).
pub async fn create_table(c: &Client, name: &str) -> Result<(), String> {
    c.create_table()
        .table_name(name)
        .billing_mode(BillingMode::PayPerRequest)
        .set_attribute_definitions(Some(
            ["pk", "sk", "dag", "start", "live", "kind", "start_id", "outbox", "created_at"]
                .iter()
                .map(|a| attr(a))
                .collect(),
        ))
        .key_schema(key_schema("pk", KeyType::Hash))
        .key_schema(key_schema("sk", KeyType::Range))
        .global_secondary_indexes(index("by_dag", "dag", Some("start")))
        .global_secondary_indexes(index("live", "live", None))
        .global_secondary_indexes(index("all_runs", "kind", Some("start_id")))
        .global_secondary_indexes(index(OUTBOX, OUTBOX, Some("created_at")))
        .send()
        .await
        .map(|_| ())
        .map_err(|e| format!("CreateTable: {}", aws_sdk_dynamodb::error::DisplayErrorContext(e)))
}

impl DynamoTable {
    /// The table `table` through `client` (tests and benchmarks: an emulator's endpoint,
    /// without the environment).
    pub fn with_client(table: &str, client: Client) -> DynamoTable {
        let lock = OnceLock::new();
        let _ = lock.set(client);
        DynamoTable { table: table.to_string(), logs: None, client: lock }
    }
}

/// A table in moto for tests, with the layout infra/cartflow.yaml gives the real one.
#[cfg(test)]
pub(crate) mod testing {
    use std::sync::Arc;

    use super::{DynamoTable, block, create_table};
    use crate::engine::store::StoreAt;
    use aws_sdk_dynamodb::Client;
    use aws_sdk_dynamodb::config::{BehaviorVersion, Credentials, Region};

    /// moto, and a fresh run-store table in it; moto stops on drop.
    #[derive(Debug)]
    pub(crate) struct Table {
        _moto: cartflow_e2e::Moto,
        /// The table's name.
        pub name: String,
        /// A client of moto.
        pub client: Client,
    }

    impl Table {
        /// Starts moto and creates the table (`None`: moto is not installed, outside CI).
        pub(crate) fn start() -> Option<Table> {
            let moto = cartflow_e2e::Moto::start()?;
            let conf = aws_sdk_dynamodb::Config::builder()
                .behavior_version(BehaviorVersion::latest())
                .region(Region::new("us-east-1"))
                .endpoint_url(&moto.endpoint)
                .credentials_provider(Credentials::new("testing", "testing", None, None, "tests"))
                .build();
            let client = Client::from_conf(conf);
            let name = "cartflow-state".to_string();
            let (c, n) = (client.clone(), name.clone());
            block(async move { create_table(&c, &n).await }).expect("create the table");
            Some(Table { _moto: moto, name, client })
        }

        /// Sets attributes of run `run_id`'s item directly (as another process's writes leave it).
        pub(crate) fn forge(&self, run_id: &str, fields: &[(&str, &str)]) {
            use aws_sdk_dynamodb::types::AttributeValue;
            let mut expr = Vec::new();
            let mut names = std::collections::HashMap::new();
            let mut values = std::collections::HashMap::new();
            for (i, (k, v)) in fields.iter().enumerate() {
                expr.push(format!("#a{i} = :v{i}"));
                names.insert(format!("#a{i}"), k.to_string());
                values.insert(format!(":v{i}"), AttributeValue::S(v.to_string()));
            }
            let (c, name, k) = (self.client.clone(), self.name.clone(), super::key(&super::run_pk(run_id), "RUN"));
            block(async move {
                c.update_item()
                    .table_name(name)
                    .set_key(Some(k))
                    .update_expression(format!("SET {}", expr.join(", ")))
                    .set_expression_attribute_names(Some(names))
                    .set_expression_attribute_values(Some(values))
                    .send()
                    .await
                    .map(|_| ())
                    .map_err(|e| e.to_string())
            })
            .expect("forge");
        }

        /// Puts `item` (attributes as strings or numbers) under `RUN#run_id` / `sk`, as another
        /// process's writes leave it; or, with `get`, reads attribute `get` of that item.
        pub(crate) fn raw(&self, run_id: &str, sk: &str, put: &[(&str, &str)], get: Option<&str>) -> Option<String> {
            use aws_sdk_dynamodb::types::AttributeValue;
            let k = super::key(&super::run_pk(run_id), sk);
            let (c, name) = (self.client.clone(), self.name.clone());
            let fields: Vec<(String, String)> = put.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect();
            let get = get.map(str::to_string);
            block(async move {
                if let Some(attr) = get {
                    let out = c.get_item().table_name(name).set_key(Some(k)).consistent_read(true).send().await;
                    let item = out.map_err(|e| e.to_string())?.item().cloned().unwrap_or_default();
                    return Ok(item.get(&attr).and_then(|v| v.as_s().ok().or_else(|| v.as_n().ok())).cloned());
                }
                let mut item = k;
                for (a, v) in fields {
                    let value = if a == "failures" { AttributeValue::N(v) } else { AttributeValue::S(v) };
                    item.insert(a, value);
                }
                c.put_item().table_name(name).set_item(Some(item)).send().await.map(|_| None).map_err(|e| e.to_string())
            })
            .expect("raw access to the table")
        }

        /// Sets `state`, `owner` and `tries` of run `run_id`'s notifications (of one attempt, or
        /// all), as a crash or another process leaves them.
        pub(crate) fn forge_notes(&self, run_id: &str, attempt: Option<u32>, state: &str, owner: &str, tries: u32) {
            use aws_sdk_dynamodb::types::AttributeValue;
            let (c, name, pk) = (self.client.clone(), self.name.clone(), super::run_pk(run_id));
            let (state, owner) = (state.to_string(), owner.to_string());
            block(async move {
                let notes = super::items_of(&c, &name, &pk, "NOTE#").await?;
                for mut item in notes {
                    let body: serde_json::Value =
                        serde_json::from_str(super::text(&item, "body").unwrap_or("{}")).unwrap_or_default();
                    if attempt.is_some_and(|a| body["attempt"].as_u64() != Some(u64::from(a))) {
                        continue;
                    }
                    item.insert("state".into(), AttributeValue::S(state.clone()));
                    item.insert("owner".into(), AttributeValue::S(owner.clone()));
                    item.insert("tries".into(), AttributeValue::N(tries.to_string()));
                    item.insert(super::OUTBOX.into(), AttributeValue::S(super::OUTBOX.into()));
                    c.put_item().table_name(&name).set_item(Some(item)).send().await.map_err(|e| e.to_string())?;
                }
                Ok::<(), String>(())
            })
            .expect("forge the notifications");
        }

        /// The store at this table.
        pub(crate) fn at(&self) -> StoreAt {
            StoreAt::Remote(Arc::new(DynamoTable::with_client(&self.name, self.client.clone())))
        }
    }
}

#[cfg(test)]
mod tests {

    use aws_sdk_dynamodb::types::AttributeValue;
    use chrono::Utc;

    use super::testing::Table;
    use super::{block, key, run_pk};
    use crate::engine::state::{RunState, TaskState, Trigger};
    use std::collections::HashSet;

    use crate::engine::store::{CancelError, Claim, DeadlineRow, Op, RunStore, StoreError, my_token};
    use crate::schedule::DataInterval;

    fn claim<'a>(tasks: &'a [(&'a str, bool)]) -> Claim<'a> {
        Claim {
            dag_id: "d",
            interval: DataInterval::daily_utc(chrono::NaiveDate::from_ymd_opt(2019, 10, 1).expect("date")),
            trigger: Trigger::Manual,
            tasks,
            rerun: false,
            require_existing: false,
        }
    }

    fn forge(t: &Table, run_id: &str, fields: &[(&str, &str)]) {
        t.forge(run_id, fields)
    }

    #[test]
    fn a_run_is_claimed_written_and_read_back_and_its_lease_renewed() {
        let Some(t) = Table::start() else { return };
        let mut s = RunStore::open(t.at()).expect("open");
        let tasks = [("a", true), ("b", true)];
        let c = s.claim(&claim(&tasks)).expect("claim");
        assert!(!c.existed);
        assert_eq!(s.live_runs("d").expect("live"), vec![c.run_id.clone()]);
        let now = Utc::now();
        let running = TaskState::Queued.start(1, now).expect("start");
        let ok = running.clone().succeed(now).expect("ok");
        s.apply(
            &c.run_id,
            &[
                Op::AttemptStarted { task_id: "a".into(), attempt: 1, started_at: now },
                Op::Task { task_id: "a".into(), state: running, attempts: 1, failures: 0 },
            ],
        )
        .expect("apply");
        s.apply(
            &c.run_id,
            &[
                Op::AttemptEnded {
                    task_id: "a".into(),
                    attempt: 1,
                    outcome: crate::engine::state::AttemptOutcome::Success,
                    ended_at: now,
                    error: None,
                    exit_code: Some(0),
                    summary: Some("fine".into()),
                    log_path: None,
                },
                Op::Task { task_id: "a".into(), state: ok.clone(), attempts: 1, failures: 0 },
            ],
        )
        .expect("apply");
        assert_eq!(s.heartbeat(&c.run_id).expect("beat"), None);
        let tasks_read = s.tasks(&c.run_id).expect("tasks");
        assert_eq!(tasks_read.iter().map(|t| t.task_id.as_str()).collect::<Vec<_>>(), ["a", "b"], "in DAG order");
        assert_eq!(tasks_read[0].state, ok);
        let attempts = s.attempts(&c.run_id, None).expect("attempts");
        assert_eq!(attempts.len(), 1);
        assert_eq!((attempts[0].exit_code, attempts[0].summary.as_deref()), (Some(0), Some("fine")));
        s.set_fact(&c.run_id, "a", "job_run_id", "jr_1").expect("fact");
        s.set_fact(&c.run_id, "a", "leftover.athena_ctas", "[1]").expect("fact");
        assert_eq!(s.fact(&c.run_id, "a", "job_run_id").expect("fact").as_deref(), Some("jr_1"));
        s.finish(&c.run_id, RunState::Success).expect("finish");
        let run = s.run(&c.run_id).expect("run").expect("a run");
        assert_eq!((run.state, run.dag_id.as_str()), (RunState::Success, "d"));
        assert!(s.live_runs("d").expect("live").is_empty(), "a finished run is not in the live index");
        assert_eq!(s.runs(None, 10).expect("runs").len(), 1);
        assert_eq!(s.last_run_start("d").expect("last"), Some(run.interval_start));
        assert!(matches!(s.heartbeat(&c.run_id), Err(StoreError::LeaseLost { owner: None, .. })), "released");
        // A second claim of the finished run keeps the success: nothing to run again.
        let again = s.claim(&claim(&tasks)).expect("claim again");
        assert!(again.existed);
        assert!(matches!(again.tasks["a"].0, TaskState::Success { .. }));
        assert_eq!(
            s.fact(&c.run_id, "a", "job_run_id").expect("fact").as_deref(),
            Some("jr_1"),
            "kept with the success"
        );
        // A rerun queues the task afresh: its facts are forgotten, but the leftover ones.
        s.claim(&Claim { rerun: true, ..claim(&tasks) }).expect("rerun");
        assert_eq!(s.fact(&c.run_id, "a", "job_run_id").expect("fact"), None, "forgotten");
        assert_eq!(s.fact(&c.run_id, "a", "leftover.athena_ctas").expect("fact").as_deref(), Some("[1]"), "kept");
    }

    #[test]
    fn another_hosts_run_is_held_by_its_lease_and_every_write_of_a_process_that_lost_it_is_refused() {
        let Some(t) = Table::start() else { return };
        let mut s = RunStore::open(t.at()).expect("open");
        let tasks = [("a", true)];
        let c = s.claim(&claim(&tasks)).expect("claim");
        let now = Utc::now();
        let running = TaskState::Queued.start(1, now).expect("start");
        s.apply(
            &c.run_id,
            &[
                Op::AttemptStarted { task_id: "a".into(), attempt: 1, started_at: now },
                Op::Task { task_id: "a".into(), state: running.clone(), attempts: 1, failures: 0 },
            ],
        )
        .expect("apply");
        let other = "1:5@another-host/00000000";
        let lease = |secs: i64| crate::engine::store::kit::ts(Utc::now() + chrono::Duration::seconds(secs));
        forge(&t, &c.run_id, &[("owner", other), ("lease_until", &lease(30))]);
        let err = s.claim(&claim(&tasks)).expect_err("held");
        assert!(matches!(&err, StoreError::RunBusy { pid, .. } if pid == "1 on another-host/00000000"), "{err}");
        let ok = running.clone().succeed(Utc::now()).expect("ok");
        let lost = s
            .apply(&c.run_id, &[Op::Task { task_id: "a".into(), state: ok, attempts: 1, failures: 0 }])
            .expect_err("not ours");
        assert!(
            matches!(&lost, StoreError::LeaseLost { owner: Some(o), .. } if o == "1 on another-host/00000000"),
            "{lost}"
        );
        assert!(matches!(s.heartbeat(&c.run_id), Err(StoreError::LeaseLost { .. })));
        assert!(matches!(s.finish(&c.run_id, RunState::Failed), Err(StoreError::LeaseLost { .. })));
        assert!(matches!(s.restart_fresh(&c.run_id, &["a".into()]), Err(StoreError::LeaseLost { .. })));
        assert!(
            matches!(s.set_fact(&c.run_id, "a", "glue_job_run_id", "jr_stale"), Err(StoreError::LeaseLost { .. })),
            "the job run id the new owner saves is never overwritten"
        );
        assert!(matches!(s.clear_fact(&c.run_id, "a", "glue_job_run_id"), Err(StoreError::LeaseLost { .. })));
        assert_eq!(s.fact(&c.run_id, "a", "glue_job_run_id").expect("fact"), None);
        assert_eq!(s.tasks(&c.run_id).expect("tasks")[0].state, running, "nothing written");
        assert_eq!(s.live_runs("d").expect("live"), vec![c.run_id.clone()]);
        // Its lease expired: taken over, the attempt it was running recorded as interrupted.
        forge(&t, &c.run_id, &[("lease_until", &lease(-1))]);
        assert!(s.live_runs("d").expect("live").is_empty());
        let c2 = s.claim(&claim(&tasks)).expect("takeover");
        assert_eq!(c2.interrupted, vec!["a".to_string()]);
        let a = &s.attempts(&c.run_id, Some("a")).expect("attempts")[0];
        assert_eq!(a.error.as_deref(), Some(crate::engine::store::kit::INTERRUPTED));
        s.heartbeat(&c.run_id).expect("ours again");
        assert!(my_token().contains('@'));
    }

    #[test]
    fn a_batch_larger_than_a_transaction_is_written_whole() {
        let Some(t) = Table::start() else { return };
        let mut s = RunStore::open(t.at()).expect("open");
        let names: Vec<String> = (0..150).map(|i| format!("t{i:03}")).collect();
        let tasks: Vec<(&str, bool)> = names.iter().map(|n| (n.as_str(), true)).collect();
        let c = s.claim(&claim(&tasks)).expect("claim 150 tasks");
        assert_eq!(s.tasks(&c.run_id).expect("tasks").len(), 150);
        let now = Utc::now();
        let mut ops = Vec::new();
        for n in &names {
            let running = TaskState::Queued.start(1, now).expect("start");
            ops.push(Op::AttemptStarted { task_id: n.clone(), attempt: 1, started_at: now });
            ops.push(Op::Task { task_id: n.clone(), state: running, attempts: 1, failures: 0 });
        }
        s.apply(&c.run_id, &ops).expect("300 changes");
        let read = s.tasks(&c.run_id).expect("tasks");
        assert!(read.iter().all(|t| matches!(t.state, TaskState::Running { .. })), "every task written");
        assert_eq!(s.attempts(&c.run_id, None).expect("attempts").len(), 150);
    }

    #[test]
    fn a_backfill_job_is_recorded_continued_and_closed() {
        let Some(t) = Table::start() else { return };
        let mut s = RunStore::open(t.at()).expect("open");
        assert_eq!(s.open_backfill("req").expect("open"), None);
        let runs: Vec<(String, &str)> = (0..120).map(|i| (format!("d@{i}"), "run")).collect();
        let id = s.create_backfill("d", "req", &runs).expect("create");
        s.backfill_run_done(&id, "d@7", "success").expect("done");
        let (open, rows) = s.open_backfill("req").expect("open").expect("a job");
        assert_eq!(open, id);
        assert_eq!(rows.len(), 120);
        assert_eq!(rows[7], ("d@7".to_string(), "run".to_string(), Some("success".to_string())));
        assert_eq!(rows[119].0, "d@119", "in planned order");
        s.finish_backfill(&id).expect("finish");
        assert_eq!(s.open_backfill("req").expect("open"), None);
    }

    #[test]
    fn pauses_cancels_and_the_audit_log_are_kept_in_the_table() {
        let Some(t) = Table::start() else { return };
        let mut s = RunStore::open(t.at()).expect("open");
        assert!(s.set_paused("d", true, "ana").expect("pause"));
        assert!(!s.set_paused("d", true, "ana").expect("pause again"), "already paused: nothing changes");
        let paused = s.paused().expect("paused");
        assert_eq!(paused.keys().collect::<Vec<_>>(), ["d"]);
        assert_eq!(paused["d"].1, "ana");
        assert_eq!(s.last_pause("d").expect("last"), None, "no pause has ended yet");
        assert!(s.set_paused("d", false, "bo").expect("unpause"));
        assert!(s.paused().expect("paused").is_empty());
        let (from, to) = s.last_pause("d").expect("last").expect("a pause that ended");
        assert_eq!(from, paused["d"].0);
        assert!(from.expect("its start") <= to);

        let tasks = [("a", true)];
        let c = s.claim(&claim(&tasks)).expect("claim");
        let asked = s.request_cancel(&c.run_id, "cy").expect("cancel");
        assert_eq!(asked.already_by, None);
        assert!(asked.pid.contains(&std::process::id().to_string()), "{}", asked.pid);
        let again = s.request_cancel(&c.run_id, "di").expect("cancel again");
        assert_eq!(again.already_by.as_deref(), Some("cy"), "the first request stands");
        assert_eq!(s.heartbeat(&c.run_id).expect("beat").as_deref(), Some("cy"), "the owner hears it");
        s.finish(&c.run_id, RunState::Cancelled).expect("finish");
        assert!(matches!(s.request_cancel(&c.run_id, "cy"), Err(CancelError::NotRunning { .. })));
        assert!(matches!(
            s.request_cancel("d@1999-01-01T00:00:00Z", "cy"),
            Err(CancelError::Store(StoreError::NoSuchRun { .. }))
        ));

        let log = s.audit(None, 10).expect("audit");
        let actions: Vec<(&str, &str)> = log.iter().map(|a| (a.action.as_str(), a.who.as_str())).collect();
        assert_eq!(actions, [("cancel", "cy"), ("unpause", "bo"), ("pause", "ana")], "newest first, once each");
        assert_eq!(s.audit(Some(&c.run_id), 10).expect("audit").len(), 1);
        assert!(log.windows(2).all(|w| w[0].id > w[1].id));
    }

    #[test]
    fn a_deadline_is_decided_once_and_read_back_by_run_and_by_dag() {
        let Some(t) = Table::start() else { return };
        let mut s = RunStore::open(t.at()).expect("open");
        let tasks = [("a", true)];
        let c = s.claim(&claim(&tasks)).expect("claim");
        s.finish(&c.run_id, RunState::Success).expect("finish");
        let run = s.run(&c.run_id).expect("run").expect("a run");
        let at = run.interval_end + chrono::Duration::hours(3);
        let row = DeadlineRow {
            run_id: c.run_id.clone(),
            dag_id: "d".into(),
            task_id: None,
            deadline_at: at,
            missed: true,
            reason: Some("still running".into()),
            decided_at: Utc::now(),
        };
        let task_row = DeadlineRow { task_id: Some("a".into()), missed: false, reason: None, ..row.clone() };
        let first = s.record_deadlines(&[(row.clone(), vec![]), (task_row.clone(), vec![])]).expect("record");
        assert_eq!(first.len(), 2);
        let second = s.record_deadlines(&[(row.clone(), vec![])]).expect("record again");
        assert!(second.is_empty(), "decided once");
        let back = s.deadlines(&c.run_id).expect("deadlines");
        assert_eq!(back.len(), 2);
        assert_eq!(
            (back[0].task_id.as_deref(), back[0].missed, back[0].reason.as_deref()),
            (None, true, Some("still running"))
        );
        assert_eq!((back[1].task_id.as_deref(), back[1].missed), (Some("a"), false));
        let decided = s.decided_deadlines("d", at - chrono::Duration::minutes(1)).expect("decided");
        assert_eq!(decided, HashSet::from([(c.run_id.clone(), String::new()), (c.run_id.clone(), "a".to_string())]));
        assert!(s.decided_deadlines("d", at + chrono::Duration::minutes(1)).expect("decided").is_empty());
        let ending = s
            .runs_ending_between("d", run.interval_end - chrono::Duration::hours(1), run.interval_end)
            .expect("ending");
        assert_eq!(ending.iter().map(|r| r.run_id.as_str()).collect::<Vec<_>>(), [c.run_id.as_str()]);
        assert!(
            s.runs_ending_between("d", run.interval_end + chrono::Duration::seconds(1), at).expect("ending").is_empty()
        );
    }

    /// Every record an export holds (facts included; the e2e test adds notifications) comes back the same
    /// through the other store's code: SQLite → DynamoDB → SQLite.
    #[test]
    fn an_export_round_trips_through_both_stores_record_for_record() {
        use crate::engine::store::transfer::{Imported, Record};
        let Some(t) = Table::start() else { return };
        let dir = tempfile::tempdir().expect("tmp");
        let mut a = RunStore::open(dir.path().join("a.db")).expect("sqlite");
        let tasks = [("a", true), ("b", true)];
        let c = a.claim(&claim(&tasks)).expect("claim");
        let now = Utc::now();
        let running = TaskState::Queued.start(1, now).expect("start");
        a.apply(
            &c.run_id,
            &[
                Op::AttemptStarted { task_id: "a".into(), attempt: 1, started_at: now },
                Op::Task { task_id: "a".into(), state: running.clone(), attempts: 1, failures: 0 },
            ],
        )
        .expect("apply");
        a.set_fact(&c.run_id, "a", "glue_job_run_id", "jr_42").expect("fact");
        a.apply(
            &c.run_id,
            &[
                Op::AttemptEnded {
                    task_id: "a".into(),
                    attempt: 1,
                    outcome: crate::engine::state::AttemptOutcome::Success,
                    ended_at: now,
                    error: Some("a warning \"quoted\"\nover two lines".into()),
                    exit_code: Some(0),
                    summary: Some("3 rows".into()),
                    log_path: Some("/nowhere/attempt-1.log".into()),
                },
                Op::Task { task_id: "a".into(), state: running.succeed(now).expect("ok"), attempts: 1, failures: 0 },
            ],
        )
        .expect("apply");
        a.finish(&c.run_id, RunState::Failed).expect("finish");
        let id = a.create_backfill("d", "req", &[(c.run_id.clone(), "run")]).expect("backfill");
        a.backfill_run_done(&id, &c.run_id, "failed").expect("done");

        let export = |s: &RunStore| {
            let mut out = Vec::new();
            s.export(&mut |r| {
                out.push(r);
                Ok(())
            })
            .expect("export");
            out
        };
        let from_sqlite = export(&a);
        assert_eq!(from_sqlite.len(), 2, "a run and a backfill job: {from_sqlite:?}");
        let Record::Run(run) = &from_sqlite[0] else { panic!("a run first") };
        assert_eq!(run.facts.len(), 1);
        assert_eq!(run.tasks.iter().map(|t| t.task_id.as_str()).collect::<Vec<_>>(), ["a", "b"]);

        let mut d = RunStore::open(t.at()).expect("dynamodb");
        for r in &from_sqlite {
            assert_eq!(d.import(r).expect("import"), Imported::Added);
            assert_eq!(d.import(r).expect("import"), Imported::AlreadyThere);
        }
        let from_dynamodb = export(&d);
        assert_eq!(from_dynamodb, from_sqlite);
        // What the table has is left as it is: a run that changed there keeps its change.
        // (Written as another process's execution would have: facts are written by an owner.)
        let fact_of = |v: &str| {
            let mut item = key(&run_pk(&c.run_id), "FACT#a#glue_job_run_id");
            for (k, x) in [("task", "a"), ("key", "glue_job_run_id"), ("value", v)] {
                item.insert(k.to_string(), AttributeValue::S(x.to_string()));
            }
            let (cl, name) = (t.client.clone(), t.name.clone());
            block(async move { cl.put_item().table_name(name).set_item(Some(item)).send().await.map(|_| ()) })
                .expect("put the fact");
        };
        fact_of("jr_43");
        assert_eq!(d.import(&from_sqlite[0]).expect("import"), Imported::AlreadyThere);
        assert_eq!(d.fact(&c.run_id, "a", "glue_job_run_id").expect("fact").as_deref(), Some("jr_43"));
        fact_of("jr_42");
        assert!(
            matches!(d.set_fact(&c.run_id, "a", "k", "v"), Err(StoreError::LeaseLost { .. })),
            "no process owns the run: its facts are not written"
        );
        assert_eq!(d.fact(&c.run_id, "a", "glue_job_run_id").expect("fact").as_deref(), Some("jr_42"));
        assert_eq!(d.open_backfill("req").expect("open").map(|(i, _)| i), Some(id.clone()), "still open there");

        let mut b = RunStore::open(dir.path().join("b.db")).expect("sqlite");
        for r in &from_dynamodb {
            assert_eq!(b.import(r).expect("import"), Imported::Added);
        }
        assert_eq!(export(&b), from_sqlite);
        assert_eq!(b.tasks(&c.run_id).expect("tasks"), a.tasks(&c.run_id).expect("tasks"));
        assert_eq!(b.attempts(&c.run_id, None).expect("attempts"), a.attempts(&c.run_id, None).expect("attempts"));
    }

    #[test]
    fn a_finished_task_is_marked_by_hand_and_the_run_follows() {
        use crate::engine::store::{Mark, MarkError};
        let Some(t) = Table::start() else { return };
        let mut s = RunStore::open(t.at()).expect("open");
        let tasks = [("a", true), ("b", true)];
        let c = s.claim(&claim(&tasks)).expect("claim");
        let now = Utc::now();
        s.apply(
            &c.run_id,
            &[
                Op::Task {
                    task_id: "a".into(),
                    state: TaskState::Failed { attempt: 1, ended_at: now, error: "boom".into() },
                    attempts: 1,
                    failures: 1,
                },
                Op::Task { task_id: "b".into(), state: TaskState::UpstreamFailed, attempts: 0, failures: 0 },
            ],
        )
        .expect("apply");
        assert!(
            matches!(s.mark(&c.run_id, "a", Mark::Success, "ana"), Err(MarkError::Store(StoreError::RunBusy { .. }))),
            "not while its owner runs it"
        );
        s.finish(&c.run_id, RunState::Failed).expect("finish");
        assert!(matches!(s.mark(&c.run_id, "zz", Mark::Success, "ana"), Err(MarkError::NoSuchTask { .. })));
        let m = s.mark(&c.run_id, "a", Mark::Success, "ana").expect("mark a");
        assert_eq!((m.from, m.run_state), ("failed", RunState::Failed), "b is still upstream_failed");
        let m = s.mark(&c.run_id, "b", Mark::Skipped, "ana").expect("mark b");
        assert_eq!((m.from, m.run_state), ("upstream_failed", RunState::Success));
        assert_eq!(s.run(&c.run_id).expect("run").expect("a run").state, RunState::Success);
        let states: Vec<&str> = s.tasks(&c.run_id).expect("tasks").iter().map(|t| t.state.name()).collect();
        assert_eq!(states, ["success", "skipped"]);
        assert_eq!(s.marked_skipped(&c.run_id).expect("marked"), HashSet::from(["b".to_string()]));
        let actions: Vec<String> = s.audit(Some(&c.run_id), 10).expect("audit").into_iter().map(|a| a.action).collect();
        assert_eq!(actions, ["mark_skipped", "mark_success"]);
        // A later execution keeps the mark: b stays skipped.
        let again = s.claim(&claim(&tasks)).expect("claim again");
        assert_eq!(again.tasks["b"].0, TaskState::Skipped);
    }

    #[test]
    fn every_runs_undelivered_notifications_are_found_by_the_outbox_index_until_delivered() {
        use crate::engine::store::{Delivery, NewNotification};
        let Some(t) = Table::start() else { return };
        let mut s = RunStore::open(t.at()).expect("open");
        let tasks = [("a", true)];
        let c = s.claim(&claim(&tasks)).expect("claim");
        let key = format!("{}/-/1/success", c.run_id);
        let note: crate::notify::Notification = serde_json::from_value(serde_json::json!({
            "event": "success", "dag": "d", "run": c.run_id,
            "interval": {"ds": "2019-10-01", "start": "2019-10-01T00:00:00+00:00", "end": "2019-10-02T00:00:00+00:00"},
            "task": null, "attempt": 1, "error": null, "log_url": "", "dedupe_key": key,
            "message": "d succeeded", "at": "2019-10-02T00:00:00Z"
        }))
        .expect("a notification");
        let spec = serde_json::from_value(serde_json::json!({"file": {"path": "notes.jsonl"}})).expect("a target");
        let before = Utc::now() - chrono::Duration::seconds(1);
        s.finish_with(&c.run_id, RunState::Success, &[NewNotification { target: "ops".into(), spec, note }])
            .expect("finish");
        let pending = s.undelivered_notifications(None, Some(before)).expect("undelivered");
        assert_eq!(pending, [(key.clone(), "ops".to_string())]);
        assert!(
            s.undelivered_notifications(None, Some(Utc::now() + chrono::Duration::hours(1))).expect("later").is_empty()
        );
        let row = s.claim_notification(&key, "ops").expect("claim").expect("claimable");
        s.record_delivery(&key, "ops", 1, &Delivery::Retrying("503".into())).expect("retrying");
        assert_eq!(s.undelivered_notifications(None, Some(before)).expect("undelivered").len(), 1, "still undelivered");
        s.record_delivery(&key, "ops", 2, &Delivery::Sent).expect("sent");
        assert!(s.undelivered_notifications(None, Some(before)).expect("undelivered").is_empty());
        assert_eq!(row.target, "ops");
    }
}
