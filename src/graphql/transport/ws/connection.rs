//! One WebSocket connection: a single task that reads the client's messages, feeds them to
//! the protocol's [`Connection`] state machine, runs the operations it starts over
//! [`Schema::execute_stream_with_session_data`](async_graphql::Schema), and writes what it
//! answers. Nothing is queued between reading and writing: a client that does not read
//! makes the server stop reading it, so one socket cannot pile up memory.

use std::sync::Arc;
use std::time::Duration;

use async_graphql::Data;
use axum::extract::ws::{CloseFrame, Message, WebSocket};
use futures::future::BoxFuture;
use futures::stream::{self, BoxStream, StreamExt};
use futures::SinkExt;
use std::collections::HashMap;

use futures::stream::{AbortHandle, Abortable, SelectAll};

use super::limits::Slot;
use super::protocol::{close, Action, Connection, InitOutcome, Protocol};
use crate::error::{AppError, AppResult};
use crate::graphql::engine::pipeline::{Payload, Pipeline};
use crate::viewer::{Authenticator, ClientAddr, RequestAuth, Viewer};

/// The legacy protocol's `ka`, and a WebSocket ping on `graphql-transport-ws`, this often:
/// proxies keep the connection, and writes to a peer that vanished eventually fail.
/// subscriptions-transport-ws clients expect a `ka` within 30 s of the last one.
const KEEP_ALIVE: Duration = Duration::from_secs(12);

/// A client that takes longer than this to accept one message is dropped.
const SEND_TIMEOUT: Duration = Duration::from_secs(30);

/// How long to wait for the client's answer to our close frame.
const CLOSE_GRACE: Duration = Duration::from_secs(2);

/// What a connection runs with.
pub struct Context {
    /// Where operations run.
    pub pipeline: Arc<Pipeline>,
    /// The client's address, that failed credential checks count against.
    pub client: ClientAddr,
    /// Checks the `connection_init` credential.
    pub authenticator: Arc<dyn Authenticator>,
    /// Operations one connection may run at once.
    pub max_operations: usize,
    /// How long to wait for `connection_init`.
    pub init_timeout: Duration,
    /// Largest message accepted (the socket refuses larger ones).
    pub max_message: usize,
}

/// Results of one operation, with its id: `Some((first, response))`, then `None` once it
/// ended (not after it was stopped).
type Results = BoxStream<'static, (String, Option<(bool, Payload)>)>;

fn results(id: String, stream: BoxStream<'static, Payload>) -> (Results, AbortHandle) {
    let (handle, registration) = AbortHandle::new_pair();
    let end = id.clone();
    let stopped = handle.clone();
    let stream = Abortable::new(stream.enumerate(), registration)
        .map(move |(i, r)| (id.clone(), Some((i == 0, r))))
        .chain(stream::once(async move { (end, None) }).filter(move |_| {
            // A stopped operation ends without its `None`.
            let stopped = stopped.is_aborted();
            async move { !stopped }
        }))
        .boxed();
    (stream, handle)
}

/// The operations of a connection: polled together, each woken on its own (a wake-up of
/// one costs nothing for the others, however many run), stopped by id.
#[derive(Default)]
struct Operations {
    streams: SelectAll<Results>,
    running: HashMap<String, AbortHandle>,
}

impl Operations {
    fn insert(&mut self, id: String, stream: BoxStream<'static, Payload>) {
        let (stream, handle) = results(id.clone(), stream);
        if let Some(old) = self.running.insert(id, handle) {
            old.abort();
        }
        self.streams.push(stream);
    }

    fn remove(&mut self, id: &str) {
        if let Some(handle) = self.running.remove(id) {
            handle.abort();
        }
    }

    fn len(&self) -> usize {
        self.running.len()
    }
}

/// How the check of the `connection_init` credential came out, for the state machine.
fn outcome_of(result: &AppResult<Option<Viewer>>) -> InitOutcome {
    match result {
        Ok(_) => InitOutcome::Accepted,
        Err(AppError::RateLimited(why) | AppError::Timeout(why)) => InitOutcome::Busy(why.clone()),
        Err(AppError::Internal(cause)) => {
            tracing::error!(error = ?cause, "checking a WebSocket connection_init");
            InitOutcome::Failed
        }
        Err(e) => InitOutcome::Refused(e.message()),
    }
}

