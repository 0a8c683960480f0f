//! The lake as the DAGs make it: its zones and catalog tables in lineage order (raw → staged →
//! clean / quarantine → enriched → the insight tables), who writes each, each one's partitions
//! with their rows, bytes, when they were last written and by which run, and the quarantine's
//! reasons per day. Read from the compiled DAGs, the catalog, the run store and the files
//! themselves; nothing is written.
//!
//! The lineage comes from the DAGs' tasks: a task that names a table (`table:` of a crawler or
//! a CTAS) or a folder (`output:`, `input:`, `path:`) names a node; a node's writer is the task
//! that names it as its output (a CTAS, a DataBrew job), else the task a crawler of it runs
//! after, else the task a sensor waiting on it runs after; its inputs are the nodes named by
//! the writer's nearest upstream tasks. The quarantine is written beside the clean events by
//! the same job (`cartflow_jobs::clean`).

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use cartflow_jobs::catalog::{Catalog, Table};
use cartflow_jobs::clean::{CLEAN_EVENTS, QUARANTINE_EVENTS};
use cartflow_jobs::lakeview::{FolderStats, count_by, folder_stats};
use chrono::NaiveDate;

use super::FlowError;
use crate::dag::{Dag, DagSet};
use crate::engine::store::TaskSuccess;
use crate::schedule::DataInterval;

/// The database a table name without one belongs to.
const DATABASE: &str = "ecommerce";

/// One node of the lineage: a zone of the lake (a folder no catalog table points at, such as
/// `raw/events`) or a catalog table.
#[derive(Debug, Clone)]
pub struct Node {
    /// The folder (`raw/events`), or the table's `database.name`.
    pub name: String,
    /// The catalog's entry, for a table the catalog has.
    pub table: Option<Table>,
    /// Its folder, relative to the lake (an `s3://` URL is shown, not read).
    pub location: String,
    /// The task that writes it: (DAG, task).
    pub writer: Option<(String, String)>,
    /// The nodes it is made from (indices into [`Lineage::nodes`]).
    pub inputs: Vec<usize>,
}

/// The lake's nodes, each after its inputs.
#[derive(Debug, Clone, Default)]
pub struct Lineage {
    /// The nodes.
    pub nodes: Vec<Node>,
}

/// One partition of a node (or the whole of a node that has none).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionSpec {
    /// `dt=2019-10-01`, or empty for a table without partitions.
    pub spec: String,
    /// Its folder, relative to the lake.
    pub location: String,
    /// The day it holds, when its first key is a date.
    pub day: Option<NaiveDate>,
}

/// A partition with what its files hold and who wrote it.
#[derive(Debug, Clone)]
pub struct PartitionView {
    /// Which partition.
    pub part: PartitionSpec,
    /// Its files.
    pub stats: FolderStats,
    /// The run whose writer task last succeeded for it (for a day: the run of that day).
    pub written_by: Option<TaskSuccess>,
}

/// What a task names, read from its rendered config.
#[derive(Debug, Default)]
struct Names {
    /// The table or folder it writes or describes.
    target: Option<String>,
    /// A folder it reads (`input:`).
    input: Option<String>,
}

/// `raw/events/dt={{ ds }}` → `raw/events`: the folder above the first `key=value` part.
fn zone_of(path: &str) -> String {
    let parts: Vec<&str> = path.trim_matches('/').split('/').take_while(|p| !p.contains('=')).collect();
    parts.join("/")
}

fn qualified(table: &str, database: Option<&str>) -> String {
    if table.contains('.') { table.to_string() } else { format!("{}.{table}", database.unwrap_or(DATABASE)) }
}

