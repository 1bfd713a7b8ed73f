//! Reading, overriding and validating the configuration.

use std::fmt;
use std::path::{Path, PathBuf};

use super::{Config, SecretUrl};

/// The file read when neither `--config` nor `GOCHAT_CONFIG` names one.
pub const DEFAULT_CONFIG_PATH: &str = "config/default.toml";

/// Where the configuration came from, for the start-up log line and error messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigSource {
    File(PathBuf),
    /// No file: `config/default.toml` is absent, so the built-in defaults apply.
    BuiltIn,
}

impl fmt::Display for ConfigSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigSource::File(p) => write!(f, "{}", p.display()),
            ConfigSource::BuiltIn => f.write_str("<built-in defaults>"),
        }
    }
}

/// A configuration that cannot be used. The message names the place and the fix.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{file}: cannot read the configuration file: {source}")]
    Read {
        file: String,
        #[source]
        source: std::io::Error,
    },
    /// A key has a value of the wrong shape or out of range.
    #[error("{file}:{line}: key `{key}`: {message}")]
    Invalid {
        file: String,
        line: usize,
        key: String,
        message: String,
    },
}

/// Loads the configuration: `explicit` (from `--config`), else `GOCHAT_CONFIG`, else
/// `config/default.toml` if present, else built-in defaults; then the `GOCHAT_*` overrides.
pub fn load(explicit: Option<&Path>) -> Result<(Config, ConfigSource), ConfigError> {
    load_with_env(explicit, |name| std::env::var(name).ok())
}

/// [`load`] with the environment given as a lookup function, so tests need not mutate the
/// process environment.
pub fn load_with_env(
    explicit: Option<&Path>,
    env: impl Fn(&str) -> Option<String>,
) -> Result<(Config, ConfigSource), ConfigError> {
    let path = match explicit {
        Some(p) => Some(p.to_path_buf()),
        None => match env("GOCHAT_CONFIG") {
            Some(p) if !p.is_empty() => Some(PathBuf::from(p)),
            _ => Some(PathBuf::from(DEFAULT_CONFIG_PATH)).filter(|p| p.exists()),
        },
    };
    let (mut config, source, text) = match path {
        Some(path) => {
            let file = path.display().to_string();
            let text = std::fs::read_to_string(&path).map_err(|source| ConfigError::Read {
                file: file.clone(),
                source,
            })?;
            (load_from_str(&text, &file)?, ConfigSource::File(path), text)
        }
        None => (Config::default(), ConfigSource::BuiltIn, String::new()),
    };
    apply_env(&mut config, &env)?;
    validate(&config, &source.to_string(), &text)?;
    Ok((config, source))
}

/// Parses one TOML document (without environment overrides or validation).
pub fn load_from_str(text: &str, file: &str) -> Result<Config, ConfigError> {
    let de = toml::de::Deserializer::parse(text).map_err(|e| syntax_error(e, text, file))?;
    serde_path_to_error::deserialize(de).map_err(|e| {
        let key = e.path().to_string();
        let inner = e.into_inner();
        let line = inner
            .span()
            .map(|s| line_of(text, s.start))
            .unwrap_or_else(|| key_line(text, &key));
        ConfigError::Invalid {
            file: file.into(),
            line,
            key,
            message: inner.message().into(),
        }
    })
}

fn syntax_error(e: toml::de::Error, text: &str, file: &str) -> ConfigError {
    ConfigError::Invalid {
        file: file.into(),
        line: e.span().map(|s| line_of(text, s.start)).unwrap_or(1),
        key: "<syntax>".into(),
        message: format!("not valid TOML: {}", e.message()),
    }
}

