//! `recq dlq list` and `recq dlq redrive`: dead letters shown readably, and re-published to
//! their original topic after a fix.
//!
//! Both read the dead-letter topics from the beginning outside any consumer group and stop
//! when nothing arrived for a moment (never trusting the broker's high watermark). Redrive
//! validates the whole selection before publishing anything, only ever publishes to the topic
//! the dead letter came from (and only to a topic that dead-letter topic serves), and keeps the
//! first-failure time and attempt so a record that fails again shows `attempt` + 1. Redriving a
//! request twice is harmless: the worker skips job ids it ran and the projector ignores
//! duplicate events.

use std::time::Duration;

use crate::cli::{DlqCommand, DlqTopic};
use crate::config::Settings;
use crate::kafka::dlq::{self, DeadLetter};
use crate::kafka::producer::Producer;
use crate::kafka::{KafkaSettings, Topics};

use super::AppError;

/// Which dead letters to redrive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selection {
    /// `PARTITION:OFFSET`, or `OFFSET` alone when only one partition has it.
    Offsets(Vec<(Option<i32>, i64)>),
    /// Every dead letter with this reason code.
    Reason(String),
    All,
}

/// One redriven dead letter and where it went.
#[derive(Debug, Clone)]
pub struct Redriven {
    pub letter: DeadLetter,
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
}

impl DlqTopic {
    fn name(self, topics: &Topics) -> &str {
        match self {
            Self::Requests => &topics.requests_dlq,
            Self::Jobs => &topics.jobs_dlq,
        }
    }

    /// The topics whose records this dead-letter topic holds.
    fn sources(self, topics: &Topics) -> Vec<&str> {
        match self {
            Self::Requests => vec![&topics.requests],
            Self::Jobs => vec![&topics.jobs, &topics.recommendations],
        }
    }
}

/// Runs a `recq dlq` subcommand, printing to stdout.
pub async fn run(settings: &Settings, command: DlqCommand) -> Result<(), AppError> {
    let kafka = &settings.kafka;
    let topics = &settings.topics;
    match command {
        DlqCommand::List {
            topic,
            limit,
            idle_secs,
        } => {
            let which = topic.map_or_else(|| vec![DlqTopic::Requests, DlqTopic::Jobs], |t| vec![t]);
            for which in which {
                let name = which.name(topics);
                let letters =
                    list(kafka, topics, which, limit, Duration::from_secs(idle_secs)).await?;
                println!("{name}: {} dead letter(s)", letters.len());
                for letter in &letters {
                    println!("  {}", describe(letter));
                }
            }
        }
        DlqCommand::Redrive {
            topic,
            offsets,
            reason,
            all,
            idle_secs,
        } => {
            let selection = match (offsets.is_empty(), reason, all) {
                (_, _, true) => Selection::All,
                (_, Some(reason), false) => Selection::Reason(reason),
                (false, None, false) => Selection::Offsets(
                    offsets
                        .iter()
                        .map(|o| parse_offset(o))
                        .collect::<Result<_, _>>()?,
                ),
                (true, None, false) => {
                    return Err(AppError::Invalid(
                        "say what to redrive: --offset, --reason or --all".into(),
                    ));
                }
            };
            let producer = Producer::new(kafka)?;
            let idle = Duration::from_secs(idle_secs);
            let redriven = redrive(kafka, &producer, topics, topic, &selection, idle).await?;
            for r in &redriven {
                println!(
                    "redrove {}:{} ({}) to {}[{}]@{}",
                    r.letter.partition,
                    r.letter.offset,
                    r.letter.reason,
                    r.topic,
                    r.partition,
                    r.offset
                );
            }
            println!("{} dead letter(s) redriven", redriven.len());
        }
    }
    Ok(())
}

/// The dead letters of one dead-letter topic, in (partition, offset) order.
pub async fn list(
    kafka: &KafkaSettings,
    topics: &Topics,
    which: DlqTopic,
    limit: Option<usize>,
    idle: Duration,
) -> Result<Vec<DeadLetter>, AppError> {
    Ok(dlq::read_all(kafka, which.name(topics), idle, limit).await?)
}

/// Re-publishes the selected dead letters to the topics they came from. Nothing is published
/// unless every selected dead letter can be redriven.
pub async fn redrive(
    kafka: &KafkaSettings,
    producer: &Producer,
    topics: &Topics,
    which: DlqTopic,
    selection: &Selection,
    idle: Duration,
) -> Result<Vec<Redriven>, AppError> {
    let letters = list(kafka, topics, which, None, idle).await?;
    let selected = select(&letters, selection)?;
    let sources = which.sources(topics);
    let mut targets = Vec::with_capacity(selected.len());
    for letter in &selected {
        match letter.original_topic.as_deref() {
            Some(topic) if sources.contains(&topic) => targets.push(topic.to_owned()),
            other => {
                return Err(AppError::Invalid(format!(
                    "dead letter {}:{} came from {other:?}, not from {}; nothing was redriven",
                    letter.partition,
                    letter.offset,
                    sources.join(" or ")
                )));
            }
        }
    }
    let mut redriven = Vec::with_capacity(selected.len());
    for (letter, topic) in selected.into_iter().zip(targets) {
        let (partition, offset) = dlq::redrive(producer, letter, &topic).await?;
        tracing::info!(from = %which.name(topics), dlq_partition = letter.partition, dlq_offset = letter.offset, reason = %letter.reason, %topic, partition, offset, "redrove a dead letter");
        redriven.push(Redriven {
            letter: letter.clone(),
            topic,
            partition,
            offset,
        });
    }
    Ok(redriven)
}

