//! The rules of the battle ring and of battles. No GraphQL types here.
//!
//! The ring lives in the cache tier under `ring:<userId>` (JSON: each combatant's meal data and
//! the instant it expires), so every replica sees the same ring. Every change of a ring, and
//! every battle from start to end, runs under the ring's lock (`ring_lock:<userId>`, taken with
//! `SET NX` and a random token, released only by its owner), so two concurrent requests can
//! neither corrupt a ring nor fight the same battle twice.
//!
//! The combatants' data is the ring's "client-side cache": a battle scores each combatant from
//! it and re-fetches (through the meal cache, in one round trip) only the entries that have
//! expired. The stats themselves are always computed from the locked rows.

use std::collections::HashMap;
use std::future::Future;
use std::time::Duration;

use chrono::Utc;
use entity::{battle, meal};
use futures::stream::{BoxStream, StreamExt};
use rand::Rng;
use sea_orm::{ActiveModelTrait, ColumnTrait, Condition, EntityTrait, Order, QueryFilter, Set};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::rules;
use crate::backends::cache::lock::{CacheLock, Wait};
use crate::backends::cache::CacheError;
use crate::consistency;
use crate::error::{AppError, AppResult, OrInternal};
use crate::meals::loaders::load_meals;
use crate::meals::service::lock_meal;
use crate::pagination::{keyset_page, Page};
use crate::state::AppState;
use crate::users::hooks::AccountHook;

/// The document-store collection of per-user session documents: each keeps the combatants
/// of the user's ring between a log out and the next log in.
pub const SESSION_DOCS: &str = "sessions";

/// The event-bus topic every battle is published on.
pub const TOPIC: &str = "battles";

/// A ring holds at most this many combatants.
pub const RING_SIZE: usize = 2;

/// The cache key of a user's battle ring.
pub fn ring_key(user_id: i64) -> String {
    format!("ring:{user_id}")
}

fn ring_lock_key(user_id: i64) -> String {
    format!("ring_lock:{user_id}")
}

/// A user's battle ring as stored in the cache tier.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Ring {
    /// In the order they were prepped: combatant 1 first.
    pub combatants: Vec<Combatant>,
}

/// One combatant: the meal's data as fetched, and when it stops being trusted.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Combatant {
    /// The meal's row when it was (re-)fetched.
    pub meal: meal::Model,
    /// Unix time in milliseconds after which `battle` re-fetches `meal`.
    pub expires_at_ms: i64,
}

impl Ring {
    /// The combatants' meal ids, in ring order.
    pub fn ids(&self) -> Vec<i64> {
        self.combatants.iter().map(|c| c.meal.id).collect()
    }

    fn contains(&self, meal_id: i64) -> bool {
        self.combatants.iter().any(|c| c.meal.id == meal_id)
    }
}

fn now_ms() -> i64 {
    Utc::now().timestamp_millis()
}

fn combatant(state: &AppState, meal: meal::Model) -> Combatant {
    let ttl_ms =
        i64::try_from(state.settings.combatant_ttl_secs.saturating_mul(1000)).unwrap_or(i64::MAX);
    Combatant {
        meal,
        expires_at_ms: now_ms().saturating_add(ttl_ms),
    }
}

fn cache_error(e: CacheError) -> AppError {
    AppError::caused_by("battle ring (cache tier)", e)
}

/// Reads the ring; an empty ring when there is none.
async fn read_ring(state: &AppState, user_id: i64) -> AppResult<Ring> {
    let raw = state
        .kv
        .get(&ring_key(user_id))
        .await
        .map_err(cache_error)?;
    Ok(match raw {
        None => Ring::default(),
        Some(raw) => serde_json::from_str(&raw).unwrap_or_else(|e| {
            tracing::warn!(user_id, error = %e, "unreadable battle ring: starting afresh");
            Ring::default()
        }),
    })
}

