//! Operator errors: the built binary, misconfigured on purpose. Each must exit non-zero
//! within a few seconds with one `error:` line naming the problem and the fix — never a
//! panic, a backtrace, a hang, or a password.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::TestDb;
use crate::common::env::brokers;

struct Outcome {
    code: Option<i32>,
    stderr: String,
    took: Duration,
}

/// Runs `recq args...` with only `env` set (plus PATH and HOME), killing it after 20 s.
fn recq(args: &[&str], env: &[(&str, &str)]) -> Outcome {
    let mut command = Command::new(env!("CARGO_BIN_EXE_recq"));
    command
        .args(args)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", std::env::var_os("HOME").unwrap_or_default())
        .env("RECQ_CONNECT_TIMEOUT_SECS", "3")
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let started = Instant::now();
    let mut child = command.spawn().unwrap();
    loop {
        if child.try_wait().unwrap().is_some() {
            break;
        }
        if started.elapsed() > Duration::from_secs(20) {
            child.kill().unwrap();
            panic!("recq {args:?} hung for 20 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let output = child.wait_with_output().unwrap();
    Outcome {
        code: output.status.code(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        took: started.elapsed(),
    }
}

/// The checks every operator error must pass; returns the `error:` line.
fn assert_clear_error(outcome: &Outcome, fix: &[&str]) -> String {
    let Outcome { code, stderr, took } = outcome;
    assert!(
        matches!(code, Some(c) if *c != 0),
        "exit {code:?}: {stderr}"
    );
    assert!(*took < Duration::from_secs(10), "took {took:?}: {stderr}");
    for bad in ["panicked", "stack backtrace", "RUST_BACKTRACE"] {
        assert!(!stderr.contains(bad), "{bad} in: {stderr}");
    }
    let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(errors.len(), 1, "want one error line: {stderr}");
    // Besides the error line only informational log lines may appear (no WARN/ERROR noise
    // from client libraries repeating the same problem).
    for line in stderr.lines() {
        assert!(
            !line.contains(" ERROR ") && !line.contains(" WARN "),
            "noise on stderr: {line}\n{stderr}"
        );
    }
    let line = errors[0].to_owned();
    for word in fix {
        assert!(line.contains(word), "{word:?} missing in {line:?}");
    }
    line
}

#[test]
fn a_syntactically_invalid_database_url_is_reported_with_the_variable_to_fix() {
    let outcome = recq(
        &["status", "--user", "1"],
        &[(
            "DATABASE_URL",
            "postgres://app:hunter22@127.0.0.1:notaport/recq",
        )],
    );
    let line = assert_clear_error(&outcome, &["DATABASE_URL"]);
    assert!(!outcome.stderr.contains("hunter22"), "{line}");
    eprintln!("{line}");
}

#[test]
fn an_unreachable_postgres_is_reported_quickly_without_its_password() {
    let outcome = recq(
        &["status", "--user", "1"],
        &[("DATABASE_URL", "postgres://app:hunter22@127.0.0.1:1/recq")],
    );
    let line = assert_clear_error(&outcome, &["Postgres", "DATABASE_URL", "app:***@"]);
    assert!(!outcome.stderr.contains("hunter22"), "{line}");
    eprintln!("{line} ({:?})", outcome.took);
}

#[test]
fn an_unreachable_broker_is_reported_within_the_connect_timeout() {
    let outcome = recq(
        &["submit", "--user", "1"],
        &[("RECQ_BROKERS", "127.0.0.1:1")],
    );
    let line = assert_clear_error(&outcome, &["Kafka", "127.0.0.1:1", "RECQ_BROKERS"]);
    eprintln!("{line} ({:?})", outcome.took);
}

#[test]
fn an_unreachable_schema_registry_is_reported_without_its_password() {
    let outcome = recq(
        &["submit", "--user", "1"],
        &[
            ("RECQ_BROKERS", &brokers()),
            ("RECQ_TOPIC_PREFIX", "operator-test."),
            ("RECQ_REGISTRY_URL", "http://reg:hunter22@127.0.0.1:1"),
        ],
    );
    let line = assert_clear_error(&outcome, &["schema registry", "RECQ_REGISTRY_URL"]);
    assert!(!outcome.stderr.contains("hunter22"), "{line}");
    eprintln!("{line} ({:?})", outcome.took);
}

#[test]
fn missing_data_files_are_reported_with_how_to_install_them() {
    let outcome = recq(
        &["worker", "--data-dir", "/nonexistent/movielens"],
        &[("RECQ_BROKERS", "127.0.0.1:1")],
    );
    let line = assert_clear_error(&outcome, &["/nonexistent/movielens", "make data"]);
    eprintln!("{line}");
}

#[test]
fn an_unknown_flag_is_a_usage_error() {
    let outcome = recq(&["worker", "--frobnicate"], &[]);
    assert_eq!(outcome.code, Some(2), "{}", outcome.stderr);
    let line = assert_clear_error(&outcome, &["--frobnicate"]);
    assert!(outcome.stderr.contains("Usage:"), "{}", outcome.stderr);
    eprintln!("{line}");
}

#[test]
fn invalid_config_values_are_usage_errors_naming_the_setting() {
    let outcome = recq(&["setup", "--partitions", "0"], &[]);
    assert_eq!(outcome.code, Some(2), "{}", outcome.stderr);
    eprintln!("{}", assert_clear_error(&outcome, &["--partitions", "0"]));

    let outcome = recq(&["worker"], &[("RECQ_WORKER_CONCURRENCY", "abc")]);
    assert_eq!(outcome.code, Some(2), "{}", outcome.stderr);
    eprintln!(
        "{}",
        assert_clear_error(&outcome, &["abc", "--concurrency"])
    );
}

#[tokio::test]
async fn a_database_migrated_by_a_newer_recq_is_refused_with_the_fix() {
    let db = TestDb::new().await;
    sqlx::query(
        "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) \
         VALUES ($1, 'from a newer recq', true, '\\x00'::bytea, 0)",
    )
    .bind(99_991_231_000_000_i64)
    .execute(&db.pool)
    .await
    .unwrap();
    let url = db.url.clone();
    let outcome = tokio::task::spawn_blocking(move || {
        recq(&["status", "--user", "1"], &[("DATABASE_URL", &url)])
    })
    .await
    .unwrap();
    let line = assert_clear_error(
        &outcome,
        &["migration 99991231000000", "does not know", "newer recq"],
    );
    eprintln!("{line}");
}
