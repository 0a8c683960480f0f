//! Publishing a folder by swap, the way every job of the lake writes its output.
//!
//! A job writes into a fresh folder under `<zone>/.staging/` (beside the tables, never inside
//! one, so no reader listing a table ever sees half-written or superseded files), then swaps it
//! in with [`swap_in`]:
//!
//! 1. every file and folder of the fresh folder is fsynced, and the staging folder that holds
//!    it (crash point `swap.staged`);
//! 2. fresh and live are exchanged in one step (`renameat2(RENAME_EXCHANGE)`), or, when nothing
//!    is live yet, the fresh folder is renamed into place; both parent folders are fsynced
//!    (crash point `swap.exchanged`);
//! 3. the old version, now at the fresh folder's path, is deleted.
//!
//! The partition's path names a whole version at every instant: a reader that opens the
//! partition folder once and reads its files relative to it sees the old version or the new
//! one, never none and never a mix. (A reader still inside the old version when it is deleted
//! finds its files gone; opened again, the partition is the new one.) On a filesystem without
//! `RENAME_EXCHANGE` the swap falls back to two renames (live aside to `.old`, fresh into
//! place), and says so in a warning: there, the partition is absent between the two.
//!
//! Staging layout, per live folder `<zone>/<table>/<partition>` with key `<table>__<partition>`
//! (`id` is `<pid>-<random>`):
//!
//! | in `<zone>/.staging/` | what | [`recover`] |
//! |---|---|---|
//! | `<key>.<id>.tmp/` | a fresh folder not yet published, or, after the exchange, the old version | deleted |
//! | `<key>.<id>.old/` | the live folder moved aside by the two-rename fallback | put back if nothing is live, else deleted |
//! | `<key>.<id>.intent` | a committed [`publish_together`] whose first live folder is this one | finished |
//! | `<key>.<id>.pending` | the path of the intent of a publish that includes this live folder | finished if the intent exists, else deleted |
//! | `<key>.<id>.*.part` | an intent or pointer being written | deleted |
//!
//! Outputs that belong together (clean events and their quarantine) are published by
//! [`publish_together`], all or none:
//!
//! 1. every fresh folder is fsynced; in the staging folder of every live folder but the first,
//!    a pointer `<key>.<id>.pending` names the intent to come (crash point
//!    `swap.together.staged`);
//! 2. **commit**: the intent `<key of the first>.<id>.intent`, listing each (fresh, live) pair
//!    and the inode of each fresh folder, is written to `.part`, fsynced, and renamed into
//!    place (crash point `swap.together.committed`);
//! 3. each pair is exchanged as above, unless its live folder already has the recorded inode
//!    (crash point `swap.together.exchanged`, once per pair, then `swap.together.published`);
//! 4. the old versions, the pointers and the intent are removed.
//!
//! [`recover`] of any of the live folders finds the intent (directly, or through its pointer)
//! and rolls the publish forward; without an intent nothing was committed, and the fresh
//! folders are deleted like any other. After recovery the outputs are all new or all old. A
//! reader polling while the exchanges run may see the first output new and the second still
//! old, for the moment between two renames.
//!
//! [`recover`] runs before every write of a partition; it assumes (like the whole lake) one
//! writer per partition at a time.

use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path, PathBuf};

use serde::{Deserialize, Serialize};

fn staging(live: &Path) -> PathBuf {
    live.parent().and_then(Path::parent).unwrap_or(Path::new(".")).join(".staging")
}

/// The staging name prefix of a live folder: `events__dt=2019-10-01`.
fn key(live: &Path) -> String {
    let name =
        |p: Option<&Path>| p.and_then(Path::file_name).map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    format!("{}__{}", name(live.parent()), name(Some(live)))
}

/// A parent folder, `.` for a bare name.
fn parent(p: &Path) -> &Path {
    p.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."))
}

/// The unique part of the staging names of one publish.
fn id() -> String {
    format!("{}-{}", std::process::id(), fastrand::u64(..))
}

fn err(p: &Path, e: std::io::Error) -> String {
    format!("{}: {e}", p.display())
}

