//! [`KeyValue`] on Redis: plain values, counters, sets and leases-free keys, each one round
//! trip.

use std::time::Duration;

use async_trait::async_trait;
use fred::interfaces::{ClientLike, KeysInterface, SetsInterface};
use fred::prelude::{Expiration, SetOptions, Value};

use super::{integer, millis, opt_string, RedisCache};
use crate::backends::cache::{CacheResult, KeyValue};
use crate::backends::redis_client::map_err;

#[async_trait]
impl KeyValue for RedisCache {
    fn kind(&self) -> &'static str {
        "redis"
    }

    async fn ping(&self) -> CacheResult<()> {
        self.conn.ping_all().await
    }

    async fn get(&self, key: &str) -> CacheResult<Option<String>> {
        let v: Value = self
            .conn
            .pool()
            .with_options(self.conn.options())
            .get(self.keys.key(key))
            .await
            .map_err(map_err)?;
        opt_string(v)
    }

    async fn set(&self, key: &str, value: &str, ttl: Option<Duration>) -> CacheResult<()> {
        self.conn
            .pool()
            .with_options(self.conn.options())
            .set::<Value, _, _>(
                self.keys.key(key),
                value,
                ttl.map(|t| Expiration::PX(millis(t))),
                None,
                false,
            )
            .await
            .map(drop)
            .map_err(map_err)
    }

    async fn set_many(
        &self,
        entries: &[(String, String)],
        ttl: Option<Duration>,
    ) -> CacheResult<()> {
        // One pipeline of SETs: works unchanged on a cluster, where MSET would need every
        // key in one slot, and carries the expiry in the same command.
        let calls = entries
            .iter()
            .map(|(k, v)| {
                let mut args = vec![Value::from(self.keys.key(k)), Value::from(v.as_str())];
                if let Some(ttl) = ttl {
                    args.push("PX".into());
                    args.push(Value::Integer(millis(ttl)));
                }
                args
            })
            .collect();
        for reply in self.conn.send("SET", 0, calls).await {
            reply.map_err(map_err)?;
        }
        Ok(())
    }

    async fn set_nx(&self, key: &str, value: &str, ttl: Duration) -> CacheResult<bool> {
        let reply: Value = self
            .conn
            .pool()
            .with_options(self.conn.options())
            .set(
                self.keys.key(key),
                value,
                Some(Expiration::PX(millis(ttl))),
                Some(SetOptions::NX),
                false,
            )
            .await
            .map_err(map_err)?;
        Ok(!reply.is_null())
    }

    async fn del_if_equals(&self, key: &str, value: &str) -> CacheResult<bool> {
        let reply = self
            .conn
            .eval_one(
                &self.scripts.del_if_equals,
                vec![self.keys.key(key)],
                vec![value.into()],
            )
            .await?;
        Ok(integer(reply)? > 0)
    }

    async fn del(&self, keys: &[String]) -> CacheResult<u64> {
        let stored: Vec<String> = keys.iter().map(|k| self.keys.key(k)).collect();
        self.del_stored(&stored).await
    }

    async fn incr_by(&self, key: &str, by: i64) -> CacheResult<i64> {
        self.conn
            .pool()
            .with_options(self.conn.options())
            .incr_by(self.keys.key(key), by)
            .await
            .map_err(map_err)
    }

    async fn raise_many(&self, counters: &[(String, i64)]) -> CacheResult<()> {
        if counters.is_empty() {
            return Ok(());
        }
        let stored: Vec<String> = counters.iter().map(|(k, _)| self.keys.key(k)).collect();
        self.eval_grouped(&self.scripts.raise, &stored, |g| {
            let keys = g.iter().map(|&i| stored[i].clone()).collect();
            let args = g.iter().map(|&i| Value::Integer(counters[i].1)).collect();
            (keys, args)
        })
        .await
        .map(drop)
    }

    async fn incr_with_ttl(&self, key: &str, ttl: Duration) -> CacheResult<i64> {
        let reply = self
            .conn
            .eval_one(
                &self.scripts.incr_with_ttl,
                vec![self.keys.key(key)],
                vec![Value::Integer(millis(ttl))],
            )
            .await?;
        integer(reply)
    }

    async fn sadd(&self, key: &str, member: &str) -> CacheResult<bool> {
        let added: i64 = self
            .conn
            .pool()
            .with_options(self.conn.options())
            .sadd(self.keys.key(key), member)
            .await
            .map_err(map_err)?;
        Ok(added > 0)
    }

    async fn smembers(&self, key: &str) -> CacheResult<Vec<String>> {
        let mut members: Vec<String> = self
            .conn
            .pool()
            .with_options(self.conn.options())
            .smembers(self.keys.key(key))
            .await
            .map_err(map_err)?;
        members.sort();
        Ok(members)
    }

    async fn scan_prefix(&self, prefix: &str) -> CacheResult<Vec<String>> {
        let found = self.scan_stored(self.keys.scan_pattern(prefix)).await?;
        let mut out: Vec<String> = found
            .iter()
            .filter_map(|k| self.keys.unkey(k))
            .filter(|k| k.starts_with(prefix))
            .collect();
        out.sort();
        out.dedup();
        Ok(out)
    }
}
