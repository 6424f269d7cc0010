//! SIGINT and SIGTERM: what an interrupted run undoes before it exits.
//!
//! A run registers what an interruption must not leave behind: a set directory still being
//! written, a child process, a scratch server. On SIGINT or SIGTERM a watcher thread runs
//! those cleanups, newest first, and exits with 130 (SIGINT) or 143 (SIGTERM). A tool that
//! handles signals in its own async code instead (dropping futures, so their children die
//! with them) waits on `signalled()`; while it does, the watcher leaves the signal to it.
//!
//! A cleanup is dropped when its work is done. An [`Undo`] undoes its work when dropped
//! unfinished too (a failed run), and [`Undo::done_if_ok`] finishes the work while no cleanup
//! can run, so a signal never undoes something that was just completed (a set whose manifest
//! is being written is either removed whole or kept whole).
//!
//! After the cleanups, and before it exits, the watcher sends the run's notification (at most
//! [`crate::notify::SIGNAL_LIMIT`]), so a job stopped at its deadline is still reported.
//!
//! Kubernetes ends a job past its `activeDeadlineSeconds` with SIGTERM, and our tools run as
//! the container's process 1, for which the kernel ignores SIGTERM unless a handler is set:
//! without this, the job would wait out the grace period and be killed with nothing cleaned.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard, Once};

use crate::exit;

type Action = Box<dyn FnOnce() + Send>;

struct Registry {
    next_id: u64,
    actions: Vec<(u64, Action)>,
}

static REGISTRY: Mutex<Registry> = Mutex::new(Registry {
    next_id: 0,
    actions: Vec::new(),
});

/// Held by the watcher while it runs the cleanups, and by [`Undo::done_if_ok`] while
/// the work completes: one waits for the other. Separate from the registry so that the
/// completing step may itself register cleanups (a manifest is written through a temporary
/// file that registers its own).
static COMPLETING: Mutex<()> = Mutex::new(());

fn completing() -> MutexGuard<'static, ()> {
    COMPLETING.lock().unwrap_or_else(|e| e.into_inner())
}

thread_local! {
    /// Set while this thread holds [`COMPLETING`] for a step: [`checkpoint`] lets it go on.
    static COMPLETING_HERE: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Runs `step` holding [`COMPLETING`], marked so that its own checkpoints do not park.
fn while_completing<T>(step: impl FnOnce() -> T) -> T {
    let _completing = completing();
    let outer = COMPLETING_HERE.with(|c| c.replace(true));
    let result = step();
    COMPLETING_HERE.with(|c| c.set(outer));
    result
}

/// Set once a signal is being handled: [`checkpoint`] then parks the calling thread.
static INTERRUPTING: AtomicBool = AtomicBool::new(false);

/// How long the watcher lets working threads reach a [`checkpoint`] before cleaning up.
const SETTLE: std::time::Duration = std::time::Duration::from_millis(50);

/// How many `signalled()` futures are waiting: while any is, the watcher does nothing.
static ASYNC_WAITERS: AtomicUsize = AtomicUsize::new(0);

fn registry() -> MutexGuard<'static, Registry> {
    // A cleanup that panicked poisons nothing worth refusing: the list stays usable.
    REGISTRY.lock().unwrap_or_else(|e| e.into_inner())
}

/// The signals that interrupt a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    Interrupt,
    Terminate,
}

impl Signal {
    fn from_raw(raw: i32) -> Signal {
        if raw == libc::SIGTERM {
            Signal::Terminate
        } else {
            Signal::Interrupt
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Signal::Interrupt => "SIGINT",
            Signal::Terminate => "SIGTERM",
        }
    }

    /// 130 after SIGINT, 143 after SIGTERM (128 + the signal number, as shells report).
    pub fn exit_code(self) -> u8 {
        match self {
            Signal::Interrupt => exit::INTERRUPTED,
            Signal::Terminate => exit::TERMINATED,
        }
    }
}

