//! Ratings: loading MovieLens 100k from its Parquet files in place, plus a deterministic
//! generated set for tests that must not depend on the real data.
//!
//! Columns are found by name (with a few common aliases), never by position, and any integer or
//! floating-point physical type is accepted; a missing file, column or bad value is an error that
//! names the file.

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parquet::errors::ParquetError;
use parquet::file::reader::{FileReader, SerializedFileReader};
use parquet::record::Field;
use parquet::schema::types::Type;

use crate::domain::{MovieId, UserId};

/// The ratings file inside the MovieLens directory.
pub const RATINGS_FILE: &str = "MovieLens100k_data.parquet.brotli";
/// The movies (items) file inside the MovieLens directory.
pub const MOVIES_FILE: &str = "MovieLens100k_items.parquet.brotli";
/// The users file inside the MovieLens directory.
pub const USERS_FILE: &str = "MovieLens100k_users.parquet.brotli";

const USER_COLUMN: &[&str] = &["user_id", "userId", "user"];
const MOVIE_COLUMN: &[&str] = &["movie_id", "movieId", "item_id", "item"];
const RATING_COLUMN: &[&str] = &["rating"];
const TITLE_COLUMN: &[&str] = &["movie_title", "title"];

/// Why the MovieLens data could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    #[error("MovieLens file {} does not exist; run `make data` to install it, or point --data-dir (RECQ_DATA_DIR) at its directory", path.display())]
    Missing { path: PathBuf },
    #[error("cannot open MovieLens file {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot read Parquet file {}: {source}", path.display())]
    Parquet {
        path: PathBuf,
        #[source]
        source: ParquetError,
    },
    #[error("{} has no column named {} (it has: {})", path.display(), wanted.join(" or "), found.join(", "))]
    MissingColumn {
        path: PathBuf,
        wanted: Vec<String>,
        found: Vec<String>,
    },
    #[error("{} row {row}, column {column}: {reason}", path.display())]
    BadValue {
        path: PathBuf,
        row: usize,
        column: String,
        reason: String,
    },
    #[error("{}: {detail}", path.display())]
    Inconsistent { path: PathBuf, detail: String },
}

/// A set of (user, movie, rating) triples and the titles of the movies.
#[derive(Debug, Clone, Default)]
pub struct Ratings {
    triples: Vec<(UserId, MovieId, f32)>,
    titles: HashMap<MovieId, String>,
}

impl Ratings {
    /// Reads the three MovieLens files from `dir`, in place. Every rated user must appear in the
    /// users file and every rated movie in the movies file.
    pub fn load_movielens(dir: &Path) -> Result<Ratings, DataError> {
        let ratings_path = dir.join(RATINGS_FILE);
        let movies_path = dir.join(MOVIES_FILE);
        let users_path = dir.join(USERS_FILE);

        let mut triples = Vec::new();
        read_rows(
            &ratings_path,
            &[USER_COLUMN, MOVIE_COLUMN, RATING_COLUMN],
            |row, fields| {
                let user = id_at(&ratings_path, row, fields, 0)?;
                let movie = id_at(&ratings_path, row, fields, 1)?;
                let rating = rating_at(&ratings_path, row, fields, 2)?;
                let user = UserId::new(user).map_err(|e| bad(&ratings_path, row, fields, 0, e))?;
                let movie =
                    MovieId::new(movie).map_err(|e| bad(&ratings_path, row, fields, 1, e))?;
                triples.push((user, movie, rating));
                Ok(())
            },
        )?;

        let mut titles = HashMap::new();
        read_rows(
            &movies_path,
            &[MOVIE_COLUMN, TITLE_COLUMN],
            |row, fields| {
                let movie = id_at(&movies_path, row, fields, 0)?;
                let movie =
                    MovieId::new(movie).map_err(|e| bad(&movies_path, row, fields, 0, e))?;
                let title = match &fields[1].1 {
                    Field::Str(s) => s.trim().to_owned(),
                    Field::Null => String::new(),
                    other => {
                        return Err(bad(
                            &movies_path,
                            row,
                            fields,
                            1,
                            format!("{other} is not text"),
                        ));
                    }
                };
                titles.insert(movie, title);
                Ok(())
            },
        )?;

        let mut users = Vec::new();
        read_rows(&users_path, &[USER_COLUMN], |row, fields| {
            let user = id_at(&users_path, row, fields, 0)?;
            users.push(UserId::new(user).map_err(|e| bad(&users_path, row, fields, 0, e))?);
            Ok(())
        })?;
        users.sort_unstable();

        // Report the smallest offending id so that the message is the same on every run.
        let unknown_user = triples
            .iter()
            .map(|t| t.0)
            .filter(|u| users.binary_search(u).is_err())
            .min();
        if let Some(user) = unknown_user {
            return Err(DataError::Inconsistent {
                path: ratings_path,
                detail: format!("user {user} is rated but absent from {USERS_FILE}"),
            });
        }
        let unknown_movie = triples
            .iter()
            .map(|t| t.1)
            .filter(|m| !titles.contains_key(m))
            .min();
        if let Some(movie) = unknown_movie {
            return Err(DataError::Inconsistent {
                path: ratings_path,
                detail: format!("movie {movie} is rated but absent from {MOVIES_FILE}"),
            });
        }
        Ok(Ratings { triples, titles })
    }

