//! What carries operations to the engine and answers back: HTTP ([`http`]: GET, POST,
//! batches, uploads, persisted queries), WebSocket ([`ws`]: graphql-transport-ws and
//! graphql-ws), Server-Sent Events ([`sse`]: graphql-sse), GraphiQL ([`graphiql`]), and the
//! credential a request carries ([`auth`]).

pub mod auth;
pub mod graphiql;
pub mod http;
pub mod sse;
pub mod ws;