/// Starts the watcher thread (once per process). Called by [`crate::entry::main`].
pub fn install(tool: &'static str) {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let signals = match signal_hook::iterator::Signals::new([libc::SIGINT, libc::SIGTERM]) {
            Ok(signals) => signals,
            Err(e) => {
                tracing::warn!("cannot watch for SIGINT/SIGTERM: {e}");
                return;
            }
        };
        let spawned = std::thread::Builder::new()
            .name("interrupt".into())
            .spawn(move || watch(tool, signals));
        if let Err(e) = spawned {
            tracing::warn!("cannot watch for SIGINT/SIGTERM: {e}");
        }
    });
}

thread_local! {
    static IS_WATCHER: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

fn watch(tool: &str, mut signals: signal_hook::iterator::Signals) {
    IS_WATCHER.with(|w| w.set(true));
    for raw in signals.forever() {
        if ASYNC_WAITERS.load(Ordering::SeqCst) > 0 {
            continue;
        }
        let signal = Signal::from_raw(raw);
        INTERRUPTING.store(true, Ordering::SeqCst);
        std::thread::sleep(SETTLE);
        // Held until the exit: no work completes while its cleanup could run.
        let _completing = completing();
        let actions = std::mem::take(&mut registry().actions);
        if std::io::IsTerminal::is_terminal(&std::io::stderr()) {
            // Below a progress bar that may be on screen.
            eprintln!();
        }
        if !actions.is_empty() {
            tracing::warn!("{}: cleaning up {} item(s)", signal.name(), actions.len());
        }
        for (_, action) in actions.into_iter().rev() {
            action();
        }
        eprintln!("{tool}: interrupted by {}", signal.name());
        // Within the grace period: bounded by notify::SIGNAL_LIMIT.
        crate::notify::interrupted(
            signal.exit_code(),
            &format!("interrupted by {}", signal.name()),
        );
        std::process::exit(i32::from(signal.exit_code()));
    }
}

/// Once an interruption is being handled, the calling thread stops here for good and leaves
/// the rest to the watcher. Called by loops that write into something a cleanup removes (a
/// data directory being filled), after waiting on a child (which may have died of the same
/// signal), and by destructors that undo the same thing as a cleanup: otherwise the run would
/// unwind and clean up beside the watcher, in another order.
pub fn checkpoint() {
    // The watcher's own cleanups pass through the same code (running pg_ctl, say); a step
    // that holds off the cleanups (writing a manifest) finishes first, or the watcher would
    // wait for it forever.
    if INTERRUPTING.load(Ordering::Relaxed)
        && !IS_WATCHER.with(std::cell::Cell::get)
        && !COMPLETING_HERE.with(std::cell::Cell::get)
    {
        loop {
            std::thread::park();
        }
    }
}

/// For a reader feeding a step run by [`uninterrupted`] (a member of a tarball being written
/// into a directory a cleanup empties): outside such a step, as [`checkpoint`]; inside one,
/// once an interruption is being handled, an error, so that a long step ends early instead of
/// holding up the exit. The caller then stops at a [`checkpoint`] after the step.
pub fn checkpoint_read() -> std::io::Result<()> {
    if INTERRUPTING.load(Ordering::Relaxed) && COMPLETING_HERE.with(std::cell::Cell::get) {
        // Not ErrorKind::Interrupted: readers retry on that.
        return Err(std::io::Error::other("interrupted by a signal"));
    }
    checkpoint();
    Ok(())
}

/// Runs `step` while no interruption's cleanups run (the watcher waits for it): for a step
/// that makes something and registers what undoes it, so that an interruption finds both or
/// neither. Keep it short: the exit waits for it.
pub fn uninterrupted<T>(step: impl FnOnce() -> T) -> T {
    while_completing(step)
}

/// Something an interruption undoes until this is dropped or released.
#[must_use = "the cleanup is unregistered as soon as this is dropped"]
#[derive(Debug)]
pub struct Cleanup {
    id: u64,
}

/// Registers `action` to run if the process is interrupted before the returned guard is
/// dropped.
pub fn on_interrupt(action: impl FnOnce() + Send + 'static) -> Cleanup {
    let mut registry = registry();
    let id = registry.next_id;
    registry.next_id += 1;
    registry.actions.push((id, Box::new(action)));
    Cleanup { id }
}

/// An interruption removes `dir` (an unfinished set, a scratch directory) with everything in it.
pub fn remove_dir_on_interrupt(dir: PathBuf) -> Cleanup {
    on_interrupt(move || {
        if dir.exists() {
            tracing::warn!("removing the unfinished {}", dir.display());
            if let Err(e) = std::fs::remove_dir_all(&dir) {
                tracing::warn!("cannot remove {}: {e}", dir.display());
            }
        }
    })
}

/// An interruption removes the file `path` (a temporary file not yet renamed into place).
pub fn remove_file_on_interrupt(path: PathBuf) -> Cleanup {
    on_interrupt(move || {
        let _ = std::fs::remove_file(&path);
    })
}

/// An interruption sends SIGTERM to the child process `pid` and waits (up to 10 s) for it to
/// exit, so that the child's own cleanup is over before older cleanups run.
pub fn kill_on_interrupt(pid: u32) -> Cleanup {
    on_interrupt(move || terminate(pid))
}

/// The pid is a child we spawned and have not reaped: its guard is dropped right after the
/// wait that reaps it, so another process cannot have been given the pid in between.
fn terminate(pid: u32) {
    use rustix::process::{kill_process, waitpid, Pid, Signal, WaitOptions};
    let Some(pid) = i32::try_from(pid).ok().and_then(Pid::from_raw) else {
        return;
    };
    if kill_process(pid, Signal::TERM).is_err() {
        return;
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while std::time::Instant::now() < deadline {
        // Ok(None): still running. Done, or an error (reaped meanwhile by its owner): gone.
        match waitpid(Some(pid), WaitOptions::NOHANG) {
            Ok(None) => std::thread::sleep(std::time::Duration::from_millis(20)),
            _ => return,
        }
    }
    tracing::warn!("child process {pid:?} did not end within 10 s of SIGTERM");
}

/// Work that is undone unless it is finished: when this is dropped unfinished (the run
/// failed) and when the run is interrupted. The same `undo` serves both.
pub struct Undo {
    undo: std::sync::Arc<dyn Fn() + Send + Sync>,
    /// Present until the work is finished.
    cleanup: Option<Cleanup>,
}

impl std::fmt::Debug for Undo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Undo")
            .field("finished", &self.cleanup.is_none())
            .finish()
    }
}

