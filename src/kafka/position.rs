//! A reader's cursor in one partition, and what to do with a record that lies past it.
//!
//! A record past the cursor (a jump) is taken as a gap only once it survives seeks back to the
//! cursor. Two things make jumps that are not gaps: librdkafka can lose a seek issued right
//! after an assignment to its own start-offset lookup (confluentinc/librdkafka#2256), and Tansu
//! can answer a fetch with records past ones that a concurrent producer was given offsets for
//! but that are not readable yet (the chaos test saw a fetch at 2073 answered from 2079, and
//! 2073–2078 in the log a moment later). A jump to an old record is compaction, which never
//! touches the active segment, and is taken at once.

use std::time::Duration;

use rdkafka::Message;
use rdkafka::consumer::{Consumer, ConsumerContext};
use tokio_util::sync::CancellationToken;

use super::{KafkaError, next_offset};

/// A jump to a record younger than this is sought again before it counts as a gap; an older
/// one is compaction, so catching up over a compacted log costs no seeks.
pub const RECENT: Duration = Duration::from_secs(300);

/// Where the next record to accept is in one partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Position {
    /// The next record to accept is at or after this offset.
    pub next: i64,
    /// Seeks issued to `next` that no record has confirmed yet.
    pub unconfirmed_seeks: u8,
}

/// What to do with a record, given the partition's position.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Before the position: fetched before a seek took effect, or applied already.
    Skip,
    /// At the position, or past it where the log really has a gap.
    Accept,
    /// Past the position where records may still be there: seek back to the position.
    Seek,
}

impl Position {
    /// Seeks this many times before taking a record past the position as a real gap.
    pub const SEEKS: u8 = 3;

    /// A position nothing has sought yet.
    pub fn at(next: i64) -> Self {
        Self {
            next,
            unconfirmed_seeks: 0,
        }
    }

    /// `recent`: the record is younger than [`RECENT`] (see [`is_recent`]).
    pub fn judge(&self, offset: i64, recent: bool) -> Verdict {
        if offset < self.next {
            Verdict::Skip
        } else if offset == self.next || self.unconfirmed_seeks >= Self::SEEKS {
            Verdict::Accept
        } else if self.unconfirmed_seeks > 0 || recent {
            Verdict::Seek
        } else {
            Verdict::Accept
        }
    }

    /// The position after accepting the record at `offset`.
    pub fn accepted(offset: i64) -> Self {
        Self::at(next_offset(offset))
    }

    /// How long to wait before seek number `seek`, giving records that are not readable yet
    /// time to become so: none before the first, then 100 ms, then 500 ms.
    fn wait_before(seek: u8) -> Duration {
        match seek {
            0 | 1 => Duration::ZERO,
            2 => Duration::from_millis(100),
            _ => Duration::from_millis(500),
        }
    }

    /// Seeks `consumer` to this position (a record at `fetched` arrived instead) after the wait
    /// the seek's number calls for, and returns the position with one more unconfirmed seek;
    /// `None` if cancelled while waiting.
    pub async fn seek_back<C, X>(
        self,
        consumer: &C,
        (topic, partition): (&str, i32),
        fetched: i64,
        cancel: &CancellationToken,
    ) -> Result<Option<Self>, KafkaError>
    where
        C: Consumer<X>,
        X: ConsumerContext,
    {
        let seek = self.unconfirmed_seeks.saturating_add(1);
        tracing::info!(%topic, partition, fetched, position = self.next, seek, "the fetch is not at the position; seeking to it");
        tokio::select! {
            _ = cancel.cancelled() => return Ok(None),
            _ = tokio::time::sleep(Self::wait_before(seek)) => {}
        }
        consumer
            .seek(
                topic,
                partition,
                rdkafka::Offset::Offset(self.next),
                Duration::from_secs(10),
            )
            .map_err(KafkaError::Client)?;
        Ok(Some(Self {
            next: self.next,
            unconfirmed_seeks: seek,
        }))
    }
}

/// Whether `message` was written less than [`RECENT`] ago by its timestamp; a record without
/// one, or with one from the future, counts as recent.
pub fn is_recent(message: &impl Message) -> bool {
    let Some(written_ms) = message.timestamp().to_millis() else {
        return true;
    };
    let now_ms = chrono::Utc::now().timestamp_millis();
    now_ms.saturating_sub(written_ms) < RECENT.as_millis() as i64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_past_the_position_is_sought_again_before_it_counts_as_a_gap() {
        let (recent, old) = (true, false);
        let flowing = Position::at(10);
        assert_eq!(flowing.judge(9, recent), Verdict::Skip);
        assert_eq!(flowing.judge(10, recent), Verdict::Accept);
        assert_eq!(
            flowing.judge(15, recent),
            Verdict::Seek,
            "records at the head may not be readable yet"
        );
        assert_eq!(flowing.judge(15, old), Verdict::Accept, "a compacted gap");

        let sought = Position {
            next: 10,
            unconfirmed_seeks: 1,
        };
        assert_eq!(
            sought.judge(4, recent),
            Verdict::Skip,
            "fetched before the seek"
        );
        assert_eq!(sought.judge(10, recent), Verdict::Accept);
        assert_eq!(
            sought.judge(15, old),
            Verdict::Seek,
            "the seek may have been lost"
        );

        let sought_enough = Position {
            next: 10,
            unconfirmed_seeks: Position::SEEKS,
        };
        assert_eq!(
            sought_enough.judge(15, recent),
            Verdict::Accept,
            "a real gap"
        );
        assert_eq!(sought_enough.judge(9, recent), Verdict::Skip);
        assert_eq!(Position::accepted(15), Position::at(16));
    }

    #[test]
    fn later_seeks_wait_longer() {
        let waits: Vec<_> = (1..=Position::SEEKS).map(Position::wait_before).collect();
        assert_eq!(waits[0], Duration::ZERO);
        assert!(waits.windows(2).all(|w| w[0] < w[1]), "{waits:?}");
    }

    #[test]
    fn only_records_older_than_the_window_count_as_old() {
        use rdkafka::message::{OwnedMessage, Timestamp};
        let written = |ms_ago: i64| {
            let at = chrono::Utc::now().timestamp_millis() - ms_ago;
            OwnedMessage::new(
                None,
                None,
                "t".into(),
                Timestamp::CreateTime(at),
                0,
                0,
                None,
            )
        };
        assert!(is_recent(&written(1_000)));
        assert!(is_recent(&written(-60_000)), "a clock ahead of ours");
        assert!(!is_recent(&written(RECENT.as_millis() as i64 + 1_000)));
        let untimed =
            OwnedMessage::new(None, None, "t".into(), Timestamp::NotAvailable, 0, 0, None);
        assert!(is_recent(&untimed));
    }
}