/// The lineage of the lake `dags` write, with the tables of `catalog`.
pub fn lineage(dags: &DagSet, catalog: Option<&Catalog>) -> Result<Lineage, FlowError> {
    let tables = match catalog {
        Some(c) => c.tables().map_err(|e| FlowError::Step(format!("reading the catalog: {e}")))?,
        None => Vec::new(),
    };
    // A folder that is some table's location is that table; a table the catalog does not have
    // yet is where its crawler or CTAS says.
    let mut alias: HashMap<String, String> =
        tables.iter().map(|t| (t.location.trim_matches('/').to_string(), t.qualified())).collect();
    let mut declared: HashMap<String, String> = HashMap::new();
    let interval = DataInterval::daily_utc(NaiveDate::from_ymd_opt(2000, 1, 1).unwrap_or_default());
    // Per DAG, per task: what it names (rendered for any one day: only folder names are used).
    let mut named: Vec<(&Dag, Vec<Names>)> = Vec::new();
    for dag in dags.dags.values() {
        let ctx = crate::template::Context::new(&dag.id, "lineage", &interval, &dag.params);
        let mut names = Vec::new();
        for t in &dag.tasks {
            let j = t.config.render_json(&ctx.for_task(&t.id)).unwrap_or(serde_json::Value::Null);
            let s = |k: &str| j.get(k).and_then(serde_json::Value::as_str).map(str::to_string);
            let mut n = Names::default();
            if let Some(table) = s("table") {
                let q = qualified(&table, s("database").as_deref());
                if let Some(path) = s("path").or_else(|| s("location")) {
                    alias.entry(zone_of(&path)).or_insert_with(|| q.clone());
                    declared.entry(q.clone()).or_insert_with(|| zone_of(&path));
                }
                n.target = Some(q);
            } else if let Some(out) = s("output").or_else(|| s("path")) {
                n.target = Some(zone_of(&out));
            }
            n.input = s("input").map(|p| zone_of(&p));
            names.push(n);
        }
        named.push((&**dag, names));
    }
    let resolve = |name: &str| alias.get(name).cloned().unwrap_or_else(|| name.to_string());

    let mut nodes: Vec<Node> = Vec::new();
    let mut index: HashMap<String, usize> = HashMap::new();
    let mut node = |nodes: &mut Vec<Node>, name: &str| -> usize {
        if let Some(&i) = index.get(name) {
            return i;
        }
        let table = tables.iter().find(|t| t.qualified() == name).cloned();
        let location = match &table {
            Some(t) => t.location.clone(),
            None => declared.get(name).cloned().unwrap_or_else(|| name.to_string()),
        };
        nodes.push(Node { name: name.to_string(), table, location, writer: None, inputs: Vec::new() });
        index.insert(name.to_string(), nodes.len() - 1);
        nodes.len() - 1
    };
    // Writers, strongest claim first: 0 = names it as its output, 1 = a crawler's upstream,
    // 2 = a sensor's upstream.
    let mut claims: BTreeMap<usize, (u8, String, usize)> = BTreeMap::new();
    for (dag, names) in &named {
        for (i, t) in dag.tasks.iter().enumerate() {
            let Some(target) = names[i].target.as_deref().map(resolve) else { continue };
            let n = node(&mut nodes, &target);
            let (rank, writer) = match t.kind() {
                "glue_crawler" => (1, t.upstream.first().copied()),
                "wait_for_partition" => (2, t.upstream.first().copied()),
                _ => (0, Some(i)),
            };
            let Some(w) = writer else { continue };
            let better = claims.get(&n).is_none_or(|(r, _, _)| rank < *r);
            if better {
                claims.insert(n, (rank, dag.id.clone(), w));
            }
        }
    }
    for (&n, (_, dag_id, w)) in &claims {
        let Some((dag, names)) = named.iter().find(|(d, _)| &d.id == dag_id) else { continue };
        nodes[n].writer = Some((dag.id.clone(), dag.tasks[*w].id.clone()));
        let mut inputs = Vec::new();
        if let Some(input) = names[*w].input.as_deref() {
            inputs.push(resolve(input));
        }
        // The nearest upstream tasks that name a node.
        let mut stack: Vec<usize> = dag.tasks[*w].upstream.clone();
        let mut seen = vec![false; dag.tasks.len()];
        while let Some(u) = stack.pop() {
            if std::mem::replace(&mut seen[u], true) {
                continue;
            }
            match names[u].target.as_deref().map(resolve) {
                Some(name) if name != nodes[n].name => inputs.push(name),
                _ => stack.extend(dag.tasks[u].upstream.iter().copied()),
            }
        }
        inputs.sort();
        inputs.dedup();
        let ids: Vec<usize> = inputs.iter().map(|name| node(&mut nodes, name)).collect();
        nodes[n].inputs = ids.into_iter().filter(|&i| i != n).collect();
    }
    // The quarantine: written by the clean job, from what the clean events are made of.
    let clean = nodes.iter().position(|x| zone_of(&x.location) == CLEAN_EVENTS || x.name == CLEAN_EVENTS);
    if let Some(c) = clean {
        let q = node(&mut nodes, QUARANTINE_EVENTS);
        if nodes[q].writer.is_none() {
            nodes[q].writer = nodes[c].writer.clone();
            nodes[q].inputs = nodes[c].inputs.clone();
        }
    }
    // Tables no DAG names still show.
    for t in &tables {
        node(&mut nodes, &t.qualified());
    }
    Ok(Lineage { nodes: order(nodes) })
}

