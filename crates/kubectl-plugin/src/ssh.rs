//! `kubectl compshare ssh NAME [-- SSH_ARGS]`: runs `ssh -p PORT USER@HOST SSH_ARGS` with the
//! address from the resource's status and the password from the connection Secret the operator
//! writes (`spec.writeConnectionSecretToRef`; it holds a password, never a private key).
//!
//! How the password reaches ssh, and why so. ssh reads a password only from a terminal or from an
//! SSH_ASKPASS program (with `SSH_ASKPASS_REQUIRE=force`), never from its arguments or
//! environment, which any process of the user can read in /proc. The askpass program is this
//! binary again: run with the prompt as its only argument and `KUBECTL_COMPSHARE_ASKPASS_SOCKET`
//! set, it fetches the password from a Unix socket in a private directory (mode 0700, so only the
//! user can connect) that this process serves while ssh runs, to the first connection only, and
//! prints it to ssh. So the password is never in an argument, an environment variable, a file
//! (the socket holds no data) or this process's output; the socket is gone once it was read, and
//! the directory when ssh exits. An inherited pipe would be simpler but does not work: ssh closes
//! every descriptor above stderr when it starts, before it runs the askpass program. A temporary
//! file deleted after the first read would put the password on disk, and stay there if ssh never
//! asked. Hence this process stays ssh's parent (rather than exec'ing it), to serve the socket and
//! to clean up.

use std::ffi::{OsStr, OsString};
use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::os::unix::fs::PermissionsExt as _;
use std::os::unix::net::{UnixListener, UnixStream};
use std::os::unix::process::ExitStatusExt as _;
use std::path::PathBuf;
use std::process::{Command, ExitCode};

use anyhow::{Context as _, bail};
use clap::Args;
use compshare_operator::resource::connection_keys;
use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use secrecy::{ExposeSecret as _, SecretString};

use crate::cluster::{Cluster, Target};

/// Where the askpass program finds the socket; set only in ssh's environment. It names a path,
/// not the password.
const ASKPASS_SOCKET_ENV: &str = "KUBECTL_COMPSHARE_ASKPASS_SOCKET";

#[derive(Debug, Args)]
pub(crate) struct SshArgs {
    #[command(flatten)]
    target: Target,
    /// The ssh program to run.
    #[arg(
        long,
        env = "KUBECTL_COMPSHARE_SSH",
        default_value = "ssh",
        value_name = "PROGRAM"
    )]
    ssh: PathBuf,
    /// Arguments for ssh after the destination: options (`-L 8888:localhost:8888`) or a remote
    /// command.
    #[arg(last = true, value_name = "SSH_ARGS")]
    ssh_args: Vec<OsString>,
}

/// Where to log in, and with what.
struct Login {
    host: String,
    port: i32,
    user: Option<String>,
    password: SecretString,
}

/// Runs ssh to its end; its exit code is the command's (128 + the signal that ended it).
pub(crate) fn run(args: SshArgs) -> anyhow::Result<ExitCode> {
    let login = crate::on_runtime(login(&args.target))?;
    let dir = tempfile::Builder::new()
        .prefix("kubectl-compshare-")
        .permissions(std::fs::Permissions::from_mode(0o700))
        .tempdir()
        .context("creating a private directory for the password's socket")?;
    let socket = dir.path().join("askpass");
    let listener = UnixListener::bind(&socket)
        .with_context(|| format!("listening on {}", socket.display()))?;
    serve_once(listener, socket.clone(), login.password);

    let destination = match &login.user {
        Some(user) => format!("{user}@{}", login.host),
        None => login.host.clone(),
    };
    let mut command = Command::new(&args.ssh);
    command
        .arg("-p")
        .arg(login.port.to_string())
        .arg(destination)
        .args(&args.ssh_args)
        .env(
            "SSH_ASKPASS",
            std::env::current_exe().context("finding this program for SSH_ASKPASS")?,
        )
        .env("SSH_ASKPASS_REQUIRE", "force")
        .env(ASKPASS_SOCKET_ENV, &socket);
    let mut child = command
        .spawn()
        .with_context(|| format!("running {}", args.ssh.display()))?;
    // Ctrl-C and Ctrl-\ at the terminal are ssh's to handle; this process outlives ssh to remove
    // the directory. (Ignored only now: ssh must not inherit the ignoring.)
    // SAFETY: setting a signal's disposition to "ignore" runs no handler code.
    unsafe {
        libc::signal(libc::SIGINT, libc::SIG_IGN);
        libc::signal(libc::SIGQUIT, libc::SIG_IGN);
    }
    let status = child.wait().context("waiting for ssh")?;
    drop(dir);
    let code = status
        .code()
        .or_else(|| status.signal().map(|s| 128 + s))
        .unwrap_or(1);
    Ok(ExitCode::from(u8::try_from(code).unwrap_or(1)))
}

