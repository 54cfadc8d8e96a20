//! `diloco-console` served in-process for tests: on a thread and runtime of its own, so that
//! everything it logs (and its dependencies log) is captured and can be searched for secrets.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use diloco_console::ConsoleSettings;
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::util::SubscriberInitExt;

use crate::local_cluster::client_from_kubeconfig;

/// A running console.
pub struct ConsoleServer {
    /// `http://127.0.0.1:<port>`.
    pub url: String,
    log: Capture,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
}

impl ConsoleServer {
    /// Serves a console that talks to Kubernetes with `kubeconfig` and reaches the coordinators
    /// named in `resolve` (by `<name>-control.<ns>.svc.cluster.local`) at those addresses.
    pub fn start(kubeconfig: &Path, resolve: BTreeMap<String, SocketAddr>) -> Self {
        let log = Capture::default();
        let (url_sender, url_receiver) = std::sync::mpsc::channel();
        let (shutdown, stop) = tokio::sync::oneshot::channel::<()>();
        let kubeconfig: PathBuf = kubeconfig.to_path_buf();
        let writer = log.clone();
        let _ = rustls::crypto::ring::default_provider().install_default();
        std::thread::spawn(move || {
            // Everything this thread runs (the console and every task it spawns on its
            // current-thread runtime) logs into the capture, at debug level.
            let _guard = tracing_subscriber::fmt()
                .with_writer(writer)
                .with_max_level(LevelFilter::DEBUG)
                .with_ansi(false)
                .finish()
                .set_default();
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime for the console");
            runtime.block_on(async move {
                let client = client_from_kubeconfig(&kubeconfig)
                    .await
                    .expect("a client for the console");
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                    .await
                    .expect("bind a loopback port");
                let address = listener.local_addr().expect("the bound address");
                let _ = url_sender.send(format!("http://{address}"));
                let settings = ConsoleSettings {
                    resolve,
                    ..ConsoleSettings::default()
                };
                diloco_console::serve(listener, client, settings, async move {
                    let _ = stop.await;
                })
                .await
                .expect("the console serves");
            });
        });
        let url = url_receiver
            .recv_timeout(std::time::Duration::from_secs(30))
            .expect("the console started listening");
        Self {
            url,
            log,
            shutdown: Some(shutdown),
        }
    }

    /// Everything the console has logged so far.
    pub fn log(&self) -> String {
        String::from_utf8_lossy(&self.log.0.lock().unwrap_or_else(|e| e.into_inner())).into_owned()
    }
}

impl Drop for ConsoleServer {
    fn drop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
    }
}

/// A log sink shared with the console's thread.
#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Capture {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for Capture {
    type Writer = Capture;

    fn make_writer(&'a self) -> Capture {
        self.clone()
    }
}
