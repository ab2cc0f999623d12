//! Scenario: an operator configures crier with a TOML file and flags: the file applies, flags
//! given on the command line win, mistakes are refused with the file, key and reason (exit code
//! 2 from the real binary), `--print-config` output loads back to the same configuration, and
//! the sample files shipped in docs/ and systemd/ load.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use clap::CommandFactory;
use crier::config::{self, Config, ConfigError, SlowConsumerPolicy};

/// A file in the temp directory, removed when dropped.
struct TempFile(PathBuf);

impl TempFile {
    fn new(contents: &str) -> TempFile {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let path = std::env::temp_dir().join(format!(
            "crier-config-test-{}-{}.toml",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::write(&path, contents).expect("write temp file");
        TempFile(path)
    }

    fn path(&self) -> &str {
        self.0.to_str().expect("UTF-8 temp path")
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn load(args: &[&str]) -> Result<Config, ConfigError> {
    let mut all = vec!["crier"];
    all.extend_from_slice(args);
    config::load(all).map(|loaded| loaded.config)
}

fn crier(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_crier"))
        .args(args)
        .output()
        .expect("run the crier binary")
}

fn repo_file(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(relative)
}

#[test]
fn file_values_apply_and_only_flags_given_on_the_command_line_override_them() {
    let file = TempFile::new(
        r#"
        listen = "127.0.0.1:9000"
        threads = 3
        ping_interval = "2s"
        max_message_bytes = 2_048
        slow_consumer = "drop"
        allowed_origins = ["https://a.example", "https://b.example:8443"]
        pin_threads = true
        "#,
    );
    let from_file = load(&["--config", file.path()]).unwrap();
    assert_eq!(from_file.listen, "127.0.0.1:9000".parse().unwrap());
    assert_eq!(from_file.threads, Some(3));
    assert_eq!(from_file.ping_interval, Duration::from_secs(2));
    assert_eq!(from_file.max_message_bytes, 2048);
    assert_eq!(from_file.slow_consumer, SlowConsumerPolicy::Drop);
    assert_eq!(
        from_file.allowed_origins,
        ["https://a.example", "https://b.example:8443"]
    );
    assert!(from_file.pin_threads);
    // Keys the file does not name keep their defaults.
    let defaults = Config::defaults();
    assert_eq!(from_file.drain_timeout, defaults.drain_timeout);
    assert_eq!(from_file.max_backlog_bytes, defaults.max_backlog_bytes);
    assert_eq!(from_file.max_connections, None);

    // A flag wins even when it spells out the default value (`30s`): what counts is that it
    // was given, not that it differs. Flags not given leave the file's values alone.
    let mixed = load(&[
        "--max-message-bytes",
        "4096",
        "--config",
        file.path(),
        "--ping-interval",
        "30s",
        "--allowed-origin",
        "https://c.example",
    ])
    .unwrap();
    assert_eq!(mixed.max_message_bytes, 4096);
    assert_eq!(mixed.ping_interval, Duration::from_secs(30));
    assert_eq!(mixed.allowed_origins, ["https://c.example"]);
    assert_eq!(mixed.threads, Some(3));
    assert_eq!(mixed.slow_consumer, SlowConsumerPolicy::Drop);
    assert_eq!(mixed.listen, "127.0.0.1:9000".parse().unwrap());
}

#[test]
fn without_a_file_load_is_the_command_line_alone() {
    assert_eq!(load(&[]).unwrap(), Config::defaults());
    let loaded = config::load(["crier", "--threads", "2"]).unwrap();
    assert_eq!(loaded.file, None);
    assert!(!loaded.print_config);
    assert_eq!(loaded.config.threads, Some(2));
}

#[test]
fn an_unknown_key_is_refused_naming_the_file_the_key_and_a_suggestion() {
    let file = TempFile::new("max_mesage_bytes = 65536\n");
    let message = load(&["--config", file.path()]).unwrap_err().to_string();
    assert_eq!(
        message,
        format!(
            "{}: key \"max_mesage_bytes\": unknown key (did you mean \"max_message_bytes\"?)",
            file.path()
        )
    );

    let output = crier(&["--config", file.path()]);
    assert_eq!(output.status.code(), Some(2));
    assert!(output.stdout.is_empty());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(stderr.trim_end(), format!("crier: {message}"));

    // Kebab-case (the flag's spelling) and tables are keys crier does not have either.
    let kebab = TempFile::new("max-backlog-bytes = 1\n");
    let message = load(&["--config", kebab.path()]).unwrap_err().to_string();
    assert!(
        message.contains(
            "key \"max-backlog-bytes\": unknown key (did you mean \"max_backlog_bytes\"?)"
        ),
        "{message}"
    );
    let table = TempFile::new("[server]\nlisten = \"0.0.0.0:1\"\n");
    let message = load(&["--config", table.path()]).unwrap_err().to_string();
    assert!(
        message.contains("key \"server\": unknown key (known keys: listen, threads,"),
        "{message}"
    );
}

#[test]
fn bad_values_are_refused_with_the_key_and_the_reason() {
    let cases = [
        (
            r#"ping_interval = "soon""#,
            "ping_interval",
            r#""soon" is not a duration (examples: 10s, 500ms, 2m)"#,
        ),
        (
            "drain_timeout = 5",
            "drain_timeout",
            "5 has no unit; write a duration as a string such as \"5s\"",
        ),
        (
            r#"handshake_timeout = "0s""#,
            "handshake_timeout",
            "must be longer than 0",
        ),
        (r#"ping_interval = "48h""#, "ping_interval", "too long"),
        (
            r#"slow_consumer = "dropp""#,
            "slow_consumer",
            r#""dropp" is not one of "disconnect", "drop""#,
        ),
        (
            "max_message_bytes = -1",
            "max_message_bytes",
            "-1 is negative",
        ),
        (
            r#"max_message_bytes = "1MiB""#,
            "max_message_bytes",
            "expected a whole number >= 1",
        ),
        (
            "max_backlog_bytes = 1.5",
            "max_backlog_bytes",
            "found the number 1.5",
        ),
        ("threads = 0", "threads", "0 is too small (at least 1)"),
        ("inbox_budget_bytes = 0", "inbox_budget_bytes", "too small"),
        (
            r#"pin_threads = "yes""#,
            "pin_threads",
            "expected true or false",
        ),
        (
            r#"listen = "8080""#,
            "listen",
            r#""8080" is not an address with a port"#,
        ),
        (
            r#"allowed_origins = "https://a.example""#,
            "allowed_origins",
            "expected an array of origins",
        ),
        (
            r#"allowed_origins = ["https://a.example/"]"#,
            "allowed_origins",
            "without path or trailing slash",
        ),
    ];
    for (line, key, reason) in cases {
        let file = TempFile::new(&format!("{line}\n"));
        match load(&["--config", file.path()]) {
            Err(error @ ConfigError::BadValue { .. }) => {
                let message = error.to_string();
                let prefix = format!("{}: key \"{key}\": ", file.path());
                assert!(message.starts_with(&prefix), "{line}: {message}");
                assert!(message.contains(reason), "{line}: {message}");
                assert_eq!(error.exit_code(), 2);
            }
            other => panic!("{line}: expected a bad value, got {other:?}"),
        }
    }
}

#[test]
fn a_bad_value_is_refused_even_when_a_flag_overrides_it() {
    let file = TempFile::new("ping_interval = \"soon\"\n");
    let output = crier(&["--ping-interval", "1s", "--config", file.path()]);
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.starts_with(&format!(
            "crier: {}: key \"ping_interval\": \"soon\" is not a duration",
            file.path()
        )),
        "{stderr}"
    );
}

#[test]
fn unreadable_and_malformed_files_are_refused_with_exit_code_2() {
    let missing = std::env::temp_dir().join(format!("crier-no-such-{}.toml", std::process::id()));
    let missing = missing.to_str().unwrap();
    let output = crier(&["--config", missing]);
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.starts_with(&format!("crier: {missing}: cannot read: ")),
        "{stderr}"
    );

    let broken = TempFile::new("listen = \"0.0.0.0:8080\"\nthreads = [\n");
    let output = crier(&["--config", broken.path()]);
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.starts_with(&format!("crier: {}: not valid TOML: ", broken.path())),
        "{stderr}"
    );
    assert!(stderr.contains("line 2"), "{stderr}");

    let duplicate = TempFile::new("threads = 1\nthreads = 2\n");
    assert!(matches!(
        load(&["--config", duplicate.path()]),
        Err(ConfigError::NotToml { .. })
    ));
}

#[test]
fn command_line_mistakes_exit_2_and_help_exits_0() {
    let output = crier(&["--threads", "0"]);
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("must be at least 1"));
    let output = crier(&["--no-such-flag"]);
    assert_eq!(output.status.code(), Some(2));

    let output = crier(&["--help"]);
    assert_eq!(output.status.code(), Some(0));
    let help = String::from_utf8_lossy(&output.stdout);
    assert!(help.contains("--config <PATH>"), "{help}");
    assert!(help.contains("--print-config"), "{help}");
}

#[test]
fn print_config_output_loads_back_to_the_same_configuration() {
    let file = TempFile::new(
        r#"
        threads = 3
        drain_timeout = "1.5s"
        handshake_timeout = "250ms"
        allowed_origins = ["https://a.example"]
        slow_consumer = "drop"
        "#,
    );
    let args = [
        "--config",
        file.path(),
        "--max-connections",
        "5000",
        "--allowed-origin",
        "https://b.example,https://c.example",
        "--listen",
        "[::1]:7000",
        "--pin-threads",
    ];
    let expected = load(&args).unwrap();

    let mut with_print = args.to_vec();
    with_print.push("--print-config");
    let output = crier(&with_print);
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    assert!(output.stderr.is_empty(), "{output:?}");
    let printed = String::from_utf8(output.stdout).unwrap();
    assert!(printed.contains("max_connections = 5000\n"), "{printed}");
    assert!(
        printed.contains("drain_timeout = \"1500ms\"\n"),
        "{printed}"
    );

    let reloaded = TempFile::new(&printed);
    assert_eq!(load(&["--config", reloaded.path()]).unwrap(), expected);

    // The defaults round-trip too, with the start-up-computed options left unset.
    let output = crier(&["--print-config"]);
    assert_eq!(output.status.code(), Some(0));
    let printed = String::from_utf8(output.stdout).unwrap();
    assert!(printed.contains("# threads = "), "{printed}");
    let reloaded = TempFile::new(&printed);
    assert_eq!(
        load(&["--config", reloaded.path()]).unwrap(),
        Config::defaults()
    );
}

/// The ```toml block of docs/configuration.md.
fn docs_sample() -> String {
    let text = std::fs::read_to_string(repo_file("docs/configuration.md")).unwrap();
    let start = text.find("```toml\n").expect("a ```toml block") + "```toml\n".len();
    let end = start + text[start..].find("```").expect("the block ends");
    text[start..end].to_string()
}

#[test]
fn the_shipped_sample_files_load() {
    let systemd = repo_file("systemd/crier.toml");
    let from_systemd = load(&["--config", systemd.to_str().unwrap()]).unwrap();
    assert_eq!(from_systemd.listen, "0.0.0.0:8080".parse().unwrap());

    let docs = TempFile::new(&docs_sample());
    let from_docs = load(&["--config", docs.path()]).unwrap();
    assert_ne!(
        from_docs,
        Config::defaults(),
        "the sample shows something off the defaults"
    );
}

#[test]
fn the_configuration_guide_documents_every_option_with_key_and_flag() {
    let guide = std::fs::read_to_string(repo_file("docs/configuration.md")).unwrap();
    let command = Config::command();
    for arg in command.get_arguments() {
        let (Some(flag), id) = (arg.get_long(), arg.get_id().as_str()) else {
            continue;
        };
        if flag == "help" || flag == "version" {
            continue;
        }
        assert!(
            guide.contains(&format!("`{id}`")),
            "key `{id}` is documented"
        );
        assert!(
            guide.contains(&format!("`--{flag}`")),
            "flag `--{flag}` is documented"
        );
    }
}

#[test]
fn the_redis_example_configuration_loads_as_a_redis_node() {
    let path = repo_file("systemd/crier-redis.toml");
    let config = load(&["--config", path.to_str().unwrap()]).unwrap();
    assert_eq!(config.engine, crier::config::EngineKind::Redis);
    assert_eq!(config.redis_url, ["redis://10.0.0.5:6379"]);
    assert_eq!(config.redis_prefix, "crier");
    let bad = TempFile::new("engine = \"redis\"\nredis_prefix = \"a{b\"\n");
    assert!(crier::config::load(["crier", "--config", bad.path()]).is_err());
    let bad = TempFile::new("redis_url = \"http://x\"\n");
    assert!(crier::config::load(["crier", "--config", bad.path()]).is_err());
}

#[test]
fn history_options_and_topic_overrides_load_and_print_back() {
    let file = TempFile::new(
        r#"
        history_size = 20
        history_ttl = "1m"
        max_history_bytes = 1_000_000
        max_replay_messages = 50

        [[topics]]
        pattern = "chat.lobby"
        history_size = 0

        [[topics]]
        pattern = "chat.>"
        history_size = 200
        history_ttl = "10m"
        "#,
    );
    let loaded = load(&["--config", file.path(), "--history-size", "30"]).unwrap();
    assert_eq!(loaded.history_size, 30, "the flag wins");
    assert_eq!(loaded.history_ttl, Duration::from_secs(60));
    assert_eq!(loaded.max_history_bytes, 1_000_000);
    assert_eq!(loaded.max_replay_messages, 50);
    assert_eq!(
        loaded.topics,
        [
            config::TopicOverride {
                pattern: "chat.lobby".into(),
                history_size: Some(0),
                history_ttl: None,
            },
            config::TopicOverride {
                pattern: "chat.>".into(),
                history_size: Some(200),
                history_ttl: Some(Duration::from_secs(600)),
            },
        ]
    );
    let reloaded = TempFile::new(&loaded.to_toml());
    assert_eq!(load(&["--config", reloaded.path()]).unwrap(), loaded);

    let defaults = Config::defaults();
    assert_eq!(defaults.history_size, 100);
    assert_eq!(defaults.history_ttl, Duration::from_secs(300));
    assert_eq!(defaults.max_history_bytes, 64 << 20);
    assert_eq!(defaults.max_replay_messages, 1000);
    assert!(defaults.topics.is_empty());
}

#[test]
fn bad_topic_overrides_are_refused_naming_the_table_and_the_rule() {
    for (text, wanted) in [
        (
            "[[topics]]\npattern = \"chat.>.x\"\n",
            "[[topics]] number 1: pattern \"chat.>.x\": '>' must be the last segment",
        ),
        (
            "[[topics]]\nhistory_size = 5\n",
            "[[topics]] number 1: a pattern is required",
        ),
        (
            "[[topics]]\npattern = \"a\"\n[[topics]]\npattern = \"b\"\nhistory_ttl = 5\n",
            "[[topics]] number 2: history_ttl: 5 has no unit",
        ),
        (
            "[[topics]]\npattern = \"a\"\nsize = 5\n",
            "[[topics]] number 1: unknown key \"size\"",
        ),
        ("topics = 5\n", "expected [[topics]] tables"),
    ] {
        let file = TempFile::new(text);
        let error = load(&["--config", file.path()]).unwrap_err().to_string();
        assert!(error.contains(wanted), "{text:?}: {error}");
        assert!(error.contains("key \"topics\""), "{error}");
    }
    let file = TempFile::new("topic = 5\n");
    let error = load(&["--config", file.path()]).unwrap_err().to_string();
    assert!(error.contains("did you mean \"topics\""), "{error}");
}
