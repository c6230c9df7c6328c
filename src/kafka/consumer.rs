//! Consumers. Offsets are never auto-stored: a role stores an offset only after the work for
//! that record is durable (delivered to Kafka, or committed to Postgres). librdkafka then
//! commits the stored offsets in the background and on close.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use rdkafka::ClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance, StreamConsumer};
use rdkafka::topic_partition_list::TopicPartitionList;

use super::{KafkaError, KafkaSettings};

/// A partition of a topic.
pub type Partition = (String, i32);

/// A change of this member's assignment, reported by the rebalance callback.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AssignmentChange {
    Assigned(Vec<Partition>),
    Revoked(Vec<Partition>),
}

/// Logs rebalances and queues them for the role's loop to act on; keeps newly assigned
/// partitions paused while the role holds consumption (see [`RebalanceContext::hold`]).
#[derive(Clone, Default)]
pub struct RebalanceContext {
    changes: Arc<Mutex<Vec<AssignmentChange>>>,
    held: Arc<AtomicBool>,
}

impl RebalanceContext {
    /// Pauses (`true`) or resumes (`false`) fetching for every assigned partition, now and for
    /// partitions assigned later. A held consumer must still be polled (`recv`): polling is
    /// what tells the group coordinator the member is alive (`max.poll.interval.ms`), and a
    /// paused partition yields nothing, so a role that is busy holds instead of not polling.
    pub fn hold(&self, consumer: &RecqConsumer, held: bool) -> Result<(), KafkaError> {
        self.held.store(held, Ordering::SeqCst);
        let assignment = consumer.assignment().map_err(KafkaError::Client)?;
        pause_or_resume(consumer, &assignment, held)
    }

    /// The assignment changes since the last call, oldest first.
    pub fn take_changes(&self) -> Vec<AssignmentChange> {
        std::mem::take(&mut *self.changes.lock().unwrap_or_else(PoisonError::into_inner))
    }

    fn push(&self, change: AssignmentChange) {
        self.changes
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(change);
    }
}

fn partitions(list: &TopicPartitionList) -> Vec<Partition> {
    list.elements()
        .iter()
        .map(|e| (e.topic().to_owned(), e.partition()))
        .collect()
}

impl ClientContext for RebalanceContext {}

impl ConsumerContext for RebalanceContext {
    fn pre_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(list) = rebalance {
            let revoked = partitions(list);
            tracing::info!(partitions = ?revoked, "partitions revoked");
            self.push(AssignmentChange::Revoked(revoked));
        }
    }

    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(list) => {
                let assigned = partitions(list);
                tracing::info!(partitions = ?assigned, "partitions assigned");
                // Paused state survives in librdkafka per partition: apply the current one.
                if let Err(e) = pause_or_resume(consumer, list, self.held.load(Ordering::SeqCst)) {
                    tracing::warn!(error = %e, "could not pause or resume assigned partitions");
                }
                self.push(AssignmentChange::Assigned(assigned));
            }
            Rebalance::Error(e) => tracing::warn!(error = %e, "rebalance failed"),
            Rebalance::Revoke(_) => {}
        }
    }
}

pub type RecqConsumer = StreamConsumer<RebalanceContext>;

fn pause_or_resume<C: Consumer<RebalanceContext>>(
    consumer: &C,
    list: &TopicPartitionList,
    pause: bool,
) -> Result<(), KafkaError> {
    if list.count() == 0 {
        return Ok(());
    }
    let result = if pause {
        consumer.pause(list)
    } else {
        consumer.resume(list)
    };
    result.map_err(KafkaError::Client)
}

/// A group member with manual offset storage and background commits of stored offsets.
/// New groups start at the beginning of each partition.
pub fn group_consumer(
    settings: &KafkaSettings,
    group: &str,
    context: RebalanceContext,
) -> Result<RecqConsumer, KafkaError> {
    let mut config = settings.client_config();
    config
        .set("group.id", group)
        .set("enable.auto.commit", "true")
        .set("auto.commit.interval.ms", "1000")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        // Eager: with cooperative-sticky, Tansu left partitions given up by a member that
        // left unassigned (scenario test: half the partitions never consumed again under
        // membership churn). On Apache Kafka, `--kafka-property
        // partition.assignment.strategy=cooperative-sticky` switches back (user properties win).
        .set("partition.assignment.strategy", "range")
        .set("session.timeout.ms", "10000")
        .set("heartbeat.interval.ms", "1000")
        // A fetch returns once fetch.min.bytes (1) are there on Apache Kafka, but Tansu holds
        // every fetch for the full wait (librdkafka's default 500 ms), which `make bench` saw
        // as +250 ms mean latency per consumer hop. 25 ms costs an idle consumer ~40 empty
        // fetches a second.
        .set("fetch.wait.max.ms", "25");
    for (key, value) in &settings.properties {
        config.set(key, value);
    }
    config
        .create_with_context(context)
        .map_err(KafkaError::Client)
}

/// A consumer outside any group, for reading partitions by explicit assignment
/// (`recq verify`, rebuilds).
pub fn reader(settings: &KafkaSettings) -> Result<StreamConsumer, KafkaError> {
    settings
        .client_config()
        .set("group.id", "recq-reader")
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .create()
        .map_err(KafkaError::Client)
}

/// Stores `next` as the position to commit for one partition.
pub fn store(
    consumer: &RecqConsumer,
    topic: &str,
    partition: i32,
    next: i64,
) -> Result<(), KafkaError> {
    let mut list = TopicPartitionList::new();
    list.add_partition_offset(topic, partition, rdkafka::Offset::Offset(next))?;
    consumer.store_offsets(&list).map_err(KafkaError::Client)
}
