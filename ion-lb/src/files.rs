//! Durable file operations: atomic writes, symlink swaps, directory fsyncs, and the mapping of
//! I/O and process errors to `ion_core::Error`.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use ion_core::{Error, ErrorKind};

/// Maps an I/O error while doing `what` to an ion error. The one place ion-lb turns `io::Error`
/// into `ion_core::Error`.
pub fn io_error(what: &str, e: std::io::Error) -> Error {
    use std::io::ErrorKind as Io;
    let kind = match e.kind() {
        Io::NotFound => ErrorKind::NotFound,
        Io::PermissionDenied => ErrorKind::PermissionDenied,
        Io::AlreadyExists => ErrorKind::AlreadyExists,
        Io::AddrInUse | Io::ConnectionRefused | Io::ConnectionReset | Io::TimedOut => {
            ErrorKind::Unavailable
        }
        Io::InvalidInput | Io::InvalidData => ErrorKind::InvalidInput,
        _ => ErrorKind::Unexpected,
    };
    Error::new(kind, format!("{what}: {e}")).with_source(e)
}

/// Creates `dir` (and parents) with `mode`.
pub fn ensure_dir(dir: &Path, mode: u32) -> ion_core::Result<()> {
    fs::create_dir_all(dir).map_err(|e| io_error("create directory", e))?;
    fs::set_permissions(dir, fs::Permissions::from_mode(mode))
        .map_err(|e| io_error("chmod directory", e))
}

/// Flushes a directory's entries to disk.
pub fn fsync_dir(dir: &Path) -> ion_core::Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io_error("fsync directory", e))
}

/// Writes `bytes` to `path` atomically with permission `mode`: temp file in the same directory,
/// fsync, rename, fsync the directory. A reader sees the old file or the new one, never a mix.
pub fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> ion_core::Result<()> {
    let dir = path
        .parent()
        .ok_or_else(|| Error::invalid_config("file has no parent directory"))?;
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| Error::invalid_config("file name is not utf-8"))?;
    let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    let _ = fs::remove_file(&tmp);
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&tmp)
        .map_err(|e| io_error("create temp file", e))?;
    f.write_all(bytes)
        .and_then(|_| f.sync_all())
        .map_err(|e| io_error("write temp file", e))?;
    drop(f);
    fs::rename(&tmp, path).map_err(|e| io_error("rename into place", e))?;
    fsync_dir(dir)
}

/// Points the symlink `link` at `target` atomically (a new link renamed over the old one).
pub fn swap_symlink(link: &Path, target: &Path) -> ion_core::Result<()> {
    let dir = link
        .parent()
        .ok_or_else(|| Error::invalid_config("link has no parent directory"))?;
    let tmp = dir.join(format!(".swap-{}", std::process::id()));
    let _ = fs::remove_file(&tmp);
    std::os::unix::fs::symlink(target, &tmp).map_err(|e| io_error("create symlink", e))?;
    fs::rename(&tmp, link).map_err(|e| io_error("swap symlink", e))?;
    fsync_dir(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_write_replaces_content_with_the_mode_asked() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("k.key");
        write_atomic(&p, b"one", 0o600).unwrap();
        write_atomic(&p, b"two", 0o600).unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"two");
        assert_eq!(
            fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert_eq!(
            fs::read_dir(dir.path()).unwrap().count(),
            1,
            "temp file left behind"
        );
    }

    #[test]
    fn symlink_swap_points_at_the_new_target() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b, link) = (
            dir.path().join("a"),
            dir.path().join("b"),
            dir.path().join("l"),
        );
        fs::write(&a, "a").unwrap();
        fs::write(&b, "b").unwrap();
        swap_symlink(&link, &a).unwrap();
        swap_symlink(&link, &b).unwrap();
        assert_eq!(fs::read_to_string(&link).unwrap(), "b");
    }

    #[test]
    fn io_errors_map_to_semantic_kinds() {
        let e = io_error("x", std::io::Error::from(std::io::ErrorKind::NotFound));
        assert_eq!(e.kind(), ErrorKind::NotFound);
        let e = io_error("x", std::io::Error::from(std::io::ErrorKind::AddrInUse));
        assert_eq!(e.kind(), ErrorKind::Unavailable);
        let e = io_error(
            "x",
            std::io::Error::from(std::io::ErrorKind::PermissionDenied),
        );
        assert_eq!(e.kind(), ErrorKind::PermissionDenied);
    }
}
