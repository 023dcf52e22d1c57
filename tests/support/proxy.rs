//! A TCP proxy in front of the API server that a test can cut: one operator replica talks
//! to the API server through it, and `cut` leaves that replica partitioned from the
//! cluster (open connections dropped, new ones refused) while it still reaches the
//! provider, the way a network partition would.
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;

pub struct ApiProxy {
    port: u16,
    cut: Arc<AtomicBool>,
    tasks: Arc<std::sync::Mutex<JoinSet<()>>>,
    accept: tokio::task::JoinHandle<()>,
}

impl ApiProxy {
    /// Forwards 127.0.0.1:<free port> to `upstream` (`https://host:port` or `host:port`).
    pub async fn start(upstream: &str) -> ApiProxy {
        let target = upstream
            .trim_start_matches("https://")
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .to_string();
        let listener = TcpListener::bind(("127.0.0.1", super::free_port()))
            .await
            .expect("bind the API proxy");
        let port = listener.local_addr().expect("proxy address").port();
        let cut = Arc::new(AtomicBool::new(false));
        let tasks = Arc::new(std::sync::Mutex::new(JoinSet::new()));
        let (c, t) = (cut.clone(), tasks.clone());
        let accept = tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                if c.load(Ordering::SeqCst) {
                    continue;
                }
                let target = target.clone();
                let mut set = t.lock().unwrap_or_else(|e| e.into_inner());
                set.spawn(async move {
                    if let Ok(mut outbound) = TcpStream::connect(&target).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
            }
        });
        ApiProxy {
            port,
            cut,
            tasks,
            accept,
        }
    }

    /// `https://127.0.0.1:<port>`, for a kubeconfig.
    pub fn url(&self) -> String {
        format!("https://127.0.0.1:{}", self.port)
    }

    /// Drops every open connection and refuses new ones from now on.
    pub fn cut(&self) {
        self.cut.store(true, Ordering::SeqCst);
        self.accept.abort();
        self.tasks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .abort_all();
    }
}

impl Drop for ApiProxy {
    fn drop(&mut self) {
        self.cut();
    }
}
