//! Row versions of entities whose ids can come back after a hard delete (trainers, Pokémon).
//!
//! A version must grow across the whole life of an *id*, not only of a row: a deleted
//! trainer leaves a tombstone in the cache, and a trainer created later under the same id
//! must outrank it. So versions are microseconds since the epoch, and never less than the
//! previous version + 1 (two writes in one microsecond, or a clock that stepped back).

/// The version of a row written now, whose previous version was `prev` (if it had one).
pub fn next_version(prev: Option<i64>) -> i64 {
    let now = chrono::Utc::now().timestamp_micros();
    match prev {
        Some(p) => now.max(p.saturating_add(1)),
        None => now,
    }
}

/// The hooks of an entity versioned by time (see [`next_version`]), written once for
/// trainers and Pokémon: every write bumps the version and records the row (or, when it is
/// deleted, a tombstone newer than the row ever was and older than a re-creation) for the
/// write-through cache. The module must define `CACHE_ENTITY` and a `version` column, and the
/// model must be `Serialize` with an `id: String`.
#[macro_export]
macro_rules! time_versioned_hooks {
    () => {
        #[async_trait::async_trait]
        impl ActiveModelBehavior for ActiveModel {
            async fn before_save<C>(mut self, _db: &C, insert: bool) -> Result<Self, DbErr>
            where
                C: ConnectionTrait,
            {
                $crate::scope::write::before_write(CACHE_ENTITY)?;
                let prev = if insert {
                    None
                } else {
                    $crate::value_of(&self.version)
                };
                self.version = sea_orm::ActiveValue::Set($crate::versioning::next_version(prev));
                Ok(self)
            }

            async fn after_save<C>(model: Model, _db: &C, _insert: bool) -> Result<Model, DbErr>
            where
                C: ConnectionTrait,
            {
                let row = serde_json::to_value(&model)
                    .map_err(|e| DbErr::Custom(format!("a row cannot be cached: {e}")))?;
                $crate::scope::write::record($crate::scope::write::Change {
                    entity: CACHE_ENTITY,
                    id: model.id.clone(),
                    version: model.version,
                    row: Some(row),
                })?;
                Ok(model)
            }

            async fn before_delete<C>(self, _db: &C) -> Result<Self, DbErr>
            where
                C: ConnectionTrait,
            {
                $crate::scope::write::before_write(CACHE_ENTITY)?;
                Ok(self)
            }

            async fn after_delete<C>(self, _db: &C) -> Result<Self, DbErr>
            where
                C: ConnectionTrait,
            {
                $crate::scope::write::record($crate::scope::write::Change {
                    entity: CACHE_ENTITY,
                    id: $crate::value_of(&self.id).unwrap_or_default(),
                    version: $crate::versioning::next_version($crate::value_of(&self.version)),
                    row: None,
                })?;
                Ok(self)
            }
        }
    };
}
