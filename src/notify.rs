//! systemd service notification (`sd_notify`) and the watchdog, without a
//! dependency: datagrams on the Unix socket named by `$NOTIFY_SOCKET`.
//!
//! Owns: reading `NOTIFY_SOCKET`, `WATCHDOG_USEC` and `WATCHDOG_PID` once,
//! sending `READY=1`, `STOPPING=1`, `STATUS=…`, `EXTEND_TIMEOUT_USEC=…` and
//! `WATCHDOG=1`, and the rule that decides when a watchdog ping may be sent.
//!
//! Invariants:
//! - Not under systemd (`NOTIFY_SOCKET` unset or empty) every call is a
//!   no-op that succeeds: `ringest serve` in a terminal behaves the same.
//! - Control plane only: called from the main thread and one watchdog
//!   thread, never from shard code on the request path. The only state a
//!   shard touches is its own [`Heartbeats`] slot, once per tick.
//! - `WATCHDOG=1` is sent only when every shard's heartbeat moved since the
//!   previous ping ([`ProgressCheck`]); a stalled executor therefore stops
//!   the pings and systemd restarts the service after `WatchdogSec=`.
//!
//! Protocol (sd_notify(3)): each message is one datagram of `KEY=VALUE`
//! lines. `$NOTIFY_SOCKET` is a filesystem path (`/run/systemd/notify`) or an
//! abstract socket written with a leading `@`. systemd identifies the sender
//! by the process ID the kernel attaches (the thread group ID), so any
//! thread of the main process may send under `NotifyAccess=main`.

use std::ffi::OsStr;
use std::fmt;
use std::io;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

/// How often the watchdog thread looks at the shutdown flag.
const WATCHDOG_STEP: Duration = Duration::from_millis(100);

/// Longest `STATUS=` text sent; longer text is cut (on a char boundary).
pub const STATUS_BYTES_MAX: usize = 512;

/// Why a notification could not be sent or `$NOTIFY_SOCKET` was unusable.
#[derive(Debug)]
pub enum NotifyError {
    /// `$NOTIFY_SOCKET` is neither an absolute path nor `@name`.
    UnsupportedAddress(String),
    /// The path or abstract name does not fit a `sockaddr_un`.
    AddressTooLong(String),
    /// Creating the datagram socket failed.
    Socket(io::Error),
    /// `sendto` failed (systemd gone, socket full, permission).
    Send(io::Error),
    /// The datagram was cut short by the kernel.
    ShortSend { sent: usize, len: usize },
}

impl fmt::Display for NotifyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NotifyError::UnsupportedAddress(a) => write!(
                f,
                "NOTIFY_SOCKET={a:?} is neither an absolute path nor an abstract @name"
            ),
            NotifyError::AddressTooLong(a) => write!(f, "NOTIFY_SOCKET={a:?} is too long"),
            NotifyError::Socket(e) => write!(f, "cannot create the notify socket: {e}"),
            NotifyError::Send(e) => write!(f, "cannot send to NOTIFY_SOCKET: {e}"),
            NotifyError::ShortSend { sent, len } => {
                write!(f, "notify datagram cut short: {sent} of {len} bytes sent")
            }
        }
    }
}

impl std::error::Error for NotifyError {}

/// Parses a `$NOTIFY_SOCKET` value: `/path` or `@abstract-name`.
pub fn parse_address(value: &OsStr) -> Result<SocketAddr, NotifyError> {
    let bytes = value.as_bytes();
    let shown = || value.to_string_lossy().into_owned();
    match bytes.first() {
        Some(b'/') => {
            SocketAddr::from_pathname(value).map_err(|_| NotifyError::AddressTooLong(shown()))
        }
        Some(b'@') if bytes.len() > 1 => SocketAddr::from_abstract_name(&bytes[1..])
            .map_err(|_| NotifyError::AddressTooLong(shown())),
        _ => Err(NotifyError::UnsupportedAddress(shown())),
    }
}

/// The watchdog interval systemd expects pings within, from the values of
/// `WATCHDOG_USEC` and `WATCHDOG_PID` (if set, it must be our `pid`).
/// `None`: no watchdog for this process.
pub fn parse_watchdog(
    usec: Option<&str>,
    watchdog_pid: Option<&str>,
    pid: u32,
) -> Option<Duration> {
    if let Some(owner) = watchdog_pid {
        if owner.trim().parse::<u32>().ok()? != pid {
            return None;
        }
    }
    let usec: u64 = usec?.trim().parse().ok()?;
    (usec > 0).then(|| Duration::from_micros(usec))
}

/// A connection to systemd's notification socket.
pub struct Notifier {
    socket: UnixDatagram,
    address: SocketAddr,
}

impl Notifier {
    /// A notifier sending to `address` (tests use their own socket).
    pub fn connect(address: SocketAddr) -> Result<Notifier, NotifyError> {
        let socket = UnixDatagram::unbound().map_err(NotifyError::Socket)?;
        Ok(Notifier { socket, address })
    }