/// Stores the ring (deletes the key when empty). It lives as long as a session.
async fn write_ring(state: &AppState, user_id: i64, ring: &Ring) -> AppResult<()> {
    let key = ring_key(user_id);
    if ring.combatants.is_empty() {
        state.kv.del(&[key]).await.map_err(cache_error)?;
        return Ok(());
    }
    let raw = serde_json::to_string(ring).or_internal("encoding the ring")?;
    let ttl = Duration::from_secs(state.settings.session_ttl_secs.max(1));
    state
        .kv
        .set(&key, &raw, Some(ttl))
        .await
        .map_err(cache_error)
}

/// Takes the lock of one user's ring, waiting while another request holds it; `CONFLICT`
/// if it stays busy for too long.
async fn lock_ring(state: &AppState, user_id: i64) -> AppResult<CacheLock> {
    let hold = state.settings.request_timeout() + Duration::from_secs(5);
    let wait = (state.settings.request_timeout() / 2).min(Duration::from_secs(10));
    CacheLock::acquire(&state.kv, ring_lock_key(user_id), hold, Wait::up_to(wait))
        .await
        .map_err(cache_error)?
        .ok_or_else(|| {
            AppError::Conflict("the battle ring is busy with another request; try again".into())
        })
}

/// Runs `work` holding the ring's lock.
async fn with_ring_lock<T>(
    state: &AppState,
    user_id: i64,
    work: impl Future<Output = AppResult<T>>,
) -> AppResult<T> {
    let lock = lock_ring(state, user_id).await?;
    let out = work.await;
    lock.release().await;
    out
}

/// The meal ids in the user's ring, in order.
pub async fn combatant_ids(state: &AppState, user_id: i64) -> AppResult<Vec<i64>> {
    Ok(read_ring(state, user_id).await?.ids())
}

/// Puts a meal in the ring: at most [`RING_SIZE`], no meal twice, no unknown or deleted meal.
/// Returns the ring's meal ids.
pub async fn prep_combatant(state: &AppState, user_id: i64, meal_id: i64) -> AppResult<Vec<i64>> {
    with_ring_lock(state, user_id, async {
        let mut ring = read_ring(state, user_id).await?;
        if ring.contains(meal_id) {
            return Err(AppError::invalid(
                "mealId",
                format!("meal {meal_id} is already in the ring; a meal cannot fight itself"),
            ));
        }
        if ring.combatants.len() >= RING_SIZE {
            return Err(AppError::invalid(
                "mealId",
                format!(
                    "the ring already holds {RING_SIZE} combatants; battle or clearCombatants first"
                ),
            ));
        }
        let meal = load_meals(state, &[meal_id])
            .await?
            .remove(&meal_id)
            .ok_or_else(|| {
                AppError::NotFound(format!(
                    "mealId: no meal with id {meal_id} (it does not exist or was deleted)"
                ))
            })?;
        ring.combatants.push(combatant(state, meal));
        write_ring(state, user_id, &ring).await?;
        Ok(ring.ids())
    })
    .await
}

/// Empties the ring.
pub async fn clear_combatants(state: &AppState, user_id: i64) -> AppResult<bool> {
    with_ring_lock(state, user_id, async {
        write_ring(state, user_id, &Ring::default()).await?;
        Ok(true)
    })
    .await
}

/// A fought battle with both meals as the battle left them.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BattleOutcome {
    /// The stored battle.
    pub battle: battle::Model,
    /// The winner's row after the battle.
    pub winner: meal::Model,
    /// The loser's row after the battle.
    pub loser: meal::Model,
}

