//! Any text as an `SshLoginCommand`: reading it never panics, and what it yields is usable (a
//! host, a port that is not 0).
#![no_main]

use compshare_api::parse_login_command;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let command = String::from_utf8_lossy(data);
    if let Some(login) = parse_login_command(&command) {
        assert!(!login.host.is_empty(), "{command:?}");
        assert_ne!(login.port, 0, "{command:?}");
    }
});