/// What the durability test watches: every fsync, exchange and rename, in order.
#[cfg(test)]
pub(crate) static JOURNAL: std::sync::Mutex<Vec<(&'static str, PathBuf)>> = std::sync::Mutex::new(Vec::new());

fn journal(op: &'static str, path: &Path) {
    #[cfg(test)]
    JOURNAL.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push((op, path.to_path_buf()));
    #[cfg(not(test))]
    let _ = (op, path);
}

/// Flushes a file's data and metadata to disk.
pub fn sync_file(path: &Path) -> Result<(), String> {
    journal("fsync", path);
    std::fs::File::open(path).and_then(|f| f.sync_all()).map_err(|e| err(path, e))
}

/// Flushes a folder's entries to disk (the names created, renamed or removed in it).
pub fn sync_dir(dir: &Path) -> Result<(), String> {
    sync_file(dir)
}

/// Flushes every file and folder under `dir`, deepest first, then `dir` itself: what must be
/// on disk before `dir` is published. (`dir`'s own entry is its parent's: see [`sync_dir`].)
pub fn sync_tree(dir: &Path) -> Result<(), String> {
    let mut entries: Vec<_> = std::fs::read_dir(dir).map_err(|e| err(dir, e))?.flatten().collect();
    entries.sort_by_key(std::fs::DirEntry::file_name);
    for e in entries {
        let p = e.path();
        match e.file_type() {
            Ok(t) if t.is_dir() => sync_tree(&p)?,
            Ok(t) if t.is_file() => sync_file(&p)?,
            Ok(_) => {}
            Err(e) => return Err(err(&p, e)),
        }
    }
    sync_dir(dir)
}

/// Creates `dir` and its missing parents durably: each new folder's entry is fsynced in its
/// parent.
fn create_dirs(dir: &Path) -> Result<(), String> {
    let mut missing = Vec::new();
    let mut d = Some(dir);
    while let Some(p) = d.filter(|p| !p.as_os_str().is_empty() && !p.is_dir()) {
        missing.push(p);
        d = p.parent();
    }
    if missing.is_empty() {
        return Ok(());
    }
    std::fs::create_dir_all(dir).map_err(|e| err(dir, e))?;
    for p in missing.iter().rev() {
        sync_dir(parent(p))?;
    }
    Ok(())
}

/// Removes a folder or file, if there is one.
fn remove(p: &Path) -> Result<(), String> {
    match std::fs::symlink_metadata(p) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(err(p, e)),
        Ok(m) if m.is_dir() => std::fs::remove_dir_all(p).map_err(|e| err(p, e)),
        Ok(_) => std::fs::remove_file(p).map_err(|e| err(p, e)),
    }
}

fn rename(from: &Path, to: &Path) -> Result<(), String> {
    journal("rename", to);
    std::fs::rename(from, to).map_err(|e| format!("{} -> {}: {e}", from.display(), to.display()))
}

/// Writes a small file so that it appears whole or not at all, and durably.
fn write_durably(path: &Path, text: &str) -> Result<(), String> {
    let part = PathBuf::from(format!("{}.part", path.display()));
    std::fs::write(&part, text).map_err(|e| err(&part, e))?;
    sync_file(&part)?;
    rename(&part, path)?;
    sync_dir(parent(path))
}

/// Refuses a path that a symbolic link inside `root` would lead out of it. `target` is
/// `root` joined with a relative path (already checked textually: no `..`, not absolute);
/// each part of it that exists is resolved, and must still be under the resolved `root`.
/// (The root itself may be a link: the lake is where it points.) Every writer of the lake
/// calls this before it writes or deletes, so that a link planted in the lake
/// (`curated/h -> /elsewhere`) cannot make a swap replace, or a prune delete, anything
/// outside it.
pub fn beneath(root: &Path, target: &Path) -> Result<(), String> {
    let base = match root.canonicalize() {
        Ok(b) => b,
        // No lake yet: nothing in it can be a link.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(err(root, e)),
    };
    let Ok(rel) = target.strip_prefix(root) else {
        return Err(format!("{} is not inside the lake {}", target.display(), root.display()));
    };
    let mut at = root.to_path_buf();
    for part in rel.components() {
        match part {
            Component::Normal(name) => at.push(name),
            Component::CurDir => continue,
            _ => return Err(format!("{} is not a plain path inside the lake {}", target.display(), root.display())),
        }
        match std::fs::symlink_metadata(&at) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(err(&at, e)),
            Ok(m) if !m.file_type().is_symlink() => continue,
            Ok(_) => {}
        }
        let resolved = at.canonicalize().map_err(|e| err(&at, e))?;
        if !resolved.starts_with(&base) {
            return Err(format!(
                "{} is a symbolic link to {}, outside the lake {}: cartflow does not write through it",
                at.display(),
                resolved.display(),
                base.display()
            ));
        }
    }
    Ok(())
}

/// [`beneath`] for a folder published by swap: the folder and its staging folder
/// (`<zone>/.staging`, where [`recover`] deletes) must both stay inside `lake`.
pub fn guard(lake: &Path, live: &Path) -> Result<(), String> {
    beneath(lake, live)?;
    beneath(lake, &staging(live))
}

/// A new, empty folder to write the next version of `live` into.
pub fn fresh(live: &Path) -> Result<PathBuf, String> {
    let stage = staging(live);
    create_dirs(&stage)?;
    let dir = stage.join(format!("{}.{}.tmp", key(live), id()));
    std::fs::create_dir(&dir).map_err(|e| err(&dir, e))?;
    Ok(dir)
}

