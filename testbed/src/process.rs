//! The component processes: spawned so that they cannot outlive the test process, logged to files,
//! and stopped politely before being killed.

use std::collections::BTreeMap;
use std::fs::{self, OpenOptions};
use std::io;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::OnceLock;
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use crate::{Component, Error, IoContext};

/// How long a component may take to exit after SIGTERM before it gets SIGKILL. kube-apiserver
/// needs about a second to drain; etcd a few milliseconds.
const STOP_GRACE: Duration = Duration::from_secs(5);

/// How many lines of a component's log an error carries.
const LOG_TAIL_LINES: usize = 40;

struct Process {
    child: Child,
    log: PathBuf,
}

impl Process {
    /// Starts `command` (named `what` in errors), its stdout and stderr appended to `log`.
    fn spawn(mut command: Command, log: &Path, what: &str) -> Result<Process, Error> {
        let log_file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .context(|| format!("open {}", log.display()))?;
        let stderr = log_file
            .try_clone()
            .context(|| format!("duplicate the handle of {}", log.display()))?;
        command
            .stdin(Stdio::null())
            .stdout(log_file)
            .stderr(stderr)
            .process_group(0);
        let child = spawn_tied_to_this_process(command).context(|| format!("start {what}"))?;
        Ok(Process {
            child,
            log: log.to_owned(),
        })
    }

    /// SIGTERM, then SIGKILL after a grace period; how it exited.
    fn stop(mut self) -> Option<ExitStatus> {
        if let Ok(Some(status)) = self.child.try_wait() {
            // Already exited (and now reaped): its pid may belong to another process by now.
            return Some(status);
        }
        // The child leads a process group of its own: signalling the group also reaches what it
        // started (a profiler's target, a shell's children).
        let group = libc::pid_t::try_from(self.child.id()).ok().map(|pid| -pid);
        if let Some(group) = group {
            // SAFETY: a plain syscall; the child is not reaped yet, so its group is still ours.
            unsafe { libc::kill(group, libc::SIGTERM) };
        }
        let deadline = Instant::now() + STOP_GRACE;
        while matches!(self.child.try_wait(), Ok(None)) && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(20));
        }
        if let Some(group) = group {
            // SAFETY: as above; members that outlived the leader keep the group id reserved.
            unsafe { libc::kill(group, libc::SIGKILL) };
        }
        // Both are no-ops on a child that has exited; wait() reaps it so no zombie is left.
        let _ = self.child.kill();
        self.child.wait().ok()
    }

    /// SIGKILL at once, as a crash or an OOM kill would end it.
    fn kill(mut self) {
        if let Ok(pid) = libc::pid_t::try_from(self.child.id())
            && matches!(self.child.try_wait(), Ok(None))
        {
            // SAFETY: a plain syscall; the child is not reaped yet, so its group is still ours.
            unsafe { libc::kill(-pid, libc::SIGKILL) };
        }
        let _ = self.child.wait();
    }
}

/// A process a test starts beside the control plane (the operator, a simulator): like the
/// components, it dies with the test process, logs to a file, and is stopped politely (SIGTERM,
/// then SIGKILL) when dropped.
pub struct Daemon(Option<Process>);

impl Daemon {
    /// Starts `command` with stdout and stderr appended to `log`.
    pub fn spawn(command: Command, log: &Path) -> Result<Daemon, Error> {
        let program = command.get_program().to_string_lossy().into_owned();
        Ok(Daemon(Some(Process::spawn(command, log, &program)?)))
    }

    pub fn log(&self) -> &Path {
        &self.process().log
    }

    pub fn pid(&self) -> u32 {
        self.process().child.id()
    }

    /// Whether it still runs (`false` once it has exited, however).
    pub fn is_running(&mut self) -> bool {
        matches!(self.0.as_mut().map(|p| p.child.try_wait()), Some(Ok(None)))
    }

    /// Stops it politely (SIGTERM, then SIGKILL after a grace period); how it exited.
    pub fn stop(mut self) -> Option<ExitStatus> {
        self.0.take().and_then(Process::stop)
    }

    /// Kills it at once (SIGKILL), as a crash would.
    pub fn kill(mut self) {
        if let Some(process) = self.0.take() {
            process.kill();
        }
    }

    fn process(&self) -> &Process {
        self.0
            .as_ref()
            .expect("a daemon is only stopped by consuming it")
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(process) = self.0.take() {
            process.stop();
        }
    }
}