/// `PARTITION:OFFSET` or `OFFSET`.
pub fn parse_offset(s: &str) -> Result<(Option<i32>, i64), AppError> {
    let bad = || AppError::Invalid(format!("--offset {s:?} is not OFFSET or PARTITION:OFFSET"));
    match s.split_once(':') {
        Some((p, o)) => Ok((
            Some(p.trim().parse().map_err(|_| bad())?),
            o.trim().parse().map_err(|_| bad())?,
        )),
        None => Ok((None, s.trim().parse().map_err(|_| bad())?)),
    }
}

/// The dead letters `selection` names; an offset that names none, or (without a partition)
/// several, is an error.
pub fn select<'a>(
    letters: &'a [DeadLetter],
    selection: &Selection,
) -> Result<Vec<&'a DeadLetter>, AppError> {
    match selection {
        Selection::All => Ok(letters.iter().collect()),
        Selection::Reason(reason) => Ok(letters.iter().filter(|l| l.reason == *reason).collect()),
        Selection::Offsets(wanted) => {
            let mut selected = Vec::with_capacity(wanted.len());
            for (partition, offset) in wanted {
                let found: Vec<&DeadLetter> = letters
                    .iter()
                    .filter(|l| l.offset == *offset && partition.is_none_or(|p| l.partition == p))
                    .collect();
                match found.as_slice() {
                    [one] => selected.push(*one),
                    [] => {
                        return Err(AppError::Invalid(format!(
                            "no dead letter at {}{offset}; see `recq dlq list`",
                            partition.map(|p| format!("{p}:")).unwrap_or_default()
                        )));
                    }
                    _ => {
                        return Err(AppError::Invalid(format!(
                            "offset {offset} exists in several partitions; use PARTITION:OFFSET"
                        )));
                    }
                }
            }
            Ok(selected)
        }
    }
}

/// One readable line: where the dead letter is, why, where it came from, what it holds.
pub fn describe(l: &DeadLetter) -> String {
    let origin = match (&l.original_topic, l.original_partition, l.original_offset) {
        (Some(t), Some(p), Some(o)) => format!("{t}[{p}]@{o}"),
        _ => "unknown".to_owned(),
    };
    let key = l.key.as_deref().map_or_else(
        || "null".to_owned(),
        |k| format!("{:?}", String::from_utf8_lossy(k)),
    );
    let value = match &l.value {
        None => "null".to_owned(),
        Some(v) => format!("{} bytes {}", v.len(), hex_preview(v, 16)),
    };
    format!(
        "{}:{} reason={} from={origin} first_failure_at={} attempt={} key={key} value={value} error={:?}",
        l.partition,
        l.offset,
        l.reason,
        l.first_failure_at.as_deref().unwrap_or("unknown"),
        l.attempt.map_or_else(|| "?".to_owned(), |a| a.to_string()),
        l.error
    )
}

fn hex_preview(bytes: &[u8], max: usize) -> String {
    let mut hex: String = bytes.iter().take(max).map(|b| format!("{b:02x}")).collect();
    if bytes.len() > max {
        hex.push('…');
    }
    hex
}

#[cfg(test)]
mod tests {
    use super::*;

    fn letter(partition: i32, offset: i64, reason: &str) -> DeadLetter {
        DeadLetter {
            partition,
            offset,
            reason: reason.to_owned(),
            error: "boom".to_owned(),
            original_topic: Some("recq.requests".to_owned()),
            original_partition: Some(0),
            original_offset: Some(9),
            first_failure_at: Some("2024-01-01T00:00:00+00:00".to_owned()),
            attempt: Some(1),
            key: Some(b"7".to_vec()),
            value: Some(vec![0, 0, 0, 0, 1, 2, 3]),
            headers: Vec::new(),
        }
    }

    #[test]
    fn offsets_are_parsed_with_or_without_a_partition() {
        assert_eq!(parse_offset("12").unwrap(), (None, 12));
        assert_eq!(parse_offset("3:12").unwrap(), (Some(3), 12));
        assert!(parse_offset("x").is_err());
        assert!(parse_offset("1:").is_err());
    }

    #[test]
    fn a_selection_names_exactly_the_dead_letters_it_means() {
        let letters = [
            letter(0, 1, "bad-key"),
            letter(1, 1, "too-large"),
            letter(1, 2, "bad-key"),
        ];
        let picked = |s: &Selection| {
            select(&letters, s).map(|v| {
                v.iter()
                    .map(|l| (l.partition, l.offset))
                    .collect::<Vec<_>>()
            })
        };
        assert_eq!(picked(&Selection::All).unwrap().len(), 3);
        assert_eq!(
            picked(&Selection::Reason("bad-key".into())).unwrap(),
            [(0, 1), (1, 2)]
        );
        assert_eq!(
            picked(&Selection::Offsets(vec![(None, 2)])).unwrap(),
            [(1, 2)]
        );
        assert_eq!(
            picked(&Selection::Offsets(vec![(Some(1), 1)])).unwrap(),
            [(1, 1)]
        );
        assert!(
            picked(&Selection::Offsets(vec![(None, 1)])).is_err(),
            "ambiguous"
        );
        assert!(
            picked(&Selection::Offsets(vec![(None, 7)])).is_err(),
            "missing"
        );
    }

    #[test]
    fn a_dead_letter_is_described_on_one_readable_line() {
        let line = describe(&letter(2, 5, "not-confluent-framed"));
        assert!(
            line.starts_with("2:5 reason=not-confluent-framed from=recq.requests[0]@9 "),
            "{line}"
        );
        assert!(
            line.contains("attempt=1 key=\"7\" value=7 bytes 00000000010203 error=\"boom\""),
            "{line}"
        );
    }
}
