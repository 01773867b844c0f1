//! Blocking work off a shard's executor: Parquet encoding and file I/O of
//! the persister, Parquet reads of a scan. Each call runs its closure on a
//! new thread and answers through a oneshot, whose cross-thread wake-up is
//! the one the shards already use for each other's replies.
//!
//! Why not glommio's `spawn_blocking`: a shard that awaited it at shutdown,
//! with nothing else to run, slept forever after the closure had returned
//! (reproduced with two shards: SIGTERM never finished); the oneshot path
//! wakes the executor through its foreign-waker queue every time. A thread
//! per call is cheap next to the work: a snapshot every few seconds, a
//! query that reads files.

use std::future::Future;

/// Runs `work` on its own thread; resolves to its result, or the error of
/// starting the thread. A panic in `work` is re-raised here.
pub fn run<R, F>(work: F) -> impl Future<Output = std::io::Result<R>>
where
    F: FnOnce() -> R + Send + 'static,
    R: Send + 'static,
{
    run_at(0, work)
}

/// Nice value of a query's reader threads: the kernel gives them about a
/// tenth of a core's time while the shards (nice 0, pinned) want it all, so
/// a heavy query slows down instead of slowing ingest.
const QUERY_NICE: libc::c_int = 10;

/// [`run`] for a query's file reads and folds: the thread runs below the
/// shards ([`QUERY_NICE`]).
pub fn run_for_query<R, F>(work: F) -> impl Future<Output = std::io::Result<R>>
where
    F: FnOnce() -> R + Send + 'static,
    R: Send + 'static,
{
    run_at(QUERY_NICE, work)
}

fn run_at<R, F>(nice: libc::c_int, work: F) -> impl Future<Output = std::io::Result<R>>
where
    F: FnOnce() -> R + Send + 'static,
    R: Send + 'static,
{
    let (reply, answer) = futures_channel::oneshot::channel();
    let spawned = std::thread::Builder::new()
        .name("ringest-blocking".into())
        .spawn(move || {
            if nice != 0 {
                // Linux: a thread's nice value is its own (`who` = its tid).
                // A failure only leaves it at the shards' priority.
                // SAFETY: plain syscalls on this thread; no memory passed.
                unsafe {
                    let tid = libc::gettid();
                    libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, nice);
                }
            }
            let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(work));
            let _ = reply.send(result);
        });
    async move {
        spawned?;
        match answer.await {
            Ok(Ok(result)) => Ok(result),
            Ok(Err(panic)) => std::panic::resume_unwind(panic),
            Err(_) => unreachable!("the thread always answers: catch_unwind holds the panic"),
        }
    }
}