/// The running components of one control plane. Dropping it stops them.
#[derive(Default)]
pub(crate) struct Processes(BTreeMap<Component, Process>);

impl Processes {
    /// The process id of `component`, while it runs.
    pub(crate) fn pid(&mut self, component: Component) -> Option<u32> {
        let process = self.0.get_mut(&component)?;
        matches!(process.child.try_wait(), Ok(None)).then(|| process.child.id())
    }

    /// Starts `component` unless it is already running (a component that exited is replaced),
    /// appending its output to `log`.
    pub(crate) fn launch(
        &mut self,
        component: Component,
        command: Command,
        log: &Path,
    ) -> Result<(), Error> {
        if let Some(process) = self.0.get_mut(&component)
            && matches!(process.child.try_wait(), Ok(None))
        {
            return Ok(());
        }
        let process = Process::spawn(command, log, component.binary())?;
        self.0.insert(component, process);
        Ok(())
    }

    /// Fails with the log of the first component that has exited.
    pub(crate) fn ensure_running(&mut self) -> Result<(), Error> {
        for (component, process) in &mut self.0 {
            let status = process
                .child
                .try_wait()
                .context(|| format!("check whether {component} is running"))?;
            if let Some(status) = status {
                return Err(component_error(
                    *component,
                    &process.log,
                    format!("exited ({status})"),
                ));
            }
        }
        Ok(())
    }

    pub(crate) fn stop(&mut self, components: &[Component]) {
        let mut components = components.to_vec();
        // Dependents first, the reverse of the start order: etcd does not exit while kube-apiserver
        // still holds watches on it.
        components.sort_unstable_by(|a, b| b.cmp(a));
        for component in components {
            if let Some(process) = self.0.remove(&component) {
                process.stop();
            }
        }
    }

    pub(crate) fn stop_everything(&mut self) {
        // In reverse start order, like `stop`.
        while let Some((_, process)) = self.0.pop_last() {
            process.stop();
        }
    }
}

impl Drop for Processes {
    fn drop(&mut self) {
        self.stop_everything();
    }
}

/// An error about `component`, carrying the end of its log.
pub(crate) fn component_error(component: Component, log: &Path, problem: String) -> Error {
    Error::Component {
        component,
        problem,
        log_tail: log_tail(log),
    }
}

fn log_tail(log: &Path) -> String {
    match fs::read(log) {
        Ok(bytes) => {
            let text = String::from_utf8_lossy(&bytes);
            let lines: Vec<&str> = text.lines().collect();
            lines[lines.len().saturating_sub(LOG_TAIL_LINES)..].join("\n")
        }
        Err(error) => format!("(cannot read {}: {error})", log.display()),
    }
}

type SpawnRequest = (Command, mpsc::SyncSender<io::Result<Child>>);

/// Spawns `command` so that the child gets SIGKILL when this process dies, however it dies.
///
/// `PR_SET_PDEATHSIG` fires when the *thread* that forked the child exits, and the test harness
/// runs every test in a short-lived thread; so all children are forked by one thread that lives
/// as long as the process.
fn spawn_tied_to_this_process(mut command: Command) -> io::Result<Child> {
    static SPAWNER: OnceLock<mpsc::Sender<SpawnRequest>> = OnceLock::new();
    let spawner = SPAWNER.get_or_init(|| {
        let (requests, incoming) = mpsc::channel::<SpawnRequest>();
        thread::Builder::new()
            .name("compshare-testbed-spawner".into())
            .spawn(move || {
                for (mut command, reply) in incoming {
                    let _ = reply.send(command.spawn());
                }
            })
            .expect("cannot start the thread that spawns the control plane");
        requests
    });

    let parent = libc::pid_t::try_from(std::process::id()).map_err(io::Error::other)?;
    // SAFETY: the closure runs between fork and exec and only makes async-signal-safe syscalls.
    unsafe {
        command.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) == -1 {
                return Err(io::Error::last_os_error());
            }
            // If the parent died before prctl, the child was already re-parented and would never
            // get the signal.
            if libc::getppid() != parent {
                return Err(io::Error::from_raw_os_error(libc::ESRCH));
            }
            Ok(())
        });
    }
    let (reply, spawned) = mpsc::sync_channel(1);
    spawner
        .send((command, reply))
        .map_err(|_| io::Error::other("the spawner thread is gone"))?;
    spawned
        .recv()
        .map_err(|_| io::Error::other("the spawner thread is gone"))?
}
