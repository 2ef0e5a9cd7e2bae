//! Writing files that readers may look at any time: the one atomic write
//! of the program (model files, checkpoints, metrics, traces, plots,
//! datasets, the rendezvous file, the kernel cache).

use std::fs::File;
use std::io::{BufWriter, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use crate::error::{Error, Result};

/// Who may read a file written by [`write_atomic_with`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// As any new file (mode 0666 less the umask).
    Shared,
    /// The owner only (0600): files that carry a secret.
    Private,
}

/// Writes `bytes` to `path` atomically (see [`write_atomic_with`]).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    write_atomic_with(path, Access::Shared, |w| w.write_all(bytes))
}

/// Writes `path` so that readers see the old file or the new one, never a
/// part: `body` writes a temporary file of a random name in the same
/// directory (created exclusively, so a link planted at that name is never
/// followed), which is flushed to disk and renamed over `path` (a rename
/// replaces a symbolic link at `path`, it does not write through it); then
/// the directory is flushed so the rename itself is durable. On any error
/// the temporary file is removed and `path` is untouched.
pub fn write_atomic_with(
    path: &Path,
    access: Access,
    body: impl FnOnce(&mut BufWriter<&File>) -> std::io::Result<()>,
) -> Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let name = path
        .file_name()
        .ok_or_else(|| Error::io(path, std::io::Error::other("not a file name")))?;
    let mode = match access {
        Access::Shared => 0o666,
        Access::Private => 0o600,
    };
    let tmp = tempfile::Builder::new()
        .prefix(&format!(".{}.", name.to_string_lossy()))
        .suffix(".tmp")
        .permissions(std::fs::Permissions::from_mode(mode))
        .tempfile_in(dir)
        .map_err(|e| Error::io(path, e))?;
    let written = (|| {
        let mut w = BufWriter::with_capacity(1 << 20, tmp.as_file());
        body(&mut w)?;
        w.flush()?;
        drop(w);
        tmp.as_file().sync_all()
    })();
    // On error `tmp` is dropped here, which removes the temporary file.
    written.map_err(|e| Error::io(tmp.path(), e))?;
    tmp.persist(path).map_err(|e| Error::io(path, e.error))?;
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_the_file_and_leaves_nothing_else() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("out.bin");
        write_atomic(&p, b"first").unwrap();
        write_atomic(&p, b"second").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"second");
        let names: Vec<_> = std::fs::read_dir(d.path()).unwrap().collect();
        assert_eq!(names.len(), 1, "no temporary file left");
    }

    #[test]
    fn a_failed_body_leaves_the_old_file_and_no_temporary() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("out.bin");
        write_atomic(&p, b"good").unwrap();
        let r = write_atomic_with(&p, Access::Shared, |w| {
            w.write_all(b"half")?;
            Err(std::io::Error::other("disk full"))
        });
        assert!(r.is_err());
        assert_eq!(std::fs::read(&p).unwrap(), b"good");
        assert_eq!(std::fs::read_dir(d.path()).unwrap().count(), 1);
    }

    #[test]
    fn a_symlink_at_the_target_is_replaced_not_followed() {
        let d = tempfile::tempdir().unwrap();
        let victim = d.path().join("victim");
        std::fs::write(&victim, b"keep me").unwrap();
        let p = d.path().join("out.bin");
        std::os::unix::fs::symlink(&victim, &p).unwrap();
        write_atomic(&p, b"new").unwrap();
        assert_eq!(std::fs::read(&victim).unwrap(), b"keep me");
        assert!(
            !std::fs::symlink_metadata(&p)
                .unwrap()
                .file_type()
                .is_symlink()
        );
        assert_eq!(std::fs::read(&p).unwrap(), b"new");
    }

    #[test]
    fn symlinks_at_temporary_names_are_never_followed() {
        // Links planted where a temporary file could go: the name earlier
        // versions used (`.NAME.tmp.PID`, predictable, opened without
        // O_EXCL), and names of today's pattern. Every write goes to a
        // fresh, exclusively created file, so no link's target changes.
        let d = tempfile::tempdir().unwrap();
        let victim = d.path().join("victim");
        std::fs::write(&victim, b"keep me").unwrap();
        let mut planted = vec![format!(".out.bin.tmp.{}", std::process::id())];
        planted.extend((0..200).map(|i| format!(".out.bin.{i:06}.tmp")));
        for name in &planted {
            std::os::unix::fs::symlink(&victim, d.path().join(name)).unwrap();
        }
        let p = d.path().join("out.bin");
        for round in 0..20u8 {
            write_atomic(&p, &[round; 64]).unwrap();
        }
        assert_eq!(std::fs::read(&victim).unwrap(), b"keep me");
        assert_eq!(std::fs::read(&p).unwrap(), [19u8; 64]);
        for name in &planted {
            let m = std::fs::symlink_metadata(d.path().join(name)).unwrap();
            assert!(m.file_type().is_symlink(), "{name} was replaced");
        }
    }

    #[test]
    fn private_files_are_owner_only() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("secret");
        write_atomic_with(&p, Access::Private, |w| w.write_all(b"x")).unwrap();
        let mode = std::fs::metadata(&p).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}
