//! The accept loop. It serves each connection with hyper directly (rather than `axum::serve`) so that a handler
//! can make its own connection close without an answer: the connection-reset and lost-response faults need that,
//! and no response value can express it.

use std::{sync::Arc, time::Duration};

use axum::Router;
use hyper::{body::Incoming, server::conn::http1, service::service_fn};
use hyper_util::rt::TokioIo;
use tokio::{
    net::{TcpListener, TcpStream},
    sync::Notify,
    task::JoinSet,
};
use tower::ServiceExt;

/// Put into every request's extensions: closes the connection the request came on.
#[derive(Clone, Debug)]
pub(crate) struct ConnectionKill(Arc<Notify>);

impl ConnectionKill {
    pub(crate) fn close(&self) {
        // notify_one keeps a permit if the connection task is not waiting yet, so the close is never lost.
        self.0.notify_one();
    }
}

/// Accepts connections until the task is aborted; aborting it also aborts every connection (the `JoinSet`).
pub(crate) async fn serve(listener: TcpListener, router: Router) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    connections.spawn(connection(stream, router.clone()));
                }
                Err(err) => {
                    // Usually out of file descriptors; give the clients a moment to let go of some.
                    tracing::warn!("emulator: accept failed: {err}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            // Reap finished connections so the set does not grow without bound.
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

async fn connection(stream: TcpStream, router: Router) {
    let _ = stream.set_nodelay(true);
    let kill = ConnectionKill(Arc::new(Notify::new()));
    let tag = kill.clone();
    let service = service_fn(move |mut request: hyper::Request<Incoming>| {
        request.extensions_mut().insert(tag.clone());
        router.clone().oneshot(request)
    });
    let served = http1::Builder::new().serve_connection(TokioIo::new(stream), service);
    tokio::select! {
        result = served => {
            if let Err(err) = result {
                tracing::debug!("emulator: connection ended: {err}");
            }
        }
        // Dropping `served` drops the socket (and the request in flight) without writing anything.
        () = kill.0.notified() => {}
    }
}
