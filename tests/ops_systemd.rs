//! The systemd unit and the install script, checked without a running
//! systemd: `systemd-analyze verify` and `security --offline=true` on the
//! unit file, and `systemd/install.sh` against temporary `--prefix` roots.
//!
//! Nothing here installs packages; `.ci/run` installs Debian's `systemd`
//! package when `systemd-analyze` is missing.

// Tests are not shard code: std::fs and std::time are fine here (clippy.toml
// bans them on the server's executors).
#![allow(clippy::disallowed_methods)]

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::TempDir;

/// Highest `systemd-analyze security` exposure the unit may score.
const EXPOSURE_MAX: f64 = 2.5;

fn source(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

fn binary() -> &'static str {
    env!("CARGO_BIN_EXE_ringest")
}

fn systemd_analyze(args: &[&str]) -> Output {
    match Command::new("systemd-analyze").args(args).output() {
        Ok(output) => output,
        Err(error) => panic!(
            "cannot run systemd-analyze ({error}); it is in Debian's `systemd` package, \
             which .ci/run installs (apt-get install -y systemd)"
        ),
    }
}

/// A copy of the unit whose ExecStart names the freshly built binary, so
/// `verify` can check the executable exists without installing it.
fn unit_copy(dir: &Path) -> PathBuf {
    let text = std::fs::read_to_string(source("systemd/ringest.service")).expect("read unit");
    assert!(
        text.contains("ExecStart=/usr/local/bin/ringest serve --config /etc/ringest/ringest.toml --data-dir /var/lib/ringest"),
        "ExecStart changed; update this test and install.sh together"
    );
    let path = dir.join("ringest.service");
    std::fs::write(&path, text.replace("/usr/local/bin/ringest", binary())).expect("write unit");
    path
}

fn run_install(args: &[&str]) -> Output {
    let output = Command::new("bash")
        .arg(source("systemd/install.sh"))
        .args(args)
        .output()
        .expect("run install.sh");
    assert!(
        output.status.success(),
        "install.sh {args:?} failed:\nstdout:\n{}\nstderr:\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

fn profiles() -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(source("tuning"))
        .expect("tuning/")
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let profile = name.strip_suffix(".toml")?;
            (profile != "reference").then(|| profile.to_string())
        })
        .collect();
    names.sort();
    names
}

