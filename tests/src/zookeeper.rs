//! A real ZooKeeper 3.8 server (the Debian package's jars), one per test.
//!
//! Each server has its own data and configuration directories in a temporary directory
//! and listens on a free loopback port. A short tick (100 ms) lets tests ask for session
//! timeouts of a few seconds, so expiry and failover happen within a test's time.

use std::fmt::Write as _;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use tempfile::TempDir;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::ports::free_port;
use crate::process::{Process, require_file, require_program};
use crate::tail;

const JARS: [&str; 3] = [
    "/usr/share/java/zookeeper.jar",
    "/usr/share/java/slf4j-log4j12.jar",
    "/usr/share/java/log4j-1.2.jar",
];

/// How long a start may take before the test fails with the server's log.
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// A standalone ZooKeeper server. Dropping it kills the process and removes its files,
/// also when the test panics.
#[derive(Debug)]
pub struct ZooKeeper {
    port: u16,
    dir: TempDir,
    process: Option<Process>,
}

impl ZooKeeper {
    /// Starts a server on a free port and waits until it serves requests.
    pub async fn start() -> ZooKeeper {
        let java = require_program("java");
        for jar in JARS {
            require_file(Path::new(jar));
        }
        let dir = tempfile::Builder::new()
            .prefix("larder-zk-")
            .tempdir()
            .expect("cannot create a temporary directory");
        let mut zk = ZooKeeper {
            port: 0,
            dir,
            process: None,
        };
        let mut last_failure = String::new();
        // A port found free may be taken by another test process before the server binds
        // it; the server then exits and a new port is tried.
        for _ in 0..3 {
            zk.port = free_port();
            zk.write_config();
            match zk.launch(&java).await {
                Ok(()) => return zk,
                Err(failure) => last_failure = failure,
            }
        }
        panic!("{last_failure}");
    }

    /// `127.0.0.1:<port>`, the connect string of this server.
    pub fn connect_string(&self) -> String {
        self.address().to_string()
    }

    pub fn address(&self) -> SocketAddr {
        SocketAddr::from((Ipv4Addr::LOCALHOST, self.port))
    }

    /// Whether the process is running (it may be paused).
    pub fn is_running(&mut self) -> bool {
        self.process.as_mut().is_some_and(|p| p.exited().is_none())
    }

    /// SIGTERM, then waits for the process to end (killing it after 10 s).
    pub async fn stop(&mut self) {
        if let Some(mut process) = self.process.take() {
            process.terminate(Duration::from_secs(10)).await;
        }
    }

    /// SIGKILL: the server dies at once, as in a crash. Its data directory stays.
    pub fn kill(&mut self) {
        if let Some(mut process) = self.process.take() {
            process.kill();
        }
    }

    /// Starts the server again on the same port with the same data directory (after
    /// [`stop`](Self::stop) or [`kill`](Self::kill)); sessions and znodes survive.
    pub async fn start_again(&mut self) {
        assert!(
            self.process.is_none(),
            "start_again: the ZooKeeper server is still running"
        );
        let java = require_program("java");
        if let Err(failure) = self.launch(&java).await {
            panic!("{failure}");
        }
    }

    /// SIGSTOP: the server keeps its connections open but answers nothing, as a long GC
    /// pause or a frozen VM would.
    pub fn pause(&self) {
        self.running().stop_and_wait();
    }

    /// SIGCONT after [`pause`](Self::pause).
    pub fn resume(&self) {
        self.running().continue_and_wait();
    }

