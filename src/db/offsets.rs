//! The projector's stored positions: per partition, the offset of the next event to apply.
//! Written only in the transaction that applies the events before it; never moves backwards.

use std::collections::BTreeMap;

use sqlx::{PgConnection, Row};

use super::DbError;

/// Locks the positions of `partitions` for this transaction (creating missing ones at 0) and
/// returns them. A second projector flushing the same partition waits here, then sees the
/// positions this one stored, so no event is applied twice.
pub async fn lock(
    conn: &mut PgConnection,
    partitions: &[(String, i32)],
) -> Result<BTreeMap<(String, i32), i64>, DbError> {
    let topics: Vec<&str> = partitions.iter().map(|(t, _)| t.as_str()).collect();
    let ids: Vec<i32> = partitions.iter().map(|(_, p)| *p).collect();
    sqlx::query(
        "INSERT INTO projector_offsets (topic, partition, next_offset) \
         SELECT t, p, 0 FROM UNNEST($1::text[], $2::int4[]) AS u(t, p) \
         ON CONFLICT DO NOTHING",
    )
    .bind(&topics)
    .bind(&ids)
    .execute(&mut *conn)
    .await?;
    let rows = sqlx::query(
        "SELECT o.topic, o.partition, o.next_offset FROM projector_offsets o \
         JOIN UNNEST($1::text[], $2::int4[]) AS u(t, p) ON o.topic = u.t AND o.partition = u.p \
         ORDER BY o.topic, o.partition FOR UPDATE OF o",
    )
    .bind(&topics)
    .bind(&ids)
    .fetch_all(&mut *conn)
    .await?;
    positions(&rows)
}

/// Stores the new positions (never lower than what is stored).
pub async fn store(
    conn: &mut PgConnection,
    positions: &BTreeMap<(String, i32), i64>,
) -> Result<(), DbError> {
    sqlx::query(
        "UPDATE projector_offsets o SET next_offset = GREATEST(o.next_offset, u.n), \
             updated_at = now() \
         FROM UNNEST($1::text[], $2::int4[], $3::int8[]) AS u(t, p, n) \
         WHERE o.topic = u.t AND o.partition = u.p",
    )
    .bind(
        positions
            .keys()
            .map(|(t, _)| t.as_str())
            .collect::<Vec<_>>(),
    )
    .bind(positions.keys().map(|(_, p)| *p).collect::<Vec<_>>())
    .bind(positions.values().copied().collect::<Vec<_>>())
    .execute(conn)
    .await?;
    Ok(())
}

/// All stored positions of `topics`.
pub async fn read(
    conn: &mut PgConnection,
    topics: &[&str],
) -> Result<BTreeMap<(String, i32), i64>, DbError> {
    let rows = sqlx::query(
        "SELECT topic, partition, next_offset FROM projector_offsets WHERE topic = ANY($1) \
         ORDER BY topic, partition",
    )
    .bind(topics)
    .fetch_all(conn)
    .await?;
    positions(&rows)
}

fn positions(rows: &[sqlx::postgres::PgRow]) -> Result<BTreeMap<(String, i32), i64>, DbError> {
    rows.iter()
        .map(|row| {
            Ok((
                (row.try_get("topic")?, row.try_get("partition")?),
                row.try_get("next_offset")?,
            ))
        })
        .collect()
}
