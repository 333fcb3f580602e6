//! The Lua scripts of the Redis cache, kept as `.lua` files beside this one. The scripts of
//! the write-through protocol share `prelude.lua` (`marked`, `holds_as_new`), prepended when
//! they are loaded.

use fred::interfaces::LuaInterface;

use super::connection::Connection;
use crate::backends::cache::CacheResult;
use crate::backends::redis_client::map_err;

const PRELUDE: &str = include_str!("lua/prelude.lua");

/// A Lua script and its SHA1, as reported by `SCRIPT LOAD` at connect.
pub struct Script {
    /// The whole source sent to Redis.
    pub body: String,
    /// Its SHA1, for `EVALSHA`.
    pub sha: String,
}

/// Every script the cache runs.
pub struct Scripts {
    /// `leased_get.lua`
    pub leased_get: Script,
    /// `leased_fill.lua`
    pub leased_fill: Script,
    /// `begin_write.lua`
    pub begin_write: Script,
    /// `end_write.lua`
    pub end_write: Script,
    /// `incr_with_ttl.lua`
    pub incr_with_ttl: Script,
    /// `del_if_equals.lua`
    pub del_if_equals: Script,
    /// `storage_get.lua`
    pub storage_get: Script,
    /// `storage_put.lua`
    pub storage_put: Script,
    /// `raise.lua`
    pub raise: Script,
}

impl Scripts {
    /// Loads every script (`SCRIPT LOAD`; on a cluster, on every primary).
    pub async fn load(conn: &Connection) -> CacheResult<Scripts> {
        let protocol = |body: &str| format!("{PRELUDE}\n{body}");
        let (leased_get, leased_fill, begin_write, end_write) = futures::try_join!(
            load(conn, protocol(include_str!("lua/leased_get.lua"))),
            load(conn, protocol(include_str!("lua/leased_fill.lua"))),
            load(conn, protocol(include_str!("lua/begin_write.lua"))),
            load(conn, protocol(include_str!("lua/end_write.lua"))),
        )?;
        let (incr_with_ttl, del_if_equals, storage_get, storage_put, raise) = futures::try_join!(
            load(conn, include_str!("lua/incr_with_ttl.lua").to_owned()),
            load(conn, include_str!("lua/del_if_equals.lua").to_owned()),
            load(conn, include_str!("lua/storage_get.lua").to_owned()),
            load(conn, include_str!("lua/storage_put.lua").to_owned()),
            load(conn, include_str!("lua/raise.lua").to_owned()),
        )?;
        Ok(Scripts {
            leased_get,
            leased_fill,
            begin_write,
            end_write,
            incr_with_ttl,
            del_if_equals,
            storage_get,
            storage_put,
            raise,
        })
    }
}

pub async fn load(conn: &Connection, body: String) -> CacheResult<Script> {
    let sha: String = conn
        .pool()
        .script_load(body.as_str())
        .await
        .map_err(map_err)?;
    Ok(Script { body, sha })
}
