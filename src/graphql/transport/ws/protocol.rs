//! The two GraphQL-over-WebSocket protocols as a state machine without I/O:
//! `graphql-transport-ws` (graphql-ws's PROTOCOL.md) and the legacy `graphql-ws` of
//! subscriptions-transport-ws. [`Connection`] is fed what happened (a text message, the
//! outcome of `connection_init`, a result of an operation, the end of one, the init timeout)
//! and answers with the [`Action`]s the socket must take: messages to send, a close frame,
//! a credential to check, operations to start or drop. Running the operations and moving the
//! bytes is the connection task's job ([`super::connection`]).

use std::collections::HashSet;

use async_graphql::{Response, ServerError, Value as GqlValue};

use crate::graphql::engine::pipeline::Payload;
use serde::Serialize;
use serde_json::{json, Map, Value};

/// Which subprotocol the client chose.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// `graphql-transport-ws`: subscribe / next / error / complete, ping / pong.
    TransportWs,
    /// `graphql-ws` (subscriptions-transport-ws): start / data / error / complete / stop, ka.
    Legacy,
}

impl Protocol {
    /// The first protocol of a `Sec-WebSocket-Protocol` list that Arena speaks, in the
    /// client's order of preference.
    pub fn negotiate<'a>(requested: impl IntoIterator<Item = &'a str>) -> Option<Self> {
        requested
            .into_iter()
            .flat_map(|h| h.split(','))
            .find_map(|p| Self::from_name(p.trim()))
    }

    /// The protocol with this subprotocol name.
    pub fn from_name(name: &str) -> Option<Self> {
        if name.eq_ignore_ascii_case("graphql-transport-ws") {
            Some(Protocol::TransportWs)
        } else if name.eq_ignore_ascii_case("graphql-ws") {
            Some(Protocol::Legacy)
        } else {
            None
        }
    }

    /// The subprotocol name, as the handshake answers it.
    pub fn name(self) -> &'static str {
        match self {
            Protocol::TransportWs => "graphql-transport-ws",
            Protocol::Legacy => "graphql-ws",
        }
    }
}

/// Close codes: the WebSocket ones Arena uses and graphql-ws's `CloseCode`.
pub mod close {
    /// The client ended the connection (`connection_terminate`).
    pub const NORMAL: u16 = 1000;
    /// A message over the size limit.
    pub const TOO_BIG: u16 = 1009;
    /// Legacy protocol: `connection_init` was refused (after `connection_error`).
    pub const LEGACY_INIT_REFUSED: u16 = 1011;
    /// The credential could not be checked now (throttled, timed out): try again later.
    pub const TRY_AGAIN_LATER: u16 = 1013;
    /// An invalid message.
    pub const BAD_REQUEST: u16 = 4400;
    /// An operation before `connection_ack`.
    pub const UNAUTHORIZED: u16 = 4401;
    /// `connection_init` with a credential that names no viewer.
    pub const FORBIDDEN: u16 = 4403;
    /// No subprotocol that Arena speaks.
    pub const SUBPROTOCOL_NOT_ACCEPTABLE: u16 = 4406;
    /// No `connection_init` within the init timeout.
    pub const INIT_TIMEOUT: u16 = 4408;
    /// A `subscribe` whose id is already running.
    pub const SUBSCRIBER_EXISTS: u16 = 4409;
    /// A second `connection_init`.
    pub const TOO_MANY_INIT: u16 = 4429;
    /// The server failed while checking `connection_init`.
    pub const INTERNAL: u16 = 4500;
}

/// A close frame's payload is at most 125 bytes, two of them the code.
pub const MAX_CLOSE_REASON: usize = 123;

/// `reason` cut to fit a close frame, on a character boundary.
pub fn fit_close_reason(reason: &str) -> String {
    if reason.len() <= MAX_CLOSE_REASON {
        return reason.to_owned();
    }
    let mut end = MAX_CLOSE_REASON;
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    reason[..end].to_owned()
}

/// What the socket must do, in order.
#[derive(Debug)]
pub enum Action {
    /// Send this text message.
    Send(String),
    /// Send a close frame with this code and reason (fitting a close frame), then stop.
    Close {
        /// The close code.
        code: u16,
        /// Why, at most [`MAX_CLOSE_REASON`] bytes.
        reason: String,
    },
    /// Check the credential of this `connection_init` payload, then call
    /// [`Connection::on_init`] with the outcome.
    Authenticate(Value),
    /// Start operation `id`; feed its results to [`Connection::on_result`] and its end to
    /// [`Connection::on_end`].
    Start {
        /// The operation id.
        id: String,
        /// The GraphQL request.
        request: Box<async_graphql::Request>,
    },
    /// Drop operation `id` (its results are no longer wanted).
    Stop(String),
}