/// The nodes with every input before its node (Kahn's algorithm; ties keep their order).
fn order(nodes: Vec<Node>) -> Vec<Node> {
    let n = nodes.len();
    let mut placed = vec![false; n];
    let mut order = Vec::with_capacity(n);
    while order.len() < n {
        let next = (0..n)
            .find(|&i| !placed[i] && nodes[i].inputs.iter().all(|&j| placed[j]))
            // A loop (two tasks naming each other's tables): the first left, as it is.
            .or_else(|| (0..n).find(|&i| !placed[i]));
        let Some(i) = next else { break };
        placed[i] = true;
        order.push(i);
    }
    let new_index: HashMap<usize, usize> = order.iter().enumerate().map(|(new, &old)| (old, new)).collect();
    let mut slots: Vec<Option<Node>> = nodes.into_iter().map(Some).collect();
    order
        .iter()
        .filter_map(|&old| slots[old].take())
        .map(|mut node| {
            node.inputs = node.inputs.iter().filter_map(|i| new_index.get(i).copied()).collect();
            node
        })
        .collect()
}

/// `location` under the lake root, if it is a folder of the lake: not an `s3://` URL, not
/// absolute, no `..` (a DAG's `path:` or `output:` never lists folders outside the lake).
fn in_lake(lake: &Path, location: &str) -> Option<std::path::PathBuf> {
    (!location.contains("://") && crate::template::path_problem(location).is_none()).then(|| lake.join(location))
}

/// The partitions of `node`, newest first: the catalog's for a partitioned table, the whole
/// table for one without partition keys, the `key=value` folders for a zone.
pub fn partitions(node: &Node, catalog: Option<&Catalog>, lake: &Path) -> Result<Vec<PartitionSpec>, FlowError> {
    let day_of = |spec: &str| {
        spec.split('/').next().and_then(|kv| kv.split_once('=')).and_then(|(_, v)| v.parse::<NaiveDate>().ok())
    };
    let mut out = Vec::new();
    if let Some(t) = &node.table {
        if t.partition_keys.is_empty() {
            out.push(PartitionSpec { spec: String::new(), location: t.location.clone(), day: None });
        } else if let Some(c) = catalog {
            let parts = c
                .partitions(&t.qualified(), DATABASE)
                .map_err(|e| FlowError::Step(format!("reading the catalog: {e}")))?;
            for p in parts {
                let spec = p.spec(&t.partition_keys);
                out.push(PartitionSpec { day: day_of(&spec), spec, location: p.location });
            }
        }
    } else if !node.location.contains("://") {
        let Some(dir) = in_lake(lake, &node.location) else { return Ok(out) };
        let Ok(rd) = std::fs::read_dir(dir) else { return Ok(out) };
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.contains('=') && !name.starts_with(['.', '_']) && e.path().is_dir() {
                out.push(PartitionSpec {
                    day: day_of(&name),
                    location: format!("{}/{name}", node.location.trim_end_matches('/')),
                    spec: name,
                });
            }
        }
    }
    out.sort_by(|a, b| b.spec.cmp(&a.spec));
    Ok(out)
}

/// What the files of `part` hold and which of `successes` (the writer task's successful runs,
/// oldest interval first) wrote it: the run of its day, or the last one for a whole table.
pub fn view(part: &PartitionSpec, lake: &Path, dag: Option<&Dag>, successes: &[TaskSuccess]) -> PartitionView {
    let stats = in_lake(lake, &part.location).map(|dir| folder_stats(&dir)).unwrap_or_default();
    let written_by = match (part.day, dag) {
        (Some(day), Some(dag)) => successes
            .iter()
            .rev()
            .find(|s| {
                DataInterval { start: s.interval_start, end: s.interval_end, tz: dag.timezone }.ds() == day.to_string()
            })
            .cloned(),
        (Some(_), None) => None,
        (None, _) => successes.iter().max_by_key(|s| s.ended_at).cloned(),
    };
    PartitionView { part: part.clone(), stats, written_by }
}

