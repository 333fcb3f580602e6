//! The rules of accounts and sessions. No GraphQL types here.

use chrono::{DateTime, Utc};
use entity::position::ShapeSql;
use entity::{session, user};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, EntityTrait, FromQueryResult, IdenStatic,
    QueryFilter, QueryTrait, Set, Statement, TransactionTrait,
};

use super::hooks::AccountHooks;
use super::throttle;
use super::types::{NewPassword, Username};
use crate::consistency;
use crate::crypto;
use crate::error::{is_unique_violation, AppError, AppResult};
use crate::state::AppState;
use crate::viewer::{AuthMethod, ClientAddr, Viewer};

/// Creates a user; the insert is one transaction, rolled back on any failure.
pub async fn create_user(
    state: &AppState,
    username: &str,
    password: &str,
) -> AppResult<user::Model> {
    let username = Username::parse(username)?;
    let password = NewPassword::parse("password", password)?;
    let iterations = state.settings.pbkdf2_iterations;
    let salt = crypto::new_salt();
    let hash = {
        let salt = salt.clone();
        state
            .hasher
            .run(move || crypto::hash_secret(password.expose(), &salt, iterations))
            .await?
    };
    let txn = state.db.begin().await?;
    let row = user::ActiveModel {
        username: Set(username.as_str().to_owned()),
        salt: Set(salt),
        password_hash: Set(hash),
        created_at: Set(Utc::now()),
        ..Default::default()
    }
    .insert(&txn)
    .await
    .map_err(|e| {
        if is_unique_violation(&e) {
            AppError::Conflict(format!("username `{}` is taken", username.as_str()))
        } else {
            e.into()
        }
    })?;
    txn.commit().await?;
    Ok(row)
}

/// Checks `password` for `username` in constant time, on the hashing threads; an unknown user
/// costs one verification too. Rehashes legacy or outdated hashes on success (when a hashing
/// thread is free: otherwise on a later login).
async fn check_password(
    state: &AppState,
    found: Option<user::Model>,
    password: &str,
) -> AppResult<Option<user::Model>> {
    let iterations = state.settings.pbkdf2_iterations;
    let password = password.to_owned();
    let Some(found) = found else {
        state
            .hasher
            .run(move || crypto::burn_verification(&password, iterations))
            .await?;
        return Ok(None);
    };
    let (salt, stored) = (found.salt.clone(), found.password_hash.clone());
    let (verified, password) = state
        .hasher
        .run(move || {
            let v = crypto::verify_secret(&password, &salt, &stored, iterations);
            (v, password)
        })
        .await?;
    if !verified.ok {
        return Ok(None);
    }
    if verified.needs_rehash {
        let salt = found.salt.clone();
        let rehashed = state
            .hasher
            .run(move || crypto::hash_secret(&password, &salt, iterations))
            .await;
        let Ok(hash) = rehashed else {
            tracing::debug!(user = found.id, "rehash put off: no hashing thread free");
            return Ok(Some(found));
        };
        // Not under the user's version (`consistency::write_owned`): no answer shows the hash.
        let mut active: user::ActiveModel = found.clone().into();
        active.password_hash = Set(hash);
        return Ok(Some(active.update(&state.db).await?));
    }
    Ok(Some(found))
}

/// A signed-in session and its plain token.
pub struct NewSession {
    /// The token to give the client.
    pub token: String,
    /// The session row.
    pub row: session::Model,
    /// The user.
    pub user: user::Model,
}

/// Logs in: throttled per client address and per account (slowed, then refused with
/// `RATE_LIMITED`, see [`throttle`]), then runs every domain's log-in hook (the battle ring is
/// restored from the session document), and only then opens the session.
pub async fn login(
    state: &AppState,
    hooks: &AccountHooks,
    client: ClientAddr,
    username: &str,
    password: &str,
) -> AppResult<NewSession> {
    let settings = &state.settings;
    let attempt = throttle::from_address(state, client).await?;
    let found = user::Entity::find()
        .filter(user::Column::Username.eq(username))
        .one(&state.db)
        .await?;
    let attempt = match &found {
        Some(account) => attempt.against_account(state, &account.username).await?,
        None => attempt,
    };
    let Some(user) = check_password(state, found, password).await? else {
        return Err(AppError::Unauthenticated(
            "wrong username or password".into(),
        ));
    };
    attempt.succeeded(state).await;
    for hook in hooks.iter() {
        hook.logged_in(state, user.id).await?;
    }
    let token = crypto::random_token(32);
    let now = Utc::now();
    let ttl = chrono::Duration::seconds(settings.session_ttl_secs as i64);
    let row = session::ActiveModel {
        token_hash: Set(crypto::sha256_hex(&token)),
        user_id: Set(user.id),
        created_at: Set(now),
        expires_at: Set(now + ttl),
    }
    .insert(&state.db)
    .await?;
    Ok(NewSession { token, row, user })
}