/// Goal: the unit file is valid for systemd 252 (no unknown keys, bad
/// values or missing executable). Method: `systemd-analyze verify` on a copy
/// naming the built binary; any diagnostic about the unit fails.
#[test]
fn unit_verifies_clean() {
    let dir = TempDir::new("unit-verify");
    let unit = unit_copy(&dir.path);
    let output = systemd_analyze(&["verify", unit.to_str().expect("utf-8 path")]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    let about_unit: Vec<&str> = stderr.lines().filter(|l| l.contains("ringest")).collect();
    assert!(
        output.status.success() && about_unit.is_empty(),
        "systemd-analyze verify: {:?}\n{stderr}",
        output.status
    );
}

/// Goal: the unit's hardening rates an exposure of at most 2.5. Method:
/// `systemd-analyze security --offline=true` on the shipped file; parse
/// the "Overall exposure level" number.
#[test]
fn unit_security_exposure_is_low() {
    let unit = source("systemd/ringest.service");
    let output = systemd_analyze(&[
        "security",
        "--offline=true",
        unit.to_str().expect("utf-8 path"),
    ]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    let line = stdout
        .lines()
        .find(|l| l.contains("Overall exposure level"))
        .unwrap_or_else(|| {
            panic!(
                "no exposure line in:\n{stdout}\n{}",
                String::from_utf8_lossy(&output.stderr)
            )
        });
    let number = line
        .rsplit(':')
        .next()
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse::<f64>().ok())
        .unwrap_or_else(|| panic!("cannot parse exposure from {line:?}"));
    assert!(
        number <= EXPOSURE_MAX,
        "exposure {number} > {EXPOSURE_MAX}: {line}"
    );
}

/// Goal: the unit keeps the properties the service depends on. Method:
/// look for each required line.
#[test]
fn unit_has_required_settings() {
    let text = std::fs::read_to_string(source("systemd/ringest.service")).expect("read unit");
    for required in [
        "Type=notify",
        "NotifyAccess=main",
        "WatchdogSec=",
        "User=ringest",
        "StateDirectory=ringest",
        "ConfigurationDirectory=ringest",
        "LimitNOFILE=",
        "LimitMEMLOCK=",
        "SystemCallFilter=@system-service",
        "RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX",
        "CapabilityBoundingSet=\n",
        "Restart=on-failure",
        "RestartSec=",
        "StartLimitBurst=",
        "KillMode=mixed",
        "WantedBy=multi-user.target",
    ] {
        assert!(text.contains(required), "unit lacks {required:?}");
    }
    // io_uring must stay allowed: no line may deny it or @aio.
    for line in text.lines().filter(|l| l.starts_with("SystemCallFilter=~")) {
        assert!(
            !line.contains("io_uring") && !line.contains("@aio"),
            "{line}"
        );
    }
}

/// Expands `systemd-analyze syscall-filter` output into group -> entries.
fn syscall_groups() -> std::collections::HashMap<String, Vec<String>> {
    let output = systemd_analyze(&["syscall-filter"]);
    let mut groups = std::collections::HashMap::new();
    let mut current: Option<String> = None;
    for line in String::from_utf8_lossy(&output.stdout).lines() {
        if let Some(name) = line.strip_prefix('@') {
            current = Some(format!("@{}", name.trim()));
        } else if let (Some(group), Some(entry)) = (&current, line.strip_prefix("    ")) {
            let entry = entry.trim();
            if !entry.is_empty() && !entry.starts_with('#') {
                groups
                    .entry(group.clone())
                    .or_insert_with(Vec::new)
                    .push(entry.to_string());
            }
        }
    }
    groups
}

fn expand(
    item: &str,
    groups: &std::collections::HashMap<String, Vec<String>>,
    out: &mut std::collections::HashSet<String>,
) {
    match groups.get(item) {
        Some(entries) => {
            for entry in entries {
                expand(entry, groups, out);
            }
        }
        None => {
            out.insert(item.to_string());
        }
    }
}

/// Goal: the unit's seccomp filter allows every system call ringest and
/// glommio make (io_uring above all), so hardening cannot break start-up.
/// Method: expand the unit's `SystemCallFilter=` allow and deny lists with
/// systemd's own group table and check a list of needed calls.
#[test]
fn unit_syscall_filter_allows_what_ringest_uses() {
    let text = std::fs::read_to_string(source("systemd/ringest.service")).expect("read unit");
    let groups = syscall_groups();
    assert!(groups.contains_key("@system-service"), "no group table");
    let mut allowed = std::collections::HashSet::new();
    let mut denied = std::collections::HashSet::new();
    for value in text
        .lines()
        .filter_map(|l| l.strip_prefix("SystemCallFilter="))
    {
        let (deny, list) = match value.strip_prefix('~') {
            Some(rest) => (true, rest),
            None => (false, value),
        };
        for item in list.split_whitespace() {
            expand(item, &groups, if deny { &mut denied } else { &mut allowed });
        }
    }
    for needed in [
        "io_uring_setup",
        "io_uring_enter",
        "io_uring_register",
        "membarrier",
        "mlock",
        "mmap",
        "sched_setaffinity",
        "sched_getaffinity",
        "setrlimit",
        "prlimit64",
        "fallocate",
        "fdatasync",
        "fsync",
        "getrandom",
        "statfs",
        "socket",
        "setsockopt",
        "bind",
        "listen",
        "accept4",
        "sendto",
        "eventfd2",
        "rt_sigtimedwait",
        "futex",
    ] {
        assert!(
            allowed.contains(needed) && !denied.contains(needed),
            "the unit's SystemCallFilter blocks {needed}"
        );
    }
}

/// Goal: on a host with many cores, install writes a LimitMEMLOCK drop-in
/// sized for shards x io_memory_bytes. Method: pretend 128 CPUs.
#[test]
fn many_cores_get_a_memlock_drop_in() {
    let root = TempDir::new("install-memlock");
    std::fs::create_dir_all(root.path.join("etc")).expect("etc");
    let output = Command::new("bash")
        .arg(source("systemd/install.sh"))
        .args([
            "--prefix",
            root.path.to_str().expect("utf-8 path"),
            "--binary",
            binary(),
        ])
        .env("RINGEST_INSTALL_CPUS", "128")
        .output()
        .expect("run install.sh");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let drop_in = std::fs::read_to_string(
        root.path
            .join("etc/systemd/system/ringest.service.d/memlock.conf"),
    )
    .expect("memlock drop-in");
    // 128 shards x 2 MiB (default io_memory_bytes), doubled.
    assert!(drop_in.contains("LimitMEMLOCK=536870912"), "{drop_in}");
}

/// Goal: one install against a temporary root produces every file, the
/// user, a valid config with auth on and the enabled-unit link, and prints
/// the token once. Method: run install.sh --prefix with --sysctl and check
/// the tree, then check-config the written config.
#[test]
fn install_into_prefix_produces_a_complete_service() {
    let root = TempDir::new("install");
    let prefix = root.path.to_str().expect("utf-8 path");
    std::fs::create_dir_all(root.path.join("etc")).expect("etc");
    let output = run_install(&[
        "--prefix",
        prefix,
        "--binary",
        binary(),
        "--profile",
        "small-vm",
        "--sysctl",
    ]);
    let stdout = String::from_utf8_lossy(&output.stdout);

    let p = |rel: &str| root.path.join(rel);
    let installed = std::fs::read(p("usr/local/bin/ringest")).expect("binary installed");
    assert_eq!(installed, std::fs::read(binary()).expect("built binary"));
    assert_eq!(
        std::fs::read_to_string(p("etc/systemd/system/ringest.service")).expect("unit"),
        std::fs::read_to_string(source("systemd/ringest.service")).expect("source unit")
    );
    let link = std::fs::read_link(p(
        "etc/systemd/system/multi-user.target.wants/ringest.service",
    ))
    .expect("enabled-unit link");
    assert_eq!(link, Path::new("/etc/systemd/system/ringest.service"));
    assert_eq!(
        std::fs::read_to_string(p("etc/sysctl.d/60-ringest.conf")).expect("sysctl fragment"),
        std::fs::read_to_string(source("tuning/small-vm.sysctl.conf")).expect("source")
    );
    assert!(p("var/lib/ringest").is_dir(), "state directory");
    let passwd = std::fs::read_to_string(p("etc/passwd")).expect("passwd in the root");
    assert!(
        passwd
            .lines()
            .any(|l| l.starts_with("ringest:") && l.contains(":/var/lib/ringest:")),
        "no ringest user in {passwd}"
    );

    // The token is printed once, and only its hash is in the config.
    let token = stdout
        .lines()
        .skip_while(|l| !l.contains("admin token"))
        .nth(1)
        .expect("token printed")
        .trim()
        .to_string();
    assert!(token.len() >= 32, "{token:?}");
    let config_path = p("etc/ringest/ringest.toml");
    let config = std::fs::read_to_string(&config_path).expect("config written");
    assert!(
        !config.contains(&token),
        "the plain token must not be stored"
    );
    assert!(config.contains(&ringest::auth::hash_hex(token.as_bytes())));

    let check = Command::new(binary())
        .args(["check-config", "--config"])
        .arg(&config_path)
        .output()
        .expect("check-config");
    let effective = String::from_utf8_lossy(&check.stdout);
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );
    let auth = effective.split("[auth]").nth(1).expect("[auth] section");
    assert!(auth.contains("enabled = true"), "{effective}");
    assert!(
        effective.contains("listen = \"0.0.0.0:8086\""),
        "{effective}"
    );
    assert!(
        effective.contains("data_dir = \"/var/lib/ringest\""),
        "{effective}"
    );
    // The profile's own values survived the merge.
    assert!(effective.contains("ring_depth = 64"), "{effective}");
}

