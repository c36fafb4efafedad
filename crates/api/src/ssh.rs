//! Reading `SshLoginCommand`, a free-form shell command such as `ssh root@1.2.3.4 -p 60022`.
//!
//! The command is split into shell words (quotes and escapes as a shell would read them), then read
//! the way OpenSSH reads its arguments: options may come before or after the destination, options
//! that take a value consume the next word (or the rest of their own word), and the port is 22 unless
//! `-p` or an `ssh://` destination says otherwise.

/// Where and as whom an instance is reached over SSH.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SshLogin {
    pub user: Option<String>,
    pub host: String,
    pub port: u16,
}

const DEFAULT_PORT: u16 = 22;

/// OpenSSH options that take a value (`ssh(1)`: `-B -b -c -D -E -e -F -I -i -J -L -l -m -O -o -P
/// -p -Q -R -S -W -w`).
const OPTIONS_WITH_VALUE: &str = "BbcDEeFIiJLlmOoPpQRSWw";

/// Reads an SSH login command; `None` when it is not an `ssh` command with a destination.
pub fn parse_login_command(command: &str) -> Option<SshLogin> {
    let words = shlex::split(command)?;
    let (program, args) = words.split_first()?;
    if program.rsplit('/').next() != Some("ssh") {
        return None;
    }

    let mut port = None;
    let mut login_name = None;
    let mut destination = None;
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        if arg == "--" {
            destination = destination.or_else(|| args.next().cloned());
            break;
        }
        let Some(flags) = arg.strip_prefix('-').filter(|f| !f.is_empty()) else {
            // The first operand is the destination and options may still follow it
            // (`ssh root@host -p 60022`); the second starts the remote command, whose own
            // flags are not ssh's.
            if destination.is_some() {
                break;
            }
            destination = Some(arg.clone());
            continue;
        };
        // Flags may be grouped (`-tt`, `-vp 2222`); the first that takes a value ends the group.
        for (i, flag) in flags.char_indices() {
            if !OPTIONS_WITH_VALUE.contains(flag) {
                continue;
            }
            let attached = &flags[i + flag.len_utf8()..];
            let value = if attached.is_empty() {
                args.next().cloned()?
            } else {
                attached.to_owned()
            };
            match flag {
                'p' => port = Some(parse_port(&value)?),
                'l' => login_name = Some(value),
                _ => {}
            }
            break;
        }
    }

    let (user, host, uri_port) = split_destination(&destination?)?;
    Some(SshLogin {
        user: user.or(login_name),
        host,
        port: port.or(uri_port).unwrap_or(DEFAULT_PORT),
    })
}

/// Splits `user@host` or `ssh://[user@]host[:port]`.
fn split_destination(destination: &str) -> Option<(Option<String>, String, Option<u16>)> {
    let (authority, from_uri) = match destination.strip_prefix("ssh://") {
        Some(rest) => (rest.trim_end_matches('/'), true),
        None => (destination, false),
    };
    let (user, host) = match authority.rsplit_once('@') {
        Some((user, host)) => (Some(user.to_owned()).filter(|u| !u.is_empty()), host),
        None => (None, authority),
    };
    let (host, port) = if from_uri {
        split_uri_host_port(host)?
    } else {
        // OpenSSH takes `[2001:db8::1]` for the bare address (its `cleanhostname`).
        let bare = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host);
        (bare.to_owned(), None)
    };
    if host.is_empty() {
        return None;
    }
    Some((user, host, port))
}

fn split_uri_host_port(host: &str) -> Option<(String, Option<u16>)> {
    if let Some(rest) = host.strip_prefix('[') {
        let (addr, after) = rest.split_once(']')?;
        let port = match after.strip_prefix(':') {
            Some(p) => Some(parse_port(p)?),
            None => None,
        };
        return Some((addr.to_owned(), port));
    }
    match host.rsplit_once(':') {
        Some((h, p)) => Some((h.to_owned(), Some(parse_port(p)?))),
        None => Some((host.to_owned(), None)),
    }
}

/// A port number; 0 is not one a client can connect to.
fn parse_port(text: &str) -> Option<u16> {
    text.parse::<u16>().ok().filter(|p| *p != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn login(user: Option<&str>, host: &str, port: u16) -> Option<SshLogin> {
        Some(SshLogin {
            user: user.map(str::to_owned),
            host: host.to_owned(),
            port,
        })
    }

    #[test]
    fn port_after_destination() {
        assert_eq!(
            parse_login_command("ssh root@1.2.3.4 -p 60022"),
            login(Some("root"), "1.2.3.4", 60022)
        );
    }

    #[test]
    fn port_before_destination() {
        assert_eq!(
            parse_login_command("ssh -p 23 root@117.50.1.2"),
            login(Some("root"), "117.50.1.2", 23)
        );
    }

    #[test]
    fn no_port_means_22() {
        assert_eq!(
            parse_login_command("ssh ubuntu@1.2.3.5"),
            login(Some("ubuntu"), "1.2.3.5", 22)
        );
    }

    #[test]
    fn attached_port_grouped_flags_and_other_options() {
        assert_eq!(
            parse_login_command("ssh -p2222 root@h"),
            login(Some("root"), "h", 2222)
        );
        assert_eq!(
            parse_login_command("ssh -tt -vp 2200 root@h"),
            login(Some("root"), "h", 2200)
        );
        assert_eq!(
            parse_login_command(
                "ssh -o StrictHostKeyChecking=no -i ~/.ssh/id root@h -p 7 nvidia-smi -p 9"
            ),
            login(Some("root"), "h", 7)
        );
    }

    #[test]
    fn login_name_flag_uri_and_quotes() {
        assert_eq!(
            parse_login_command("ssh -l admin 10.0.0.1"),
            login(Some("admin"), "10.0.0.1", 22)
        );
        assert_eq!(parse_login_command("ssh host"), login(None, "host", 22));
        assert_eq!(
            parse_login_command("ssh ssh://root@[2001:db8::1]:2022"),
            login(Some("root"), "2001:db8::1", 2022)
        );
        // Bracketed and bare IPv6 hosts give the same bare address.
        assert_eq!(
            parse_login_command("ssh root@[2001:db8::1] -p 22"),
            login(Some("root"), "2001:db8::1", 22)
        );
        assert_eq!(
            parse_login_command("ssh -p 2022 root@2001:db8::1"),
            login(Some("root"), "2001:db8::1", 2022)
        );
        assert_eq!(
            parse_login_command("/usr/bin/ssh 'root@gpu.example.com' -p '60022'"),
            login(Some("root"), "gpu.example.com", 60022)
        );
        assert_eq!(
            parse_login_command("  ssh   root@1.2.3.4\t-p\t60022  "),
            login(Some("root"), "1.2.3.4", 60022)
        );
    }

    #[test]
    fn rejects_what_is_not_an_ssh_login() {
        for bad in [
            "",
            "   ",
            "ssh",
            "ssh -p 22",
            "ssh root@h -p",
            "ssh root@h -p notaport",
            "ssh root@h -p 0",
            "ssh root@h -p 70000",
            "ssh root@",
            "mosh root@h",
            "ssh 'unterminated",
            "ssh ssh://root@h:0",
            // Found by the fuzzer (fuzz/): a URI destination with port 0.
            "ssh ssh://root@002[1://r[20@oto01:Ph2://r[20@oto01:0",
        ] {
            assert_eq!(parse_login_command(bad), None, "{bad:?}");
        }
    }
}
