//! The caps on open WebSocket connections: all of them, and the smaller share of those
//! without a verified credential (waiting for `connection_init`, or acknowledged without
//! `authorization`). A connection holds a [`Slot`] from its upgrade until it closes.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use crate::config::Settings;
use crate::metrics::Metrics;

/// The open connections of one Arena instance.
#[derive(Clone)]
pub struct Connections {
    inner: Arc<Inner>,
}

struct Inner {
    total: AtomicUsize,
    unauthenticated: AtomicUsize,
    max_total: usize,
    max_unauthenticated: usize,
    metrics: Metrics,
}

/// Why a connection was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Full {
    /// `ARENA_WS_MAX_CONNECTIONS` are open.
    Connections(usize),
    /// `ARENA_WS_MAX_UNAUTHENTICATED` connections without a verified credential are open.
    Unauthenticated(usize),
}

impl Full {
    /// What the refused client reads.
    pub fn message(self) -> String {
        match self {
            Full::Connections(n) => {
                format!("the server has {n} WebSocket connections open, the most it takes")
            }
            Full::Unauthenticated(n) => format!(
                "the server has {n} WebSocket connections without a verified credential open, \
                 the most it takes; try again later"
            ),
        }
    }
}

impl Connections {
    /// Caps from the settings.
    pub fn new(settings: &Settings, metrics: Metrics) -> Self {
        Self {
            inner: Arc::new(Inner {
                total: AtomicUsize::new(0),
                unauthenticated: AtomicUsize::new(0),
                max_total: settings.ws_max_connections,
                max_unauthenticated: settings.ws_max_unauthenticated,
                metrics,
            }),
        }
    }

    /// A slot for a new (not yet authenticated) connection, or why there is none.
    pub fn open(&self) -> Result<Slot, Full> {
        let i = &self.inner;
        if i.total.fetch_add(1, Ordering::AcqRel) >= i.max_total {
            i.total.fetch_sub(1, Ordering::AcqRel);
            i.metrics
                .ws_refused
                .with_label_values(&["connection"])
                .inc();
            return Err(Full::Connections(i.max_total));
        }
        if i.unauthenticated.fetch_add(1, Ordering::AcqRel) >= i.max_unauthenticated {
            i.unauthenticated.fetch_sub(1, Ordering::AcqRel);
            i.total.fetch_sub(1, Ordering::AcqRel);
            i.metrics
                .ws_refused
                .with_label_values(&["connection"])
                .inc();
            return Err(Full::Unauthenticated(i.max_unauthenticated));
        }
        i.metrics
            .ws_connections
            .with_label_values(&["unauthenticated"])
            .inc();
        Ok(Slot {
            inner: self.inner.clone(),
            authenticated: false,
        })
    }
}

/// One open connection's place under the caps; freed when dropped.
pub struct Slot {
    inner: Arc<Inner>,
    authenticated: bool,
}

impl Slot {
    /// The connection's credential named a viewer: it no longer counts as unauthenticated.
    pub fn authenticated(&mut self) {
        if !self.authenticated {
            self.authenticated = true;
            self.inner.unauthenticated.fetch_sub(1, Ordering::AcqRel);
            let gauge = &self.inner.metrics.ws_connections;
            gauge.with_label_values(&["unauthenticated"]).dec();
            gauge.with_label_values(&["authenticated"]).inc();
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let i = &self.inner;
        i.total.fetch_sub(1, Ordering::AcqRel);
        let label = if self.authenticated {
            "authenticated"
        } else {
            i.unauthenticated.fetch_sub(1, Ordering::AcqRel);
            "unauthenticated"
        };
        i.metrics.ws_connections.with_label_values(&[label]).dec();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caps(total: usize, unauthenticated: usize) -> Connections {
        let mut s = Settings::defaults();
        s.ws_max_connections = total;
        s.ws_max_unauthenticated = unauthenticated;
        Connections::new(&s, Metrics::new())
    }

    #[test]
    fn unauthenticated_connections_have_a_smaller_cap_than_all() {
        let c = caps(3, 2);
        let mut a = c.open().unwrap();
        let _b = c.open().unwrap();
        assert_eq!(c.open().err(), Some(Full::Unauthenticated(2)));
        a.authenticated();
        let _d = c.open().unwrap();
        assert_eq!(c.open().err(), Some(Full::Connections(3)));
        drop(a);
        assert!(c.open().is_err(), "both unauthenticated places are taken");
    }

    #[test]
    fn a_closed_connection_frees_its_place() {
        let c = caps(1, 1);
        let a = c.open().unwrap();
        assert!(c.open().is_err());
        drop(a);
        assert!(c.open().is_ok());
    }
}
