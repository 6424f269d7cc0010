//! The target database of a restore: what is there already, the guards before changing it
//! (refusals, the question, the safety dump of what gets replaced), and getting it ready
//! (sessions ended, a new database created).

use common::cli::PgArgs;

use crate::catalog;
use crate::pgbin::PgBin;
use crate::restore::{RestoreArgs, Selection};
use crate::safety;

/// The target database as found before the restore, and what the restore does to it.
pub struct TargetState {
    pub exists: bool,
    /// Connection settings of the target database itself.
    pub pg: PgArgs,
    /// Tables to restore that already exist there.
    pub conflicts: Vec<(String, String)>,
    /// Existing objects get replaced (a safety dump is due).
    pub replaces: bool,
}

/// Finds the target database and which tables to restore are already in it; refuses to
/// replace them without --clean, and --data-only for tables that are not there.
pub async fn inspect(
    admin: &tokio_postgres::Client,
    args: &RestoreArgs,
    selection: &Selection<'_>,
) -> anyhow::Result<TargetState> {
    let (target, tables) = (&selection.target, &selection.tables);
    let exists = catalog::database_exists(admin, target).await?;
    let pg = catalog::for_database(&args.pg, target);
    let conflicts: Vec<(String, String)> = if exists {
        let client = common::postgres::connect(&pg, crate::TOOL).await?;
        let present = catalog::list_tables(&client).await?;
        tables
            .iter()
            .filter(|t| {
                present
                    .iter()
                    .any(|p| p.schema == t.schema && p.name == t.name)
            })
            .map(|t| (t.schema.clone(), t.name.clone()))
            .collect()
    } else {
        Vec::new()
    };
    if args.data_only && conflicts.len() < tables.len() {
        let missing: Vec<String> = tables
            .iter()
            .filter(|t| !conflicts.contains(&(t.schema.clone(), t.name.clone())))
            .map(|t| t.display_name())
            .collect();
        anyhow::bail!(
            "--data-only replaces the rows of existing tables, but {} not in database '{target}' ({}); restore without --data-only to create them",
            if missing.len() == 1 { "this one is" } else { "these are" },
            missing.join(", ")
        );
    }
    if !conflicts.is_empty() && !args.clean && !args.data_only {
        anyhow::bail!(
            "{} table(s) to restore already exist in database '{target}' ({}); pass --clean to replace them (a safety dump is taken first) or restore into a new database",
            conflicts.len(),
            names(&conflicts)
        );
    }
    // A whole-database --clean may replace any object of the dump, not only tables.
    let replaces = exists
        && (args.data_only || (args.clean && (args.table.is_empty() || !conflicts.is_empty())));
    Ok(TargetState {
        exists,
        pg,
        conflicts,
        replaces,
    })
}

/// Says what is about to happen and asks; unattended, a restore that replaces anything or
/// ends sessions is refused without --yes.
pub fn confirm(
    args: &RestoreArgs,
    selection: &Selection<'_>,
    state: &TargetState,
) -> anyhow::Result<()> {
    let replacing = if state.conflicts.is_empty() {
        String::new()
    } else if args.data_only {
        format!(", replacing the rows of {}", names(&state.conflicts))
    } else {
        format!(", replacing {}", names(&state.conflicts))
    };
    let question = format!(
        "restore {}{} from set {} into {} database '{}'{replacing}",
        selection.what,
        if args.schema_only {
            " (schema only)"
        } else {
            ""
        },
        selection.chosen.manifest.id,
        if state.exists { "existing" } else { "new" },
        selection.target,
    );
    let destructive = state.replaces || (state.exists && args.terminate_connections);
    let unattended = if destructive {
        common::prompt::Unattended::Refuse
    } else {
        common::prompt::Unattended::Proceed
    };
    common::prompt::confirm(&question, args.yes, unattended)?;
    tracing::info!("{question}");
    Ok(())
}

/// Before loading: a safety dump of what gets replaced, other sessions ended, a new database
/// created. Returns where the safety dump went.
pub async fn prepare(
    bin: &PgBin,
    admin: &tokio_postgres::Client,
    args: &RestoreArgs,
    selection: &Selection<'_>,
    state: &TargetState,
) -> anyhow::Result<Option<String>> {
    let target = &selection.target;
    let mut safety_dump = None;
    if state.replaces && !args.no_safety_dump {
        let (store, folder) = match &args.safety_dir {
            Some(location) => (safety::open_dir(location)?, ""),
            None => (
                selection.chosen.repo.store().clone(),
                safety::DEFAULT_SAFETY_SUBDIR,
            ),
        };
        // A whole-database restore may replace any object, so keep all of it.
        let scope = if args.table.is_empty() {
            &[][..]
        } else {
            &state.conflicts[..]
        };
        let recipients = safety::recipients(&selection.chosen.manifest)?;
        let shown =
            safety::safety_dump(bin, &store, folder, target, scope, recipients.as_ref()).await?;
        tracing::info!("safety dump of what gets replaced: {shown}");
        safety_dump = Some(shown);
    }
    if state.exists && args.terminate_connections {
        let ended = catalog::terminate_sessions(admin, target).await?;
        tracing::info!("terminated {ended} session(s) on '{target}'");
    }
    if !state.exists {
        create_target(admin, target, &selection.db.encoding).await?;
    }
    Ok(safety_dump)
}

/// Creates the target database. One that appears meanwhile is the work of a restore killed
/// a moment ago whose server session finished its `CREATE DATABASE` after the kill: it is
/// empty (nothing of the killed run got further), so the restore goes on into it.
async fn create_target(
    admin: &tokio_postgres::Client,
    target: &str,
    encoding: &str,
) -> anyhow::Result<()> {
    match catalog::create_database(admin, target, Some(encoding)).await {
        Ok(()) => {
            tracing::info!("created database '{target}'");
            Ok(())
        }
        Err(e) if catalog::database_exists(admin, target).await? && is_duplicate(&e) => {
            tracing::warn!(
                "database '{target}' was created meanwhile (by an interrupted restore's session); restoring into it"
            );
            Ok(())
        }
        Err(e) => Err(e),
    }
}

/// Whether creating a database failed because one of that name exists.
fn is_duplicate(e: &anyhow::Error) -> bool {
    e.chain()
        .filter_map(|c| c.downcast_ref::<tokio_postgres::Error>())
        .filter_map(|c| c.code())
        .any(|code| {
            *code == tokio_postgres::error::SqlState::DUPLICATE_DATABASE
                || *code == tokio_postgres::error::SqlState::UNIQUE_VIOLATION
        })
}

/// The first ten tables, for messages.
fn names(tables: &[(String, String)]) -> String {
    let mut list: Vec<String> = tables
        .iter()
        .take(10)
        .map(|(s, t)| format!("{s}.{t}"))
        .collect();
    if tables.len() > 10 {
        list.push(format!("and {} more", tables.len() - 10));
    }
    list.join(", ")
}
