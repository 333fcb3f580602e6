//! The rules of credentials and of API-key authentication. No GraphQL types here.
//!
//! A request's key is looked up in the database (one query on the unique `public_key` index,
//! joined to its user), never in a cache: a rotated or deleted key stops working at once on
//! every replica. What is cached, in this process only, is the outcome of the expensive
//! PBKDF2 check, keyed by the public key *and* the stored hash it was checked against: a
//! rotation changes the stored hash, so an old entry can never match again. An answer
//! memoized for a key is served again only while the version of its owner's own rows holds,
//! and every write here replaces that version (`consistency::write_owned`).

use base64::Engine;
use chrono::Utc;
use entity::{credential, user};
use sea_orm::sea_query::Expr;
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder, Set,
    TransactionTrait,
};

use super::types::CredentialId;
use crate::consistency;
use crate::crypto;
use crate::error::{is_unique_violation, AppError, AppResult};
use crate::state::AppState;
use crate::users::throttle;
use crate::viewer::{AuthMethod, ClientAddr, Viewer};

/// Prefix of every public key, so a key is recognisable in a config file.
pub const PUBLIC_KEY_PREFIX: &str = "ak_";

/// Random bytes of a secret key (from the OS RNG).
const SECRET_BYTES: usize = 32;

/// Random bytes of a public key after its prefix.
const PUBLIC_KEY_BYTES: usize = 18;

/// How often a create is retried when a concurrent create of the same id raced it.
const CREATE_ATTEMPTS: usize = 5;

/// Creates `user_id`'s credential `id`, or rotates it when it exists: a new public key, a new
/// salt and a new secret. Returns the row and the secret key, which is never stored.
pub async fn create_credential(
    state: &AppState,
    user_id: i64,
    id: &CredentialId,
) -> AppResult<(credential::Model, String)> {
    let secret = crypto::random_token(SECRET_BYTES);
    let salt = crypto::new_salt();
    let iterations = state.settings.pbkdf2_iterations;
    let secret_hash = {
        let (secret, salt) = (secret.clone(), salt.clone());
        state
            .hasher
            .run(move || crypto::hash_secret(&secret, &salt, iterations))
            .await?
    };
    let (db, id) = (state.db.clone(), id.clone());
    consistency::write_owned(state, user_id, async move {
        for _ in 0..CREATE_ATTEMPTS {
            let public_key = format!(
                "{PUBLIC_KEY_PREFIX}{}",
                crypto::random_token(PUBLIC_KEY_BYTES)
            );
            let now = Utc::now();
            let txn = db.begin().await?;
            // Rotate first: the write also takes SQLite's write lock before any read.
            let rotated = credential::Entity::update_many()
                .col_expr(
                    credential::Column::PublicKey,
                    Expr::value(public_key.clone()),
                )
                .col_expr(credential::Column::Salt, Expr::value(salt.clone()))
                .col_expr(
                    credential::Column::SecretHash,
                    Expr::value(secret_hash.clone()),
                )
                .col_expr(credential::Column::CreatedAt, Expr::value(now))
                .filter(credential::Column::UserId.eq(user_id))
                .filter(credential::Column::CredentialId.eq(id.as_str()))
                .exec(&txn)
                .await;
            let rotated = match rotated {
                Ok(r) => r.rows_affected > 0,
                // A public key taken by another credential: draw another one.
                Err(e) if is_unique_violation(&e) => continue,
                Err(e) => return Err(e.into()),
            };
            let row = if rotated {
                credential::Entity::find()
                    .filter(credential::Column::UserId.eq(user_id))
                    .filter(credential::Column::CredentialId.eq(id.as_str()))
                    .one(&txn)
                    .await?
                    .ok_or_else(|| AppError::internal("a rotated credential vanished"))?
            } else {
                let inserted = credential::ActiveModel {
                    user_id: Set(user_id),
                    credential_id: Set(id.as_str().to_owned()),
                    public_key: Set(public_key),
                    salt: Set(salt.clone()),
                    secret_hash: Set(secret_hash.clone()),
                    created_at: Set(now),
                    ..Default::default()
                }
                .insert(&txn)
                .await;
                match inserted {
                    Ok(row) => row,
                    // A concurrent create of the same id won: rotate it on the next attempt.
                    Err(e) if is_unique_violation(&e) => continue,
                    Err(e) => return Err(e.into()),
                }
            };
            txn.commit().await?;
            return Ok((row, secret));
        }
        Err(AppError::Conflict(format!(
            "id: credential `{}` is being changed by other requests; try again",
            id.as_str()
        )))
    })
    .await
}