/// Goal: every shipped profile installs into a config that passes
/// check-config with auth on. Method: install each into its own root.
#[test]
fn every_profile_installs_a_valid_config() {
    for profile in profiles() {
        let root = TempDir::new("install-profile");
        std::fs::create_dir_all(root.path.join("etc")).expect("etc");
        run_install(&[
            "--prefix",
            root.path.to_str().expect("utf-8 path"),
            "--binary",
            binary(),
            "--profile",
            &profile,
        ]);
        let check = Command::new(binary())
            .args(["check-config", "--config"])
            .arg(root.path.join("etc/ringest/ringest.toml"))
            .output()
            .expect("check-config");
        assert!(
            check.status.success(),
            "profile {profile}: {}",
            String::from_utf8_lossy(&check.stderr)
        );
        let effective = String::from_utf8_lossy(&check.stdout);
        assert!(
            effective
                .split("[auth]")
                .nth(1)
                .is_some_and(|a| a.contains("enabled = true")),
            "profile {profile}"
        );
    }
}

/// Goal: --dry-run changes nothing and shows every step, including the
/// user creation. Method: dry-run into an empty root; the root stays empty
/// and the output names each action.
#[test]
fn dry_run_changes_nothing_and_shows_the_commands() {
    let root = TempDir::new("install-dry");
    let output = run_install(&[
        "--prefix",
        root.path.to_str().expect("utf-8 path"),
        "--binary",
        binary(),
        "--sysctl",
        "--profile",
        "default",
        "--dry-run",
    ]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    let left: Vec<_> = std::fs::read_dir(&root.path).expect("root").collect();
    assert!(left.is_empty(), "dry run created {left:?}");
    for expected in [
        "usr/local/bin/ringest",
        "u ringest ",
        "etc/ringest",
        "token create",
        "check-config",
        "etc/sysctl.d/60-ringest.conf",
        "etc/systemd/system/ringest.service",
        "multi-user.target.wants/ringest.service",
    ] {
        assert!(
            stdout.contains(expected),
            "dry run does not show {expected:?}:\n{stdout}"
        );
    }
    assert!(
        stdout.contains("systemd-sysusers") || stdout.contains("useradd"),
        "no user creation command:\n{stdout}"
    );
}

/// Goal: uninstall removes the service but keeps data and config; --purge
/// removes them too. Method: install, add a data file, uninstall, check,
/// purge, check.
#[test]
fn uninstall_keeps_data_unless_purged() {
    let root = TempDir::new("uninstall");
    let prefix = root.path.to_str().expect("utf-8 path");
    std::fs::create_dir_all(root.path.join("etc")).expect("etc");
    run_install(&[
        "--prefix",
        prefix,
        "--binary",
        binary(),
        "--sysctl",
        "--profile",
        "default",
    ]);
    let data = root.path.join("var/lib/ringest/wal-marker");
    std::fs::write(&data, b"data").expect("data file");

    run_install(&["--prefix", prefix, "--uninstall"]);
    for gone in [
        "usr/local/bin/ringest",
        "etc/systemd/system/ringest.service",
        "etc/systemd/system/multi-user.target.wants/ringest.service",
        "etc/sysctl.d/60-ringest.conf",
    ] {
        assert!(
            !root.path.join(gone).exists(),
            "{gone} left after uninstall"
        );
    }
    assert!(data.exists(), "uninstall removed data");
    assert!(
        root.path.join("etc/ringest/ringest.toml").exists(),
        "uninstall removed config"
    );

    run_install(&["--prefix", prefix, "--uninstall", "--purge"]);
    assert!(
        !root.path.join("var/lib/ringest").exists(),
        "purge kept data"
    );
    assert!(!root.path.join("etc/ringest").exists(), "purge kept config");
}

/// Goal: a second install keeps the existing config (and so its tokens).
/// Method: install twice; the config bytes are unchanged.
#[test]
fn reinstall_keeps_the_config() {
    let root = TempDir::new("reinstall");
    let prefix = root.path.to_str().expect("utf-8 path");
    std::fs::create_dir_all(root.path.join("etc")).expect("etc");
    run_install(&["--prefix", prefix, "--binary", binary()]);
    let config = root.path.join("etc/ringest/ringest.toml");
    let first = std::fs::read(&config).expect("config");
    let output = run_install(&["--prefix", prefix, "--binary", binary()]);
    assert_eq!(std::fs::read(&config).expect("config"), first);
    assert!(String::from_utf8_lossy(&output.stdout).contains("keeping the existing"));
}

/// Goal: every sysctl fragment belongs to a profile, every setting has a
/// comment saying why, and every key exists in this kernel. Method: parse
/// each `tuning/*.sysctl.conf`.
#[test]
fn sysctl_fragments_are_commented_and_known() {
    let profiles = profiles();
    let mut fragments = 0;
    for entry in std::fs::read_dir(source("tuning")).expect("tuning/") {
        let path = entry.expect("entry").path();
        let name = path
            .file_name()
            .expect("name")
            .to_string_lossy()
            .into_owned();
        let Some(profile) = name.strip_suffix(".sysctl.conf") else {
            continue;
        };
        fragments += 1;
        assert!(
            profiles.iter().any(|p| p == profile),
            "{name} has no profile"
        );
        let text = std::fs::read_to_string(&path).expect("read fragment");
        // A setting must sit in a paragraph that opens with a comment (a
        // pair such as dirty_background_bytes / dirty_bytes shares one).
        let mut commented = false;
        for line in text.lines() {
            let trimmed = line.trim();
            if trimmed.is_empty() {
                commented = false;
            } else if trimmed.starts_with('#') {
                commented = true;
            } else {
                let (key, value) = trimmed
                    .split_once('=')
                    .unwrap_or_else(|| panic!("{name}: not key = value: {line:?}"));
                let key = key.trim();
                assert!(!value.trim().is_empty(), "{name}: {key} has no value");
                assert!(
                    commented,
                    "{name}: {key} has no comment saying why above it"
                );
                let proc_path = Path::new("/proc/sys").join(key.replace('.', "/"));
                assert!(proc_path.exists(), "{name}: {key} unknown to this kernel");
            }
        }
    }
    assert!(fragments >= 1, "no sysctl fragments in tuning/");
}

/// Goal: the unit's ExecStart line, as written, starts a server that
/// takes a write and answers it back (issue 17: only absolute paths
/// worked, and nothing ran the start line). Method: install into a
/// temporary root, take ExecStart from the installed unit, run it with the
/// root as working directory and every path in it made relative to that
/// root (so `/` is the root, as systemd runs it from `/`), `--listen` on a
/// free port appended and `JOURNAL_STREAM` set as systemd sets it; write a
/// point with the printed token, read it back, SIGTERM, exit 0.
#[test]
fn unit_exec_start_line_serves() {
    let root = TempDir::new("execstart");
    let prefix = root.path.to_str().expect("utf-8 path");
    std::fs::create_dir_all(root.path.join("etc")).expect("etc");
    let output = run_install(&["--prefix", prefix, "--binary", binary()]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    let token = stdout
        .lines()
        .skip_while(|l| !l.contains("admin token"))
        .nth(1)
        .expect("token printed")
        .trim()
        .to_string();
    let unit = std::fs::read_to_string(root.path.join("etc/systemd/system/ringest.service"))
        .expect("installed unit");
    let exec_start = unit
        .lines()
        .find_map(|l| l.strip_prefix("ExecStart="))
        .expect("ExecStart line");
    let mut words = exec_start.split_whitespace();
    let program = words.next().expect("program");
    let program = root.path.join(program.trim_start_matches('/'));
    let args: Vec<&str> = words
        .map(|word| word.strip_prefix('/').unwrap_or(word))
        .collect();
    assert!(
        args.contains(&"var/lib/ringest"),
        "the unit names its data directory: {exec_start}"
    );
    let mut command = Command::new(&program);
    command
        .current_dir(&root.path)
        .args(&args)
        .arg("--listen")
        .arg(format!("127.0.0.1:{}", common::free_port()))
        .env("JOURNAL_STREAM", "8:12345")
        .env("RUST_LOG", "warn");
    let mut server = common::Server::start_command(command, &root.path.join("var/lib/ringest"));
    let auth = format!("Token {token}");
    let headers = [("Authorization", auth.as_str())];
    let write = server.request(
        "POST",
        "/api/v2/write?bucket=unit&precision=s",
        &headers,
        b"cpu,host=a usage=0.5",
    );
    assert_eq!(write.status, 204, "{}", write.text());
    let read = server.request(
        "GET",
        &format!(
            "/query?db=unit&q={}",
            common::encode("SELECT usage FROM cpu")
        ),
        &headers,
        b"",
    );
    assert_eq!(read.status, 200, "{}", read.text());
    assert!(read.text().contains(r#",0.5]]"#), "{}", read.text());
    let status = server.terminate();
    assert!(status.success(), "exit status {status}");
    assert!(root.path.join("var/lib/ringest/wal").is_dir());
}
