//! The schema registry's store: every SQL statement of `recq registry`.
//!
//! Invariant: a schema (type + normalized text) has exactly one global id, whichever subject and
//! whichever concurrent request registered it first; a subject's versions are 1, 2, 3, ... and a
//! schema appears at most once per subject. Registration holds its subject's row lock for the
//! whole transaction, so the compatibility check always sees the version it is appended after.

use sqlx::{PgConnection, PgPool};

use super::DbError;

/// A schema as stored: its global id and its normalized text.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct StoredSchema {
    pub id: i32,
    pub schema_type: String,
    pub schema: String,
}

/// One version of a subject.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct SubjectVersion {
    pub subject: String,
    pub version: i32,
    pub id: i32,
    pub schema_type: String,
    pub schema: String,
}

/// Which version of a subject to read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VersionSelector {
    Latest,
    Number(i32),
}

/// What [`register`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Registration {
    /// The schema was already a version of the subject; nothing changed.
    Existing { id: i32, version: i32 },
    /// The schema became the subject's newest version.
    Created { id: i32, version: i32 },
    /// The compatibility check refused the schema; nothing changed.
    Incompatible { reason: String },
}

/// A query over a subject's versions joined with their schemas; `$tail` starts at `WHERE`.
/// A macro so that the SQL stays a literal (sqlx refuses runtime-built SQL strings).
macro_rules! select_versions {
    ($tail:literal) => {
        concat!(
            "SELECT v.subject, v.version, s.id, s.schema_type, s.schema ",
            "FROM registry_versions v JOIN registry_schemas s ON s.id = v.schema_id ",
            $tail
        )
    };
}

/// The schema with global id `id`.
pub async fn schema_by_id(pool: &PgPool, id: i32) -> Result<Option<StoredSchema>, DbError> {
    let row = sqlx::query_as::<_, StoredSchema>(
        "SELECT id, schema_type, schema FROM registry_schemas WHERE id = $1",
    )
    .bind(id)
    .fetch_optional(pool)
    .await?;
    Ok(row)
}

/// The subjects schema `id` is registered under, sorted.
pub async fn subjects_of_schema(pool: &PgPool, id: i32) -> Result<Vec<String>, DbError> {
    let rows = sqlx::query_scalar::<_, String>(
        "SELECT DISTINCT subject FROM registry_versions WHERE schema_id = $1 ORDER BY subject",
    )
    .bind(id)
    .fetch_all(pool)
    .await?;
    Ok(rows)
}

/// Every subject with at least one version, sorted.
pub async fn subjects(pool: &PgPool) -> Result<Vec<String>, DbError> {
    let rows = sqlx::query_scalar::<_, String>(
        "SELECT DISTINCT subject FROM registry_versions ORDER BY subject",
    )
    .fetch_all(pool)
    .await?;
    Ok(rows)
}

/// The version numbers of `subject`, ascending; empty when the subject does not exist.
pub async fn versions(pool: &PgPool, subject: &str) -> Result<Vec<i32>, DbError> {
    let rows = sqlx::query_scalar::<_, i32>(
        "SELECT version FROM registry_versions WHERE subject = $1 ORDER BY version",
    )
    .bind(subject)
    .fetch_all(pool)
    .await?;
    Ok(rows)
}

/// One version of `subject`, or `None` if the subject or that version does not exist.
pub async fn version(
    pool: &PgPool,
    subject: &str,
    selector: VersionSelector,
) -> Result<Option<SubjectVersion>, DbError> {
    let mut conn = pool.acquire().await?;
    version_on(&mut conn, subject, selector).await
}

async fn version_on(
    conn: &mut PgConnection,
    subject: &str,
    selector: VersionSelector,
) -> Result<Option<SubjectVersion>, DbError> {
    let query = match selector {
        VersionSelector::Latest => sqlx::query_as::<_, SubjectVersion>(select_versions!(
            "WHERE v.subject = $1 ORDER BY v.version DESC LIMIT 1"
        ))
        .bind(subject),
        VersionSelector::Number(n) => sqlx::query_as::<_, SubjectVersion>(select_versions!(
            "WHERE v.subject = $1 AND v.version = $2"
        ))
        .bind(subject)
        .bind(n),
    };
    Ok(query.fetch_optional(&mut *conn).await?)
}

/// The version of `subject` whose schema is exactly `schema` (normalized text), if any.
pub async fn find_in_subject(
    pool: &PgPool,
    subject: &str,
    schema_type: &str,
    schema: &str,
) -> Result<Option<SubjectVersion>, DbError> {
    let mut conn = pool.acquire().await?;
    find_in_subject_on(&mut conn, subject, schema_type, schema).await
}