/// The outcome of checking the `connection_init` credential.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InitOutcome {
    /// A viewer, or no credential at all: acknowledged.
    Accepted,
    /// The credential names no viewer (or is malformed): why.
    Refused(String),
    /// The credential could not be checked now (throttled, timed out): why.
    Busy(String),
    /// The check failed inside the server.
    Failed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Before `connection_init`.
    AwaitingInit,
    /// `connection_init` received, its credential being checked.
    Initialising,
    /// Acknowledged.
    Ready,
    /// A close frame was asked for.
    Closed,
}

/// One connection's protocol state.
#[derive(Debug)]
pub struct Connection {
    protocol: Protocol,
    phase: Phase,
    /// Ids of the operations running (started and not yet ended or stopped).
    active: HashSet<String>,
    /// Legacy protocol: operations started before `connection_ack`, started once it is sent
    /// (subscriptions-transport-ws clients send `start` right after `connection_init`).
    pending: Vec<(String, Box<async_graphql::Request>)>,
    max_operations: usize,
}

/// Server messages, shared by both protocols where their shapes agree.
#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Out<'a> {
    ConnectionAck,
    ConnectionError {
        payload: Value,
    },
    #[serde(rename = "ka")]
    KeepAlive,
    Next {
        id: &'a str,
        payload: &'a Payload,
    },
    Data {
        id: &'a str,
        payload: &'a Payload,
    },
    Error {
        id: &'a str,
        payload: Value,
    },
    Complete {
        id: &'a str,
    },
    Pong {
        #[serde(skip_serializing_if = "Option::is_none")]
        payload: Option<Value>,
    },
}

impl Out<'_> {
    fn text(&self) -> String {
        // Serializing these shapes (strings, JSON values, responses) cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// One GraphQL error with a code, as `error` payloads and `connection_error` carry it.
fn coded_error(message: &str, code: &str) -> Value {
    json!({ "message": message, "extensions": { "code": code } })
}

/// A response made of errors raised before execution began (parse, validation, limits):
/// no data, and no error has a path into the result.
pub(crate) fn is_request_error(response: &Response) -> bool {
    matches!(response.data, GqlValue::Null)
        && !response.errors.is_empty()
        && response.errors.iter().all(|e| e.path.is_empty())
}

/// Why a message is invalid, as a 4400 close reason says it.
type Invalid = String;

fn object_or_null<'a>(v: Option<&'a Value>, what: &str) -> Result<Option<&'a Value>, Invalid> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(v @ Value::Object(_)) => Ok(Some(v)),
        Some(_) => Err(format!("\"{what}\" must be an object")),
    }
}

fn non_empty_id(msg: &Map<String, Value>) -> Result<String, Invalid> {
    match msg.get("id") {
        Some(Value::String(id)) if !id.is_empty() => Ok(id.clone()),
        _ => Err("\"id\" must be a non-empty string".into()),
    }
}

/// The GraphQL request of a `subscribe` / `start` payload: `query` a string, `variables` and
/// `extensions` objects or absent, `operationName` a string or absent.
pub(crate) fn request_of(payload: Option<&Value>) -> Result<Box<async_graphql::Request>, Invalid> {
    let Some(Value::Object(p)) = payload else {
        return Err("\"payload\" must be an object".into());
    };
    let Some(Value::String(query)) = p.get("query") else {
        return Err("\"payload.query\" must be a string".into());
    };
    let mut request = async_graphql::Request::new(query.clone());
    match p.get("operationName") {
        None | Some(Value::Null) => {}
        Some(Value::String(name)) => request = request.operation_name(name.clone()),
        Some(_) => return Err("\"payload.operationName\" must be a string".into()),
    }
    if let Some(vars) = object_or_null(p.get("variables"), "payload.variables")? {
        request = request.variables(async_graphql::Variables::from_json(vars.clone()));
    }
    if let Some(ext) = object_or_null(p.get("extensions"), "payload.extensions")? {
        request.extensions = serde_json::from_value(ext.clone())
            .map_err(|e| format!("\"payload.extensions\": {e}"))?;
    }
    Ok(Box::new(request))
}

impl Connection {
    /// A new connection speaking `protocol`, with at most `max_operations` running at once.
    pub fn new(protocol: Protocol, max_operations: usize) -> Self {
        Self {
            protocol,
            phase: Phase::AwaitingInit,
            active: HashSet::new(),
            pending: Vec::new(),
            max_operations,
        }
    }

    /// The protocol spoken.
    pub fn protocol(&self) -> Protocol {
        self.protocol
    }

    /// Whether `connection_init` has not arrived yet (the init timeout runs).
    pub fn awaiting_init(&self) -> bool {
        self.phase == Phase::AwaitingInit
    }