/// Serves one upgraded connection until it closes.
pub async fn serve(mut socket: WebSocket, protocol: Option<Protocol>, cx: Context, slot: Slot) {
    let Some(protocol) = protocol else {
        close_socket(
            &mut socket,
            close::SUBPROTOCOL_NOT_ACCEPTABLE,
            "Subprotocol not acceptable",
        )
        .await;
        return;
    };
    let mut slot = slot;
    let mut machine = Connection::new(protocol, cx.max_operations);
    let mut ops = Operations::default();
    let mut reported_ops = 0usize;
    // Set once acknowledged: the connection's credential (checked again by every operation,
    // see `PerOperationAuth`) and its DataLoaders.
    let mut session: Option<Arc<Data>> = None;
    let mut auth: Option<(RequestAuth, BoxFuture<'static, AppResult<Option<Viewer>>>)> = None;
    let init_deadline = tokio::time::sleep(cx.init_timeout);
    tokio::pin!(init_deadline);
    let mut keep_alive =
        tokio::time::interval_at(tokio::time::Instant::now() + KEEP_ALIVE, KEEP_ALIVE);
    keep_alive.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);

    let metrics = cx.pipeline.state().metrics.clone();
    'conn: loop {
        let actions = tokio::select! {
            msg = socket.recv() => match msg {
                Some(Ok(Message::Text(text))) => machine.on_text(text.as_str()),
                Some(Ok(Message::Binary(_))) => machine.on_binary(),
                // Pings are answered by the socket itself.
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                Some(Ok(Message::Close(_))) => {
                    // The socket has queued its answering close frame: send it.
                    let _ = tokio::time::timeout(CLOSE_GRACE, socket.flush()).await;
                    break 'conn;
                }
                None => break 'conn,
                Some(Err(e)) => {
                    if is_too_long(&e) {
                        let actions = machine.on_too_big(cx.max_message);
                        run(&mut socket, actions, &cx, &mut ops, &mut auth, &session).await;
                    }
                    break 'conn;
                }
            },
            result = async { auth.as_mut().expect("guarded").1.as_mut().await }, if auth.is_some() => {
                let (request_auth, _) = auth.take().expect("guarded");
                let outcome = outcome_of(&result);
                if outcome == InitOutcome::Accepted {
                    if matches!(result, Ok(Some(_))) {
                        slot.authenticated();
                    }
                    let mut data = Data::default();
                    data.insert(request_auth);
                    session = Some(Arc::new(data));
                }
                machine.on_init(outcome)
            },
            () = &mut init_deadline, if machine.awaiting_init() => machine.on_init_timeout(),
            Some((id, item)) = ops.streams.next(), if !ops.streams.is_empty() => match item {
                Some((first, response)) => machine.on_result(&id, first, &response),
                None => {
                    ops.remove(&id);
                    machine.on_end(&id)
                }
            },
            _ = keep_alive.tick() => match machine.on_keep_alive() {
                Some(action) => vec![action],
                None if protocol == Protocol::TransportWs => {
                    if !send(&mut socket, Message::Ping(Default::default())).await {
                        break 'conn;
                    }
                    continue;
                }
                None => continue,
            },
        };
        let open = run(&mut socket, actions, &cx, &mut ops, &mut auth, &session).await;
        let now = ops.len();
        if now != reported_ops {
            metrics.ws_operations.add(now as i64 - reported_ops as i64);
            reported_ops = now;
        }
        if !open {
            break;
        }
    }
    metrics.ws_operations.sub(reported_ops as i64);
}

/// Carries out `actions`; `false` once the connection is closed.
async fn run(
    socket: &mut WebSocket,
    actions: Vec<Action>,
    cx: &Context,
    ops: &mut Operations,
    auth: &mut Option<(RequestAuth, BoxFuture<'static, AppResult<Option<Viewer>>>)>,
    session: &Option<Arc<Data>>,
) -> bool {
    for action in actions {
        match action {
            Action::Send(text) => {
                if !send(socket, Message::Text(text.into())).await {
                    return false;
                }
            }
            Action::Close { code, reason } => {
                close_socket(socket, code, &reason).await;
                return false;
            }
            Action::Authenticate(payload) => {
                let request_auth =
                    RequestAuth::from_init_payload(&payload, cx.client, cx.authenticator.clone());
                let checking = request_auth.clone();
                *auth = Some((
                    request_auth,
                    Box::pin(async move { checking.viewer().await }),
                ));
            }
            Action::Start { id, request } => {
                let Some(session) = session else {
                    // The machine starts operations only once acknowledged.
                    tracing::error!("a WebSocket operation started before its session");
                    close_socket(socket, close::INTERNAL, "Internal server error").await;
                    return false;
                };
                let stream = cx.pipeline.execute_stream(
                    *request,
                    Some(session.clone()),
                    crate::graphql::engine::pipeline::Transport::WebSocket,
                );
                ops.insert(id, stream);
            }
            Action::Stop(id) => {
                ops.remove(&id);
            }
        }
    }
    true
}

/// Sends one message; `false` when the client is gone or too slow to take it.
async fn send(socket: &mut WebSocket, msg: Message) -> bool {
    matches!(
        tokio::time::timeout(SEND_TIMEOUT, socket.send(msg)).await,
        Ok(Ok(()))
    )
}

/// Sends a close frame and waits (briefly) for the client's, so the frame is read before
/// the TCP connection goes.
async fn close_socket(socket: &mut WebSocket, code: u16, reason: &str) {
    let frame = CloseFrame {
        code,
        reason: super::protocol::fit_close_reason(reason).into(),
    };
    if !send(socket, Message::Close(Some(frame))).await {
        return;
    }
    let _ = tokio::time::timeout(CLOSE_GRACE, async {
        while let Some(Ok(msg)) = socket.recv().await {
            if matches!(msg, Message::Close(_)) {
                break;
            }
        }
    })
    .await;
}

/// Whether a receive error is the socket refusing a frame over `max_message_size`: the
/// error is tungstenite's own, under axum's wrapper, so it is told apart by type.
fn is_too_long(e: &axum::Error) -> bool {
    use tungstenite::error::{CapacityError, Error};
    std::error::Error::source(e)
        .and_then(|inner| inner.downcast_ref::<Error>())
        .is_some_and(|inner| matches!(inner, Error::Capacity(CapacityError::MessageTooLong { .. })))
}
