//! Files the host gives a build by name, read whole: the Dockerfile (`-f`), `--secret`
//! sources, `--ssh` key files. Each must be a regular file (a device such as `/dev/zero`
//! or a FIFO is refused before it is read) and no larger than its cap; the size is
//! checked on the opened file, and the read itself never takes more than cap + 1 bytes,
//! so a file that grows while it is read is refused too.

use std::io::Read;
use std::path::{Path, PathBuf};

/// The largest `--secret` kiln reads: 500 KiB, BuildKit's `MaxSecretSize`.
pub const MAX_SECRET_SIZE: u64 = 500 * 1024;

/// The largest `--ssh` key file: 64 KiB (an OpenSSH RSA-16384 private key is under 13 KiB).
pub const MAX_SSH_KEY_SIZE: u64 = 64 * 1024;

/// A named file that cannot be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum InputFileError {
    /// It could not be opened or read.
    #[error("{what} {path}: {source}")]
    Io {
        /// What the file is for (`the Dockerfile`, `--secret id=npm`).
        what: String,
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// It is a device, a FIFO, a socket or a directory.
    #[error("{what} {path} is {kind}, not a regular file; give the path of a file")]
    NotRegular {
        /// What the file is for.
        what: String,
        /// The file.
        path: PathBuf,
        /// What it is instead (`a character device`).
        kind: &'static str,
    },
    /// It is larger than the cap.
    #[error("{what} {path} is larger than {max} bytes, the most kiln reads for it")]
    TooLarge {
        /// What the file is for.
        what: String,
        /// The file (`-` for stdin).
        path: PathBuf,
        /// The cap.
        max: u64,
    },
}

fn kind_of(file_type: std::fs::FileType) -> &'static str {
    use std::os::unix::fs::FileTypeExt as _;
    if file_type.is_dir() {
        "a directory"
    } else if file_type.is_char_device() {
        "a character device"
    } else if file_type.is_block_device() {
        "a block device"
    } else if file_type.is_fifo() {
        "a FIFO"
    } else if file_type.is_socket() {
        "a socket"
    } else {
        "not a regular file"
    }
}

/// Reads `path`, a regular file of at most `max` bytes (symlinks followed).
pub fn read_regular_file(path: &Path, what: &str, max: u64) -> Result<Vec<u8>, InputFileError> {
    let io = |source| InputFileError::Io {
        what: what.to_owned(),
        path: path.to_owned(),
        source,
    };
    let not_regular = |file_type| InputFileError::NotRegular {
        what: what.to_owned(),
        path: path.to_owned(),
        kind: kind_of(file_type),
    };
    // Look before opening: opening a FIFO blocks until someone writes to it.
    let meta = std::fs::metadata(path).map_err(io)?;
    if !meta.is_file() {
        return Err(not_regular(meta.file_type()));
    }
    let file = std::fs::File::open(path).map_err(io)?;
    // And again on what was opened, in case the path changed in between.
    let meta = file.metadata().map_err(io)?;
    if !meta.is_file() {
        return Err(not_regular(meta.file_type()));
    }
    if meta.len() > max {
        return Err(InputFileError::TooLarge {
            what: what.to_owned(),
            path: path.to_owned(),
            max,
        });
    }
    read_capped(file, path, what, max)
}

/// Reads at most `max` bytes from `reader` (stdin for `-f -`); more is an error.
pub fn read_capped(
    reader: impl Read,
    path: &Path,
    what: &str,
    max: u64,
) -> Result<Vec<u8>, InputFileError> {
    let mut bytes = Vec::new();
    reader
        .take(max.saturating_add(1))
        .read_to_end(&mut bytes)
        .map_err(|source| InputFileError::Io {
            what: what.to_owned(),
            path: path.to_owned(),
            source,
        })?;
    if bytes.len() as u64 > max {
        return Err(InputFileError::TooLarge {
            what: what.to_owned(),
            path: path.to_owned(),
            max,
        });
    }
    Ok(bytes)
}

/// A Dockerfile that cannot be read or is not text.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DockerfileError {
    /// Not a regular file, too large, or unreadable.
    #[error(transparent)]
    File(#[from] InputFileError),
    /// Not UTF-8 (or over the parser's cap): a positioned parse error.
    #[error("{error}")]
    Text {
        /// Where and what.
        error: kiln_parser::Error,
        /// The bytes as lossy text, to render `error` against.
        lossy: String,
    },
}

