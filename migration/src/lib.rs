//! Arena's migrations, applied in order by `arena migrate` and at `arena serve` start.

pub use sea_orm_migration::prelude::*;

mod m20261122_000001_create_users;
mod m20261122_000002_create_sessions;
mod m20261122_000003_create_documents;
mod m20261122_000004_create_meals;
mod m20261122_000100_create_battles;
mod m20261122_000200_create_specs;
mod m20261122_000201_create_credentials;
mod m20261122_000300_create_trainers;
mod m20261122_000301_create_pokemons;
mod m20261122_000302_create_trades;
mod m20261201_000001_create_cache_namespace;

/// The migration list.
pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(m20261122_000001_create_users::Migration),
            Box::new(m20261122_000002_create_sessions::Migration),
            Box::new(m20261122_000003_create_documents::Migration),
            Box::new(m20261122_000004_create_meals::Migration),
            Box::new(m20261122_000100_create_battles::Migration),
            Box::new(m20261122_000200_create_specs::Migration),
            Box::new(m20261122_000201_create_credentials::Migration),
            Box::new(m20261122_000300_create_trainers::Migration),
            Box::new(m20261122_000301_create_pokemons::Migration),
            Box::new(m20261122_000302_create_trades::Migration),
            Box::new(m20261201_000001_create_cache_namespace::Migration),
        ]
    }
}
