//! Models decoded by column position instead of by name.
//!
//! sea-orm's derived `FromQueryResult` looks every column up by name: it formats the name
//! into a new `String`, then sqlx finds it through a hashed map, for every column of every
//! row. A list's page spends more on that than on the values. A model that implements
//! [`FromPosition`] (through [`by_position!`](crate::by_position)) takes column `i` as its
//! field `i`, which is the order in which `Entity::find()` selects them: the derive makes the
//! `Column` enum from the fields in order, and a test of each entity checks that the macro's
//! list is that order.
//!
//! On PostgreSQL each field is then decoded straight from the row's bytes ([`Field`]).

use sea_orm::sqlx::Row;
use sea_orm::{ConnectionTrait, DbErr, EntityTrait, QueryResult, QueryTrait, Select, Statement};

/// A model read from a row whose columns are the entity's, in its `Column` order.
pub trait FromPosition: Sized {
    /// The fields, in the order they are read.
    const FIELDS: &'static [&'static str];

    /// The model in `row`.
    fn from_position(row: &QueryResult) -> Result<Self, DbErr>;
}

/// A field of a model read by position.
///
/// On PostgreSQL the value is decoded from the row's bytes without sqlx's check of the
/// column's type against the field's (`Row::try_get_unchecked`). That check runs for every
/// cell and compares type descriptions one by one (a `String` against up to six): with
/// sea-orm's wrapping around it, it cost a cold page more than decoding the values did. The
/// columns are the entity's own, made by the migrations, and every suite on PostgreSQL reads
/// them back; a value whose bytes do not fit the field (or a NULL for a field that is not an
/// `Option`) still fails to decode. On SQLite, sea-orm's own decoding.
pub trait Field: Sized {
    /// Column `at` of `row`.
    fn at(row: &QueryResult, at: usize) -> Result<Self, DbErr>;
}

/// The error of a column that did not decode.
fn undecodable(at: usize, e: sea_orm::sqlx::Error) -> DbErr {
    DbErr::Type(format!("column {at}: {e}"))
}

macro_rules! decoded_by_sqlx {
    ($($t:ty),+ $(,)?) => {
        $(
            impl Field for $t {
                #[inline]
                fn at(row: &QueryResult, at: usize) -> Result<Self, DbErr> {
                    match row.try_as_pg_row() {
                        Some(pg) => pg.try_get_unchecked(at).map_err(|e| undecodable(at, e)),
                        None => row.try_get_by_index(at),
                    }
                }
            }
        )+
    };
}

decoded_by_sqlx!(String, Option<String>, i64, i32, f64, bool);

/// Dates and times from PostgreSQL's binary form (microseconds or days since 2000-01-01)
/// straight to chrono's, counting from 1970 or from the year 1: sqlx adds a `Duration` to a
/// date of 2000, which went through chrono's calendar arithmetic for every cell: a quarter of
/// the cost of a meal row's decoding (`created_at`, `updated_at`). Out of chrono's range is an
/// error rather than sqlx's panic. The text form, which Arena's statements do not ask for,
/// goes to sqlx. Test: `dates_and_times_decode_as_sqlx_decodes_them`.
macro_rules! decoded_from_binary {
    ($t:ty, $bytes:literal, $from:ident, $int:ty) => {
        impl Field for $t {
            fn at(row: &QueryResult, at: usize) -> Result<Self, DbErr> {
                use sea_orm::sqlx::postgres::PgValueFormat;
                use sea_orm::sqlx::ValueRef;
                let Some(pg) = row.try_as_pg_row() else {
                    return row.try_get_by_index(at);
                };
                let raw = pg.try_get_raw(at).map_err(|e| undecodable(at, e))?;
                if raw.is_null() || raw.format() != PgValueFormat::Binary {
                    return pg.try_get_unchecked(at).map_err(|e| undecodable(at, e));
                }
                let bytes = raw
                    .as_bytes()
                    .map_err(|e| undecodable(at, sea_orm::sqlx::Error::Decode(e)))?;
                <[u8; $bytes]>::try_from(bytes)
                    .ok()
                    .and_then(|b| $from(<$int>::from_be_bytes(b)))
                    .ok_or_else(|| {
                        DbErr::Type(format!(
                            "column {at}: {} bytes out of range for {}",
                            bytes.len(),
                            stringify!($t)
                        ))
                    })
            }
        }
    };
}

decoded_from_binary!(chrono::DateTime<chrono::Utc>, 8, pg_timestamp, i64);
decoded_from_binary!(chrono::NaiveDate, 4, pg_date, i32);

/// Microseconds since 2000-01-01 00:00 UTC (a `timestamptz`).
fn pg_timestamp(micros: i64) -> Option<chrono::DateTime<chrono::Utc>> {
    /// 2000-01-01 in microseconds since 1970-01-01.
    const FROM_1970: i64 = 946_684_800_000_000;
    chrono::DateTime::from_timestamp_micros(micros.checked_add(FROM_1970)?)
}

/// Days since 2000-01-01 (a `date`, or a date minus `DATE '2000-01-01'`).
pub fn pg_date(days: i32) -> Option<chrono::NaiveDate> {
    /// 2000-01-01 in days from 0001-01-01, counting that day as 1.
    const FROM_CE: i32 = 730_120;
    chrono::NaiveDate::from_num_days_from_ce_opt(days.checked_add(FROM_CE)?)
}