/// Fights the battle of the user's ring: scores from the ring's data (expired
/// entries re-fetched), the winner rule with a draw from the app's random generator, both
/// meals' stats updated from their locked rows in one transaction, the battle stored, the
/// loser out of the ring, the result published on [`TOPIC`].
///
/// The battle runs as a task of its own, awaited here: a request cancelled half-way (its time
/// limit, a disconnect) must not free the ring's lock between the commit and the ring's
/// update, or a retry would fight the same two meals again.
pub async fn fight(state: &AppState, user_id: i64) -> AppResult<BattleOutcome> {
    let task_state = state.clone();
    let outcome = tokio::spawn(async move {
        let state = &task_state;
        with_ring_lock(state, user_id, fight_locked(state, user_id)).await
    })
    .await
    .or_internal("the battle task failed")??;
    match serde_json::to_string(&outcome) {
        Ok(payload) => {
            if let Err(e) = state.events.publish(TOPIC, payload).await {
                // The battle is fought and stored; only live subscribers miss it.
                tracing::warn!(error = %e, battle = outcome.battle.id, "could not publish a battle");
            }
        }
        Err(e) => tracing::error!(error = %e, "could not encode a battle event"),
    }
    Ok(outcome)
}

/// Removes meals that turned out deleted from the ring, and says so.
async fn drop_deleted(state: &AppState, user_id: i64, mut ring: Ring, gone: &[i64]) -> AppError {
    ring.combatants.retain(|c| !gone.contains(&c.meal.id));
    if let Err(e) = write_ring(state, user_id, &ring).await {
        return e;
    }
    let ids: Vec<String> = gone.iter().map(i64::to_string).collect();
    AppError::NotFound(format!(
        "combatant meal {} was deleted and has left the ring; prep another",
        ids.join(", ")
    ))
}

async fn fight_locked(state: &AppState, user_id: i64) -> AppResult<BattleOutcome> {
    let mut ring = read_ring(state, user_id).await?;
    if ring.combatants.len() < RING_SIZE {
        return Err(AppError::bad_input(format!(
            "a battle needs two combatants and the ring holds {}; use prepCombatant",
            ring.combatants.len()
        )));
    }
    // Re-fetch only the expired entries, all in one round trip.
    let now = now_ms();
    let expired: Vec<i64> = ring
        .combatants
        .iter()
        .filter(|c| c.expires_at_ms <= now)
        .map(|c| c.meal.id)
        .collect();
    if !expired.is_empty() {
        let mut fresh = load_meals(state, &expired).await?;
        let gone: Vec<i64> = expired
            .iter()
            .copied()
            .filter(|id| !fresh.contains_key(id))
            .collect();
        if !gone.is_empty() {
            return Err(drop_deleted(state, user_id, ring, &gone).await);
        }
        for c in ring.combatants.iter_mut() {
            if let Some(m) = fresh.remove(&c.meal.id) {
                *c = combatant(state, m);
            }
        }
    }

    let (one, two) = (&ring.combatants[0].meal, &ring.combatants[1].meal);
    let score_of = |m: &meal::Model| rules::score(m.price, &m.cuisine, m.difficulty);
    let random: f64 = state.rng.lock().random();
    let verdict = rules::decide(score_of(one), score_of(two), random);
    let (winner_id, loser_id, winner_score, loser_score) = if verdict.first_wins {
        (one.id, two.id, verdict.score_1, verdict.score_2)
    } else {
        (two.id, one.id, verdict.score_2, verdict.score_1)
    };

    let fought = consistency::write(state, move |txn| {
        Box::pin(async move {
            // Lower id first, so two battles over the same meals cannot deadlock.
            let mut rows = HashMap::with_capacity(2);
            for id in [winner_id.min(loser_id), winner_id.max(loser_id)] {
                match lock_meal(txn, id).await? {
                    Some(m) if !m.deleted => {
                        rows.insert(id, m);
                    }
                    _ => return Ok(Err(id)),
                }
            }
            let (Some(w), Some(l)) = (rows.remove(&winner_id), rows.remove(&loser_id)) else {
                return Err(AppError::internal("a locked combatant went missing"));
            };
            let (w_battles, w_wins, l_battles) = (w.battles + 1, w.wins + 1, l.battles + 1);
            let mut w: meal::ActiveModel = w.into();
            w.battles = Set(w_battles);
            w.wins = Set(w_wins);
            let winner = w.update(txn).await?;
            let mut l: meal::ActiveModel = l.into();
            l.battles = Set(l_battles);
            let loser = l.update(txn).await?;
            let battle = battle::ActiveModel {
                winner_id: Set(winner_id),
                loser_id: Set(loser_id),
                winner_score: Set(winner_score),
                loser_score: Set(loser_score),
                delta: Set(verdict.delta),
                random: Set(verdict.random),
                fought_at: Set(Utc::now()),
                user_id: Set(user_id),
                ..Default::default()
            }
            .insert(txn)
            .await?;
            Ok(Ok(BattleOutcome {
                battle,
                winner,
                loser,
            }))
        })
    })
    .await?;
    let outcome = match fought {
        Ok(o) => o,
        Err(gone) => return Err(drop_deleted(state, user_id, ring, &[gone]).await),
    };

    ring.combatants.retain(|c| c.meal.id != loser_id);
    for c in ring.combatants.iter_mut() {
        if c.meal.id == winner_id {
            // The committed row is as fresh as data gets.
            *c = combatant(state, outcome.winner.clone());
        }
    }
    write_ring(state, user_id, &ring).await?;
    Ok(outcome)
}

