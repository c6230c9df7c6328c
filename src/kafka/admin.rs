//! Topic creation. Idempotent: every role calls it at start-up.

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::types::RDKafkaErrorCode;

use super::{KafkaError, KafkaSettings, Topics};

/// Fails fast with a clear error when no broker answers.
pub async fn check_reachable(settings: &KafkaSettings) -> Result<(), KafkaError> {
    let settings = settings.clone();
    tokio::task::spawn_blocking(move || {
        let consumer: BaseConsumer = settings
            .client_config()
            .create()
            .map_err(KafkaError::Client)?;
        consumer
            .fetch_metadata(None, settings.timeout)
            .map(|_| ())
            .map_err(|source| KafkaError::Unreachable {
                brokers: settings.brokers.clone(),
                source,
            })
    })
    .await
    .map_err(|e| KafkaError::Task(e.to_string()))?
}

/// Creates the topics that do not exist yet. The jobs and recommendations topics are
/// compacted: every status event carries the job's whole state, so the newest event per job
/// is enough to rebuild the table, and prune tombstones really remove a job.
pub async fn ensure_topics(
    settings: &KafkaSettings,
    topics: &Topics,
    partitions: i32,
) -> Result<(), KafkaError> {
    check_reachable(settings).await?;
    let admin: AdminClient<DefaultClientContext> = settings.client_config().create()?;
    let compacted = [("cleanup.policy", "compact")];
    let plain: [(&str, &str); 0] = [];
    let wanted: Vec<(&str, &[(&str, &str)])> = vec![
        (&topics.requests, &plain),
        (&topics.jobs, &compacted),
        (&topics.recommendations, &compacted),
        (&topics.requests_dlq, &plain),
        (&topics.jobs_dlq, &plain),
        (&topics.erasures, &compacted),
    ];
    let new_topics: Vec<NewTopic<'_>> = wanted
        .iter()
        .map(|(name, config)| {
            config.iter().fold(
                NewTopic::new(name, partitions, TopicReplication::Fixed(1)),
                |topic, (k, v)| topic.set(k, v),
            )
        })
        .collect();
    let options = AdminOptions::new().operation_timeout(Some(settings.timeout));
    let results = admin
        .create_topics(&new_topics, &options)
        .await
        .map_err(|source| KafkaError::Unreachable {
            brokers: settings.brokers.clone(),
            source,
        })?;
    for result in results {
        match result {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((topic, code)) => {
                return Err(KafkaError::CreateTopic {
                    topic,
                    reason: code.to_string(),
                });
            }
        }
    }
    Ok(())
}

/// The partition ids of `topic`, from the cluster's metadata.
pub async fn partitions(settings: &KafkaSettings, topic: &str) -> Result<Vec<i32>, KafkaError> {
    let settings = settings.clone();
    let topic = topic.to_owned();
    tokio::task::spawn_blocking(move || {
        let consumer: BaseConsumer = settings.client_config().create()?;
        let metadata = consumer
            .fetch_metadata(Some(&topic), settings.timeout)
            .map_err(|source| KafkaError::Unreachable {
                brokers: settings.brokers.clone(),
                source,
            })?;
        let mut ids: Vec<i32> = metadata
            .topics()
            .iter()
            .filter(|t| t.name() == topic)
            .flat_map(|t| t.partitions().iter().map(|p| p.id()))
            .collect();
        ids.sort_unstable();
        Ok(ids)
    })
    .await
    .map_err(|e| KafkaError::Task(e.to_string()))?
}