/// The viewer behind a bearer token, if the session exists and has not expired.
pub async fn viewer_by_session(
    state: &AppState,
    token: &str,
) -> AppResult<Option<(Viewer, DateTime<Utc>)>> {
    // The statement's text, built once: sea-query took more to write it than the database to
    // run it (on SQLite, where every authenticated request looks its session up).
    static SESSION_SQL: ShapeSql = ShapeSql::new();
    let token_hash = crypto::sha256_hex(token);
    let backend = state.db.get_database_backend();
    let values = vec![sea_orm::Value::from(token_hash.clone())];
    let sql = SESSION_SQL.text(backend, &values, || {
        // The session and its user in one statement.
        session::Entity::find_by_id(token_hash.clone())
            .find_also_related(user::Entity)
            .build(backend)
    });
    let row = state
        .db
        .query_one(Statement::from_sql_and_values(backend, sql, values))
        .await?;
    let Some(row) = row else {
        return Ok(None);
    };
    let s = session::Model::from_query_result(&row, sea_orm::SelectA.as_str())?;
    let u = user::Model::from_query_result_optional(&row, sea_orm::SelectB.as_str())?;
    if s.expires_at <= Utc::now() {
        // Tidying up only: an expired session is refused by its time, deleted or not.
        let db = state.db.clone();
        let gone = consistency::write_owned(state, s.user_id, async move {
            session::Entity::delete_by_id(token_hash).exec(&db).await?;
            Ok(())
        })
        .await;
        if let Err(e) = gone {
            tracing::debug!(error = ?e, "an expired session was left for later");
        }
        return Ok(None);
    }
    let Some(u) = u else {
        return Ok(None);
    };
    let viewer = Viewer {
        id: u.id,
        username: u.username,
        via: AuthMethod::Session { token_hash },
    };
    Ok(Some((viewer, s.expires_at)))
}

/// Log out: runs every domain's log-out hook (the battle ring is saved to the session
/// document), then revokes the token at once.
pub async fn logout(state: &AppState, hooks: &AccountHooks, viewer: &Viewer) -> AppResult<bool> {
    let AuthMethod::Session { token_hash } = &viewer.via else {
        return Err(AppError::bad_input(
            "logout ends a session; this request used an API key",
        ));
    };
    for hook in hooks.iter() {
        hook.logging_out(state, viewer.id).await?;
    }
    let (db, token_hash) = (state.db.clone(), token_hash.clone());
    consistency::write_owned(state, viewer.id, async move {
        let res = session::Entity::delete_by_id(token_hash).exec(&db).await?;
        Ok(res.rows_affected > 0)
    })
    .await
}

/// Loads the viewer's row.
async fn viewer_row(state: &AppState, viewer: &Viewer) -> AppResult<user::Model> {
    user::Entity::find_by_id(viewer.id)
        .one(&state.db)
        .await?
        .ok_or_else(|| AppError::Unauthenticated("the account no longer exists".into()))
}

/// Changes the viewer's password and revokes every other session of theirs.
pub async fn change_password(
    state: &AppState,
    viewer: &Viewer,
    client: ClientAddr,
    current: &str,
    new: &str,
) -> AppResult<bool> {
    let new = NewPassword::parse("newPassword", new)?;
    let row = viewer_row(state, viewer).await?;
    // A stolen token must not buy unlimited guesses at the password.
    let attempt = throttle::from_address(state, client)
        .await?
        .against_account(state, &row.username)
        .await?;
    let Some(row) = check_password(state, Some(row), current).await? else {
        return Err(AppError::invalid("currentPassword", "is wrong"));
    };
    attempt.succeeded(state).await;
    let iterations = state.settings.pbkdf2_iterations;
    let salt = crypto::new_salt();
    let hash = {
        let salt = salt.clone();
        state
            .hasher
            .run(move || crypto::hash_secret(new.expose(), &salt, iterations))
            .await?
    };
    let mut others = session::Entity::delete_many().filter(session::Column::UserId.eq(viewer.id));
    if let AuthMethod::Session { token_hash } = &viewer.via {
        others = others.filter(session::Column::TokenHash.ne(token_hash.clone()));
    }
    let db = state.db.clone();
    consistency::write_owned(state, viewer.id, async move {
        let txn = db.begin().await?;
        let mut active: user::ActiveModel = row.into();
        active.salt = Set(salt);
        active.password_hash = Set(hash);
        active.update(&txn).await?;
        others.exec(&txn).await?;
        txn.commit().await?;
        Ok(true)
    })
    .await
}

/// Deletes the viewer's account and sessions, and every domain's data of theirs (their rows in
/// the same transaction, the rest once it committed), after checking the password.
pub async fn delete_user(
    state: &AppState,
    hooks: &AccountHooks,
    viewer: &Viewer,
    client: ClientAddr,
    password: &str,
) -> AppResult<bool> {
    let row = viewer_row(state, viewer).await?;
    let attempt = throttle::from_address(state, client)
        .await?
        .against_account(state, &row.username)
        .await?;
    if check_password(state, Some(row), password).await?.is_none() {
        return Err(AppError::invalid("password", "is wrong"));
    }
    attempt.succeeded(state).await;
    let (db, owned_hooks, user_id) = (state.db.clone(), hooks.clone(), viewer.id);
    consistency::write_owned(state, viewer.id, async move {
        let txn = db.begin().await?;
        session::Entity::delete_many()
            .filter(session::Column::UserId.eq(user_id))
            .exec(&txn)
            .await?;
        for hook in owned_hooks.iter() {
            hook.delete_rows(&txn, user_id).await?;
        }
        user::Entity::delete_by_id(user_id).exec(&txn).await?;
        txn.commit().await?;
        Ok(())
    })
    .await?;
    for hook in hooks.iter() {
        if let Err(e) = hook.forget(state, viewer.id).await {
            tracing::warn!(error = ?e, user = viewer.id, "a deleted account's data was left behind");
        }
    }
    Ok(true)
}

/// The viewer's account.
pub async fn me(state: &AppState, viewer: &Viewer) -> AppResult<user::Model> {
    viewer_row(state, viewer).await
}