    /// Whether `connection_ack` has been sent.
    pub fn is_ready(&self) -> bool {
        self.phase == Phase::Ready
    }

    /// Whether a close was asked for.
    pub fn is_closed(&self) -> bool {
        self.phase == Phase::Closed
    }

    /// Operations running or waiting for the ack.
    pub fn operations(&self) -> usize {
        self.active.len() + self.pending.len()
    }

    fn close(&mut self, code: u16, reason: &str) -> Vec<Action> {
        self.phase = Phase::Closed;
        self.active.clear();
        self.pending.clear();
        vec![Action::Close {
            code,
            reason: fit_close_reason(reason),
        }]
    }

    /// A text message from the client.
    pub fn on_text(&mut self, text: &str) -> Vec<Action> {
        if self.is_closed() {
            return Vec::new();
        }
        match self.protocol {
            Protocol::TransportWs => self.transport_message(text),
            Protocol::Legacy => self.legacy_message(text),
        }
    }

    /// A binary message from the client: both protocols speak JSON text only.
    pub fn on_binary(&mut self) -> Vec<Action> {
        if self.is_closed() {
            return Vec::new();
        }
        match self.protocol {
            Protocol::TransportWs => self.close(
                close::BAD_REQUEST,
                "Invalid message received: binary messages are not part of the protocol",
            ),
            Protocol::Legacy => vec![Action::Send(
                Out::ConnectionError {
                    payload: coded_error("binary messages are not supported", "BAD_USER_INPUT"),
                }
                .text(),
            )],
        }
    }

    /// A message over the size limit (the socket has refused it).
    pub fn on_too_big(&mut self, limit: usize) -> Vec<Action> {
        self.close(
            close::TOO_BIG,
            &format!("Message larger than the {limit}-byte limit"),
        )
    }

    /// The init timeout passed.
    pub fn on_init_timeout(&mut self) -> Vec<Action> {
        if self.phase != Phase::AwaitingInit {
            return Vec::new();
        }
        self.close(close::INIT_TIMEOUT, "Connection initialisation timeout")
    }

    /// The keep-alive interval passed: the legacy protocol's `ka` once acknowledged.
    pub fn on_keep_alive(&self) -> Option<Action> {
        (self.protocol == Protocol::Legacy && self.is_ready())
            .then(|| Action::Send(Out::KeepAlive.text()))
    }

    /// The outcome of the `connection_init` credential check.
    pub fn on_init(&mut self, outcome: InitOutcome) -> Vec<Action> {
        if self.phase != Phase::Initialising {
            return Vec::new();
        }
        let refused = match (&outcome, self.protocol) {
            (InitOutcome::Accepted, _) => None,
            (InitOutcome::Refused(why), Protocol::TransportWs) => {
                Some((close::FORBIDDEN, format!("Forbidden: {why}")))
            }
            (InitOutcome::Busy(why), Protocol::TransportWs) => {
                Some((close::TRY_AGAIN_LATER, format!("Try again later: {why}")))
            }
            (InitOutcome::Failed, Protocol::TransportWs) => {
                Some((close::INTERNAL, "Internal server error".to_owned()))
            }
            (_, Protocol::Legacy) => Some((close::LEGACY_INIT_REFUSED, String::new())),
        };
        if let Some((code, reason)) = refused {
            let mut actions = Vec::new();
            if self.protocol == Protocol::Legacy {
                let (message, code) = match outcome {
                    InitOutcome::Refused(why) => (why, "UNAUTHENTICATED"),
                    InitOutcome::Busy(why) => (why, "RATE_LIMITED"),
                    _ => ("internal error".to_owned(), "INTERNAL"),
                };
                actions.push(Action::Send(
                    Out::ConnectionError {
                        payload: coded_error(&message, code),
                    }
                    .text(),
                ));
            }
            actions.extend(self.close(code, &reason));
            return actions;
        }
        self.phase = Phase::Ready;
        let mut actions = vec![Action::Send(Out::ConnectionAck.text())];
        if self.protocol == Protocol::Legacy {
            actions.push(Action::Send(Out::KeepAlive.text()));
            for (id, request) in std::mem::take(&mut self.pending) {
                self.active.insert(id.clone());
                actions.push(Action::Start { id, request });
            }
        }
        actions
    }

    /// A result of operation `id`; `first` when it is the operation's first.
    pub fn on_result(&mut self, id: &str, first: bool, response: &Payload) -> Vec<Action> {
        if !self.active.contains(id) {
            return Vec::new();
        }
        match self.protocol {
            // Errors before execution are the operation's `error`, which also ends it: no
            // `complete` follows.
            Protocol::TransportWs if first && response.response().is_some_and(is_request_error) => {
                self.active.remove(id);
                let errors: &[ServerError] =
                    response.response().map_or(&[], |r| r.errors.as_slice());
                let payload = serde_json::to_value(errors).unwrap_or(Value::Null);
                vec![
                    Action::Send(Out::Error { id, payload }.text()),
                    Action::Stop(id.to_owned()),
                ]
            }
            Protocol::TransportWs => vec![Action::Send(
                Out::Next {
                    id,
                    payload: response,
                }
                .text(),
            )],
            Protocol::Legacy => vec![Action::Send(
                Out::Data {
                    id,
                    payload: response,
                }
                .text(),
            )],
        }
    }

