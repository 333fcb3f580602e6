//! Command line and configuration: every setting is a flag with an environment variable.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// Arena: a GraphQL API server whose write-through cache is never wrong.
///
/// With no settings it runs on embedded backends (a SQLite file, an in-process cache, the
/// document store in SQLite, in-process events). Set DATABASE_URL, REDIS_URL and MONGODB_URL
/// to run on PostgreSQL, Redis and MongoDB.
#[derive(Debug, Parser)]
#[command(name = "arena", version, about, long_about)]
pub struct Cli {
    /// What to do; `serve` when omitted.
    #[command(subcommand)]
    pub command: Option<Command>,
    /// Settings shared by every command.
    #[command(flatten)]
    pub settings: Settings,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve GraphQL over HTTP and WebSocket (the default). Runs pending migrations first.
    Serve,
    /// Apply pending database migrations and exit.
    Migrate,
    /// Print the GraphQL schema (SDL) to stdout, or write it to --out.
    ExportSchema {
        /// Write the SDL to this file instead of stdout.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Insert sample data (meals, trainers, Pokémon) so a new user has something to play with.
    Seed,
    /// Run only the cache → document store sync worker.
    Sync,
    /// Register GraphQL documents as persisted queries, for good (the allow-list that
    /// ARENA_PERSISTED_ONLY=true runs from). Each file holds one document, or is an Apollo
    /// persisted-query manifest (JSON with `operations: [{ body }]`). Prints each hash.
    RegisterQueries {
        /// The files to register.
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Start a fresh cache namespace for the current database, so that no cache entry written
    /// before is ever served again (run it after restoring the database from a backup, with
    /// every Arena stopped).
    CacheReset,
}

/// What a write to a cached entity does when the cache tier cannot be told of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Consistency {
    /// The write is refused (`UNAVAILABLE`) and nothing is committed: an acknowledged write
    /// is never hidden from a read that starts after it, on any replica.
    Strict,
    /// The write commits from the database alone; another replica may serve the older entry
    /// until this instance reaches the cache again or the entry expires.
    Available,
}

/// Every setting of Arena.
#[derive(Debug, Clone, Args)]
pub struct Settings {
    /// Address to listen on (port 0 picks a free port).
    #[arg(
        long,
        env = "ARENA_ADDR",
        default_value = "127.0.0.1:8000",
        global = true
    )]
    pub addr: SocketAddr,

    /// SQL database: `sqlite://arena.db?mode=rwc` (embedded) or `postgres://…`.
    #[arg(
        long,
        env = "DATABASE_URL",
        default_value = "sqlite://arena.db?mode=rwc",
        global = true
    )]
    pub database_url: String,

    /// Most connections to the SQL database. On PostgreSQL half of them are kept outside the
    /// pool for the hottest single statements (lists, `updateMeal`).
    #[arg(long, env = "ARENA_DB_POOL", default_value_t = 16, global = true)]
    pub db_pool: u32,

    /// Redis (`redis://…`) or Redis Cluster (`redis-cluster://…`); the in-process cache and
    /// events when unset.
    #[arg(long, env = "REDIS_URL", global = true)]
    pub redis_url: Option<String>,

    /// A Redis of its own for the key-value storage (`storageSet` / `storageGet`), run with
    /// `maxmemory` and `maxmemory-policy allkeys-lru`; the cache tier when unset.
    #[arg(long, env = "ARENA_STORAGE_REDIS_URL", global = true)]
    pub storage_redis_url: Option<String>,

    /// MongoDB (`mongodb://…`) for documents; a table in the SQL database when unset.
    #[arg(long, env = "MONGODB_URL", global = true)]
    pub mongodb_url: Option<String>,

    /// MongoDB database name.
    #[arg(
        long,
        env = "ARENA_MONGODB_DATABASE",
        default_value = "arena",
        global = true
    )]
    pub mongodb_database: String,

    /// Prefix of every cache key and event channel (replicas of one deployment share it).
    #[arg(
        long,
        env = "ARENA_CACHE_PREFIX",
        default_value = "arena:",
        global = true
    )]
    pub cache_prefix: String,

    /// Embedded: cached rows the in-process cache holds before evicting the least recently
    /// used, and (in an LRU of its own) key-value storage values over every user.
    #[arg(
        long,
        env = "ARENA_CACHE_CAPACITY",
        default_value_t = 100_000,
        global = true
    )]
    pub cache_capacity: u64,

    /// With Redis: entries each replica keeps in process and serves without a round trip
    /// while it holds a near lease; every write waits until each holder has dropped its keys
    /// (docs/cache-consistency.md, "Near caches"). 0 turns the near cache off.
    #[arg(
        long,
        env = "ARENA_NEAR_CACHE",
        default_value_t = 10_000,
        global = true
    )]
    pub near_cache_entries: usize,

    /// `strict`: a write to a cached entity is acknowledged only once its invalidation reached
    /// the cache tier, and refused with `UNAVAILABLE` otherwise. `available`: such writes
    /// commit anyway, and other replicas may serve the older entry for a bounded time (see
    /// docs/cache-consistency.md).
    #[arg(
        long,
        env = "ARENA_CONSISTENCY",
        value_enum,
        default_value_t = Consistency::Strict,
        global = true
    )]
    pub consistency: Consistency,

    /// Keys the key-value storage keeps per user; beyond it the user's least recently read or
    /// written key is evicted.
    #[arg(
        long,
        env = "ARENA_STORAGE_CAPACITY",
        default_value_t = 1_000,
        value_parser = clap::value_parser!(u64).range(1..),
        global = true
    )]
    pub storage_capacity: u64,

    /// Seconds a cached entity lives.
    #[arg(long, env = "ARENA_CACHE_TTL", default_value_t = 3600, global = true)]
    pub cache_ttl_secs: u64,

    /// Milliseconds a Redis command may take before Arena falls back to the database.
    #[arg(
        long,
        env = "ARENA_REDIS_TIMEOUT_MS",
        default_value_t = 250,
        global = true
    )]
    pub redis_timeout_ms: u64,

    /// Replicas of a Redis primary that must confirm a write's marks (WAIT) before the write
    /// commits. With replicas (Cluster or Sentinel) set 1: a failover then cannot promote a
    /// replica that lacks them and serve the entry from before the write. 0 waits for none.
    #[arg(long, env = "ARENA_REDIS_REPLICAS", default_value_t = 0, global = true)]
    pub redis_replicas: u32,

    /// Seconds a session lives.
    #[arg(
        long,
        env = "ARENA_SESSION_TTL",
        default_value_t = 86_400,
        global = true
    )]
    pub session_ttl_secs: u64,

    /// PBKDF2-HMAC-SHA256 iterations for new password and secret hashes.
    #[arg(
        long,
        env = "ARENA_PBKDF2_ITERATIONS",
        default_value_t = 600_000,
        global = true
    )]
    pub pbkdf2_iterations: u32,

    /// Failed logins of one username after which logins are refused for the lockout window.
    #[arg(
        long,
        env = "ARENA_LOGIN_MAX_FAILURES",
        default_value_t = 5,
        global = true
    )]
    pub login_max_failures: u32,

    /// Seconds the failed-login window (and lockout) lasts.
    #[arg(
        long,
        env = "ARENA_LOGIN_LOCKOUT",
        default_value_t = 300,
        global = true
    )]
    pub login_lockout_secs: u64,

    /// Failed password and API-key checks from one client address (an IPv6 address counts
    /// by its /64 network) within the lockout window, after which that address's checks are
    /// refused with `RATE_LIMITED`.
    #[arg(
        long,
        env = "ARENA_ADDRESS_MAX_FAILURES",
        default_value_t = 20,
        global = true
    )]
    pub address_max_failures: u32,

    /// Milliseconds a refusal of a client address over its budget waits before it is
    /// answered, so that a client looping on refusals cannot make a flood of them.
    #[arg(
        long,
        env = "ARENA_THROTTLE_DELAY_MS",
        default_value_t = 1_000,
        global = true
    )]
    pub throttle_delay_ms: u64,

    /// Proxies (comma-separated addresses or CIDR networks) whose `X-Forwarded-For` header
    /// names the client; the socket's peer address is the client otherwise.
    #[arg(
        long,
        env = "ARENA_TRUSTED_PROXIES",
        value_delimiter = ',',
        value_parser = parse_network,
        global = true
    )]
    pub trusted_proxies: Vec<ipnet::IpNet>,

    /// Threads that hash passwords and API secrets (0: one per core); no more hashes than
    /// this run at once, at the lowest CPU priority.
    #[arg(long, env = "ARENA_HASH_THREADS", default_value_t = 0, global = true)]
    pub hash_threads: usize,

    /// Hashes that may wait for a hashing thread; one more is refused with `RATE_LIMITED` at
    /// once.
    #[arg(long, env = "ARENA_HASH_QUEUE", default_value_t = 32, global = true)]
    pub hash_queue: usize,

    /// Deepest query accepted.
    #[arg(long, env = "ARENA_MAX_DEPTH", default_value_t = 12, global = true)]
    pub max_depth: usize,

    /// Highest query complexity accepted.
    #[arg(
        long,
        env = "ARENA_MAX_COMPLEXITY",
        default_value_t = 2_000,
        global = true
    )]
    pub max_complexity: usize,

    /// Most root fields (aliases included) in one operation.
    #[arg(
        long,
        env = "ARENA_MAX_ROOT_FIELDS",
        default_value_t = 50,
        global = true
    )]
    pub max_root_fields: usize,

    /// Most operations in one batched request.
    #[arg(long, env = "ARENA_MAX_BATCH", default_value_t = 10, global = true)]
    pub max_batch: usize,

    /// Largest JSON request body, in bytes.
    #[arg(long, env = "ARENA_MAX_BODY_BYTES", default_value_t = 1 << 20, global = true)]
    pub max_body_bytes: usize,

    /// Largest uploaded file, in bytes.
    #[arg(long, env = "ARENA_MAX_UPLOAD_BYTES", default_value_t = 64 << 20, global = true)]
    pub max_upload_bytes: usize,

    /// Largest page (`first`) of any connection.
    #[arg(
        long,
        env = "ARENA_MAX_PAGE_SIZE",
        default_value_t = 100,
        global = true
    )]
    pub max_page_size: usize,

    /// Milliseconds one request may run.
    #[arg(
        long,
        env = "ARENA_REQUEST_TIMEOUT_MS",
        default_value_t = 30_000,
        global = true
    )]
    pub request_timeout_ms: u64,

    /// Milliseconds a WebSocket may stay open without `connection_init` before it is closed
    /// (4408).
    #[arg(
        long,
        env = "ARENA_WS_INIT_TIMEOUT_MS",
        default_value_t = 3_000,
        global = true
    )]
    pub ws_init_timeout_ms: u64,

    /// Operations one WebSocket may have running at once; a `subscribe` over it gets an
    /// `error` (`RATE_LIMITED`) and the others go on.
    #[arg(
        long,
        env = "ARENA_WS_MAX_OPERATIONS",
        default_value_t = 100,
        global = true
    )]
    pub ws_max_operations: usize,

    /// WebSocket connections open at once; upgrades beyond it get 503.
    #[arg(
        long,
        env = "ARENA_WS_MAX_CONNECTIONS",
        default_value_t = 10_000,
        global = true
    )]
    pub ws_max_connections: usize,

    /// Of those, connections without a verified credential (waiting for `connection_init`,
    /// or acknowledged without `authorization`); upgrades beyond it get 503.
    #[arg(
        long,
        env = "ARENA_WS_MAX_UNAUTHENTICATED",
        default_value_t = 1_000,
        global = true
    )]
    pub ws_max_unauthenticated: usize,

    /// Base URL GraphiQL loads its assets from, laid out like an npm CDN
    /// (`<base>/<package>@<version>/<file>`): the public CDN, or a mirror of your own.
    #[arg(
        long,
        env = "ARENA_GRAPHIQL_ASSETS",
        default_value = "https://unpkg.com",
        global = true
    )]
    pub graphiql_assets: String,

    /// Seconds a prepped combatant's data is trusted before `battle` re-fetches it.
    #[arg(long, env = "ARENA_COMBATANT_TTL", default_value_t = 60, global = true)]
    pub combatant_ttl_secs: u64,

    /// Seed for every random draw (battles, dice), for reproducible runs.
    #[arg(long, env = "ARENA_RANDOM_SEED", global = true)]
    pub random_seed: Option<u64>,

    /// Seconds between two runs of the cache → document store sync.
    #[arg(
        long,
        env = "ARENA_SYNC_INTERVAL",
        default_value_t = 3600,
        global = true
    )]
    pub sync_interval_secs: u64,

    /// Run the sync worker inside `serve`.
    #[arg(long, env = "ARENA_SYNC_ENABLED", default_value_t = true, global = true, action = clap::ArgAction::Set)]
    pub sync_enabled: bool,

    /// Parsed documents kept in memory (each parsed once, then reused by every request that
    /// sends the same text or persisted-query hash).
    #[arg(
        long,
        env = "ARENA_DOCUMENT_CACHE",
        default_value_t = 1_000,
        global = true
    )]
    pub document_cache_entries: usize,

    /// Bytes of document text the parsed-document cache holds at most (a parse takes a small
    /// multiple of its text); longer documents are parsed on every request.
    #[arg(
        long,
        env = "ARENA_DOCUMENT_CACHE_BYTES",
        default_value_t = 4 << 20,
        global = true
    )]
    pub document_cache_bytes: usize,

    /// Responses of pure queries (ones that read only cached entries and lists) kept in
    /// memory, each served again while the entries and list versions it read are unchanged;
    /// 0 turns the memo off.
    #[arg(
        long,
        env = "ARENA_RESPONSE_MEMO",
        default_value_t = 10_000,
        global = true
    )]
    pub response_memo_entries: usize,

    /// Bytes of memoized responses kept at most.
    #[arg(
        long,
        env = "ARENA_RESPONSE_MEMO_BYTES",
        default_value_t = 32 << 20,
        global = true
    )]
    pub response_memo_bytes: usize,

    /// Seconds a document registered by a client (automatic persisted queries) stays
    /// registered in the cache tier.
    #[arg(
        long,
        env = "ARENA_PERSISTED_TTL",
        default_value_t = 7 * 86_400,
        global = true
    )]
    pub persisted_ttl_secs: u64,

    /// Run only documents registered with `arena register-queries` (an allow-list): every
    /// other document is refused, and clients register nothing.
    #[arg(long, env = "ARENA_PERSISTED_ONLY", default_value_t = false, global = true, action = clap::ArgAction::Set)]
    pub persisted_only: bool,

    /// Origins allowed to call the API from a browser (CORS): `*` for any, or a
    /// comma-separated list such as `https://app.example.com`; empty for none.
    #[arg(long, env = "ARENA_CORS_ORIGINS", default_value = "*", global = true)]
    pub cors_origins: String,

    /// A tracing span for every resolved field (async-graphql's tracing extension). It costs
    /// time on every field; spans per request are always there.
    #[arg(long, env = "ARENA_TRACE_RESOLVERS", default_value_t = false, global = true, action = clap::ArgAction::Set)]
    pub trace_resolvers: bool,

    /// Log filter (tracing `EnvFilter` syntax).
    #[arg(long, env = "ARENA_LOG", default_value = "info", global = true)]
    pub log: String,

    /// Log as JSON lines instead of text.
    #[arg(long, env = "ARENA_LOG_JSON", default_value_t = false, global = true)]
    pub log_json: bool,
}

