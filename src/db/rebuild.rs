//! Shadow tables for `recq rebuild`: schema `recq_rebuild` holds copies of the projection
//! tables and the rebuild's own positions, so a rebuild can be interrupted and resumed while
//! the live tables keep serving. The swap moves the shadow tables in within one transaction.

use std::collections::BTreeMap;

use sqlx::{PgConnection, PgPool};

use super::{DbError, offsets};

/// Makes the following statements of this transaction use the shadow tables (unqualified
/// names resolve to `recq_rebuild` first; `users` stays the shared one in `public`).
pub async fn use_shadow_tables(conn: &mut PgConnection) -> Result<(), DbError> {
    sqlx::query("SET LOCAL search_path TO recq_rebuild, public")
        .execute(conn)
        .await?;
    Ok(())
}

/// Creates the shadow tables, or keeps them to resume an interrupted rebuild. With `restart`,
/// any earlier progress is discarded. Returns true if earlier progress was kept.
pub async fn prepare(pool: &PgPool, restart: bool) -> Result<bool, DbError> {
    let mut tx = pool.begin().await?;
    if restart {
        sqlx::query("DROP SCHEMA IF EXISTS recq_rebuild CASCADE")
            .execute(&mut *tx)
            .await?;
    }
    let exists: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = 'recq_rebuild')",
    )
    .fetch_one(&mut *tx)
    .await?;
    if !exists {
        for statement in [
            "CREATE SCHEMA recq_rebuild",
            "CREATE TABLE recq_rebuild.recommendation_queues \
                 (LIKE public.recommendation_queues INCLUDING ALL)",
            "ALTER TABLE recq_rebuild.recommendation_queues ADD FOREIGN KEY (user_id) \
                 REFERENCES public.users (id) ON DELETE CASCADE",
            "CREATE TABLE recq_rebuild.recommendations \
                 (LIKE public.recommendations INCLUDING ALL)",
            "ALTER TABLE recq_rebuild.recommendations ADD FOREIGN KEY (user_id) \
                 REFERENCES public.users (id) ON DELETE CASCADE",
            "CREATE TABLE recq_rebuild.projector_offsets \
                 (LIKE public.projector_offsets INCLUDING ALL)",
            "CREATE TABLE recq_rebuild.erased_users (LIKE public.erased_users INCLUDING ALL)",
        ] {
            sqlx::query(statement).execute(&mut *tx).await?;
        }
    }
    tx.commit().await?;
    Ok(exists)
}

/// The rebuild's stored positions.
pub async fn shadow_positions(
    pool: &PgPool,
    topics: &[&str],
) -> Result<BTreeMap<(String, i32), i64>, DbError> {
    let mut tx = pool.begin().await?;
    use_shadow_tables(&mut tx).await?;
    let positions = offsets::read(&mut tx, topics).await?;
    tx.commit().await?;
    Ok(positions)
}

/// The outcome of one swap attempt.
#[derive(Debug, PartialEq, Eq)]
pub enum Swap {
    /// The shadow rows are live now.
    Done { rows: u64 },
    /// The live projector is ahead in these partitions (live position); catch up and retry.
    Behind(BTreeMap<(String, i32), i64>),
}

/// Swaps the shadow tables in, atomically, if the rebuild is at or past the live projector in
/// every partition. Locking `projector_offsets` first (the live projector locks it first too)
/// holds off live flushes for the duration, so no event is applied in between.
pub async fn swap(pool: &PgPool, topics: &[&str]) -> Result<Swap, DbError> {
    let mut tx = pool.begin().await?;
    sqlx::query("LOCK TABLE public.projector_offsets IN ACCESS EXCLUSIVE MODE")
        .execute(&mut *tx)
        .await?;
    let live = offsets::read(&mut tx, topics).await?;
    let shadow = {
        let rows = sqlx::query_as::<_, (String, i32, i64)>(
            "SELECT topic, partition, next_offset FROM recq_rebuild.projector_offsets \
             WHERE topic = ANY($1)",
        )
        .bind(topics)
        .fetch_all(&mut *tx)
        .await?;
        rows.into_iter()
            .map(|(t, p, n)| ((t, p), n))
            .collect::<BTreeMap<_, _>>()
    };
    let behind: BTreeMap<(String, i32), i64> = live
        .iter()
        .filter(|(partition, next)| shadow.get(*partition).copied().unwrap_or(0) < **next)
        .map(|(p, n)| (p.clone(), *n))
        .collect();
    if !behind.is_empty() {
        tx.rollback().await?;
        return Ok(Swap::Behind(behind));
    }
    // Moving the shadow tables in is O(1) whatever their size; statements of the live
    // projector waiting on the lock are re-planned against the new tables once it is released.
    for statement in [
        "DROP TABLE public.recommendation_queues, public.recommendations, \
             public.projector_offsets, public.erased_users",
        "ALTER TABLE recq_rebuild.recommendation_queues SET SCHEMA public",
        "ALTER TABLE recq_rebuild.recommendations SET SCHEMA public",
        "ALTER TABLE recq_rebuild.projector_offsets SET SCHEMA public",
        "ALTER TABLE recq_rebuild.erased_users SET SCHEMA public",
        "DROP SCHEMA recq_rebuild",
    ] {
        sqlx::query(statement).execute(&mut *tx).await?;
    }
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM public.recommendation_queues")
        .fetch_one(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(Swap::Done {
        rows: u64::try_from(rows).unwrap_or_default(),
    })
}
