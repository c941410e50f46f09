use std::collections::BTreeMap;
use std::io::Write as _;

use super::*;

fn env(pairs: &[(&str, &str)]) -> MapEnv {
    MapEnv(
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect::<BTreeMap<_, _>>(),
    )
}

fn file(contents: &str) -> (tempfile::TempDir, ConfigFile) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gatehouse.toml");
    std::fs::File::create(&path)
        .unwrap()
        .write_all(contents.as_bytes())
        .unwrap();
    (dir, ConfigFile::Explicit(path))
}

fn error_of(file_contents: &str, vars: &[(&str, &str)]) -> ConfigError {
    let (_dir, path) = file(file_contents);
    load(path, &env(vars)).unwrap_err()
}

#[test]
fn shipped_file_equals_built_in_defaults() {
    let shipped = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config/gatehouse.toml");
    let loaded = load(ConfigFile::Explicit(shipped), &MapEnv::default()).unwrap();
    assert_eq!(loaded, Config::default());
}

#[test]
fn layers_apply_in_order() {
    let (_dir, path) = file(
        "[proxy]\nlisten = \"127.0.0.1:1111\"\n[admin]\nlisten = \"127.0.0.1:2222\"\n\
         [database]\nurl = \"sqlite://from-file.db\"\n",
    );
    let config = load(
        path,
        &env(&[
            ("GATEHOUSE__ADMIN__LISTEN", "127.0.0.1:3333"),
            ("GATEHOUSE__UPSTREAM__ALLOW_PRIVATE", "true"),
            ("GATEHOUSE__UPSTREAM__READ_TIMEOUT", "2m"),
            ("GATEHOUSE__DATABASE__URL", "sqlite://from-env-layer.db"),
            ("DATABASE_URL", "postgres://u:p@127.0.0.1/db"),
        ]),
    )
    .unwrap();
    assert_eq!(
        config.proxy.listen.to_string(),
        "127.0.0.1:1111",
        "file over default"
    );
    assert_eq!(
        config.admin.listen.to_string(),
        "127.0.0.1:3333",
        "GATEHOUSE__ over file"
    );
    assert!(config.upstream.allow_private);
    assert_eq!(config.upstream.read_timeout, Duration::from_secs(120));
    assert_eq!(
        config.database.url, "postgres://u:p@127.0.0.1/db",
        "well-known over all"
    );
    assert_eq!(
        config.metrics,
        MetricsConfig::default(),
        "untouched sections keep defaults"
    );
}

#[test]
fn extra_ca_file_is_unset_by_default_and_read_from_file_or_env() {
    assert_eq!(Config::default().upstream.extra_ca_file, None);
    let (_dir, path) = file("[upstream]\nextra_ca_file = \"/etc/gatehouse/ca.pem\"\n");
    let config = load(path, &MapEnv::default()).unwrap();
    assert_eq!(
        config.upstream.extra_ca_file.as_deref(),
        Some(Path::new("/etc/gatehouse/ca.pem"))
    );
    let config = load(
        ConfigFile::None,
        &env(&[("GATEHOUSE__UPSTREAM__EXTRA_CA_FILE", "/run/ca bundle.pem")]),
    )
    .unwrap();
    assert_eq!(
        config.upstream.extra_ca_file.as_deref(),
        Some(Path::new("/run/ca bundle.pem"))
    );
}

#[test]
fn no_file_means_defaults() {
    let config = load(ConfigFile::None, &MapEnv::default()).unwrap();
    assert_eq!(config, Config::default());
}

#[test]
fn explicit_missing_file_is_an_error() {
    let error = load(
        ConfigFile::Explicit("/nonexistent/gatehouse.toml".into()),
        &MapEnv::default(),
    )
    .unwrap_err();
    assert_eq!(error.setting, "--config");
}

