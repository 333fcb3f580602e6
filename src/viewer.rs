//! Who is asking: the [`Viewer`] of a request, found lazily (at most once per request) from
//! its credential by an [`Authenticator`], and where from: the request's [`ClientAddr`].
//!
//! A leaf: resolvers of every domain read the viewer from here, and the code that turns an
//! `Authorization` value into a viewer (sessions, API keys) lives above the domains, in
//! `graphql::auth`, so that no domain has to import another to know who is asking.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use async_graphql::Context;
use futures::future::BoxFuture;
use tokio::sync::OnceCell;

use crate::error::{AppError, AppResult, ErrorCode};

/// The authenticated user of a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Viewer {
    /// The user's id.
    pub id: i64,
    /// The user's name.
    pub username: String,
    /// How the viewer authenticated.
    pub via: AuthMethod,
}

/// The credential a request carried.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthMethod {
    /// A session token from `login`; the SHA-256 of the token.
    Session {
        /// The hex SHA-256 of the token (the session's key).
        token_hash: String,
    },
    /// An API key (`Basic publicKey:secretKey`).
    ApiKey {
        /// The key's public half.
        public_key: String,
    },
}

/// The address a request came from, as far as the server can trust it: the socket's peer,
/// or, when that peer is a trusted proxy (`ARENA_TRUSTED_PROXIES`), the client that
/// `X-Forwarded-For` names. Failed password and API-key checks are counted against it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ClientAddr(Option<IpAddr>);

impl ClientAddr {
    /// A request whose address is not known (every such request shares one budget).
    pub const UNKNOWN: ClientAddr = ClientAddr(None);

    /// The client behind a connection from `peer` carrying `forwarded_for` (the values of
    /// every `X-Forwarded-For` header, in order). The header is read only when `peer` is a
    /// trusted proxy: from its right end, each address a trusted proxy added is passed over,
    /// and the first one that is not trusted is the client (anything to its left was written
    /// by the client itself and proves nothing). A header that does not parse is ignored.
    pub fn resolve<'h>(
        peer: Option<SocketAddr>,
        forwarded_for: impl Iterator<Item = &'h str>,
        trusted: &[ipnet::IpNet],
    ) -> Self {
        let Some(peer) = peer.map(|p| canonical(p.ip())) else {
            return Self::UNKNOWN;
        };
        let is_trusted = |ip: &IpAddr| trusted.iter().any(|net| net.contains(ip));
        if !is_trusted(&peer) {
            return Self(Some(peer));
        }
        let hops: Option<Vec<IpAddr>> = forwarded_for
            .flat_map(|h| h.split(','))
            .map(|hop| hop.trim().parse::<IpAddr>().ok().map(canonical))
            .collect();
        let Some(hops) = hops else {
            return Self(Some(peer));
        };
        let client = hops
            .iter()
            .rev()
            .find(|ip| !is_trusted(ip))
            .or(hops.first())
            .copied()
            .unwrap_or(peer);
        Self(Some(client))
    }

    /// The address, when known.
    pub fn ip(&self) -> Option<IpAddr> {
        self.0
    }

    /// The key its budget is counted under: an IPv4 address, or an IPv6 address's /64
    /// network (one host usually holds a whole /64, so counting its addresses one by one
    /// would give it 2^64 budgets).
    pub fn budget_key(&self) -> String {
        match self.0 {
            None => "unknown".to_owned(),
            Some(IpAddr::V4(v4)) => v4.to_string(),
            Some(IpAddr::V6(v6)) => {
                let net = ipnet::Ipv6Net::new(v6, 64)
                    .map(|n| n.trunc())
                    .unwrap_or_else(|_| ipnet::Ipv6Net::from(v6));
                net.to_string()
            }
        }
    }
}

/// An IPv4 address that arrived as an IPv4-mapped IPv6 one (`::ffff:a.b.c.d`) is that IPv4
/// address.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// Turns an `Authorization` value into the viewer it names (`None`: no such viewer is an
/// error, which the implementation reports as `UNAUTHENTICATED`).
pub trait Authenticator: Send + Sync + 'static {
    /// The viewer behind `header`, sent from `client`.
    fn authenticate<'a>(
        &'a self,
        header: &'a str,
        client: ClientAddr,
    ) -> BoxFuture<'a, AppResult<Option<Authenticated>>>;
}