/// The environment overrides of the public contract; each beats the file.
fn apply_env(
    config: &mut Config,
    env: &impl Fn(&str) -> Option<String>,
) -> Result<(), ConfigError> {
    if let Some(v) = env("GOCHAT_DATABASE_URL") {
        config.database.url = SecretUrl::new(v);
    }
    if let Some(v) = env("GOCHAT_AMQP_URL") {
        config.amqp.url = SecretUrl::new(v);
    }
    if let Some(v) = env("GOCHAT_AMQP_PREFIX") {
        config.amqp.prefix = v;
    }
    if let Some(v) = env("GOCHAT_SMTP_URL") {
        config.smtp.url = SecretUrl::new(v);
    }
    if let Some(v) = env("GOCHAT_HTTP_ADDR") {
        config.http.addr = v.parse().map_err(|_| ConfigError::Invalid {
            file: "environment".into(),
            line: 0,
            key: "GOCHAT_HTTP_ADDR".into(),
            message: format!("expected a socket address such as 127.0.0.1:9187, found {v:?}"),
        })?;
    }
    if let Some(v) = env("GOCHAT_LMTP_ADDR") {
        config.lmtp.addr = v.parse().map_err(|_| ConfigError::Invalid {
            file: "environment".into(),
            line: 0,
            key: "GOCHAT_LMTP_ADDR".into(),
            message: format!("expected a socket address such as 127.0.0.1:2424, found {v:?}"),
        })?;
    }
    if let Some(v) = env("GOCHAT_API_ADDR") {
        config.api.addr = v.parse().map_err(|_| ConfigError::Invalid {
            file: "environment".into(),
            line: 0,
            key: "GOCHAT_API_ADDR".into(),
            message: format!("expected a socket address such as 127.0.0.1:8080, found {v:?}"),
        })?;
    }
    if let Some(v) = env("GOCHAT_WORKFLOWS") {
        config.workflows.dir = PathBuf::from(v);
    }
    if let Some(v) = env("GOCHAT_WORKER_THREADS") {
        config.runtime.worker_threads =
            Some(v.trim().parse().map_err(|_| ConfigError::Invalid {
                file: "environment".into(),
                line: 0,
                key: "GOCHAT_WORKER_THREADS".into(),
                message: format!("expected a number of threads such as 2, found {v:?}"),
            })?);
    }
    Ok(())
}