/// Puts the folder `fresh` at `live` in one step: what was live is then at `fresh` (nothing
/// is, if nothing was live). Both parent folders are fsynced after.
fn exchange(fresh: &Path, live: &Path) -> Result<(), String> {
    use rustix::fs::{CWD, RenameFlags, renameat_with};
    use rustix::io::Errno;
    if std::fs::symlink_metadata(live).is_err() {
        rename(fresh, live)?;
    } else {
        match renameat_with(CWD, fresh, CWD, live, RenameFlags::EXCHANGE) {
            Ok(()) => journal("exchange", live),
            Err(e @ (Errno::INVAL | Errno::NOSYS | Errno::OPNOTSUPP)) => {
                static WARNED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
                if !WARNED.swap(true, std::sync::atomic::Ordering::Relaxed) {
                    tracing::warn!(
                        path = %live.display(),
                        error = %e,
                        "no RENAME_EXCHANGE on this filesystem: swapping by two renames, a partition is absent between them"
                    );
                }
                two_renames(fresh, live)?;
            }
            Err(e) => return Err(format!("exchanging {} and {}: {e}", fresh.display(), live.display())),
        }
    }
    sync_dir(parent(live))?;
    sync_dir(parent(fresh))
}

/// The swap without `RENAME_EXCHANGE`: live aside to `<key>.<id>.old`, fresh into place, the
/// old version to the fresh path. A crash after the first rename leaves the partition absent
/// until [`recover`] puts the old one back.
fn two_renames(fresh: &Path, live: &Path) -> Result<(), String> {
    let old = staging(live).join(format!("{}.{}.old", key(live), id()));
    rename(live, &old)?;
    rename(fresh, live)?;
    rename(&old, fresh)
}

/// Publishes `fresh` (made by [`fresh`]) as `live`, replacing what was there: fsynced, then
/// exchanged in one step, then the old version deleted (see the module doc).
pub fn swap_in(fresh: &Path, live: &Path) -> Result<(), String> {
    create_dirs(parent(live))?;
    sync_tree(fresh)?;
    sync_dir(parent(fresh))?;
    crate::crash::point("swap.staged");
    exchange(fresh, live)?;
    crate::crash::point("swap.exchanged");
    remove(fresh)
}