/// A viewer, and what vouches for it to the memo of responses.
#[derive(Debug, Clone)]
pub struct Authenticated {
    /// Who.
    pub viewer: Viewer,
    /// The version of the viewer's own rows, read before the credential was looked up
    /// (`consistency::reading_owned`), when the cache could vouch for it: while it holds,
    /// the credential still names this viewer.
    pub pinned: Option<Pinned>,
}

/// The version a viewer was resolved under.
#[derive(Debug, Clone)]
pub struct Pinned {
    /// The cache key of the viewer's own rows.
    pub key: String,
    /// Its version.
    pub version: i64,
    /// When the credential expires by itself (epoch milliseconds; a session's end).
    pub until: Option<i64>,
}

/// The request's `Authorization` value and, once asked for, the viewer it names.
#[derive(Clone)]
pub struct RequestAuth {
    header: Option<String>,
    client: ClientAddr,
    authenticator: Arc<dyn Authenticator>,
    resolved: Arc<OnceCell<Resolved>>,
}

/// The memoized outcome: the viewer, or the error's code and message.
type Resolved = Result<Option<Authenticated>, (ErrorCode, String)>;

impl RequestAuth {
    /// From the raw `Authorization` value, if any, of a request from `client`.
    pub fn new(
        header: Option<String>,
        client: ClientAddr,
        authenticator: Arc<dyn Authenticator>,
    ) -> Self {
        Self {
            header: header.filter(|h| !h.trim().is_empty()),
            client,
            authenticator,
            resolved: Arc::new(OnceCell::new()),
        }
    }

    /// From a WebSocket `connection_init` payload (`{"authorization": "Bearer …"}`).
    pub fn from_init_payload(
        payload: &serde_json::Value,
        client: ClientAddr,
        authenticator: Arc<dyn Authenticator>,
    ) -> Self {
        let header = payload
            .get("authorization")
            .or_else(|| payload.get("Authorization"))
            .and_then(|v| v.as_str())
            .map(str::to_owned);
        Self::new(header, client, authenticator)
    }

    /// The same credential, not yet resolved: each operation of a WebSocket connection checks
    /// it again, so a rotated or deleted API key (or a revoked session) stops working at the
    /// connection's next operation.
    pub fn unresolved(&self) -> Self {
        Self::new(self.header.clone(), self.client, self.authenticator.clone())
    }

    /// Whether the viewer has been looked up already (by a resolver).
    pub fn is_resolved(&self) -> bool {
        self.resolved.initialized()
    }

    /// The viewer, when it has been looked up already and found.
    pub fn resolved_viewer(&self) -> Option<Viewer> {
        let found = self.resolved.get()?.as_ref().ok()?.as_ref()?;
        Some(found.viewer.clone())
    }

    /// Takes `viewer` as what the credential names, without looking it up (a memoized answer
    /// for this credential, whose versions still hold, vouches for it).
    pub fn vouched_for(&self, viewer: Viewer) {
        let _ = self.resolved.set(Ok(Some(Authenticated {
            viewer,
            pinned: None,
        })));
    }

    /// Where the request came from.
    pub fn client(&self) -> ClientAddr {
        self.client
    }

    /// The raw `Authorization` value, if the request carried one.
    pub fn header(&self) -> Option<&str> {
        self.header.as_deref()
    }