/// Checks what serde's types cannot express: URL schemes, non-empty ladders, known kinds.
fn validate(config: &Config, file: &str, text: &str) -> Result<(), ConfigError> {
    let fail = |key: &str, message: String| ConfigError::Invalid {
        file: file.into(),
        line: key_line(text, key),
        key: key.into(),
        message,
    };
    check_scheme(&config.database.url, &["sqlite", "postgres", "postgresql"])
        .map_err(|m| fail("database.url", m))?;
    check_scheme(&config.amqp.url, &["amqp", "amqps"]).map_err(|m| fail("amqp.url", m))?;
    check_scheme(&config.smtp.url, &["smtp", "smtps"]).map_err(|m| fail("smtp.url", m))?;
    if config.database.max_connections == 0 {
        return Err(fail(
            "database.max_connections",
            "expected at least 1, found 0".into(),
        ));
    }
    if config.amqp.retry_delays.is_empty() || config.amqp.retry_delays.iter().any(|d| d.is_zero()) {
        return Err(fail(
            "amqp.retry_delays",
            "expected a non-empty list of positive durations such as [\"1s\", \"10s\", \"1m\"]"
                .into(),
        ));
    }
    if !config
        .amqp
        .prefix
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
    {
        return Err(fail(
            "amqp.prefix",
            format!(
                "expected letters, digits, '.', '_' or '-', found {:?}",
                config.amqp.prefix
            ),
        ));
    }
    if config.amqp.prefetch == 0 || config.amqp.concurrency == 0 || config.amqp.batch_size == 0 {
        return Err(fail(
            "amqp.prefetch",
            "prefetch, concurrency and batch_size must be at least 1".into(),
        ));
    }
    if let Some(unknown) = config
        .amqp
        .consume
        .iter()
        .find(|k| !crate::contract::JOB_KINDS.contains(&k.as_str()))
    {
        return Err(fail(
            "amqp.consume",
            format!(
                "unknown job kind {unknown:?}; expected some of {} (or an empty list for all)",
                crate::contract::JOB_KINDS.join(", ")
            ),
        ));
    }
    for (kind, c) in &config.amqp.consumers {
        if !crate::contract::JOB_KINDS.contains(&kind.as_str()) {
            return Err(fail(
                &format!("amqp.consumers.{kind}"),
                format!(
                    "unknown job kind {kind:?}; expected one of {}",
                    crate::contract::JOB_KINDS.join(", ")
                ),
            ));
        }
        if c.prefetch == Some(0)
            || c.concurrency == Some(0)
            || c.batch_size == Some(0)
            || c.db_concurrency == Some(0)
        {
            return Err(fail(
                &format!("amqp.consumers.{kind}"),
                "prefetch, concurrency, batch_size and db_concurrency must be at least 1".into(),
            ));
        }
        let concurrency = config.amqp.consumer(kind).concurrency;
        if let Some(db) = c.db_concurrency.filter(|db| *db > concurrency) {
            return Err(fail(
                &format!("amqp.consumers.{kind}.db_concurrency"),
                format!(
                    "{db} is more than the {concurrency} jobs running at once (concurrency); lower it, or raise concurrency"
                ),
            ));
        }
    }
    if !config.mail.from_address.contains('@') {
        return Err(fail(
            "mail.from_address",
            format!(
                "expected an email address, found {:?}",
                config.mail.from_address
            ),
        ));
    }
    let tag = &config.mail.subject_token;
    if tag.matches("{token}").count() != 1 || tag.trim() == "{token}" {
        return Err(fail(
            "mail.subject_token",
            format!(
                "expected a pattern with `{{token}}` once and some text around it, like \"[#{{token}}]\"; found {tag:?}"
            ),
        ));
    }
    if config.mail.loop_limit == 0 || config.mail.loop_window.is_zero() {
        return Err(fail(
            "mail.loop_limit",
            "loop_limit and loop_window must be positive".into(),
        ));
    }
    if config.runtime.worker_threads == Some(0) {
        return Err(fail(
            "runtime.worker_threads",
            "expected at least 1, found 0; leave the key out for one thread per core".into(),
        ));
    }
    if !(1..=100_000).contains(&config.lmtp.max_connections) {
        return Err(fail(
            "lmtp.max_connections",
            format!(
                "expected 1 to 100000, found {}",
                config.lmtp.max_connections
            ),
        ));
    }
    if config.lmtp.idle_timeout.is_zero() || config.lmtp.read_timeout.is_zero() {
        return Err(fail(
            "lmtp.idle_timeout",
            "idle_timeout and read_timeout must be positive".into(),
        ));
    }
    if config.api.max_body < 1024 {
        return Err(fail(
            "api.max_body",
            format!(
                "expected at least 1024 bytes, found {}",
                config.api.max_body
            ),
        ));
    }
    if config.api.request_timeout.is_zero() {
        return Err(fail(
            "api.request_timeout",
            "expected a positive duration such as \"30s\"".into(),
        ));
    }
    if config.api.max_wait >= config.api.request_timeout {
        return Err(fail(
            "api.max_wait",
            format!(
                "must be shorter than api.request_timeout ({}), found {}",
                humantime::format_duration(config.api.request_timeout),
                humantime::format_duration(config.api.max_wait)
            ),
        ));
    }
    if config.scheduler.interval.is_zero() || config.scheduler.batch == 0 {
        return Err(fail(
            "scheduler.interval",
            "interval and batch must be positive".into(),
        ));
    }
    Ok(())
}

