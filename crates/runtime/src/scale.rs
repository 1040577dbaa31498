//! Scaling a pod to zero and back (Apocryph's `replicas: {min: 0}`): the
//! shim stops the pod's containers once no connection has come through its
//! ports for a while, and starts them again when one arrives, holding that
//! connection until the container listens.
//!
//! Only what the shim sees counts as use: connections forwarded through the
//! pod's ports (public ones and the HTTP entry point's). The pod's volumes,
//! network namespace and root filesystems stay; only its processes go.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// When a pod with `replicas.min == 0` gives its processes up.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub struct ScaleToZero {
    /// How long without a connection before the containers stop, in
    /// milliseconds.
    pub idle_ms: u64,
}

/// How long a woken pod may take before its port accepts a connection.
pub const WAKE_TIMEOUT: Duration = Duration::from_secs(60);

/// How long a container has to stop after SIGTERM before it is killed.
pub const STOP_GRACE: Duration = Duration::from_secs(3);

/// Connections through a pod's ports: how many are open, and since when
/// none has been.
#[derive(Debug)]
pub(crate) struct Activity {
    epoch: Instant,
    open: AtomicUsize,
    /// Milliseconds after `epoch` when the last connection ended (or began).
    last_ms: AtomicU64,
}

impl Activity {
    pub(crate) fn new() -> Arc<Activity> {
        Arc::new(Activity { epoch: Instant::now(), open: AtomicUsize::new(0), last_ms: AtomicU64::new(0) })
    }

    fn touch(&self) {
        self.last_ms.store(self.epoch.elapsed().as_millis() as u64, Ordering::Relaxed);
    }

    /// Counts a connection as open until the guard is dropped.
    pub(crate) fn begin(self: &Arc<Self>) -> OpenConnection {
        self.open.fetch_add(1, Ordering::SeqCst);
        self.touch();
        OpenConnection(self.clone())
    }

    /// How long the pod has been without any open connection; `None` while
    /// one is open.
    pub(crate) fn idle_for(&self) -> Option<Duration> {
        if self.open.load(Ordering::SeqCst) > 0 {
            return None;
        }
        let last = Duration::from_millis(self.last_ms.load(Ordering::Relaxed));
        Some(self.epoch.elapsed().saturating_sub(last))
    }

    /// Starts the idle clock again (when the pod wakes).
    pub(crate) fn reset(&self) {
        self.touch();
    }
}

/// An open connection, counted by [`Activity`] until dropped.
pub(crate) struct OpenConnection(Arc<Activity>);

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.touch();
        self.0.open.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Connects with `connect` until it works or `timeout` passes: a container
/// just started needs a moment before it listens. Waits 1 ms, growing to
/// 20 ms, between tries.
pub(crate) async fn connect_when_listening<T, E, F>(timeout: Duration, connect: F) -> Result<T, E>
where
    F: Fn() -> Result<T, E> + Send + Sync + Clone + 'static,
    T: Send + 'static,
    E: Send + 'static,
{
    let deadline = Instant::now() + timeout;
    let mut pause = Duration::from_millis(1);
    loop {
        let attempt = connect.clone();
        let result = tokio::task::spawn_blocking(attempt).await.expect("connect task panicked");
        match result {
            Ok(stream) => return Ok(stream),
            Err(e) if Instant::now() >= deadline => return Err(e),
            Err(_) => {
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_millis(20));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pod_is_idle_only_while_no_connection_is_open() {
        let activity = Activity::new();
        let open = activity.begin();
        assert_eq!(activity.idle_for(), None);
        std::thread::sleep(Duration::from_millis(20));
        drop(open);
        let idle = activity.idle_for().unwrap();
        assert!(idle < Duration::from_millis(20), "the clock starts when the last connection ends: {idle:?}");
        std::thread::sleep(Duration::from_millis(30));
        assert!(activity.idle_for().unwrap() >= Duration::from_millis(30));
    }

    #[tokio::test]
    async fn connecting_retries_until_the_port_listens() {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let listener = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(100)).await;
            std::net::TcpListener::bind(("127.0.0.1", port)).unwrap()
        });
        let stream =
            connect_when_listening(Duration::from_secs(5), move || std::net::TcpStream::connect(("127.0.0.1", port)))
                .await;
        assert!(stream.is_ok());
        drop(listener.await);
        // Hold the port bound but not listening: nothing else on the machine (a
        // cluster's ephemeral listeners, a TCP self-connect to a free port) can then
        // answer on it, so the refusal below is the only possible outcome.
        let held = tokio::net::TcpSocket::new_v4().unwrap();
        held.bind(([127, 0, 0, 1], port).into()).unwrap();
        let refused = connect_when_listening(Duration::from_millis(50), move || {
            std::net::TcpStream::connect(("127.0.0.1", port))
        })
        .await;
        assert!(refused.is_err());
        drop(held);
    }
}