    /// The notifier for `$NOTIFY_SOCKET`, or `None` when not under systemd.
    pub fn from_env() -> Result<Option<Notifier>, NotifyError> {
        match std::env::var_os("NOTIFY_SOCKET") {
            Some(value) if !value.is_empty() => Notifier::connect(parse_address(&value)?).map(Some),
            _ => Ok(None),
        }
    }

    /// Sends one datagram of newline-separated `KEY=VALUE` assignments.
    pub fn send(&self, state: &str) -> Result<(), NotifyError> {
        let sent = self
            .socket
            .send_to_addr(state.as_bytes(), &self.address)
            .map_err(NotifyError::Send)?;
        if sent != state.len() {
            return Err(NotifyError::ShortSend {
                sent,
                len: state.len(),
            });
        }
        Ok(())
    }
}

/// `STATUS=` message text: one line, at most [`STATUS_BYTES_MAX`] bytes.
pub fn status_message(text: &str) -> String {
    let mut end = text.len().min(STATUS_BYTES_MAX);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    let line: String = text[..end]
        .chars()
        .map(|c| if c == '\n' { ' ' } else { c })
        .collect();
    format!("STATUS={line}")
}

/// The process-wide notifier, read from the environment on first use.
fn global() -> Option<&'static Notifier> {
    static NOTIFIER: OnceLock<Option<Notifier>> = OnceLock::new();
    NOTIFIER
        .get_or_init(|| match Notifier::from_env() {
            Ok(notifier) => notifier,
            Err(error) => {
                tracing::warn!(%error, "systemd notification disabled");
                None
            }
        })
        .as_ref()
}

/// Sends `state` when under systemd; a failure is logged, never fatal
/// (systemd itself decides what a missing READY=1 or ping means).
fn send_global(state: &str) {
    if let Some(notifier) = global() {
        if let Err(error) = notifier.send(state) {
            tracing::warn!(%error, state, "systemd notification failed");
        }
    }
}

/// Whether `$NOTIFY_SOCKET` names a usable socket.
pub fn enabled() -> bool {
    global().is_some()
}

/// `READY=1` (with a status line): WAL recovered, every shard listening.
pub fn ready(status: &str) {
    send_global(&format!("READY=1\n{}", status_message(status)));
}

/// `STOPPING=1` (with a status line): shutdown has begun.
pub fn stopping(status: &str) {
    send_global(&format!("STOPPING=1\n{}", status_message(status)));
}

/// `STATUS=…`: the current start-up stage, shown by `systemctl status`.
pub fn status(text: &str) {
    send_global(&status_message(text));
}

/// `EXTEND_TIMEOUT_USEC=…`: a long start-up stage (WAL replay) needs this
/// much more time from now.
pub fn extend_timeout(extra: Duration) {
    send_global(&format!("EXTEND_TIMEOUT_USEC={}", extra.as_micros()));
}

/// `WATCHDOG=1`.
pub fn watchdog_ping() {
    send_global("WATCHDOG=1");
}

/// The watchdog interval for this process, `None` when systemd set none.
pub fn watchdog_interval() -> Option<Duration> {
    let usec = std::env::var("WATCHDOG_USEC").ok();
    let pid = std::env::var("WATCHDOG_PID").ok();
    parse_watchdog(usec.as_deref(), pid.as_deref(), std::process::id())
}

/// One progress counter per shard. A shard bumps its own slot from a timer
/// task on its executor; only the watchdog thread reads them.
pub struct Heartbeats {
    slots: Box<[AtomicU64]>,
}

impl Heartbeats {
    pub fn new(shards: usize) -> Arc<Heartbeats> {
        Arc::new(Heartbeats {
            slots: (0..shards).map(|_| AtomicU64::new(0)).collect(),
        })
    }

    pub fn shards(&self) -> usize {
        self.slots.len()
    }

