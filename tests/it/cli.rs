//! The binary as an operator runs it: exit codes, one-line startup errors, the embedded default.

use crate::support::child::{strip_ansi, terminate};
use std::io::{BufRead as _, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_gatehouse");

/// A command in an empty temp dir with an empty environment (but PATH).
fn gatehouse(dir: &std::path::Path) -> Command {
    let mut command = Command::new(BIN);
    command
        .current_dir(dir)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .stdin(Stdio::null());
    command
}

fn one_line_failure(output: std::process::Output) -> String {
    assert!(!output.status.success(), "expected failure");
    let stderr = String::from_utf8(output.stderr).unwrap();
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "one line, got: {stderr}");
    lines[0].to_owned()
}

#[test]
fn help_and_version() {
    let dir = tempfile::tempdir().unwrap();
    let help = gatehouse(dir.path()).arg("--help").output().unwrap();
    assert!(help.status.success());
    let text = String::from_utf8(help.stdout).unwrap();
    for subcommand in ["serve", "migrate", "admin-token"] {
        assert!(text.contains(subcommand), "{text}");
    }
    let version = gatehouse(dir.path()).arg("--version").output().unwrap();
    assert_eq!(
        String::from_utf8(version.stdout).unwrap().trim(),
        format!("gatehouse {}", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn bad_configuration_stops_with_one_line_naming_the_setting() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("config")).unwrap();
    type Case<'a> = (&'a str, &'a [(&'a str, &'a str)], &'a str);
    let cases: [Case; 5] = [
        ("[proxy]\nlisen = \"0.0.0.0:1\"\n", &[], "proxy.lisen"),
        (
            "[upstream]\nread_timeout = \"forever\"\n",
            &[],
            "upstream.read_timeout",
        ),
        (
            "",
            &[("GATEHOUSE__ADMIN__PUBLIC_URL", "::nope")],
            "admin.public_url",
        ),
        (
            "",
            &[("GATEHOUSE_ENCRYPTION_KEY", "dG9vLXNob3J0LWNhbmFyeQ==")],
            "GATEHOUSE_ENCRYPTION_KEY",
        ),
        (
            "",
            &[("DATABASE_URL", "postgres://u:canary-password@127.0.0.1:1/x")],
            "database.url",
        ),
    ];
    for (file, vars, setting) in cases {
        std::fs::write(dir.path().join("config/gatehouse.toml"), file).unwrap();
        let mut command = gatehouse(dir.path());
        command
            .args(["serve"])
            .env("GATEHOUSE__DATABASE__CONNECT_TIMEOUT", "1s");
        for (k, v) in vars {
            command.env(k, v);
        }
        let line = one_line_failure(command.output().unwrap());
        assert!(line.contains(setting), "{setting} not named in: {line}");
        assert!(!line.contains("canary"), "secret echoed: {line}");
    }
}

#[test]
fn taken_port_names_the_listener() {
    let dir = tempfile::tempdir().unwrap();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let output = gatehouse(dir.path())
        .env("GATEHOUSE__PROXY__LISTEN", "127.0.0.1:0")
        .env("GATEHOUSE__ADMIN__LISTEN", format!("127.0.0.1:{port}"))
        .env("GATEHOUSE__METRICS__LISTEN", "127.0.0.1:0")
        .output()
        .unwrap();
    let line = one_line_failure(output);
    assert!(line.contains("admin.listen"), "{line}");
    assert!(!line.contains("panicked"), "{line}");
}

#[test]
fn migrate_and_admin_token_subcommands() {
    let dir = tempfile::tempdir().unwrap();
    let migrate = gatehouse(dir.path()).arg("migrate").output().unwrap();
    assert!(
        migrate.status.success(),
        "{}",
        String::from_utf8_lossy(&migrate.stderr)
    );
    assert!(dir.path().join("data/gatehouse.db").exists());
    let again = gatehouse(dir.path()).arg("migrate").output().unwrap();
    assert!(again.status.success(), "migrate is idempotent");

    let token = gatehouse(dir.path())
        .args(["admin-token", "--name", "ops"])
        .output()
        .unwrap();
    assert!(token.status.success());
    let printed = String::from_utf8(token.stdout).unwrap();
    assert!(
        gatehouse::domain::tokens::AdminToken::parse(printed.trim()).is_some(),
        "{printed}"
    );
}

/// In an empty folder, with no config and no environment, `serve` runs on the embedded
/// defaults: SQLite under data/, a generated key, a generated admin token printed once.
/// Ports are the one override (the defaults may be taken on a shared machine); the addresses
/// are read from the startup log line.
#[test]
fn embedded_default_start_and_clean_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = gatehouse(dir.path())
        .arg("serve")
        .env("GATEHOUSE__PROXY__LISTEN", "127.0.0.1:0")
        .env("GATEHOUSE__ADMIN__LISTEN", "127.0.0.1:0")
        .env("GATEHOUSE__METRICS__LISTEN", "127.0.0.1:0")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Read stderr on a thread for the whole run: a closed pipe would break the child's logging.
    let (lines_tx, lines_rx) = std::sync::mpsc::channel::<String>();
    let stderr = BufReader::new(child.stderr.take().unwrap());
    let reader = std::thread::spawn(move || {
        for line in stderr.lines().map_while(Result::ok) {
            let _ = lines_tx.send(line);
        }
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut serving = None;
    let mut log = String::new();
    while let Ok(line) = lines_rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
        log.push_str(&line);
        log.push('\n');
        if line.contains("gatehouse is serving") {
            serving = Some(line);
            break;
        }
    }
    let serving = serving.unwrap_or_else(|| panic!("exited before serving:\n{log}"));
    let addr_of = |name: &str| -> String {
        let plain = strip_ansi(&serving);
        let start = plain.find(&format!("{name}=")).unwrap() + name.len() + 1;
        plain[start..].split_whitespace().next().unwrap().to_owned()
    };
    for (listener, path) in [
        ("proxy", "/health"),
        ("admin", "/health"),
        ("admin", "/ready"),
    ] {
        let body = http_get(&addr_of(listener), path);
        assert!(body.starts_with("HTTP/1.1 200"), "{listener}{path}: {body}");
    }
    assert!(
        log.contains("GATEHOUSE_ENCRYPTION_KEY is not set"),
        "warns about the generated key"
    );
    assert!(dir.path().join("data/gatehouse.db").exists());
    let key = dir.path().join("data/secret.key");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        assert_eq!(
            std::fs::metadata(&key).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }

    let exit = terminate(&mut child);
    let _ = reader.join();
    log.extend(lines_rx.try_iter().map(|l| l + "\n"));
    assert!(exit.success(), "SIGTERM exits 0, got {exit:?}:\n{log}");
    let mut stdout = String::new();
    std::io::Read::read_to_string(&mut child.stdout.take().unwrap(), &mut stdout).unwrap();
    let token_line = stdout
        .lines()
        .find(|l| l.starts_with("sga_"))
        .expect("admin token printed once");
    assert!(gatehouse::domain::tokens::AdminToken::parse(token_line).is_some());
}

/// A minimal blocking HTTP/1.1 GET on loopback, so this test needs no runtime.
fn http_get(addr: &str, path: &str) -> String {
    use std::io::{Read as _, Write as _};
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    response
}