    /// Operation `id` has no more results.
    pub fn on_end(&mut self, id: &str) -> Vec<Action> {
        if !self.active.remove(id) {
            return Vec::new();
        }
        vec![Action::Send(Out::Complete { id }.text())]
    }

    /// `subscribe` / `start` of `id` once the connection may run it: over the cap it gets an
    /// `error` of its own and the others go on.
    fn start(&mut self, id: String, request: Box<async_graphql::Request>) -> Vec<Action> {
        if self.operations() >= self.max_operations {
            let message = format!(
                "this connection already runs {} operations, the most it may; complete one \
                 first",
                self.max_operations
            );
            let error = coded_error(&message, "RATE_LIMITED");
            let payload = match self.protocol {
                Protocol::TransportWs => Value::Array(vec![error]),
                Protocol::Legacy => error,
            };
            return vec![Action::Send(Out::Error { id: &id, payload }.text())];
        }
        if self.phase != Phase::Ready {
            self.pending.push((id, request));
            return Vec::new();
        }
        self.active.insert(id.clone());
        vec![Action::Start { id, request }]
    }

    fn transport_message(&mut self, text: &str) -> Vec<Action> {
        let msg = match serde_json::from_str::<Value>(text) {
            Ok(Value::Object(m)) => m,
            Ok(_) => {
                return self.close(
                    close::BAD_REQUEST,
                    "Invalid message received: not a JSON object",
                )
            }
            Err(e) => {
                return self.close(
                    close::BAD_REQUEST,
                    &format!("Invalid message received: not JSON ({e})"),
                )
            }
        };
        match self.transport_parse(&msg) {
            Ok(actions) => actions,
            Err(why) => self.close(
                close::BAD_REQUEST,
                &format!("Invalid message received: {why}"),
            ),
        }
    }

    fn transport_parse(&mut self, msg: &Map<String, Value>) -> Result<Vec<Action>, Invalid> {
        let Some(Value::String(kind)) = msg.get("type") else {
            return Err("\"type\" must be a string".into());
        };
        Ok(match kind.as_str() {
            "connection_init" => {
                let payload = object_or_null(msg.get("payload"), "payload")?;
                if self.phase != Phase::AwaitingInit {
                    return Ok(self.close(close::TOO_MANY_INIT, "Too many initialisation requests"));
                }
                self.phase = Phase::Initialising;
                vec![Action::Authenticate(
                    payload.cloned().unwrap_or_else(|| json!({})),
                )]
            }
            "ping" => {
                let payload = object_or_null(msg.get("payload"), "payload")?;
                vec![Action::Send(
                    Out::Pong {
                        payload: payload.cloned(),
                    }
                    .text(),
                )]
            }
            "pong" => {
                object_or_null(msg.get("payload"), "payload")?;
                Vec::new()
            }
            "subscribe" => {
                let id = non_empty_id(msg)?;
                let request = request_of(msg.get("payload"))?;
                if self.phase != Phase::Ready {
                    return Ok(self.close(close::UNAUTHORIZED, "Unauthorized"));
                }
                if self.active.contains(&id) {
                    return Ok(self.close(
                        close::SUBSCRIBER_EXISTS,
                        &format!("Subscriber for {id} already exists"),
                    ));
                }
                self.start(id, request)
            }
            "complete" => {
                let id = non_empty_id(msg)?;
                // The client stopped listening: nothing more about `id` is sent, not even
                // `complete`.
                if self.active.remove(&id) {
                    vec![Action::Stop(id)]
                } else {
                    Vec::new()
                }
            }
            "connection_ack" | "next" | "error" => {
                return Err(format!(
                    "unexpected message of type \"{kind}\" from a client"
                ))
            }
            other => return Err(format!("unknown message type \"{other}\"")),
        })
    }

