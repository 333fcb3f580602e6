//! Arena's integration tests: one binary, a module per domain. Each test spawns the real app
//! on port 0 and talks to it over HTTP and WebSocket; `support` starts it on the backends of
//! the test matrix (and says how the real servers are found), `fixtures` sets up what several
//! domains share.

mod fixtures;
mod support;

mod architecture;

mod backends;
mod battles;
mod collections;
mod consistency;
mod credentials;
mod graphiql;
mod http_pipeline;
mod incremental;
mod live;
mod meals;
mod near;
mod owned;
mod platform;
mod pokemon;
mod specs;
mod storage;
mod usage;
mod users;
mod ws;
