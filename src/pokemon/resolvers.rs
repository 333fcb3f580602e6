//! Thin resolvers of trainers, Pokémon, trades and imports, and the `tradeCompleted`
//! subscription.

use async_graphql::{ComplexObject, Context, Object, Result, Subscription, Upload, ID};
use futures::{Stream, StreamExt};

use super::import;
use super::loaders::{Loaders, PokemonLoaders};
use super::service::{self, TradeEvent, TradeRequest, TRADES_TOPIC};
use super::types::{
    entity_id, CreatePokemonInput, CreateTrainerInput, ImportReport, Pokemon, Trade, Trainer,
    UpdatePokemonInput, UpdateTrainerInput,
};
use crate::error::AppError;
use crate::pagination::fast::Fast;
use crate::pagination::{
    decode_cursor, decode_numeric_cursor, page_size, wants_total, PageConnection,
};
use crate::state::state;
use crate::viewer::require_viewer;

/// A page of trainers.
pub type TrainerConnection = PageConnection<Trainer>;
/// A page of Pokémon.
pub type PokemonConnection = PageConnection<Pokemon>;
/// A page of trades.
pub type TradeConnection = PageConnection<Trade>;

fn loaders<'a>(ctx: &Context<'a>) -> &'a Loaders {
    PokemonLoaders::of(ctx)
}

/// Whether the connection being resolved selects `field` on its nodes.
fn wants(ctx: &Context<'_>, field: &str) -> bool {
    ctx.look_ahead()
        .field("edges")
        .field("node")
        .field(field)
        .exists()
}

/// Loads a trainer through the request's loader.
pub async fn load_trainer(ctx: &Context<'_>, id: &str) -> Result<Option<Trainer>> {
    Ok(loaders(ctx)
        .trainers
        .load_one(id.to_owned())
        .await?
        .map(Trainer::from))
}

/// Loads Pokémon through the request's loader, in the order asked, skipping deleted ones.
async fn load_pokemons(ctx: &Context<'_>, ids: &[ID]) -> Result<Vec<Pokemon>> {
    let keys: Vec<String> = ids.iter().map(|i| i.0.clone()).collect();
    let mut found = loaders(ctx)
        .pokemons
        .load_many(keys.iter().cloned())
        .await?;
    Ok(keys
        .iter()
        .filter_map(|k| found.remove(k))
        .map(Pokemon::from)
        .collect())
}

fn cursor_key(kind: &str, after: Option<String>) -> Result<Option<String>> {
    Ok(after.map(|c| decode_cursor(kind, &c)).transpose()?)
}

#[ComplexObject]
impl Trainer {
    /// The trainer's Pokémon, by id (one SQL query for every trainer of the response).
    async fn pokemons(&self, ctx: &Context<'_>) -> Result<Vec<Fast<Pokemon>>> {
        let models = match &self.pokemons {
            Some(prefetched) => prefetched.clone(),
            None => loaders(ctx)
                .pokemons_by_owner
                .load_one(self.id.0.clone())
                .await?
                .unwrap_or_default(),
        };
        Ok(self.pokemons_of(&models).into_iter().map(Fast).collect())
    }
}

#[ComplexObject]
impl Pokemon {
    /// The trainer who owns it.
    async fn owner(&self, ctx: &Context<'_>) -> Result<Trainer> {
        if let Some(owner) = &self.known_owner {
            return Ok((**owner).clone());
        }
        load_trainer(ctx, &self.owner_id).await?.ok_or_else(|| {
            AppError::NotFound(format!("owner: no trainer `{}`", *self.owner_id)).into()
        })
    }
}

#[ComplexObject]
impl Trade {
    /// Trainer A; null once that trainer was deleted.
    async fn trainer_a(&self, ctx: &Context<'_>) -> Result<Option<Trainer>> {
        load_trainer(ctx, &self.trainer_a_id).await
    }

    /// Trainer B; null once that trainer was deleted.
    async fn trainer_b(&self, ctx: &Context<'_>) -> Result<Option<Trainer>> {
        load_trainer(ctx, &self.trainer_b_id).await
    }

    /// The Pokémon A gave to B, as they are now (deleted ones left out).
    async fn pokemons_a(&self, ctx: &Context<'_>) -> Result<Vec<Pokemon>> {
        load_pokemons(ctx, &self.pokemon_ids_a).await
    }

    /// The Pokémon B gave to A, as they are now (deleted ones left out).
    async fn pokemons_b(&self, ctx: &Context<'_>) -> Result<Vec<Pokemon>> {
        load_pokemons(ctx, &self.pokemon_ids_b).await
    }
}

/// Trainer, Pokémon and trade queries; all public.
#[derive(Default)]
pub struct PokemonQuery;

#[Object]
impl PokemonQuery {
    /// A trainer by id; null when there is none.
    async fn trainer(&self, ctx: &Context<'_>, id: ID) -> Result<Option<Trainer>> {
        load_trainer(ctx, &entity_id("id", &id)?).await
    }

