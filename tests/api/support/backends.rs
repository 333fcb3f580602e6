//! Which backends a test app runs on, and where their servers are: the `TEST_*_URL`
//! variables, or else the usual local address when something answers there.

use std::net::{SocketAddr, TcpStream};
use std::sync::OnceLock;
use std::time::Duration;

use super::report;

/// Which backends a test app runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backends {
    /// SQLite file, in-process cache, SQL documents, local events.
    Embedded,
    /// PostgreSQL and Redis; documents in MongoDB when one is found, else in PostgreSQL.
    Real,
    /// PostgreSQL and a three-node Redis Cluster; documents as for [`Backends::Real`].
    RealCluster,
}

impl Backends {
    /// The servers these backends need and that were not found, in one sentence; `None`
    /// when every one was.
    pub fn missing(self) -> Option<String> {
        let s = servers();
        let needed: &[&Server] = match self {
            Backends::Embedded => &[],
            Backends::Real => &[&s.database, &s.redis],
            Backends::RealCluster => &[&s.database, &s.redis_cluster],
        };
        let why: Vec<&str> = needed
            .iter()
            .filter_map(|s| s.found.as_ref().err())
            .map(String::as_str)
            .collect();
        (!why.is_empty()).then(|| why.join("; "))
    }
}

/// A server the real backends use.
pub struct Server {
    /// Its URL, or why there is none.
    found: Result<String, String>,
}

impl Server {
    /// `var` when set (an empty value leaves the server out), else `local` when every
    /// address of `probe` accepts a TCP connection within 250 ms.
    fn find(what: &str, var: &str, local: &str, probe: &[&str]) -> Server {
        let found = match std::env::var(var) {
            Ok(url) if url.is_empty() => Err(format!("{what} left out ({var} is empty)")),
            Ok(url) => Ok(url),
            Err(_) if probe.iter().all(|addr| answers(addr)) => Ok(local.to_owned()),
            Err(_) => Err(format!(
                "{what} not found ({var} is not set and nothing answers on {})",
                probe.join(", ")
            )),
        };
        Server { found }
    }

    /// Its URL, if it was found.
    pub fn url(&self) -> Option<&str> {
        self.found.as_deref().ok()
    }

    /// Its URL; `None` when it was not found, the running case then recorded as not run
    /// ([`report::skipped`]; a failure in CI).
    pub fn or_skip(&self) -> Option<&str> {
        match &self.found {
            Ok(url) => Some(url),
            Err(why) => {
                report::skipped(why);
                None
            }
        }
    }
}

/// Every server the real backends may use, looked for once per process.
pub struct Servers {
    /// PostgreSQL, where each test creates a database of its own: `TEST_DATABASE_URL`, or
    /// `postgres://postgres@127.0.0.1:5432/test`.
    pub database: Server,
    /// Redis: `TEST_REDIS_URL`, or `redis://127.0.0.1:6379`.
    pub redis: Server,
    /// A Redis Cluster: `TEST_REDIS_CLUSTER_URL`, or the three nodes
    /// `.ci/start-redis-cluster.sh` starts by default (127.0.0.1:7101–7103).
    pub redis_cluster: Server,
    /// MongoDB, for the documents of the real backends: `TEST_MONGODB_URL`, or
    /// `mongodb://127.0.0.1:27017`.
    pub mongodb: Server,
}

/// The servers, looked for on the first call.
pub fn servers() -> &'static Servers {
    static SERVERS: OnceLock<Servers> = OnceLock::new();
    SERVERS.get_or_init(|| {
        report::summarize_at_exit();
        Servers {
            database: Server::find(
                "PostgreSQL",
                "TEST_DATABASE_URL",
                "postgres://postgres@127.0.0.1:5432/test",
                &["127.0.0.1:5432"],
            ),
            redis: Server::find(
                "Redis",
                "TEST_REDIS_URL",
                "redis://127.0.0.1:6379",
                &["127.0.0.1:6379"],
            ),
            redis_cluster: Server::find(
                "Redis Cluster",
                "TEST_REDIS_CLUSTER_URL",
                "redis-cluster://127.0.0.1:7101?node=127.0.0.1:7102&node=127.0.0.1:7103",
                &["127.0.0.1:7101", "127.0.0.1:7102", "127.0.0.1:7103"],
            ),
            mongodb: Server::find(
                "MongoDB",
                "TEST_MONGODB_URL",
                "mongodb://127.0.0.1:27017",
                &["127.0.0.1:27017"],
            ),
        }
    })
}

/// Whether something accepts a TCP connection on `addr` within 250 ms.
fn answers(addr: &str) -> bool {
    let addr: SocketAddr = addr.parse().expect("a socket address");
    TcpStream::connect_timeout(&addr, Duration::from_millis(250)).is_ok()
}
