//! Passing a few bytes from rank 0 to every other rank through a file in a
//! directory all ranks see, for runs started without MPI (`--bootstrap
//! env`): the 128-byte NCCL unique id.
//!
//! Rank 0 writes a temporary file in the directory and renames it to its
//! final name ([`publish`]); a rename within one directory is atomic on
//! POSIX filesystems (NFS and Lustre included), so a reader sees either no
//! file or the whole file. The other ranks poll for the final name
//! ([`wait_for`]) and never look at temporary names. The final name AND a
//! header inside the file carry the run id, and the header the payload
//! length, so a file left by an earlier run (or a torn one) is never taken.
//!
//! The file carries a secret (the NCCL id lets a process join the job), so
//! it is created owner-only (0600), in a directory created owner-only
//! (0700) when it does not exist yet, and rank 0 removes it once every rank
//! has it ([`Rendezvous::remove`]). A file is taken only when it proves it
//! comes from this job: with `RINGTRAIN_RDZV_TOKEN` set (launch/local.sh
//! hands every rank the same fresh secret) its MAC, SHA-256 over the token,
//! the run id and the payload, must match; without a token it must belong
//! to this user and be readable by nobody else.
//!
//! File layout: `RTRDZV02`, run id length (u32 LE), run id (UTF-8),
//! payload length (u64 LE), payload, MAC (32 bytes).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::error::{Error, Result};

const MAGIC: &[u8; 8] = b"RTRDZV02";

/// The job's shared secret for rendezvous files, from the launcher.
pub const TOKEN_ENV: &str = "RINGTRAIN_RDZV_TOKEN";

fn token_from_env() -> Option<String> {
    std::env::var(TOKEN_ENV).ok().filter(|t| !t.is_empty())
}

/// SHA-256 over the token, the run id and the payload (lengths included).
fn mac(token: Option<&str>, run_id: &str, payload: &[u8]) -> [u8; 32] {
    use sha2::Digest;
    let mut h = sha2::Sha256::new();
    for part in [token.unwrap_or("").as_bytes(), run_id.as_bytes(), payload] {
        h.update((part.len() as u64).to_le_bytes());
        h.update(part);
    }
    h.finalize().into()
}

/// Longest run id accepted (it is part of a file name).
pub const MAX_RUN_ID: usize = 200;

/// Where and for which run the ranks meet, and how long they wait.
#[derive(Clone, Debug)]
pub struct Rendezvous {
    pub dir: PathBuf,
    pub run_id: String,
    pub timeout: Duration,
}

impl Rendezvous {
    /// Rank 0 publishes `root_bytes` (ignored elsewhere, `len` bytes);
    /// every rank returns them.
    pub fn share(&self, rank: usize, root_bytes: &[u8], len: usize) -> Result<Vec<u8>> {
        if rank == 0 {
            if root_bytes.len() != len {
                return Err(Error::Comm(format!(
                    "rendezvous: rank 0 has {} bytes to share, expected {len}",
                    root_bytes.len()
                )));
            }
            publish(&self.dir, &self.run_id, root_bytes)?;
            Ok(root_bytes.to_vec())
        } else {
            wait_for(&self.dir, &self.run_id, len, self.timeout)
        }
    }

    /// Rank 0, once every rank has what it published: removes the file.
    pub fn remove(&self) {
        let _ = std::fs::remove_file(path(&self.dir, &self.run_id));
    }
}

/// The run id of this launch from the environment: `RINGTRAIN_RUN_ID`
/// (launch/local.sh sets a fresh one), else `SLURM_JOB_ID.SLURM_STEP_ID`,
/// else `TORCHELASTIC_RUN_ID` (torchrun), else `PMIX_NAMESPACE` (mpirun).
pub fn run_id_from_env() -> Option<String> {
    run_id_from(&|k| std::env::var(k).ok())
}