/// Quarantined rows by reason.
pub type Reasons = BTreeMap<String, u64>;

/// The quarantined rows of each of `days` by reason (days without a quarantine folder are left out).
pub fn quarantine_reasons(lake: &Path, days: &[NaiveDate]) -> Result<Vec<(NaiveDate, Reasons)>, FlowError> {
    let mut out = Vec::new();
    for day in days {
        let dir = lake.join(QUARANTINE_EVENTS).join(format!("dt={day}"));
        if !dir.is_dir() {
            continue;
        }
        let by = count_by(&dir, "reason").map_err(|e| FlowError::Step(format!("reading the quarantine: {e}")))?;
        out.push((*day, by));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_location_outside_the_lake_is_not_read() {
        let lake = Path::new("/lake");
        assert_eq!(in_lake(lake, "raw/events").as_deref(), Some(Path::new("/lake/raw/events")));
        for bad in ["../etc", "raw/../../etc", "/etc", "s3://bucket/raw"] {
            assert_eq!(in_lake(lake, bad), None, "{bad}");
        }
        let node =
            Node { name: "x".into(), table: None, location: "../../etc".into(), writer: None, inputs: Vec::new() };
        assert!(partitions(&node, None, lake).expect("partitions").is_empty());
    }

    #[test]
    fn zones_are_the_folders_above_the_partitions() {
        assert_eq!(zone_of("raw/events/dt=2019-10-01"), "raw/events");
        assert_eq!(zone_of("/staged/events/"), "staged/events");
        assert_eq!(zone_of("raw/events/dt=2019-10-01/hour=03"), "raw/events");
        assert_eq!(qualified("events", None), "ecommerce.events");
        assert_eq!(qualified("other.t", Some("x")), "other.t");
    }

    #[test]
    fn the_daily_dags_lineage_runs_raw_staged_clean_quarantine_enriched_insights() {
        let dir = tempfile::tempdir().expect("tmp");
        for (path, text) in super::super::demo::PROJECT_FILES {
            let p = dir.path().join(path);
            std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
            std::fs::write(&p, text).expect("write");
        }
        let project = crate::project::Project::open(dir.path().to_path_buf(), Some(dir.path().join("dags")), None)
            .expect("project");
        let set = project.load().expect("dags");
        let l = lineage(&set, None).expect("lineage");
        let names: Vec<&str> = l.nodes.iter().map(|n| n.name.as_str()).collect();
        let at = |name: &str| names.iter().position(|n| *n == name).unwrap_or_else(|| panic!("{name} in {names:?}"));
        let inputs = |name: &str| -> Vec<&str> { l.nodes[at(name)].inputs.iter().map(|&i| names[i]).collect() };
        let writer = |name: &str| l.nodes[at(name)].writer.as_ref().map(|(_, t)| t.as_str());
        assert_eq!(inputs("raw/events"), Vec::<&str>::new());
        assert_eq!(writer("raw/events"), Some("stream"));
        assert_eq!(inputs("ecommerce.staged_events"), ["raw/events"]);
        assert_eq!(writer("ecommerce.staged_events"), Some("compact"));
        assert_eq!(inputs("ecommerce.events"), ["ecommerce.staged_events"]);
        assert_eq!(writer("ecommerce.events"), Some("clean"));
        assert_eq!(inputs("quarantine/events"), ["ecommerce.staged_events"]);
        assert_eq!(writer("quarantine/events"), Some("clean"));
        assert_eq!(inputs("ecommerce.enriched_events"), ["ecommerce.events"]);
        assert_eq!(writer("ecommerce.enriched_events"), Some("enrich"));
        for t in ["daily_visitors", "cart_abandonment", "top_categories", "brand_marketing"] {
            let q = format!("ecommerce.{t}");
            assert_eq!(inputs(&q), ["ecommerce.enriched_events"], "{t}");
            assert_eq!(writer(&q), Some(t), "{t}");
            assert!(at(&q) > at("ecommerce.enriched_events"));
        }
        assert!(
            at("raw/events") < at("ecommerce.staged_events") && at("ecommerce.staged_events") < at("ecommerce.events")
        );
    }
}