impl Undo {
    pub fn new(undo: impl Fn() + Send + Sync + 'static) -> Undo {
        let undo: std::sync::Arc<dyn Fn() + Send + Sync> = std::sync::Arc::new(undo);
        let on_signal = std::sync::Arc::clone(&undo);
        Undo {
            undo,
            cleanup: Some(on_interrupt(move || on_signal())),
        }
    }

    /// The work is finished: nothing is undone any more.
    pub fn done(mut self) {
        self.cleanup.take();
    }

    /// Runs `finish` (the step that completes the work, such as writing a manifest) while no
    /// interruption can undo it; the work counts as finished if `finish` succeeds.
    pub fn done_if_ok<T, E>(&mut self, finish: impl FnOnce() -> Result<T, E>) -> Result<T, E> {
        while_completing(|| {
            let result = finish();
            if result.is_ok() {
                self.cleanup.take();
            }
            result
        })
    }
}

impl Drop for Undo {
    fn drop(&mut self) {
        // Interrupted meanwhile, the watcher undoes it (in order, with the rest).
        checkpoint();
        // The cleanup stays registered while undoing, so an interruption finishes the job.
        if let Some(_cleanup) = self.cleanup.take() {
            (self.undo)();
        }
    }
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        registry().actions.retain(|(id, _)| *id != self.id);
    }
}

