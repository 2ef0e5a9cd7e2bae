//! The checkpoint directory belongs to one run at a time, and a write that
//! fails (a full disk) leaves nothing behind but the checkpoints before it.
#![cfg(feature = "mpi")]

mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{mpirun_command, run_with_timeout};

/// Complete checkpoints (`step-N/COMPLETE`) and other entries of `dir`
/// (but the lock file and the FINISHED marker, see docs/files.md).
fn contents(dir: &Path) -> (Vec<String>, Vec<String>) {
    let mut complete = vec![];
    let mut other = vec![];
    for e in std::fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with("step-") && e.path().join("COMPLETE").is_file() {
            complete.push(name);
        } else if name != ".lock" && name != "FINISHED" {
            other.push(name);
        }
    }
    complete.sort();
    (complete, other)
}

#[test]
fn a_second_run_on_the_same_checkpoint_dir_is_refused_and_the_first_is_intact() {
    let d = tempfile::tempdir().unwrap();
    let ckpt = d.path().join("ckpt");
    let ckpt_s = ckpt.to_str().unwrap();
    let first = std::thread::scope(|s| {
        let a = s.spawn(|| {
            let mut cmd = mpirun_command(
                2,
                &["train", "--steps", "30", "--eval-every", "0"]
                    .into_iter()
                    .chain(["--checkpoint-dir", ckpt_s, "--checkpoint-every", "10"])
                    .collect::<Vec<_>>(),
            );
            // Its checkpoint after step 10 takes 5 s more, so it is still
            // running when the second run starts (a slow file system).
            cmd.env("RINGTRAIN_FAULT", "slow-checkpoint@10:5");
            run_with_timeout(cmd, Duration::from_secs(600))
        });
        // Once the first run holds the lock (it writes its owner into it
        // before training)...
        let start = Instant::now();
        while std::fs::read_to_string(ckpt.join(".lock"))
            .unwrap_or_default()
            .is_empty()
        {
            assert!(
                start.elapsed() < Duration::from_secs(300),
                "the first run never locked"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        // ... a second run is refused, naming it.
        let b = common::single(&["train", "--steps", "5", "--checkpoint-dir", ckpt_s]);
        b.one_error(2, "another run is using it (host ");
        a.join().unwrap()
    });
    first.ok();
    let (complete, other) = contents(&ckpt);
    assert_eq!(
        complete,
        ["step-00000010", "step-00000020", "step-00000030"]
    );
    assert!(other.is_empty(), "{other:?}");
}

#[test]
fn a_full_disk_during_a_checkpoint_leaves_no_partial_directory() {
    let d = tempfile::tempdir().unwrap();
    let ckpt = d.path().join("ckpt");
    std::fs::create_dir(&ckpt).unwrap();
    // Room for one checkpoint of the default model (~0.9 MiB with AdamW)
    // but not for a second beside it.
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=1400k", "ringtrain-test"])
        .arg(&ckpt)
        .status()
        .is_ok_and(|s| s.success());
    if !mounted {
        println!("skipped: cannot mount a small tmpfs here (needs root)");
        return;
    }
    struct Unmount<'a>(&'a Path);
    impl Drop for Unmount<'_> {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg(self.0).status();
        }
    }
    let _unmount = Unmount(&ckpt);
    let r = run_with_timeout(
        mpirun_command(
            2,
            &[
                "train",
                "--steps",
                "20",
                "--eval-every",
                "0",
                "--checkpoint-dir",
                ckpt.to_str().unwrap(),
                "--checkpoint-every",
                "10",
                "--keep",
                "2",
            ],
        ),
        Duration::from_secs(300),
    );
    assert_ne!(r.code, Some(0), "{}", r.context());
    assert!(r.stderr.contains("the disk is full"), "{}", r.context());
    assert!(
        r.stderr.contains("this checkpoint needs about"),
        "{}",
        r.context()
    );
    let (complete, other) = contents(&ckpt);
    assert_eq!(complete, ["step-00000010"], "{}", r.context());
    assert!(
        other.is_empty(),
        "partial write left behind: {other:?}\n{}",
        r.context()
    );
}