/// Battles as they are published, all of them or those `meal_id` fought in. Dropping the
/// stream unsubscribes.
pub fn battle_results(state: &AppState, meal_id: Option<i64>) -> BoxStream<'static, BattleOutcome> {
    state
        .events
        .subscribe(TOPIC)
        .filter_map(move |raw| {
            let outcome = match serde_json::from_str::<BattleOutcome>(&raw) {
                Ok(o) => Some(o),
                Err(e) => {
                    tracing::warn!(error = %e, "unreadable battle event");
                    None
                }
            };
            futures::future::ready(outcome.filter(|o| {
                meal_id.is_none_or(|m| o.battle.winner_id == m || o.battle.loser_id == m)
            }))
        })
        .boxed()
}

/// One battle of the history.
pub async fn battle_by_id(state: &AppState, id: i64) -> AppResult<Option<battle::Model>> {
    Ok(battle::Entity::find_by_id(id).one(&state.direct).await?)
}

/// A page of the history, newest first, optionally only the battles `meal_id` fought in;
/// with whether more follow and the total count.
pub async fn list_battles(
    state: &AppState,
    first: u64,
    count: bool,
    after: Option<i64>,
    meal_id: Option<i64>,
) -> AppResult<Page<battle::Model>> {
    consistency::reading(state, &["battles"]).await;
    let mut q = battle::Entity::find();
    if let Some(m) = meal_id {
        q = q.filter(
            Condition::any()
                .add(battle::Column::WinnerId.eq(m))
                .add(battle::Column::LoserId.eq(m)),
        );
    }
    let after = after.map(Into::into);
    keyset_page(
        &state.direct,
        q,
        battle::Column::Id,
        Order::Desc,
        first,
        count,
        after,
    )
    .await
}

/// A meal row whether deleted or not: the history still names meals deleted since.
pub async fn meal_for_history(state: &AppState, id: i64) -> AppResult<Option<meal::Model>> {
    Ok(meal::Entity::find_by_id(id).one(&state.direct).await?)
}