    /// Called by shard `shard` on its own executor, e.g. every 100 ms.
    pub fn beat(&self, shard: usize) {
        if let Some(slot) = self.slots.get(shard) {
            slot.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn read(&self, shard: usize) -> u64 {
        self.slots[shard].load(Ordering::Relaxed)
    }
}

/// Remembers the heartbeats seen at the previous check.
pub struct ProgressCheck {
    seen: Vec<u64>,
}

impl ProgressCheck {
    /// Starts from the current values, so the first check needs one beat
    /// of every shard.
    pub fn new(heartbeats: &Heartbeats) -> ProgressCheck {
        ProgressCheck {
            seen: (0..heartbeats.shards())
                .map(|s| heartbeats.read(s))
                .collect(),
        }
    }

    /// True when every shard beat since the previous call. The shards that
    /// did not are returned in `stalled` (cleared first) for the log.
    pub fn all_progressed(&mut self, heartbeats: &Heartbeats, stalled: &mut Vec<usize>) -> bool {
        stalled.clear();
        for (shard, seen) in self.seen.iter_mut().enumerate() {
            let now = heartbeats.read(shard);
            if now == *seen {
                stalled.push(shard);
            }
            *seen = now;
        }
        stalled.is_empty()
    }
}

/// Starts the watchdog thread when systemd asked for one (`WatchdogSec=`):
/// every half interval it sends `WATCHDOG=1` if every shard made progress,
/// and logs the stalled shards otherwise. It stops within 100 ms of
/// `shutdown` being set, so joining it does not delay the exit.
/// Returns `None` (and starts nothing) without a watchdog.
pub fn spawn_watchdog(
    heartbeats: Arc<Heartbeats>,
    shutdown: Arc<AtomicBool>,
) -> Option<std::thread::JoinHandle<()>> {
    let interval = watchdog_interval()?;
    if !enabled() {
        return None;
    }
    let period = interval / 2;
    let spawned = std::thread::Builder::new()
        .name("ringest-watchdog".into())
        .spawn(move || {
            let mut check = ProgressCheck::new(&heartbeats);
            let mut stalled = Vec::with_capacity(heartbeats.shards());
            'pinging: loop {
                // A control-plane timer thread, not shard code: sleeping is
                // how it paces the pings. Short steps so shutdown is noticed
                // within WATCHDOG_STEP, not half a watchdog interval.
                let mut waited = Duration::ZERO;
                while waited < period {
                    if shutdown.load(Ordering::Relaxed) {
                        break 'pinging;
                    }
                    let step = WATCHDOG_STEP.min(period - waited);
                    #[allow(clippy::disallowed_methods)] // control-plane thread, see above
                    std::thread::sleep(step);
                    waited += step;
                }
                if check.all_progressed(&heartbeats, &mut stalled) {
                    watchdog_ping();
                } else {
                    tracing::warn!(?stalled, "shards made no progress; withholding WATCHDOG=1");
                }
            }
        });
    match spawned {
        Ok(handle) => Some(handle),
        Err(error) => {
            tracing::warn!(%error, "cannot start the watchdog thread");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Goal: both address forms parse and anything else is refused. Method:
    /// a table of values.
    #[test]
    fn notify_socket_forms() {
        let path = parse_address(OsStr::new("/run/systemd/notify")).expect("path");
        assert_eq!(
            path.as_pathname(),
            Some(std::path::Path::new("/run/systemd/notify"))
        );
        let abs =
            parse_address(OsStr::new("@/org/freedesktop/systemd1/notify/1")).expect("abstract");
        assert_eq!(
            abs.as_abstract_name(),
            Some(&b"/org/freedesktop/systemd1/notify/1"[..])
        );
        for bad in ["", "@", "relative/path", "notify"] {
            assert!(
                matches!(
                    parse_address(OsStr::new(bad)),
                    Err(NotifyError::UnsupportedAddress(_))
                ),
                "{bad:?}"
            );
        }
        let long = format!("/{}", "x".repeat(200));
        assert!(matches!(
            parse_address(OsStr::new(&long)),
            Err(NotifyError::AddressTooLong(_))
        ));
    }

    /// Goal: WATCHDOG_USEC is honoured only for this PID and when positive.
    /// Method: a table of (usec, pid) pairs.
    #[test]
    fn watchdog_usec_rules() {
        let cases: [(Option<&str>, Option<&str>, Option<Duration>); 7] = [
            (Some("30000000"), None, Some(Duration::from_secs(30))),
            (Some("30000000"), Some("42"), Some(Duration::from_secs(30))),
            (Some("30000000"), Some("43"), None),
            (Some("0"), None, None),
            (Some("abc"), None, None),
            (None, Some("42"), None),
            (Some("1000"), Some("x"), None),
        ];
        for (usec, pid, expected) in cases {
            assert_eq!(parse_watchdog(usec, pid, 42), expected, "{usec:?} {pid:?}");
        }
    }

    /// Goal: a progress check passes only when every shard beat since the
    /// last check. Method: beat some shards, check, beat all, check.
    #[test]
    fn watchdog_requires_every_shard_to_move() {
        let beats = Heartbeats::new(3);
        let mut check = ProgressCheck::new(&beats);
        let mut stalled = Vec::new();
        assert!(!check.all_progressed(&beats, &mut stalled));
        assert_eq!(stalled, vec![0, 1, 2]);
        beats.beat(0);
        beats.beat(2);
        assert!(!check.all_progressed(&beats, &mut stalled));
        assert_eq!(stalled, vec![1]);
        for shard in 0..3 {
            beats.beat(shard);
        }
        assert!(check.all_progressed(&beats, &mut stalled));
        assert!(stalled.is_empty());
        // Nothing moved since: the next check fails again.
        assert!(!check.all_progressed(&beats, &mut stalled));
    }

    /// Goal: the status line is one line and bounded. Method: a long
    /// multi-line, multi-byte text.
    #[test]
    fn status_is_one_bounded_line() {
        let text = format!("a\nb{}", "é".repeat(400));
        let message = status_message(&text);
        assert!(message.starts_with("STATUS=a b"));
        assert!(!message.contains('\n'));
        assert!(message.len() <= "STATUS=".len() + STATUS_BYTES_MAX);
    }
}