    /// A small deterministic synthetic set: users `1..=users` each rate `per_user` distinct movies
    /// out of `1..=movies` (clamped to `movies`), chosen and rated by a generator seeded with
    /// `seed`. Users and movies fall into four taste groups, and a user rates movies of their own
    /// group higher, so the set has structure for collaborative filtering to find.
    pub fn generated(users: u32, movies: u32, per_user: u32, seed: u64) -> Ratings {
        let mut rng = XorShift::new(seed);
        let per_user = per_user.min(movies) as usize;
        let mut pool: Vec<u32> = (1..=movies).collect();
        let mut triples = Vec::with_capacity(users as usize * per_user);
        for user in 1..=users {
            // Partial Fisher-Yates: the first `per_user` slots become a uniform sample.
            for k in 0..per_user {
                let pick = k + rng.below(pool.len() - k);
                pool.swap(k, pick);
            }
            for &movie in &pool[..per_user] {
                let base = if user % 4 == movie % 4 { 4 } else { 2 };
                let rating = (base + rng.below(2)) as f32;
                if let (Ok(u), Ok(m)) = (UserId::new(user.into()), MovieId::new(movie.into())) {
                    triples.push((u, m, rating));
                }
            }
        }
        let titles = (1..=movies)
            .filter_map(|m| MovieId::new(m.into()).ok())
            .map(|m| (m, format!("Movie {m}")))
            .collect();
        Ratings { triples, titles }
    }

    /// Ratings from explicit triples and titles. If a user rated a movie twice, the later triple
    /// wins when a model is built.
    pub fn from_triples(
        ratings: Vec<(UserId, MovieId, f32)>,
        titles: HashMap<MovieId, String>,
    ) -> Ratings {
        Ratings {
            triples: ratings,
            titles,
        }
    }

    /// The number of (user, movie, rating) triples.
    pub fn len(&self) -> usize {
        self.triples.len()
    }

    pub fn is_empty(&self) -> bool {
        self.triples.is_empty()
    }

    /// The triples, in load order.
    pub fn triples(&self) -> &[(UserId, MovieId, f32)] {
        &self.triples
    }

    /// The title of `movie`, if known.
    pub fn title(&self, movie: MovieId) -> Option<&str> {
        self.titles.get(&movie).map(String::as_str)
    }
}

