//! Arena's integration tests: one binary, a module per domain. Each test spawns the real app
//! on port 0 and talks to it over HTTP and WebSocket.

mod helpers;

mod backends;
mod meals;
mod platform;
mod pokemon;
mod users;