/// `user_id`'s credentials, by id.
pub async fn credentials(state: &AppState, user_id: i64) -> AppResult<Vec<credential::Model>> {
    Ok(credential::Entity::find()
        .filter(credential::Column::UserId.eq(user_id))
        .order_by_asc(credential::Column::CredentialId)
        .all(&state.db)
        .await?)
}

/// `user_id`'s credential `id`, if there is one.
pub async fn credential(
    state: &AppState,
    user_id: i64,
    id: &CredentialId,
) -> AppResult<Option<credential::Model>> {
    Ok(credential::Entity::find()
        .filter(credential::Column::UserId.eq(user_id))
        .filter(credential::Column::CredentialId.eq(id.as_str()))
        .one(&state.db)
        .await?)
}

/// Deletes `user_id`'s credential `id`; false when there is none (or it is someone else's).
/// The key stops working at once: every request looks its key up in the database.
pub async fn delete_credential(
    state: &AppState,
    user_id: i64,
    id: &CredentialId,
) -> AppResult<bool> {
    let delete = credential::Entity::delete_many()
        .filter(credential::Column::UserId.eq(user_id))
        .filter(credential::Column::CredentialId.eq(id.as_str()));
    let db = state.db.clone();
    consistency::write_owned(state, user_id, async move {
        Ok(delete.exec(&db).await?.rows_affected > 0)
    })
    .await
}

/// Deletes every credential of `user_id` (the viewer's own request); returns how many were
/// removed.
pub async fn delete_every_credential(state: &AppState, user_id: i64) -> AppResult<u64> {
    let db = state.db.clone();
    consistency::write_owned(state, user_id, async move {
        delete_all_credentials(&db, user_id).await
    })
    .await
}

/// Deletes every credential of `user_id` on `conn` (inside the caller's write of the user's
/// own rows); returns how many were removed.
pub async fn delete_all_credentials(conn: &impl ConnectionTrait, user_id: i64) -> AppResult<u64> {
    let res = credential::Entity::delete_many()
        .filter(credential::Column::UserId.eq(user_id))
        .exec(conn)
        .await?;
    Ok(res.rows_affected)
}

fn malformed() -> AppError {
    AppError::Unauthenticated(
        "malformed Basic credentials: send base64(publicKey:secretKey)".into(),
    )
}

