//! Which files of a PostgreSQL data directory a base backup read from disk holds, and which of
//! them are relation files whose pages carry an LSN: the rules `pg_basebackup` applies
//! (PostgreSQL 15's `basebackup.c`), kept in one place for the backup and the delta restore.

use crate::wal::blocks::RelFileNode;

/// Directories whose contents are not backed up (the directory itself is, empty).
pub const EXCLUDED_DIR_CONTENTS: &[&str] = &[
    "pg_wal",
    "pg_dynshmem",
    "pg_notify",
    "pg_replslot",
    "pg_serial",
    "pg_snapshots",
    "pg_stat_tmp",
    "pg_subtrans",
];

/// Files never backed up (by name, anywhere in the directory's top level).
pub const EXCLUDED_FILES: &[&str] = &[
    "postgresql.auto.conf.tmp",
    "current_logfiles.tmp",
    "backup_label",
    "backup_label.old",
    "tablespace_map",
    "tablespace_map.old",
    "postmaster.pid",
    "postmaster.opts",
    "recovery.signal",
    "standby.signal",
];

/// What a path (relative to the data directory, `/`-separated) is to a backup.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathClass {
    /// Not backed up at all.
    Skip,
    /// A directory kept empty (its contents are skipped).
    EmptyDir,
    /// The main fork of a relation (or one of its 1 GiB segments): 8 KiB pages, each with
    /// its LSN, so an incremental backup can keep only the pages changed since a point.
    RelationMain,
    /// Any other file: copied whole when it changed.
    Other,
}

/// Classifies `path`; `has_init_fork` tells whether the relation of a relation file has an
/// init fork (`<relfilenode>_init`) beside it, making it unlogged: only its init fork is kept.
pub fn classify(path: &str, is_dir: bool, has_init_fork: impl Fn(&str) -> bool) -> PathClass {
    let name = path.rsplit('/').next().unwrap_or(path);
    let top_level = !path.contains('/');
    if is_dir {
        if EXCLUDED_DIR_CONTENTS.contains(&path) {
            return PathClass::EmptyDir;
        }
        return if excluded_dir_content(path) {
            PathClass::Skip
        } else {
            PathClass::Other
        };
    }
    if excluded_dir_content(path)
        || (top_level && EXCLUDED_FILES.contains(&name))
        || name.starts_with("pg_internal.init")
        || name.starts_with("pgsql_tmp")
        || path.contains("/pgsql_tmp")
    {
        return PathClass::Skip;
    }
    let Some(relation) = relation_file(path) else {
        return PathClass::Other;
    };
    if relation.temporary {
        return PathClass::Skip;
    }
    if relation.fork != Some("init") && has_init_fork(relation.relfilenode) {
        return PathClass::Skip;
    }
    if relation.fork.is_none() {
        PathClass::RelationMain
    } else {
        PathClass::Other
    }
}

/// Whether `path` lies inside a directory whose contents are skipped (`pg_wal/...`).
fn excluded_dir_content(path: &str) -> bool {
    EXCLUDED_DIR_CONTENTS.iter().any(|dir| {
        path.strip_prefix(dir)
            .is_some_and(|rest| rest.starts_with('/'))
    })
}

/// A relation file's parts: `base/5/16384_fsm.1` is relfilenode 16384, fork fsm, segment 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RelationFile<'a> {
    pub relfilenode: &'a str,
    pub fork: Option<&'a str>,
    /// A temporary relation (`t3_16384`): never backed up.
    pub temporary: bool,
}

/// Parses a relation file path: under `global/`, `base/<db>/` or
/// `pg_tblspc/<spc>/<version dir>/<db>/`, named `[t<backend>_]<relfilenode>[_<fork>][.<segment>]`.
pub fn relation_file(path: &str) -> Option<RelationFile<'_>> {
    let parts: Vec<&str> = path.split('/').collect();
    let in_relation_dir = match parts.as_slice() {
        ["global", _] => true,
        ["base", db, _] => all_digits(db),
        ["pg_tblspc", spc, _, db, _] => all_digits(spc) && all_digits(db),
        _ => false,
    };
    if !in_relation_dir {
        return None;
    }
    let name = parts.last()?;
    let (name, temporary) = match name.strip_prefix('t') {
        Some(rest) => {
            let (backend, rest) = rest.split_once('_')?;
            all_digits(backend).then_some(())?;
            (rest, true)
        }
        None => (*name, false),
    };
    let name = match name.split_once('.') {
        Some((base, segment)) if all_digits(segment) => base,
        Some(_) => return None,
        None => name,
    };
    let (relfilenode, fork) = match name.split_once('_') {
        Some((node, fork)) if ["fsm", "vm", "init"].contains(&fork) => (node, Some(fork)),
        Some(_) => return None,
        None => (name, None),
    };
    all_digits(relfilenode).then_some(RelationFile {
        relfilenode,
        fork,
        temporary,
    })
}