#[test]
fn each_bad_setting_is_named_on_one_line() {
    for (contents, vars, setting) in [
        ("[proxy]\nlistn = \"1.2.3.4:1\"\n", vec![], "proxy.listn"),
        ("[nope]\n", vec![], "nope"),
        ("", vec![("GATEHOUSE__PROXY__LISTN", "x")], "proxy.listn"),
        (
            "[upstream]\nconnect_timeout = \"soon\"\n",
            vec![],
            "upstream.connect_timeout",
        ),
        (
            "",
            vec![("GATEHOUSE__UPSTREAM__IDLE_TIMEOUT", "5 parsecs")],
            "upstream.idle_timeout",
        ),
        (
            "[admin]\npublic_url = \"not a url\"\n",
            vec![],
            "admin.public_url",
        ),
        (
            "[admin]\npublic_url = \"ftp://example.com\"\n",
            vec![],
            "admin.public_url",
        ),
        ("[proxy]\nlisten = \"localhost\"\n", vec![], "proxy.listen"),
        ("[database]\nurl = \"mysql://x\"\n", vec![], "database.url"),
        ("[log]\nformat = \"xml\"\n", vec![], "log.format"),
        (
            "[rate_limit]\nleases_per_window = 0\n",
            vec![],
            "rate_limit.leases_per_window",
        ),
        (
            "",
            vec![("GATEHOUSE__RATE_LIMIT__LEASES_PER_WINDOW", "5000")],
            "rate_limit.leases_per_window",
        ),
        (
            "[upstream]\nextra_ca_file = \"\"\n",
            vec![],
            "upstream.extra_ca_file",
        ),
        (
            "[upstream]\nextra_ca_file = 42\n",
            vec![],
            "upstream.extra_ca_file",
        ),
        (
            "",
            vec![("GATEHOUSE_ENCRYPTION_KEY", "c2hvcnQ=")],
            "GATEHOUSE_ENCRYPTION_KEY",
        ),
        (
            "",
            vec![("GATEHOUSE_ENCRYPTION_OLD_KEYS", "AAAA")],
            "GATEHOUSE_ENCRYPTION_OLD_KEYS",
        ),
        (
            "",
            vec![("GATEHOUSE_ADMIN_TOKEN", "letmein")],
            "GATEHOUSE_ADMIN_TOKEN",
        ),
        (
            "",
            vec![("OAUTH_GOOGLE_CLIENT_ID", "id")],
            "OAUTH_GOOGLE_CLIENT_SECRET",
        ),
        (
            "[providers.microsoft_365]\ntoken_uri = \"https://x\"\n",
            vec![],
            "providers.microsoft_365.token_uri",
        ),
        ("[webhooks]\ntimeout = \"0s\"\n", vec![], "webhooks.timeout"),
        ("[webhooks]\ntimeout = \"1h\"\n", vec![], "webhooks.timeout"),
        (
            "[webhooks]\nmax_concurrent = 0\n",
            vec![],
            "webhooks.max_concurrent",
        ),
        (
            "",
            vec![("GATEHOUSE__WEBHOOKS__RETRY_BASE", "2h")],
            "webhooks.retry_base",
        ),
        (
            "[webhooks]\npoll_interval = \"0s\"\n",
            vec![],
            "webhooks.poll_interval",
        ),
        ("[webhooks]\nsecret = \"x\"\n", vec![], "webhooks.secret"),
    ] {
        let error = error_of(contents, &vars);
        assert_eq!(error.setting, setting, "{contents:?} {vars:?} gave {error}");
        assert!(!error.to_string().contains('\n'), "one line: {error}");
    }
}

#[test]
fn secret_values_are_never_echoed() {
    let secret = "c3VwZXItc2VjcmV0LWJ1dC10b28tc2hvcnQ";
    let error = error_of("", &[("GATEHOUSE_ENCRYPTION_KEY", secret)]);
    assert!(!error.to_string().contains(secret), "{error}");

    let password = "hunter2-canary";
    let error = error_of(
        "",
        &[("DATABASE_URL", &format!("mysql://admin:{password}@db/x"))],
    );
    assert_eq!(error.setting, "database.url");
    assert!(!error.to_string().contains(password), "{error}");

    let error = error_of("[database]\nurl = 42\n", &[]);
    assert_eq!(error.setting, "database.url");
}

#[test]
fn well_known_secrets_are_decoded_and_hidden_from_debug() {
    use base64::Engine as _;
    let key = base64::engine::general_purpose::STANDARD.encode([5u8; 32]);
    let old = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode([6u8; 32]);
    let admin = crate::domain::tokens::AdminToken::generate();
    let config = load(
        ConfigFile::None,
        &env(&[
            ("GATEHOUSE_ENCRYPTION_KEY", &key),
            ("GATEHOUSE_ENCRYPTION_OLD_KEYS", &format!("{old}, {key}")),
            ("GATEHOUSE_ADMIN_TOKEN", admin.expose()),
            ("OAUTH_MICROSOFT_CLIENT_ID", "client-id"),
            ("OAUTH_MICROSOFT_CLIENT_SECRET", "client-secret-canary"),
        ]),
    )
    .unwrap();
    assert_eq!(config.env.encryption_key, Some([5u8; 32]));
    assert_eq!(config.env.old_encryption_keys, vec![[6u8; 32], [5u8; 32]]);
    assert_eq!(
        config.env.oauth_clients["microsoft_365"].client_id,
        "client-id"
    );
    let shown = format!("{config:?}");
    for secret in [key.as_str(), admin.expose(), "client-secret-canary"] {
        assert!(!shown.contains(secret), "Debug leaks {secret}");
    }
}