    /// Every trainer, by id.
    async fn trainers(
        &self,
        ctx: &Context<'_>,
        first: Option<i32>,
        after: Option<String>,
    ) -> Result<TrainerConnection> {
        let first = page_size(ctx, first)?;
        let after = cursor_key("trainer", after)?;
        let with_pokemons = wants(ctx, "pokemons");
        // On PostgreSQL the page and its trainers' Pokémon come in one statement.
        if with_pokemons {
            if let Some((page, mut owned)) = service::list_trainers_with_pokemons(
                state(ctx),
                first,
                wants_total(ctx),
                after.clone(),
            )
            .await?
            {
                return Ok(page.into_connection(
                    "trainer",
                    |t| t.id.clone(),
                    |t| Trainer {
                        pokemons: Some(owned.remove(&t.id).unwrap_or_default()),
                        ..Trainer::from(t)
                    },
                ));
            }
        }
        let page = service::list_trainers(state(ctx), first, wants_total(ctx), after).await?;
        // The page's Pokémon, when asked for, in one batch for every trainer of the page
        // (rather than one per trainer, which a DataLoader window might split).
        let mut owned = if with_pokemons {
            let ids = page.items.iter().map(|t| t.id.clone());
            Some(loaders(ctx).pokemons_by_owner.load_many(ids).await?)
        } else {
            None
        };
        Ok(page.into_connection(
            "trainer",
            |t| t.id.clone(),
            |t| {
                let pokemons = owned.as_mut().map(|o| o.remove(&t.id).unwrap_or_default());
                Trainer {
                    pokemons,
                    ..Trainer::from(t)
                }
            },
        ))
    }

    /// A Pokémon by id; null when there is none.
    async fn pokemon(&self, ctx: &Context<'_>, id: ID) -> Result<Option<Pokemon>> {
        Ok(loaders(ctx)
            .pokemons
            .load_one(entity_id("id", &id)?)
            .await?
            .map(Pokemon::from))
    }

    /// Every Pokémon by id, optionally of one owner and/or one species.
    async fn pokemons(
        &self,
        ctx: &Context<'_>,
        first: Option<i32>,
        after: Option<String>,
        owner_id: Option<ID>,
        species: Option<String>,
    ) -> Result<PokemonConnection> {
        let first = page_size(ctx, first)?;
        let after = cursor_key("pokemon", after)?;
        let owner = owner_id.map(|o| entity_id("ownerId", &o)).transpose()?;
        let page =
            service::list_pokemons(state(ctx), first, wants_total(ctx), after, owner, species)
                .await?;
        // The owners, when asked for, in one batch for the whole page.
        let owners = if wants(ctx, "owner") {
            let ids = page.items.iter().map(|p| p.owner_id.clone());
            let found = loaders(ctx).trainers.load_many(ids).await?;
            // One owner per trainer, shared by that trainer's Pokémon on the page.
            let shared: std::collections::HashMap<_, _> = found
                .into_iter()
                .map(|(id, t)| (id, std::sync::Arc::new(Trainer::from(t))))
                .collect();
            Some(shared)
        } else {
            None
        };
        Ok(page.into_connection(
            "pokemon",
            |p| p.id.clone(),
            |p| {
                let known_owner = owners.as_ref().and_then(|o| o.get(&p.owner_id)).cloned();
                Pokemon {
                    known_owner,
                    ..Pokemon::from(p)
                }
            },
        ))
    }

    /// Completed trades, newest first, optionally those a trainer took part in.
    async fn trades(
        &self,
        ctx: &Context<'_>,
        first: Option<i32>,
        after: Option<String>,
        trainer_id: Option<ID>,
    ) -> Result<TradeConnection> {
        let first = page_size(ctx, first)?;
        let after = after
            .map(|c| decode_numeric_cursor("trade", &c))
            .transpose()?;
        let trainer = trainer_id.map(|t| entity_id("trainerId", &t)).transpose()?;
        let page =
            service::list_trades(state(ctx), first, wants_total(ctx), after, trainer).await?;
        Ok(page.into_connection("trade", |t| t.id.to_string(), Trade::from))
    }
}

/// Trainer, Pokémon, trade and import mutations; each needs a signed-in viewer.
#[derive(Default)]
pub struct PokemonMutation;

#[Object]
impl PokemonMutation {
    /// Adds a trainer.
    async fn create_trainer(
        &self,
        ctx: &Context<'_>,
        input: CreateTrainerInput,
    ) -> Result<Trainer> {
        require_viewer(ctx).await?;
        Ok(service::create_trainer(state(ctx), input.into())
            .await?
            .into())
    }

    /// Changes a trainer's names or date of birth.
    async fn update_trainer(
        &self,
        ctx: &Context<'_>,
        id: ID,
        input: UpdateTrainerInput,
    ) -> Result<Trainer> {
        require_viewer(ctx).await?;
        let id = entity_id("id", &id)?;
        Ok(service::update_trainer(state(ctx), &id, input.into())
            .await?
            .into())
    }