/// Whether `public_key` has the shape of every key [`create_credential`] makes: the prefix and
/// the URL-safe base64 of [`PUBLIC_KEY_BYTES`] random bytes. The shape is public, so refusing
/// any other without a hash tells nobody anything.
fn is_well_formed(public_key: &str) -> bool {
    public_key
        .strip_prefix(PUBLIC_KEY_PREFIX)
        .is_some_and(|rest| {
            rest.len() == (PUBLIC_KEY_BYTES * 4).div_ceil(3)
                && rest
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

/// The viewer behind `Authorization: Basic <value>`, `value` being
/// `base64(publicKey:secretKey)`, sent from `client`; `None` when the key is unknown,
/// deleted, rotated away or the secret is wrong.
///
/// A key whose secret this instance verified recently is accepted without a hash. Every other
/// check is counted against the client address first (refused with `RATE_LIMITED` past its
/// budget, see [`throttle`]). A key of the wrong shape is then refused without a hash; a
/// well-formed public key that does not exist costs one dummy verification, on the same
/// hashing threads as a real one, so that neither its time nor its place in the queue tells
/// it from a wrong secret.
pub async fn viewer_by_api_key(
    state: &AppState,
    client: ClientAddr,
    value: &str,
) -> AppResult<Option<Viewer>> {
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(value.trim())
        .ok()
        .and_then(|d| String::from_utf8(d).ok());
    let parsed = decoded
        .as_deref()
        .and_then(|d| d.split_once(':'))
        .filter(|(public_key, _)| is_well_formed(public_key));
    let found = match parsed {
        Some((public_key, _)) => credential::Entity::find()
            .filter(credential::Column::PublicKey.eq(public_key))
            .find_also_related(user::Entity)
            .one(&state.db)
            .await?
            .and_then(|(cred, owner)| Some((cred, owner?))),
        None => None,
    };
    if let (Some((_, secret)), Some((cred, owner))) = (parsed, &found) {
        if state
            .verified_secrets
            .verified(&cred.public_key, &cred.secret_hash, secret)
        {
            return Ok(Some(api_key_viewer(cred, owner)));
        }
    }
    let attempt = throttle::from_address(state, client).await?;
    let Some((public_key, secret)) = parsed else {
        return match decoded.as_deref().and_then(|d| d.split_once(':')) {
            None => Err(malformed()),
            Some(_) => {
                tracing::debug!("API key refused: not the shape of a public key");
                Ok(None)
            }
        };
    };
    let iterations = state.settings.pbkdf2_iterations;
    let Some((cred, owner)) = found else {
        let secret = secret.to_owned();
        state
            .hasher
            .run(move || crypto::burn_verification(&secret, iterations))
            .await?;
        tracing::debug!(public_key, "API key refused: unknown public key");
        return Ok(None);
    };
    let (candidate, salt, stored) = (
        secret.to_owned(),
        cred.salt.clone(),
        cred.secret_hash.clone(),
    );
    let verified = state
        .hasher
        .run(move || crypto::verify_secret(&candidate, &salt, &stored, iterations))
        .await?;
    if !verified.ok {
        tracing::debug!(public_key, "API key refused: wrong secret key");
        return Ok(None);
    }
    attempt.succeeded(state).await;
    state
        .verified_secrets
        .remember(&cred.public_key, &cred.secret_hash, secret);
    Ok(Some(api_key_viewer(&cred, &owner)))
}

fn api_key_viewer(cred: &credential::Model, owner: &user::Model) -> Viewer {
    tracing::debug!(
        public_key = cred.public_key,
        user_id = owner.id,
        "API key accepted"
    );
    Viewer {
        id: owner.id,
        username: owner.username.clone(),
        via: AuthMethod::ApiKey {
            public_key: cred.public_key.clone(),
        },
    }
}

/// Credentials go with their owner's account (in the same transaction).
pub struct CredentialAccountHook;

#[async_trait::async_trait]
impl crate::users::hooks::AccountHook for CredentialAccountHook {
    async fn delete_rows(&self, txn: &sea_orm::DatabaseTransaction, user_id: i64) -> AppResult<()> {
        delete_all_credentials(txn, user_id).await.map(drop)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_public_key_made_is_well_formed_and_other_shapes_are_not() {
        for _ in 0..100 {
            let key = format!(
                "{PUBLIC_KEY_PREFIX}{}",
                crypto::random_token(PUBLIC_KEY_BYTES)
            );
            assert!(is_well_formed(&key), "{key}");
        }
        for bad in [
            "",
            "ak_",
            "ak_madeup",
            "xk_abcdefghijklmnopqrstuvwx",
            "ak_abcdefghijklmnopqrstuv+x",
        ] {
            assert!(!is_well_formed(bad), "{bad}");
        }
    }
}