impl DockerfileError {
    /// The error as a person should read it; `name` is the file's name in messages.
    pub fn render(&self, name: &str) -> String {
        match self {
            DockerfileError::File(err) => format!("{err}\n"),
            DockerfileError::Text { error, lossy } => error.render(name, lossy),
        }
    }
}

fn decode(bytes: Vec<u8>) -> Result<String, DockerfileError> {
    match kiln_parser::decode(&bytes) {
        Ok(_) => Ok(String::from_utf8(bytes).unwrap_or_default()),
        Err(error) => Err(DockerfileError::Text {
            error,
            lossy: String::from_utf8_lossy(&bytes).into_owned(),
        }),
    }
}

/// Reads the Dockerfile at `path`: a regular file of at most
/// [`kiln_parser::MAX_DOCKERFILE_SIZE`] bytes, UTF-8 (the error places the first byte
/// that is not).
pub fn read_dockerfile(path: &Path) -> Result<String, DockerfileError> {
    let bytes = read_regular_file(
        path,
        "the Dockerfile",
        kiln_parser::MAX_DOCKERFILE_SIZE as u64,
    )?;
    decode(bytes)
}

/// [`read_dockerfile`] for a stream (`-f -` reads stdin): the same cap and decoding.
pub fn read_dockerfile_from(reader: impl Read) -> Result<String, DockerfileError> {
    let bytes = read_capped(
        reader,
        Path::new("-"),
        "the Dockerfile from stdin",
        kiln_parser::MAX_DOCKERFILE_SIZE as u64,
    )?;
    decode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn devices_fifos_and_directories_are_refused_unread() {
        for path in ["/dev/zero", "/dev/urandom", "/tmp"] {
            let err = read_regular_file(Path::new(path), "--secret id=x", MAX_SECRET_SIZE)
                .expect_err(path);
            assert!(matches!(err, InputFileError::NotRegular { .. }), "{err}");
        }
        let dir = tempfile::tempdir().expect("tmp");
        let fifo = dir.path().join("fifo");
        // A FIFO no one writes to: opening it would block forever.
        assert!(
            std::process::Command::new("mkfifo")
                .arg(&fifo)
                .status()
                .expect("mkfifo")
                .success()
        );
        let err = read_dockerfile(&fifo).expect_err("fifo");
        assert!(
            err.to_string().contains("is a FIFO, not a regular file"),
            "{err}"
        );
    }

    #[test]
    fn sizes_are_capped_on_the_file_and_on_the_stream() {
        let dir = tempfile::tempdir().expect("tmp");
        let big = dir.path().join("big");
        std::fs::write(&big, vec![b'x'; MAX_SECRET_SIZE as usize + 1]).expect("write");
        let err = read_regular_file(&big, "--secret id=x", MAX_SECRET_SIZE).expect_err("big");
        assert!(
            err.to_string().contains("larger than 512000 bytes"),
            "{err}"
        );
        let ok = dir.path().join("ok");
        std::fs::write(&ok, vec![b'x'; MAX_SECRET_SIZE as usize]).expect("write");
        assert!(read_regular_file(&ok, "--secret id=x", MAX_SECRET_SIZE).is_ok());
        let zero = std::fs::File::open("/dev/zero").expect("zero");
        let err = read_dockerfile_from(zero).expect_err("endless");
        assert!(matches!(
            err,
            DockerfileError::File(InputFileError::TooLarge { .. })
        ));
    }

    #[test]
    fn dockerfiles_must_be_utf8() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("Dockerfile");
        std::fs::write(&path, b"FROM scratch\nLABEL a=\xff\n").expect("write");
        let err = read_dockerfile(&path).expect_err("latin-1");
        let rendered = err.render("Dockerfile");
        assert!(
            rendered.starts_with("Dockerfile:2:9: the Dockerfile is not UTF-8 text"),
            "{rendered}"
        );
        std::fs::write(&path, b"FROM scratch\n").expect("write");
        assert_eq!(read_dockerfile(&path).expect("ok"), "FROM scratch\n");
    }
}