/// The rows of `query`, which selects its entity's columns as `Entity::find()` does (no
/// `select_only`, no extra column), each decoded by position.
pub async fn all<E, C>(query: Select<E>, db: &C) -> Result<Vec<E::Model>, DbErr>
where
    E: EntityTrait,
    E::Model: FromPosition,
    C: ConnectionTrait,
{
    rows(query.build(db.get_database_backend()), db).await
}

/// The rows of `statement`, which selects the columns of `M`'s entity in their `Column`
/// order, each decoded by position.
pub async fn rows<M, C>(statement: Statement, db: &C) -> Result<Vec<M>, DbErr>
where
    M: FromPosition,
    C: ConnectionTrait,
{
    let rows = db.query_all(statement).await?;
    rows.iter().map(M::from_position).collect()
}

/// Implements [`FromPosition`] for the module's `Model`, whose fields are listed in their
/// declared order.
#[macro_export]
macro_rules! by_position {
    ($($field:ident),+ $(,)?) => {
        impl $crate::position::FromPosition for Model {
            const FIELDS: &'static [&'static str] = &[$(stringify!($field)),+];

            fn from_position(row: &sea_orm::QueryResult) -> Result<Self, sea_orm::DbErr> {
                let mut at = 0usize;
                $(
                    let $field = $crate::position::Field::at(row, at)?;
                    at += 1;
                )+
                let _ = at;
                Ok(Self { $($field),+ })
            }
        }

        #[cfg(test)]
        #[test]
        fn fields_by_position_are_the_columns_in_order() {
            use sea_orm::Iterable;
            let columns: Vec<String> = Column::iter().map(|c| c.to_string()).collect();
            assert_eq!(
                columns,
                <Model as $crate::position::FromPosition>::FIELDS,
                "by_position! must list every field of Model in its declared order"
            );
        }
    };
}

/// The SQL text of one shape of a statement (which filters or columns it has, whether it
/// starts after a cursor), per database, made by sea-query the first time it runs and kept:
/// building it on every request cost a cold page about 8 % of its CPU and a write about 6 %
/// (the load bench's profiles).
#[derive(Default)]
pub struct ShapeSql([std::sync::OnceLock<String>; 2]);

impl ShapeSql {
    /// One text per database.
    pub const fn new() -> Self {
        Self([std::sync::OnceLock::new(), std::sync::OnceLock::new()])
    }

    /// The kept text for `backend`, made by `build` the first time. `values` are the values
    /// the caller binds to it, in order. A debug build runs `build` every time and checks its
    /// text and values against the kept text and `values`, so the tests catch a shape or a
    /// value list that does not match.
    pub fn text(
        &self,
        backend: sea_orm::DbBackend,
        values: &[sea_orm::Value],
        build: impl FnOnce() -> Statement,
    ) -> String {
        let slot = &self.0[usize::from(backend != sea_orm::DbBackend::Postgres)];
        match slot.get() {
            Some(sql) if !cfg!(debug_assertions) => sql.clone(),
            _ => {
                let built = build();
                assert_eq!(
                    built.values.as_ref().map(|v| v.0.as_slice()),
                    Some(values),
                    "ShapeSql: the values given are not the statement's"
                );
                let kept = slot.get_or_init(|| built.sql.clone());
                assert_eq!(
                    *kept, built.sql,
                    "ShapeSql: one shape was given statements of two texts"
                );
                built.sql
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use chrono::{Duration, NaiveDate};

    use super::{pg_date, pg_timestamp};

    /// What sqlx 0.8 computes from the same binary values.
    fn by_sqlx_timestamp(micros: i64) -> chrono::DateTime<chrono::Utc> {
        let epoch = NaiveDate::from_ymd_opt(2000, 1, 1)
            .and_then(|d| d.and_hms_opt(0, 0, 0))
            .expect("2000-01-01");
        (epoch + Duration::microseconds(micros)).and_utc()
    }

    fn by_sqlx_date(days: i32) -> NaiveDate {
        NaiveDate::from_ymd_opt(2000, 1, 1).expect("2000-01-01") + Duration::days(days.into())
    }

    #[test]
    fn dates_and_times_decode_as_sqlx_decodes_them() {
        // Every day from 1800 to 2200, with times that cross a second, a day and the epochs.
        for days in -73_000..73_000 {
            assert_eq!(pg_date(days), Some(by_sqlx_date(days)), "days {days}");
            let micros = i64::from(days) * 86_400_000_000;
            for offset in [
                0,
                1,
                999_999,
                1_000_000,
                86_399_999_999,
                -1,
                -86_400_000_000 + 7,
            ] {
                let t = micros + offset;
                assert_eq!(pg_timestamp(t), Some(by_sqlx_timestamp(t)), "micros {t}");
            }
        }
        // Out of range (PostgreSQL's `infinity` is i64::MAX): none, where sqlx panics.
        assert_eq!(pg_timestamp(i64::MAX), None);
        assert_eq!(pg_timestamp(i64::MIN), None);
        assert_eq!(pg_date(i32::MAX), None);
        assert_eq!(pg_date(i32::MIN), None);
    }
}
