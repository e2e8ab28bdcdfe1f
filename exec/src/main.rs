//! `maestro-exec`: runs a command with the session's active secrets in its environment
//! (see `maestro_exec`).
#![deny(unsafe_code)]

fn main() {
    let args: Vec<std::ffi::OsString> = std::env::args_os().skip(1).collect();
    std::process::exit(maestro_exec::main_with(&args));
}