    fn legacy_message(&mut self, text: &str) -> Vec<Action> {
        let msg = match serde_json::from_str::<Value>(text) {
            Ok(Value::Object(m)) => m,
            // subscriptions-transport-ws answers a message it cannot read with
            // `connection_error` and keeps the connection.
            Ok(_) | Err(_) => {
                return vec![Action::Send(
                    Out::ConnectionError {
                        payload: coded_error("message must be a JSON object", "BAD_USER_INPUT"),
                    }
                    .text(),
                )]
            }
        };
        let id = msg.get("id").and_then(Value::as_str).map(str::to_owned);
        let error = |id: Option<&str>, message: &str| {
            Action::Send(
                Out::Error {
                    id: id.unwrap_or_default(),
                    payload: coded_error(message, "BAD_USER_INPUT"),
                }
                .text(),
            )
        };
        match msg.get("type").and_then(Value::as_str).unwrap_or_default() {
            "connection_init" => {
                if self.phase == Phase::Initialising || self.phase == Phase::Ready {
                    let mut actions = vec![Action::Send(
                        Out::ConnectionError {
                            payload: coded_error(
                                "Too many initialisation requests",
                                "BAD_USER_INPUT",
                            ),
                        }
                        .text(),
                    )];
                    actions.extend(
                        self.close(close::TOO_MANY_INIT, "Too many initialisation requests"),
                    );
                    return actions;
                }
                let payload = match msg.get("payload") {
                    Some(p @ Value::Object(_)) => p.clone(),
                    _ => json!({}),
                };
                self.phase = Phase::Initialising;
                vec![Action::Authenticate(payload)]
            }
            "start" => {
                let Some(id) = id else {
                    return vec![error(None, "\"id\" must be a string")];
                };
                let request = match request_of(msg.get("payload")) {
                    Ok(r) => r,
                    Err(why) => return vec![error(Some(&id), &why)],
                };
                // subscriptions-transport-ws replaces an operation started again under its id.
                let mut actions = Vec::new();
                if self.active.remove(&id) {
                    actions.push(Action::Stop(id.clone()));
                }
                self.pending.retain(|(p, _)| *p != id);
                actions.extend(self.start(id, request));
                actions
            }
            "stop" => {
                let Some(id) = id else {
                    return vec![error(None, "\"id\" must be a string")];
                };
                let before = self.pending.len();
                self.pending.retain(|(p, _)| *p != id);
                let was_pending = self.pending.len() != before;
                if self.active.remove(&id) {
                    vec![
                        Action::Stop(id.clone()),
                        Action::Send(Out::Complete { id: &id }.text()),
                    ]
                } else if was_pending {
                    vec![Action::Send(Out::Complete { id: &id }.text())]
                } else {
                    Vec::new()
                }
            }
            "connection_terminate" => self.close(close::NORMAL, "connection_terminate"),
            _ => vec![error(id.as_deref(), "Invalid message type!")],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn texts(actions: &[Action]) -> Vec<Value> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::Send(t) => Some(serde_json::from_str(t).unwrap()),
                _ => None,
            })
            .collect()
    }

    fn closed_with(actions: &[Action]) -> Option<(u16, String)> {
        actions.iter().find_map(|a| match a {
            Action::Close { code, reason } => Some((*code, reason.clone())),
            _ => None,
        })
    }

    fn started(actions: &[Action]) -> Vec<String> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::Start { id, .. } => Some(id.clone()),
                _ => None,
            })
            .collect()
    }

    fn subscribe(id: &str) -> String {
        json!({ "type": "subscribe", "id": id, "payload": { "query": "subscription { battleResults { id } }" } })
            .to_string()
    }

    /// A `graphql-transport-ws` connection past `connection_ack`.
    fn ready(max: usize) -> Connection {
        let mut c = Connection::new(Protocol::TransportWs, max);
        let a = c.on_text(r#"{"type":"connection_init","payload":{"authorization":"Bearer t"}}"#);
        assert!(matches!(&a[..], [Action::Authenticate(p)] if p["authorization"] == "Bearer t"));
        let a = c.on_init(InitOutcome::Accepted);
        assert_eq!(texts(&a), vec![json!({ "type": "connection_ack" })]);
        c
    }

    fn ok_response() -> Payload {
        Response::new(GqlValue::from_json(json!({ "x": 1 })).unwrap()).into()
    }

    #[test]
    fn the_first_supported_subprotocol_is_chosen() {
        assert_eq!(
            Protocol::negotiate(["foo, graphql-transport-ws", "graphql-ws"]),
            Some(Protocol::TransportWs)
        );
        assert_eq!(Protocol::negotiate(["graphql-ws"]), Some(Protocol::Legacy));
        assert_eq!(Protocol::negotiate(["soap"]), None);
        assert_eq!(Protocol::negotiate([]), None);
    }

    #[test]
    fn close_reasons_fit_a_close_frame_and_cut_on_a_character_boundary() {
        assert_eq!(fit_close_reason("short"), "short");
        let long = "é".repeat(100); // 200 bytes
        let cut = fit_close_reason(&long);
        assert!(cut.len() <= MAX_CLOSE_REASON);
        assert_eq!(cut.len(), 122, "61 two-byte characters");
        assert!(cut.chars().all(|c| c == 'é'));
        assert_eq!(fit_close_reason(&"a".repeat(500)).len(), MAX_CLOSE_REASON);
    }

    #[test]
    fn no_connection_init_before_the_timeout_closes_4408() {
        let mut c = Connection::new(Protocol::TransportWs, 10);
        assert!(c.awaiting_init());
        let a = c.on_init_timeout();
        assert_eq!(closed_with(&a).unwrap().0, close::INIT_TIMEOUT);
        assert!(c.is_closed());
        // Once connection_init arrived, the timeout no longer applies.
        let mut c = Connection::new(Protocol::TransportWs, 10);
        c.on_text(r#"{"type":"connection_init"}"#);
        assert!(c.on_init_timeout().is_empty());
    }

    #[test]
    fn subscribe_before_the_ack_closes_4401() {
        let mut c = Connection::new(Protocol::TransportWs, 10);
        assert_eq!(
            closed_with(&c.on_text(&subscribe("1"))),
            Some((close::UNAUTHORIZED, "Unauthorized".into()))
        );
        // Also while the credential is being checked.
        let mut c = Connection::new(Protocol::TransportWs, 10);
        c.on_text(r#"{"type":"connection_init"}"#);
        assert_eq!(
            closed_with(&c.on_text(&subscribe("1"))).unwrap().0,
            close::UNAUTHORIZED
        );
    }

    #[test]
    fn invalid_messages_close_4400_with_a_reason_that_fits() {
        let long_type = format!(r#"{{"type":"{}"}}"#, "x".repeat(300));
        for (label, text, after_ack) in [
            ("not JSON", "this is not json".to_owned(), false),
            ("an array", "[1,2]".to_owned(), true),
            ("no type", r#"{"id":"1"}"#.to_owned(), true),
            ("unknown type", r#"{"type":"nonsense"}"#.to_owned(), true),
            ("a long unknown type", long_type, true),
            (
                "subscribe without payload",
                r#"{"type":"subscribe","id":"1"}"#.to_owned(),
                true,
            ),
            (
                "subscribe without id",
                r#"{"type":"subscribe","payload":{"query":"{ a }"}}"#.to_owned(),
                true,
            ),
            (
                "subscribe with an empty id",
                r#"{"type":"subscribe","id":"","payload":{"query":"{ a }"}}"#.to_owned(),
                true,
            ),
            (
                "query not a string",
                r#"{"type":"subscribe","id":"1","payload":{"query":1}}"#.to_owned(),
                true,
            ),
            (
                "variables not an object",
                r#"{"type":"subscribe","id":"1","payload":{"query":"{ a }","variables":[]}}"#
                    .to_owned(),
                true,
            ),
            (
                "complete without id",
                r#"{"type":"complete"}"#.to_owned(),
                true,
            ),
            (
                "init payload not an object",
                r#"{"type":"connection_init","payload":"x"}"#.to_owned(),
                false,
            ),
            (
                "ping payload not an object",
                r#"{"type":"ping","payload":3}"#.to_owned(),
                true,
            ),
            (
                "a server message",
                r#"{"type":"next","id":"1","payload":{}}"#.to_owned(),
                true,
            ),
        ] {
            let mut c = if after_ack {
                ready(10)
            } else {
                Connection::new(Protocol::TransportWs, 10)
            };
            let (code, reason) =
                closed_with(&c.on_text(&text)).unwrap_or_else(|| panic!("{label}: not closed"));
            assert_eq!(code, close::BAD_REQUEST, "{label}: {reason}");
            assert!(
                reason.len() <= MAX_CLOSE_REASON,
                "{label}: {} bytes",
                reason.len()
            );
            assert!(
                reason.starts_with("Invalid message received"),
                "{label}: {reason}"
            );
        }
        let mut c = ready(10);
        assert_eq!(closed_with(&c.on_binary()).unwrap().0, close::BAD_REQUEST);
    }

    #[test]
    fn a_duplicate_subscription_id_closes_4409() {
        let mut c = ready(10);
        assert_eq!(started(&c.on_text(&subscribe("dup"))), vec!["dup"]);
        assert_eq!(
            closed_with(&c.on_text(&subscribe("dup"))),
            Some((
                close::SUBSCRIBER_EXISTS,
                "Subscriber for dup already exists".into()
            ))
        );
        // Once an operation ended, its id may be used again.
        let mut c = ready(10);
        c.on_text(&subscribe("1"));
        assert_eq!(
            texts(&c.on_end("1")),
            vec![json!({ "type": "complete", "id": "1" })]
        );
        assert_eq!(started(&c.on_text(&subscribe("1"))), vec!["1"]);
    }

    #[test]
    fn a_refused_credential_closes_4403_and_a_failure_4500() {
        let mut c = Connection::new(Protocol::TransportWs, 10);
        c.on_text(r#"{"type":"connection_init","payload":{"authorization":"Bearer nope"}}"#);
        let (code, reason) =
            closed_with(&c.on_init(InitOutcome::Refused("session is invalid".into()))).unwrap();
        assert_eq!(code, close::FORBIDDEN);
        assert_eq!(reason, "Forbidden: session is invalid");

        let mut c = Connection::new(Protocol::TransportWs, 10);
        c.on_text(r#"{"type":"connection_init"}"#);
        assert_eq!(
            closed_with(&c.on_init(InitOutcome::Failed)).unwrap().0,
            close::INTERNAL
        );
        let mut c = Connection::new(Protocol::TransportWs, 10);
        c.on_text(r#"{"type":"connection_init"}"#);
        assert_eq!(
            closed_with(&c.on_init(InitOutcome::Busy("busy".into())))
                .unwrap()
                .0,
            close::TRY_AGAIN_LATER
        );
    }

    #[test]
    fn a_second_connection_init_closes_4429() {
        let mut c = ready(10);
        assert_eq!(
            closed_with(&c.on_text(r#"{"type":"connection_init"}"#))
                .unwrap()
                .0,
            close::TOO_MANY_INIT
        );
        // Also while the first is being checked.
        let mut c = Connection::new(Protocol::TransportWs, 10);
        c.on_text(r#"{"type":"connection_init"}"#);
        assert_eq!(
            closed_with(&c.on_text(r#"{"type":"connection_init"}"#))
                .unwrap()
                .0,
            close::TOO_MANY_INIT
        );
    }

    #[test]
    fn ping_is_answered_with_pong_at_any_time_and_pong_is_accepted() {
        let mut c = Connection::new(Protocol::TransportWs, 10);
        assert_eq!(
            texts(&c.on_text(r#"{"type":"ping"}"#)),
            vec![json!({ "type": "pong" })]
        );
        let mut c = ready(10);
        assert_eq!(
            texts(&c.on_text(r#"{"type":"ping","payload":{"n":1}}"#)),
            vec![json!({ "type": "pong", "payload": { "n": 1 } })]
        );
        assert!(c.on_text(r#"{"type":"pong"}"#).is_empty());
        assert!(c.on_text(r#"{"type":"pong","payload":{"x":1}}"#).is_empty());
        assert!(!c.is_closed());
    }

    #[test]
    fn complete_from_the_client_stops_the_operation_without_a_complete() {
        let mut c = ready(10);
        c.on_text(&subscribe("1"));
        let a = c.on_text(r#"{"type":"complete","id":"1"}"#);
        assert!(matches!(&a[..], [Action::Stop(id)] if id == "1"));
        // Results or an end that were already under way are not sent.
        assert!(c.on_result("1", false, &ok_response()).is_empty());
        assert!(c.on_end("1").is_empty());
        // An unknown id is ignored.
        assert!(c.on_text(r#"{"type":"complete","id":"nope"}"#).is_empty());
        assert_eq!(c.operations(), 0);
    }

    #[test]
    fn results_are_next_and_the_end_is_complete() {
        let mut c = ready(10);
        c.on_text(&subscribe("q"));
        assert_eq!(
            texts(&c.on_result("q", true, &ok_response())),
            vec![json!({ "type": "next", "id": "q", "payload": { "data": { "x": 1 } } })]
        );
        assert_eq!(
            texts(&c.on_end("q")),
            vec![json!({ "type": "complete", "id": "q" })]
        );
    }

    #[test]
    fn errors_before_execution_are_an_error_message_that_ends_the_operation() {
        let mut c = ready(10);
        c.on_text(&subscribe("bad"));
        let mut err = ServerError::new("Unknown field \"nope\"", None);
        err.extensions = Some({
            let mut e = async_graphql::ErrorExtensionValues::default();
            e.set("code", "BAD_USER_INPUT");
            e
        });
        let a = c.on_result("bad", true, &Response::from_errors(vec![err]).into());
        let sent = texts(&a);
        assert_eq!(sent[0]["type"], "error");
        assert_eq!(
            sent[0]["payload"][0]["extensions"]["code"],
            "BAD_USER_INPUT"
        );
        assert!(matches!(a.last(), Some(Action::Stop(id)) if id == "bad"));
        assert!(c.on_end("bad").is_empty(), "no complete after error");
        // An execution error (with a path) is a result like any other.
        c.on_text(&subscribe("exec"));
        let mut err = ServerError::new("sign in first", None);
        err.path = vec![async_graphql::PathSegment::Field("me".into())];
        let mut resp = Response::from_errors(vec![err]);
        resp.data = GqlValue::Null;
        assert_eq!(
            texts(&c.on_result("exec", true, &resp.into()))[0]["type"],
            "next"
        );
    }

    #[test]
    fn a_subscribe_over_the_cap_gets_an_error_and_the_others_go_on() {
        let mut c = ready(2);
        assert_eq!(started(&c.on_text(&subscribe("1"))), vec!["1"]);
        assert_eq!(started(&c.on_text(&subscribe("2"))), vec!["2"]);
        let a = c.on_text(&subscribe("3"));
        assert!(started(&a).is_empty());
        assert!(closed_with(&a).is_none());
        let sent = texts(&a);
        assert_eq!(sent[0]["type"], "error");
        assert_eq!(sent[0]["id"], "3");
        assert_eq!(sent[0]["payload"][0]["extensions"]["code"], "RATE_LIMITED");
        // The refused id is not remembered: it may be sent again once there is room.
        assert_eq!(c.operations(), 2);
        assert_eq!(
            texts(&c.on_result("1", true, &ok_response()))[0]["type"],
            "next"
        );
        c.on_text(r#"{"type":"complete","id":"2"}"#);
        assert_eq!(started(&c.on_text(&subscribe("3"))), vec!["3"]);
    }

    #[test]
    fn the_legacy_protocol_acknowledges_with_ka_and_starts_early_operations_after_the_ack() {
        let mut c = Connection::new(Protocol::Legacy, 10);
        c.on_text(r#"{"type":"connection_init","payload":{}}"#);
        // subscriptions-transport-ws sends `start` before the ack arrives.
        let early = json!({ "type": "start", "id": "1", "payload": { "query": "subscription { battleResults { id } }" } }).to_string();
        assert!(c.on_text(&early).is_empty());
        let a = c.on_init(InitOutcome::Accepted);
        assert_eq!(
            texts(&a),
            vec![json!({ "type": "connection_ack" }), json!({ "type": "ka" })]
        );
        assert_eq!(started(&a), vec!["1"]);
        assert_eq!(
            texts(&c.on_result("1", true, &ok_response())),
            vec![json!({ "type": "data", "id": "1", "payload": { "data": { "x": 1 } } })]
        );
        assert!(matches!(c.on_keep_alive(), Some(Action::Send(t)) if t == r#"{"type":"ka"}"#));
        // stop → complete.
        let a = c.on_text(r#"{"type":"stop","id":"1"}"#);
        assert!(matches!(&a[0], Action::Stop(id) if id == "1"));
        assert_eq!(texts(&a), vec![json!({ "type": "complete", "id": "1" })]);
        // connection_terminate closes normally.
        assert_eq!(
            closed_with(&c.on_text(r#"{"type":"connection_terminate"}"#))
                .unwrap()
                .0,
            close::NORMAL
        );
    }

    #[test]
    fn the_legacy_protocol_refuses_a_bad_credential_with_connection_error() {
        let mut c = Connection::new(Protocol::Legacy, 10);
        c.on_text(r#"{"type":"connection_init","payload":{"authorization":"Bearer nope"}}"#);
        let a = c.on_init(InitOutcome::Refused("session is invalid".into()));
        let sent = texts(&a);
        assert_eq!(sent[0]["type"], "connection_error");
        assert_eq!(sent[0]["payload"]["extensions"]["code"], "UNAUTHENTICATED");
        assert!(closed_with(&a).is_some());
    }

    #[test]
    fn the_legacy_protocol_reports_bad_messages_without_closing() {
        let mut c = Connection::new(Protocol::Legacy, 10);
        assert_eq!(texts(&c.on_text("garbage"))[0]["type"], "connection_error");
        c.on_text(r#"{"type":"connection_init"}"#);
        c.on_init(InitOutcome::Accepted);
        let sent = texts(&c.on_text(r#"{"type":"what","id":"9"}"#));
        assert_eq!(sent[0]["type"], "error");
        assert_eq!(sent[0]["id"], "9");
        assert!(!c.is_closed());
        // Over the cap: an error for that id.
        let mut c = Connection::new(Protocol::Legacy, 1);
        c.on_text(r#"{"type":"connection_init"}"#);
        c.on_init(InitOutcome::Accepted);
        let start = |id: &str| {
            json!({ "type": "start", "id": id, "payload": { "query": "{ a }" } }).to_string()
        };
        assert_eq!(started(&c.on_text(&start("1"))), vec!["1"]);
        let sent = texts(&c.on_text(&start("2")));
        assert_eq!(sent[0]["type"], "error");
        assert_eq!(sent[0]["payload"]["extensions"]["code"], "RATE_LIMITED");
        // Starting an id again replaces the operation.
        let a = c.on_text(&start("1"));
        assert!(matches!(&a[0], Action::Stop(id) if id == "1"));
        assert_eq!(started(&a), vec!["1"]);
    }
}
