//! sd_notify over real Unix datagram sockets, as systemd receives them.

mod common;

use std::ffi::OsStr;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::TempDir;
use ringest::notify::{parse_address, Notifier};

fn receive(socket: &UnixDatagram) -> String {
    socket
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let mut buffer = [0u8; 4096];
    let n = socket.recv(&mut buffer).expect("a datagram arrives");
    String::from_utf8_lossy(&buffer[..n]).into_owned()
}

/// Goal: a message reaches a socket named by a filesystem path, as one
/// datagram. Method: bind a datagram socket in a temp dir, send through
/// the address parsed from its path.
#[test]
fn sends_to_a_path_socket() {
    let dir = TempDir::new("notify");
    let path = dir.path.join("notify.sock");
    let receiver = UnixDatagram::bind(&path).expect("bind");
    let notifier =
        Notifier::connect(parse_address(path.as_os_str()).expect("parse")).expect("connect");
    notifier.send("READY=1\nSTATUS=ready").expect("send");
    assert_eq!(receive(&receiver), "READY=1\nSTATUS=ready");
    notifier.send("WATCHDOG=1").expect("send");
    assert_eq!(receive(&receiver), "WATCHDOG=1");
}

/// Goal: `@name` addresses an abstract socket (systemd's default form in
/// recent versions). Method: bind an abstract socket with a unique name.
#[test]
fn sends_to_an_abstract_socket() {
    let name = format!("ringest-notify-test-{}", std::process::id());
    let receiver =
        UnixDatagram::bind_addr(&SocketAddr::from_abstract_name(name.as_bytes()).expect("name"))
            .expect("bind abstract");
    let address = parse_address(OsStr::new(&format!("@{name}"))).expect("parse");
    let notifier = Notifier::connect(address).expect("connect");
    notifier.send("STOPPING=1").expect("send");
    assert_eq!(receive(&receiver), "STOPPING=1");
}

/// Goal: `ringest serve` under systemd sends READY=1 once it listens.
/// Method: run the binary with NOTIFY_SOCKET pointing at our socket and
/// wait for the datagram.
#[test]
fn serve_sends_ready() {
    let dir = TempDir::new("notify-serve");
    let path = dir.path.join("notify.sock");
    let receiver = UnixDatagram::bind(&path).expect("bind");
    let port = common::free_port();
    let mut child = Command::new(env!("CARGO_BIN_EXE_ringest"))
        .args(["serve", "--shards", "1", "--listen"])
        .arg(format!("127.0.0.1:{port}"))
        .arg("--data-dir")
        .arg(dir.path.join("data"))
        .env("NOTIFY_SOCKET", &path)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn");
    let mut ready = false;
    for _ in 0..20 {
        let message = receive(&receiver);
        if message.lines().any(|l| l == "READY=1") {
            ready = true;
            break;
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    assert!(ready, "no READY=1 received");
}

/// Goal: with `WatchdogSec=` set, a healthy server sends WATCHDOG=1
/// repeatedly. Method: WATCHDOG_USEC of 1 s (a ping every 0.5 s, five
/// heartbeats of every shard between two checks); wait for two pings.
#[test]
fn serve_sends_watchdog_pings() {
    let dir = TempDir::new("notify-watchdog");
    let path = dir.path.join("notify.sock");
    let receiver = UnixDatagram::bind(&path).expect("bind");
    let port = common::free_port();
    let mut child = Command::new(env!("CARGO_BIN_EXE_ringest"))
        .args(["serve", "--shards", "2", "--listen"])
        .arg(format!("127.0.0.1:{port}"))
        .arg("--data-dir")
        .arg(dir.path.join("data"))
        .env("NOTIFY_SOCKET", &path)
        .env("WATCHDOG_USEC", "1000000")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn");
    let mut pings = 0;
    for _ in 0..20 {
        if receive(&receiver).lines().any(|l| l == "WATCHDOG=1") {
            pings += 1;
            if pings == 2 {
                break;
            }
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(pings, 2, "expected two WATCHDOG=1 pings");
}