fn check_scheme(url: &SecretUrl, allowed: &[&str]) -> Result<(), String> {
    let parsed = url::Url::parse(url.expose())
        .map_err(|e| format!("expected a URL ({}://...), found {} ({e})", allowed[0], url))?;
    if allowed.contains(&parsed.scheme()) {
        Ok(())
    } else {
        Err(format!(
            "expected a URL with scheme {}, found scheme {:?}",
            allowed.join(" or "),
            parsed.scheme()
        ))
    }
}

/// 1-based line of byte offset `at`.
fn line_of(text: &str, at: usize) -> usize {
    text.get(..at)
        .map(|t| t.matches('\n').count() + 1)
        .unwrap_or(1)
}

/// Best-effort line of a dotted key (`amqp.retry_delays`) in a TOML text, for errors found
/// after parsing; 0 when the key is not in the file (it came from a default or the
/// environment).
fn key_line(text: &str, dotted: &str) -> usize {
    let (table, key) = match dotted.rsplit_once('.') {
        Some((t, k)) => (t, k),
        None => ("", dotted),
    };
    let mut current = String::new();
    for (i, line) in text.lines().enumerate() {
        let l = line.trim();
        if let Some(h) = l.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
            current = h.trim().trim_matches(|c| c == '[' || c == ']').to_string();
            if current == dotted {
                return i + 1;
            }
            continue;
        }
        if current == table && l.split('=').next().map(|k| k.trim().trim_matches('"')) == Some(key)
        {
            return i + 1;
        }
    }
    0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_env(_: &str) -> Option<String> {
        None
    }

    #[test]
    fn shipped_default_file_equals_builtin_defaults() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/default.toml");
        let (config, source) = load_with_env(Some(&path), no_env).expect("default.toml is valid");
        assert_eq!(source, ConfigSource::File(path));
        assert_eq!(config, Config::default());
    }

    #[test]
    fn wrong_type_names_file_line_key_expected_and_found() {
        let text = "[database]\nmax_connections = \"ten\"\n";
        let err = load_from_str(text, "bad.toml").unwrap_err().to_string();
        assert!(
            err.starts_with("bad.toml:2: key `database.max_connections`:"),
            "{err}"
        );
        assert!(err.contains("expected u32") && err.contains("ten"), "{err}");
    }

    #[test]
    fn unknown_key_is_refused_with_the_known_ones() {
        let err = load_from_str("[amqp]\nprefixx = \"a\"\n", "c.toml")
            .unwrap_err()
            .to_string();
        assert!(err.contains("c.toml:2"), "{err}");
        assert!(
            err.contains("unknown field `prefixx`") && err.contains("`prefix`"),
            "{err}"
        );
    }

    #[test]
    fn syntax_error_is_located() {
        let err = load_from_str("[http]\naddr = \n", "s.toml")
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("s.toml:2: key `<syntax>`: not valid TOML"),
            "{err}"
        );
    }

    #[test]
    fn bad_duration_and_bad_scheme_are_explained() {
        let err = load_from_str("[amqp]\nconfirm_timeout = \"ten seconds\"\n", "d.toml")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("d.toml:2: key `amqp.confirm_timeout`"),
            "{err}"
        );

        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("g.toml");
        std::fs::write(&file, "[database]\n\nurl = \"mysql://x\"\n").expect("write");
        let err = load_with_env(Some(&file), no_env).unwrap_err().to_string();
        assert!(
            err.ends_with(
                "g.toml:3: key `database.url`: expected a URL with scheme sqlite or postgres or \
             postgresql, found scheme \"mysql\""
            ),
            "{err}"
        );
    }

    #[test]
    fn worker_threads_come_from_the_file_or_the_environment_and_zero_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("r.toml");
        std::fs::write(&file, "[runtime]\nworker_threads = 2\n").expect("write");
        let (config, _) = load_with_env(Some(&file), no_env).expect("valid");
        assert_eq!(config.runtime.worker_threads, Some(2));

        let env = |k: &str| (k == "GOCHAT_WORKER_THREADS").then(|| "1".to_owned());
        let (config, _) = load_with_env(Some(&file), env).expect("valid");
        assert_eq!(config.runtime.worker_threads, Some(1));

        let env = |k: &str| (k == "GOCHAT_WORKER_THREADS").then(|| "two".to_owned());
        let err = load_with_env(Some(&file), env).unwrap_err().to_string();
        assert!(
            err.contains("GOCHAT_WORKER_THREADS") && err.contains("\"two\""),
            "{err}"
        );

        std::fs::write(
            &file,
            "[log]\nfilter = \"info\"\n\n[runtime]\nworker_threads = 0\n",
        )
        .expect("write");
        let err = load_with_env(Some(&file), no_env).unwrap_err().to_string();
        assert!(
            err.ends_with(
                "r.toml:5: key `runtime.worker_threads`: expected at least 1, found 0; leave the \
                 key out for one thread per core"
            ),
            "{err}"
        );
    }

    #[test]
    fn environment_beats_the_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("c.toml");
        std::fs::write(&file, "[amqp]\nprefix = \"file-\"\n").expect("write");
        let env = |k: &str| match k {
            "GOCHAT_CONFIG" => Some(file.display().to_string()),
            "GOCHAT_AMQP_PREFIX" => Some("env-".into()),
            "GOCHAT_DATABASE_URL" => Some("postgres://u:secret@db/x".into()),
            "GOCHAT_HTTP_ADDR" => Some("127.0.0.1:9999".into()),
            "GOCHAT_WORKFLOWS" => Some("/etc/gochat/workflows".into()),
            "GOCHAT_LMTP_ADDR" => Some("127.0.0.1:2525".into()),
            _ => None,
        };
        let (config, source) = load_with_env(None, env).expect("valid");
        assert_eq!(source, ConfigSource::File(file.clone()));
        assert_eq!(config.amqp.prefix, "env-");
        assert_eq!(config.http.addr.port(), 9999);
        assert_eq!(config.lmtp.addr.port(), 2525);
        assert_eq!(config.workflows.dir, PathBuf::from("/etc/gochat/workflows"));
        assert!(!format!("{config:?}").contains("secret"));
    }

    #[test]
    fn bad_environment_value_names_the_variable() {
        let env = |k: &str| (k == "GOCHAT_HTTP_ADDR").then(|| "nowhere".to_string());
        let err = load_with_env(Some(Path::new("/nonexistent/x.toml")), no_env).unwrap_err();
        assert!(matches!(err, ConfigError::Read { .. }));
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("e.toml");
        std::fs::write(&file, "").expect("write");
        let err = load_with_env(Some(&file), env).unwrap_err().to_string();
        assert!(
            err.contains("GOCHAT_HTTP_ADDR") && err.contains("\"nowhere\""),
            "{err}"
        );
    }

    #[test]
    fn outbound_delivery_keeps_more_at_once_than_the_batched_kinds_unless_configured() {
        let defaults = crate::config::Config::default();
        let inbound = defaults.amqp.consumer("inbound-mail");
        let outbound = defaults.amqp.consumer("outbound-message");
        assert_eq!(
            (inbound.concurrency, inbound.batch_size, inbound.prefetch),
            (4, 64, 512)
        );
        assert_eq!(
            (outbound.concurrency, outbound.batch_size, outbound.prefetch),
            (8, 1, 512)
        );
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("c.toml");
        std::fs::write(
            &file,
            "[amqp]\nconcurrency = 2\n[amqp.consumers.outbound-message]\nconcurrency = 3\n",
        )
        .expect("write");
        let (config, _) = load_with_env(Some(&file), no_env).expect("valid");
        assert_eq!(config.amqp.consumer("outbound-message").concurrency, 3);
        assert_eq!(config.amqp.consumer("inbound-mail").concurrency, 2);
        std::fs::write(&file, "[amqp]\nconcurrency = 2\n").expect("write");
        let (config, _) = load_with_env(Some(&file), no_env).expect("valid");
        assert_eq!(
            config.amqp.consumer("outbound-message").concurrency,
            8,
            "the built-in setting beats the global default"
        );
    }

    #[test]
    fn delivery_keeps_one_transaction_at_a_time_only_beside_other_kinds() {
        let defaults = crate::config::Config::default();
        assert_eq!(defaults.amqp.consumer("outbound-message").db_concurrency, 1);
        assert_eq!(defaults.amqp.consumer("inbound-mail").db_concurrency, 4);
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("c.toml");
        let load = |text: &str| {
            std::fs::write(&file, text).expect("write");
            load_with_env(Some(&file), no_env).map(|(c, _)| c)
        };
        let alone = load("[amqp]\nconsume = [\"outbound-message\"]\n").expect("valid");
        assert_eq!(alone.amqp.consumer("outbound-message").db_concurrency, 8);
        let set = load("[amqp.consumers.outbound-message]\ndb_concurrency = 3\n").expect("valid");
        assert_eq!(set.amqp.consumer("outbound-message").db_concurrency, 3);
        let lower = load("[amqp.consumers.inbound-mail]\nconcurrency = 2\n").expect("valid");
        assert_eq!(lower.amqp.consumer("inbound-mail").db_concurrency, 2);
        for (text, says, key) in [
            (
                "[amqp.consumers.outbound-message]\ndb_concurrency = 9\n",
                "9 is more than the 8 jobs running at once",
                "amqp.consumers.outbound-message.db_concurrency",
            ),
            (
                "[amqp.consumers.inbound-mail]\ndb_concurrency = 0\n",
                "must be at least 1",
                "amqp.consumers.inbound-mail",
            ),
        ] {
            let err = load(text).unwrap_err().to_string();
            assert!(
                err.contains(says) && err.contains(key) && err.contains("c.toml"),
                "{err}"
            );
        }
    }

    #[test]
    fn lmtp_limits_must_be_usable() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("l.toml");
        for (text, says) in [
            (
                "[lmtp]\nmax_connections = 0\n",
                "l.toml:2: key `lmtp.max_connections`: expected 1 to 100000, found 0",
            ),
            (
                "[lmtp]\nidle_timeout = \"0s\"\n",
                "key `lmtp.idle_timeout`: idle_timeout and read_timeout must be positive",
            ),
            ("[lmtp]\naddr = \"localhost\"\n", "key `lmtp.addr`"),
        ] {
            std::fs::write(&file, text).expect("write");
            let err = load_with_env(Some(&file), no_env).unwrap_err().to_string();
            assert!(err.contains(says), "{err}");
        }
        std::fs::write(
            &file,
            "[lmtp]\naddr = \"0.0.0.0:24\"\nmax_connections = 5\n",
        )
        .expect("write");
        let (config, _) = load_with_env(Some(&file), no_env).expect("valid");
        assert_eq!(
            (config.lmtp.addr.port(), config.lmtp.max_connections),
            (24, 5)
        );
        let env = |k: &str| (k == "GOCHAT_LMTP_ADDR").then(|| "nowhere".to_owned());
        let err = load_with_env(Some(&file), env).unwrap_err().to_string();
        assert!(
            err.contains("GOCHAT_LMTP_ADDR") && err.contains("\"nowhere\""),
            "{err}"
        );
    }

    #[test]
    fn unknown_consumer_kind_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("k.toml");
        std::fs::write(&file, "[amqp.consumers.inbound-mails]\nprefetch = 4\n").expect("write");
        let err = load_with_env(Some(&file), no_env).unwrap_err().to_string();
        assert!(
            err.contains("k.toml:1: key `amqp.consumers.inbound-mails`"),
            "{err}"
        );
        assert!(err.contains("inbound-mail, outbound-message"), "{err}");
    }
}
