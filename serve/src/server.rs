//! The accept loops, one connection task per client, and the shutdown sequence.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::api::{self, State};
use crate::builds::Builds;
use crate::engine_calls::Backend;
use crate::listen::{Accepted, Conn, Listener};
use crate::{ServeConfig, ServeError};

/// The largest request head (request line and headers), answered 431 beyond: Docker's
/// clients send a few KiB at most (`X-Registry-Config` grows with the registries).
const MAX_HEAD: usize = 64 * 1024;
/// A client must send its request head within this time (slowloris).
const HEAD_TIMEOUT: Duration = Duration::from_secs(30);
/// A TLS handshake must finish within this time.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// After cancelling, how long builds get to unwind (kill their sandboxes, unmount).
const CANCEL_GRACE: Duration = Duration::from_secs(30);
/// After the builds, how long open connections get to finish their answers.
const DRAIN_GRACE: Duration = Duration::from_secs(5);

/// A bound server: the sockets exist and accept once [`Server::run`] is called.
pub struct Server {
    listeners: Vec<Listener>,
    state: Arc<State>,
    config: ServeConfig,
}

/// How the server stopped.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stopped {
    /// Builds running when the stop signal came.
    pub running: usize,
    /// Builds cancelled because `shutdown_timeout` ran out.
    pub cancelled: usize,
    /// Builds still running after the cancel grace (should be 0).
    pub stuck: usize,
}

impl Server {
    /// Binds every host of `config` (the sockets are there when this returns).
    pub async fn bind(backend: Backend, config: ServeConfig) -> Result<Server, ServeError> {
        let mut listeners = Vec::new();
        for host in &config.hosts {
            listeners.push(Listener::bind(host, &config.tls, &config.socket).await?);
        }
        let state = Arc::new(State {
            backend,
            builds: Builds::new(),
            max_body: config.max_context_size,
            insecure_entitlements: config.insecure_entitlements.clone(),
        });
        Ok(Server {
            listeners,
            state,
            config,
        })
    }

    /// Serves until `shutdown` resolves, then stops as [`crate`] describes.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> Stopped {
        let Server {
            listeners,
            state,
            config,
        } = self;
        let (stop_sender, stop) = watch::channel(false);
        let mut loops = JoinSet::new();
        for listener in listeners {
            loops.spawn(accept_loop(listener, Arc::clone(&state), stop.clone()));
        }
        shutdown.await;
        let mut stopped = Stopped {
            running: state.builds.running(),
            ..Stopped::default()
        };
        let _ = stop_sender.send(true);
        if tokio::time::timeout(config.shutdown_timeout, state.builds.idle())
            .await
            .is_err()
        {
            stopped.cancelled = state.builds.running();
            state.builds.cancel_all();
            if tokio::time::timeout(CANCEL_GRACE, state.builds.idle())
                .await
                .is_err()
            {
                stopped.stuck = state.builds.running();
            }
        }
        let _ = tokio::time::timeout(DRAIN_GRACE, async {
            while loops.join_next().await.is_some() {}
        })
        .await;
        stopped
    }
}

async fn accept_loop(listener: Listener, state: Arc<State>, mut stop: watch::Receiver<bool>) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => {
                    connections.spawn(connection(accepted, Arc::clone(&state), stop.clone()));
                }
                Err(e) => {
                    // EMFILE and the like: wait a little rather than spin.
                    tracing::warn!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            _ = stop.changed() => break,
        }
        while connections.try_join_next().is_some() {}
    }
    // The socket file goes now: a new server may start while this one drains.
    drop(listener);
    while connections.join_next().await.is_some() {}
}

async fn connection(accepted: Accepted, state: Arc<State>, stop: watch::Receiver<bool>) {
    let io: Box<dyn Conn> = match accepted {
        Accepted::Plain(io) => io,
        Accepted::Tls(stream, acceptor) => {
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                Ok(Ok(tls)) => Box::new(tls),
                Ok(Err(e)) => {
                    tracing::info!("TLS handshake refused: {e}");
                    return;
                }
                Err(_) => return,
            }
        }
    };
    serve_connection(io, state, stop).await;
}

/// Resolves once the stop signal is set (at once if it is).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    loop {
        if *stop.borrow_and_update() {
            return;
        }
        if stop.changed().await.is_err() {
            return;
        }
    }
}

async fn serve_connection(io: Box<dyn Conn>, state: Arc<State>, mut stop: watch::Receiver<bool>) {
    let service = service_fn(move |request| api::handle(Arc::clone(&state), request));
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(HEAD_TIMEOUT)
        .max_header_size(MAX_HEAD)
        .max_buf_size(4 * MAX_HEAD);
    let conn = builder.serve_connection(TokioIo::new(io), service);
    tokio::pin!(conn);
    tokio::select! {
        result = conn.as_mut() => {
            if let Err(e) = result {
                tracing::debug!("connection ended: {e}");
            }
        }
        _ = stopped(&mut stop) => {
            // Finish the request in flight (a build streams until it ends), then close.
            conn.as_mut().graceful_shutdown();
            let _ = conn.as_mut().await;
        }
    }
}
