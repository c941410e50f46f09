//! The Node.js projects the tests run (`tests/support/mcp-client`, `tests/support/oidc`): a
//! copy of each under `target/` (tests write nothing into the working tree outside `target/`
//! and temporary folders), its `npm ci`, once per process and once per machine, and the
//! Node.js version check before it.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use sha2::{Digest as _, Sha256};

/// How long `npm ci` may take on a fresh machine.
const NPM_CI_TIMEOUT: Duration = Duration::from_secs(300);

/// Copy the project's files into `target/tmp/node/<name>` and run `npm ci` there when its
/// `node_modules` is missing or older than the `package-lock.json`: once per process and
/// directory (`OnceLock`) and once per machine (an exclusive file lock held meanwhile). Returns
/// the directory to run the project's scripts in. Panics when it fails; `node_missing` words
/// the message when Node.js (>= 20) or npm is missing.
pub fn ensure_node_modules(project_dir: &Path, node_missing: fn(&str) -> String) -> PathBuf {
    type Once = Arc<OnceLock<Result<PathBuf, String>>>;
    static READY: Mutex<BTreeMap<PathBuf, Once>> = Mutex::new(BTreeMap::new());
    let once = READY
        .lock()
        .entry(project_dir.to_owned())
        .or_default()
        .clone();
    match once.get_or_init(|| install_node_modules(project_dir, node_missing)) {
        Ok(dir) => dir.clone(),
        Err(message) => panic!("{message}"),
    }
}

/// `npm ci` in `dir` unless `node_modules/.gatehouse-npm-ci.stamp` holds the SHA-256 of the
/// lockfile. The lock and log files in `CARGO_TARGET_TMPDIR` are named after the directory
/// (`mcp-client-npm-ci.lock`, `oidc-npm-ci.log`, …).
fn install_node_modules(
    project_dir: &Path,
    node_missing: fn(&str) -> String,
) -> Result<PathBuf, String> {
    let name = project_dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .ok_or_else(|| format!("{} names no directory", project_dir.display()))?;
    let tmp = Path::new(env!("CARGO_TARGET_TMPDIR"));
    let dir = tmp.join("node").join(&name);
    std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    // The project's own files (package.json, the lockfile, its scripts), fresh every run.
    for entry in std::fs::read_dir(project_dir)
        .map_err(|e| format!("cannot read {}: {e}", project_dir.display()))?
    {
        let path = entry.map_err(|e| e.to_string())?.path();
        if path.is_file()
            && let Some(file) = path.file_name()
        {
            std::fs::copy(&path, dir.join(file))
                .map_err(|e| format!("cannot copy {}: {e}", path.display()))?;
        }
    }
    let dir = dir.as_path();
    let lock_bytes = std::fs::read(dir.join("package-lock.json"))
        .map_err(|e| format!("cannot read {}/package-lock.json: {e}", dir.display()))?;
    let want = hex::encode(Sha256::digest(&lock_bytes));
    let stamp = dir.join("node_modules/.gatehouse-npm-ci.stamp");
    let current = || std::fs::read_to_string(&stamp).is_ok_and(|s| s.trim() == want);
    if current() {
        return Ok(dir.to_owned());
    }

    check_node(node_missing)?;

    let lock = File::create(tmp.join(format!("{name}-npm-ci.lock")))
        .map_err(|e| format!("cannot create the npm ci lock file: {e}"))?;
    lock.lock()
        .map_err(|e| format!("cannot lock the npm ci lock file: {e}"))?;
    // Another process may have installed while this one waited for the lock.
    if current() {
        return Ok(dir.to_owned());
    }

    let log_path = tmp.join(format!("{name}-npm-ci.log"));
    let log = File::create(&log_path).map_err(|e| format!("cannot create the npm log: {e}"))?;
    let log_err = log.try_clone().map_err(|e| e.to_string())?;
    let mut child = Command::new("npm")
        .args(["ci", "--no-audit", "--no-fund", "--loglevel=error"])
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::from(log))
        .stderr(Stdio::from(log_err))
        .spawn()
        .map_err(|e| node_missing(&format!("npm: {e}")))?;
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().map_err(|e| e.to_string())? {
            break status;
        }
        if started.elapsed() > NPM_CI_TIMEOUT {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!(
                "`npm ci` in {} took more than {NPM_CI_TIMEOUT:?}; log: {}",
                dir.display(),
                std::fs::read_to_string(&log_path).unwrap_or_default()
            ));
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    if !status.success() {
        return Err(format!(
            "`npm ci` in {} failed ({status}):\n{}",
            dir.display(),
            std::fs::read_to_string(&log_path).unwrap_or_default()
        ));
    }
    std::fs::write(&stamp, &want).map_err(|e| format!("cannot write {}: {e}", stamp.display()))?;
    Ok(dir.to_owned())
}

/// `node --version` is 20 or later.
fn check_node(node_missing: fn(&str) -> String) -> Result<(), String> {
    let output = Command::new("node")
        .arg("--version")
        .stdin(Stdio::null())
        .output()
        .map_err(|e| node_missing(&format!("node: {e}")))?;
    let version = String::from_utf8_lossy(&output.stdout).trim().to_owned();
    let major: u32 = version
        .trim_start_matches('v')
        .split('.')
        .next()
        .and_then(|m| m.parse().ok())
        .unwrap_or(0);
    if major < 20 {
        return Err(node_missing(&format!("found node {version:?}, need >= 20")));
    }
    Ok(())
}