/// [`run_id_from_env`] with the variables read through `get`.
pub fn run_id_from(get: &dyn Fn(&str) -> Option<String>) -> Option<String> {
    let set = |k: &str| {
        get(k)
            .map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty())
    };
    set("RINGTRAIN_RUN_ID")
        .or_else(|| {
            set("SLURM_JOB_ID").map(|job| match set("SLURM_STEP_ID") {
                Some(step) => format!("{job}.{step}"),
                None => job,
            })
        })
        .or_else(|| set("TORCHELASTIC_RUN_ID"))
        // mpirun (and srun --mpi=pmix) starting ranks that use --bootstrap env.
        .or_else(|| set("PMIX_NAMESPACE").map(|ns| format!("pmix-{ns}")))
}

/// The file rank 0 publishes for `run_id` in `dir`.
pub fn path(dir: &Path, run_id: &str) -> PathBuf {
    let safe: String = run_id
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_') {
                c
            } else {
                '_'
            }
        })
        .collect();
    dir.join(format!("ringtrain-{safe}.rdzv"))
}

fn check_run_id(run_id: &str) -> Result<()> {
    if run_id.is_empty() || run_id.len() > MAX_RUN_ID {
        return Err(Error::config(format!(
            "rendezvous: the run id must have 1 to {MAX_RUN_ID} bytes, got {}",
            run_id.len()
        )));
    }
    Ok(())
}

fn encode(run_id: &str, payload: &[u8], token: Option<&str>) -> Vec<u8> {
    let mut v = Vec::with_capacity(8 + 4 + run_id.len() + 8 + payload.len() + 32);
    v.extend_from_slice(MAGIC);
    v.extend_from_slice(&(run_id.len() as u32).to_le_bytes());
    v.extend_from_slice(run_id.as_bytes());
    v.extend_from_slice(&(payload.len() as u64).to_le_bytes());
    v.extend_from_slice(payload);
    v.extend_from_slice(&mac(token, run_id, payload));
    v
}

/// The payload, if `bytes` is a whole file for `run_id` with `len` bytes
/// of payload; otherwise why it is not taken.
fn decode(
    bytes: &[u8],
    run_id: &str,
    len: usize,
    token: Option<&str>,
) -> std::result::Result<Vec<u8>, String> {
    let id = run_id.as_bytes();
    let head = 8 + 4 + id.len() + 8;
    if bytes.len() < 12 || &bytes[..8] != MAGIC {
        return Err("not a ringtrain rendezvous file".into());
    }
    let n = u32::from_le_bytes(bytes[8..12].try_into().expect("4 bytes")) as usize;
    if n != id.len() || bytes.len() < head || &bytes[12..12 + n] != id {
        let other = bytes
            .get(12..12 + n)
            .map(String::from_utf8_lossy)
            .unwrap_or_default();
        return Err(format!("written by another run (run id {other:?})"));
    }
    let plen = u64::from_le_bytes(bytes[head - 8..head].try_into().expect("8 bytes"));
    if plen != len as u64 {
        return Err(format!("carries {plen} bytes, expected {len}"));
    }
    if bytes.len() != head + len + 32 {
        return Err(format!(
            "has {} bytes, expected {} (incomplete)",
            bytes.len(),
            head + len + 32
        ));
    }
    let payload = &bytes[head..head + len];
    if bytes[head + len..] != mac(token, run_id, payload) {
        return Err(match token {
            Some(_) => format!("not from this job (its MAC does not match {TOKEN_ENV})"),
            None => "damaged (its MAC does not match)".into(),
        });
    }
    Ok(payload.to_vec())
}

/// Rank 0: writes `bytes` for `run_id` into `dir` (created if missing),
/// atomically: a temporary file, flushed to disk, then renamed. Returns
/// the final path.
pub fn publish(dir: &Path, run_id: &str, bytes: &[u8]) -> Result<PathBuf> {
    publish_with(dir, run_id, bytes, token_from_env().as_deref())
}