/// An address (`10.0.0.1`, a network of one) or a CIDR network (`10.0.0.0/8`).
fn parse_network(s: &str) -> Result<ipnet::IpNet, String> {
    let s = s.trim();
    s.parse::<ipnet::IpNet>()
        .or_else(|_| s.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
        .map_err(|_| format!("`{s}` is neither an IP address nor a CIDR network"))
}

impl Settings {
    /// The settings with every default, as `arena` without flags or environment would use.
    pub fn defaults() -> Self {
        use clap::{CommandFactory, FromArgMatches};
        // Every argument without its environment variable: the defaults are the defaults,
        // whatever the shell running the tests (or the export) has set.
        let command = Cli::command().mut_args(|arg| arg.env(None));
        let matches = command
            .try_get_matches_from(["arena"])
            .expect("every setting has a default");
        Cli::from_arg_matches(&matches)
            .expect("the defaults parse")
            .settings
    }

    /// How long a cached entity lives.
    pub fn cache_ttl(&self) -> Duration {
        Duration::from_secs(self.cache_ttl_secs)
    }

    /// How many threads hash passwords and secrets: `ARENA_HASH_THREADS`, or one per core.
    pub fn hash_threads(&self) -> usize {
        if self.hash_threads > 0 {
            return self.hash_threads;
        }
        std::thread::available_parallelism().map_or(1, |n| n.get())
    }

    /// How long one request may run.
    pub fn request_timeout(&self) -> Duration {
        Duration::from_millis(self.request_timeout_ms)
    }

    /// How long a WebSocket may wait before sending `connection_init`.
    pub fn ws_init_timeout(&self) -> Duration {
        Duration::from_millis(self.ws_init_timeout_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_defaults_ignore_the_environment() {
        // A variable no other test of this binary reads; `defaults` used to pick it up.
        std::env::set_var("ARENA_MAX_BATCH", "3");
        let defaults = Settings::defaults();
        std::env::remove_var("ARENA_MAX_BATCH");
        assert_eq!(defaults.max_batch, 10);
    }

    #[test]
    fn the_command_line_still_reads_the_environment() {
        std::env::set_var("ARENA_MAX_ROOT_FIELDS", "7");
        let cli = Cli::parse_from(["arena"]);
        std::env::remove_var("ARENA_MAX_ROOT_FIELDS");
        assert_eq!(cli.settings.max_root_fields, 7);
    }
}
