//! Publishing a folder by swap, the way every job of the lake writes its output.
//!
//! A job writes into a fresh folder under `<zone>/.staging/` (beside the tables, never inside
//! one, so no reader listing a table ever sees half-written or superseded files), then swaps it
//! in: the live folder is renamed into staging, the fresh one renamed to the live name, the old
//! one deleted. A reader sees the old partition or the new one. A crash between the two renames
//! leaves the old folder in staging; [`recover`] (run before every write) puts it back, and
//! removes fresh folders that never got published.

use std::path::{Path, PathBuf};

fn staging(live: &Path) -> PathBuf {
    live.parent().and_then(Path::parent).unwrap_or(Path::new(".")).join(".staging")
}

/// The staging name prefix of a live folder: `events__dt=2019-10-01`.
fn key(live: &Path) -> String {
    let name =
        |p: Option<&Path>| p.and_then(Path::file_name).map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    format!("{}__{}", name(live.parent()), name(Some(live)))
}

fn err(p: &Path, e: std::io::Error) -> String {
    format!("{}: {e}", p.display())
}

/// A new, empty folder to write the next version of `live` into.
pub fn fresh(live: &Path) -> Result<PathBuf, String> {
    let dir = staging(live).join(format!("{}.{}-{}.tmp", key(live), std::process::id(), fastrand::u64(..)));
    std::fs::create_dir_all(&dir).map_err(|e| err(&dir, e))?;
    Ok(dir)
}

/// Publishes `fresh` as `live`, replacing what was there.
pub fn swap_in(fresh: &Path, live: &Path) -> Result<(), String> {
    if let Some(parent) = live.parent() {
        std::fs::create_dir_all(parent).map_err(|e| err(parent, e))?;
    }
    let old = staging(live).join(format!("{}.{}-{}.old", key(live), std::process::id(), fastrand::u64(..)));
    if live.exists() {
        std::fs::rename(live, &old).map_err(|e| err(live, e))?;
    }
    std::fs::rename(fresh, live).map_err(|e| err(fresh, e))?;
    if old.exists() {
        std::fs::remove_dir_all(&old).map_err(|e| err(&old, e))?;
    }
    Ok(())
}

/// Repairs what an interrupted swap of `live` left behind.
pub fn recover(live: &Path) -> Result<(), String> {
    let dir = staging(live);
    let Ok(rd) = std::fs::read_dir(&dir) else { return Ok(()) };
    let prefix = format!("{}.", key(live));
    let mut entries: Vec<PathBuf> =
        rd.flatten().filter(|e| e.file_name().to_string_lossy().starts_with(&prefix)).map(|e| e.path()).collect();
    entries.sort();
    for p in entries {
        let name = p.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        if name.ends_with(".old") && !live.exists() {
            std::fs::rename(&p, live).map_err(|e| err(&p, e))?;
        } else {
            std::fs::remove_dir_all(&p).map_err(|e| err(&p, e))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