/// Resolves when SIGINT or SIGTERM arrives, for tools that handle interruption in async code
/// (in a `tokio::select!` beside the work). While it waits, the watcher leaves signals alone.
#[cfg(any(feature = "postgres", feature = "kafka"))]
pub async fn signalled() -> Signal {
    use tokio::signal::unix::{signal, SignalKind};

    struct Waiting;
    impl Drop for Waiting {
        fn drop(&mut self) {
            ASYNC_WAITERS.fetch_sub(1, Ordering::SeqCst);
        }
    }
    ASYNC_WAITERS.fetch_add(1, Ordering::SeqCst);
    let _waiting = Waiting;
    let (Ok(mut interrupt), Ok(mut terminate)) = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) else {
        // No handler could be set: never resolve, and let the watcher act instead.
        drop(_waiting);
        return std::future::pending().await;
    };
    tokio::select! {
        _ = interrupt.recv() => Signal::Interrupt,
        _ = terminate.recv() => Signal::Terminate,
    }
}

/// Runs `work` until it ends or SIGINT/SIGTERM arrives. Interrupted, `work` is dropped (its
/// `kill_on_drop` children die, its guards clean up) and the error carries the signal's exit
/// code with `aftermath`, what the user finds after it (e.g. "the incomplete set was removed").
#[cfg(any(feature = "postgres", feature = "kafka"))]
pub async fn or_interrupted<T>(
    work: impl std::future::Future<Output = anyhow::Result<T>>,
    aftermath: &str,
) -> anyhow::Result<T> {
    tokio::select! {
        result = work => result,
        signal = signalled() => Err(crate::CodedError::new(
            signal.exit_code(),
            anyhow::anyhow!("interrupted by {}; {aftermath}", signal.name()),
        )
        .into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn registered(id: u64) -> bool {
        registry().actions.iter().any(|(i, _)| *i == id)
    }

    #[test]
    fn dropped_cleanups_are_unregistered_without_running() {
        let dir = tempfile::tempdir().unwrap();
        let kept = dir.path().join("kept");
        std::fs::create_dir(&kept).unwrap();
        let dropped = remove_dir_on_interrupt(kept.clone());
        let dropped_id = dropped.id;
        assert!(registered(dropped_id));
        drop(dropped);
        assert!(!registered(dropped_id));
        assert!(kept.exists());
    }

    #[test]
    fn undo_runs_when_dropped_unfinished_and_not_once_done() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("work");
        let undo_of = |path: &std::path::Path| {
            std::fs::create_dir(path).unwrap();
            let path = path.to_path_buf();
            Undo::new(move || std::fs::remove_dir_all(&path).unwrap())
        };

        drop(undo_of(&path));
        assert!(!path.exists(), "dropped unfinished: undone");

        let mut undo = undo_of(&path);
        let id = undo.cleanup.as_ref().unwrap().id;
        assert!(registered(id));
        assert_eq!(undo.done_if_ok(|| Err::<(), _>("failed")), Err("failed"));
        assert!(registered(id), "a failed finish leaves it to undo");
        assert_eq!(undo.done_if_ok(|| Ok::<_, ()>(7)), Ok(7));
        assert!(!registered(id));
        drop(undo);
        assert!(path.exists(), "finished: kept");

        std::fs::remove_dir(&path).unwrap();
        let undo = undo_of(&path);
        undo.done();
        assert!(path.exists());
    }

    #[test]
    fn exit_codes_follow_the_shell_convention() {
        assert_eq!(Signal::Interrupt.exit_code(), 130);
        assert_eq!(Signal::Terminate.exit_code(), 143);
        assert_eq!(Signal::from_raw(libc::SIGTERM), Signal::Terminate);
        assert_eq!(Signal::from_raw(libc::SIGINT), Signal::Interrupt);
    }
}