    /// Deletes a trainer. One who owns Pokémon is a `CONFLICT` unless `cascade` is true,
    /// which deletes their Pokémon too. `cascade` left out or `null` means `false`.
    async fn delete_trainer(
        &self,
        ctx: &Context<'_>,
        id: ID,
        #[graphql(default_with = "Some(false)")] cascade: Option<bool>,
    ) -> Result<bool> {
        require_viewer(ctx).await?;
        let id = entity_id("id", &id)?;
        let cascade = cascade.unwrap_or(false);
        Ok(service::delete_trainer(state(ctx), &id, cascade).await?)
    }

    /// Adds a Pokémon to an existing trainer.
    async fn create_pokemon(
        &self,
        ctx: &Context<'_>,
        input: CreatePokemonInput,
    ) -> Result<Pokemon> {
        require_viewer(ctx).await?;
        Ok(service::create_pokemon(state(ctx), input.into())
            .await?
            .into())
    }

    /// Changes a Pokémon.
    async fn update_pokemon(
        &self,
        ctx: &Context<'_>,
        id: ID,
        input: UpdatePokemonInput,
    ) -> Result<Pokemon> {
        require_viewer(ctx).await?;
        let id = entity_id("id", &id)?;
        Ok(service::update_pokemon(state(ctx), &id, input.into())
            .await?
            .into())
    }

    /// Deletes a Pokémon.
    async fn delete_pokemon(&self, ctx: &Context<'_>, id: ID) -> Result<bool> {
        require_viewer(ctx).await?;
        let id = entity_id("id", &id)?;
        Ok(service::delete_pokemon(state(ctx), &id).await?)
    }

    /// Trades Pokémon: `pokemonsA` (owned by `trainerA`) go to `trainerB`, `pokemonsB`
    /// (owned by `trainerB`) go to `trainerA`, all in one transaction. If any listed Pokémon
    /// is not owned by its stated trainer when the trade commits, nothing moves and the
    /// `CONFLICT` error names every offender. `dateOfOwnership` becomes today.
    async fn exchange_pokemons(
        &self,
        ctx: &Context<'_>,
        trainer_a: ID,
        trainer_b: ID,
        pokemons_a: Vec<ID>,
        pokemons_b: Vec<ID>,
    ) -> Result<Trade> {
        require_viewer(ctx).await?;
        let ids = |v: Vec<ID>| v.into_iter().map(|i| i.0).collect::<Vec<_>>();
        let req = TradeRequest::parse(&trainer_a, &trainer_b, &ids(pokemons_a), &ids(pokemons_b))?;
        Ok(service::exchange_pokemons(state(ctx), req).await?.into())
    }

    /// Imports trainers from a CSV file with the header `id,firstName,lastName,dateOfBirth`
    /// (dates `DD-MM-YYYY`): inserts new ids and updates existing ones, all in one
    /// transaction. Any bad row means nothing is written; the report lists every one.
    /// `dryRun` validates and reports without writing (left out or `null`: `false`).
    async fn import_trainers(
        &self,
        ctx: &Context<'_>,
        file: Upload,
        #[graphql(default_with = "Some(false)")] dry_run: Option<bool>,
    ) -> Result<ImportReport> {
        require_viewer(ctx).await?;
        let file = upload_file(ctx, &file)?;
        Ok(
            import::import_trainers(state(ctx), file, dry_run.unwrap_or(false))
                .await?
                .into(),
        )
    }

    /// Imports Pokémon from a CSV file with the header
    /// `id,nickname,species,level,owner,dateOfOwnership` (dates `DD-MM-YYYY`, owners existing
    /// trainer ids): inserts new ids and updates existing ones, all in one transaction. Any
    /// bad row means nothing is written; the report lists every one. `dryRun` validates and
    /// reports without writing (left out or `null`: `false`).
    async fn import_pokemons(
        &self,
        ctx: &Context<'_>,
        file: Upload,
        #[graphql(default_with = "Some(false)")] dry_run: Option<bool>,
    ) -> Result<ImportReport> {
        require_viewer(ctx).await?;
        let file = upload_file(ctx, &file)?;
        Ok(
            import::import_pokemons(state(ctx), file, dry_run.unwrap_or(false))
                .await?
                .into(),
        )
    }
}

fn upload_file(ctx: &Context<'_>, file: &Upload) -> Result<std::fs::File> {
    file.value(ctx)
        .map(|v| v.content)
        .map_err(|e| AppError::invalid("file", format!("could not read the upload: {e}")).into())
}

/// Trade subscriptions.
#[derive(Default)]
pub struct TradeSubscription;

#[Subscription]
impl TradeSubscription {
    /// Every completed trade, on every replica; or only those `trainerId` took part in.
    async fn trade_completed(
        &self,
        ctx: &Context<'_>,
        trainer_id: Option<ID>,
    ) -> Result<impl Stream<Item = Trade>> {
        let trainer = trainer_id.map(|t| entity_id("trainerId", &t)).transpose()?;
        let events = state(ctx).events.subscribe(TRADES_TOPIC);
        Ok(events.filter_map(move |payload| {
            let trainer = trainer.clone();
            async move {
                let event: TradeEvent = serde_json::from_str(&payload).ok()?;
                let t = event.trade;
                match trainer {
                    Some(id) if t.trainer_a != id && t.trainer_b != id => None,
                    _ => Some(Trade::from(t)),
                }
            }
        }))
    }
}
