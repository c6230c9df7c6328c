//! A short `make chaos` inside `make test`: real `recq worker` and `recq projector` processes
//! (the binary this test suite was built with) on a private Tansu broker, SIGKILLed six
//! times, the broker SIGSTOPped for 5 s and a projector added and removed, while 6,000
//! requests for real MovieLens users flow. The same checks as `make chaos` must pass.

use std::path::PathBuf;

use recq::chaos::{self, ChaosArgs};
use recq::harness::broker::Kind;

use crate::common::{random_suffix, server_url, with_database};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn under_kills_a_paused_broker_and_rebalances_no_request_is_lost_or_counted_twice() {
    let log_dir = std::env::temp_dir().join(format!("recq-chaos-test-{}", random_suffix()));
    let args = ChaosArgs {
        broker: Kind::Tansu,
        database_url: with_database(&server_url(), &format!("recq_test_{}", random_suffix())),
        data_dir: std::env::var_os("RECQ_DATA_DIR").map(PathBuf::from),
        recq_bin: Some(PathBuf::from(env!("CARGO_BIN_EXE_recq"))),
        requests: 6_000,
        rate: 100,
        kills: 6,
        pause_secs: 5,
        workers: 2,
        projectors: 2,
        partitions: 6,
        seed: None,
        settle_secs: 300,
        log_dir: Some(log_dir),
    };
    let figures = chaos::run(args)
        .await
        .expect("the chaos run could be carried out");
    eprintln!("{figures}");
    assert!(figures.passed(), "{figures}");
    assert_eq!(figures.kills, 6);
    assert_eq!(figures.pauses, 1);
    assert_eq!(
        (figures.projectors_added, figures.projectors_removed),
        (1, 1)
    );
    assert_eq!(
        figures.done, 6_000,
        "every MovieLens user is known, so every job ends done"
    );
}