/// [`publish`] with the job's token given.
pub fn publish_with(
    dir: &Path,
    run_id: &str,
    bytes: &[u8],
    token: Option<&str>,
) -> Result<PathBuf> {
    use std::os::unix::fs::DirBuilderExt;
    check_run_id(run_id)?;
    if !dir.is_dir() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| Error::io(dir, e))?;
    }
    let target = path(dir, run_id);
    crate::fsutil::write_atomic_with(&target, crate::fsutil::Access::Private, |w| {
        w.write_all(&encode(run_id, bytes, token))
    })?;
    Ok(target)
}

/// Without a token, a file is taken only when this user owns it and
/// nobody else may read or write it (another user could not have made it).
fn owned_privately(target: &Path) -> std::result::Result<(), String> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(target).map_err(|e| e.to_string())?;
    // SAFETY: geteuid has no preconditions.
    let me = unsafe { libc::geteuid() };
    if m.uid() != me || m.mode() & 0o077 != 0 {
        return Err(format!(
            "not this user's private file (owner uid {}, mode {:o}); set {TOKEN_ENV} to the \
             same secret on every rank to prove files of this job",
            m.uid(),
            m.mode() & 0o777
        ));
    }
    Ok(())
}

/// The other ranks: waits until rank 0's file for `run_id` appears in
/// `dir`, whole and with `len` bytes of payload, and returns the payload.
/// Files of other runs and temporary files are never read; after
/// `timeout` the error names the file, the timeout and what was seen.
pub fn wait_for(dir: &Path, run_id: &str, len: usize, timeout: Duration) -> Result<Vec<u8>> {
    wait_for_with(dir, run_id, len, timeout, token_from_env().as_deref())
}

