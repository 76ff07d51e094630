//! A server process owned by a test: signalled and reaped by its pid, killed on drop.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// Asks the kernel to kill the server when the thread that started it dies, so a test
/// process that is itself killed (a timeout, an abort) leaves no server behind. The
/// signal is tied to the spawning thread: servers are started from the test's own task,
/// never from a short-lived blocking thread.
const SETPRIV: &str = "/usr/bin/setpriv";

/// The set-up command named when a server binary is missing.
pub const SETUP_HINT: &str = "run ./deploy/local/test.sh (it installs zookeeper and redis-server)";

/// The full path of `program` on `PATH`; panics naming the set-up command when absent.
pub fn require_program(program: &str) -> PathBuf {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(program))
            .find(|candidate| candidate.is_file())
    });
    found.unwrap_or_else(|| panic!("`{program}` not found on PATH: {SETUP_HINT}"))
}

/// Panics naming the set-up command when `file` does not exist.
pub fn require_file(file: &Path) {
    assert!(file.is_file(), "{} not found: {SETUP_HINT}", file.display());
}

/// A running (or stopped) child process.
#[derive(Debug)]
pub struct Process {
    name: String,
    child: Child,
}

impl Process {
    /// Starts `program args..` with stdout and stderr appended to `output`.
    pub fn spawn(
        name: impl Into<String>,
        program: &Path,
        args: &[String],
        output: &Path,
    ) -> Process {
        let name = name.into();
        let log = File::options()
            .create(true)
            .append(true)
            .open(output)
            .unwrap_or_else(|e| panic!("cannot open {}: {e}", output.display()));
        let err_log = log.try_clone().expect("cannot duplicate a log file handle");
        let mut command = if Path::new(SETPRIV).is_file() {
            let mut c = Command::new(SETPRIV);
            c.arg("--pdeathsig").arg("KILL").arg(program);
            c
        } else {
            Command::new(program)
        };
        command
            .args(args)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(err_log);
        let child = command
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name} ({}): {e}", program.display()));
        Process { name, child }
    }

    pub fn pid(&self) -> Pid {
        Pid::from_raw(i32::try_from(self.child.id()).expect("pid fits in i32"))
    }

    /// Sends `signal` to this process (and only this one).
    pub fn signal(&self, signal: Signal) {
        if let Err(e) = kill(self.pid(), signal) {
            panic!(
                "cannot send {signal} to {} (pid {}): {e}",
                self.name,
                self.pid()
            );
        }
    }

    /// Sends SIGSTOP and waits until the kernel reports the process stopped, so that
    /// nothing it does afterwards can be mistaken for an answer given before the pause.
    pub fn stop_and_wait(&self) {
        self.signal(Signal::SIGSTOP);
        self.wait_for_state("stopped", |state| state == 'T');
    }

    /// Sends SIGCONT and waits until the kernel reports the process running again.
    pub fn continue_and_wait(&self) {
        self.signal(Signal::SIGCONT);
        self.wait_for_state("continued", |state| state != 'T');
    }

    /// The process state letter of `/proc/<pid>/stat` (`R`, `S`, `T`, ...).
    fn state(&self) -> Option<char> {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid())).ok()?;
        // The command name in parentheses may hold spaces; the state follows it.
        stat.rsplit_once(") ")?.1.chars().next()
    }

    fn wait_for_state(&self, what: &str, reached: impl Fn(char) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while !self.state().is_some_and(&reached) {
            assert!(
                Instant::now() < deadline,
                "{} (pid {}) not {what} within 5 s",
                self.name,
                self.pid()
            );
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// The exit status if the process has ended.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child
            .try_wait()
            .unwrap_or_else(|e| panic!("cannot wait for {}: {e}", self.name))
    }

    /// SIGKILL and reap.
    pub fn kill(&mut self) {
        if self.exited().is_none() {
            // The process may end between the check and the signal; ESRCH is fine then.
            let _ = kill(self.pid(), Signal::SIGKILL);
            let _ = self.child.wait();
        }
    }

    /// SIGTERM, then waits up to `grace` for the process to end before killing it.
    /// Returns whether it ended by itself.
    pub async fn terminate(&mut self, grace: Duration) -> bool {
        if self.exited().is_some() {
            return true;
        }
        // A stopped process does not act on SIGTERM until continued.
        let _ = kill(self.pid(), Signal::SIGCONT);
        let _ = kill(self.pid(), Signal::SIGTERM);
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if self.exited().is_some() {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.kill();
        false
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill();
    }
}