/// `pg_default`'s OID: relations under `base/<db>/`.
pub const DEFAULT_TABLESPACE: u32 = 1663;
/// `pg_global`'s OID: shared relations under `global/`.
pub const GLOBAL_TABLESPACE: u32 = 1664;

/// The storage of a main-fork relation file and its segment number, as WAL records name it:
/// `base/5/16384.2` is tablespace 1663, database 5, relfilenode 16384, segment 2.
pub fn relation_node(path: &str) -> Option<(RelFileNode, u32)> {
    let relation = relation_file(path)?;
    if relation.fork.is_some() || relation.temporary {
        return None;
    }
    let parts: Vec<&str> = path.split('/').collect();
    let (spc, db) = match parts.as_slice() {
        ["global", _] => (GLOBAL_TABLESPACE, 0),
        ["base", db, _] => (DEFAULT_TABLESPACE, db.parse().ok()?),
        ["pg_tblspc", spc, _, db, _] => (spc.parse().ok()?, db.parse().ok()?),
        _ => return None,
    };
    let segment = match parts.last()?.split_once('.') {
        Some((_, segment)) => segment.parse().ok()?,
        None => 0,
    };
    let rel = relation.relfilenode.parse().ok()?;
    Some((RelFileNode { spc, db, rel }, segment))
}

fn all_digits(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn class(path: &str) -> PathClass {
        classify(path, false, |node| node == "16500")
    }

    #[test]
    fn relation_files_are_recognised_in_every_place_they_live() {
        assert_eq!(
            relation_file("base/5/16384_fsm.1"),
            Some(RelationFile {
                relfilenode: "16384",
                fork: Some("fsm"),
                temporary: false
            })
        );
        assert_eq!(relation_file("global/1262").unwrap().relfilenode, "1262");
        assert!(relation_file("pg_tblspc/16390/PG_15_202209061/5/16391.2").is_some());
        assert!(relation_file("base/5/t3_16384").unwrap().temporary);
        let node = |spc, db, rel| RelFileNode { spc, db, rel };
        assert_eq!(
            relation_node("base/5/16384.3"),
            Some((node(1663, 5, 16384), 3))
        );
        assert_eq!(relation_node("global/1262"), Some((node(1664, 0, 1262), 0)));
        assert_eq!(
            relation_node("pg_tblspc/16390/PG_15_202209061/5/16391"),
            Some((node(16390, 5, 16391), 0))
        );
        assert_eq!(relation_node("base/5/16384_vm"), None);
        assert_eq!(relation_node("base/5/t3_16384"), None);
        for not in [
            "base/5/PG_VERSION",
            "global/pg_control",
            "base/5/16384.x",
            "base/5/16384_foo",
            "pg_xact/0000",
            "base/pgsql_tmp/16384",
        ] {
            assert_eq!(relation_file(not), None, "{not}");
        }
    }

    #[test]
    fn classification_follows_pg_basebackup() {
        assert_eq!(class("base/5/16384"), PathClass::RelationMain);
        assert_eq!(class("base/5/16384.3"), PathClass::RelationMain);
        assert_eq!(class("base/5/16384_vm"), PathClass::Other);
        assert_eq!(class("global/pg_control"), PathClass::Other);
        // Unlogged: only the init fork.
        assert_eq!(class("base/5/16500"), PathClass::Skip);
        assert_eq!(class("base/5/16500_fsm"), PathClass::Skip);
        assert_eq!(class("base/5/16500_init"), PathClass::Other);
        for skipped in [
            "postmaster.pid",
            "backup_label",
            "pg_wal/000000010000000000000001",
            "pg_wal/archive_status/x.done",
            "pg_replslot/s/state",
            "base/5/pg_internal.init",
            "base/5/t3_16384",
            "base/pgsql_tmp/pgsql_tmp123.0",
        ] {
            assert_eq!(class(skipped), PathClass::Skip, "{skipped}");
        }
        assert_eq!(classify("pg_wal", true, |_| false), PathClass::EmptyDir);
        assert_eq!(
            classify("pg_wal/archive_status", true, |_| false),
            PathClass::Skip
        );
        assert_eq!(classify("base/5", true, |_| false), PathClass::Other);
    }
}