/// [`wait_for`] with the job's token given.
pub fn wait_for_with(
    dir: &Path,
    run_id: &str,
    len: usize,
    timeout: Duration,
    token: Option<&str>,
) -> Result<Vec<u8>> {
    check_run_id(run_id)?;
    let target = path(dir, run_id);
    let start = Instant::now();
    let mut pause = Duration::from_millis(5);
    let mut seen: Option<String> = None;
    loop {
        match std::fs::read(&target) {
            Ok(bytes) => {
                let checked = match token {
                    Some(_) => Ok(()),
                    None => owned_privately(&target),
                };
                match checked.and_then(|()| decode(&bytes, run_id, len, token)) {
                    Ok(payload) => return Ok(payload),
                    Err(why) => seen = Some(format!("the file there is ignored: {why}")),
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => seen = Some(format!("reading it failed: {e}")),
        }
        let waited = start.elapsed();
        if waited >= timeout {
            let seen = seen.unwrap_or_else(|| {
                if dir.is_dir() {
                    "it does not exist".into()
                } else {
                    format!("the directory {} does not exist", dir.display())
                }
            });
            return Err(Error::Comm(format!(
                "rendezvous: timed out after {:.1} s waiting for rank 0 to publish {} (run id \
                 {run_id:?}); {seen}. Every rank must see the same --rendezvous directory (a \
                 shared filesystem across nodes) and the same run id; raise \
                 --rendezvous-timeout if rank 0 starts late",
                timeout.as_secs_f64(),
                target.display()
            )));
        }
        std::thread::sleep(pause.min(timeout - waited));
        pause = (pause * 2).min(Duration::from_millis(100));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fresh empty directory, removed on drop.
    fn temp_dir(name: &str) -> tempfile::TempDir {
        tempfile::Builder::new()
            .prefix(&format!("ringtrain-rdzv-{name}-"))
            .tempdir()
            .unwrap()
    }

    /// A file as rank 0 would make it: this user's, owner-only.
    fn write_private(p: &Path, bytes: &[u8]) {
        use std::os::unix::fs::PermissionsExt;
        std::fs::write(p, bytes).unwrap();
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o600)).unwrap();
    }

    #[test]
    fn the_file_is_private_proves_its_job_and_is_removed() {
        use std::os::unix::fs::PermissionsExt;
        let d = temp_dir("private");
        let dir = d.path().join("made-here");
        let p = publish_with(&dir, "run-9", &id128(9), Some("secret")).unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!((mode(&dir), mode(&p)), (0o700, 0o600));
        let wait = |token| wait_for_with(&dir, "run-9", 128, Duration::from_millis(200), token);
        assert_eq!(wait(Some("secret")).unwrap(), id128(9));
        // A file forged with the right run id but without the job's token.
        let e = wait(Some("guess")).unwrap_err().to_string();
        assert!(e.contains("not from this job"), "{e}");
        publish_with(&dir, "run-9", &id128(1), None).unwrap();
        let e = wait(Some("secret")).unwrap_err().to_string();
        assert!(e.contains("not from this job"), "{e}");
        // Without a token: only a private file of this user is taken.
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = wait(None).unwrap_err().to_string();
        assert!(e.contains("not this user's private file"), "{e}");
        let r = Rendezvous {
            dir: dir.clone(),
            run_id: "run-9".into(),
            timeout: Duration::from_secs(1),
        };
        r.remove();
        assert!(!p.exists());
    }

    fn id128(seed: u8) -> Vec<u8> {
        (0..128u32)
            .map(|i| (i as u8).wrapping_mul(7) ^ seed)
            .collect()
    }

    #[test]
    fn publish_then_wait() {
        let d = temp_dir("roundtrip");
        let p = publish(d.path(), "run-1", &id128(1)).unwrap();
        assert!(p.file_name().unwrap().to_string_lossy().contains("run-1"));
        let got = wait_for(d.path(), "run-1", 128, Duration::from_secs(1)).unwrap();
        assert_eq!(got, id128(1));
        // Only the final file is left.
        let names: Vec<_> = std::fs::read_dir(d.path()).unwrap().collect();
        assert_eq!(names.len(), 1);
    }

    #[test]
    fn waiters_get_what_is_published_later() {
        let d = temp_dir("later");
        let waiters: Vec<_> = (0..3)
            .map(|_| {
                let dir = d.path().to_path_buf();
                std::thread::spawn(move || wait_for(&dir, "job7.0", 128, Duration::from_secs(20)))
            })
            .collect();
        std::thread::sleep(Duration::from_millis(300));
        publish(d.path(), "job7.0", &id128(2)).unwrap();
        for w in waiters {
            assert_eq!(w.join().unwrap().unwrap(), id128(2));
        }
    }

    #[test]
    fn timeout_names_the_file_and_the_timeout() {
        let d = temp_dir("timeout");
        let t = Instant::now();
        let e = wait_for(d.path(), "nobody", 128, Duration::from_millis(300)).unwrap_err();
        assert!(t.elapsed() >= Duration::from_millis(300));
        assert!(t.elapsed() < Duration::from_secs(5));
        let msg = e.to_string();
        let file = path(d.path(), "nobody");
        assert!(msg.contains(&file.display().to_string()), "{msg}");
        assert!(msg.contains("timed out after 0.3 s"), "{msg}");
        assert!(msg.contains("does not exist"), "{msg}");
    }

    #[test]
    fn stale_files_of_other_runs_are_ignored() {
        let d = temp_dir("stale");
        // An earlier run's file: another name, never looked at.
        publish(d.path(), "old-run", &id128(3)).unwrap();
        let e = wait_for(d.path(), "new-run", 128, Duration::from_millis(200)).unwrap_err();
        assert!(e.to_string().contains("timed out"), "{e}");
        // A file under this run's name whose header names another run (two
        // run ids that map to one file name): ignored, and said so.
        write_private(
            &path(d.path(), "new/run"),
            &encode("new:run", &id128(4), None),
        );
        assert_eq!(path(d.path(), "new/run"), path(d.path(), "new:run"));
        let e = wait_for(d.path(), "new/run", 128, Duration::from_millis(200)).unwrap_err();
        assert!(e.to_string().contains("another run"), "{e}");
        // Rank 0 of this run replaces it; the waiter takes the new one.
        let dir = d.path().to_path_buf();
        let w = std::thread::spawn(move || wait_for(&dir, "new/run", 128, Duration::from_secs(20)));
        std::thread::sleep(Duration::from_millis(200));
        publish(d.path(), "new/run", &id128(5)).unwrap();
        assert_eq!(w.join().unwrap().unwrap(), id128(5));
    }

    #[test]
    fn partial_and_temporary_files_are_never_read() {
        let d = temp_dir("partial");
        let whole = encode("r1", &id128(6), None);
        // What publish writes before its rename, half done.
        let name = path(d.path(), "r1")
            .file_name()
            .unwrap()
            .to_string_lossy()
            .into_owned();
        std::fs::write(
            d.path().join(format!(".{name}.tmp-1-2")),
            &whole[..whole.len() / 2],
        )
        .unwrap();
        // Even a full temporary file is not the published one.
        std::fs::write(d.path().join(format!(".{name}.tmp-3-4")), &whole).unwrap();
        let e = wait_for(d.path(), "r1", 128, Duration::from_millis(200)).unwrap_err();
        assert!(e.to_string().contains("does not exist"), "{e}");
        // A torn final file (a writer that did not rename) is not taken.
        write_private(&path(d.path(), "r1"), &whole[..whole.len() - 1]);
        let e = wait_for(d.path(), "r1", 128, Duration::from_millis(200)).unwrap_err();
        assert!(e.to_string().contains("incomplete"), "{e}");
        // Nor one with another length.
        write_private(&path(d.path(), "r1"), &encode("r1", &id128(6)[..64], None));
        let e = wait_for(d.path(), "r1", 128, Duration::from_millis(200)).unwrap_err();
        assert!(e.to_string().contains("carries 64 bytes"), "{e}");
        publish(d.path(), "r1", &id128(6)).unwrap();
        assert_eq!(
            wait_for(d.path(), "r1", 128, Duration::from_secs(1)).unwrap(),
            id128(6)
        );
    }

    #[test]
    fn share_over_threads() {
        let d = temp_dir("share");
        let rdzv = Rendezvous {
            dir: d.path().to_path_buf(),
            run_id: "share-1".into(),
            timeout: Duration::from_secs(20),
        };
        let others: Vec<_> = (1..4)
            .map(|rank| {
                let r = rdzv.clone();
                std::thread::spawn(move || r.share(rank, &[], 128))
            })
            .collect();
        std::thread::sleep(Duration::from_millis(100));
        assert_eq!(rdzv.share(0, &id128(8), 128).unwrap(), id128(8));
        for o in others {
            assert_eq!(o.join().unwrap().unwrap(), id128(8));
        }
    }

    #[test]
    fn run_id_sources() {
        let get = |pairs: &'static [(&'static str, &'static str)]| {
            move |k: &str| {
                pairs
                    .iter()
                    .find(|(n, _)| *n == k)
                    .map(|(_, v)| v.to_string())
            }
        };
        assert_eq!(run_id_from(&get(&[])), None);
        assert_eq!(
            run_id_from(&get(&[("SLURM_JOB_ID", "12"), ("SLURM_STEP_ID", "3")])),
            Some("12.3".into())
        );
        assert_eq!(
            run_id_from(&get(&[("SLURM_JOB_ID", "12"), ("RINGTRAIN_RUN_ID", "x")])),
            Some("x".into())
        );
        assert_eq!(
            run_id_from(&get(&[
                ("TORCHELASTIC_RUN_ID", "t"),
                ("RINGTRAIN_RUN_ID", " ")
            ])),
            Some("t".into())
        );
        assert_eq!(
            run_id_from(&get(&[("PMIX_NAMESPACE", "105")])),
            Some("pmix-105".into())
        );
    }
}
