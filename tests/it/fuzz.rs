//! The decoder under random input: random bytes and random mutations of valid payloads never
//! make it panic; it answers with an event or *poison*, and never calls bad input an outage
//! (the registry is up, so *transient* would mean a record could stall its partition).

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use recq::domain::events::{JobRun, now};
use recq::domain::{JobId, MovieId, RecommendationsReady, RecommendedMovie, UserId};
use recq::kafka::codec::{Codec, CodecError};

use crate::common::env::TestEnv;

/// Decodes `payload` (with `key`) as each of recq's record types; panics only if the
/// decoder reports an outage.
async fn decode_all(codec: &Codec, key: Option<&[u8]>, payload: Option<&[u8]>) -> usize {
    let results = [
        codec.decode_request(payload).await.map(|_| ()),
        codec.decode_job_event(key, payload).await.map(|_| ()),
        codec
            .decode_recommendations_event(key, payload)
            .await
            .map(|_| ()),
    ];
    let mut decoded = 0;
    for result in results {
        match result {
            Ok(()) => decoded += 1,
            Err(CodecError::Poison { .. }) => {}
            Err(e @ CodecError::Transient(_)) => {
                panic!("bad input {payload:?} was called an outage: {e}")
            }
        }
    }
    decoded
}

fn random_bytes(rng: &mut StdRng, max: usize) -> Vec<u8> {
    let len = rng.random_range(0..=max);
    (0..len).map(|_| rng.random()).collect()
}

/// One of: flip bytes, truncate, append garbage, overwrite a run with 0xff (huge varints).
fn mutate(rng: &mut StdRng, valid: &[u8]) -> Vec<u8> {
    let mut bytes = valid.to_vec();
    for _ in 0..rng.random_range(1..=4) {
        if bytes.is_empty() {
            break;
        }
        let at = rng.random_range(0..bytes.len());
        match rng.random_range(0..4) {
            0 => bytes[at] ^= 1 << rng.random_range(0..8),
            1 => bytes.truncate(at),
            2 => bytes.extend(random_bytes(rng, 16)),
            _ => {
                let end = (at + rng.random_range(1..=9)).min(bytes.len());
                bytes[at..end].fill(0xff);
            }
        }
    }
    bytes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_bytes_and_mutated_payloads_never_panic_the_decoder() {
    let env = TestEnv::new(1).await;
    let mut rng = StdRng::seed_from_u64(20_240_611);

    for _ in 0..300 {
        let payload = random_bytes(&mut rng, 64);
        let key = random_bytes(&mut rng, 40);
        decode_all(&env.codec, Some(&key), Some(&payload)).await;
        // Framed with a random, mostly unknown schema id.
        let mut framed = vec![0];
        framed.extend(random_bytes(&mut rng, 48));
        decode_all(&env.codec, None, Some(&framed)).await;
    }
    assert_eq!(decode_all(&env.codec, None, None).await, 0);

    let run = JobRun {
        job_id: JobId::new_random(),
        user_id: UserId::new(3).unwrap(),
        attempt: 1,
        queued_at: now(),
    };
    let ready = RecommendationsReady {
        job_id: run.job_id,
        user_id: run.user_id,
        generated_at: now(),
        items: vec![RecommendedMovie {
            rank: 1,
            movie_id: MovieId::new(50).unwrap(),
            title: "Star Wars (1977)".into(),
            score: 4.5,
        }],
    };
    let topics = &env.topics;
    let valid = [
        env.codec
            .encode_request(
                &topics.requests,
                &recq::domain::RecommendationRequested {
                    job_id: run.job_id,
                    user_id: run.user_id,
                    requested_at: now(),
                },
            )
            .await
            .unwrap(),
        env.codec
            .encode_status(&topics.jobs, &run.failed(now(), now(), "boom".into()))
            .await
            .unwrap(),
        env.codec
            .encode_recommendations(&topics.recommendations, &ready)
            .await
            .unwrap(),
    ];
    for payload in &valid {
        assert_eq!(
            decode_all(
                &env.codec,
                Some(run.job_id.to_string().as_bytes()),
                Some(payload)
            )
            .await,
            1,
            "each valid payload decodes as exactly its own type"
        );
    }
    for _ in 0..1_500 {
        let which = rng.random_range(0..valid.len());
        let payload = mutate(&mut rng, &valid[which]);
        decode_all(
            &env.codec,
            Some(run.job_id.to_string().as_bytes()),
            Some(&payload),
        )
        .await;
    }
}