    /// Whether the credential is a session token (`Bearer …`).
    pub fn is_bearer(&self) -> bool {
        self.header
            .as_deref()
            .and_then(|h| h.trim().split_once(' '))
            .is_some_and(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
    }

    /// The viewer, resolving the header on first use.
    ///
    /// Who is asking decides the answer: an operation that asked is memoized only for this
    /// credential, and only when the viewer was resolved under a version of their own rows
    /// (recorded with the operation's reads, which covers the statements that looked the
    /// credential up); otherwise asking taints the operation.
    pub async fn viewer(&self) -> AppResult<Option<Viewer>> {
        let res = self
            .resolved
            .get_or_init(|| async {
                let Some(header) = self.header.as_deref() else {
                    return Ok(None);
                };
                self.authenticator
                    .authenticate(header, self.client)
                    .await
                    .map_err(|e| {
                        if let AppError::Internal(cause) = &e {
                            tracing::error!(error = ?cause, "resolving the viewer");
                        }
                        (e.code(), e.message())
                    })
            })
            .await;
        match res {
            Ok(None) => entity::scope::read::record_viewer(None, None),
            Ok(Some(Authenticated {
                pinned: Some(p), ..
            })) => entity::scope::read::record_viewer(Some((&p.key, p.version)), p.until),
            _ => entity::scope::read::taint(),
        }
        match res {
            Ok(v) => Ok(v.as_ref().map(|a| a.viewer.clone())),
            Err((ErrorCode::Internal, _)) => {
                Err(AppError::internal("could not resolve the viewer"))
            }
            Err((code, message)) => Err(AppError::from_code(*code, message.clone())),
        }
    }

    /// For usage counting: the viewer if it is known already or cheap to find (a session
    /// token: one indexed query). An API key no resolver asked for stays unchecked: checking
    /// it costs a full PBKDF2 verification, which counting must never spend on a request's
    /// behalf (a stream of made-up keys would otherwise keep the CPU busy).
    pub async fn viewer_for_counting(&self) -> Option<Viewer> {
        if let Some(resolved) = self.resolved.get() {
            return resolved.as_ref().ok()?.as_ref().map(|a| a.viewer.clone());
        }
        if self.is_bearer() {
            self.viewer().await.ok().flatten()
        } else {
            None
        }
    }
}

/// The viewer of the current request, if any.
pub async fn viewer(ctx: &Context<'_>) -> AppResult<Option<Viewer>> {
    match ctx.data_opt::<RequestAuth>() {
        Some(auth) => auth.viewer().await,
        None => Ok(None),
    }
}

/// Where the current request came from.
pub fn client(ctx: &Context<'_>) -> ClientAddr {
    ctx.data_opt::<RequestAuth>()
        .map_or(ClientAddr::UNKNOWN, RequestAuth::client)
}

/// The viewer of the current request; `UNAUTHENTICATED` without one.
pub async fn require_viewer(ctx: &Context<'_>) -> AppResult<Viewer> {
    viewer(ctx).await?.ok_or_else(|| {
        AppError::Unauthenticated("sign in first: send `Authorization: Bearer <token>`".into())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client(peer: &str, forwarded: &[&str], trusted: &[&str]) -> String {
        let trusted: Vec<ipnet::IpNet> = trusted.iter().map(|t| t.parse().unwrap()).collect();
        let peer: SocketAddr = peer.parse().unwrap();
        ClientAddr::resolve(Some(peer), forwarded.iter().copied(), &trusted).budget_key()
    }

    #[test]
    fn the_socket_peer_is_the_client_unless_it_is_a_trusted_proxy() {
        assert_eq!(client("192.0.2.7:1", &["198.51.100.1"], &[]), "192.0.2.7");
        assert_eq!(
            client("192.0.2.7:1", &["198.51.100.1"], &["10.0.0.0/8"]),
            "192.0.2.7"
        );
        assert_eq!(
            client("10.1.2.3:1", &["198.51.100.1"], &["10.0.0.0/8"]),
            "198.51.100.1"
        );
    }

    #[test]
    fn forwarded_addresses_are_read_from_the_right_past_trusted_proxies_only() {
        let trusted = ["10.0.0.0/8"];
        // The client wrote the first hop itself; the proxies appended the rest.
        assert_eq!(
            client("10.0.0.1:1", &["6.6.6.6, 198.51.100.9, 10.0.0.2"], &trusted),
            "198.51.100.9"
        );
        // Several headers are one list, in order.
        assert_eq!(
            client("10.0.0.1:1", &["6.6.6.6", "198.51.100.9"], &trusted),
            "198.51.100.9"
        );
        // Only proxies in the list: the first of them.
        assert_eq!(client("10.0.0.1:1", &["10.9.9.9"], &trusted), "10.9.9.9");
        // No header, or one that does not parse: the proxy itself.
        assert_eq!(client("10.0.0.1:1", &[], &trusted), "10.0.0.1");
        assert_eq!(client("10.0.0.1:1", &["not an ip"], &trusted), "10.0.0.1");
    }

    #[test]
    fn an_ipv6_client_is_counted_by_its_64_network_and_a_mapped_ipv4_as_ipv4() {
        assert_eq!(
            client("[2001:db8:1:2:3:4:5:6]:1", &[], &[]),
            "2001:db8:1:2::/64"
        );
        assert_eq!(
            client("[2001:db8:1:2:ff::1]:1", &[], &[]),
            "2001:db8:1:2::/64"
        );
        assert_eq!(client("[::ffff:192.0.2.1]:1", &[], &[]), "192.0.2.1");
        assert_eq!(ClientAddr::UNKNOWN.budget_key(), "unknown");
    }
}