/// The meal ids stored in a session document: `combatants` as `[{"mealId": 1}, …]` (or bare
/// ids).
fn stored_combatants(doc: &Value) -> Vec<i64> {
    doc.get("combatants")
        .and_then(Value::as_array)
        .map(|list| {
            list.iter()
                .filter_map(|c| {
                    c.as_i64()
                        .or_else(|| c.get("mealId").and_then(Value::as_i64))
                        .or_else(|| c.get("id").and_then(Value::as_i64))
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Log in (seed): clears the ring, then preps each combatant stored in the user's session
/// document, skipping those no longer valid (deleted meals, duplicates, beyond two). A cache
/// outage leaves the ring as it is rather than failing the log in.
pub async fn restore_ring(state: &AppState, user_id: i64) -> AppResult<()> {
    let stored = state
        .docs
        .get(SESSION_DOCS, &user_id.to_string())
        .await?
        .map(|d| stored_combatants(&d))
        .unwrap_or_default();
    let restored = with_ring_lock(state, user_id, async {
        let mut ring = Ring::default();
        if !stored.is_empty() {
            let mut found = load_meals(state, &stored).await?;
            for id in stored {
                if ring.combatants.len() >= RING_SIZE || ring.contains(id) {
                    continue;
                }
                if let Some(m) = found.remove(&id) {
                    ring.combatants.push(combatant(state, m));
                }
            }
        }
        write_ring(state, user_id, &ring).await
    })
    .await;
    if let Err(e) = restored {
        tracing::warn!(user_id, error = ?e, "could not restore the battle ring at log in");
    }
    Ok(())
}

/// Log out (seed): writes the ring's combatants to the user's session document (creating it
/// if needed), then clears the ring. If the ring cannot be read (cache outage) the document
/// keeps what it had.
pub async fn save_ring(state: &AppState, user_id: i64) -> AppResult<()> {
    let lock = match lock_ring(state, user_id).await {
        Ok(lock) => Some(lock),
        Err(e) => {
            tracing::warn!(user_id, error = ?e, "could not lock the battle ring at log out");
            None
        }
    };
    let ring = match &lock {
        Some(_) => match read_ring(state, user_id).await {
            Ok(r) => Some(r),
            Err(e) => {
                tracing::warn!(user_id, error = ?e, "could not read the battle ring at log out");
                None
            }
        },
        None => None,
    };
    let saved = async {
        let id = user_id.to_string();
        let mut doc = state
            .docs
            .get(SESSION_DOCS, &id)
            .await?
            .filter(Value::is_object)
            .unwrap_or_else(|| json!({ "userId": user_id, "combatants": [] }));
        if let Some(ring) = &ring {
            doc["combatants"] = ring
                .combatants
                .iter()
                .map(|c| json!({ "mealId": c.meal.id, "name": c.meal.name }))
                .collect();
        }
        state.docs.put(SESSION_DOCS, &id, &doc).await?;
        if ring.is_some() {
            if let Err(e) = write_ring(state, user_id, &Ring::default()).await {
                // Saved already; the next log in restores from the document anyway.
                tracing::warn!(user_id, error = ?e, "could not clear the battle ring at log out");
            }
        }
        AppResult::Ok(())
    }
    .await;
    if let Some(lock) = lock {
        lock.release().await;
    }
    saved
}

/// The battle ring's part in an account's life: the seed's session document is opened (or
/// created) and the ring restored from it at log in, saved to it at log out, and both go
/// with the account.
pub struct BattleAccountHook;

#[async_trait::async_trait]
impl AccountHook for BattleAccountHook {
    async fn logged_in(&self, state: &AppState, user_id: i64) -> AppResult<()> {
        let id = user_id.to_string();
        if state.docs.get(SESSION_DOCS, &id).await?.is_none() {
            state
                .docs
                .put(
                    SESSION_DOCS,
                    &id,
                    &json!({ "userId": user_id, "combatants": [] }),
                )
                .await?;
        }
        restore_ring(state, user_id).await
    }

    async fn logging_out(&self, state: &AppState, user_id: i64) -> AppResult<()> {
        save_ring(state, user_id).await
    }

    async fn forget(&self, state: &AppState, user_id: i64) -> AppResult<()> {
        state
            .docs
            .delete(SESSION_DOCS, &user_id.to_string())
            .await?;
        state
            .kv
            .del(&[ring_key(user_id)])
            .await
            .map_err(cache_error)?;
        Ok(())
    }
}
