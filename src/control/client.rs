//! The command side: one request per connection, one response back.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use super::{decode, encode, ControlError, Request, Response, MAX_MESSAGE};

/// How long a command waits for the daemon (bringing a line up is quick; this only
/// guards against a wedged daemon).
const TIMEOUT: Duration = Duration::from_secs(60);
/// A `line list` of thousands of lines is larger than any request.
const RESPONSE_LIMIT: u64 = MAX_MESSAGE as u64 * 256;

/// Sends `request` to the daemon listening on `socket` and returns its answer.
/// A [`Response::Error`] comes back as [`ControlError::Daemon`].
pub fn call(socket: &Path, request: &Request) -> Result<Response, ControlError> {
    let io = |source| ControlError::Io {
        path: socket.to_path_buf(),
        source,
    };
    let mut stream = UnixStream::connect(socket).map_err(|source| match source.kind() {
        std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused => {
            ControlError::NotRunning {
                path: socket.to_path_buf(),
                source,
            }
        }
        std::io::ErrorKind::PermissionDenied => ControlError::PermissionDenied {
            path: socket.to_path_buf(),
        },
        _ => io(source),
    })?;
    stream.set_read_timeout(Some(TIMEOUT)).map_err(io)?;
    stream.write_all(&encode(request)).map_err(io)?;
    let mut line = Vec::new();
    BufReader::new(stream.take(RESPONSE_LIMIT))
        .read_until(b'\n', &mut line)
        .map_err(io)?;
    if line.is_empty() {
        return Err(ControlError::Malformed(
            "the daemon closed the connection without answering (see its log: journalctl -u twnode)"
                .into(),
        ));
    }
    match decode::<Response>(line.trim_ascii_end())? {
        Response::Error { message } => Err(ControlError::Daemon(message)),
        r => Ok(r),
    }
}