/// A committed [`publish_together`], as written in its intent file. Paths are relative to the
/// folder of the intent (so that a lake moved whole stays recoverable).
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Intent {
    /// The pairs, in publishing order.
    pairs: Vec<Pair>,
    /// The pointers to this intent in the other staging folders.
    pointers: Vec<PathBuf>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Pair {
    /// The fresh folder.
    fresh: PathBuf,
    /// Where it is published.
    live: PathBuf,
    /// The inode of the fresh folder: the live folder has it once the pair is exchanged.
    ino: u64,
}

/// `p` with its folder resolved (`p` itself need not exist).
fn real(p: &Path) -> Result<PathBuf, String> {
    let dir = parent(p).canonicalize().map_err(|e| err(parent(p), e))?;
    Ok(match p.file_name() {
        Some(name) => dir.join(name),
        None => dir,
    })
}

/// The path of `to` from the folder `from` (both absolute and resolved).
fn relative(from: &Path, to: &Path) -> PathBuf {
    let (a, b): (Vec<Component>, Vec<Component>) = (from.components().collect(), to.components().collect());
    let common = a.iter().zip(&b).take_while(|(x, y)| x == y).count();
    let mut out: PathBuf = a[common..].iter().map(|_| Component::ParentDir).collect();
    out.extend(&b[common..]);
    out
}

/// Publishes several fresh folders (each made by [`fresh`] for its live folder) so that they
/// become live together or not at all: after a crash anywhere, [`recover`] of any one of the
/// live folders finishes the publish if it was committed, and otherwise leaves every live
/// folder as it was. The protocol is in the module doc.
pub fn publish_together(pairs: &[(&Path, &Path)]) -> Result<(), String> {
    let Some(((_, first), rest)) = pairs.split_first() else { return Ok(()) };
    let id = id();
    let home = real(&staging(first))?;
    let intent_path = home.join(format!("{}.{id}.intent", key(first)));
    let mut intent = Intent { pairs: Vec::new(), pointers: Vec::new() };
    for (fresh, live) in pairs {
        if real(parent(fresh))? != real(&staging(live))? {
            return Err(format!("{}: not a fresh folder of {}", fresh.display(), live.display()));
        }
        create_dirs(parent(live))?;
        sync_tree(fresh)?;
        sync_dir(parent(fresh))?;
        let ino = std::fs::metadata(fresh).map_err(|e| err(fresh, e))?.ino();
        intent.pairs.push(Pair { fresh: relative(&home, &real(fresh)?), live: relative(&home, &real(live)?), ino });
    }
    for (_, live) in rest {
        let stage = real(&staging(live))?;
        let pointer = stage.join(format!("{}.{id}.pending", key(live)));
        write_durably(&pointer, &relative(&stage, &intent_path).to_string_lossy())?;
        intent.pointers.push(relative(&home, &pointer));
    }
    crate::crash::point("swap.together.staged");
    let text = serde_json::to_string_pretty(&intent).map_err(|e| err(&intent_path, std::io::Error::other(e)))?;
    write_durably(&intent_path, &text)?;
    crate::crash::point("swap.together.committed");
    complete(&intent_path)
}

/// Output written to fresh folders (each made by [`fresh`] for its live folder) and not yet
/// published: the write of write-audit-publish. The caller audits the fresh folders (data
/// checks), then [`Staged::publish`]es them — one by [`swap_in`], several by
/// [`publish_together`] — or drops the value, which deletes them and leaves every live folder
/// as it was.
#[derive(Debug)]
pub struct Staged {
    /// (fresh, live) pairs, in publishing order; emptied once published.
    pairs: Vec<(PathBuf, PathBuf)>,
}

impl Staged {
    /// Fresh folders, each with the live folder it replaces.
    pub fn new(pairs: Vec<(PathBuf, PathBuf)>) -> Staged {
        Staged { pairs }
    }

    /// Adds a fresh folder and the live folder it replaces.
    pub fn push(&mut self, fresh: PathBuf, live: PathBuf) {
        self.pairs.push((fresh, live));
    }

    /// The fresh folder of output `i` (the order given to [`Staged::new`]).
    pub fn fresh(&self, i: usize) -> Option<&Path> {
        self.pairs.get(i).map(|(f, _)| f.as_path())
    }

    /// The live folder output `i` replaces.
    pub fn live(&self, i: usize) -> Option<&Path> {
        self.pairs.get(i).map(|(_, l)| l.as_path())
    }

    /// Publishes every output (all or none, for more than one).
    pub fn publish(mut self) -> Result<(), String> {
        let pairs = std::mem::take(&mut self.pairs);
        match pairs.as_slice() {
            [] => Ok(()),
            [(fresh, live)] => swap_in(fresh, live),
            _ => {
                let refs: Vec<(&Path, &Path)> = pairs.iter().map(|(f, l)| (f.as_path(), l.as_path())).collect();
                publish_together(&refs)
            }
        }
    }
}

impl Drop for Staged {
    /// Not published: the fresh folders are deleted (what is left after a crash, [`recover`]
    /// deletes before the next write).
    fn drop(&mut self) {
        for (fresh, _) in &self.pairs {
            if let Err(e) = remove(fresh) {
                tracing::warn!(path = %fresh.display(), error = %e, "an unpublished folder was not deleted");
            }
        }
    }
}

/// The partition published before `live` (`<table>/<key>=<value>`): of the folders
/// `<table>/<key>=<v>` beside it, the one with the greatest `v` below `value` (values compare
/// as text, so dates and zero-padded numbers compare in order). `None` for the first one.
pub fn previous_partition(live: &Path) -> Option<PathBuf> {
    let name = live.file_name()?.to_str()?;
    let (key, value) = name.split_once('=')?;
    let prefix = format!("{key}=");
    let mut best: Option<(String, PathBuf)> = None;
    for e in std::fs::read_dir(live.parent()?).ok()?.flatten() {
        let n = e.file_name().to_string_lossy().into_owned();
        let Some(v) = n.strip_prefix(&prefix) else { continue };
        if v < value && e.path().is_dir() && best.as_ref().is_none_or(|(b, _)| v > b.as_str()) {
            best = Some((v.to_string(), e.path()));
        }
    }
    best.map(|(_, p)| p)
}

/// Rolls a committed [`publish_together`] forward: exchanges every pair not yet live, then
/// removes the old versions, the pointers and the intent.
fn complete(intent_path: &Path) -> Result<(), String> {
    let text = std::fs::read_to_string(intent_path).map_err(|e| err(intent_path, e))?;
    let intent: Intent = serde_json::from_str(&text).map_err(|e| err(intent_path, std::io::Error::other(e)))?;
    let home = parent(intent_path);
    let ino = |p: &Path| std::fs::symlink_metadata(p).ok().map(|m| m.ino());
    for pair in &intent.pairs {
        let (fresh, live) = (home.join(&pair.fresh), home.join(&pair.live));
        if ino(&live) != Some(pair.ino) {
            if ino(&fresh) == Some(pair.ino) {
                create_dirs(parent(&live))?;
                exchange(&fresh, &live)?;
            } else {
                tracing::warn!(path = %live.display(), "a committed publish lost its fresh folder; left as it is");
            }
        }
        crate::crash::point("swap.together.exchanged");
    }
    crate::crash::point("swap.together.published");
    for pair in &intent.pairs {
        remove(&home.join(&pair.fresh))?;
    }
    for pointer in &intent.pointers {
        remove(&home.join(pointer))?;
    }
    std::fs::remove_file(intent_path).map_err(|e| err(intent_path, e))?;
    sync_dir(home)
}

/// Repairs what an interrupted publish of `live` left behind (see the table in the module
/// doc): a committed [`publish_together`] is finished, anything else unpublished is deleted.
pub fn recover(live: &Path) -> Result<(), String> {
    let dir = staging(live);
    let prefix = format!("{}.", key(live));
    let list = || -> Vec<PathBuf> {
        let Ok(rd) = std::fs::read_dir(&dir) else { return Vec::new() };
        let mut v: Vec<PathBuf> =
            rd.flatten().filter(|e| e.file_name().to_string_lossy().starts_with(&prefix)).map(|e| e.path()).collect();
        v.sort();
        v
    };
    let ends = |p: &Path, suffix: &str| p.file_name().is_some_and(|n| n.to_string_lossy().ends_with(suffix));
    let entries = list();
    // The two-rename fallback moved the live folder aside and crashed: put it back.
    if std::fs::symlink_metadata(live).is_err()
        && let Some(old) = entries.iter().find(|p| ends(p, ".old"))
    {
        rename(old, live)?;
        sync_dir(parent(live))?;
        sync_dir(&dir)?;
    }
    // Committed publishes that include this folder: finish them.
    for p in &entries {
        if ends(p, ".intent") {
            complete(p)?;
        } else if ends(p, ".pending")
            && let Ok(target) = std::fs::read_to_string(p)
        {
            let intent = dir.join(target.trim());
            if intent.is_file() {
                complete(&intent)?;
            }
        }
    }
    // Whatever is left was never published, or is a superseded version.
    for p in list() {
        remove(&p)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Version `v` of a partition: `1 + v % 3` parts holding `v`, and a `_version` marker
    /// `v k` (so that a reader can tell a whole version from a torn or mixed one).
    fn write_version(dir: &Path, v: u64) {
        let k = 1 + v % 3;
        for i in 0..k {
            std::fs::write(dir.join(format!("part-{i:05}.txt")), v.to_string()).expect("part");
        }
        std::fs::write(dir.join("_version"), format!("{v} {k}")).expect("marker");
    }

    fn publish_version(live: &Path, v: u64) {
        recover(live).expect("recover");
        let f = fresh(live).expect("fresh");
        write_version(&f, v);
        swap_in(&f, live).expect("swap");
    }

    /// The version a folder holds, if it holds one whole version.
    fn whole(files: &std::collections::BTreeMap<String, String>) -> Option<u64> {
        let (v, k) = files.get("_version")?.split_once(' ')?;
        let (v, k): (u64, usize) = (v.parse().ok()?, k.parse().ok()?);
        let parts: Vec<&String> = files.iter().filter(|(n, _)| n.starts_with("part-")).map(|(_, c)| c).collect();
        (files.len() == k + 1 && parts.len() == k && parts.iter().all(|c| **c == v.to_string())).then_some(v)
    }

    #[derive(Debug)]
    enum Seen {
        /// The partition's path named nothing.
        Absent,
        /// One whole version.
        Whole(u64),
        /// The version opened was superseded and deleted while it was being read.
        Retired,
        /// Still live, but not one whole version: files missing or from two versions.
        Torn(String),
    }

    /// Reads a partition the way a reader that pins it does: opens the folder once, then
    /// lists it and reads every file relative to that handle.
    fn read_pinned(live: &Path) -> Seen {
        use rustix::fs::{CWD, Dir, Mode, OFlags, fstat, openat};
        use rustix::io::Errno;
        use std::io::Read;
        use std::os::unix::fs::MetadataExt;
        let dir = match openat(CWD, live, OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC, Mode::empty()) {
            Ok(fd) => fd,
            Err(Errno::NOENT) => return Seen::Absent,
            Err(e) => return Seen::Torn(format!("open: {e}")),
        };
        let mut files = std::collections::BTreeMap::new();
        for entry in Dir::read_from(&dir).expect("readdir") {
            let Ok(entry) = entry else { continue };
            let name = entry.file_name().to_string_lossy().into_owned();
            if name == "." || name == ".." {
                continue;
            }
            match openat(&dir, entry.file_name(), OFlags::RDONLY | OFlags::CLOEXEC, Mode::empty()) {
                Ok(fd) => {
                    let mut text = String::new();
                    std::fs::File::from(fd).read_to_string(&mut text).expect("read");
                    files.insert(name, text);
                }
                Err(Errno::NOENT) => {}
                Err(e) => return Seen::Torn(format!("{name}: {e}")),
            }
        }
        if let Some(v) = whole(&files) {
            return Seen::Whole(v);
        }
        let ino = fstat(&dir).expect("fstat").st_ino;
        match std::fs::metadata(live) {
            Ok(m) if m.ino() == ino => Seen::Torn(format!("{files:?}")),
            _ => Seen::Retired,
        }
    }

    #[test]
    fn a_reader_never_finds_the_partition_absent_or_mixed_during_1000_swaps() {
        let dir = tempfile::tempdir().expect("tmp");
        let live = dir.path().join("clean/events/dt=2019-10-01");
        publish_version(&live, 0);
        let stop = std::sync::atomic::AtomicBool::new(false);
        let (counts, versions) = std::thread::scope(|s| {
            let reader = s.spawn(|| {
                let (mut absent, mut torn, mut retired, mut whole) = (0u64, Vec::new(), 0u64, 0u64);
                let mut versions = std::collections::BTreeSet::new();
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    match read_pinned(&live) {
                        Seen::Absent => absent += 1,
                        Seen::Whole(v) => {
                            whole += 1;
                            versions.insert(v);
                        }
                        Seen::Retired => retired += 1,
                        Seen::Torn(what) => torn.push(what),
                    }
                }
                ((absent, torn, retired, whole), versions)
            });
            for v in 1..=1000 {
                publish_version(&live, v);
            }
            stop.store(true, std::sync::atomic::Ordering::Relaxed);
            reader.join().expect("reader")
        });
        let (absent, torn, retired, whole) = counts;
        eprintln!("reads: {whole} whole, {retired} of a retired version, {absent} absent, {} torn", torn.len());
        assert_eq!(absent, 0, "the partition was absent {absent} times");
        assert!(torn.is_empty(), "torn or mixed: {:?}", &torn[..torn.len().min(5)]);
        assert!(versions.len() > 10, "the reader raced the swaps: {} versions seen", versions.len());
        assert!(matches!(read_pinned(&live), Seen::Whole(1000)));
    }

    /// The child of the crash tests: publishes version 2 over version 1 in the folder it is
    /// given, with whatever crash point the parent armed.
    #[test]
    #[ignore = "run by the crash tests, in a child process"]
    fn child() {
        let Some(dir) = std::env::var_os(crate::crash::child::DIR) else { return };
        publish_version(&Path::new(&dir).join("clean/events/dt=2019-10-01"), 2);
    }

    #[test]
    fn a_crash_at_any_point_of_a_swap_recovers_to_one_whole_version() {
        let mut crashed = 0;
        for at in ["swap.staged", "swap.exchanged"] {
            let dir = tempfile::tempdir().expect("tmp");
            let live = dir.path().join("clean/events/dt=2019-10-01");
            publish_version(&live, 1);
            if !crate::crash::child::crashes("swap::tests::child", at, dir.path()) {
                continue;
            }
            crashed += 1;
            // What a reader finds before anyone repairs anything:
            let before = read_pinned(&live);
            assert!(matches!(before, Seen::Whole(_)), "after a crash at {at}: {before:?}");
            recover(&live).expect("recover");
            let after = read_pinned(&live);
            let expected = if at == "swap.staged" { 1 } else { 2 };
            assert!(matches!(after, Seen::Whole(v) if v == expected), "{at}: {after:?}");
            assert_eq!(std::fs::read_dir(staging(&live)).expect("ls").count(), 0, "{at}: staging is empty");
        }
        assert_eq!(crashed, 2, "both points are on the path of a swap");
    }

    #[test]
    fn a_swap_replaces_and_a_crash_between_the_renames_is_repaired() {
        let dir = tempfile::tempdir().expect("tmp");
        let live = dir.path().join("clean/events/dt=2019-10-01");
        for v in ["one", "two"] {
            recover(&live).expect("recover");
            let f = fresh(&live).expect("fresh");
            std::fs::write(f.join("part"), v).expect("write");
            swap_in(&f, &live).expect("swap");
            assert_eq!(std::fs::read_to_string(live.join("part")).expect("read"), v);
        }
        // Nothing is left in the table folder but the partition.
        let names: Vec<String> = std::fs::read_dir(dir.path().join("clean/events"))
            .expect("ls")
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, vec!["dt=2019-10-01"]);
        // A crash after the live folder was moved aside: recovery puts it back and drops the
        // unpublished fresh folder.
        let half = fresh(&live).expect("fresh");
        let aside = staging(&live).join(format!("{}.1-1.old", key(&live)));
        std::fs::rename(&live, &aside).expect("aside");
        recover(&live).expect("recover");
        assert_eq!(std::fs::read_to_string(live.join("part")).expect("read"), "two");
        assert!(!half.exists() && !aside.exists());
    }

    #[test]
    fn a_publish_is_fsynced_before_the_exchange_and_its_folders_after() {
        let dir = tempfile::tempdir().expect("tmp");
        let live = dir.path().join("clean/events/dt=2019-10-01");
        let ours = |from: usize| -> Vec<(&'static str, PathBuf)> {
            let j = JOURNAL.lock().expect("journal");
            j[from..].iter().filter(|(_, p)| p.starts_with(dir.path())).cloned().collect()
        };
        let at = |events: &[(&'static str, PathBuf)], op: &str, p: &Path| {
            events.iter().position(|(o, q)| *o == op && q == p).unwrap_or_else(|| panic!("no {op} {}", p.display()))
        };
        // The first version: no live folder, so a rename; the new table folder's entry is
        // durable before it, the partition's after it.
        let start = JOURNAL.lock().expect("journal").len();
        publish_version(&live, 1);
        let events = ours(start);
        let renamed = at(&events, "rename", &live);
        assert!(at(&events, "fsync", &dir.path().join("clean")) < renamed, "{events:#?}");
        assert!(at(&events, "fsync", live.parent().expect("table")) > renamed, "{events:#?}");
        // The second: every file, then its folder, then the staging folder, then the exchange,
        // then both parents.
        let start = JOURNAL.lock().expect("journal").len();
        recover(&live).expect("recover");
        let f = fresh(&live).expect("fresh");
        write_version(&f, 2);
        swap_in(&f, &live).expect("swap");
        let events = ours(start);
        let exchanged = at(&events, "exchange", &live);
        let folder = at(&events, "fsync", &f);
        for name in ["_version", "part-00000.txt", "part-00001.txt", "part-00002.txt"] {
            assert!(at(&events, "fsync", &f.join(name)) < folder, "{name}: {events:#?}");
        }
        assert!(folder < exchanged, "{events:#?}");
        let staged = events.iter().rposition(|(o, q)| *o == "fsync" && *q == staging(&live)).expect("staging");
        let staged_before = events[..exchanged].iter().any(|(o, q)| *o == "fsync" && *q == staging(&live));
        assert!(staged_before && staged > exchanged, "the staging folder before and after: {events:#?}");
        assert!(at(&events, "fsync", live.parent().expect("table")) > exchanged, "{events:#?}");
    }

    /// The two live folders of the publish-together tests (in two zones, like clean events and
    /// their quarantine).
    fn pair(root: &Path) -> (PathBuf, PathBuf) {
        (root.join("clean/events/dt=2019-10-01"), root.join("quarantine/events/dt=2019-10-01"))
    }

    /// Publishes version `v` of the first and `v + 100` of the second, together.
    fn publish_pair(root: &Path, v: u64) {
        let (a, b) = pair(root);
        recover(&a).expect("recover");
        recover(&b).expect("recover");
        let (fa, fb) = (fresh(&a).expect("fresh"), fresh(&b).expect("fresh"));
        write_version(&fa, v);
        write_version(&fb, v + 100);
        publish_together(&[(&fa, &a), (&fb, &b)]).expect("publish");
    }

    /// The child of the publish-together crash test.
    #[test]
    #[ignore = "run by the crash tests, in a child process"]
    fn child_together() {
        let Some(dir) = std::env::var_os(crate::crash::child::DIR) else { return };
        publish_pair(Path::new(&dir), 2);
    }

    #[test]
    fn a_crash_anywhere_in_a_publish_together_ends_with_both_old_or_both_new() {
        let points = [
            ("swap.together.staged", 1),
            ("swap.together.committed", 2),
            ("swap.together.exchanged:1", 2),
            ("swap.together.exchanged:2", 2),
            ("swap.together.published", 2),
        ];
        for (at, expected) in points {
            // Recovered through the first folder (which holds the intent), or through the
            // second (which holds a pointer to it).
            for first in [true, false] {
                let dir = tempfile::tempdir().expect("tmp");
                let (a, b) = pair(dir.path());
                publish_pair(dir.path(), 1);
                assert!(crate::crash::child::crashes("swap::tests::child_together", at, dir.path()), "{at}");
                for live in [&a, &b] {
                    let seen = read_pinned(live);
                    assert!(matches!(seen, Seen::Whole(_)), "{at}: never absent: {seen:?}");
                }
                let (via, other) = if first { (&a, &b) } else { (&b, &a) };
                recover(via).expect("recover");
                let both = || match (read_pinned(&a), read_pinned(&b)) {
                    (Seen::Whole(x), Seen::Whole(y)) => (x, y),
                    other => panic!("{at}: {other:?}"),
                };
                assert_eq!(both(), (expected, expected + 100), "{at}, recovered through the first: {first}");
                recover(other).expect("recover");
                assert_eq!(both(), (expected, expected + 100), "{at}");
                for live in [&a, &b] {
                    assert_eq!(std::fs::read_dir(staging(live)).expect("ls").count(), 0, "{at}: staging is empty");
                }
            }
        }
    }

    #[test]
    fn the_two_rename_fallback_is_repaired_at_each_step() {
        let dir = tempfile::tempdir().expect("tmp");
        let live = dir.path().join("clean/events/dt=2019-10-01");
        publish_version(&live, 1);
        // Done whole: like an exchange.
        let f = fresh(&live).expect("fresh");
        write_version(&f, 2);
        two_renames(&f, &live).expect("renames");
        assert!(matches!(read_pinned(&live), Seen::Whole(2)) && matches!(read_pinned(&f), Seen::Whole(1)));
        recover(&live).expect("recover");
        assert!(matches!(read_pinned(&live), Seen::Whole(2)) && !f.exists());
        // A crash after the live folder went aside: the old version is put back.
        let f = fresh(&live).expect("fresh");
        write_version(&f, 3);
        let old = staging(&live).join(format!("{}.1-2.old", key(&live)));
        std::fs::rename(&live, &old).expect("aside");
        recover(&live).expect("recover");
        assert!(matches!(read_pinned(&live), Seen::Whole(2)) && !f.exists() && !old.exists());
        // A crash after the fresh folder went live: the old version is dropped.
        let f = fresh(&live).expect("fresh");
        write_version(&f, 4);
        std::fs::rename(&live, &old).expect("aside");
        std::fs::rename(&f, &live).expect("in");
        recover(&live).expect("recover");
        assert!(matches!(read_pinned(&live), Seen::Whole(4)) && !old.exists());
        assert_eq!(std::fs::read_dir(staging(&live)).expect("ls").count(), 0);
    }

    #[test]
    fn a_staged_output_is_published_whole_or_deleted_with_the_live_folders_as_they_were() {
        let dir = tempfile::tempdir().expect("tmp");
        let (a, b) =
            (dir.path().join("clean/events/dt=2019-10-01"), dir.path().join("quarantine/events/dt=2019-10-01"));
        publish_version(&a, 1);
        publish_version(&b, 1);
        // Staged, then dropped (a check failed): nothing of it is left, the live folders unchanged.
        let mut staged = Staged::new(Vec::new());
        for live in [&a, &b] {
            let f = fresh(live).expect("fresh");
            write_version(&f, 2);
            staged.push(f, live.to_path_buf());
        }
        let fresh_dirs: Vec<PathBuf> = (0..2).map(|i| staged.fresh(i).expect("fresh").to_path_buf()).collect();
        drop(staged);
        assert!(fresh_dirs.iter().all(|f| !f.exists()), "{fresh_dirs:?}");
        assert!(matches!(read_pinned(&a), Seen::Whole(1)) && matches!(read_pinned(&b), Seen::Whole(1)));
        // Staged, then published: both new.
        let mut staged = Staged::new(Vec::new());
        for live in [&a, &b] {
            let f = fresh(live).expect("fresh");
            write_version(&f, 3);
            staged.push(f, live.to_path_buf());
        }
        staged.publish().expect("publish");
        assert!(matches!(read_pinned(&a), Seen::Whole(3)) && matches!(read_pinned(&b), Seen::Whole(3)));
        for live in [&a, &b] {
            assert_eq!(std::fs::read_dir(staging(live)).expect("ls").count(), 0, "nothing left in staging");
        }
    }

    #[test]
    fn the_previous_partition_is_the_greatest_value_below() {
        let dir = tempfile::tempdir().expect("tmp");
        let t = dir.path().join("daily");
        for d in ["dt=2019-09-30", "dt=2019-10-01", "dt=2019-10-03", "other=2019-10-02", ".staging"] {
            std::fs::create_dir_all(t.join(d)).expect("mkdir");
        }
        std::fs::write(t.join("dt=2019-10-02"), "a file, not a partition").expect("file");
        assert_eq!(previous_partition(&t.join("dt=2019-10-03")), Some(t.join("dt=2019-10-01")));
        assert_eq!(previous_partition(&t.join("dt=2019-10-02")), Some(t.join("dt=2019-10-01")), "it need not exist");
        assert_eq!(previous_partition(&t.join("dt=2019-09-30")), None, "the first one has none");
        assert_eq!(previous_partition(&t.join("plain")), None);
    }
}