/// Opens `path` and calls `each` with (row number, fields) for every row, where the fields are
/// the wanted columns in the order of `wanted` (each given as a list of accepted names).
fn read_rows(
    path: &Path,
    wanted: &[&[&str]],
    mut each: impl FnMut(usize, &[(String, Field)]) -> Result<(), DataError>,
) -> Result<(), DataError> {
    let file = File::open(path).map_err(|source| {
        if source.kind() == std::io::ErrorKind::NotFound {
            DataError::Missing {
                path: path.to_owned(),
            }
        } else {
            DataError::Io {
                path: path.to_owned(),
                source,
            }
        }
    })?;
    let parquet = |source| DataError::Parquet {
        path: path.to_owned(),
        source,
    };
    let reader = SerializedFileReader::new(file).map_err(parquet)?;
    let root = reader
        .metadata()
        .file_metadata()
        .schema_descr()
        .root_schema();
    let mut projected = Vec::with_capacity(wanted.len());
    for aliases in wanted {
        let field = root
            .get_fields()
            .iter()
            .find(|f| aliases.contains(&f.name()))
            .ok_or_else(|| DataError::MissingColumn {
                path: path.to_owned(),
                wanted: aliases.iter().map(|n| (*n).to_owned()).collect(),
                found: root
                    .get_fields()
                    .iter()
                    .map(|f| f.name().to_owned())
                    .collect(),
            })?;
        projected.push(Arc::clone(field));
    }
    let names: Vec<String> = projected.iter().map(|p| p.name().to_owned()).collect();
    let projection = Type::group_type_builder(root.name())
        .with_fields(projected)
        .build()
        .map_err(parquet)?;
    let rows = reader.get_row_iter(Some(projection)).map_err(parquet)?;
    for (row_number, row) in rows.enumerate() {
        // Match the row's columns to `wanted` by name, whatever order the reader returns them in.
        let mut columns: Vec<Option<(String, Field)>> = row
            .map_err(parquet)?
            .into_columns()
            .into_iter()
            .map(Some)
            .collect();
        let fields: Vec<(String, Field)> = names
            .iter()
            .filter_map(|name| {
                columns
                    .iter_mut()
                    .find(|c| c.as_ref().is_some_and(|(n, _)| n == name))
                    .and_then(Option::take)
            })
            .collect();
        if fields.len() != wanted.len() {
            return Err(DataError::BadValue {
                path: path.to_owned(),
                row: row_number,
                column: String::from("(row)"),
                reason: format!("expected {} columns, got {}", wanted.len(), fields.len()),
            });
        }
        each(row_number, &fields)?;
    }
    Ok(())
}

fn bad(
    path: &Path,
    row: usize,
    fields: &[(String, Field)],
    index: usize,
    reason: impl ToString,
) -> DataError {
    DataError::BadValue {
        path: path.to_owned(),
        row,
        column: fields.get(index).map(|f| f.0.clone()).unwrap_or_default(),
        reason: reason.to_string(),
    }
}

/// An integral id of any numeric physical type (a float must be a whole number).
fn id_at(
    path: &Path,
    row: usize,
    fields: &[(String, Field)],
    index: usize,
) -> Result<i64, DataError> {
    let value = match fields.get(index).map(|f| &f.1) {
        Some(Field::Byte(v)) => Some(i64::from(*v)),
        Some(Field::Short(v)) => Some(i64::from(*v)),
        Some(Field::Int(v)) => Some(i64::from(*v)),
        Some(Field::Long(v)) => Some(*v),
        Some(Field::UByte(v)) => Some(i64::from(*v)),
        Some(Field::UShort(v)) => Some(i64::from(*v)),
        Some(Field::UInt(v)) => Some(i64::from(*v)),
        Some(Field::ULong(v)) => i64::try_from(*v).ok(),
        Some(Field::Float(v)) if v.fract() == 0.0 => Some(*v as i64),
        Some(Field::Double(v)) if v.fract() == 0.0 => Some(*v as i64),
        _ => None,
    };
    value.ok_or_else(|| {
        let shown = fields
            .get(index)
            .map(|f| f.1.to_string())
            .unwrap_or_default();
        bad(
            path,
            row,
            fields,
            index,
            format!("{shown} is not an integer id"),
        )
    })
}

/// A finite rating of any numeric physical type.
fn rating_at(
    path: &Path,
    row: usize,
    fields: &[(String, Field)],
    index: usize,
) -> Result<f32, DataError> {
    let value = match fields.get(index).map(|f| &f.1) {
        Some(Field::Float(v)) => Some(f64::from(*v)),
        Some(Field::Double(v)) => Some(*v),
        Some(Field::Null) | None => None,
        Some(_) => id_at(path, row, fields, index).ok().map(|v| v as f64),
    };
    match value {
        Some(v) if v.is_finite() => Ok(v as f32),
        _ => {
            let shown = fields
                .get(index)
                .map(|f| f.1.to_string())
                .unwrap_or_default();
            Err(bad(
                path,
                row,
                fields,
                index,
                format!("{shown} is not a finite rating"),
            ))
        }
    }
}

/// xorshift64*: tiny, seeded, and good enough to generate test data.
struct XorShift(u64);

impl XorShift {
    fn new(seed: u64) -> Self {
        // Zero is a fixed point of xorshift; mix the seed so that every seed works.
        Self(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A value in `0..bound` (`bound` > 0); the modulo bias is irrelevant for test data.
    fn below(&mut self, bound: usize) -> usize {
        (self.next() % bound.max(1) as u64) as usize
    }
}