async fn find_in_subject_on(
    conn: &mut PgConnection,
    subject: &str,
    schema_type: &str,
    schema: &str,
) -> Result<Option<SubjectVersion>, DbError> {
    let row = sqlx::query_as::<_, SubjectVersion>(select_versions!(
        "WHERE v.subject = $1 AND s.schema_type = $2 \
         AND s.schema_hash = sha256(convert_to($3, 'UTF8')) AND s.schema = $3"
    ))
    .bind(subject)
    .bind(schema_type)
    .bind(schema)
    .fetch_optional(&mut *conn)
    .await?;
    Ok(row)
}

/// Registers `schema` (normalized text) under `subject`, in one transaction.
///
/// If the schema already is a version of the subject, returns it unchanged. Otherwise calls
/// `check` with the subject's latest schema text (if any); `Err(reason)` refuses the
/// registration. `check` runs while the subject is locked, so it must be quick and pure.
pub async fn register<F>(
    pool: &PgPool,
    subject: &str,
    schema_type: &str,
    schema: &str,
    check: F,
) -> Result<Registration, DbError>
where
    F: FnOnce(&str) -> Result<(), String>,
{
    let mut tx = pool.begin().await?;
    lock_subject(&mut tx, subject).await?;
    if let Some(existing) = find_in_subject_on(&mut tx, subject, schema_type, schema).await? {
        tx.rollback().await?;
        return Ok(Registration::Existing {
            id: existing.id,
            version: existing.version,
        });
    }
    let latest = version_on(&mut tx, subject, VersionSelector::Latest).await?;
    if let Some(latest) = &latest
        && let Err(reason) = check(&latest.schema)
    {
        tx.rollback().await?;
        return Ok(Registration::Incompatible { reason });
    }
    let id = schema_id(&mut tx, schema_type, schema).await?;
    let version = latest.map_or(1, |l| l.version + 1);
    sqlx::query("INSERT INTO registry_versions (subject, version, schema_id) VALUES ($1, $2, $3)")
        .bind(subject)
        .bind(version)
        .bind(id)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(Registration::Created { id, version })
}

/// Creates `subject` if needed and locks its row until the transaction ends.
async fn lock_subject(conn: &mut PgConnection, subject: &str) -> Result<(), DbError> {
    // A concurrent creator makes this wait for its commit, then do nothing.
    sqlx::query("INSERT INTO registry_subjects (name) VALUES ($1) ON CONFLICT (name) DO NOTHING")
        .bind(subject)
        .execute(&mut *conn)
        .await?;
    sqlx::query("SELECT name FROM registry_subjects WHERE name = $1 FOR UPDATE")
        .bind(subject)
        .fetch_one(&mut *conn)
        .await?;
    Ok(())
}

/// The global id of the schema, inserting it if it is new.
///
/// Three statements, not one CTE: under READ COMMITTED each statement takes a fresh snapshot, so
/// the final SELECT sees a row that a concurrent transaction committed while our INSERT waited
/// on it; a CTE would share the INSERT's older snapshot and find nothing.
async fn schema_id(
    conn: &mut PgConnection,
    schema_type: &str,
    schema: &str,
) -> Result<i32, DbError> {
    const SELECT: &str = "SELECT id FROM registry_schemas WHERE schema_type = $1 \
         AND schema_hash = sha256(convert_to($2, 'UTF8')) AND schema = $2";
    if let Some(id) = sqlx::query_scalar::<_, i32>(SELECT)
        .bind(schema_type)
        .bind(schema)
        .fetch_optional(&mut *conn)
        .await?
    {
        return Ok(id);
    }
    let inserted = sqlx::query_scalar::<_, i32>(
        "INSERT INTO registry_schemas (schema_type, schema, schema_hash) \
         VALUES ($1, $2, sha256(convert_to($2, 'UTF8'))) \
         ON CONFLICT (schema_type, schema_hash) DO NOTHING RETURNING id",
    )
    .bind(schema_type)
    .bind(schema)
    .fetch_optional(&mut *conn)
    .await?;
    if let Some(id) = inserted {
        return Ok(id);
    }
    let id = sqlx::query_scalar::<_, i32>(SELECT)
        .bind(schema_type)
        .bind(schema)
        .fetch_one(&mut *conn)
        .await?;
    Ok(id)
}
