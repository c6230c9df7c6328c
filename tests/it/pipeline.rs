//! The worker and projector together, on generated ratings.

use std::time::Duration;

use rdkafka::Message;
use rdkafka::consumer::Consumer;
use recq::db;
use recq::domain::{JobStatus, UserId};
use recq::kafka::dlq;

use crate::common::env::{TestEnv, eventually, small_recommender};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_flows_to_a_done_row_with_its_recommendations_stored() {
    let env = TestEnv::new(3).await;
    let recommender = small_recommender();
    let worker = env.start_worker(recommender.clone());
    let projector = env.start_projector();

    let user = UserId::new(5).unwrap();
    let jobs = recq::app::tools::submit(&env.codec, &env.producer, &env.topics, &[user])
        .await
        .unwrap();
    let job = jobs[0];

    let row = eventually("the job to be done", Duration::from_secs(60), || async {
        db::jobs::job(&env.db.pool, job)
            .await
            .unwrap()
            .filter(|r| r.status == JobStatus::Done)
    })
    .await;
    assert_eq!(row.user_id, user);
    assert_eq!(row.attempt, 1);
    assert!(row.started_at.is_some() && row.finished_at.is_some());
    assert!(row.finished_at >= row.started_at);
    assert_eq!(row.last_error, None);

    let stored = eventually(
        "the recommendations to be stored",
        Duration::from_secs(30),
        || async {
            let list = db::jobs::recommendations(&env.db.pool, job).await.unwrap();
            (!list.is_empty()).then_some(list)
        },
    )
    .await;
    let expected = recommender.recommend(user, 10).unwrap();
    assert_eq!(stored.len(), expected.len());
    for (rank, (got, want)) in stored.iter().zip(&expected).enumerate() {
        assert_eq!(got.rank as usize, rank + 1);
        assert_eq!(got.movie_id, want.movie_id);
        assert_eq!(got.title, want.title);
    }

    worker.stop().await;
    projector.stop().await;
    let report = env.verify().await;
    assert!(report.is_consistent(), "{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_undecodable_request_goes_to_the_dead_letter_topic_and_the_worker_carries_on() {
    let env = TestEnv::new(1).await;
    let worker = env.start_worker(small_recommender());
    let projector = env.start_projector();

    // One partition: the garbage sits right before a good request.
    let (_, bad_offset) = env
        .produce_raw(&env.topics.requests, b"7", Some(b"definitely not avro"))
        .await;
    let user = UserId::new(7).unwrap();
    let job = recq::app::tools::submit(&env.codec, &env.producer, &env.topics, &[user])
        .await
        .unwrap()[0];

    eventually(
        "the good request after the bad one to be done",
        Duration::from_secs(60),
        || async {
            db::jobs::job(&env.db.pool, job)
                .await
                .unwrap()
                .filter(|r| r.status == JobStatus::Done)
        },
    )
    .await;

    let reader = recq::kafka::consumer::reader(&env.kafka).unwrap();
    reader.subscribe(&[&env.topics.requests_dlq]).unwrap();
    let dead = tokio::time::timeout(Duration::from_secs(30), reader.recv())
        .await
        .expect("a dead letter within 30 s")
        .unwrap()
        .detach();
    assert_eq!(dead.payload(), Some(&b"definitely not avro"[..]));
    assert_eq!(
        dlq::header(&dead, dlq::REASON).as_deref(),
        Some("not-confluent-framed")
    );
    assert_eq!(
        dlq::header(&dead, dlq::TOPIC).as_deref(),
        Some(env.topics.requests.as_str())
    );
    assert_eq!(
        dlq::header(&dead, dlq::OFFSET),
        Some(bad_offset.to_string())
    );
    assert!(dlq::header(&dead, dlq::ERROR).is_some_and(|e| !e.is_empty()));

    worker.stop().await;
    projector.stop().await;
}
