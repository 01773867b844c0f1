//! The server started exactly as README.md says: `ringest serve` with no
//! `--data-dir` from a fresh working directory (data in the relative
//! default `./ringest-data`), and with a relative `--data-dir`. Every other
//! test passes an absolute temporary directory, which hid issue 17 item 1
//! (`open WAL: CreateDir failed: Bad file descriptor`).

// Tests are not shard code: std::fs is fine here.
#![allow(clippy::disallowed_methods)]

mod common;

use std::process::Command;

use common::{free_port, Server, TempDir};

/// Starts `ringest serve --listen <free port> <extra>` with `cwd` as its
/// working directory and the test's usual log level.
fn serve_in(cwd: &std::path::Path, extra_args: &[&str]) -> Server {
    let mut command = Command::new(common::binary());
    command
        .current_dir(cwd)
        .arg("serve")
        .arg("--listen")
        .arg(format!("127.0.0.1:{}", free_port()))
        .args(extra_args)
        .env("RUST_LOG", "warn");
    Server::start_command(command, cwd)
}

/// Writes one point with `/write`, reads it back with `/query`, stops the
/// server with SIGTERM and checks it exits 0.
fn write_read_stop(mut server: Server) {
    let response = server.write_v1("db=readme", "cpu,host=a usage=0.5");
    assert_eq!(response.status, 204, "{}", response.text());
    let series = common::query_series(&server, "readme", "SELECT usage FROM cpu");
    assert_eq!(series.len(), 1, "{series:?}");
    assert_eq!(series[0].values.len(), 1, "{series:?}");
    assert_eq!(series[0].values[0][1], 0.5, "{series:?}");
    let status = server.terminate();
    assert!(status.success(), "exit status {status}");
}

/// Goal: the README's start command works with the default data directory
/// (`./ringest-data`, relative). Method: run `ringest serve` (only `--listen`
/// added, for a free port) in a fresh empty working directory; write, read
/// back, stop; the data is in `<cwd>/ringest-data`.
#[test]
fn readme_command_with_the_default_relative_data_dir() {
    let cwd = TempDir::new("readme-default");
    write_read_stop(serve_in(&cwd.path, &[]));
    assert!(
        cwd.path.join("ringest-data/wal").is_dir(),
        "the default data directory is ./ringest-data"
    );
}

/// Goal: any relative `--data-dir` works, nested and not yet existing.
/// Method: `ringest serve --data-dir some/rel/data` in a fresh working
/// directory; write, read back, stop; restart on the same relative path and
/// read the point again (it was recovered from `<cwd>/some/rel/data`).
#[test]
fn relative_data_dir_flag() {
    let cwd = TempDir::new("readme-relative");
    let server = serve_in(&cwd.path, &["--data-dir", "some/rel/data"]);
    write_read_stop(server);
    assert!(cwd.path.join("some/rel/data/wal").is_dir());
    let server = serve_in(&cwd.path, &["--data-dir", "some/rel/data"]);
    let series = common::query_series(&server, "readme", "SELECT usage FROM cpu");
    assert_eq!(
        series[0].values.len(),
        1,
        "recovered after restart: {series:?}"
    );
}
