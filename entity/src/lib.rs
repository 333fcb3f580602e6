//! sea-orm entities of Arena, one file per table, and the hooks that feed the cache.
//!
//! No GraphQL derives live here: the server converts models into its own types, so a column
//! such as a password hash can never reach the schema by accident.

pub mod battle;
pub mod cache_namespace;
pub mod credential;
pub mod document;
pub mod meal;
pub mod pokemon;
pub mod position;
pub mod scope;
pub mod session;
pub mod spec;
pub mod trade;
pub mod trainer;
pub mod user;
pub mod versioning;

/// The value an active model holds for a column, if it holds one.
pub fn value_of<T: Clone + Into<sea_orm::Value>>(v: &sea_orm::ActiveValue<T>) -> Option<T> {
    match v {
        sea_orm::ActiveValue::Set(x) | sea_orm::ActiveValue::Unchanged(x) => Some(x.clone()),
        sea_orm::ActiveValue::NotSet => None,
    }
}

/// Every table of the schema (the migrations' own bookkeeping included); a test checks it
/// against the migrated database.
pub const TABLES: &[&str] = &[
    "battles",
    "cache_namespace",
    "credentials",
    "documents",
    "meals",
    "pokemons",
    "seaql_migrations",
    "sessions",
    "specs",
    "trades",
    "trainers",
    "users",
];

/// The tables of a user's own rows: their account, sessions, API keys and specs. Only the
/// user's own requests read them, and every write to them runs under the user's version
/// (`viewer:<id>`, `consistency::write_owned`), which a memoized answer of theirs is checked
/// against — but two that no answer can show: opening a session (no answer was memoized for
/// a token that did not exist) and rehashing a password at login.
pub const OWNED_TABLES: &[&str] = &["credentials", "sessions", "specs", "users"];

/// The tables a SQL statement names, wherever they stand (`FROM`, `JOIN`, a comma list, a
/// subquery, a qualified column): every word that is a table's name, except the column part
/// of `table.column`. It may name more tables than the statement reads (a column that shares
/// a table's name), never fewer.
pub fn tables_named(sql: &str) -> Vec<&'static str> {
    let normalized: String = sql
        .chars()
        .filter(|c| !matches!(c, '"' | '`' | '[' | ']'))
        .map(|c| match c {
            c if c.is_ascii_alphanumeric() || c == '_' || c == '.' => c.to_ascii_lowercase(),
            _ => ' ',
        })
        .collect();
    let table = |name: &str| TABLES.iter().find(|t| **t == name).copied();
    let mut out = Vec::new();
    for word in normalized.split_whitespace() {
        let parts: Vec<&str> = word.split('.').filter(|p| !p.is_empty()).collect();
        let named: Vec<&'static str> = match parts.as_slice() {
            // `meals.battles` is a column of `meals`.
            [first, _] if table(first).is_some() => table(first).into_iter().collect(),
            // A table, a schema-qualified one, or an alias's column: any part may be a table.
            parts => parts.iter().filter_map(|p| table(p)).collect(),
        };
        for t in named {
            if !out.contains(&t) {
                out.push(t);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn tables_are_found_wherever_a_statement_names_them() {
        let t = super::tables_named;
        assert_eq!(
            t(r#"SELECT "meals"."id", "meals"."battles" FROM "meals""#),
            ["meals"]
        );
        assert_eq!(t("SELECT * FROM meals m, users u"), ["meals", "users"]);
        assert_eq!(
            t(r#"SELECT 1 FROM "public"."trainers" JOIN pokemons ON x"#),
            ["trainers", "pokemons"]
        );
        assert_eq!(t(r#"SELECT battles FROM x"#), ["battles"]);
        assert_eq!(t("SELECT m.battles FROM meals m"), ["battles", "meals"]);
        assert!(t("SELECT 1").is_empty());
    }
}
