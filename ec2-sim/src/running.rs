//! A simulator serving in the background of the current tokio runtime, stopped when the handle goes away, so a
//! test cannot leave a server behind.

use std::io;
use std::net::SocketAddr;

use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::sim::Simulator;

#[derive(Debug)]
pub struct RunningSimulator {
    pub sim: Simulator,
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<io::Result<()>>>,
}

impl RunningSimulator {
    pub(crate) fn spawn(sim: Simulator, listener: TcpListener) -> io::Result<RunningSimulator> {
        let addr = listener.local_addr()?;
        let (stop, stopped) = oneshot::channel::<()>();
        let server = sim.clone();
        let task = tokio::spawn(async move {
            // Resolves on an explicit stop and when the sender is dropped with the handle.
            let shutdown = async move {
                let _ = stopped.await;
            };
            server.serve(listener, shutdown).await
        });
        Ok(RunningSimulator { sim, addr, stop: Some(stop), task: Some(task) })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// What to give the SDK as endpoint override, e.g. `http://127.0.0.1:40123`.
    pub fn endpoint_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stops accepting, lets in-flight requests finish (bounded), and waits until the server is gone.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            match task.await {
                Ok(Ok(())) => {}
                Ok(Err(err)) => tracing::warn!(%err, "simulator server failed"),
                Err(err) => tracing::warn!(%err, "simulator server task failed"),
            }
        }
    }
}

impl Drop for RunningSimulator {
    /// Signals the server to stop; it finishes in the background (or with the runtime).
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}
