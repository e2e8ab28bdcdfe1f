//! The credential helpers of `maestro-exec`: small programs that a tool runs itself and that
//! answer it in its own protocol with the values of an active secret.
//!
//! * [`git`]: `maestro-exec git-credential <get|store|erase>`, git's credential protocol.
//! * [`aws`]: `maestro-exec aws-credential-process [NAME]`, the AWS SDKs' `credential_process`.
//!
//! Both ask the agent with [`Action::Material`](maestro_wire::sock::Action::Material), which the
//! agent records as an injection, and write the values only to their standard output, from
//! zeroizing buffers. They share `maestro-exec`'s socket client ([`crate::client::ask`]).

pub mod aws;
pub mod git;

use std::ffi::OsString;

use thiserror::Error;

/// Why a helper could not answer. Never holds a value.
#[derive(Debug, Error)]
pub enum HelperError {
    /// The agent could not be asked, or refused; the message says what to do.
    #[error("{0}")]
    AskAgent(String),
    #[error(
        "the agent answered something else than secret material; use the maestro-exec that came with the agent"
    )]
    UnexpectedAnswer,
    #[error("reading the request on standard input failed: {0}")]
    ReadRequest(#[source] std::io::Error),
    #[error("the request on standard input is longer than {max} bytes")]
    RequestTooLong { max: usize },
    #[error(
        "no aws secret is active in this session; activate one with `maestro secrets activate --session ID NAME`"
    )]
    NoAwsSecret,
    #[error(
        "several aws secrets are active ({0}); name one: maestro-exec aws-credential-process NAME"
    )]
    SeveralAwsSecrets(String),
    #[error("secret {0} is active but is not of kind aws")]
    NotAws(String),
    #[error(
        "secret {0} is not active in this session; activate it (maestro secrets activate --session ID {0}) or name an active aws secret"
    )]
    NotActive(String),
    #[error("secret {name} lacks the field {field}; edit it with `maestro secrets edit {name}`")]
    MissingField { name: String, field: &'static str },
    /// The git helper cannot tell which secret a request needs; the message names them and
    /// says what to do.
    #[error("{0}")]
    Refused(String),
    #[error("cannot encode the answer")]
    EncodeAnswer,
    #[error("writing the answer failed: {0}")]
    WriteAnswer(#[source] std::io::Error),
}

impl From<crate::client::Failure> for HelperError {
    fn from(f: crate::client::Failure) -> Self {
        HelperError::AskAgent(f.0)
    }
}

/// Runs the helper that `args[0]` names, and returns its exit status; `None` when `args[0]` is
/// no helper's name (then `maestro-exec` runs a command as usual).
pub fn dispatch(args: &[OsString]) -> Option<i32> {
    match args.first()?.to_str()? {
        git::SUBCOMMAND => Some(git::main(&args[1..])),
        aws::SUBCOMMAND => Some(aws::main(&args[1..])),
        _ => None,
    }
}