/// Reads the resource and its connection Secret, and refuses with what to do when there is
/// nothing to log in to or no password to log in with.
async fn login(target: &Target) -> anyhow::Result<Login> {
    let cluster = Cluster::connect(&target.cluster).await?;
    let (name, namespace) = (&target.name, &cluster.namespace);
    let instance = cluster
        .instances()
        .get(name)
        .await
        .map_err(|e| cluster.explain(e, "CompShareInstance", name))?;
    let it = format!("CompShareInstance {name:?} in namespace {namespace:?}");
    let Some(wanted) = instance.spec.write_connection_secret_to_ref.as_ref() else {
        bail!(
            "{it} has no connection Secret, where the operator keeps the machine's password: ask for one with spec.writeConnectionSecretToRef, e.g.\n  kubectl patch csinst {name} -n {namespace} --type merge -p '{{\"spec\":{{\"writeConnectionSecretToRef\":{{\"name\":\"{name}-ssh\"}}}}}}'\n(with the operator's default credentials, its administrator must grant this namespace the `connection` privilege)"
        );
    };
    let status = instance.status.clone().unwrap_or_default();
    match status.state.as_deref() {
        Some("Running") => {}
        Some(state) => bail!("{it} is {state:?}, not Running: there is nothing to log in to"),
        None => bail!(
            "{it} has not been observed yet (no status.state): is the operator running? (kubectl describe csinst {name} -n {namespace})"
        ),
    }
    let Some(ssh) = status.ssh else {
        bail!(
            "{it} has no SSH address in its status yet (status.ssh): the API gave no login command for the machine"
        );
    };
    if status.connection_secret_name.as_deref() != Some(wanted.name.as_str()) {
        bail!(
            "the operator does not maintain {it}'s connection Secret {:?} (yet): see its conditions (kubectl describe csinst {name} -n {namespace})",
            wanted.name
        );
    }
    let secrets: Api<Secret> = Api::namespaced(cluster.client.clone(), namespace);
    let secret = secrets
        .get(&wanted.name)
        .await
        .map_err(|e| cluster.explain(e, "Secret", &wanted.name))?;
    let data = secret.data.unwrap_or_default();
    let text = |key: &str| {
        data.get(key)
            .and_then(|v| String::from_utf8(v.0.clone()).ok())
    };
    let Some(password) = text(connection_keys::PASSWORD) else {
        bail!(
            "the connection Secret {:?} of {it} holds no password: the API gave none for this machine",
            wanted.name
        );
    };
    Ok(Login {
        host: ssh.host.to_string(),
        port: ssh.port,
        user: ssh
            .user
            .map(|u| u.to_string())
            .or_else(|| text(connection_keys::USERNAME)),
        password: SecretString::from(password),
    })
}

/// Hands the password to the first connection to `listener`, then stops listening and removes
/// the socket, on a thread of its own (ssh may never ask: key authentication, a failed
/// connection).
fn serve_once(listener: UnixListener, socket: PathBuf, password: SecretString) {
    std::thread::spawn(move || {
        let accepted = listener.accept();
        // Closed before the answer ends, so that a second prompt, which can only come after
        // the first answer, always finds nothing.
        drop(listener);
        let _ = std::fs::remove_file(socket);
        if let Ok((mut stream, _)) = accepted {
            // A failed write leaves ssh without the password; ssh says so.
            let _ = stream.write_all(password.expose_secret().as_bytes());
        }
    });
}

/// The askpass program's side: when ssh runs this binary with `KUBECTL_COMPSHARE_ASKPASS_SOCKET`
/// set and one argument (the prompt), it answers the prompt and the process ends with the
/// returned code. `None`: this is an ordinary command line.
pub(crate) fn askpass_mode() -> Option<ExitCode> {
    let socket = std::env::var_os(ASKPASS_SOCKET_ENV)?;
    let mut args = std::env::args_os().skip(1);
    let (Some(prompt), None) = (args.next(), args.next()) else {
        return None;
    };
    Some(match answer(&socket, &prompt.to_string_lossy()) {
        Ok(answer) => {
            // ssh reads one line from its askpass program.
            let mut out = std::io::stdout().lock();
            match writeln!(out, "{}", answer.expose_secret()).and_then(|()| out.flush()) {
                Ok(()) => ExitCode::SUCCESS,
                Err(_) => ExitCode::FAILURE,
            }
        }
        Err(why) => {
            eprintln!("kubectl-compshare: {why}");
            ExitCode::FAILURE
        }
    })
}

/// What to answer `prompt`: the password to a password prompt, once; the person at the terminal
/// to a yes/no question (an unknown host key); nothing to anything else (a key's passphrase is
/// not the machine's password), so that ssh moves on.
fn answer(socket: &OsStr, prompt: &str) -> Result<SecretString, String> {
    let lower = prompt.to_lowercase();
    if lower.contains("password") {
        let mut stream = UnixStream::connect(socket)
            .map_err(|_| "the password was handed to ssh once already (it was refused?)")?;
        let mut password = String::new();
        stream
            .read_to_string(&mut password)
            .map_err(|e| format!("reading the password: {e}"))?;
        return Ok(SecretString::from(password));
    }
    if lower.contains("yes/no") {
        let tty = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/tty")
            .map_err(|_| format!("no terminal to ask: {prompt}"))?;
        (&tty)
            .write_all(prompt.as_bytes())
            .map_err(|e| e.to_string())?;
        let mut reply = String::new();
        BufReader::new(&tty)
            .read_line(&mut reply)
            .map_err(|e| e.to_string())?;
        return Ok(SecretString::from(reply.trim_end().to_owned()));
    }
    Err(format!("not answering {prompt:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_password_is_answered_to_a_password_prompt_once() {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("askpass");
        let listener = UnixListener::bind(&socket).unwrap();
        serve_once(listener, socket.clone(), SecretString::from("p4ss"));
        let prompt = "root@1.2.3.4's password: ";
        let answered = answer(socket.as_os_str(), prompt).unwrap();
        assert_eq!(answered.expose_secret(), "p4ss");
        let again = answer(socket.as_os_str(), prompt).err().unwrap();
        assert!(again.contains("once already"), "{again}");
        // A key's passphrase is not the machine's password.
        assert!(answer(socket.as_os_str(), "Enter passphrase for key '/k': ").is_err());
    }
}