    /// A plain ZooKeeper client on this server (no chroot), to look at what the code under
    /// test wrote: owners of ephemeral nodes, raw bytes, versions.
    pub async fn client(&self) -> zookeeper_client::Client {
        zookeeper_client::Client::connector()
            .with_session_timeout(Duration::from_secs(10))
            .connect(&self.connect_string())
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "cannot connect to ZooKeeper at {}: {e}",
                    self.connect_string()
                )
            })
    }

    /// Sends a four-letter-word command (`ruok`, `srvr`, `cons`, `dump`, ...) and returns
    /// the answer.
    pub async fn four_letter_word(&self, command: &str) -> std::io::Result<String> {
        four_letter_word(self.address(), command).await
    }

    /// The last `lines` lines of the server's log and console output.
    pub fn log_tail(&self, lines: usize) -> String {
        let mut out = String::new();
        for file in ["zookeeper.log", "zookeeper.out"] {
            let _ = writeln!(
                out,
                "--- {file} ---\n{}",
                tail(&self.dir.path().join(file), lines)
            );
        }
        out
    }

    fn running(&self) -> &Process {
        self.process
            .as_ref()
            .expect("the ZooKeeper server is not running")
    }

    fn conf_dir(&self) -> PathBuf {
        self.dir.path().join("conf")
    }

    fn write_config(&self) {
        let conf = self.conf_dir();
        let data = self.dir.path().join("data");
        std::fs::create_dir_all(&conf).expect("cannot create the configuration directory");
        std::fs::create_dir_all(&data).expect("cannot create the data directory");
        let zoo_cfg = format!(
            "tickTime=100\n\
             initLimit=10\n\
             syncLimit=5\n\
             dataDir={data}\n\
             clientPort={port}\n\
             clientPortAddress=127.0.0.1\n\
             minSessionTimeout=1000\n\
             maxSessionTimeout=60000\n\
             maxClientCnxns=0\n\
             admin.enableServer=false\n\
             4lw.commands.whitelist=*\n",
            data = data.display(),
            port = self.port,
        );
        let log4j = format!(
            "log4j.rootLogger=WARN, FILE\n\
             log4j.appender.FILE=org.apache.log4j.FileAppender\n\
             log4j.appender.FILE.File={log}\n\
             log4j.appender.FILE.layout=org.apache.log4j.PatternLayout\n\
             log4j.appender.FILE.layout.ConversionPattern=%d{{ISO8601}} %-5p [%t] %c{{1}}: %m%n\n",
            log = self.dir.path().join("zookeeper.log").display(),
        );
        std::fs::write(conf.join("zoo.cfg"), zoo_cfg).expect("cannot write zoo.cfg");
        std::fs::write(conf.join("log4j.properties"), log4j)
            .expect("cannot write log4j.properties");
    }

    /// Starts the JVM and waits until the server answers; on failure returns a message
    /// with the tail of its log, the process killed.
    async fn launch(&mut self, java: &Path) -> Result<(), String> {
        let conf = self.conf_dir();
        let classpath = std::iter::once(conf.display().to_string())
            .chain(JARS.iter().map(|j| (*j).to_owned()))
            .collect::<Vec<_>>()
            .join(":");
        let args = [
            // Start-up time matters more than peak speed for a test server.
            "-XX:TieredStopAtLevel=1",
            "-XX:+UseSerialGC",
            "-Xms32m",
            "-Xmx256m",
            "-Djava.net.preferIPv4Stack=true",
            "-Dzookeeper.jmx.log4j.disable=true",
            "-cp",
            &classpath,
            "org.apache.zookeeper.server.quorum.QuorumPeerMain",
            &conf.join("zoo.cfg").display().to_string(),
        ]
        .map(str::to_owned);
        let output = self.dir.path().join("zookeeper.out");
        self.process = Some(Process::spawn(
            format!("zookeeper on port {}", self.port),
            java,
            &args,
            &output,
        ));
        let started = Instant::now();
        loop {
            if serves(self.address()).await {
                return Ok(());
            }
            let exited = self.process.as_mut().and_then(Process::exited);
            if exited.is_some() || started.elapsed() > START_TIMEOUT {
                self.kill();
                let why = match exited {
                    Some(status) => format!("exited ({status})"),
                    None => format!("did not serve within {START_TIMEOUT:?}"),
                };
                return Err(format!(
                    "ZooKeeper on port {} {why}\n{}",
                    self.port,
                    self.log_tail(40)
                ));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Whether the server at `address` answers `ruok` and serves requests (`srvr` reports
/// a mode only once the database is loaded).
async fn serves(address: SocketAddr) -> bool {
    matches!(
        four_letter_word(address, "ruok").await.as_deref(),
        Ok("imok")
    ) && four_letter_word(address, "srvr")
        .await
        .is_ok_and(|s| s.contains("Mode:"))
}

async fn four_letter_word(address: SocketAddr, command: &str) -> std::io::Result<String> {
    let exchange = async {
        let mut stream = TcpStream::connect(address).await?;
        stream.write_all(command.as_bytes()).await?;
        let mut answer = String::new();
        stream.read_to_string(&mut answer).await?;
        Ok(answer)
    };
    tokio::time::timeout(Duration::from_secs(2), exchange)
        .await
        .unwrap_or_else(|_| {
            Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "no answer within 2 s",
            ))
        })
}

impl Drop for ZooKeeper {
    fn drop(&mut self) {
        self.kill();
    }
}
